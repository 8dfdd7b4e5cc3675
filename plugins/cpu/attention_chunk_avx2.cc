// AVX2 + FMA + F16C TQAttention inner loop (contract in attention_chunk.h), selected at run time by
// simd_enabled(). Each token's codes are unpacked once per 8 coordinates (a broadcast, a variable shift, a mask)
// and looked up in centroid registers (vpermps for m <= 5, a gather above), then used for every query row of the
// tile. Keys: token-major, one accumulator per row. Values: coordinate-major over a block of tokens, so the
// rotated-domain accumulators stay in registers.
//
// This unit is compiled for AVX2 with a target pragma; it includes only C headers and plain structs before the
// pragma and instantiates no standard-library templates, so no AVX2 code can leak into shared inline functions.
#include <cstdint>
#include <cstring>

#include "cpu/attention_chunk.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>  // x86 only: on aarch64 (Jetson) this unit compiles to nothing

namespace tq::cpu {

bool cpu_has_avx2_fma_f16c() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace {

// Fully unroll the per-row loops so the row accumulators live in registers (GCC -O2 does not unroll them).
#define TQ_UNROLL _Pragma("GCC unroll 4")

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

inline float load_half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// Fields [8c, 8c + 8) of a segment of width W as int32 lanes.
template <int W>
inline __m256i unpack8(const uint8_t* seg, int c) {
  const uint8_t* p = seg + c * W;
  if constexpr (W == 8) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  } else {
    uint32_t word = 0;
    std::memcpy(&word, p, W);
    const __m256i shifts = _mm256_setr_epi32(0, W, 2 * W, 3 * W, 4 * W, 5 * W, 6 * W, 7 * W);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts),
                            _mm256_set1_epi32((1 << W) - 1));
  }
}

template <int M>
struct Widths;  // segment widths of an M-bit code, widest first (docs/format.md section 4)
template <> struct Widths<1> { static constexpr int n = 1, w0 = 1, w1 = 0, w2 = 0; };
template <> struct Widths<2> { static constexpr int n = 1, w0 = 2, w1 = 0, w2 = 0; };
template <> struct Widths<3> { static constexpr int n = 2, w0 = 2, w1 = 1, w2 = 0; };
template <> struct Widths<4> { static constexpr int n = 1, w0 = 4, w1 = 0, w2 = 0; };
template <> struct Widths<5> { static constexpr int n = 2, w0 = 4, w1 = 1, w2 = 0; };
template <> struct Widths<6> { static constexpr int n = 2, w0 = 4, w1 = 2, w2 = 0; };
template <> struct Widths<7> { static constexpr int n = 3, w0 = 4, w1 = 2, w2 = 1; };
template <> struct Widths<8> { static constexpr int n = 1, w0 = 8, w1 = 0, w2 = 0; };

// Centroid registers of one part.
struct Lut {
  __m256 r[4];
  const float* table;
};

inline Lut make_lut(const PartDecode& pd) {
  Lut l;
  for (int i = 0; i < 4; ++i) l.r[i] = _mm256_loadu_ps(pd.centroids + 8 * i);
  l.table = pd.centroids;
  return l;
}

// Centroids of coordinates [8c, 8c + 8) of a part, before the gamma scale.
template <int M>
inline __m256 decode8(const uint8_t* row, const PartDecode& pd, const Lut& lut, int c) {
  using Wd = Widths<M>;
  __m256i code = unpack8<Wd::w0>(row + pd.seg_offset[0], c);
  if constexpr (Wd::n > 1)
    code = _mm256_or_si256(code, _mm256_slli_epi32(unpack8<(Wd::w1 > 0 ? Wd::w1 : 1)>(row + pd.seg_offset[1], c), Wd::w0));
  if constexpr (Wd::n > 2)
    code = _mm256_or_si256(code, _mm256_slli_epi32(unpack8<(Wd::w2 > 0 ? Wd::w2 : 1)>(row + pd.seg_offset[2], c),
                                                   Wd::w0 + Wd::w1));
  if constexpr (M <= 3) {
    return _mm256_permutevar8x32_ps(lut.r[0], code);
  } else if constexpr (M == 4) {
    const __m256 sel = _mm256_castsi256_ps(_mm256_slli_epi32(code, 28));
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut.r[0], code), _mm256_permutevar8x32_ps(lut.r[1], code), sel);
  } else if constexpr (M == 5) {
    const __m256 sel3 = _mm256_castsi256_ps(_mm256_slli_epi32(code, 28));
    const __m256 sel4 = _mm256_castsi256_ps(_mm256_slli_epi32(code, 27));
    const __m256 lo = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut.r[0], code),
                                       _mm256_permutevar8x32_ps(lut.r[1], code), sel3);
    const __m256 hi = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lut.r[2], code),
                                       _mm256_permutevar8x32_ps(lut.r[3], code), sel3);
    return _mm256_blendv_ps(lo, hi, sel4);
  } else {
    return _mm256_i32gather_ps(lut.table, code, 4);
  }
}

