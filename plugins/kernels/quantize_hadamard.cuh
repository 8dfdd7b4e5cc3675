// TQQuantize fast path (docs/format.md section 5) for one part and D in {64, 128, 256}: included by quantize.cu
// only, inside its anonymous namespace after QuantizeArgs, pmod, compressed_range and f64_to_half_bits.
// Two kernels: v4 (namespace v4 below: float32 butterflies with a proven bound, float64 only near a decision) for a
// Hadamard R, and v2 (this comment down to namespace v4), whose dense branch v4 calls for a block whose R is not
// Hadamard-structured. The v2 description:
//
// When R[h] == c * H_D * diag(s) exactly (Sylvester Hadamard H_D, c = |R[0][0]|, s_j = sign(R[0][j]); every block
// checks this while reading R once and votes), y = c * WHT(s .* x) with float64 butterflies: the dense float64
// product up to float64 rounding, as the contract allows. Otherwise the same kernel computes y = R x densely
// (float64 FMAs, R rows from L1/L2). No workspace.
//
// Work split: D / 16 threads per vector, 16 coordinates each. The butterflies over coordinate bits 4.. run on a
// strided layout (thread t holds coordinates 16 g + t * NC + c), one swizzled shared-memory transpose per vector
// moves to the contiguous layout (thread t holds 16 t .. 16 t + 15) for bits 0..3, norms (shuffle sums inside the
// group), codes, QJL and the packed row, which each thread writes in 16-bit pieces. Persistent grid: each block
// loops over 8 warps x (32 / TPV) vectors of one (b, h), prefetching the next tile's inputs.
//
// Codes without a float64 division per coordinate: u' = y * (1 / n) is within 2^-50 of fl(y / n). A 1024-cell
// table over [-1, 1] (margin 1e-9) gives the only boundary that can fall in u's cell, so
// code = first + (u' > beta); when |u' - beta| <= 2^-46 (or the cell holds several boundaries, or u' is NaN) the
// code is recounted from fl(y / n) by binary search, exactly as the contract states.
#pragma once

namespace wht {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPerThread = 16;          // coordinates per thread
constexpr int kCells = 1024;            // code table cells of width 1/512 over u in [-1, 1]
constexpr uint16_t kCellMany = 0x8000;  // cell holds two or more boundaries: binary search
constexpr double kCellMargin = 1e-9;
constexpr double kNearBoundary = 0x1p-46;
constexpr double kNoBoundary = 4.0;     // sentinel after the last boundary (|u| <= 1 + rounding)

__host__ __device__ constexpr int tile_vectors(int d) { return kWarps * (32 / (d / 16)); }

// Dynamic shared memory: bound[256] and cent[256] (float64), tiles[kWarps][32 / TPV][D] (float64), row0[D] (float32),
// cells[kCells] (uint16).
__host__ __device__ constexpr size_t smem_bytes(int d) {
  return sizeof(double) * (512 + static_cast<size_t>(kWarps) * 32 * kPerThread) + sizeof(float) * d +
         sizeof(uint16_t) * kCells;
}

// Number of bnd[0 .. 2^m - 2] (sorted ascending) below u (or at most u).
__device__ __forceinline__ int count_below(const double* bnd, int m, double u, bool or_equal) {
  int pos = 0;
  for (int step = 1 << (m - 1); step > 0; step >>= 1) {
    const double bv = bnd[pos + step - 1];
    if (or_equal ? bv <= u : bv < u) pos += step;
  }
  return pos;
}

template <int TPV>
__device__ __forceinline__ double group_sum(double s) {
#pragma unroll
  for (int o = TPV / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);  // same value in every lane
  return s;
}

// out[k] = sum_j M[16 t + k][j] * vec[j], float64 FMAs over the float32 entries of M (D x D, 16-byte aligned).
template <int D>
__device__ __forceinline__ void dense_rows(const float* __restrict__ m, const double* vec, int t,
                                           double (&out)[kPerThread]) {
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) out[k] = 0.0;
  const float4* rows = reinterpret_cast<const float4*>(m + static_cast<int64_t>(kPerThread) * t * D);
#pragma unroll 1
  for (int j = 0; j < D; j += 4) {
    const double x0 = vec[j], x1 = vec[j + 1], x2 = vec[j + 2], x3 = vec[j + 3];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const float4 w = __ldg(rows + (k * D + j) / 4);
      double a = fma(static_cast<double>(w.x), x0, out[k]);
      a = fma(static_cast<double>(w.y), x1, a);
      a = fma(static_cast<double>(w.z), x2, a);
      out[k] = fma(static_cast<double>(w.w), x3, a);
    }
  }
}

// Code of one coordinate: #{ j : fl(y / n) > beta_j } (format.md section 5, step 2).
__device__ __forceinline__ int code_of(double y, double n, double inv, const double* bound,
                                       const uint16_t* cells, int m) {
  const double u = y * inv;
  const int hi = __double2hiint(u + 3.0);  // exponent of [2, 4): the top 10 mantissa bits are the cell
  const int cell = min(max((hi - 0x40000000) >> 10, 0), kCells - 1);
  const int first = cells[cell];
  if (first < kCellMany) {
    const double beta = bound[first];
    if (fabs(u - beta) > kNearBoundary) return first + (u > beta ? 1 : 0);
  }
  const double exact = n > 0.0 ? y / n : 0.0;
  return count_below(bound, m, exact, false);
}

struct Raw16 {
  uint32_t w[8];   // float16 input: 16 halves (element e at half e % 2 of word e / 2)
};
struct Raw32 {
  uint32_t w[16];  // float32 input: element e in word e
};

// Strided-layout inputs of one vector for thread t: element e = g * NC + c is coordinate 16 g + t * NC + c.
template <int D, bool kHalf>
__device__ __forceinline__ void load_raw(const void* src, int t, bool valid,
                                         typename std::conditional<kHalf, Raw16, Raw32>::type& raw) {
  constexpr int TPV = D / 16;
  constexpr int NC = kPerThread / TPV;
  constexpr int kWords = kHalf ? 8 : 16;
  if (!valid) {
#pragma unroll
    for (int i = 0; i < kWords; ++i) raw.w[i] = 0;
    return;
  }
  if constexpr (kHalf) {
    const uint16_t* s = static_cast<const uint16_t*>(src) + t * NC;
    if constexpr (NC == 4) {
#pragma unroll
      for (int g = 0; g < TPV; ++g) {
        const uint2 v = __ldg(reinterpret_cast<const uint2*>(s + 16 * g));
        raw.w[2 * g] = v.x;
        raw.w[2 * g + 1] = v.y;
      }
    } else if constexpr (NC == 2) {
#pragma unroll
      for (int g = 0; g < TPV; ++g) raw.w[g] = __ldg(reinterpret_cast<const uint32_t*>(s + 16 * g));
    } else {
#pragma unroll
      for (int g = 0; g < TPV; g += 2) {
        const uint32_t lo = __ldg(s + 16 * g);
        const uint32_t hi = __ldg(s + 16 * (g + 1));
        raw.w[g / 2] = lo | (hi << 16);
      }
    }
  } else {
    const float* s = static_cast<const float*>(src) + t * NC;
    if constexpr (NC == 4) {
#pragma unroll
      for (int g = 0; g < TPV; ++g) {
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(s + 16 * g));
        raw.w[4 * g] = v.x;
        raw.w[4 * g + 1] = v.y;
        raw.w[4 * g + 2] = v.z;
        raw.w[4 * g + 3] = v.w;
      }
    } else if constexpr (NC == 2) {
#pragma unroll
      for (int g = 0; g < TPV; ++g) {
        const uint2 v = __ldg(reinterpret_cast<const uint2*>(s + 16 * g));
        raw.w[2 * g] = v.x;
        raw.w[2 * g + 1] = v.y;
      }
    } else {
#pragma unroll
      for (int g = 0; g < TPV; ++g) raw.w[g] = __float_as_uint(__ldg(s + 16 * g));
    }
  }
}

// Element e as float32 bits (float16 inputs upcast exactly).
template <bool kHalf, typename RawT>
__device__ __forceinline__ uint32_t element_bits(const RawT& raw, int e) {
  if constexpr (kHalf) {
    const uint16_t h = static_cast<uint16_t>(raw.w[e / 2] >> (16 * (e % 2)));
    return __float_as_uint(__half2float(__ushort_as_half(h)));
  } else {
    return raw.w[e];
  }
}

