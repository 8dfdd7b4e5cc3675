// The tqexport ONNX Runtime custom-op library. Its only exported symbol is RegisterCustomOps (library.lds), which
// ORT calls from SessionOptions.register_custom_ops_library: it binds the C++ API to the loading runtime, builds
// the `tqexport` domain once (CPU ops, plus CUDA ops in a TQ_WITH_CUDA build) and adds it to the options.
#include <exception>
#include <mutex>

#include "common/tq_format.h"
#include "ort/custom_op.h"
#include "ort/register.h"

namespace {

// The domain must outlive every session that uses it, so it lives as long as the library.
Ort::CustomOpDomain& Domain() {
  static Ort::CustomOpDomain domain = [] {
    Ort::CustomOpDomain d{tq::kDomain};
#if defined(TQ_HAVE_CPU_OPS)
    tq::ort::RegisterCpuOps(d);
#endif
#if defined(TQ_HAVE_CUDA_OPS)
    tq::ort::RegisterCudaOps(d);
#endif
    return d;
  }();
  return domain;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // A runtime older than our headers: report with the oldest API, which every runtime serves.
    const OrtApi* oldest = api_base->GetApi(1);
    return oldest->CreateStatus(ORT_FAIL,
                                "tqexport: this onnxruntime is too old for libtqexport_ort (it needs the C API "
                                "version it was built with; install onnxruntime >= 1.21)");
  }
  Ort::InitApi(api);
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  return tq::ort::StatusFromCall([&]() {
    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(Domain());
    return Ort::Status{nullptr};
  });
}
