// Host copy of the kernels' Sylvester-Hadamard test (tq_device.cuh, format.md 3.1), for callers that can read a
// rotation once on the host (the ORT CUDA op reads its constant R_k at kernel creation) and then promise the
// structure to the launcher (AttentionParams::k_rotation_hadamard).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/tq_kernels.h"

namespace tq::kernels {
namespace {

uint32_t parity(uint64_t x) {
  x ^= x >> 32;
  x ^= x >> 16;
  x ^= x >> 8;
  x ^= x >> 4;
  x ^= x >> 2;
  x ^= x >> 1;
  return static_cast<uint32_t>(x & 1);
}

}  // namespace

bool rotation_is_hadamard(const float* host_rotation, int heads, int head_dim) {
  if (host_rotation == nullptr || heads <= 0 || head_dim <= 0 || (head_dim & (head_dim - 1)) != 0) return false;
  const int64_t d = head_dim;
  for (int64_t h = 0; h < heads; ++h) {
    const float* r = host_rotation + h * d * d;
    const float c = std::fabs(r[0]);
    if (!(c > 0.0f && c <= 3.4e38f)) return false;
    for (int64_t j = 0; j < d; ++j) {
      if (std::fabs(r[j]) != c) return false;
    }
    for (int64_t i = 0; i < d; ++i) {
      for (int64_t j = 0; j < d; ++j) {
        uint32_t want = 0, got = 0;
        std::memcpy(&want, r + j, 4);
        std::memcpy(&got, r + i * d + j, 4);
        want ^= parity(static_cast<uint64_t>(i & j)) << 31;
        if (got != want) return false;
      }
    }
  }
  return true;
}

}  // namespace tq::kernels