// acc[r] += sum over the part's coordinates of qr[r] * centroid (8 lanes), for one key row.
template <int ROWS, int M>
inline void score_part(const uint8_t* row, const PartDecode& pd, const Lut& lut, const float* const* qr,
                       __m256* acc) {
  // Two accumulator sets (even / odd chunks; d_p / 8 is even) halve the FMA dependency chains.
  __m256 odd[ROWS];
  TQ_UNROLL for (int r = 0; r < ROWS; ++r) odd[r] = _mm256_setzero_ps();
  const int chunks = pd.dim / 8;
  for (int c = 0; c < chunks; c += 2) {
    const __m256 k0 = decode8<M>(row, pd, lut, c);
    const __m256 k1 = decode8<M>(row, pd, lut, c + 1);
    const int o = pd.coord_offset + 8 * c;
    TQ_UNROLL for (int r = 0; r < ROWS; ++r) {
      acc[r] = _mm256_fmadd_ps(k0, _mm256_loadu_ps(qr[r] + o), acc[r]);
      odd[r] = _mm256_fmadd_ps(k1, _mm256_loadu_ps(qr[r] + o + 8), odd[r]);
    }
  }
  TQ_UNROLL for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_add_ps(acc[r], odd[r]);
}

// acc[r][part coords] += sum_j w[r][j] * centroid(row j), over n value rows.
template <int ROWS, int M>
inline void accumulate_part(const uint8_t* rows, int64_t row_bytes, int n, const PartDecode& pd, const Lut& lut,
                            const float (*w)[kBlockTokens], float* const* acc) {
  const int chunks = pd.dim / 8;
  for (int c = 0; c < chunks; ++c) {
    const int o = pd.coord_offset + 8 * c;
    __m256 a[ROWS], b[ROWS];  // even / odd tokens: two independent FMA chains per row
    TQ_UNROLL for (int r = 0; r < ROWS; ++r) {
      a[r] = _mm256_loadu_ps(acc[r] + o);
      b[r] = _mm256_setzero_ps();
    }
    const uint8_t* row = rows;
    int j = 0;
    for (; j + 2 <= n; j += 2, row += 2 * row_bytes) {
      const __m256 v0 = decode8<M>(row, pd, lut, c);
      const __m256 v1 = decode8<M>(row + row_bytes, pd, lut, c);
      TQ_UNROLL for (int r = 0; r < ROWS; ++r) {
        a[r] = _mm256_fmadd_ps(v0, _mm256_broadcast_ss(&w[r][j]), a[r]);
        b[r] = _mm256_fmadd_ps(v1, _mm256_broadcast_ss(&w[r][j + 1]), b[r]);
      }
    }
    if (j < n) {
      const __m256 v0 = decode8<M>(row, pd, lut, c);
      TQ_UNROLL for (int r = 0; r < ROWS; ++r) a[r] = _mm256_fmadd_ps(v0, _mm256_broadcast_ss(&w[r][j]), a[r]);
    }
    TQ_UNROLL for (int r = 0; r < ROWS; ++r) _mm256_storeu_ps(acc[r] + o, _mm256_add_ps(a[r], b[r]));
  }
}

