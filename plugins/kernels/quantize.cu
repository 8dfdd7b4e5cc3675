// TQQuantize on CUDA (docs/format.md sections 5 and 7): float64 rotation and boundary counts, bit-exact codes,
// float16 norms rounded directly from float64, QJL signs and residual norms, concat and buffer cache modes with
// sinks and the recent window. Three stream-ordered steps, no synchronization:
//   1. copy the past rows into the present cache (concat mode, or buffer mode without aliasing);
//   2. compress the tokens that leave the window this step (from x or the past window): the decode-step kernel
//      (quantize_step.cuh: at most 16 new tokens, R promised Hadamard), the v4 Hadamard kernel
//      (quantize_hadamard.cuh), or tq_quantize_kernel below (QJL, several parts, dense R, other D);
//   3. tq_window_kernel: write the present window (new tokens, and past slots that stay).
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "kernels/launch_errors.h"
#include "kernels/tq_device.cuh"
#include "kernels/tq_kernels.h"

namespace tq::kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kVectors = 8;          // tokens compressed per block (the rotation is read once for all of them)
constexpr int kMaxCoordsPerThread = 4;  // D <= 512
constexpr int kMaxHeadDim = kThreads * kMaxCoordsPerThread;
constexpr int kChunk = 32;           // rotation columns staged in shared memory at a time

struct QuantizeArgs {
  QuantizeParams p;
  RowLayout lay;
  int64_t past_total;  // concat mode T_old
  int window;          // W
  int setup_before_wait = 0;  // v4 kernel: a programmatic dependent launch that waits after its setup (launch_typed)
};

__device__ __forceinline__ int64_t pmod(int64_t a, int64_t m) {
  int64_t r = a % m;
  return r < 0 ? r + m : r;
}

// Token range [t_lo, t_hi) that is compressed in this step (section 7); empty when t_hi <= t_lo.
__device__ __forceinline__ void compressed_range(int64_t t_old, int64_t s, int ns, int rw, int64_t* lo,
                                                 int64_t* hi) {
  const int64_t t_new = t_old + s;
  const int64_t a = rw > 0 ? t_old - rw : t_old;
  *lo = a > ns ? a : ns;
  *hi = rw > 0 ? t_new - rw : t_new;
}

struct QuantizeSmem {
  double* x;       // [kVectors][D] input vectors (later: z = Sq r)
  double* y;       // [kVectors][D] rotated vectors (later: residual r)
  float* rot;      // [D][kChunk + 1] staged rotation columns
  double* bound;   // [P][256] cell boundaries beta_1.. at index 0..
  double* cent;    // [P][256] centroids as float64
  double* norm;    // [kVectors][P]
  double* rho;     // [kVectors][P]
  uint16_t* gamma16;  // [kVectors][P]
  uint16_t* rho16;    // [kVectors][P]
  uint8_t* codes;     // [kVectors][D]
  uint8_t* row;       // [kVectors][row_bytes]
  int64_t* dest;      // [kVectors] destination row, -1 none
};

__host__ __device__ inline size_t align16(size_t v) { return (v + 15) & ~static_cast<size_t>(15); }

__host__ __device__ inline size_t quantize_smem_bytes(int d, int parts, int row_bytes, QuantizeSmem* s,
                                                      char* base) {
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char* ptr = base + off;
    off += align16(bytes);
    return ptr;
  };
  char* x = take(sizeof(double) * kVectors * d);
  char* y = take(sizeof(double) * kVectors * d);
  char* rot = take(sizeof(float) * d * (kChunk + 1));
  char* bound = take(sizeof(double) * parts * 256);
  char* cent = take(sizeof(double) * parts * 256);
  char* norm = take(sizeof(double) * kVectors * parts);
  char* rho = take(sizeof(double) * kVectors * parts);
  char* g16 = take(sizeof(uint16_t) * kVectors * parts);
  char* r16 = take(sizeof(uint16_t) * kVectors * parts);
  char* codes = take(static_cast<size_t>(kVectors) * d);
  char* row = take(static_cast<size_t>(kVectors) * row_bytes);
  char* dest = take(sizeof(int64_t) * kVectors);
  if (s != nullptr) {
    s->x = reinterpret_cast<double*>(x);
    s->y = reinterpret_cast<double*>(y);
    s->rot = reinterpret_cast<float*>(rot);
    s->bound = reinterpret_cast<double*>(bound);
    s->cent = reinterpret_cast<double*>(cent);
    s->norm = reinterpret_cast<double*>(norm);
    s->rho = reinterpret_cast<double*>(rho);
    s->gamma16 = reinterpret_cast<uint16_t*>(g16);
    s->rho16 = reinterpret_cast<uint16_t*>(r16);
    s->codes = reinterpret_cast<uint8_t*>(codes);
    s->row = reinterpret_cast<uint8_t*>(row);
    s->dest = reinterpret_cast<int64_t*>(dest);
  }
  return off;
}

