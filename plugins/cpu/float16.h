// IEEE binary16 conversions used by the CPU kernels (no hardware dependency; the AVX2 kernels use F16C).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace tq::cpu {

inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: value = man * 2^-24, exact in float32
      float f = static_cast<float>(man) * 5.9604644775390625e-08f;
      std::memcpy(&bits, &f, 4);
      bits |= sign;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// float64 -> float16, round to nearest even directly from float64 (no double rounding through float32),
// saturating at +-65504 (docs/format.md section 5 step 3). NaN stays NaN.
inline uint16_t double_to_half_saturate(double v) {
  if (std::isnan(v)) return 0x7e00u;
  const uint16_t sign = std::signbit(v) ? 0x8000u : 0u;
  const double a = std::fabs(v);
  if (a >= 65504.0) return sign | 0x7bffu;
  if (a < 6.103515625e-05) {  // below 2^-14: subnormal grid of 2^-24 (1024 rounds up to the smallest normal)
    const double r = std::nearbyint(std::ldexp(a, 24));
    return sign | static_cast<uint16_t>(r);
  }
  int e;
  std::frexp(a, &e);  // a = f * 2^e, f in [0.5, 1): unbiased exponent e - 1
  int ue = e - 1;
  double r = std::nearbyint(std::ldexp(a, 10 - ue));  // in [1024, 2048]
  if (r >= 2048.0) {
    r = 1024.0;
    ++ue;
  }
  if (ue > 15) return sign | 0x7bffu;
  return sign | static_cast<uint16_t>(((ue + 15) << 10) | (static_cast<int>(r) - 1024));
}

// float32 -> float16, round to nearest even, overflow to inf (output tensors of float16 models).
inline uint16_t float_to_half(float f) {
  if (std::isnan(f)) return 0x7e00u;
  const double a = std::fabs(static_cast<double>(f));
  const uint16_t sign = std::signbit(f) ? 0x8000u : 0u;
  if (a >= 65520.0) return sign | 0x7c00u;
  return double_to_half_saturate(static_cast<double>(f));  // exact: float32 -> float64 adds no rounding
}

}  // namespace tq::cpu