template <int ROWS>
void score_dispatch(int m, const uint8_t* row, const PartDecode& pd, const Lut& lut, const float* const* qr,
                    __m256* acc) {
  switch (m) {
    case 1: score_part<ROWS, 1>(row, pd, lut, qr, acc); break;
    case 2: score_part<ROWS, 2>(row, pd, lut, qr, acc); break;
    case 3: score_part<ROWS, 3>(row, pd, lut, qr, acc); break;
    case 4: score_part<ROWS, 4>(row, pd, lut, qr, acc); break;
    case 5: score_part<ROWS, 5>(row, pd, lut, qr, acc); break;
    case 6: score_part<ROWS, 6>(row, pd, lut, qr, acc); break;
    case 7: score_part<ROWS, 7>(row, pd, lut, qr, acc); break;
    default: score_part<ROWS, 8>(row, pd, lut, qr, acc); break;
  }
}

template <int ROWS>
void accumulate_dispatch(int m, const uint8_t* rows, int64_t row_bytes, int n, const PartDecode& pd,
                         const Lut& lut, const float (*w)[kBlockTokens], float* const* acc) {
  switch (m) {
    case 1: accumulate_part<ROWS, 1>(rows, row_bytes, n, pd, lut, w, acc); break;
    case 2: accumulate_part<ROWS, 2>(rows, row_bytes, n, pd, lut, w, acc); break;
    case 3: accumulate_part<ROWS, 3>(rows, row_bytes, n, pd, lut, w, acc); break;
    case 4: accumulate_part<ROWS, 4>(rows, row_bytes, n, pd, lut, w, acc); break;
    case 5: accumulate_part<ROWS, 5>(rows, row_bytes, n, pd, lut, w, acc); break;
    case 6: accumulate_part<ROWS, 6>(rows, row_bytes, n, pd, lut, w, acc); break;
    case 7: accumulate_part<ROWS, 7>(rows, row_bytes, n, pd, lut, w, acc); break;
    default: accumulate_part<ROWS, 8>(rows, row_bytes, n, pd, lut, w, acc); break;
  }
}

// sum_{i in part} sq[r][i] * (2 * bit_i - 1) into acc[r] (8 lanes).
template <int ROWS>
inline void qjl_part(const uint8_t* bits, const PartDecode& pd, const float* const* sq, __m256* acc) {
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  for (int c = 0; c < pd.dim / 8; ++c) {
    const int o = pd.coord_offset + 8 * c;
    const __m256i b = _mm256_and_si256(_mm256_set1_epi32(bits[o >> 3]), lane_bit);
    const __m256 set = _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, lane_bit));
    const __m256 flip = _mm256_andnot_ps(set, sign);  // bit 0 -> negate
    TQ_UNROLL for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_add_ps(acc[r], _mm256_xor_ps(_mm256_loadu_ps(sq[r] + o), flip));
  }
}

// exp for float32 lanes: Cephes-style range reduction and degree-5 polynomial (about 2 ulp on the softmax range);
// inputs below -87 (including -inf) give exactly 0.
inline __m256 exp256(__m256 x) {
  const __m256 zero_below = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), zero_below);
}

// softmax_block (attention_chunk_scalar.cc) with the exponentials 8 lanes at a time.
bool softmax_block_avx2(const ChunkArgs& a, int n, float* s, int dim) {
  const float neg_inf = -__builtin_inff();
  bool any = false;
  for (int r = 0; r < a.rows; ++r) {
    float* sr = s + r * n;
    float block_max = neg_inf;
    for (int j = 0; j < n; ++j) block_max = sr[j] > block_max ? sr[j] : block_max;
    const float m_new = a.m[r] > block_max ? a.m[r] : block_max;
    if (m_new == neg_inf) {
      for (int j = 0; j < n; ++j) sr[j] = 0.0f;
      continue;
    }
    any = true;
    const float alpha = a.m[r] == neg_inf ? 0.0f : __builtin_expf(a.m[r] - m_new);
    const __m256 mv = _mm256_set1_ps(m_new);
    __m256 sum8 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
      const __m256 p = exp256(_mm256_sub_ps(_mm256_loadu_ps(sr + j), mv));
      _mm256_storeu_ps(sr + j, p);
      sum8 = _mm256_add_ps(sum8, p);
    }
    float sum = hsum(sum8);
    for (; j < n; ++j) {
      sr[j] = __builtin_expf(sr[j] - m_new);
      sum += sr[j];
    }
    if (alpha != 1.0f) {
      const __m256 av = _mm256_set1_ps(alpha);
      float* acc = a.acc[r];
      for (int i = 0; i < dim; i += 8) _mm256_storeu_ps(acc + i, _mm256_mul_ps(_mm256_loadu_ps(acc + i), av));
    }
    a.l[r] = a.l[r] * alpha + sum;
    a.m[r] = m_new;
  }
  return any;
}

