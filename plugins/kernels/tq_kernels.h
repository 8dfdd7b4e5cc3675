// Launcher API of the tqexport CUDA kernels (docs/format.md v1). Raw device pointers and sizes in, cudaError_t out.
// No ORT or TensorRT types; the ORT glue (plugins/ort/cuda_ops.cc) and the TensorRT plugins call only this.
//
// Rules every launcher keeps:
// - asynchronous on the given stream: no cudaMalloc, no device or stream synchronization;
// - scratch memory comes from the caller (`*_workspace_bytes` says how much, 256-byte aligned pointer);
// - invalid parameters return cudaErrorInvalidValue before anything is launched, with a message in
//   `last_error_message()` (thread-local) naming the parameter, the value and the rule;
// - kernels never read or write outside the tensors described by the params.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/tq_format.h"

namespace tq::kernels {

enum class DType : int { kFloat32 = 0, kFloat16 = 1 };
enum class MaskType : int { kFloat32 = 0, kFloat16 = 1, kBool = 2 };  // additive float, or bool (true = attend)

// TQQuantize (docs/format.md 8.1). Shapes follow section 7:
//   concat: T_old = past_rows + past_window_rows, present_rows = T_new - min(T_new, W),
//           present_window_rows = min(T_new, W); present_cache's first past_rows rows are a copy of past_cache.
//   buffer: past_rows == present_rows == capacity, window rows == W, T_old per sequence from past_lengths.
// present_cache may alias past_cache and present_window may alias past_window (buffer mode, TensorRT
// getAliasedInput); in concat mode they must not overlap.
struct QuantizeParams {
  CodecConfig codec;                       // head_dim = D
  DType dtype = DType::kFloat32;           // dtype of x and of the windows
  int batch = 0;                           // B
  int kv_heads = 0;                        // Hkv
  int new_tokens = 0;                      // S
  const void* x = nullptr;                 // [B, Hkv, S, D]
  const uint8_t* past_cache = nullptr;     // [B, Hkv, past_rows, row_bytes]; may be null when past_rows == 0
  int64_t past_rows = 0;
  uint8_t* present_cache = nullptr;        // [B, Hkv, present_rows, row_bytes]
  int64_t present_rows = 0;
  const float* rotation = nullptr;         // [rotation_heads, D, D], rotation_heads in {1, Hkv}
  int rotation_heads = 1;
  const float* codebook = nullptr;         // [P, 256]
  const float* qjl_matrix = nullptr;       // [D, D], required iff codec.qjl
  const void* past_window = nullptr;       // [B, Hkv, past_window_rows, D], required iff W > 0
  int64_t past_window_rows = 0;
  void* present_window = nullptr;          // [B, Hkv, present_window_rows, D]
  int64_t present_window_rows = 0;
  const int64_t* past_lengths = nullptr;   // device [B], required iff buffer mode
  int cache_mode = kConcat;
  int sink_tokens = 0;                     // Ns
  int recent_window = 0;                   // Rw
  // Optional device int32 flag: set to 1 (never cleared) when a buffer-mode row would land at or past capacity;
  // that row is skipped. Callers that can read past_lengths on the host check overflow before launching.
  int* overflow_flag = nullptr;
  // Nonzero: the caller has checked every head of rotation with rotation_is_hadamard (on a host copy, e.g. of a
  // constant initializer) and promises it does not change. The Hadamard-path kernel then skips its own check of
  // R's structure (a D x D read per block on every launch). A false promise gives wrong codes; 0 (unknown) is
  // always correct.
  int rotation_hadamard = 0;
  // The caller's promise that `codebook` and `rotation` are not written by the kernels queued ahead of this call
  // on its stream (constant initializers: the ORT op checks that they are). The prefill kernel then builds its
  // tables from them before it waits for the previous kernel (a programmatic dependent launch on sm_90 and later),
  // so a block's setup overlaps that kernel's tail. A false promise is a race; 0 is always correct.
  int constant_tables = 0;
};

size_t quantize_workspace_bytes(const QuantizeParams& p);
cudaError_t launch_quantize(const QuantizeParams& p, void* workspace, cudaStream_t stream);

// TQAttention (docs/format.md 8.2), decode (S == 1) and prefill chunks (S > 1) alike.
struct AttentionParams {
  CodecConfig k_codec;                     // head_dim = D (same for V)
  CodecConfig v_codec;
  DType dtype = DType::kFloat32;           // dtype of q, the windows and out
  int batch = 0;                           // B
  int q_heads = 0;                         // Hq (multiple of kv_heads)
  int kv_heads = 0;                        // Hkv
  int new_tokens = 0;                      // S
  const void* q = nullptr;                 // [B, Hq, S, D]
  const uint8_t* k_cache = nullptr;        // [B, Hkv, cache_rows, k_row_bytes]
  const uint8_t* v_cache = nullptr;        // [B, Hkv, cache_rows, v_row_bytes]
  int64_t cache_rows = 0;                  // Tc (concat) or capacity (buffer)
  const void* mask = nullptr;              // [mask_batch, mask_heads, S, mask_tokens]
  MaskType mask_type = MaskType::kFloat32;
  int mask_batch = 1;                      // Bm in {1, B}
  int mask_heads = 1;                      // Hm in {1, Hq}
  int64_t mask_tokens = 0;                 // Tm
  const float* k_rotation = nullptr;       // [k_rotation_heads, D, D]
  int k_rotation_heads = 1;
  const float* k_codebook = nullptr;       // [Pk, 256]
  const float* v_rotation = nullptr;
  int v_rotation_heads = 1;
  const float* v_codebook = nullptr;
  const float* k_qjl_matrix = nullptr;     // [D, D], required iff k_codec.qjl
  const void* k_window = nullptr;          // [B, Hkv, window_rows, D], required iff W > 0
  const void* v_window = nullptr;
  int64_t window_rows = 0;                 // Wd
  const int64_t* past_lengths = nullptr;   // device [B], required iff buffer mode
  float scale = 1.0f;
  float softcap = 0.0f;                    // 0 = off
  int cache_mode = kConcat;
  int sink_tokens = 0;
  int recent_window = 0;
  void* out = nullptr;                     // [B, Hq, S, D], dtype
  // Tuning override for tests and benches: 0 = automatic choice of sequence splits.
  int force_splits = 0;
  // Nonzero: the caller has checked every head of k_rotation with rotation_is_hadamard (on a host copy, e.g. of
  // a constant initializer) and promises it does not change. The decode kernel then rotates q by a butterfly
  // transform from R_k's row 0 instead of reading all of R_k (and needs no rotation kernel ahead of it). A false
  // promise gives wrong results; 0 (unknown) is always correct.
  int k_rotation_hadamard = 0;
  // The same promise for v_rotation: the output's un-rotation (reduce kernel, the decode kernel's own epilogue,
  // the general path's rotation check) skips its check of R_v's structure, a D x D read per block and launch.
  int v_rotation_hadamard = 0;
};

// From shapes and attributes alone: the data pointers (past_lengths, windows, k_qjl_matrix) may still be null.
size_t attention_workspace_bytes(const AttentionParams& p);
// Enough for every shape up to p's (batch, new_tokens, cache_rows, mask_tokens, window_rows): for a workspace
// sized once at a profile's maximum shapes (TensorRT getWorkspaceSize).
size_t attention_workspace_bytes_max(const AttentionParams& p);
cudaError_t launch_attention(const AttentionParams& p, void* workspace, cudaStream_t stream);

// True when every D x D block of the host array host_rotation ([heads, D, D] float32) is Sylvester-Hadamard-
// structured by the kernels' own test (tq_device.cuh): R[i][j] == (-1)^popcount(i & j) * R[0][j] bit for bit and
// |R[0][j]| == |R[0][0]|, finite and positive. Pure host code.
bool rotation_is_hadamard(const float* host_rotation, int heads, int head_dim);

// Message of the last failed launcher call on this thread ("" when none).
const char* last_error_message();

// Head dims with a compiled attention kernel (the rewriter rejects others before export).
bool attention_head_dim_supported(int head_dim);

}  // namespace tq::kernels
