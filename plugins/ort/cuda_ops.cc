// ORT CUDA glue for TQQuantize / TQAttention (docs/format.md section 8): validate with the same checks and messages
// as the CPU glue (op_contract.h), allocate the outputs, take scratch from ORT's allocator, and launch the plain
// launchers of plugins/kernels/tq_kernels.h on ORT's compute stream. No device synchronization.
// past_lengths is declared a CPU input (OrtMemTypeCPUInput): the data-dependent checks (buffer overflow, mask
// length) run on the host with the CPU glue's messages, then an asynchronous copy puts it in device scratch.
// Built only with TQ_WITH_CUDA; registers nothing without the kernels (TQ_HAVE_CUDA_KERNELS).
#include "ort/register.h"

#if defined(TQ_HAVE_CUDA_KERNELS)

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/tq_kernels.h"
#include "ort/custom_op.h"
#include "ort/op_contract.h"

namespace tq::ort {
namespace {

constexpr const char* kCuda = "CUDAExecutionProvider";
constexpr ONNXTensorElementDataType kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
constexpr ONNXTensorElementDataType kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
constexpr ONNXTensorElementDataType kU8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
constexpr ONNXTensorElementDataType kI64 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
constexpr ONNXTensorElementDataType kAny = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;

kernels::DType ToKernel(ONNXTensorElementDataType t) {
  return t == kF16 ? kernels::DType::kFloat16 : kernels::DType::kFloat32;
}

Ort::Status FromCuda(const char* op, cudaError_t err) {
  if (err == cudaSuccess) return Ort::Status{nullptr};
  std::string message = kernels::last_error_message();
  if (message.empty()) message = cudaGetErrorString(err);
  if (message.rfind(op, 0) != 0) message = std::string(op) + ": " + message;
  return Ort::Status(message.c_str(), err == cudaErrorInvalidValue ? ORT_INVALID_ARGUMENT : ORT_RUNTIME_EXCEPTION);
}

// Device scratch from ORT's CUDA allocator for the device of input 0; freed when the kernel returns (the arena
// hands it out again only to work ordered after ours on the same compute stream).
class Scratch {
 public:
  Scratch(Ort::KernelContext& ctx, size_t bytes) {
    if (bytes == 0) return;
    const int device = ctx.GetInput(0).GetTensorMemoryInfo().GetDeviceId();
    Ort::MemoryInfo info("Cuda", OrtDeviceAllocator, device, OrtMemTypeDefault);
    allocator_ = ctx.GetAllocator(*info);
    if (allocator_ != nullptr) data_ = allocator_->Alloc(allocator_, bytes);
  }
  ~Scratch() {
    if (allocator_ != nullptr && data_ != nullptr) allocator_->Free(allocator_, data_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return data_; }
  bool ok(size_t bytes) const { return bytes == 0 || data_ != nullptr; }

 private:
  OrtAllocator* allocator_ = nullptr;
  void* data_ = nullptr;
};

// Copies host past_lengths into device scratch (256-byte aligned slot at the start of `scratch`).
Ort::Status UploadLengths(const char* op, const int64_t* host, int64_t batch, void* device, cudaStream_t stream) {
  if (batch == 0) return Ort::Status{nullptr};
  const cudaError_t e =
      cudaMemcpyAsync(device, host, static_cast<size_t>(batch) * sizeof(int64_t), cudaMemcpyHostToDevice, stream);
  if (e != cudaSuccess) return Fail(std::string(op) + ": copying past_lengths to the device: " + cudaGetErrorString(e));
  return Ort::Status{nullptr};
}

size_t Align256(size_t v) { return (v + 255) & ~static_cast<size_t>(255); }

// ------------------------------------------------------------------------------------------------ TQQuantize
const char* const kQuantizeInputNames[kQNumInputs] = {"x",          "past_cache",  "rotation",    "codebook",
                                                      "qjl_matrix", "past_window", "past_lengths"};

class QuantizeCuda final : public Kernel {
 public:
  QuantizeCuda(const QuantizeAttrs& attrs, ONNXTensorElementDataType x_type) : attrs_(attrs), x_type_(x_type) {}