// out[v][i] = sum_j M[i][j] * in[v][j] in float64 from the float32 entries of M (D x D, row-major).
__device__ void matvec_f64(const float* __restrict__ m, const double* in, double* out, float* stage, int d) {
  double acc[kVectors][kMaxCoordsPerThread];
#pragma unroll
  for (int v = 0; v < kVectors; ++v)
#pragma unroll
    for (int c = 0; c < kMaxCoordsPerThread; ++c) acc[v][c] = 0.0;
  for (int j0 = 0; j0 < d; j0 += kChunk) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < d * kChunk; idx += kThreads) {
      const int i = idx / kChunk;
      const int jj = idx % kChunk;
      stage[i * (kChunk + 1) + jj] = m[static_cast<int64_t>(i) * d + j0 + jj];
    }
    __syncthreads();
    for (int jj = 0; jj < kChunk; ++jj) {
      double xin[kVectors];
#pragma unroll
      for (int v = 0; v < kVectors; ++v) xin[v] = in[v * d + j0 + jj];
#pragma unroll
      for (int c = 0; c < kMaxCoordsPerThread; ++c) {
        const int i = threadIdx.x + c * kThreads;
        if (i < d) {
          const double r = static_cast<double>(stage[i * (kChunk + 1) + jj]);
#pragma unroll
          for (int v = 0; v < kVectors; ++v) acc[v][c] = fma(r, xin[v], acc[v][c]);
        }
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int c = 0; c < kMaxCoordsPerThread; ++c) {
    const int i = threadIdx.x + c * kThreads;
    if (i < d) {
#pragma unroll
      for (int v = 0; v < kVectors; ++v) out[v * d + i] = acc[v][c];
    }
  }
  __syncthreads();
}

// Sum over a part of values[v][i]^2 (or of f(i)) for every (vector, part), one warp per pair, deterministic order.
template <typename F>
__device__ void part_sums(int nv, const CodecConfig& cfg, const RowLayout& lay, double* out, F value) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  for (int pair = warp; pair < nv * cfg.num_parts; pair += kThreads / 32) {
    const int v = pair / cfg.num_parts;
    const int p = pair % cfg.num_parts;
    double s = 0.0;
    for (int i = lane; i < cfg.part_sizes[p]; i += 32) {
      const double a = value(v, lay.part_offset[p] + i);
      s = fma(a, a, s);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) out[v * cfg.num_parts + p] = s;
  }
}

__device__ __forceinline__ int part_of(const CodecConfig& cfg, const RowLayout& lay, int i) {
  int p = 0;
  while (p + 1 < cfg.num_parts && i >= lay.part_offset[p + 1]) ++p;
  return p;
}

__device__ __forceinline__ uint16_t f64_to_half_bits(double v) {
  const double clipped = v < 65504.0 ? v : 65504.0;
  return __half_as_ushort(__double2half(clipped));
}