// v2 (one block-iteration = 32 vectors, float64 butterflies or dense rows): since v3, only the dense branch of a
// block whose R is not c * H * diag(s) runs it (v3 and v4 call it after their structure vote fails).
template <int D, bool kHalf>
__device__ __forceinline__ void v2_block(const QuantizeArgs& args, char* smem_raw) {
  constexpr int TPV = D / 16;          // threads per vector
  constexpr int NC = kPerThread / TPV;  // adjacent coordinates per thread and 16-group in the strided layout
  constexpr int VW = 32 / TPV;          // vectors per warp
  constexpr int kTile = kWarps * VW;    // vectors per block iteration
  using RawT = typename std::conditional<kHalf, Raw16, Raw32>::type;

  const QuantizeParams& p = args.p;
  const RowLayout& lay = args.lay;
  const int b = blockIdx.z;
  const int h = blockIdx.y;
  const int64_t t_old = p.cache_mode == kBuffer ? p.past_lengths[b] : args.past_total;
  int64_t t_lo = 0, t_hi = 0;
  compressed_range(t_old, p.new_tokens, p.sink_tokens, p.recent_window, &t_lo, &t_hi);
  const int64_t count = t_hi - t_lo;
  if (count <= static_cast<int64_t>(blockIdx.x) * kTile) return;  // block-uniform

  double* bound = reinterpret_cast<double*>(smem_raw);  // [256]: beta_1.. at 0.., then kNoBoundary
  double* cent = bound + 256;                            // [256]
  double* tiles = cent + 256;                            // [kWarps][VW][D]
  float* row0 = reinterpret_cast<float*>(tiles + kWarps * VW * D);
  uint16_t* cells = reinterpret_cast<uint16_t*>(row0 + D);

  const int tid = threadIdx.x;
  const int m = lay.mse_bits[0];
  const int ncent = 1 << m;
  for (int j = tid; j < 256; j += kThreads) {
    const double c = static_cast<double>(p.codebook[j]);
    cent[j] = c;
    bound[j] = j + 1 < ncent ? (c + static_cast<double>(p.codebook[j + 1])) * 0.5 : kNoBoundary;
  }
  const int rh = p.rotation_heads == 1 ? 0 : h;
  const float* rot = p.rotation + static_cast<int64_t>(rh) * D * D;
  for (int j = tid; j < D; j += kThreads) row0[j] = rot[j];
  __syncthreads();
  for (int k = tid; k < kCells; k += kThreads) {
    const double lo = k == 0 ? -INFINITY : -1.0 + k / 512.0 - kCellMargin;
    const double hi = k == kCells - 1 ? INFINITY : -1.0 + (k + 1) / 512.0 + kCellMargin;
    const int below = count_below(bound, m, lo, true);   // boundaries surely under any u of this cell
    const int inside = count_below(bound, m, hi, false) - below;
    cells[k] = inside <= 1 ? static_cast<uint16_t>(below) : kCellMany;
  }
  // Structure check: R[i][j] == (-1)^popcount(i & j) * R[0][j] and |R[0][j]| == c > 0 (finite).
  const float c32 = fabsf(row0[0]);
  int bad = !(c32 > 0.0f && c32 <= 3.4e38f);
  for (int j = tid; j < D; j += kThreads) bad |= fabsf(row0[j]) != c32;
  {
    const float4* r4 = reinterpret_cast<const float4*>(rot);
#pragma unroll 4
    for (int idx = tid; idx < D * D / 4; idx += kThreads) {
      const float4 v = __ldg(r4 + idx);
      const int i = (idx * 4) / D;
      const int j = (idx * 4) % D;
      const float vals[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const float e = (__popc(i & (j + q)) & 1) ? -row0[j + q] : row0[j + q];
        bad |= vals[q] != e;
      }
    }
  }
  const bool hadamard = __syncthreads_or(bad) == 0;

  const int warp = tid / 32;
  const int lane = tid % 32;
  const int grp = lane / TPV;  // vector of this thread within the warp
  const int t = lane % TPV;    // thread within the vector
  double* tile = tiles + (warp * VW + grp) * D;
  const double c64 = static_cast<double>(c32);
  uint32_t flip = 0;  // bit e: s_j < 0 for strided element e
#pragma unroll
  for (int e = 0; e < kPerThread; ++e) {
    const int j = 16 * (e / NC) + t * NC + e % NC;
    flip |= (row0[j] < 0.0f ? 1u : 0u) << e;
  }
  const int64_t bh = static_cast<int64_t>(b) * p.kv_heads + h;
  const int ns = p.sink_tokens;
  auto source = [&](int64_t v) -> const void* {
    const int64_t tok = t_lo + v;
    const size_t esize = kHalf ? 2 : 4;
    if (tok >= t_old) {
      return static_cast<const char*>(p.x) + ((bh * p.new_tokens + (tok - t_old)) * D) * esize;
    }
    const int64_t slot = ns + pmod(tok - ns, p.recent_window);
    return static_cast<const char*>(p.past_window) + ((bh * p.past_window_rows + slot) * D) * esize;
  };
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kTile;
  const int64_t mine = warp * VW + grp;

  int64_t v = static_cast<int64_t>(blockIdx.x) * kTile + mine;
  RawT cur;
  load_raw<D, kHalf>(v < count ? source(v) : nullptr, t, v < count, cur);
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kTile; base < count; base += stride) {
    v = base + mine;
    const bool valid = v < count;
    RawT next;
    load_raw<D, kHalf>(v + stride < count ? source(v + stride) : nullptr, t, v + stride < count, next);

    double y[kPerThread];
    __syncwarp();  // the previous vector's tile reads are done
    if (hadamard) {
      double r[kPerThread];
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        const uint32_t bits = element_bits<kHalf>(cur, e) ^ (((flip >> e) & 1u) << 31);
        r[e] = static_cast<double>(__uint_as_float(bits));
      }
      // Coordinate bits 4..: element g * NC + c pairs with (g ^ bit) * NC + c.
#pragma unroll
      for (int bit = 1; bit < TPV; bit <<= 1) {
#pragma unroll
        for (int g = 0; g < TPV; ++g) {
          if (g & bit) continue;
#pragma unroll
          for (int c = 0; c < NC; ++c) {
            const double a = r[g * NC + c];
            const double bb = r[(g | bit) * NC + c];
            r[g * NC + c] = a + bb;
            r[(g | bit) * NC + c] = a - bb;
          }
        }
      }
      // Transpose through the group's tile: row g holds coordinates 16 g .. 16 g + 15, column swizzled by row.
#pragma unroll
      for (int g = 0; g < TPV; ++g) {
        const int key = (g + grp * TPV) & 15;
#pragma unroll
        for (int c = 0; c < NC; ++c) tile[16 * g + ((t * NC + c) ^ key)] = r[g * NC + c];
      }
      __syncwarp();
      const int key = (t + grp * TPV) & 15;
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) r[k] = tile[16 * t + (k ^ key)];
      // Coordinate bits 0..3.
#pragma unroll
      for (int bit = 1; bit < kPerThread; bit <<= 1) {
#pragma unroll
        for (int k = 0; k < kPerThread; ++k) {
          if (k & bit) continue;
          const double a = r[k];
          const double bb = r[k | bit];
          r[k] = a + bb;
          r[k | bit] = a - bb;
        }
      }
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) y[k] = c64 * r[k];
    } else {
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        tile[16 * (e / NC) + t * NC + e % NC] = static_cast<double>(__uint_as_float(element_bits<kHalf>(cur, e)));
      }
      __syncwarp();
      dense_rows<D>(rot, tile, t, y);
    }

    // Destination row (section 7), overflow flag as in the dense kernel.
    int64_t dest = -1;
    if (valid) {
      const int64_t row = t_lo + v - ns;
      if (row >= 0 && row < p.present_rows) {
        dest = row;
      } else if (p.overflow_flag != nullptr && t == 0) {
        atomicExch(p.overflow_flag, 1);
      }
    }
    uint16_t* out = dest >= 0 ? reinterpret_cast<uint16_t*>(p.present_cache + (bh * p.present_rows + dest) *
                                                                                   lay.row_bytes)
                              : nullptr;

    // n = ||y||, codes, gamma.
    double n2 = 0.0;
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) n2 = fma(y[k], y[k], n2);
    const double nrm = sqrt(group_sum<TPV>(n2));
    const double inv = nrm > 0.0 ? 1.0 / nrm : 0.0;
    uint8_t code[kPerThread];
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) code[k] = static_cast<uint8_t>(code_of(y[k], nrm, inv, bound, cells, m));
    double gamma = nrm;
    if (args.p.codec.norm_correction) {
      double cs = 0.0;
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) cs = fma(cent[code[k]], cent[code[k]], cs);
      cs = group_sum<TPV>(cs);
      gamma = nrm > 0.0 ? nrm / sqrt(cs) : 0.0;
    }
    const uint16_t g16 = f64_to_half_bits(gamma);
    if (out != nullptr) {
      // Segments (section 4): this thread's 16 coordinates are 16 w contiguous bits of each w-bit segment.
      int shift = 0;
      int seg_half_words = 0;  // offset of the segment in 16-bit words
      for (int w = 8; w >= 1; w >>= 1) {  // segment widths: the binary digits of m, widest first
        if ((m & w) == 0) continue;
        const uint32_t mask = (1u << w) - 1u;
        uint64_t lo = 0, hi = 0;
#pragma unroll
        for (int k = 0; k < kPerThread; ++k) {
          const uint64_t f = (static_cast<uint32_t>(code[k]) >> shift) & mask;
          const int pos = k * w;
          if (pos < 64) {
            lo |= f << pos;
          } else {
            hi |= f << (pos - 64);
          }
        }
        uint16_t* dst = out + seg_half_words + t * w;
        for (int q = 0; q < w; ++q) dst[q] = static_cast<uint16_t>(q < 4 ? lo >> (16 * q) : hi >> (16 * (q - 4)));
        seg_half_words += D * w / 16;
        shift += w;
      }
      if (t == 0) out[lay.norm_offset / 2] = g16;
    }
    if (args.p.codec.qjl) {
      // r = y - float64(float16 gamma) * c[code]; z = Sq r; sign bits and rho = ||r||.
      const double gd = static_cast<double>(__half2float(__ushort_as_half(g16)));
      double rr = 0.0;
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) {
        y[k] = y[k] - gd * cent[code[k]];
        rr = fma(y[k], y[k], rr);
      }
      rr = group_sum<TPV>(rr);
      __syncwarp();
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) tile[16 * t + k] = y[k];
      __syncwarp();
      double z[kPerThread];
      dense_rows<D>(p.qjl_matrix, tile, t, z);
      uint32_t signs = 0;
