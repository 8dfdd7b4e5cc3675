// ORT CUDA glue for TQQuantize and TQAttention (docs/format.md section 8): the same contract checks as the CPU
// ops (op_contract.h), output allocation, then the plain launchers of plugins/kernels/tq_kernels.h on the
// session's compute stream. Built with TQ_WITH_CUDA only; without the kernels (TQ_HAVE_CUDA_KERNELS unset) it
// registers nothing and the CPU ops serve every node.
//
// past_lengths is taken on the host (OrtMemTypeCPUInput) so a buffer overflow fails the node before any launch,
// exactly as on the CPU; it is copied to the device (Scratch) before the launcher's workspace is sized. Scratch
// memory comes from ORT's allocator for the outputs' device, on the compute stream.
//
// TQAttention reads its k_rotation once at kernel creation when it is a constant initializer: a Sylvester-
// Hadamard R_k (every head) is promised to the launcher, so the decode kernel rotates q by a butterfly instead
// of reading all of R_k (ConstantHadamardRotation).
#include "ort/register.h"

#if defined(TQ_HAVE_CUDA_KERNELS)

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/tq_kernels.h"
#include "ort/constant_inputs.h"
#include "ort/tq_ops.h"

namespace tq::ort {
namespace {

constexpr ONNXTensorElementDataType kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
constexpr size_t kAlign = 256;

kernels::DType KernelDtype(ONNXTensorElementDataType t) {
  return t == kF16 ? kernels::DType::kFloat16 : kernels::DType::kFloat32;
}

Ort::Status CudaFail(const char* op, const char* what, cudaError_t err) {
  std::string message = std::string(op) + ": " + what + " failed: ";
  const char* detail = kernels::last_error_message();
  message += (detail != nullptr && detail[0] != '\0') ? detail : cudaGetErrorString(err);
  return Ort::Status(message.c_str(), ORT_RUNTIME_EXCEPTION);
}

// Device scratch of one Compute (the copy of past_lengths and the launcher's workspace, two separate blocks so
// neither can run into the other), taken from the session's own allocator for the outputs' device: ORT's arena,
// so gpu_mem_limit and the arena settings cover it. KernelContext_GetScratchBuffer hands each block out on the
// compute stream, and the destructor returns it to that allocator when Compute ends; the kernels that use it were
// queued on the same stream, which is the ordering ORT relies on for its own CUDA kernels' scratch.
// past_lengths goes first because the launchers' parameters must point at it before the workspace is sized (a
// size from incomplete parameters was the cause of buffer-mode attention reading garbage lengths: the workspace
// came out 0 bytes and the kernels' partials overwrote the lengths). The lengths are first copied into a pageable
// host vector: from pageable memory cudaMemcpyAsync has staged the bytes before it returns, so the copy cannot
// outlive its source, whichever allocator (pinned or not) ORT gave the CPU input.
class Scratch {
 public:
  Scratch(OrtKernelContext* context, const OrtMemoryInfo* device, cudaStream_t stream)
      : context_(context), device_(device), stream_(stream) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (allocator_ == nullptr) return;
    for (void* block : blocks_) allocator_->Free(allocator_, block);
    Ort::GetApi().ReleaseAllocator(allocator_);
  }
  // Copies host_lengths[0, batch) to the device; nothing when host_lengths is null.
  Ort::Status UploadLengths(const char* op, const int64_t* host_lengths, int64_t batch) {
    if (host_lengths == nullptr || batch <= 0) return Ort::Status{nullptr};
    const std::vector<int64_t> host_copy(host_lengths, host_lengths + batch);
    const size_t bytes = host_copy.size() * sizeof(int64_t);
    void* base = nullptr;
    if (auto s = Allocate(op, bytes, &base); !s.IsOK()) return s;
    lengths_ = static_cast<int64_t*>(base);
    const cudaError_t err = cudaMemcpyAsync(lengths_, host_copy.data(), bytes, cudaMemcpyHostToDevice, stream_);
    return err == cudaSuccess ? Ort::Status{nullptr} : CudaFail(op, "past_lengths upload", err);
  }
  Ort::Status AllocateWorkspace(const char* op, size_t bytes) {
    if (bytes == 0) return Ort::Status{nullptr};
    return Allocate(op, bytes, &workspace_);
  }
  void* workspace() const { return workspace_; }
  const int64_t* lengths() const { return lengths_; }

