// A generic OrtCustomOp adapter: an op is an OpSpec (name, provider, typed inputs and outputs, which are
// optional) plus a kernel factory. Every entry point ORT calls is noexcept: exceptions become an OrtStatus
// at this boundary (CreateKernelV2 / KernelComputeV2), so a bad model or input never aborts the process.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ort/ort_api.h"

namespace tq::ort {

struct IoSpec {
  const char* name;
  ONNXTensorElementDataType type;  // ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED: any type, checked by the kernel
  bool optional = false;
  OrtMemType mem_type = OrtMemTypeDefault;  // inputs only: OrtMemTypeCPUInput keeps a small input on the host
};

struct OpSpec {
  std::string name;
  std::string provider;  // e.g. "CPUExecutionProvider"
  std::vector<IoSpec> inputs;
  std::vector<IoSpec> outputs;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual Ort::Status Compute(OrtKernelContext* context) = 0;
};

// Builds a kernel from the node's attributes; returns a non-OK status (naming the attribute) on bad attributes.
using KernelFactory = Ort::Status (*)(const OrtKernelInfo* info, std::unique_ptr<Kernel>* kernel);

class CustomOp : public OrtCustomOp {
 public:
  CustomOp(OpSpec spec, KernelFactory factory);
  const OpSpec& spec() const { return spec_; }

 private:
  OpSpec spec_;
  KernelFactory factory_;
};

// Runs fn, turning any exception into a status. Use around every call into ORT from a trampoline.
template <typename Fn>
OrtStatus* StatusFromCall(Fn&& fn) noexcept {
  try {
    Ort::Status status = fn();
    return status.release();
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, e.what());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, "tqexport: unknown exception");
  }
}

}  // namespace tq::ort