#pragma unroll
      for (int k = 0; k < kPerThread; ++k) signs |= (z[k] > 0.0 ? 1u : 0u) << k;
      if (out != nullptr) {
        out[lay.qjl_offset / 2 + t] = static_cast<uint16_t>(signs);
        if (t == 0) out[lay.rnorm_offset / 2] = f64_to_half_bits(sqrt(rr));
      }
    }
    cur = next;
  }
}

}  // namespace wht

// ---------------------------------------------------------------------------------------------------------------
// v4: float32 Walsh-Hadamard transform with a proven error bound; float64 only where it can change a byte.
// (v3 was the same arithmetic with 64 coordinates per thread; v4 halves that to shrink the unrolled hot loop,
// which v3's profile showed starving on instruction fetch: bench/NOTES.md, "quantize v4".)
//
// For a Hadamard R the code of coordinate i only depends on u_i = y_i / n = r_i / ||r||, r = H diag(s) x (c
// cancels). The kernel computes r in float32 butterflies (exact input: float16/float32 upcasts; sign flips are
// bit flips) and u32 = r32 * rsqrtf(D * S32), S32 = sum x_j^2 in float32 (8 chains of 4 FFMA, a 3-level tree and
// log2(TPV) <= 3 group shuffles: at most 10 roundings). Error in u-space (unit roundoff u = 2^-24, |u_i| <= 1):
//   butterflies: |r32_i - r_i| <= gamma_log2(D) * ||x||_1 <= 8u * ||r||_2     (||x||_1 <= sqrt(D) ||x||_2)
//   S32: <= gamma_10 relative -> 5u on 1/sqrt; rsqrtf: 2 ulp <= 4u; the product: 1u; the boundary: fl32(beta),
//   0.5u (binary search), or the table's nibble-coded float32 within kNibbleErr = 8u of beta (checked per entry)
//   total <= 26.5u (table; 19u binary search; v3's 64-coordinate chains: 20u); the decision margin is
//   kEps = 32u = 2^-19.
// The order of the butterfly stages (bits 0..4 in registers, then 5.. across lanes) does not enter the bound:
// every output is log2(D) roundings deep in any order.
// A coordinate whose u32 lies within kEps of a boundary is "pending": its code is recomputed exactly as the
// contract states, from y_i = c * r_i (r_i summed in float64 over the staged inputs: exact for float16 inputs,
// any order) and n in float64 (n = c * sqrt(D * sum x_j^2), float64), by the whole warp cooperating on one
// coordinate (~1.5e-4 of coordinates at 4 bits, D = 128). gamma16 is rounded from a float32 estimate only when
// the estimate +- 2^-19 (2^-18 with norm correction) rounds to one float16; otherwise from float64. Vectors whose
// S32 is 0 (float32 input), tiny, huge, Inf or NaN take the exact path for every coordinate (zero float16 vectors
// are exact in float32: u = 0). The result is the same bytes as the float64 path up to the contract's float64
// rounding freedom (n and the summation order), which the v2 kernel already used.
//
// Layout: 256 threads, 2 blocks per SM (128 registers, no spills in the loop; 3 blocks at 80 registers ran slower), 32
// coordinates per thread (TPV = D / 32 threads per vector, VW = 32 / TPV vectors per warp and tile). Each warp streams
// its own tiles: 16-byte cp.async of the tile's inputs (coalesced, 512 B per warp instruction; per-lane destinations
// fixed at setup) into a two-stage per-warp buffer in which each lane's CPL = 32 * esize / 16 chunks are contiguous and
// lanes are CPL + 1 chunks apart (so the 8 lanes of a 16-byte read phase hit 8 different bank groups); butterflies over
// coordinate bits 0..4 in registers, bits 5.. by xor-shuffles (half exchanges for the first two: see the loop). Codes:
// m <= 4 via a 513-cell table (cells of width 1/256, margin 2^-16; a cell holds at most one boundary or the block
// uses the binary search; each entry is the candidate boundary as a float32 that carries the code below it in its
// low mantissa nibble, so one load gives both; codes and the top bytes of beta - u, whose sign decides the code and
// whose exponent bits the pending set, are gathered four at a time by byte permutes), m > 4 by binary search over
// the float32 boundaries. Rows are packed in registers (byte-per-code words, then segment words with shifts,
// multiplies and prmt; constant masks for 3- and 4-bit table codes), staged per warp in shared memory at the
// destination's 16-byte phase, and written as one contiguous run (one bulk store when aligned). A block whose R is
// not Hadamard-structured runs v2's dense branch (inlined: no call, the kernel parameter's address never escapes).
namespace v4 {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kCPT = 32;                      // coordinates per thread
constexpr int kCells = 513;                   // u cells: floor(round((u + 1) * 1024) / 4), 0..512
constexpr double kCellMargin = 0x1p-16;
constexpr float kEps = 0x1p-19f;              // decision margin in u-space (32 unit roundoffs)
constexpr float kGammaMargin = 0x1p-19f;      // relative, norm_correction = 0
constexpr float kGammaMarginNc = 0x1p-18f;    // relative, norm_correction = 1
constexpr double kNibbleErr = 0x1p-21;        // |table boundary - beta| allowed (8 unit roundoffs)
constexpr double kMinSpacing = 1.0 / 256 + 0x1p-14;  // > any cell's width (1/256 + 2 kCellMargin)
constexpr int kOutBytes = 1088;               // per warp and buffer: VW * row_bytes + 16-byte phase <= 16 * 66 + 16

template <int D, bool kHalf>
struct Shape {
  static constexpr int TPV = D / kCPT;
  static constexpr int VW = 32 / TPV;
  static constexpr int kEsize = kHalf ? 2 : 4;
  static constexpr int CPL = kCPT * kEsize / 16;         // 16-byte chunks per lane: 4 or 8
  static constexpr int kLaneBytes = 16 * (CPL + 1);      // lane pitch in a stage (one pad chunk)
  static constexpr int kStageBytes = 32 * kLaneBytes;    // one tile (VW vectors), one warp: 2.5 KB or 4.5 KB
  static constexpr int CPV = D * kEsize / 16;            // 16-byte chunks per vector
  static constexpr int kMaskWords = kHalf ? D / 2 : D;   // sign masks, one per input word
  static constexpr int kMaskBytes = TPV * kLaneBytes;    // masks in the stage's lane layout (thread t at t * pitch)
  static constexpr int kBlocksPerSm = 2;        // 128 registers: no spills (3 blocks at 80 lost)
};

struct Smem {
  char* stage;        // [kWarps][2][kStageBytes]
  uint8_t* obuf;      // [kWarps][2][kOutBytes]: a tile's rows, two buffers (a bulk store may still read one)
  double* bound64;    // [256]: beta_1.. at 0.., then kNoBoundary
  float* cent32;      // [256]
  char* smask;        // [TPV][kLaneBytes]: sign bits of s in input-word layout, thread t's 16-byte chunks
  uint32_t* sgnbits;  // [D / 32]: bit j: s_j < 0
  float* row0;        // [D]
};

template <int D, bool kHalf>
__host__ __device__ inline size_t smem_layout(char* base, Smem* s) {
  using Sh = Shape<D, kHalf>;
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char* ptr = base + off;
    off += (bytes + 15) & ~static_cast<size_t>(15);
    return ptr;
  };
  char* stage = take(static_cast<size_t>(kWarps) * 2 * Sh::kStageBytes);
  char* obuf = take(static_cast<size_t>(kWarps) * 2 * kOutBytes);
  char* bound64 = take(sizeof(double) * 256);
  char* cent32 = take(sizeof(float) * 256);
  char* smask = take(Sh::kMaskBytes);
  char* sgnbits = take(sizeof(uint32_t) * (D / 32));
  char* row0 = take(sizeof(float) * D);
  if (s != nullptr) {
    s->stage = stage;
    s->obuf = reinterpret_cast<uint8_t*>(obuf);
    s->bound64 = reinterpret_cast<double*>(bound64);
    s->cent32 = reinterpret_cast<float*>(cent32);
    s->smask = smask;
    s->sgnbits = reinterpret_cast<uint32_t*>(sgnbits);
    s->row0 = reinterpret_cast<float*>(row0);
  }
  return off;
}

