// ORT CUDA glue for TQQuantize / TQAttention: validate (op_contract.h), allocate, launch the plain launchers of
// plugins/kernels on the context's stream. Built only with TQ_WITH_CUDA.
//
// Stub: registers nothing until plugins/kernels provides its launchers (TQ_HAVE_CUDA_KERNELS), so a CUDA build of
// the library still loads and the CPU kernels serve every node.
#include "ort/register.h"

namespace tq::ort {

void RegisterCudaOps(Ort::CustomOpDomain& domain) { (void)domain; }

}  // namespace tq::ort