  Ort::Status Compute(OrtKernelContext* context) override {
    const char* op = kQuantizeOp;
    Ort::KernelContext ctx(context);
    TensorArg in[kQNumInputs];
    for (int i = 0; i < kQNumInputs; ++i) {
      if (auto s = ReadInput(ctx, i, kQuantizeInputNames[i], &in[i]); !s.IsOK()) return s;
    }
    const int64_t* lengths =
        in[kQPastLengths].present ? static_cast<const int64_t*>(in[kQPastLengths].data) : nullptr;  // host
    QuantizeShapes shapes;
    if (auto s = CheckQuantizeInputs(attrs_, x_type_, in, lengths, &shapes); !s.IsOK()) return s;
    const bool has_window = attrs_.window() > 0;
    const size_t outputs = ctx.GetOutputCount();
    if (has_window && outputs < 2)
      return Fail(std::string(op) + ": output 'present_window' (1) is required when sink_tokens + recent_window > 0");

    Ort::UnownedValue present = ctx.GetOutput(
        kQPresentCache, std::vector<int64_t>{shapes.batch, shapes.kv_heads, shapes.present_rows, shapes.row_bytes});
    void* present_window = nullptr;
    if (outputs >= 2) {
      Ort::UnownedValue w = ctx.GetOutput(
          kQPresentWindow,
          std::vector<int64_t>{shapes.batch, shapes.kv_heads, has_window ? shapes.present_window_rows : 0,
                               shapes.head_dim});
      present_window = w.GetTensorMutableRawData();
    }
    cudaStream_t stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
    const bool buffer = attrs_.cache_mode == kBuffer;
    const size_t scratch_bytes = buffer ? Align256(static_cast<size_t>(shapes.batch) * sizeof(int64_t)) : 0;
    Scratch scratch(ctx, scratch_bytes);
    if (!scratch.ok(scratch_bytes)) return Fail(std::string(op) + ": ORT's CUDA allocator gave no scratch memory");
    if (buffer) {
      if (auto s = UploadLengths(op, lengths, shapes.batch, scratch.get(), stream); !s.IsOK()) return s;
    }

    kernels::QuantizeParams p;
    p.codec = attrs_.codec;
    p.dtype = ToKernel(x_type_);
    p.batch = static_cast<int>(shapes.batch);
    p.kv_heads = static_cast<int>(shapes.kv_heads);
    p.new_tokens = static_cast<int>(shapes.new_tokens);
    p.x = in[kQX].data;
    p.past_cache = static_cast<const uint8_t*>(in[kQPastCache].data);
    p.past_rows = shapes.past_rows;
    p.present_cache = static_cast<uint8_t*>(present.GetTensorMutableRawData());
    p.present_rows = shapes.present_rows;
    p.rotation = static_cast<const float*>(in[kQRotation].data);
    p.rotation_heads = static_cast<int>(shapes.rotation_heads);
    p.codebook = static_cast<const float*>(in[kQCodebook].data);
    if (attrs_.codec.qjl) p.qjl_matrix = static_cast<const float*>(in[kQQjlMatrix].data);
    if (has_window) {
      p.past_window = in[kQPastWindow].data;
      p.past_window_rows = shapes.past_window_rows;
      p.present_window = present_window;
      p.present_window_rows = shapes.present_window_rows;
    }
    p.past_lengths = buffer ? static_cast<const int64_t*>(scratch.get()) : nullptr;
    p.cache_mode = attrs_.cache_mode;
    p.sink_tokens = attrs_.sink_tokens;
    p.recent_window = attrs_.recent_window;
    return FromCuda(op, kernels::launch_quantize(p, nullptr, stream));
  }