template <int D, bool kHalf>
__host__ __device__ inline size_t smem_bytes() {
  const size_t mine = smem_layout<D, kHalf>(nullptr, nullptr);
  const size_t v2 = wht::smem_bytes(D);  // the dense branch reuses the same memory
  return mine > v2 ? mine : v2;
}

// Input element j of warp-local vector v in a stage (as float32, exact): lane v * TPV + j / 32 holds it.
template <int D, bool kHalf>
__device__ __forceinline__ float staged_elem(const char* stage, int v, int j) {
  using Sh = Shape<D, kHalf>;
  const int owner = v * Sh::TPV + j / kCPT;
  const char* ptr = stage + owner * Sh::kLaneBytes + (j % kCPT) * Sh::kEsize;
  if constexpr (kHalf) {
    return __half2float(*reinterpret_cast<const __half*>(ptr));
  } else {
    return *reinterpret_cast<const float*>(ptr);
  }
}

__device__ __forceinline__ double warp_sum_bcast(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return __shfl_sync(0xffffffffu, v, 0);  // one value for every lane
}

template <int TPV, typename T>
__device__ __forceinline__ T group_sum(T v) {
#pragma unroll
  for (int o = 1; o < TPV; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);  // commutative: same in each lane
  return v;
}

// Code k (run-time index) of the byte-per-code words, without indexing the array at run time (which would move it
// to local memory): every word is rewritten through a byte mask that is zero except in word k / 4.
__device__ __forceinline__ void set_code(uint32_t (&cw)[kCPT / 4], int k, uint32_t code) {
  const uint32_t onehot = 1u << k;
  const uint32_t rep = code * 0x01010101u;
#pragma unroll
  for (int q = 0; q < kCPT / 4; ++q) {
    const uint32_t bits = (onehot >> (4 * q)) & 0xFu;
    const uint32_t mask = ((bits * 0x00204081u) & 0x01010101u) * 0xFFu;  // bit i -> byte i
    cw[q] = (cw[q] & ~mask) | (rep & mask);
  }
}

// The float32 nearest to v among those whose low mantissa nibble is nib (sign kept): the candidates are v's float32
// with that nibble and its neighbours 16 ulps up and down, so the result is within 8 ulps of v (more only across a
// binade; the caller checks the distance it needs). |v| <= 4 here (boundaries of a codebook, or the sentinel).
__device__ __forceinline__ float nibble_boundary(double v, uint32_t nib) {
  const uint32_t bits = v == 0.0 ? 0u : __float_as_uint(static_cast<float>(v));  // -0 as +0: u = 0 is not below
  const uint32_t sign = bits & 0x80000000u;
  const uint32_t mag = bits & 0x7FFFFFF0u;
  float best = __uint_as_float(sign | mag | nib);
  double err = fabs(static_cast<double>(best) - v);
  const uint32_t others[2] = {mag + 16u, mag >= 16u ? mag - 16u : mag};
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float c = __uint_as_float(sign | others[i] | nib);
    const double ce = fabs(static_cast<double>(c) - v);
    if (ce < err) {
      best = c;
      err = ce;
    }
  }
  return best;
}

// Coordinate of the vector that register k of slice t holds after the butterflies (see "Half exchanges" in the
// kernel): runs of 8 (D >= 128) or 16 (D = 64) consecutive coordinates per chunk of registers, so each chunk of 8
// codes stays whole bytes in every segment.
template <int TPV>
__device__ __forceinline__ int coord_of(int t, int k) {
  if constexpr (TPV == 2) {
    return (k & 15) | ((t & 1) << 4) | (((k >> 4) & 1) << 5);
  } else {
    return (k & 7) | (((t >> 1) & 1) << 3) | ((t & 1) << 4) | (((k >> 4) & 1) << 5) | (((k >> 3) & 1) << 6) |
           ((t >> 2) << 7);
  }
}

__device__ __forceinline__ void sts16(uint8_t* p, uint32_t word) {
  reinterpret_cast<uint16_t*>(p)[0] = static_cast<uint16_t>(word);
  reinterpret_cast<uint16_t*>(p)[1] = static_cast<uint16_t>(word >> 16);
}

