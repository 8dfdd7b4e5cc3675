// Device helpers shared by the tqexport kernels: tensor-core fragments, ldmatrix, cp.async, fp16 conversions.
// Kernel code only (included by .cu files); no launchers here.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/tq_kernels.h"

namespace tq::kernels::dev {

__device__ __forceinline__ float load_as_float(const void* p, DType t, int64_t i) {
  return t == DType::kFloat16 ? __half2float(static_cast<const __half*>(p)[i]) : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void store_from_float(void* p, DType t, int64_t i, float v) {
  if (t == DType::kFloat16) {
    static_cast<__half*>(p)[i] = __float2half_rn(v);
  } else {
    static_cast<float*>(p)[i] = v;
  }
}

// N consecutive elements i .. i + N - 1 (N = 2, 4 or 8) from v: one vector store where p + i is aligned to it
// (N elements of the type), element stores otherwise.
template <int N>
__device__ __forceinline__ void store_row_from_float(void* p, DType t, int64_t i, const float (&v)[N]) {
  static_assert(N == 2 || N == 4 || N == 8, "2, 4 or 8 elements");
  if (t == DType::kFloat16) {
    __half* const d = static_cast<__half*>(p) + i;
    if ((reinterpret_cast<uintptr_t>(d) & (2 * N - 1)) == 0) {
      uint32_t w[N / 2];
#pragma unroll
      for (int e = 0; e < N / 2; ++e) {
        const __half2 h = __floats2half2_rn(v[2 * e], v[2 * e + 1]);
        w[e] = *reinterpret_cast<const uint32_t*>(&h);
      }
      if constexpr (N == 2) {
        *reinterpret_cast<uint32_t*>(d) = w[0];
      } else if constexpr (N == 4) {
        *reinterpret_cast<uint2*>(d) = make_uint2(w[0], w[1]);
      } else {
        *reinterpret_cast<uint4*>(d) = make_uint4(w[0], w[1], w[2], w[3]);
      }
      return;
    }
  } else {
    float* const d = static_cast<float*>(p) + i;
    if ((reinterpret_cast<uintptr_t>(d) & (N == 2 ? 7 : 15)) == 0) {
#pragma unroll
      for (int e = 0; e < N; e += (N == 2 ? 2 : 4)) {
        if constexpr (N == 2) {
          *reinterpret_cast<float2*>(d) = make_float2(v[0], v[1]);
        } else {
          *reinterpret_cast<float4*>(d + e) = make_float4(v[e], v[e + 1], v[e + 2], v[e + 3]);
        }
      }
      return;
    }
  }
#pragma unroll
  for (int e = 0; e < N; ++e) store_from_float(p, t, i + e, v[e]);
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous global->shared copy of src_bytes (0..16) bytes, zero-filling the rest, to a shared-memory
// address (cp_async_16_at) or a generic pointer into shared memory (cp_async_16).
__device__ __forceinline__ void cp_async_16_at(uint32_t dst_smem, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst_smem), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_16(void* dst_smem, const void* src, int src_bytes) {
  cp_async_16_at(smem_addr(dst_smem), src, src_bytes);
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// D = A(16x16 f16, row) * B(16x8 f16, col) + D (f32).
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

__device__ __forceinline__ uint32_t hmul2_u32(uint32_t a, uint32_t b) {
  __half2 r = __hmul2(*reinterpret_cast<__half2*>(&a), *reinterpret_cast<__half2*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
}

__device__ __forceinline__ float half_bits_to_float(uint16_t bits) { return __half2float(__ushort_as_half(bits)); }

// Programmatic dependent launch (sm_90 and later; no-ops before): pdl_trigger lets the next kernel of the stream,
// when it was launched with cudaLaunchAttributeProgrammaticStreamSerialization, start before this grid ends;
// pdl_wait in that kernel blocks until the previous grid has completed and its memory is visible (it returns at
// once when the kernel was launched without the attribute). Nothing before pdl_wait may read what the previous
// grid writes.
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

// Thread-block clusters (sm_90 and later; callers launch with a cluster only there, and these compile to nothing
// before). cluster_arrive_relaxed / cluster_wait: the two halves of a barrier over every thread of the cluster
// (the arrive orders no memory; the wait returns once every thread of every block arrived). cluster_addr: the
// shared::cluster address of `smem_addr` (a shared-window address of this block) in block `rank`'s shared memory.
// mbar_*: an mbarrier in this block's shared memory whose phase waits for its arrivals and for the bytes that
// other blocks' bulk copies (bulk_copy_to_cluster) complete on it. (Remote stores with an mbarrier arrive at
// cluster scope were tried: the release compiled to MEMBAR.ALL.GPU, ~0.5 us; bench/NOTES.md "Cluster merge".)
__device__ __forceinline__ void cluster_arrive_relaxed() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void cluster_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ uint32_t cluster_addr(uint32_t smem_addr, int rank) {
  uint32_t r = 0;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(smem_addr), "r"(rank));
#endif
  return r;
}
// Initializes this block's mbarrier for `count` arrivals; the fence makes the initialization visible to the
// cluster (a cluster barrier between it and any other block's copy completing on it orders the rest).
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
// This thread's arrival on this block's mbarrier, adding `bytes` to the transfers the phase waits for.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
// Waits until phase `parity` of this block's mbarrier completed (transfers counted by complete_tx included).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}
// Generic-proxy writes to shared memory before this become visible to the async proxy (bulk copies) after it.
__device__ __forceinline__ void fence_proxy_async_smem() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Bulk copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) from this block's shared memory to
// shared::cluster address `dst`, completing that many bytes of transfer on the mbarrier at shared::cluster
// address `bar` (the destination block's). bulk_wait_read: this thread's bulk copies have read their sources.
__device__ __forceinline__ void bulk_copy_to_cluster(uint32_t dst, uint32_t src, uint32_t bytes, uint32_t bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
      "cp.async.bulk.commit_group;\n" ::"r"(dst),
      "r"(src), "r"(bytes), "r"(bar)
      : "memory");
#endif
}
__device__ __forceinline__ void bulk_wait_read() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#endif
}
// Bulk copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) from this block's shared memory to global
// memory, as one bulk group of this thread (sm_90 and later; callers take another path before). bulk_wait_read_upto:
// at most N of this thread's bulk groups have not yet read their sources; bulk_wait_all: every one has completed.
__device__ __forceinline__ void bulk_store_global(void* dst, uint32_t src, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;\n"
      "cp.async.bulk.commit_group;\n" ::"l"(dst),
      "r"(src), "r"(bytes)
      : "memory");
#endif
}
template <int N>
__device__ __forceinline__ void bulk_wait_read_upto() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
#endif
}
__device__ __forceinline__ void bulk_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

