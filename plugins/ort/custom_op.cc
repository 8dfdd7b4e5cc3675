#include "ort/custom_op.h"

#include <utility>

namespace tq::ort {
namespace {

const CustomOp* Self(const OrtCustomOp* op) { return static_cast<const CustomOp*>(op); }

}  // namespace

CustomOp::CustomOp(OpSpec spec, KernelFactory factory)
    : OrtCustomOp{}, spec_(std::move(spec)), factory_(factory) {
  // Fields up to the header's API version; a newer runtime reads only those (version tells it how many).
  OrtCustomOp::version = ORT_API_VERSION;
  OrtCustomOp::GetName = [](const OrtCustomOp* op) { return Self(op)->spec_.name.c_str(); };
  OrtCustomOp::GetExecutionProviderType = [](const OrtCustomOp* op) { return Self(op)->spec_.provider.c_str(); };
  OrtCustomOp::GetInputTypeCount = [](const OrtCustomOp* op) { return Self(op)->spec_.inputs.size(); };
  OrtCustomOp::GetInputType = [](const OrtCustomOp* op, size_t i) { return Self(op)->spec_.inputs[i].type; };
  OrtCustomOp::GetOutputTypeCount = [](const OrtCustomOp* op) { return Self(op)->spec_.outputs.size(); };
  OrtCustomOp::GetOutputType = [](const OrtCustomOp* op, size_t i) { return Self(op)->spec_.outputs[i].type; };
  OrtCustomOp::GetInputCharacteristic = [](const OrtCustomOp* op, size_t i) {
    return Self(op)->spec_.inputs[i].optional ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  };
  OrtCustomOp::GetOutputCharacteristic = [](const OrtCustomOp* op, size_t i) {
    return Self(op)->spec_.outputs[i].optional ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  };
  OrtCustomOp::GetInputMemoryType = [](const OrtCustomOp* op, size_t i) { return Self(op)->spec_.inputs[i].mem_type; };
  OrtCustomOp::GetVariadicInputMinArity = [](const OrtCustomOp*) { return 1; };
  OrtCustomOp::GetVariadicInputHomogeneity = [](const OrtCustomOp*) { return 1; };
  OrtCustomOp::GetVariadicOutputMinArity = [](const OrtCustomOp*) { return 1; };
  OrtCustomOp::GetVariadicOutputHomogeneity = [](const OrtCustomOp*) { return 1; };
  OrtCustomOp::GetStartVersion = [](const OrtCustomOp*) { return 1; };
  OrtCustomOp::GetEndVersion = [](const OrtCustomOp*) { return 1; };

  // V2 entry points return a status instead of throwing across the C boundary.
  OrtCustomOp::CreateKernel = nullptr;
  OrtCustomOp::KernelCompute = nullptr;
  OrtCustomOp::CreateKernelV2 = [](const OrtCustomOp* op, const OrtApi*, const OrtKernelInfo* info,
                                   void** kernel) noexcept -> OrtStatusPtr {
    *kernel = nullptr;
    return StatusFromCall([&]() {
      std::unique_ptr<Kernel> made;
      Ort::Status status = Self(op)->factory_(info, &made);
      if (status.IsOK()) *kernel = made.release();
      return status;
    });
  };
  OrtCustomOp::KernelComputeV2 = [](void* kernel, OrtKernelContext* context) noexcept -> OrtStatusPtr {
    return StatusFromCall([&]() { return static_cast<Kernel*>(kernel)->Compute(context); });
  };
  OrtCustomOp::KernelDestroy = [](void* kernel) { delete static_cast<Kernel*>(kernel); };
}

}  // namespace tq::ort