template <int D, bool kHalf>
__global__ void __launch_bounds__(kThreads, Shape<D, kHalf>::kBlocksPerSm)
    tq_quantize_wht4_kernel(const QuantizeArgs args) {
  using Sh = Shape<D, kHalf>;
  constexpr int TPV = Sh::TPV;
  constexpr int VW = Sh::VW;
  constexpr int CPL = Sh::CPL;
  static_assert(TPV * kCPT == D && VW * TPV == 32, "D in {64, 128, 256}");
  static_assert(CPL == 4 || CPL == 8, "16-byte chunks per lane");
  dev::pdl_trigger();  // a decode attention launched next may start (it waits for this grid first)

  const int stamp_block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;  // timing builds
  dev::stamp(stamp_block, 0);
  // setup_before_wait (launch_typed): launched as a programmatic dependent of the stream's previous kernel, the
  // block builds its tables from the codebook and R's row 0 (promised constant: QuantizeParams::constant_tables)
  // while that kernel finishes, and waits for it before it reads anything else (lengths, x, the window) and
  // before it writes global memory. Otherwise (a plain launch) the first tile's loads overlap the setup instead.
  const bool wait_late = args.setup_before_wait != 0;
  const QuantizeParams& p = args.p;
  const RowLayout& lay = args.lay;
  const int b = blockIdx.z;
  const int h = blockIdx.y;
  int64_t t_lo = 0, count = 0, ntiles = 0;
  auto token_range = [&]() {
    const int64_t t_old = p.cache_mode == kBuffer ? p.past_lengths[b] : args.past_total;
    int64_t t_hi = 0;
    compressed_range(t_old, p.new_tokens, p.sink_tokens, p.recent_window, &t_lo, &t_hi);
    count = t_hi - t_lo;
    ntiles = count > 0 ? (count + VW - 1) / VW : 0;
    return t_old;
  };
  int64_t t_old = 0;
  if (!wait_late) {
    t_old = token_range();
    if (ntiles <= static_cast<int64_t>(blockIdx.x) * kWarps) return;  // block-uniform
  }

  extern __shared__ __align__(16) char smem_raw[];
  __shared__ __align__(16) float s_b32[260];       // b32[-1 .. 258]: float32 boundaries, -4 at -1, +4 from 2^m - 1
  __shared__ __align__(16) float s_cellb[1024];    // 513 cells, the rest copies of the last (any index is safe)
  Smem S;
  smem_layout<D, kHalf>(smem_raw, &S);
  float* b32 = s_b32 + 1;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int m = lay.mse_bits[0];
  const int ncent = 1 << m;
  const int64_t bh = static_cast<int64_t>(b) * p.kv_heads + h;
  const int ns = p.sink_tokens;
  auto source = [&](int64_t v) -> const char* {
    const int64_t tok = t_lo + v;
    if (tok >= t_old) {
      return static_cast<const char*>(p.x) + ((bh * p.new_tokens + (tok - t_old)) * D) * Sh::kEsize;
    }
    const int64_t slot = ns + pmod(tok - ns, p.recent_window);
    return static_cast<const char*>(p.past_window) + ((bh * p.past_window_rows + slot) * D) * Sh::kEsize;
  };
  char* stage0 = S.stage + warp * 2 * Sh::kStageBytes;
  // Tile jt (VW vectors) of this (b, h) into stage st of this warp: 16-byte chunk c = lane + 32 q of the tile goes
  // to its owner lane c / CPL at chunk c % CPL; with 32 / CPL owners per q that is this lane's fixed destination
  // plus q * (32 / CPL) lane pitches. Vectors past count are zero-filled.
  const int dst_lane = (lane / CPL) * Sh::kLaneBytes + 16 * (lane % CPL);
  constexpr int kDstStep = (32 / CPL) * Sh::kLaneBytes;
  // The common case: tiles jt in [fast_lo, fast_hi) are VW consecutive rows of x (t_lo + jt VW >= t_old and
  // jt VW + VW <= count), at byte x_off + jt * kTileBytes of x (this lane's first chunk; x_off alone may be
  // negative, so it stays an offset until a fast tile is added).
  constexpr int64_t kTileBytes = static_cast<int64_t>(VW) * D * Sh::kEsize;
  int64_t fast_lo = 0, fast_hi = 0, x_off = 0;
  auto fast_range = [&]() {
    fast_lo = t_old > t_lo ? (t_old - t_lo + VW - 1) / VW : 0;
    fast_hi = count / VW;
    x_off = ((bh * p.new_tokens + (t_lo - t_old)) * D) * Sh::kEsize + 16 * lane;
  };
  if (!wait_late) fast_range();
  auto issue = [&](int64_t jt, int st) {
    char* dst = stage0 + st * Sh::kStageBytes + dst_lane;
    if (jt >= fast_lo && jt < fast_hi) {
      const char* src = static_cast<const char*>(p.x) + (x_off + jt * kTileBytes);
#pragma unroll
      for (int q = 0; q < CPL; ++q) dev::cp_async_16(dst + q * kDstStep, src + 512 * q, 16);
      dev::cp_async_commit();
      return;
    }
#pragma unroll
    for (int q = 0; q < CPL; ++q) {
      const int c = lane + 32 * q;
      const int64_t vi = jt * VW + c / Sh::CPV;
      const char* src = static_cast<const char*>(p.x);
      int bytes = 0;
      if (vi < count) {
        src = source(vi) + 16 * (c % Sh::CPV);
        bytes = 16;
      }
      dev::cp_async_16(dst + q * kDstStep, src, bytes);
    }
    dev::cp_async_commit();
  };
  int64_t jt = static_cast<int64_t>(blockIdx.x) * kWarps + warp;
  const int64_t jstride = static_cast<int64_t>(gridDim.x) * kWarps;
  if (!wait_late && jt < ntiles) issue(jt, 0);  // the first tile's loads overlap the setup below

  int close = 0;  // two adjacent boundaries closer than kMinSpacing (m <= 4 only)
  for (int j = tid; j < 256; j += kThreads) {
    const float c = p.codebook[j];
    S.cent32[j] = c;
    const double bd = j + 1 < ncent ? (static_cast<double>(c) + static_cast<double>(p.codebook[j + 1])) * 0.5
                                    : wht::kNoBoundary;
    S.bound64[j] = bd;
    b32[j] = static_cast<float>(bd);
    // beta_{j+1} - beta_j = (c_{j+2} - c_j) / 2 (NaN counts as close)
    if (m <= 4 && j + 2 < ncent) {
      close |= !((static_cast<double>(p.codebook[j + 2]) - static_cast<double>(c)) * 0.5 >= kMinSpacing);
    }
  }
  if (tid == 0) {
    b32[-1] = -4.0f;
    b32[256] = 4.0f;
  }
  const int rh = p.rotation_heads == 1 ? 0 : h;
  const float* rot = p.rotation + static_cast<int64_t>(rh) * D * D;
  for (int j = tid; j < D; j += kThreads) S.row0[j] = rot[j];
  const int any_close = __syncthreads_or(close);
  // Cell k (u in [(4k - 0.5) / 1024 - 1, (4k + 3.5) / 1024 - 1], widened by kCellMargin) holds its candidate
  // boundary beta_e, e = the number of boundaries surely below the cell, as the float32 nearest to beta_e whose low
  // mantissa nibble is e (nibble_boundary): one load gives both the code e and the boundary that decides between e
  // and e + 1. The block takes the table only when every cell holds at most one boundary (surely so for the bounded
  // cells when adjacent boundaries are at least kMinSpacing apart, wider than any of them; otherwise, and for the
  // two end cells, counted per cell) and every entry is
  // within kNibbleErr of its float64 boundary (the error budget above).
  int slow = 0;
  if (m <= 4) {
    static_assert(kThreads == 256 && kCells == 513, "cells tid, tid + 256 and the last per thread");
    auto cell = [&](int kc) -> float {
      const double lo = kc == 0 ? -INFINITY : (4 * kc - 0.5) / 1024.0 - 1.0 - kCellMargin;
      // Four fixed steps whatever m <= 4: bound64[ncent - 1 ..] hold kNoBoundary (4 > lo), so they count nothing.
      const int below = wht::count_below(S.bound64, 4, lo, true);
      if (any_close != 0 || kc == 0 || (kc == kCells - 1 && tid == 0)) {  // the end cells are unbounded
        const double hi = kc == kCells - 1 ? INFINITY : (4 * kc + 3.5) / 1024.0 - 1.0 + kCellMargin;
        slow |= wht::count_below(S.bound64, m, hi, false) - below > 1;
      }
      const double bd = S.bound64[below];
      const float nb = nibble_boundary(bd, static_cast<uint32_t>(below));
      slow |= below + 1 < ncent && !(fabs(static_cast<double>(nb) - bd) <= kNibbleErr);
      return nb;
    };
    // Three independent searches per thread (this setup is most of a decode step's quantize, where each block
    // codes one or a few vectors); cells 513.. repeat the last (any index of the table is safe).
    const float c0 = cell(tid);
    const float c1 = cell(tid + 256);
    const float last = cell(kCells - 1);
    s_cellb[tid] = c0;
    s_cellb[tid + 256] = c1;
    s_cellb[tid + 512] = last;
    s_cellb[tid + 768] = last;
  }
  // Sign masks: input word w of the vector (two halves or one float) lies in thread w / (kMaskWords / TPV)'s
  // chunks, laid out as the stage's lanes so that the hot loop reads them with the same offsets.
  for (int w = tid; w < Sh::kMaskWords; w += kThreads) {
    constexpr int kWordsPerThread = Sh::kMaskWords / TPV;
    uint32_t word;
    if constexpr (kHalf) {
      word = (S.row0[2 * w] < 0.0f ? 0x8000u : 0u) | (S.row0[2 * w + 1] < 0.0f ? 0x80000000u : 0u);
    } else {
      word = S.row0[w] < 0.0f ? 0x80000000u : 0u;
    }
    reinterpret_cast<uint32_t*>(S.smask + (w / kWordsPerThread) * Sh::kLaneBytes)[w % kWordsPerThread] = word;
  }
  static_assert(D / 32 <= kWarps, "one warp per sign word");
  if (warp < D / 32) {  // word w = warp: bit q is row0[32 w + q] < 0 (one ballot, not a 32-step chain)
    const uint32_t bits = __ballot_sync(0xffffffffu, S.row0[32 * warp + lane] < 0.0f);
    if (lane == 0) S.sgnbits[warp] = bits;
  }
  // Structure check (dev::hadamard_mismatch, shared with the attention kernels): R[i][j] == (-1)^popcount(i & j)
  // * R[0][j] bit for bit, and |R[0][j]| == c > 0 (finite); each thread one column quad, rows strided. Skipped
  // where the caller promised it (QuantizeParams::rotation_hadamard: checked on the host, a D x D read saved).
  const float c32 = fabsf(S.row0[0]);
  const uint32_t bad = p.rotation_hadamard != 0 ? 0u : dev::hadamard_mismatch<D, kThreads, 4>(rot, tid);
  const bool hadamard = __syncthreads_or(bad != 0u) == 0;
  const int any_slow = __syncthreads_or(slow);
  dev::stamp(stamp_block, 1);
  if (wait_late) {  // the setup read only the codebook and R; the previous grid's outputs from here on
    dev::pdl_wait();
    t_old = token_range();
    if (ntiles <= static_cast<int64_t>(blockIdx.x) * kWarps) return;  // block-uniform, after every barrier
    fast_range();
    if (jt < ntiles) issue(jt, 0);
  }
  const bool use_table = m <= 4 && any_slow == 0;
  const uint32_t cmask = use_table ? 0x0Fu : 0xFFu;  // code bits of a code byte (table bytes: bits 4..7 garbage)
  if (!hadamard) {
    dev::cp_async_wait<0>();
    __syncthreads();  // the stage region is reused by v2's tables
    wht::v2_block<D, kHalf>(args, smem_raw);
    return;
  }

  const int g = lane / TPV;  // vector of this lane within the tile
  const int t = lane % TPV;  // its 32-coordinate slice
  const double c64 = static_cast<double>(c32);
  const int rb = lay.row_bytes;
  const bool nc = p.codec.norm_correction != 0;
  uint8_t* const obuf2 = S.obuf + warp * 2 * kOutBytes;
  const uint4* mk = reinterpret_cast<const uint4*>(S.smask + t * Sh::kLaneBytes);

#if TQ_STAMPS
  bool first_tile = true;
  unsigned long long tiles_done = 0;
#endif
  for (int st = 0; jt < ntiles; jt += jstride, st ^= 1) {
#if TQ_STAMPS
    ++tiles_done;
#endif
    if (jt + jstride < ntiles) {
      issue(jt + jstride, st ^ 1);
    } else {
      dev::cp_async_commit();
    }
    dev::cp_async_wait<1>();
    if (lane == 0) dev::bulk_wait_read_upto<1>();  // the bulk store of two tiles ago has read obuf (buffer st)
    __syncwarp();
#if TQ_STAMPS
    if (first_tile) dev::stamp(stamp_block, 2);  // the first tile arrived (warp 0's)
    first_tile = false;
#endif
    const char* cur = stage0 + st * Sh::kStageBytes;
    uint8_t* const obuf = obuf2 + st * kOutBytes;
    const uint4* mine = reinterpret_cast<const uint4*>(cur + lane * Sh::kLaneBytes);
    const int64_t v0 = jt * VW;
    const bool valid = v0 + g < count;

    // Inputs with the sign flips (float32), S32 = sum x_j^2 (8 chains in coordinate order, a 3-level tree and the
    // group shuffles: gamma_10 relative at most), butterflies over bits 0..4 in registers, then bits 5.. across
    // the group (lower lane a + b, upper lane a - b).
    float r[kCPT];
    float acc[8];
#pragma unroll
    for (int q = 0; q < 8; ++q) acc[q] = 0.0f;
#pragma unroll
    for (int k = 0; k < CPL; ++k) {
      const uint4 d = mine[k];
      const uint4 s = mk[k];
      const uint32_t w4[4] = {d.x ^ s.x, d.y ^ s.y, d.z ^ s.z, d.w ^ s.w};
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        if constexpr (kHalf) {
          const uint32_t word = w4[q];
          const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&word));
          r[8 * k + 2 * q] = f.x;
          r[8 * k + 2 * q + 1] = f.y;
        } else {
          r[4 * k + q] = __uint_as_float(w4[q]);
        }
      }
    }