// Timing builds only (-DTQ_STAMPS=1, bench/gpu_harness/chain_stamps.py): thread 0 of a block records the global
// timer (ns) and its SM's clock at numbered points of the decode and reduce kernels (and of the v4 quantize kernel:
// bench/gpu_harness/quant_stamps.py), so one launch's chain can be read phase by phase. Compiled out otherwise.
#ifndef TQ_STAMPS
#define TQ_STAMPS 0
#endif
#if TQ_STAMPS
constexpr int kStampBlocks = 4096, kStampSlots = 16;
static __device__ unsigned long long g_stamps[kStampBlocks][2 * kStampSlots];  // one per translation unit
__device__ __forceinline__ void stamp(int block, int slot) {
  if (threadIdx.x == 0 && block < kStampBlocks) {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)::"memory");
    g_stamps[block][slot] = t;
    g_stamps[block][kStampSlots + slot] = clock64();
  }
}
// Host: copies (and with clear, zeroes) the calling translation unit's stamps; n = number of 64-bit words.
static inline int read_stamps(unsigned long long* host, int n, int clear) {
  const size_t bytes = sizeof(g_stamps);
  if (n < 0 || static_cast<size_t>(n) * sizeof(unsigned long long) > bytes) return -1;
  cudaError_t e = cudaMemcpyFromSymbol(host, g_stamps, n * sizeof(unsigned long long));
  if (e == cudaSuccess && clear) {
    void* dev_ptr = nullptr;
    e = cudaGetSymbolAddress(&dev_ptr, g_stamps);
    if (e == cudaSuccess) e = cudaMemset(dev_ptr, 0, bytes);
  }
  return static_cast<int>(e);
}
#else
__device__ __forceinline__ void stamp(int, int) {}
#endif

}  // namespace tq::kernels::dev