__global__ void __launch_bounds__(kThreads) tq_quantize_kernel(const QuantizeArgs args) {
  dev::pdl_trigger();  // a decode attention launched next may start (it waits for this grid first)
  const QuantizeParams& p = args.p;
  const CodecConfig& cfg = p.codec;
  const RowLayout& lay = args.lay;
  const int d = cfg.head_dim;
  const int parts = cfg.num_parts;
  const int b = blockIdx.z;
  const int h = blockIdx.y;

  const int64_t t_old = p.cache_mode == kBuffer ? p.past_lengths[b] : args.past_total;
  int64_t t_lo = 0, t_hi = 0;
  compressed_range(t_old, p.new_tokens, p.sink_tokens, p.recent_window, &t_lo, &t_hi);
  const int64_t v0 = static_cast<int64_t>(blockIdx.x) * kVectors;
  if (t_hi - t_lo <= v0) return;
  const int64_t left = t_hi - t_lo - v0;
  const int nv = left < kVectors ? static_cast<int>(left) : kVectors;

  extern __shared__ __align__(16) char smem_raw[];
  QuantizeSmem s;
  quantize_smem_bytes(d, parts, lay.row_bytes, &s, smem_raw);

  // Boundaries and centroids (float64 of the stored float32 values).
  for (int idx = threadIdx.x; idx < parts * 256; idx += kThreads) {
    const int pp = idx / 256;
    const int j = idx % 256;
    const int ncent = 1 << lay.mse_bits[pp];
    const double c = static_cast<double>(p.codebook[pp * 256 + j]);
    s.cent[idx] = c;
    if (j + 1 < ncent) {
      s.bound[idx] = (c + static_cast<double>(p.codebook[pp * 256 + j + 1])) * 0.5;  // beta_{j+1}
    }
  }
  // Inputs: token t comes from x when it is new this step, else from its past window slot.
  const int64_t bh = static_cast<int64_t>(b) * p.kv_heads + h;
  for (int idx = threadIdx.x; idx < kVectors * d; idx += kThreads) {
    const int v = idx / d;
    const int i = idx % d;
    double val = 0.0;
    if (v < nv) {
      const int64_t t = t_lo + v0 + v;
      if (t >= t_old) {
        val = dev::load_as_float(p.x, p.dtype, (bh * p.new_tokens + (t - t_old)) * d + i);
      } else {
        const int64_t slot = p.sink_tokens + pmod(t - p.sink_tokens, p.recent_window);
        val = dev::load_as_float(p.past_window, p.dtype, (bh * p.past_window_rows + slot) * d + i);
      }
    }
    s.x[idx] = val;
  }
  if (threadIdx.x < kVectors) {
    const int v = threadIdx.x;
    int64_t dest = -1;
    if (v < nv) {
      const int64_t row = t_lo + v0 + v - p.sink_tokens;
      if (row >= 0 && row < p.present_rows) {
        dest = row;
      } else if (p.overflow_flag != nullptr) {
        atomicExch(p.overflow_flag, 1);
      }
    }
    s.dest[v] = dest;
  }
  const int rh = p.rotation_heads == 1 ? 0 : h;
  matvec_f64(p.rotation + static_cast<int64_t>(rh) * d * d, s.x, s.y, s.rot, d);  // y = R x (syncs)

  // n_p = ||y_p||.
  part_sums(nv, cfg, lay, s.norm, [&](int v, int i) { return s.y[v * d + i]; });
  __syncthreads();
  // Codes: #{ j : u > beta_j }.
  for (int idx = threadIdx.x; idx < nv * d; idx += kThreads) {
    const int v = idx / d;
    const int i = idx % d;
    const int pp = part_of(cfg, lay, i);
    const double n = sqrt(s.norm[v * parts + pp]);
    const double u = n > 0.0 ? s.y[idx] / n : 0.0;
    const double* bnd = s.bound + pp * 256;
    int lo = 0, hi = (1 << lay.mse_bits[pp]) - 1;
    while (lo < hi) {
      const int mid = (lo + hi) >> 1;
      if (bnd[mid] < u) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    s.codes[idx] = static_cast<uint8_t>(lo);
  }
  __syncthreads();
  // gamma_p (norm correction divides by ||c[codes]||), stored as float16.
  if (cfg.norm_correction) {
    part_sums(nv, cfg, lay, s.rho, [&](int v, int i) { return s.cent[part_of(cfg, lay, i) * 256 + s.codes[v * d + i]]; });
    __syncthreads();
  }
  for (int idx = threadIdx.x; idx < nv * parts; idx += kThreads) {
    const double n = sqrt(s.norm[idx]);
    double gamma = n;
    if (cfg.norm_correction) gamma = n > 0.0 ? n / sqrt(s.rho[idx]) : 0.0;
    s.gamma16[idx] = f64_to_half_bits(gamma);
  }
  __syncthreads();
  if (cfg.qjl) {
    // r = y - float64(float16 gamma) * c[code], z = Sq r, rho_p = ||r_p||.
    for (int idx = threadIdx.x; idx < kVectors * d; idx += kThreads) {
      const int v = idx / d;
      const int i = idx % d;
      double r = 0.0;
      if (v < nv) {
        const int pp = part_of(cfg, lay, i);
        const double g = static_cast<double>(__half2float(__ushort_as_half(s.gamma16[v * parts + pp])));
        r = s.y[idx] - g * s.cent[pp * 256 + s.codes[idx]];
      }
      s.y[idx] = r;
    }
    __syncthreads();
    part_sums(nv, cfg, lay, s.rho, [&](int v, int i) { return s.y[v * d + i]; });
    matvec_f64(p.qjl_matrix, s.y, s.x, s.rot, d);  // x := z (syncs before and after)
    for (int idx = threadIdx.x; idx < nv * parts; idx += kThreads) s.rho16[idx] = f64_to_half_bits(sqrt(s.rho[idx]));
    __syncthreads();
  }
  // Pack the rows (section 4).
  const int rb = lay.row_bytes;
  for (int idx = threadIdx.x; idx < nv * rb; idx += kThreads) {
    const int v = idx / rb;
    const int k = idx % rb;
    uint32_t byte = 0;
    if (k < (cfg.qjl ? lay.qjl_offset : lay.norm_offset)) {
      int pp = 0;
      while (pp + 1 < parts && k >= lay.code_offset[pp + 1]) ++pp;
      int kk = k - lay.code_offset[pp];
      const int m = lay.mse_bits[pp];
      const int dp = cfg.part_sizes[pp];
      int widths[3];
      const int nseg = segment_widths(m, widths);
      int shift = 0;
      for (int sg = 0; sg < nseg; ++sg) {
        const int w = widths[sg];
        const int seg_bytes = dp * w / 8;
        if (kk < seg_bytes) {
          const int per_byte = 8 / w;
          const uint8_t* cp = s.codes + v * d + lay.part_offset[pp] + kk * per_byte;
          for (int c = 0; c < per_byte; ++c) byte |= ((static_cast<uint32_t>(cp[c]) >> shift) & ((1u << w) - 1)) << (c * w);
          break;
        }
        kk -= seg_bytes;
        shift += w;
      }
    } else if (cfg.qjl && k < lay.norm_offset) {
      const int kq = k - lay.qjl_offset;
      for (int c = 0; c < 8; ++c) byte |= (s.x[v * d + kq * 8 + c] > 0.0 ? 1u : 0u) << c;
    } else if (k < lay.norm_offset + 2 * parts) {
      const int e = k - lay.norm_offset;
      byte = (s.gamma16[v * parts + e / 2] >> (8 * (e % 2))) & 0xffu;
    } else {
      const int e = k - lay.rnorm_offset;
      byte = (s.rho16[v * parts + e / 2] >> (8 * (e % 2))) & 0xffu;
    }
    s.row[v * rb + k] = static_cast<uint8_t>(byte);
  }
  __syncthreads();
  const int half_words = rb / 2;
  for (int idx = threadIdx.x; idx < nv * half_words; idx += kThreads) {
    const int v = idx / half_words;
    const int k = idx % half_words;
    const int64_t dest = s.dest[v];
    if (dest < 0) continue;
    const uint16_t word = static_cast<uint16_t>(s.row[v * rb + 2 * k] | (s.row[v * rb + 2 * k + 1] << 8));
    uint16_t* out = reinterpret_cast<uint16_t*>(p.present_cache + (bh * p.present_rows + dest) * rb);
    out[k] = word;
  }
}

// Present window slot j of a sequence of t_new tokens: the token stored there comes from x when it is new in this
// step, else it stays (copied from the past window unless the window is updated in place).
__global__ void tq_window_kernel(const QuantizeArgs args) {
  dev::pdl_trigger();  // a decode attention launched next may start (it waits for this grid first)
  const QuantizeParams& p = args.p;
  const int d = p.codec.head_dim;
  const int64_t rows = p.present_window_rows;
  const int64_t idx_row = blockIdx.x;  // over B * Hkv * rows
  const int64_t j = idx_row % rows;
  const int64_t bh = idx_row / rows;
  const int64_t b = bh / p.kv_heads;
  const int64_t t_old = p.cache_mode == kBuffer ? p.past_lengths[b] : args.past_total;
  const int64_t t_new = t_old + p.new_tokens;
  const int ns = p.sink_tokens;
  const int rw = p.recent_window;
  int64_t t = -1;
  if (j < ns) {
    t = j < t_new ? j : -1;
  } else if (rw > 0) {
    const int64_t base = t_new - rw;
    t = base + pmod(j - ns - (base - ns), rw);
    if (t < ns) t = -1;
  }
  const bool in_place = p.present_window == p.past_window;
  const void* src = nullptr;
  int64_t src_off = 0;
  if (t >= t_old) {
    src = p.x;
    src_off = (bh * p.new_tokens + (t - t_old)) * d;
  } else if (!in_place && j < p.past_window_rows) {
    src = p.past_window;
    src_off = (bh * p.past_window_rows + j) * d;
  }
  if (src == nullptr) return;
  const int64_t dst_off = (bh * rows + j) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) {
    if (p.dtype == DType::kFloat16) {
      static_cast<__half*>(p.present_window)[dst_off + i] = static_cast<const __half*>(src)[src_off + i];
    } else {
      static_cast<float*>(p.present_window)[dst_off + i] = static_cast<const float*>(src)[src_off + i];
    }
  }
}

