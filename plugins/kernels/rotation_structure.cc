// Host copy of the kernels' Sylvester-Hadamard test (tq_device.cuh, format.md 3.1), for callers that can read a
// rotation once on the host (the ORT CUDA op reads its constant R_k at kernel creation) and then promise the
// structure to the launcher (AttentionParams::k_rotation_hadamard). The test itself is common/hadamard_check.h.
#include "common/hadamard_check.h"
#include "kernels/tq_kernels.h"

namespace tq::kernels {

bool rotation_is_hadamard(const float* host_rotation, int heads, int head_dim) {
  return rotation_is_sylvester_hadamard(host_rotation, heads, head_dim);
}

}  // namespace tq::kernels
