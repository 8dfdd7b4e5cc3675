// The provider-independent half of the ORT glue for TQQuantize and TQAttention (docs/format.md section 8):
// read and validate the attributes, read the inputs, check every dtype, rank and shape against the
// attributes, and compute the output shapes. cpu_ops.cc and cuda_ops.cc only add allocation and the launch.
// Every failure is a status whose message names the op, the input or attribute, and what was seen vs expected.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/tq_format.h"
#include "ort/ort_api.h"

namespace tq::ort {

// One input of a node as the kernel sees it. present == false for an absent optional input.
struct TensorArg {
  const char* name = "";
  int index = 0;
  bool present = false;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  int64_t dim(size_t i) const { return shape[i]; }
};

Ort::Status ReadInput(const Ort::KernelContext& ctx, int index, const char* name, TensorArg* out);
std::string ShapeString(const std::vector<int64_t>& shape);
const char* DtypeName(ONNXTensorElementDataType type);
Ort::Status Fail(const std::string& message);  // ORT_INVALID_ARGUMENT status

// ------------------------------------------------------------------ TQQuantize
struct QuantizeAttrs {
  CodecConfig codec;  // head_dim = sum(part_sizes)
  int cache_mode = kConcat;
  int sink_tokens = 0;
  int recent_window = 0;
  int constant_hadamard = 0;  // docs/format.md 8.3; ReadQuantizeAttrs refuses a promise that does not hold
  int window() const { return sink_tokens + recent_window; }
};

enum QuantizeInput : int {
  kQX = 0, kQPastCache, kQRotation, kQCodebook, kQQjlMatrix, kQPastWindow, kQPastLengths, kQNumInputs
};
enum QuantizeOutput : int { kQPresentCache = 0, kQPresentWindow, kQNumOutputs };

struct QuantizeShapes {
  int64_t batch = 0, kv_heads = 0, new_tokens = 0, head_dim = 0;
  int64_t rotation_heads = 0;   // Hr
  int64_t row_bytes = 0;
  int64_t past_rows = 0;        // Tc of past_cache (capacity in buffer mode)
  int64_t past_window_rows = 0; // Wd of past_window (0 when W == 0)
  int64_t present_rows = 0;     // Tc' of present_cache
  int64_t present_window_rows = 0;
  int64_t past_total = 0;       // concat mode: T_old = Tc + Wd
  int64_t present_total = 0;    // concat mode: T_new = T_old + S
};

// Input names in index order, as both providers register them.
inline constexpr const char* kQuantizeInputNames[kQNumInputs] = {
    "x", "past_cache", "rotation", "codebook", "qjl_matrix", "past_window", "past_lengths"};

Ort::Status ReadQuantizeAttrs(const OrtKernelInfo* info, QuantizeAttrs* attrs);
// inputs: kQNumInputs entries read with ReadInput. x_type is the registered dtype of x and the windows.
// host_past_lengths: past_lengths readable on the host (nullptr: skip the data-dependent overflow check).
Ort::Status CheckQuantizeInputs(const QuantizeAttrs& attrs, ONNXTensorElementDataType x_type,
                                const TensorArg* inputs, const int64_t* host_past_lengths,
                                QuantizeShapes* shapes);
// What every provider does first in Compute: read all inputs into `inputs` (kQNumInputs entries), check them
// with CheckQuantizeInputs, and require output 1 when W > 0. *host_past_lengths is past_lengths' data in buffer
// mode when given (so the provider must register it as host memory), else nullptr.
Ort::Status ReadQuantizeNode(const Ort::KernelContext& ctx, const QuantizeAttrs& attrs,
                             ONNXTensorElementDataType x_type, TensorArg* inputs,
                             const int64_t** host_past_lengths, QuantizeShapes* shapes);

// ------------------------------------------------------------------ TQAttention
struct AttentionAttrs {
  CodecConfig k_codec;
  CodecConfig v_codec;
  float scale = 0.0f;
  float softcap = 0.0f;
  int cache_mode = kConcat;
  int sink_tokens = 0;
  int recent_window = 0;
  int k_constant_hadamard = 0;  // docs/format.md 8.3; ReadAttentionAttrs refuses a promise that does not hold
  int v_constant_hadamard = 0;
  int window() const { return sink_tokens + recent_window; }
};

enum AttentionInput : int {
  kAQ = 0, kAKCache, kAVCache, kAMask, kAKRotation, kAKCodebook, kAVRotation, kAVCodebook,
  kAKQjlMatrix, kAKWindow, kAVWindow, kAPastLengths, kANumInputs
};

struct AttentionShapes {
  int64_t batch = 0, q_heads = 0, kv_heads = 0, new_tokens = 0, head_dim = 0;
  int64_t cache_rows = 0;           // Tc (capacity in buffer mode)
  int64_t k_row_bytes = 0, v_row_bytes = 0;
  int64_t window_rows = 0;          // Wd (0 when W == 0)
  int64_t k_rotation_heads = 0, v_rotation_heads = 0;
  int64_t mask_batch = 0, mask_heads = 0, mask_tokens = 0;  // Bm, Hm, Tm
  ONNXTensorElementDataType mask_type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
};

inline constexpr const char* kAttentionInputNames[kANumInputs] = {
    "q",          "k_cache",    "v_cache",      "mask",     "k_rotation", "k_codebook",
    "v_rotation", "v_codebook", "k_qjl_matrix", "k_window", "v_window",   "past_lengths"};

Ort::Status ReadAttentionAttrs(const OrtKernelInfo* info, AttentionAttrs* attrs);
Ort::Status CheckAttentionInputs(const AttentionAttrs& attrs, ONNXTensorElementDataType q_type,
                                 const TensorArg* inputs, const int64_t* host_past_lengths,
                                 AttentionShapes* shapes);
// ReadQuantizeNode for TQAttention: read all kANumInputs inputs, then CheckAttentionInputs.
Ort::Status ReadAttentionNode(const Ort::KernelContext& ctx, const AttentionAttrs& attrs,
                              ONNXTensorElementDataType q_type, TensorArg* inputs,
                              const int64_t** host_past_lengths, AttentionShapes* shapes);

}  // namespace tq::ort