#pragma unroll
    for (int k = 0; k < kCPT; ++k) acc[k & 7] = fmaf(r[k], r[k], acc[k & 7]);
    // Half exchanges. A cross-lane stage o (coordinate bit 5 + log2 o) pairs the lower lane's value A with the
    // upper lane's B at each coordinate; instead of both lanes sending all 32 values (one shuffle and one FFMA per
    // value), the stages o = 1 and 2 pair register k with k | p (p = 16 / o): the lower lane keeps the outputs
    // A +- B of the coordinates whose register bit p is 0, the upper lane those whose bit is 1, and each sends the
    // other half (16 shuffles and 32 FADDs). For the upper lane to send from the same registers, its last
    // in-register butterfly over bit p leaves the pair swapped (one FFMA by a lane sign per output, as many
    // instructions as the FADDs). The upper lane's difference comes out negated (B - A): each register keeps a sign
    // sigma(t, k) = (t & 1 && k & 16 ? -1 : 1) (t & 2 && k & 8 ? -1 : 1), folded into the code phase's scale
    // factors (sign flips are exact, so every value is the same float32 rounding as the full exchange's). After
    // them register k of slice t holds coordinate coord_of<TPV>(t, k). D = 256's third stage (o = 4) exchanges
    // in full. Each output is still log2(D) roundings deep: the error bound below is unchanged.
#pragma unroll
    for (int bit = 1; bit < kCPT; bit <<= 1) {
      const int o = 16 / bit;
      const bool swap = o < TPV && o <= 2;  // compile-time in the unrolled loop
      const float sw = swap && (t & o) ? -1.0f : 1.0f;
#pragma unroll
      for (int k = 0; k < kCPT; ++k) {
        if (k & bit) continue;
        const float a = r[k];
        const float bb = r[k | bit];
        if (swap) {
          r[k] = fmaf(bb, sw, a);
          r[k | bit] = fmaf(bb, -sw, a);
        } else {
          r[k] = a + bb;
          r[k | bit] = a - bb;
        }
      }
    }
    float s32 = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    s32 = group_sum<TPV>(s32);
#pragma unroll
    for (int o = 1; o < TPV && o <= 2; o <<= 1) {
      const int p = 16 / o;
#pragma unroll
      for (int k = 0; k < kCPT; ++k) {
        if (k & p) continue;
        const float y = __shfl_xor_sync(0xffffffffu, r[k | p], o);
        const float keep = r[k];
        r[k] = keep + y;
        r[k | p] = keep - y;
      }
    }
#pragma unroll
    for (int o = 4; o < TPV; o <<= 1) {
      const float sg = (t & o) ? -1.0f : 1.0f;
#pragma unroll
      for (int k = 0; k < kCPT; ++k) r[k] = fmaf(r[k], sg, __shfl_xor_sync(0xffffffffu, r[k], o));
    }
    const float sd = s32 * static_cast<float>(D);
    const bool in_range = s32 >= 0x1p-60f && s32 <= 0x1p60f;  // NaN: false
    const bool zero = kHalf && s32 == 0.0f;                    // float16: all inputs are +-0 (exact u = 0)
    const float inv = in_range ? rsqrtf(sd) : 0.0f;
    // Scale factors per sign class of the half exchanges: class (k >> 3) & 3 of register k (bit 1: k & 16, lane
    // bit t & 1; bit 0: k & 8, lane bit t & 2).
    float invs[4];
#pragma unroll
    for (int cls = 0; cls < 4; ++cls) {
      const bool neg = ((cls & 2) && (t & 1)) != ((cls & 1) && TPV >= 4 && (t & 2));
      invs[cls] = neg ? -inv : inv;
    }

    // Codes (one byte each) and pending coordinates.
    uint32_t cw[kCPT / 4];
    uint32_t pm = 0u;  // pending coordinates (table path: 1 when any, until the exact path needs the set)
    uint32_t fw[kCPT / 4];  // table path: bit 7 of byte i set when coordinate 4 q + i is decided