  static Ort::Status Create(ONNXTensorElementDataType x_type, const OrtKernelInfo* info,
                            std::unique_ptr<Kernel>* kernel) {
    QuantizeAttrs attrs;
    if (auto s = ReadQuantizeAttrs(info, &attrs); !s.IsOK()) return s;
    *kernel = std::make_unique<QuantizeCuda>(attrs, x_type);
    return Ort::Status{nullptr};
  }

 private:
  QuantizeAttrs attrs_;
  ONNXTensorElementDataType x_type_;
};

OpSpec QuantizeSpec(ONNXTensorElementDataType t) {
  return OpSpec{kQuantizeOp,
                kCuda,
                {{"x", t},
                 {"past_cache", kU8},
                 {"rotation", kF32},
                 {"codebook", kF32},
                 {"qjl_matrix", kF32, true},
                 {"past_window", t, true},
                 {"past_lengths", kI64, true, OrtMemTypeCPUInput}},
                {{"present_cache", kU8}, {"present_window", t, true}}};
}

// ------------------------------------------------------------------------------------------------ TQAttention
const char* const kAttentionInputNames[kANumInputs] = {
    "q",          "k_cache",    "v_cache",      "mask",     "k_rotation", "k_codebook",
    "v_rotation", "v_codebook", "k_qjl_matrix", "k_window", "v_window",   "past_lengths"};

class AttentionCuda final : public Kernel {
 public:
  AttentionCuda(const AttentionAttrs& attrs, ONNXTensorElementDataType q_type) : attrs_(attrs), q_type_(q_type) {}

  Ort::Status Compute(OrtKernelContext* context) override {
    const char* op = kAttentionOp;
    Ort::KernelContext ctx(context);
    TensorArg in[kANumInputs];
    for (int i = 0; i < kANumInputs; ++i) {
      if (auto s = ReadInput(ctx, i, kAttentionInputNames[i], &in[i]); !s.IsOK()) return s;
    }
    const int64_t* lengths =
        in[kAPastLengths].present ? static_cast<const int64_t*>(in[kAPastLengths].data) : nullptr;  // host
    AttentionShapes shapes;
    if (auto s = CheckAttentionInputs(attrs_, q_type_, in, lengths, &shapes); !s.IsOK()) return s;
    if (!kernels::attention_head_dim_supported(static_cast<int>(shapes.head_dim)))
      return Fail(std::string(op) + ": head dim " + std::to_string(shapes.head_dim) +
                  ": the CUDA kernel supports 64, 128 and 256 (run this node on the CPU provider)");

    Ort::UnownedValue out = ctx.GetOutput(0, in[kAQ].shape);
    kernels::AttentionParams p;
    p.k_codec = attrs_.k_codec;
    p.v_codec = attrs_.v_codec;
    p.dtype = ToKernel(q_type_);
    p.batch = static_cast<int>(shapes.batch);
    p.q_heads = static_cast<int>(shapes.q_heads);
    p.kv_heads = static_cast<int>(shapes.kv_heads);
    p.new_tokens = static_cast<int>(shapes.new_tokens);
    p.q = in[kAQ].data;
    p.k_cache = static_cast<const uint8_t*>(in[kAKCache].data);
    p.v_cache = static_cast<const uint8_t*>(in[kAVCache].data);
    p.cache_rows = shapes.cache_rows;
    p.mask = in[kAMask].data;
    p.mask_type = shapes.mask_type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL ? kernels::MaskType::kBool
                  : shapes.mask_type == kF16                             ? kernels::MaskType::kFloat16
                                                                         : kernels::MaskType::kFloat32;
    p.mask_batch = static_cast<int>(shapes.mask_batch);
    p.mask_heads = static_cast<int>(shapes.mask_heads);
    p.mask_tokens = shapes.mask_tokens;
    p.k_rotation = static_cast<const float*>(in[kAKRotation].data);
    p.k_rotation_heads = static_cast<int>(shapes.k_rotation_heads);
    p.k_codebook = static_cast<const float*>(in[kAKCodebook].data);
    p.v_rotation = static_cast<const float*>(in[kAVRotation].data);
    p.v_rotation_heads = static_cast<int>(shapes.v_rotation_heads);
    p.v_codebook = static_cast<const float*>(in[kAVCodebook].data);
    if (attrs_.k_codec.qjl) p.k_qjl_matrix = static_cast<const float*>(in[kAKQjlMatrix].data);
    if (attrs_.window() > 0) {
      p.k_window = in[kAKWindow].data;
      p.v_window = in[kAVWindow].data;
      p.window_rows = shapes.window_rows;
    }
    p.scale = attrs_.scale;
    p.softcap = attrs_.softcap;
    p.cache_mode = attrs_.cache_mode;
    p.sink_tokens = attrs_.sink_tokens;
    p.recent_window = attrs_.recent_window;
    p.out = out.GetTensorMutableRawData();

    const bool buffer = attrs_.cache_mode == kBuffer;
    const size_t lengths_bytes = buffer ? Align256(static_cast<size_t>(shapes.batch) * sizeof(int64_t)) : 0;
    const size_t work_bytes = kernels::attention_workspace_bytes(p);
    if (work_bytes == 0 && shapes.batch > 0) return FromCuda(op, kernels::launch_attention(p, nullptr, nullptr));
    Scratch scratch(ctx, lengths_bytes + work_bytes);
    if (!scratch.ok(lengths_bytes + work_bytes))
      return Fail(std::string(op) + ": ORT's CUDA allocator gave no scratch memory");
    cudaStream_t stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
    char* base = static_cast<char*>(scratch.get());
    if (buffer) {
      if (auto s = UploadLengths(op, lengths, shapes.batch, base, stream); !s.IsOK()) return s;
      p.past_lengths = reinterpret_cast<const int64_t*>(base);
    }
    return FromCuda(op, kernels::launch_attention(p, base + lengths_bytes, stream));
  }