 private:
  // A block of at least `bytes`, 256-byte aligned (the launchers require it of the workspace): ORT's CUDA arena
  // aligns its blocks so, but the contract does not promise it, so kAlign - 1 spare bytes absorb any offset.
  Ort::Status Allocate(const char* op, size_t bytes, void** out) {
    const OrtApi& api = Ort::GetApi();
    if (allocator_ == nullptr) {
      if (OrtStatus* s = api.KernelContext_GetAllocator(context_, device_, &allocator_); s != nullptr) {
        allocator_ = nullptr;
        return ScratchFail(op, bytes, s);
      }
    }
    const size_t padded = (bytes + kAlign - 1) / kAlign * kAlign + kAlign - 1;
    void* block = nullptr;
    if (OrtStatus* s = api.KernelContext_GetScratchBuffer(context_, device_, padded, &block); s != nullptr)
      return ScratchFail(op, padded, s);
    if (block == nullptr) return Failure(std::string(op) + ": ORT's allocator returned no scratch block");
    blocks_.push_back(block);
    const uintptr_t aligned = (reinterpret_cast<uintptr_t>(block) + kAlign - 1) & ~static_cast<uintptr_t>(kAlign - 1);
    *out = reinterpret_cast<void*>(aligned);
    return Ort::Status{nullptr};
  }
  static Ort::Status Failure(const std::string& message) {
    return Ort::Status(message.c_str(), ORT_RUNTIME_EXCEPTION);
  }
  static Ort::Status ScratchFail(const char* op, size_t bytes, OrtStatus* s) {
    const std::string message = std::string(op) + ": device scratch of " + std::to_string(bytes) +
                                " bytes from ORT's allocator failed: " + Ort::GetApi().GetErrorMessage(s);
    Ort::GetApi().ReleaseStatus(s);
    return Failure(message);
  }

  OrtKernelContext* context_;
  const OrtMemoryInfo* device_;
  cudaStream_t stream_;
  OrtAllocator* allocator_ = nullptr;
  std::vector<void*> blocks_;  // what the allocator handed out, freed in the destructor
  int64_t* lengths_ = nullptr;
  void* workspace_ = nullptr;
};

// One line in ORT's log at INFO level (session option log_severity_level <= 1), naming the op and the node:
// "tqexport <op> <node>: <message>".
void LogInfo(const OrtKernelInfo* info, const char* op, const std::string& message) {
  const OrtApi& api = Ort::GetApi();
  const OrtLogger* logger = nullptr;
  if (OrtStatus* s = api.KernelInfo_GetLogger(info, &logger); s != nullptr || logger == nullptr) {
    if (s != nullptr) api.ReleaseStatus(s);
    return;
  }
  std::string node = "?";
  size_t size = 0;
  if (OrtStatus* s = api.KernelInfo_GetNodeName(info, nullptr, &size); s == nullptr && size > 0) {
    std::vector<char> name(size);
    if (OrtStatus* s2 = api.KernelInfo_GetNodeName(info, name.data(), &size); s2 == nullptr)
      node.assign(name.data());
    else
      api.ReleaseStatus(s2);
  } else if (s != nullptr) {
    api.ReleaseStatus(s);
  }
  const std::string line = std::string("tqexport ") + op + " " + node + ": " + message;
  if (OrtStatus* s = api.Logger_LogMessage(logger, ORT_LOGGING_LEVEL_INFO, line.c_str(), ORT_FILE, __LINE__, op);
      s != nullptr)
    api.ReleaseStatus(s);
}

// ConstantHadamardRotation for input `index` (named `input`), with the choice logged: `promised` says what the
// promise buys, and without one the line says the structure is checked on every call, and why. `attribute_holds`:
// the node's constant-Hadamard attribute already made ReadQuantizeAttrs / ReadAttentionAttrs run the same check
// (op_contract.cc), so R is not copied and checked a second time.
bool PromiseHadamardRotation(const OrtKernelInfo* info, const char* op, size_t index, const char* input,
                             const char* promised, bool attribute_holds) {
  const char* why = "";
  const bool ok = attribute_holds || ConstantHadamardRotation(info, index, &why);
  LogInfo(info, op,
          ok ? std::string(input) + " is a constant Sylvester-Hadamard matrix; " + promised
             : std::string(input) + " read on every call (" + why + ")");
  return ok;
}

// ------------------------------------------------------------------------------------------------ TQQuantize
class QuantizeCuda final : public Kernel {
 public:
  QuantizeCuda(const QuantizeAttrs& attrs, ONNXTensorElementDataType x_type, const OrtKernelInfo* info)
      : attrs_(attrs),
        x_type_(x_type),
        rotation_hadamard_(PromiseHadamardRotation(info, kQuantizeOp, kQRotation, "rotation",
                                                   "the quantize kernel does not check its structure",
                                                   attrs.constant_hadamard != 0)),
        constant_tables_(attrs.constant_hadamard != 0 ||
                         (ConstantInput(info, kQRotation) && ConstantInput(info, kQCodebook))) {}