#include "kernels/quantize_hadamard.cuh"  // fast path; uses the helpers above
#include "kernels/quantize_step.cuh"      // decode steps; uses the helpers above and wht_path_applies

}  // namespace

size_t quantize_workspace_bytes(const QuantizeParams&) { return 0; }

cudaError_t launch_quantize(const QuantizeParams& p, void* /*workspace*/, cudaStream_t stream) {
  clear_error();
  char err[256];
  if (!validate(p.codec, err, sizeof(err))) return invalid("TQQuantize: %s", err);
  const int d = p.codec.head_dim;
  if (d > kMaxHeadDim) return invalid("TQQuantize: head_dim=%d: the CUDA kernel supports D <= %d", d, kMaxHeadDim);
  if (p.batch < 0 || p.kv_heads <= 0 || p.new_tokens < 0)
    return invalid("TQQuantize: batch=%d kv_heads=%d new_tokens=%d: must be >= 0, > 0, >= 0", p.batch, p.kv_heads,
                   p.new_tokens);
  if (p.kv_heads > 65535 || p.batch > 65535)
    return invalid("TQQuantize: batch=%d kv_heads=%d: the CUDA grid allows at most 65535 each", p.batch, p.kv_heads);
  if (p.rotation_heads != 1 && p.rotation_heads != p.kv_heads)
    return invalid("TQQuantize: rotation heads=%d: must be 1 or Hkv=%d", p.rotation_heads, p.kv_heads);
  if (p.rotation == nullptr || p.codebook == nullptr) return invalid("TQQuantize: rotation and codebook are required");
  if (p.codec.qjl && p.qjl_matrix == nullptr) return invalid("TQQuantize: qjl=1 needs qjl_matrix");
  if (p.sink_tokens < 0 || p.recent_window < 0)
    return invalid("TQQuantize: sink_tokens=%d recent_window=%d: must be >= 0", p.sink_tokens, p.recent_window);
  const int w = p.sink_tokens + p.recent_window;
  if (w > 0 && (p.past_window == nullptr && p.past_window_rows > 0))
    return invalid("TQQuantize: sink_tokens + recent_window=%d > 0 needs past_window", w);
  if (w > 0 && p.present_window == nullptr) return invalid("TQQuantize: W=%d > 0 needs present_window", w);
  const RowLayout lay = row_layout(p.codec);
  QuantizeArgs args{p, lay, 0, w};
  // TQ_QUANT_HADAMARD=0 ignores the caller's promise (A/B timing: the kernel checks R as without one).
  if (const char* v = std::getenv("TQ_QUANT_HADAMARD"); v != nullptr && std::atoi(v) == 0)
    args.p.rotation_hadamard = 0;
  if (p.cache_mode == kConcat) {
    const int64_t t_old = p.past_rows + (w > 0 ? p.past_window_rows : 0);
    const int64_t t_new = t_old + p.new_tokens;
    const int64_t wd_old = std::min<int64_t>(t_old, w);
    const int64_t wd_new = std::min<int64_t>(t_new, w);
    if (w > 0 && p.past_window_rows != wd_old)
      return invalid("TQQuantize: past_window rows=%lld: concat mode needs min(T_old, W)=%lld",
                     static_cast<long long>(p.past_window_rows), static_cast<long long>(wd_old));
    if (p.present_rows != t_new - wd_new)
      return invalid("TQQuantize: present_cache rows=%lld: concat mode needs T_new - min(T_new, W)=%lld",
                     static_cast<long long>(p.present_rows), static_cast<long long>(t_new - wd_new));
    if (w > 0 && p.present_window_rows != wd_new)
      return invalid("TQQuantize: present_window rows=%lld: concat mode needs min(T_new, W)=%lld",
                     static_cast<long long>(p.present_window_rows), static_cast<long long>(wd_new));
    if (p.past_rows > 0 && p.past_cache == p.present_cache && static_cast<int64_t>(p.batch) * p.kv_heads > 1)
      return invalid("TQQuantize: concat mode: present_cache must not alias past_cache");
    args.past_total = t_old;
  } else if (p.cache_mode == kBuffer) {
    if (p.past_lengths == nullptr) return invalid("TQQuantize: cache_mode=1 (buffer) needs past_lengths");
    if (p.past_rows != p.present_rows)
      return invalid("TQQuantize: buffer mode: present rows=%lld must equal past rows=%lld",
                     static_cast<long long>(p.present_rows), static_cast<long long>(p.past_rows));
    if (w > 0 && (p.past_window_rows != w || p.present_window_rows != w))
      return invalid("TQQuantize: buffer mode: window rows=%lld/%lld must equal W=%d",
                     static_cast<long long>(p.past_window_rows), static_cast<long long>(p.present_window_rows), w);
  } else {
    return invalid("TQQuantize: cache_mode=%d: must be 0 (concat) or 1 (buffer)", p.cache_mode);
  }
  if (p.batch == 0) return cudaSuccess;

  // 1. Past rows.
  const size_t rb = static_cast<size_t>(lay.row_bytes);
  const size_t heads = static_cast<size_t>(p.batch) * p.kv_heads;
  const bool copies_past = p.past_rows > 0 && p.past_cache != p.present_cache;
  if (copies_past) {
    cudaError_t e;
    if (p.cache_mode == kConcat) {
      e = cudaMemcpy2DAsync(p.present_cache, p.present_rows * rb, p.past_cache, p.past_rows * rb, p.past_rows * rb,
                            heads, cudaMemcpyDeviceToDevice, stream);
    } else {
      e = cudaMemcpyAsync(p.present_cache, p.past_cache, heads * p.past_rows * rb, cudaMemcpyDeviceToDevice, stream);
    }
    if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: copying the past cache rows");
  }
  // 2. Compress.
  if (p.new_tokens > 0 && step_path_applies(args.p)) {
    const cudaError_t e = launch_quantize_step(args, copies_past, stream);
    if (e != cudaSuccess) return e;
  } else if (p.new_tokens > 0 && wht_path_applies(args.p)) {
    const cudaError_t e = launch_quantize_wht(args, copies_past, stream);
    if (e != cudaSuccess) return e;
  } else if (p.new_tokens > 0) {
    const size_t smem = quantize_smem_bytes(d, p.codec.num_parts, lay.row_bytes, nullptr, nullptr);
    cudaError_t e = prepare_launch(reinterpret_cast<const void*>(tq_quantize_kernel), kThreads,
                                   static_cast<int>(smem), nullptr);
    if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: shared memory attribute");
    const dim3 grid((p.new_tokens + kVectors - 1) / kVectors, p.kv_heads, p.batch);
    tq_quantize_kernel<<<grid, kThreads, smem, stream>>>(args);
    e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: tq_quantize_kernel launch");
  }
  // 3. Window.
  if (w > 0 && p.present_window_rows > 0) {
    const int64_t blocks = static_cast<int64_t>(heads) * p.present_window_rows;
    if (blocks > 0x7fffffffLL) return invalid("TQQuantize: window too large for one grid");
    tq_window_kernel<<<static_cast<unsigned>(blocks), 64, 0, stream>>>(args);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: tq_window_kernel launch");
  }
  return cudaSuccess;
}

}  // namespace tq::kernels

#if TQ_STAMPS
// Timing builds only: this translation unit's stamps (dev::stamp in the v4 quantize kernel). n = 64-bit words.
extern "C" __attribute__((visibility("default"))) int tq_quant_stamps_read(unsigned long long* host, int n,
                                                                            int clear) {
  return tq::kernels::dev::read_stamps(host, n, clear);
}
#endif
