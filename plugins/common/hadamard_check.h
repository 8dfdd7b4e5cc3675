// Host test of a rotation's Sylvester-Hadamard structure (docs/format.md 3.1 and 8.3), shared by the kernels'
// rotation_is_hadamard (plugins/kernels/rotation_structure.cc) and the ORT ops' check of constant rotations and
// of the constant-Hadamard promise attributes. Header-only, host only.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace tq {

// Every head h of the float32 [heads, D, D] block is c * H_D * diag(s) bit for bit: D a power of two,
// c = |R[h][0][0]| finite and > 0, |R[h][0][j]| == c, and R[h][i][j] == (-1)^popcount(i & j) * R[h][0][j] as
// float32 bit patterns (the kernels' tq_device.cuh test).
inline bool rotation_is_sylvester_hadamard(const float* rotation, int heads, int head_dim) {
  if (rotation == nullptr || heads <= 0 || head_dim <= 0 || (head_dim & (head_dim - 1)) != 0) return false;
  const int64_t d = head_dim;
  for (int64_t h = 0; h < heads; ++h) {
    const float* r = rotation + h * d * d;
    const float c = std::fabs(r[0]);
    if (!(c > 0.0f && c <= 3.4e38f)) return false;
    for (int64_t j = 0; j < d; ++j) {
      if (std::fabs(r[j]) != c) return false;
    }
    for (int64_t i = 0; i < d; ++i) {
      for (int64_t j = 0; j < d; ++j) {
        uint64_t x = static_cast<uint64_t>(i & j);
        x ^= x >> 32;
        x ^= x >> 16;
        x ^= x >> 8;
        x ^= x >> 4;
        x ^= x >> 2;
        x ^= x >> 1;
        uint32_t want = 0, got = 0;
        std::memcpy(&want, r + j, 4);
        std::memcpy(&got, r + i * d + j, 4);
        want ^= static_cast<uint32_t>(x & 1) << 31;
        if (got != want) return false;
      }
    }
  }
  return true;
}

}  // namespace tq