  Ort::Status Compute(OrtKernelContext* context) override {
    const char* op = kQuantizeOp;
    Ort::KernelContext ctx(context);
    TensorArg in[kQNumInputs];
    const int64_t* lengths = nullptr;  // past_lengths on the host, buffer mode only
    QuantizeShapes sh;
    if (auto s = ReadQuantizeNode(ctx, attrs_, x_type_, in, &lengths, &sh); !s.IsOK()) return s;
    const bool buffer = attrs_.cache_mode == kBuffer;
    const bool has_window = attrs_.window() > 0;
    const size_t outputs = ctx.GetOutputCount();

    Ort::UnownedValue cache_out =
        ctx.GetOutput(kQPresentCache, {sh.batch, sh.kv_heads, sh.present_rows, sh.row_bytes});
    void* window_out = nullptr;
    if (outputs >= 2) {
      Ort::UnownedValue w =
          ctx.GetOutput(kQPresentWindow, {sh.batch, sh.kv_heads, sh.present_window_rows, sh.head_dim});
      window_out = w.GetTensorMutableRawData();
    }

    kernels::QuantizeParams p;
    p.codec = attrs_.codec;
    p.dtype = KernelDtype(x_type_);
    p.batch = static_cast<int>(sh.batch);
    p.kv_heads = static_cast<int>(sh.kv_heads);
    p.new_tokens = static_cast<int>(sh.new_tokens);
    p.x = in[kQX].data;
    p.past_cache = static_cast<const uint8_t*>(in[kQPastCache].data);
    p.past_rows = sh.past_rows;
    p.present_cache = static_cast<uint8_t*>(cache_out.GetTensorMutableRawData());
    p.present_rows = sh.present_rows;
    p.rotation = static_cast<const float*>(in[kQRotation].data);
    p.rotation_heads = static_cast<int>(sh.rotation_heads);
    p.codebook = static_cast<const float*>(in[kQCodebook].data);
    p.qjl_matrix = attrs_.codec.qjl ? static_cast<const float*>(in[kQQjlMatrix].data) : nullptr;
    p.past_window = has_window ? in[kQPastWindow].data : nullptr;
    p.past_window_rows = sh.past_window_rows;
    p.present_window = has_window ? window_out : nullptr;
    p.present_window_rows = has_window ? sh.present_window_rows : 0;
    p.cache_mode = attrs_.cache_mode;
    p.sink_tokens = attrs_.sink_tokens;
    p.recent_window = attrs_.recent_window;
    p.rotation_hadamard = rotation_hadamard_ ? 1 : 0;
    p.constant_tables = constant_tables_ ? 1 : 0;

    cudaStream_t stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
    Scratch scratch(context, cache_out.GetTensorMemoryInfo(), stream);
    if (auto s = scratch.UploadLengths(op, buffer ? lengths : nullptr, sh.batch); !s.IsOK()) return s;
    p.past_lengths = scratch.lengths();  // set before sizing: the workspace depends on every field of p
    if (auto s = scratch.AllocateWorkspace(op, kernels::quantize_workspace_bytes(p)); !s.IsOK()) return s;
    if (cudaError_t err = kernels::launch_quantize(p, scratch.workspace(), stream); err != cudaSuccess)
      return CudaFail(op, "launch_quantize", err);
    return Ort::Status{nullptr};
  }

 private:
  QuantizeAttrs attrs_;
  ONNXTensorElementDataType x_type_;
  bool rotation_hadamard_;  // PromiseHadamardRotation
  bool constant_tables_;    // rotation and codebook are constant initializers (QuantizeParams::constant_tables)
};

// ------------------------------------------------------------------------------------------------ TQAttention
kernels::MaskType KernelMaskType(ONNXTensorElementDataType t) {
  if (t == kF16) return kernels::MaskType::kFloat16;
  if (t == ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL) return kernels::MaskType::kBool;
  return kernels::MaskType::kFloat32;
}

class AttentionCuda final : public Kernel {
 public:
  AttentionCuda(const AttentionAttrs& attrs, ONNXTensorElementDataType q_type, const OrtKernelInfo* info)
      : attrs_(attrs),
        q_type_(q_type),
        k_rotation_hadamard_(PromiseHadamardRotation(info, kAttentionOp, kAKRotation, "k_rotation",
                                                     "the decode kernel rotates q by a butterfly",
                                                     attrs.k_constant_hadamard != 0)),
        v_rotation_hadamard_(PromiseHadamardRotation(info, kAttentionOp, kAVRotation, "v_rotation",
                                                     "the output's un-rotation does not check its structure",
                                                     attrs.v_constant_hadamard != 0)) {}

