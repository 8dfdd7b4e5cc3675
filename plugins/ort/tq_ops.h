// Registration of TQQuantize and TQAttention, shared by cpu_ops.cc and cuda_ops.cc: both providers register the
// same OpSpecs (docs/format.md section 8) for float32 and float16, and differ only in their kernel classes and in
// where past_lengths lives (OrtMemTypeCPUInput on CUDA, so the overflow check reads it on the host).
#pragma once

#include <memory>
#include <type_traits>

#include "ort/custom_op.h"
#include "ort/op_contract.h"

namespace tq::ort {

inline OpSpec QuantizeSpec(const char* provider, ONNXTensorElementDataType t, OrtMemType lengths_mem) {
  constexpr ONNXTensorElementDataType kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  constexpr ONNXTensorElementDataType kU8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  constexpr ONNXTensorElementDataType kI64 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  return OpSpec{kQuantizeOp,
                provider,
                {{"x", t},
                 {"past_cache", kU8},
                 {"rotation", kF32},
                 {"codebook", kF32},
                 {"qjl_matrix", kF32, true},
                 {"past_window", t, true},
                 {"past_lengths", kI64, true, lengths_mem}},
                {{"present_cache", kU8}, {"present_window", t, true}}};
}

// The mask takes any dtype at registration; CheckAttentionInputs accepts float32, float16 or bool.
inline OpSpec AttentionSpec(const char* provider, ONNXTensorElementDataType t, OrtMemType lengths_mem) {
  constexpr ONNXTensorElementDataType kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  constexpr ONNXTensorElementDataType kU8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
  constexpr ONNXTensorElementDataType kI64 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
  constexpr ONNXTensorElementDataType kAny = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  return OpSpec{kAttentionOp,
                provider,
                {{"q", t},
                 {"k_cache", kU8},
                 {"v_cache", kU8},
                 {"mask", kAny},
                 {"k_rotation", kF32},
                 {"k_codebook", kF32},
                 {"v_rotation", kF32},
                 {"v_codebook", kF32},
                 {"k_qjl_matrix", kF32, true},
                 {"k_window", t, true},
                 {"v_window", t, true},
                 {"past_lengths", kI64, true, lengths_mem}},
                {{"out", t}}};
}

// KernelFactory for a kernel class K built as K(attrs, T) from the attributes ReadAttrs reads.
template <typename K, typename Attrs, Ort::Status (*ReadAttrs)(const OrtKernelInfo*, Attrs*),
          ONNXTensorElementDataType T>
Ort::Status CreateKernel(const OrtKernelInfo* info, std::unique_ptr<Kernel>* kernel) {
  Attrs attrs;
  if (auto s = ReadAttrs(info, &attrs); !s.IsOK()) return s;
  if constexpr (std::is_constructible_v<K, const Attrs&, ONNXTensorElementDataType, const OrtKernelInfo*>) {
    *kernel = std::make_unique<K>(attrs, T, info);  // a kernel that also inspects constant inputs
  } else {
    *kernel = std::make_unique<K>(attrs, T);
  }
  return Ort::Status{nullptr};
}

// Adds both ops for float32 and float16 to `domain`. The CustomOps are statics of this instantiation, so they
// live as long as the library (the domain keeps pointers to them); call once per provider.
template <typename QuantizeKernel, typename AttentionKernel>
void RegisterTqOps(Ort::CustomOpDomain& domain, const char* provider, OrtMemType lengths_mem) {
  constexpr ONNXTensorElementDataType kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  constexpr ONNXTensorElementDataType kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  static CustomOp quantize_f32(QuantizeSpec(provider, kF32, lengths_mem),
                               &CreateKernel<QuantizeKernel, QuantizeAttrs, &ReadQuantizeAttrs, kF32>);
  static CustomOp quantize_f16(QuantizeSpec(provider, kF16, lengths_mem),
                               &CreateKernel<QuantizeKernel, QuantizeAttrs, &ReadQuantizeAttrs, kF16>);
  static CustomOp attention_f32(AttentionSpec(provider, kF32, lengths_mem),
                                &CreateKernel<AttentionKernel, AttentionAttrs, &ReadAttentionAttrs, kF32>);
  static CustomOp attention_f16(AttentionSpec(provider, kF16, lengths_mem),
                                &CreateKernel<AttentionKernel, AttentionAttrs, &ReadAttentionAttrs, kF16>);
  for (CustomOp* op : {&quantize_f32, &quantize_f16, &attention_f32, &attention_f16}) domain.Add(op);
}

}  // namespace tq::ort
