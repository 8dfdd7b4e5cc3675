// One registration function per execution provider; library.cc calls each on the tqexport domain.
#pragma once

#include "ort/ort_api.h"

namespace tq::ort {

// CPU kernels (plugins/cpu). Defined in cpu_ops.cc.
void RegisterCpuOps(Ort::CustomOpDomain& domain);
// CUDA kernels (plugins/kernels). Defined in cuda_ops.cc; built with TQ_WITH_CUDA only.
void RegisterCudaOps(Ort::CustomOpDomain& domain);

}  // namespace tq::ort