  Ort::Status Compute(OrtKernelContext* context) override {
    const char* op = kAttentionOp;
    Ort::KernelContext ctx(context);
    TensorArg in[kANumInputs];
    const int64_t* lengths = nullptr;  // past_lengths on the host, buffer mode only
    AttentionShapes sh;
    if (auto s = ReadAttentionNode(ctx, attrs_, q_type_, in, &lengths, &sh); !s.IsOK()) return s;
    const bool buffer = attrs_.cache_mode == kBuffer;
    if (!kernels::attention_head_dim_supported(static_cast<int>(sh.head_dim))) {
      return Fail(std::string(op) + ": head dim D=" + std::to_string(sh.head_dim) +
                  " has no compiled CUDA attention kernel (see plugins/kernels)");
    }
    Ort::UnownedValue out = ctx.GetOutput(0, in[kAQ].shape);
    const bool has_window = attrs_.window() > 0;

    kernels::AttentionParams p;
    p.k_codec = attrs_.k_codec;
    p.v_codec = attrs_.v_codec;
    p.dtype = KernelDtype(q_type_);
    p.batch = static_cast<int>(sh.batch);
    p.q_heads = static_cast<int>(sh.q_heads);
    p.kv_heads = static_cast<int>(sh.kv_heads);
    p.new_tokens = static_cast<int>(sh.new_tokens);
    p.q = in[kAQ].data;
    p.k_cache = static_cast<const uint8_t*>(in[kAKCache].data);
    p.v_cache = static_cast<const uint8_t*>(in[kAVCache].data);
    p.cache_rows = sh.cache_rows;
    p.mask = in[kAMask].data;
    p.mask_type = KernelMaskType(sh.mask_type);
    p.mask_batch = static_cast<int>(sh.mask_batch);
    p.mask_heads = static_cast<int>(sh.mask_heads);
    p.mask_tokens = sh.mask_tokens;
    p.k_rotation = static_cast<const float*>(in[kAKRotation].data);
    p.k_rotation_heads = static_cast<int>(sh.k_rotation_heads);
    p.k_codebook = static_cast<const float*>(in[kAKCodebook].data);
    p.v_rotation = static_cast<const float*>(in[kAVRotation].data);
    p.v_rotation_heads = static_cast<int>(sh.v_rotation_heads);
    p.v_codebook = static_cast<const float*>(in[kAVCodebook].data);
    p.k_qjl_matrix = attrs_.k_codec.qjl ? static_cast<const float*>(in[kAKQjlMatrix].data) : nullptr;
    p.k_window = has_window ? in[kAKWindow].data : nullptr;
    p.v_window = has_window ? in[kAVWindow].data : nullptr;
    p.window_rows = sh.window_rows;
    p.scale = attrs_.scale;
    p.softcap = attrs_.softcap;
    p.cache_mode = attrs_.cache_mode;
    p.sink_tokens = attrs_.sink_tokens;
    p.recent_window = attrs_.recent_window;
    p.out = out.GetTensorMutableRawData();
    p.k_rotation_hadamard = k_rotation_hadamard_ ? 1 : 0;
    p.v_rotation_hadamard = v_rotation_hadamard_ ? 1 : 0;

    cudaStream_t stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
    Scratch scratch(context, out.GetTensorMemoryInfo(), stream);
    if (auto s = scratch.UploadLengths(op, buffer ? lengths : nullptr, sh.batch); !s.IsOK()) return s;
    p.past_lengths = scratch.lengths();  // set before sizing: the workspace depends on every field of p
    if (auto s = scratch.AllocateWorkspace(op, kernels::attention_workspace_bytes(p)); !s.IsOK()) return s;
    if (cudaError_t err = kernels::launch_attention(p, scratch.workspace(), stream); err != cudaSuccess)
      return CudaFail(op, "launch_attention", err);
    return Ort::Status{nullptr};
  }

 private:
  AttentionAttrs attrs_;
  ONNXTensorElementDataType q_type_;
  bool k_rotation_hadamard_;  // PromiseHadamardRotation
  bool v_rotation_hadamard_;
};

}  // namespace

void RegisterCudaOps(Ort::CustomOpDomain& domain) {
  RegisterTqOps<QuantizeCuda, AttentionCuda>(domain, "CUDAExecutionProvider", OrtMemTypeCPUInput);
}

}  // namespace tq::ort

#else  // no CUDA kernels in this build

namespace tq::ort {
void RegisterCudaOps(Ort::CustomOpDomain& domain) { (void)domain; }
}  // namespace tq::ort

#endif
