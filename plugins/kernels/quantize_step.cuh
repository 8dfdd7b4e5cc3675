// TQQuantize for a decode step (docs/format.md section 5): one warp per compressed vector, float64 throughout, no
// tables to build and no shared-memory staging. Included by quantize.cu only, inside its anonymous namespace after
// quantize_hadamard.cuh (uses pmod, compressed_range, f64_to_half_bits, QuantizeArgs and wht::count_below).
//
// Why a kernel of its own: a decode step compresses one token per (batch, kv head) (S = 1, or S tokens leaving the
// window), and the v4 kernel spends such a launch on its per-block setup (boundary cells, sign masks, barriers)
// rather than on the vectors. Here each block fills the float64 boundaries once (one barrier) and each warp then
// runs one vector start to end.
//
// Eligible (step_path_applies): what v4 takes (one part, no QJL, D in {64, 128, 256}, 16-byte aligned x, R and
// past window: rotation_kind = 1 or R promised Sylvester-Hadamard, QuantizeParams::rotation_hadamard: R[h] =
// c H_D diag(s)), and at most kStepMaxTokens new tokens. Without the promise (the TensorRT plugin, which cannot see
// R's values when the engine is built, or an ORT graph whose R is not a constant) the block first checks the R of
// its warps' heads bit for bit (dev::hadamard_mismatch_staged, the check v4 makes; one D x D read per block when
// Hr = 1; routed only where that read pays, unpromised_check_pays), and a warp whose R fails it computes y = R x
// densely in float64 (step 1 as the contract states it, n = ||y||) instead of the butterflies. With a Hadamard R
// the arithmetic is v4's exact path for every coordinate:
//   z_j = s_j x_j (float64, exact), y = c * H_D z by butterflies (float64; every partial sum of float16 inputs is
//   exact, so y is c times the exact sum rounded once, as in v4), n = c * sqrt(D * sum x_j^2) (= ||R x|| in exact
//   arithmetic), u_i = y_i / n, code_i = #{beta_j < u_i} by binary search over the float64 boundaries,
//   gamma = n or n / ||c[code]|| (norm correction), float16 rounded from float64. A vector with !(n > 0) (zero or
//   NaN) gets the code of u = 0 everywhere, as v4 gives it.
// For float16 inputs y is exact here as in v4, so the two differ only where a float64 rounding of n (summation
// order) decides a code or a float16 norm; for float32 inputs the butterfly order may also move y by a float64
// rounding. Both are what the contract allows (section 5 step 1); the tests found the bytes identical throughout.
//
// Lane l holds the contiguous coordinates [l * CPL, l * CPL + CPL) (CPL = D / 32): butterfly bits below log2(CPL)
// in registers, the rest by xor shuffles. The row is assembled in shared memory (one buffer per warp) and written
// with 16-bit stores (row_bytes is even, rows need not be 4-byte aligned).
#pragma once