// ------------------------------------------------------------------ Sylvester-Hadamard rotations (format.md 3.1)
// A rotation block R (D x D, float32, 16-byte aligned) is "Hadamard-structured" when R[i][j] == (-1)^popcount(i & j)
// * R[0][j] bit for bit and |R[0][j]| == |R[0][0]| > 0 (finite): then R = H_D diag(R[0][.]) with the Sylvester
// Hadamard matrix H_D, so R x = H (R[0] .* x) and R^T y = R[0] .* (H y). The attribute rotation_kind is
// informational, so kernels verify this on every launch (the same check as quantize_hadamard.cuh) and keep a dense
// path for any other R.
namespace tq::kernels::dev {

// First, cheap half of the check (one load per thread): nonzero when R is misaligned, c = |R[0][0]| is not finite
// and positive, or |R[0][j]| != c for this thread's column j (callers cover j = 0..D-1 over their threads). A dense
// R fails here, so its dense path pays one overlapped round of loads, not the full read of R below.
__device__ __forceinline__ uint32_t hadamard_row0_mismatch(const float* rot, float c_raw, float r0j) {
  const float c = fabsf(c_raw);
  return ((reinterpret_cast<uintptr_t>(rot) & 15) != 0 || !(c > 0.0f && c <= 3.4e38f) || fabsf(r0j) != c) ? 1u
                                                                                                         : 0u;
}

// One thread's share of the full check that R (D x D, float32, 16-byte aligned) is c * H_D * diag(s) bit for bit:
// float4 column quad j = 4 (tid % (D / 4)) of rows i0 + RSTEP * it, it = 0 .. kIters - 1 (i0 = tid / (D / 4), NT
// threads). bad holds what row 0 already shows (c = |R[0][0]| not finite and positive, |R[0][j + q]| != c); check()
// compares one loaded row quad with R[0] under the sign (-1)^popcount(i & (j + q)).
template <int D, int NT>
struct HadamardShare {
  static constexpr int kQuads = D / 4;
  static_assert(NT % kQuads == 0 && (D & (D - 1)) == 0, "whole column quads per thread, D a power of two");
  static constexpr int kRowStep = NT / kQuads;
  static constexpr int kIters = D / kRowStep;
  const uint4* r4;  // this thread's quad of row i0
  int j;
  int i0;
  float row0[4];
  uint32_t want[4];  // bits of R[i0][j + q]
  uint32_t bad;

  __device__ __forceinline__ HadamardShare(const float* rot, int tid) {
    const int jq = tid % kQuads;
    j = 4 * jq;
    i0 = tid / kQuads;
    const float c = fabsf(__ldg(rot));
    const float4 r0 = __ldg(reinterpret_cast<const float4*>(rot) + jq);
    row0[0] = r0.x;
    row0[1] = r0.y;
    row0[2] = r0.z;
    row0[3] = r0.w;
    bad = !(c > 0.0f && c <= 3.4e38f) ? 1u : 0u;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      bad |= fabsf(row0[q]) != c ? 1u : 0u;
      want[q] = __float_as_uint(row0[q]) ^ (static_cast<uint32_t>(__popc(i0 & (j + q))) << 31);
    }
    r4 = reinterpret_cast<const uint4*>(rot) + i0 * kQuads + jq;
  }
  __device__ __forceinline__ const uint4* row(int it) const { return r4 + it * kRowStep * kQuads; }
  // bad |= the mismatch bits of row quad v (row i0 + RSTEP it), in the order the checks always ORed them.
  __device__ __forceinline__ void check(uint32_t& bad, const uint4& v, int it) const {
    if constexpr (kRowStep >= 4) {
      // i = i0 + RSTEP it with disjoint bits and RSTEP it >= 4 > q: parity(i & (j + q)) = parity(i0 & (j + q))
      // ^ parity(RSTEP it & j), one popc per quad.
      const uint32_t fl = static_cast<uint32_t>(__popc(j & (kRowStep * it))) << 31;
      bad |= (v.x ^ want[0] ^ fl) | (v.y ^ want[1] ^ fl) | (v.z ^ want[2] ^ fl) | (v.w ^ want[3] ^ fl);
    } else {
      const int i = i0 + kRowStep * it;
      const uint32_t vals[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int q = 0; q < 4; ++q)
        bad |= vals[q] ^ __float_as_uint(row0[q]) ^ (static_cast<uint32_t>(__popc(i & (j + q))) << 31);
    }
  }
};

