// TQQuantize fast path (docs/format.md section 5) for one part and D in {64, 128, 256}: included by quantize.cu
// only, inside its anonymous namespace after QuantizeArgs, pmod, compressed_range and f64_to_half_bits.
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

template <int D, bool kHalf>
__global__ void __launch_bounds__(kThreads, 2) tq_quantize_wht_kernel(const QuantizeArgs args) {
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

  extern __shared__ __align__(16) char smem_raw[];
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

template <int D, bool kHalf>
cudaError_t launch_wht_typed(const QuantizeArgs& args, cudaStream_t stream) {
  const QuantizeParams& p = args.p;
  const size_t smem = smem_bytes(D);
  auto kernel = tq_quantize_wht_kernel<D, kHalf>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: shared memory attribute (Hadamard path)");
  int per_sm = 0;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: occupancy query");
  const int64_t tiles = (static_cast<int64_t>(p.new_tokens) + tile_vectors(D) - 1) / tile_vectors(D);
  const int64_t heads = static_cast<int64_t>(p.batch) * p.kv_heads;
  const int64_t target = static_cast<int64_t>(multiprocessor_count()) * (per_sm > 0 ? per_sm : 1);
  const int64_t per_head = std::max<int64_t>(1, (target + heads - 1) / heads);
  const unsigned gx = static_cast<unsigned>(std::min<int64_t>(std::min<int64_t>(tiles, per_head), 0x7fffffff));
  const dim3 grid(gx, p.kv_heads, p.batch);
  kernel<<<grid, kThreads, smem, stream>>>(args);
  e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: tq_quantize_wht_kernel launch");
  return cudaSuccess;
}

}  // namespace wht

// rotation_kind = 1, one part, no QJL, D in {64, 128, 256}, 16-byte aligned tensors: the kernel above (which
// still checks R and falls back to its dense branch). QJL and dense rotations keep the v1 kernel: on the H100 its
// shared-memory staging beat this kernel's per-thread dense rows (QJL B=8 S=4096: 4.7 vs 5.6 ms; decode far worse).
inline bool wht_path_applies(const QuantizeParams& p) {
  const int d = p.codec.head_dim;
  auto aligned = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  return p.codec.rotation_kind == kHadamard && p.codec.qjl == 0 && p.codec.num_parts == 1 &&
         (d == 64 || d == 128 || d == 256) && aligned(p.rotation) && aligned(p.x) && aligned(p.past_window);
}

inline cudaError_t launch_quantize_wht(const QuantizeArgs& args, cudaStream_t stream) {
  const bool half = args.p.dtype == DType::kFloat16;
  switch (args.p.codec.head_dim) {
    case 64:
      return half ? wht::launch_wht_typed<64, true>(args, stream) : wht::launch_wht_typed<64, false>(args, stream);
    case 128:
      return half ? wht::launch_wht_typed<128, true>(args, stream) : wht::launch_wht_typed<128, false>(args, stream);
    case 256:
      return half ? wht::launch_wht_typed<256, true>(args, stream) : wht::launch_wht_typed<256, false>(args, stream);
    default:
      return invalid("TQQuantize: head_dim=%d: no Hadamard-path kernel", args.p.codec.head_dim);
  }
}
