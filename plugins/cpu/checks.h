// Shape / dtype checks shared by the CPU ops; every failure names the op, the input, what was seen and allowed.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "cpu/tq_cpu.h"

namespace tq::cpu {

std::string shape_str(const std::vector<int64_t>& shape);

// expected: one entry per dim, -1 = any. Fails on rank, dims, dtype or a null pointer with elements.
Status check_tensor(const char* op, const char* name, const TensorRef& t, std::initializer_list<DType> dtypes,
                    const std::vector<int64_t>& expected);
Status check_output(const char* op, const char* name, const MutableTensorRef& t, DType dtype,
                    const std::vector<int64_t>& expected);
Status check_codec(const char* op, const char* prefix, const CodecConfig& cfg);
Status check_cache_attrs(const char* op, const CacheAttrs& attrs, int format_version);

// [a, a + na) and [b, b + nb) overlap without being the same range.
bool partially_overlaps(const void* a, int64_t na, const void* b, int64_t nb);

inline int64_t dtype_size(DType t) {
  switch (t) {
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kInt64: return 8;
    default: return 1;
  }
}

}  // namespace tq::cpu