  static Ort::Status Create(ONNXTensorElementDataType q_type, const OrtKernelInfo* info,
                            std::unique_ptr<Kernel>* kernel) {
    AttentionAttrs attrs;
    if (auto s = ReadAttentionAttrs(info, &attrs); !s.IsOK()) return s;
    *kernel = std::make_unique<AttentionCuda>(attrs, q_type);
    return Ort::Status{nullptr};
  }

 private:
  AttentionAttrs attrs_;
  ONNXTensorElementDataType q_type_;
};

OpSpec AttentionSpec(ONNXTensorElementDataType t) {
  return OpSpec{kAttentionOp,
                kCuda,
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
                 {"past_lengths", kI64, true, OrtMemTypeCPUInput}},
                {{"out", t}}};
}

template <ONNXTensorElementDataType T>
Ort::Status CreateQuantize(const OrtKernelInfo* info, std::unique_ptr<Kernel>* kernel) {
  return QuantizeCuda::Create(T, info, kernel);
}
template <ONNXTensorElementDataType T>
Ort::Status CreateAttention(const OrtKernelInfo* info, std::unique_ptr<Kernel>* kernel) {
  return AttentionCuda::Create(T, info, kernel);
}

}  // namespace

void RegisterCudaOps(Ort::CustomOpDomain& domain) {
  static CustomOp quantize_f32(QuantizeSpec(kF32), &CreateQuantize<kF32>);
  static CustomOp quantize_f16(QuantizeSpec(kF16), &CreateQuantize<kF16>);
  static CustomOp attention_f32(AttentionSpec(kF32), &CreateAttention<kF32>);
  static CustomOp attention_f16(AttentionSpec(kF16), &CreateAttention<kF16>);
  for (CustomOp* op : {&quantize_f32, &quantize_f16, &attention_f32, &attention_f16}) domain.Add(op);
}

}  // namespace tq::ort

#else  // !TQ_HAVE_CUDA_KERNELS

namespace tq::ort {

void RegisterCudaOps(Ort::CustomOpDomain& domain) { (void)domain; }

}  // namespace tq::ort

#endif
