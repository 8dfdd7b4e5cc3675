// ORT CPU glue for TQQuantize and TQAttention (docs/format.md section 8): read the attributes (op_contract.h),
// check every input against them, allocate the outputs, call the plain CPU kernels of plugins/cpu/tq_cpu.h.
// Each op is registered once per dtype of x / q (float32, float16) by RegisterTqOps (tq_ops.h); the mask of
// TQAttention takes any dtype at registration and is checked in op_contract (float32, float16 or bool).
#include <memory>
#include <string>
#include <vector>

#include "cpu/tq_cpu.h"
#include "ort/register.h"
#include "ort/tq_ops.h"

namespace tq::ort {
namespace {

constexpr ONNXTensorElementDataType kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
constexpr ONNXTensorElementDataType kU8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
constexpr ONNXTensorElementDataType kI64 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;

cpu::DType ToCpu(ONNXTensorElementDataType type) {
  switch (type) {
    case kF16: return cpu::DType::kFloat16;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return cpu::DType::kBool;
    case kU8: return cpu::DType::kUInt8;
    case kI64: return cpu::DType::kInt64;
    default: return cpu::DType::kFloat32;
  }
}

cpu::TensorRef ToRef(const TensorArg& t) {
  cpu::TensorRef ref;
  if (!t.present) return ref;
  ref.data = t.data;
  ref.dtype = ToCpu(t.type);
  ref.shape = t.shape;
  return ref;
}

Ort::Status FromCpu(const char* op, const cpu::Status& status) {
  if (status.ok) return Ort::Status{nullptr};
  std::string message = status.message;
  if (message.rfind(op, 0) != 0) message = std::string(op) + ": " + message;
  return Ort::Status(message.c_str(), ORT_INVALID_ARGUMENT);
}

// Allocates output `index` of `shape` and describes it for the CPU kernels.
cpu::MutableTensorRef AllocateOutput(Ort::KernelContext& ctx, size_t index, const std::vector<int64_t>& shape,
                                     ONNXTensorElementDataType type) {
  Ort::UnownedValue value = ctx.GetOutput(index, shape);
  cpu::MutableTensorRef ref;
  ref.data = value.GetTensorMutableRawData();
  ref.dtype = ToCpu(type);
  ref.shape = shape;
  return ref;
}

// ------------------------------------------------------------------------------------------------ TQQuantize
class QuantizeCpu final : public Kernel {
 public:
  QuantizeCpu(const QuantizeAttrs& attrs, ONNXTensorElementDataType x_type) : attrs_(attrs), x_type_(x_type) {}

  Ort::Status Compute(OrtKernelContext* context) override {
    const char* op = kQuantizeOp;
    Ort::KernelContext ctx(context);
    TensorArg in[kQNumInputs];
    const int64_t* lengths = nullptr;
    QuantizeShapes shapes;
    if (auto s = ReadQuantizeNode(ctx, attrs_, x_type_, in, &lengths, &shapes); !s.IsOK()) return s;

    const bool has_window = attrs_.window() > 0;
    const size_t outputs = ctx.GetOutputCount();

    cpu::QuantizeArgs args;
    args.codec = attrs_.codec;
    args.cache = {attrs_.cache_mode, attrs_.sink_tokens, attrs_.recent_window};
    args.x = ToRef(in[kQX]);
    args.past_cache = ToRef(in[kQPastCache]);
    args.rotation = ToRef(in[kQRotation]);
    args.codebook = ToRef(in[kQCodebook]);
    if (attrs_.codec.qjl) args.qjl_matrix = ToRef(in[kQQjlMatrix]);
    if (has_window) args.past_window = ToRef(in[kQPastWindow]);
    if (attrs_.cache_mode == kBuffer) args.past_lengths = ToRef(in[kQPastLengths]);

    cpu::QuantizeShapes out_shapes;
    if (auto s = FromCpu(op, cpu::quantize_output_shapes(args, &out_shapes)); !s.IsOK()) return s;
    args.present_cache = AllocateOutput(ctx, kQPresentCache, out_shapes.present_cache, kU8);
    if (outputs >= 2) {
      std::vector<int64_t> window_shape = out_shapes.present_window;
      if (window_shape.empty()) window_shape = {shapes.batch, shapes.kv_heads, 0, shapes.head_dim};
      args.present_window = AllocateOutput(ctx, kQPresentWindow, window_shape, x_type_);
    }
    return FromCpu(op, cpu::quantize(args));
  }

 private:
  QuantizeAttrs attrs_;
  ONNXTensorElementDataType x_type_;
};

// ------------------------------------------------------------------------------------------------ TQAttention
class AttentionCpu final : public Kernel {
 public:
  AttentionCpu(const AttentionAttrs& attrs, ONNXTensorElementDataType q_type) : attrs_(attrs), q_type_(q_type) {}

  Ort::Status Compute(OrtKernelContext* context) override {
    const char* op = kAttentionOp;
    Ort::KernelContext ctx(context);
    TensorArg in[kANumInputs];
    const int64_t* lengths = nullptr;
    AttentionShapes shapes;
    if (auto s = ReadAttentionNode(ctx, attrs_, q_type_, in, &lengths, &shapes); !s.IsOK()) return s;

    cpu::AttentionArgs args;
    args.k_codec = attrs_.k_codec;
    args.v_codec = attrs_.v_codec;
    args.cache = {attrs_.cache_mode, attrs_.sink_tokens, attrs_.recent_window};
    args.scale = attrs_.scale;
    args.softcap = attrs_.softcap;
    args.q = ToRef(in[kAQ]);
    args.k_cache = ToRef(in[kAKCache]);
    args.v_cache = ToRef(in[kAVCache]);
    args.mask = ToRef(in[kAMask]);
    args.k_rotation = ToRef(in[kAKRotation]);
    args.k_codebook = ToRef(in[kAKCodebook]);
    args.v_rotation = ToRef(in[kAVRotation]);
    args.v_codebook = ToRef(in[kAVCodebook]);
    if (attrs_.k_codec.qjl) args.k_qjl_matrix = ToRef(in[kAKQjlMatrix]);
    if (attrs_.window() > 0) {
      args.k_window = ToRef(in[kAKWindow]);
      args.v_window = ToRef(in[kAVWindow]);
    }
    if (attrs_.cache_mode == kBuffer) args.past_lengths = ToRef(in[kAPastLengths]);
    if (auto s = FromCpu(op, cpu::attention_validate(args)); !s.IsOK()) return s;
    args.out = AllocateOutput(ctx, 0, in[kAQ].shape, q_type_);
    return FromCpu(op, cpu::attention(args));
  }

 private:
  AttentionAttrs attrs_;
  ONNXTensorElementDataType q_type_;
};

}  // namespace

void RegisterCpuOps(Ort::CustomOpDomain& domain) {
  RegisterTqOps<QuantizeCpu, AttentionCpu>(domain, "CPUExecutionProvider", OrtMemTypeDefault);
}

}  // namespace tq::ort