#pragma unroll
    for (int q = 0; q < kCPT / 4; ++q) cw[q] = 0;
    if (use_table) {
      float i256s[4];
#pragma unroll
      for (int cls = 0; cls < 4; ++cls) i256s[cls] = invs[cls] * 256.0f;
      const char* cellb = reinterpret_cast<const char*>(s_cellb);
      // 256 u + 256 + 2^21 rounds to a multiple of 1/4, so the float's bits 0..11 are M = round(1024 u + 1024),
      // bits 2..11 the cell k = floor(M / 4), and bits & 0xFFC its byte offset in the table: 0..512 (|u32| <= 1 +
      // 19 unit roundoffs; out-of-range vectors have inv = 0 -> 256, and any other index of the 1024-entry table is
      // safe: such vectors are recomputed).
      // Per four coordinates: the entries' low bytes (code e in bits 0..3) and the top bytes of d = beta_e - u (one
      // rounding) are gathered by byte permutes; code = e + (u > beta_e), added bytewise from the top bytes' sign
      // bits (no carry: e + 1 <= 15 whenever d < 0, as the last candidate is the +4 sentinel). d == +-0 is pending,
      // except in a zero float16 vector (u = 0 exactly, no pending set), where d = beta_e exactly: its sign is that
      // of the boundary (never -0, see nibble_boundary), so u = 0 > beta_e exactly when d < 0.
      // Pending: |d| < kEps = 2^-19, read from the same top bytes: bits 0..6 of d's top byte are its exponent's
      // upper seven bits, at least 54 exactly when |d| >= 2^-19 (|d| = kEps itself is decided: the error bound is
      // below it), so (top & 0x7F7F7F7F) + 0x4A4A4A4A sets bit 7 of each decided coordinate's byte (no carry:
      // 0x7F + 0x4A < 0x100). NaN d (only in out-of-range vectors, recomputed whole) reads as decided.
      uint32_t decided = 0xFFFFFFFFu;
#pragma unroll
      for (int q = 0; q < kCPT / 4; ++q) {
        uint32_t eb[4], db[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int k = 4 * q + i;
          const int cls = (k >> 3) & 3;
          const int off = __float_as_int(fmaf(r[k], i256s[cls], 2097408.0f)) & 0xFFC;
          const float beta = *reinterpret_cast<const float*>(cellb + off);
          const float d = fmaf(r[k], -invs[cls], beta);
          eb[i] = __float_as_uint(beta);
          db[i] = __float_as_uint(d);
        }
        const uint32_t e = __byte_perm(__byte_perm(eb[0], eb[1], 0x0040), __byte_perm(eb[2], eb[3], 0x0040), 0x5410);
        const uint32_t top = __byte_perm(__byte_perm(db[0], db[1], 0x0073), __byte_perm(db[2], db[3], 0x0073), 0x5410);
        cw[q] = e + ((top & 0x80808080u) >> 7);
        fw[q] = (top & 0x7F7F7F7Fu) + 0x4A4A4A4Au;
        decided &= fw[q];
      }
      pm = (decided & 0x80808080u) != 0x80808080u ? 1u : 0u;
    } else {
#pragma unroll
      for (int k = 0; k < kCPT; ++k) {
        const float u = r[k] * invs[(k >> 3) & 3];
        int pos = 0;
        for (int step = 1 << (m - 1); step > 0; step >>= 1) {
          if (b32[pos + step - 1] < u) pos += step;
        }
        cw[k >> 2] |= static_cast<uint32_t>(pos) << (8 * (k & 3));
        if (fabsf(u - b32[pos]) <= kEps || fabsf(u - b32[pos - 1]) <= kEps) pm |= 1u << k;
      }
    }
    const bool range_bad = valid && !in_range && !zero;
    if (!valid || zero) pm = 0u;
    if (range_bad) pm = 0xffffffffu;

    // gamma from float32 when +-margin rounds to one float16.
    float g32 = c32 * sqrtf(sd);
    float gmargin = kGammaMargin;
    if (nc) {
      float ca[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int k = 0; k < kCPT; ++k) {
        const float cv = S.cent32[(cw[k >> 2] >> (8 * (k & 3))) & cmask];
        ca[k & 3] = fmaf(cv, cv, ca[k & 3]);
      }
      const float cs = group_sum<TPV>((ca[0] + ca[1]) + (ca[2] + ca[3]));
      g32 = g32 > 0.0f ? g32 * rsqrtf(cs) : 0.0f;
      gmargin = kGammaMarginNc;
    }
    uint32_t g16 = __half_as_ushort(__float2half_rn(fminf(g32 * (1.0f - gmargin), 65504.0f)));
    const uint32_t g16hi = __half_as_ushort(__float2half_rn(fminf(g32 * (1.0f + gmargin), 65504.0f)));
    const int any_pending = group_sum<TPV>(static_cast<int>(pm != 0u));  // every lane shuffles
    const bool need64 = valid && (range_bad || any_pending != 0 || g16 != g16hi);

    // Exact path (warp-uniform; rare): n in float64 per vector, then each pending coordinate by the whole warp.
    const unsigned need = __ballot_sync(0xffffffffu, need64);
    if (need != 0u) {
      if (use_table && pm == 1u) {  // the pending set from the decided bits: byte flags at 0, 8, 16, 24 -> 4 bits
        pm = 0u;
#pragma unroll
        for (int q = 0; q < kCPT / 4; ++q) {
          const uint32_t x = (~fw[q] >> 7) & 0x01010101u;
          pm |= (((x * 0x00204081u) >> 21) & 0xFu) << (4 * q);
        }
      }
      double n64 = 0.0;
      for (unsigned todo = need; todo != 0u;) {
        const int vs = (__ffs(todo) - 1) / TPV;
        double part = 0.0;
#pragma unroll
        for (int j = lane; j < D; j += 32) {
          const double xv = static_cast<double>(staged_elem<D, kHalf>(cur, vs, j));
          part = fma(xv, xv, part);
        }
        part = warp_sum_bcast(part);
        if (g == vs) n64 = c64 * sqrt(part * D);
        todo &= ~(((1u << TPV) - 1u) << (vs * TPV));
      }
      for (unsigned lanes = __ballot_sync(0xffffffffu, pm != 0u); lanes != 0u;
           lanes = __ballot_sync(0xffffffffu, pm != 0u)) {
        const int L = __ffs(lanes) - 1;
        const int k = __shfl_sync(0xffffffffu, __ffs(pm) - 1, L);
        const double nl = __shfl_sync(0xffffffffu, n64, L);
        if (!(nl > 0.0)) {  // u = 0 for every coordinate of that vector (n == 0 or NaN)
          if (lane == L) {
            const uint32_t zc = static_cast<uint32_t>(wht::count_below(S.bound64, m, 0.0, false));
#pragma unroll
            for (int kk = 0; kk < kCPT; ++kk) {
              if (((pm >> kk) & 1u) != 0u) {
                cw[kk >> 2] = (cw[kk >> 2] & ~(0xFFu << (8 * (kk & 3)))) | (zc << (8 * (kk & 3)));
              }
            }
            pm = 0u;
          }
          continue;
        }
        const int vs = L / TPV;
        const int i = coord_of<TPV>(L % TPV, k);  // coordinate of the vector
        double part = 0.0;
#pragma unroll
        for (int j = lane; j < D; j += 32) {
          const uint32_t flip = ((S.sgnbits[j >> 5] >> (j & 31)) ^ static_cast<uint32_t>(__popc(i & j))) & 1u;
          const float xv = staged_elem<D, kHalf>(cur, vs, j);
          part += static_cast<double>(__uint_as_float(__float_as_uint(xv) ^ (flip << 31)));
        }
        part = warp_sum_bcast(part);  // exact for float16 inputs (any order); float64 rounding otherwise
        if (lane == L) {
          const double y = c64 * part;
          set_code(cw, k, static_cast<uint32_t>(wht::count_below(S.bound64, m, y / nl, false)));
          pm &= ~(1u << k);
        }
      }
      double cs64 = 0.0;
      if (nc) {
#pragma unroll
        for (int k = 0; k < kCPT; ++k) {
          const double cv = static_cast<double>(S.cent32[(cw[k >> 2] >> (8 * (k & 3))) & cmask]);
          cs64 = fma(cv, cv, cs64);
        }
        cs64 = group_sum<TPV>(cs64);
      }
      if (need64) {
        const double gamma = nc ? (n64 > 0.0 ? n64 / sqrt(cs64) : 0.0) : n64;
        g16 = f64_to_half_bits(gamma);
      }
    }

    // Rows of this tile: vectors [0, nrows) land in rows row_first + v (contiguous); the rest overflow.
    const int64_t row_first = t_lo + v0 - ns;
    const int64_t in_count = count - v0 < VW ? count - v0 : VW;
    int64_t nr = p.present_rows - row_first;
    nr = nr < in_count ? nr : in_count;
    const int nrows = nr > 0 ? static_cast<int>(nr) : 0;
    if (nrows < in_count && p.overflow_flag != nullptr && lane == 0) atomicExch(p.overflow_flag, 1);
    uint8_t* gdst = p.present_cache + (bh * p.present_rows + row_first) * rb;
    const int phase = static_cast<int>(reinterpret_cast<uintptr_t>(gdst) & 15u);
    if (g < nrows) {
      // Segments (format.md section 4): chunk ch (registers 8 ch .. 8 ch + 7, code words cw[2 ch], cw[2 ch + 1]) holds
      // the consecutive coordinates cs[ch] .. cs[ch] + 7, whose codes are 8 w contiguous bits of each w-bit segment
      // at bit cs[ch] * w (whole bytes: cs[ch] is a multiple of 8).
      uint8_t* srow = obuf + phase + g * rb;
      int cs[4];
#pragma unroll
      for (int ch = 0; ch < 4; ++ch) cs[ch] = coord_of<TPV>(t, 8 * ch);
      auto sts16at = [](uint8_t* p, uint32_t half) { *reinterpret_cast<uint16_t*>(p) = static_cast<uint16_t>(half); };
      int shift = 0;
      int seg = 0;
      if (use_table && m == 3) {
        // 3-bit table codes (byte bits 0..2, bits 4..7 garbage), constant masks: the 2-bit segment (code bits 0..1)
        // by one multiply per word (field i of the bytes lands in bits 24 + 2 i) and a byte permute, the 1-bit
        // segment (code bit 2) by one multiply per word (bit i lands in bit 28 + i). Same bytes as the generic
        // branches.
#pragma unroll
        for (int ch = 0; ch < 4; ++ch) {
          const uint32_t f0 = (cw[2 * ch] & 0x03030303u) * 0x01041040u;
          const uint32_t f1 = (cw[2 * ch + 1] & 0x03030303u) * 0x01041040u;
          sts16at(srow + cs[ch] / 4, __byte_perm(f0, f1, 0x0073));  // bytes: f0.b3, f1.b3
          const uint32_t b0 = ((cw[2 * ch] & 0x04040404u) * 0x04081020u) >> 28;
          const uint32_t b1 = ((cw[2 * ch + 1] & 0x04040404u) * 0x04081020u) >> 28;
          srow[D / 4 + cs[ch] / 8] = static_cast<uint8_t>(b0 | (b1 << 4));
        }
      } else if (use_table && m == 4) {
        // 4-bit table codes (byte bits 0..3, bits 4..7 garbage): (w & 0x0F0F0F0F) * 0x110 puts bytes 0 | 1 << 4
        // in byte 1 and bytes 2 | 3 << 4 in byte 3 (the other partial products fill bits 4..7 and 16..23 and carry
        // nothing), so one permute makes a word of 8 codes from two. Same bytes as the generic branch.
#pragma unroll
        for (int ch = 0; ch < 4; ++ch) {
          const uint32_t a = (cw[2 * ch] & 0x0F0F0F0Fu) * 0x110u;
          const uint32_t c = (cw[2 * ch + 1] & 0x0F0F0F0Fu) * 0x110u;
          sts16(srow + cs[ch] / 2, __byte_perm(a, c, 0x7531));
        }
      } else {  // generic: code bytes, shifted per segment
        if (m & 8) {
#pragma unroll
          for (int ch = 0; ch < 4; ++ch) {
            sts16(srow + seg + cs[ch], cw[2 * ch]);
            sts16(srow + seg + cs[ch] + 4, cw[2 * ch + 1]);
          }
          seg += D;
          shift += 8;
        }
        if (m & 4) {
#pragma unroll
          for (int ch = 0; ch < 4; ++ch) {
            uint32_t a = (cw[2 * ch] >> shift) & 0x0F0F0F0Fu;
            uint32_t c = (cw[2 * ch + 1] >> shift) & 0x0F0F0F0Fu;
            a |= a >> 4;
            c |= c >> 4;
            sts16(srow + seg + cs[ch] / 2, __byte_perm(a, c, 0x6420));
          }
          seg += D / 2;
          shift += 4;
        }
        if (m & 2) {
#pragma unroll
          for (int ch = 0; ch < 4; ++ch) {
            const uint32_t x0 = (cw[2 * ch] >> shift) & 0x03030303u;
            const uint32_t x1 = (cw[2 * ch + 1] >> shift) & 0x03030303u;
            sts16at(srow + seg + cs[ch] / 4, ((x0 * 0x01041040u) >> 24) | (((x1 * 0x01041040u) >> 24) << 8));
          }
          seg += D / 4;
          shift += 2;
        }
        if (m & 1) {
#pragma unroll
          for (int ch = 0; ch < 4; ++ch) {
            const uint32_t x0 = (cw[2 * ch] >> shift) & 0x01010101u;
            const uint32_t x1 = (cw[2 * ch + 1] >> shift) & 0x01010101u;
            const uint32_t b0 = ((x0 * 0x01020408u) >> 24) & 0xFu;
            const uint32_t b1 = ((x1 * 0x01020408u) >> 24) & 0xFu;
            srow[seg + cs[ch] / 8] = static_cast<uint8_t>(b0 | (b1 << 4));
          }
        }
      }
      if (t == 0) *reinterpret_cast<uint16_t*>(srow + lay.norm_offset) = static_cast<uint16_t>(g16);
    }
    // One contiguous run of nbytes: where it starts and ends on 16-byte boundaries (the common case: phase 0 and
    // VW * row_bytes a multiple of 16) one bulk store by lane 0 (sm_90 and later; the async proxy reads obuf, so the
    // lanes' writes are fenced for it first, and buffer st is reused only after this store has read it, at the
    // top of the tile after next); otherwise halfwords up to the destination's 16-byte boundary, 16-byte pieces,
    // halfword tail.
    const int nbytes = nrows * rb;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const bool bulk = phase == 0 && nbytes > 0 && (nbytes & 15) == 0;  // warp-uniform