// Nonzero when thread tid (of NT) found an entry of R off the structure in its share (HadamardShare). The caller
// ORs the flags over the block (__syncthreads_or). A misaligned R counts as a mismatch (the caller's dense path
// takes it). UNROLL: loads in flight per round, as ptxas schedules them (it keeps ~3 per thread in flight,
// consuming each load before the next: fine where other warps hide it; see hadamard_mismatch_staged otherwise).
template <int D, int NT, int UNROLL>
__device__ __forceinline__ uint32_t hadamard_mismatch(const float* rot, int tid) {
  if ((reinterpret_cast<uintptr_t>(rot) & 15) != 0) return 1u;
  const HadamardShare<D, NT> sh(rot, tid);
  uint32_t bad = sh.bad;
#pragma unroll UNROLL
  for (int it = 0; it < HadamardShare<D, NT>::kIters; ++it) sh.check(bad, __ldg(sh.row(it)), it);
  return bad;
}

// The same check with the loads staged through shared memory: BATCH 16-byte cp.async copies per thread in flight
// at once (stage: [BATCH][NT] uint4 of this block's shared memory; each thread reads back only its own slots, so
// no barrier), for a short kernel whose few warps cannot hide one L2 round trip per ~3 loads.
template <int D, int NT, int BATCH>
__device__ __forceinline__ uint32_t hadamard_mismatch_staged(const float* rot, int tid, uint4 (*stage)[NT]) {
  if ((reinterpret_cast<uintptr_t>(rot) & 15) != 0) return 1u;
  using Sh = HadamardShare<D, NT>;
  constexpr int kBatch = BATCH < Sh::kIters ? BATCH : Sh::kIters;
  static_assert(Sh::kIters % kBatch == 0, "whole batches");
  const Sh sh(rot, tid);
  uint32_t bad = sh.bad;
#pragma unroll 1
  for (int it0 = 0; it0 < Sh::kIters; it0 += kBatch) {
#pragma unroll
    for (int u = 0; u < kBatch; ++u) cp_async_16(&stage[u][tid], sh.row(it0 + u), 16);
    cp_async_commit();
    cp_async_wait<0>();
    asm volatile("" ::: "memory");  // the reads below after the wait
#pragma unroll
    for (int u = 0; u < kBatch; ++u) sh.check(bad, stage[u][tid], it0 + u);
  }
  return bad;
}

// In-warp unnormalized Walsh-Hadamard transform (Sylvester order) of one vector of 32 N coordinates, N a power of
// two: lane holds coordinates N lane .. N lane + N - 1 in v; on return v[e] = sum_k H[N lane + e][k] x_k.
// log2(N) butterfly stages in registers, then 5 over the lanes (shuffles). Sums in T (float: the product H x up to
// float32 rounding order; double: exact for float16 inputs, whose partial sums all fit a double's mantissa).
template <int N, typename T>
__device__ __forceinline__ void warp_fwht(T (&v)[N], int lane) {
  static_assert(N >= 1 && (N & (N - 1)) == 0, "N a power of two");
#pragma unroll
  for (int h = 1; h < N; h <<= 1) {
#pragma unroll
    for (int e = 0; e < N; ++e) {
      if ((e & h) == 0) {
        const T x = v[e], y = v[e + h];
        v[e] = x + y;
        v[e + h] = x - y;
      }
    }
  }
#pragma unroll
  for (int m = 1; m < 32; m <<= 1) {
    const bool upper = (lane & m) != 0;
#pragma unroll
    for (int e = 0; e < N; ++e) {
      const T o = __shfl_xor_sync(0xffffffffu, v[e], m);
      v[e] = upper ? o - v[e] : v[e] + o;
    }
  }
}

}  // namespace tq::kernels::dev