namespace step {

constexpr int kStepWarps = 4;        // warps (vectors) per block
constexpr int kStepMaxTokens = 16;   // routing: new tokens per call at most (a decode step or a short chunk)
constexpr int kCheckBatch = 16;      // unpromised R: 16-byte loads per thread in flight in the structure check

// Unpromised R: every block reads the whole R of each head it serves (D x D float32, from L2) before its vectors.
// That pays while the reads stay small: D <= 128 and at most 4 MB checked per launch. Measured on the H200
// (bench/quantize_step_gpu.py; v4 checks R too): D = 128, 2..64 blocks (up to 4 MB): 0.62-0.71x v4's time; 256
// blocks (16 MB): 1.3-1.4x; D = 64 0.49x; D = 256 (256 KB per check) 0.99x at 2 blocks, 1.12x at 64.
inline bool unpromised_check_pays(int d, int64_t vectors, int rotation_heads) {
  const int64_t blocks = (vectors + kStepWarps - 1) / kStepWarps;
  const int64_t checks = blocks * (rotation_heads == 1 ? 1 : kStepWarps);  // per head: up to one per warp
  return d <= 128 && checks * d * d * static_cast<int64_t>(sizeof(float)) <= (int64_t{4} << 20);
}

// The raw bits of CPL elements of a row at lane * CPL (16-byte aligned rows, so each lane's piece is aligned to
// its size): loaded before the block's barrier, converted after it, so the load's latency overlaps the setup.
template <int CPL, bool kHalf>
struct LaneBits {
  static constexpr int kWords = kHalf ? CPL / 2 : CPL;
  uint32_t w[kWords];
};

template <int CPL, bool kHalf>
__device__ __forceinline__ void load_lane(const char* row, int lane, LaneBits<CPL, kHalf>& out) {
  constexpr int kWords = LaneBits<CPL, kHalf>::kWords;
  const uint32_t* src = reinterpret_cast<const uint32_t*>(row) + lane * kWords;
  if constexpr (kWords == 1) {
    out.w[0] = *src;
  } else if constexpr (kWords == 2) {
    const uint2 v = *reinterpret_cast<const uint2*>(src);
    out.w[0] = v.x;
    out.w[1] = v.y;
  } else {
    static_assert(kWords % 4 == 0, "D in {64, 128, 256}");
#pragma unroll
    for (int k = 0; k < kWords / 4; ++k) {
      const uint4 v = reinterpret_cast<const uint4*>(src)[k];
      out.w[4 * k] = v.x;
      out.w[4 * k + 1] = v.y;
      out.w[4 * k + 2] = v.z;
      out.w[4 * k + 3] = v.w;
    }
  }
}

template <int CPL, bool kHalf>
__device__ __forceinline__ void lane_values(const LaneBits<CPL, kHalf>& in, double (&z)[CPL]) {
#pragma unroll
  for (int k = 0; k < LaneBits<CPL, kHalf>::kWords; ++k) {
    if constexpr (kHalf) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&in.w[k]));
      z[2 * k] = static_cast<double>(f.x);
      z[2 * k + 1] = static_cast<double>(f.y);
    } else {
      z[k] = static_cast<double>(__uint_as_float(in.w[k]));
    }
  }
}

// y_i = sum_j R[i][j] x_j in float64 for this lane's coordinates i = lane * CPL + k (the dense form of section 5
// step 1, for an unpromised R that is not Hadamard-structured): R's rows and x's row from global memory (L1/L2),
// 16-byte pieces, j ascending.
template <int D, bool kHalf>
__device__ __forceinline__ void dense_lane_rows(const float* rot, const char* src, int lane, double (&y)[D / 32]) {
  constexpr int CPL = D / 32;
#pragma unroll
  for (int k = 0; k < CPL; ++k) y[k] = 0.0;
  const float4* rows = reinterpret_cast<const float4*>(rot + static_cast<int64_t>(lane) * CPL * D);
#pragma unroll 2
  for (int jq = 0; jq < D / 4; ++jq) {
    double xv[4];
    if constexpr (kHalf) {
      const uint2 hw = reinterpret_cast<const uint2*>(src)[jq];
      const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&hw.x));
      const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&hw.y));
      xv[0] = a.x;
      xv[1] = a.y;
      xv[2] = b.x;
      xv[3] = b.y;
    } else {
      const float4 f = reinterpret_cast<const float4*>(src)[jq];
      xv[0] = f.x;
      xv[1] = f.y;
      xv[2] = f.z;
      xv[3] = f.w;
    }
#pragma unroll
    for (int k = 0; k < CPL; ++k) {
      const float4 r = rows[k * (D / 4) + jq];
      y[k] = fma(static_cast<double>(r.x), xv[0], y[k]);
      y[k] = fma(static_cast<double>(r.y), xv[1], y[k]);
      y[k] = fma(static_cast<double>(r.z), xv[2], y[k]);
      y[k] = fma(static_cast<double>(r.w), xv[3], y[k]);
    }
  }
}