template <int ROWS>
void run(const ChunkArgs& a) {
  const CodecDecode& K = a.k;
  const CodecDecode& V = a.v;
  Lut klut[4], vlut[4];
  for (int p = 0; p < K.num_parts; ++p) klut[p] = make_lut(K.parts[p]);
  for (int p = 0; p < V.num_parts; ++p) vlut[p] = make_lut(V.parts[p]);
  alignas(32) float s[kTileRows * kBlockTokens];
  alignas(32) float w[kTileRows][kBlockTokens];
  for (int64_t j0 = 0; j0 < a.count; j0 += kBlockTokens) {
    const int n = static_cast<int>(min64(kBlockTokens, a.count - j0));
    const uint8_t* krows = a.k_rows + j0 * K.row_bytes;
    for (int j = 0; j < n; ++j) {
      const uint8_t* row = krows + j * K.row_bytes;
      __m256 tot[ROWS];
      TQ_UNROLL for (int r = 0; r < ROWS; ++r) tot[r] = _mm256_setzero_ps();
      for (int p = 0; p < K.num_parts; ++p) {
        const PartDecode& pd = K.parts[p];
        __m256 acc[ROWS];
        TQ_UNROLL for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_setzero_ps();
        score_dispatch<ROWS>(pd.mse_bits, row, pd, klut[p], a.qr, acc);
        const __m256 gamma = _mm256_set1_ps(load_half(row + pd.norm_offset));
        TQ_UNROLL for (int r = 0; r < ROWS; ++r) tot[r] = _mm256_fmadd_ps(acc[r], gamma, tot[r]);
        if (K.qjl_offset >= 0) {
          TQ_UNROLL for (int r = 0; r < ROWS; ++r) acc[r] = _mm256_setzero_ps();
          qjl_part<ROWS>(row + K.qjl_offset, pd, a.sq, acc);
          const __m256 rho = _mm256_set1_ps(load_half(row + pd.rnorm_offset));
          TQ_UNROLL for (int r = 0; r < ROWS; ++r) tot[r] = _mm256_fmadd_ps(acc[r], rho, tot[r]);
        }
      }
      TQ_UNROLL for (int r = 0; r < ROWS; ++r) s[r * n + j] = hsum(tot[r]);
    }
    finish_scores(a, a.first_token + j0, n, s);
    if (!softmax_block_avx2(a, n, s, K.dim)) continue;
    const uint8_t* vrows = a.v_rows + j0 * V.row_bytes;
    for (int p = 0; p < V.num_parts; ++p) {
      const PartDecode& pd = V.parts[p];
      for (int j = 0; j < n; ++j) {
        const float gamma = load_half(vrows + j * V.row_bytes + pd.norm_offset);
        TQ_UNROLL for (int r = 0; r < ROWS; ++r) w[r][j] = s[r * n + j] * gamma;
      }
      accumulate_dispatch<ROWS>(pd.mse_bits, vrows, V.row_bytes, n, pd, vlut[p], w, a.acc);
    }
  }
}

}  // namespace

void attention_chunk_avx2(const ChunkArgs& a) {
  switch (a.rows) {
    case 1: run<1>(a); break;
    case 2: run<2>(a); break;
    case 3: run<3>(a); break;
    default: run<4>(a); break;
  }
}

#pragma GCC pop_options

}  // namespace tq::cpu

#endif