#else
    constexpr bool bulk = false;
#endif
    if (bulk) dev::fence_proxy_async_smem();
    __syncwarp();
    if (bulk) {
      if (lane == 0) dev::bulk_store_global(gdst, dev::smem_addr(obuf), static_cast<uint32_t>(nbytes));
    } else if (nbytes > 0) {
      const uint8_t* src = obuf + phase;
      const int head = min((16 - phase) & 15, nbytes);
      if (2 * lane < head) {
        reinterpret_cast<uint16_t*>(gdst)[lane] = reinterpret_cast<const uint16_t*>(src)[lane];
      }
      const int body = (nbytes - head) / 16;
#pragma unroll 1
      for (int c = lane; c < body; c += 32) {
        *reinterpret_cast<uint4*>(gdst + head + 16 * c) = *reinterpret_cast<const uint4*>(src + head + 16 * c);
      }
      const int tail = head + 16 * body;
      if (tail + 2 * lane < nbytes) {
        reinterpret_cast<uint16_t*>(gdst + tail)[lane] = reinterpret_cast<const uint16_t*>(src + tail)[lane];
      }
    }
    __syncwarp();  // stage st is rewritten next
  }
#if TQ_STAMPS
  if (threadIdx.x == 0 && stamp_block < dev::kStampBlocks) {
    uint32_t smid;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(smid));
    dev::g_stamps[stamp_block][5] = smid + 1;
    dev::g_stamps[stamp_block][6] = tiles_done;
  }
#endif
  dev::stamp(stamp_block, 3);
  if (lane == 0) dev::bulk_wait_all();  // obuf is read and the rows written before the block ends
  dev::stamp(stamp_block, 4);
}

// Whether the kernel is launched as a programmatic dependent of the stream's previous kernel that builds its tables
// before it waits (QuantizeArgs::setup_before_wait): only when the caller promised that the codebook and R are not
// written by the kernels ahead of it (QuantizeParams::constant_tables), on sm_90 and later, and not right after
// the past-row copy of the same call (no kernel to overlap there; as the step kernel). H200, B=8 S=4096 float16
// 4-bit, back-to-back calls: ~52 -> ~48.5 us (bench/NOTES.md "Setup before the wait"). TQ_QUANT_EARLY=0: plain
// launches (A/B timing; the same switch as the step kernel's).
inline bool setup_before_wait(const QuantizeParams& p, bool after_copy) {
  if (p.constant_tables == 0 || after_copy || compute_capability_major() < 9) return false;
  const char* v = std::getenv("TQ_QUANT_EARLY");
  return v == nullptr || std::atoi(v) != 0;
}

template <int D, bool kHalf>
cudaError_t launch_typed(const QuantizeArgs& args_in, bool after_copy, cudaStream_t stream) {
  using Sh = Shape<D, kHalf>;
  QuantizeArgs args = args_in;
  args.setup_before_wait = setup_before_wait(args.p, after_copy) ? 1 : 0;
  const QuantizeParams& p = args.p;
  const size_t smem = smem_bytes<D, kHalf>();
  auto kernel = tq_quantize_wht4_kernel<D, kHalf>;
  int per_sm = 0;
  cudaError_t e = prepare_launch(reinterpret_cast<const void*>(kernel), kThreads, static_cast<int>(smem), &per_sm);
  if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: shared memory attribute / occupancy (Hadamard path)");
  const int64_t tiles = (static_cast<int64_t>(p.new_tokens) + Sh::VW - 1) / Sh::VW;
  const int64_t blocks_needed = (tiles + kWarps - 1) / kWarps;
  const int64_t heads = static_cast<int64_t>(p.batch) * p.kv_heads;
  const int64_t target = static_cast<int64_t>(multiprocessor_count()) * (per_sm > 0 ? per_sm : 1);
  const int64_t per_head = std::max<int64_t>(1, target / std::max<int64_t>(heads, 1));  // one wave when it fills
  const unsigned gx =
      static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(std::min(blocks_needed, per_head), 0x7fffffff)));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(gx, p.kv_heads, p.batch);
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = args.setup_before_wait != 0 ? 1 : 0;
  e = cudaLaunchKernelEx(&cfg, kernel, args);
  if (e != cudaSuccess && args.setup_before_wait != 0) {  // a runtime that refuses the attribute: a plain launch
    (void)cudaGetLastError();
    args.setup_before_wait = 0;
    cfg.numAttrs = 0;
    e = cudaLaunchKernelEx(&cfg, kernel, args);
  }
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: tq_quantize_wht4_kernel launch");
  return cudaSuccess;
}

}  // namespace v4


// rotation_kind = 1 (or a promised Hadamard R: QuantizeParams::rotation_hadamard), one part, no QJL, D in
// {64, 128, 256}, 16-byte aligned tensors: the v4 kernel (which checks R unless promised; a block whose R is not
// Hadamard-structured runs v2's dense branch). QJL and dense rotations keep the v1 kernel: on the H100 its
// shared-memory staging beat the v2 kernel's per-thread dense rows (QJL B=8 S=4096: 4.7 vs 5.6 ms; decode far
// worse).
inline bool wht_path_applies(const QuantizeParams& p) {
  const int d = p.codec.head_dim;
  auto aligned = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  return (p.codec.rotation_kind == kHadamard || p.rotation_hadamard != 0) && p.codec.qjl == 0 &&
         p.codec.num_parts == 1 && (d == 64 || d == 128 || d == 256) && aligned(p.rotation) && aligned(p.x) &&
         aligned(p.past_window);
}

inline cudaError_t launch_quantize_wht(const QuantizeArgs& args, bool after_copy, cudaStream_t stream) {
  const bool half = args.p.dtype == DType::kFloat16;
  switch (args.p.codec.head_dim) {
    case 64:
      return half ? v4::launch_typed<64, true>(args, after_copy, stream)
                  : v4::launch_typed<64, false>(args, after_copy, stream);
    case 128:
      return half ? v4::launch_typed<128, true>(args, after_copy, stream)
                  : v4::launch_typed<128, false>(args, after_copy, stream);
    case 256:
      return half ? v4::launch_typed<256, true>(args, after_copy, stream)
                  : v4::launch_typed<256, false>(args, after_copy, stream);
    default:
      return invalid("TQQuantize: head_dim=%d: no Hadamard-path kernel", args.p.codec.head_dim);
  }
}