template <int D, bool kHalf>
__global__ void __launch_bounds__(32 * kStepWarps) tq_quantize_step_kernel(const QuantizeArgs args) {
  constexpr int CPL = D / 32;
  constexpr int kEsize = kHalf ? 2 : 4;
  constexpr int kRowWords = (D + 2 + 3) / 4;  // the widest row (8-bit codes + one float16 norm), in words
  dev::pdl_trigger();  // a decode attention launched next may start (it waits for this grid first)
  // Launched as a programmatic dependent of the stream's previous kernel (launch_typed): nothing below may read
  // before that grid completes. Without the launch attribute this returns at once.
  dev::pdl_wait();

  const QuantizeParams& p = args.p;
  const RowLayout& lay = args.lay;
  __shared__ double s_bound[256];
  __shared__ __align__(16) uint32_t s_row[kStepWarps][kRowWords];
  // Unpromised R only (launch_typed sizes it): the structure check's staged loads, [kCheckBatch][threads].
  extern __shared__ uint4 s_check_raw[];
  auto* s_check = reinterpret_cast<uint4(*)[32 * kStepWarps]>(s_check_raw);

  // This warp's vector (b, h, token), its source row and R[h]'s row 0, loaded before the block's setup. Vector
  // wid = (b Hkv + h) S + i; step_path_applies keeps B Hkv S below 2^31 - kStepWarps, so the index arithmetic is
  // 32-bit (a 64-bit division costs ~100 dependent instructions).
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const uint32_t s = static_cast<uint32_t>(p.new_tokens);
  const uint32_t heads = static_cast<uint32_t>(p.batch) * static_cast<uint32_t>(p.kv_heads);
  const uint32_t wid0 = blockIdx.x * kStepWarps;  // the block's first vector
  const uint32_t wid = wid0 + warp;
  const uint32_t bh = wid / s;
  const int ns = p.sink_tokens;
  bool active = bh < heads;  // warp-uniform
  int64_t row = 0;   // compressed row of this token
  const char* src = nullptr;  // its input row
  int rh = 0;                 // its rotation head
  LaneBits<CPL, kHalf> raw{};
  float r0j[CPL] = {};
  float r00 = 0.0f;
  if (active) {
    const uint32_t b = bh / static_cast<uint32_t>(p.kv_heads);
    const int h = static_cast<int>(bh - b * static_cast<uint32_t>(p.kv_heads));
    const int64_t t_old = p.cache_mode == kBuffer ? p.past_lengths[b] : args.past_total;
    int64_t t_lo = 0, t_hi = 0;
    compressed_range(t_old, static_cast<int>(s), ns, p.recent_window, &t_lo, &t_hi);
    const int64_t tok = t_lo + (wid - bh * s);
    row = tok - ns;
    active = tok < t_hi;
    if (active && row >= p.present_rows) {  // buffer mode at capacity: flag it, write nothing (as v4)
      if (lane == 0 && p.overflow_flag != nullptr) atomicExch(p.overflow_flag, 1);
      active = false;
    }
    if (active) {
      if (tok >= t_old) {
        src = static_cast<const char*>(p.x) + ((static_cast<int64_t>(bh) * s + (tok - t_old)) * D) * kEsize;
      } else {  // leaves the recent window in this step
        const int64_t slot = ns + pmod(tok - ns, p.recent_window);
        src = static_cast<const char*>(p.past_window) +
              ((static_cast<int64_t>(bh) * p.past_window_rows + slot) * D) * kEsize;
      }
      load_lane<CPL, kHalf>(src, lane, raw);
      rh = p.rotation_heads == 1 ? 0 : h;
      const float* r0 = p.rotation + static_cast<int64_t>(rh) * D * D;
      r00 = r0[0];
#pragma unroll
      for (int i = 0; i < CPL; ++i) r0j[i] = r0[lane * CPL + i];
    }
  }
  const int m = lay.mse_bits[0];
  const int ncent = 1 << m;
  for (int j = threadIdx.x; j < 256; j += blockDim.x) {
    s_bound[j] = j + 1 < ncent
                     ? (static_cast<double>(p.codebook[j]) + static_cast<double>(p.codebook[j + 1])) * 0.5
                     : wht::kNoBoundary;
  }
  __syncthreads();
  // Unpromised R: bit w of not_hadamard (block-uniform) says warp w's R fails the structure check, done by the whole
  // block: once for a shared R (Hr = 1, what the converter writes for whole-width codecs), else once per run of
  // warps on the same head.
  uint32_t not_hadamard = 0u;
  if (p.rotation_hadamard == 0) {
    constexpr int kThreads = 32 * kStepWarps;
    auto mismatch = [&](const float* r) -> bool {
      const uint32_t bad = dev::hadamard_mismatch_staged<D, kThreads, kCheckBatch>(r, static_cast<int>(threadIdx.x),
                                                                                  s_check);
      return __syncthreads_or(bad != 0u) != 0;
    };
    if (p.rotation_heads == 1) {
      if (mismatch(p.rotation)) not_hadamard = (1u << kStepWarps) - 1u;
    } else {
      uint32_t prev = 0xffffffffu;
      for (int w = 0; w < kStepWarps; ++w) {
        const uint32_t bhw = (wid0 + w) / s;
        if (bhw >= heads) break;  // so are the warps after it
        const uint32_t hw = bhw % static_cast<uint32_t>(p.kv_heads);
        if (hw != prev) {
          if (mismatch(p.rotation + static_cast<int64_t>(hw) * D * D)) not_hadamard |= 1u << w;
        } else {
          not_hadamard |= ((not_hadamard >> (w - 1)) & 1u) << w;
        }
        prev = hw;
      }
    }
  }
  if (!active) return;

  double y[CPL];  // y = R x, this lane's coordinates
  double n64;     // ||y||
  if (((not_hadamard >> warp) & 1u) == 0u) {
    double z[CPL];
    lane_values<CPL, kHalf>(raw, z);
    const double c64 = static_cast<double>(fabsf(r00));
    double part = 0.0;  // sum of x_j^2 over this lane's coordinates
#pragma unroll
    for (int i = 0; i < CPL; ++i) {
      part = fma(z[i], z[i], part);
      if (r0j[i] < 0.0f) z[i] = -z[i];
    }
    dev::warp_fwht<CPL>(z, lane);  // y / c = H_D z (lane l holds coordinates l CPL .. l CPL + CPL - 1)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);  // same sum in every lane
    n64 = c64 * sqrt(part * D);
#pragma unroll
    for (int i = 0; i < CPL; ++i) y[i] = c64 * z[i];
  } else {
    dense_lane_rows<D, kHalf>(p.rotation + static_cast<int64_t>(rh) * D * D, src, lane, y);
    double part = 0.0;
#pragma unroll
    for (int i = 0; i < CPL; ++i) part = fma(y[i], y[i], part);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
    n64 = sqrt(part);
  }

  int code[CPL];
  if (n64 > 0.0) {
#pragma unroll
    for (int i = 0; i < CPL; ++i) code[i] = wht::count_below(s_bound, m, y[i] / n64, false);
  } else {  // zero or NaN norm: u = 0 everywhere
    const int zc = wht::count_below(s_bound, m, 0.0, false);
#pragma unroll
    for (int i = 0; i < CPL; ++i) code[i] = zc;
  }
  double gamma = n64;
  if (p.codec.norm_correction != 0) {
    double cs = 0.0;
#pragma unroll
    for (int i = 0; i < CPL; ++i) {
      const double cv = static_cast<double>(p.codebook[code[i]]);
      cs = fma(cv, cv, cs);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) cs += __shfl_xor_sync(0xffffffffu, cs, o);
    gamma = n64 > 0.0 ? n64 / sqrt(cs) : 0.0;
  }

  // The row: segments widest first (format.md section 4), this lane's CPL fields contiguous in each.
  uint32_t* srow = s_row[warp];
  for (int k = lane; k < kRowWords; k += 32) srow[k] = 0u;
  __syncwarp();
  int shift = 0;
  int seg_word = lay.code_offset[0] / 4;  // segments start at multiples of D / 8 bytes
  for (int w = 8; w >= 1; w >>= 1) {
    if ((m & w) == 0) continue;
    uint64_t bits = 0;
#pragma unroll
    for (int i = 0; i < CPL; ++i) {
      bits |= static_cast<uint64_t>((static_cast<uint32_t>(code[i]) >> shift) & ((1u << w) - 1u)) << (i * w);
    }
    const int lane_bits = CPL * w;  // a power of two, 2 .. 64
    const int at = lane * lane_bits;
    if (lane_bits >= 32) {
      srow[seg_word + at / 32] = static_cast<uint32_t>(bits);
      if (lane_bits == 64) srow[seg_word + at / 32 + 1] = static_cast<uint32_t>(bits >> 32);
    } else {
      atomicOr(&srow[seg_word + at / 32], static_cast<uint32_t>(bits) << (at % 32));
    }
    seg_word += D * w / 32;
    shift += w;
  }
  if (lane == 0) {
    reinterpret_cast<uint16_t*>(srow)[lay.norm_offset / 2] = static_cast<uint16_t>(f64_to_half_bits(gamma));
  }
  __syncwarp();
  const int rb = lay.row_bytes;
  uint16_t* dst = reinterpret_cast<uint16_t*>(p.present_cache + (bh * p.present_rows + row) * rb);
  const uint16_t* from = reinterpret_cast<const uint16_t*>(srow);
  for (int k = lane; k < rb / 2; k += 32) dst[k] = from[k];
}

