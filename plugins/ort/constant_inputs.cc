// Constant inputs as ORT shows them at kernel creation (constant_inputs.h).
#include "ort/constant_inputs.h"

#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(TQ_HAVE_CUDA_OPS)
#include <cuda_runtime.h>
#endif

#include "common/hadamard_check.h"

namespace tq::ort {

bool ConstantInput(const OrtKernelInfo* info, size_t index) {
  int is_constant = 0;
  const OrtValue* value = nullptr;
  if (OrtStatus* s = Ort::GetApi().KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value); s) {
    Ort::GetApi().ReleaseStatus(s);
    return false;
  }
  return is_constant != 0 && value != nullptr;
}

bool ConstantHadamardRotation(const OrtKernelInfo* info, size_t index, const char** why) {
  const OrtApi& api = Ort::GetApi();
  int is_constant = 0;
  const OrtValue* value = nullptr;
  if (OrtStatus* s = api.KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value); s != nullptr) {
    api.ReleaseStatus(s);
    *why = "its constant value could not be read";
    return false;
  }
  if (is_constant == 0 || value == nullptr) {
    *why = "it is not a constant initializer";
    return false;
  }
  const Ort::ConstValue r{value};
  const auto type_shape = r.GetTensorTypeAndShapeInfo();
  const std::vector<int64_t> shape = type_shape.GetShape();
  if (type_shape.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || shape.size() != 3 || shape[0] <= 0 ||
      shape[1] <= 0 || shape[1] != shape[2] || shape[1] > 4096 || shape[0] > 4096) {
    *why = "it is not float32 [heads, D, D]";
    return false;
  }
  std::vector<float> host(type_shape.GetElementCount());
  const float* data = r.GetTensorData<float>();
  if (r.GetTensorMemoryInfo().GetDeviceType() == OrtMemoryInfoDeviceType_CPU) {
    std::copy(data, data + host.size(), host.begin());
  } else {
#if defined(TQ_HAVE_CUDA_OPS)
    if (cudaMemcpy(host.data(), data, host.size() * sizeof(float), cudaMemcpyDefault) != cudaSuccess) {
      (void)cudaGetLastError();  // not sticky: clear it so later launches do not report it
      *why = "its copy to the host failed";
      return false;
    }
#else
    *why = "it is not in host memory";
    return false;
#endif
  }
  if (!rotation_is_sylvester_hadamard(host.data(), static_cast<int>(shape[0]), static_cast<int>(shape[1]))) {
    *why = "it is not Sylvester-Hadamard-structured";
    return false;
  }
  *why = "";
  return true;
}

}  // namespace tq::ort