// Launched as a programmatic dependent of the stream's previous kernel on sm_90 and later: the kernel waits
// (griddepcontrol.wait) before it reads anything, so its launch latency overlaps the previous kernel's tail (in a
// converted model: TQQuantize of K before TQQuantize of V, whose kernels trigger at their start). After any other
// kernel it behaves as a plain launch. Not after the past-row copy of the same call (after_copy: concat mode),
// where there is no kernel to overlap and a programmatic edge from a copy under stream capture is untested.
// TQ_QUANT_EARLY=0: plain launches (A/B timing).
inline bool step_launch_dependent() {
  if (compute_capability_major() < 9) return false;
  const char* v = std::getenv("TQ_QUANT_EARLY");
  return v == nullptr || std::atoi(v) != 0;
}

template <int D, bool kHalf>
cudaError_t launch_typed(const QuantizeArgs& args, bool after_copy, cudaStream_t stream) {
  const QuantizeParams& p = args.p;
  const int64_t warps = static_cast<int64_t>(p.batch) * p.kv_heads * p.new_tokens;
  const int64_t blocks = (warps + kStepWarps - 1) / kStepWarps;
  if (warps > INT32_MAX - kStepWarps) {  // step_path_applies routes such calls to v4
    return invalid("TQQuantize: %lld vectors: too many for the step kernel", static_cast<long long>(warps));
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(blocks));
  cfg.blockDim = dim3(32 * kStepWarps);
  cfg.dynamicSmemBytes = p.rotation_hadamard != 0 ? 0 : sizeof(uint4) * kCheckBatch * 32 * kStepWarps;  // 32 KB
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  const bool dependent = !after_copy && step_launch_dependent();
  cfg.attrs = attr;
  cfg.numAttrs = dependent ? 1 : 0;
  cudaError_t e = cudaLaunchKernelEx(&cfg, tq_quantize_step_kernel<D, kHalf>, args);
  if (e != cudaSuccess && dependent) {  // a runtime that refuses the attribute gets a plain launch
    (void)cudaGetLastError();
    cfg.numAttrs = 0;
    e = cudaLaunchKernelEx(&cfg, tq_quantize_step_kernel<D, kHalf>, args);
  }
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess) return cuda_failed(e, "TQQuantize: tq_quantize_step_kernel launch");
  return cudaSuccess;
}

}  // namespace step

// A decode step (at most kStepMaxTokens new tokens) on the v4 path (R promised Hadamard or checked in the kernel):
// the step kernel.
// TQ_QUANT_STEP=0 sends such calls to v4 instead (A/B timing, and the tests that compare the two).
inline bool step_path_applies(const QuantizeParams& p) {
  if (!wht_path_applies(p) || p.new_tokens > step::kStepMaxTokens) return false;
  // The kernel's vector index is 32-bit (larger calls take v4's persistent grid).
  const int64_t vectors = static_cast<int64_t>(p.batch) * p.kv_heads * p.new_tokens;
  if (vectors > INT32_MAX - step::kStepWarps) return false;
  if (p.rotation_hadamard == 0 && !step::unpromised_check_pays(p.codec.head_dim, vectors, p.rotation_heads)) {
    return false;
  }
  const char* env = std::getenv("TQ_QUANT_STEP");
  return env == nullptr || std::atoi(env) != 0;
}

inline cudaError_t launch_quantize_step(const QuantizeArgs& args, bool after_copy, cudaStream_t stream) {
  const bool half = args.p.dtype == DType::kFloat16;
  switch (args.p.codec.head_dim) {
    case 64:
      return half ? step::launch_typed<64, true>(args, after_copy, stream)
                  : step::launch_typed<64, false>(args, after_copy, stream);
    case 128:
      return half ? step::launch_typed<128, true>(args, after_copy, stream)
                  : step::launch_typed<128, false>(args, after_copy, stream);
    case 256:
      return half ? step::launch_typed<256, true>(args, after_copy, stream)
                  : step::launch_typed<256, false>(args, after_copy, stream);
    default:
      return invalid("TQQuantize: head_dim=%d: no step kernel", args.p.codec.head_dim);
  }
}
