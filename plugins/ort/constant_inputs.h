// What ORT shows a custom op about its constant inputs when the session creates the kernel (both providers).
#pragma once

#include <cstddef>

#include "ort/ort_api.h"

namespace tq::ort {

// Whether input `index` of the node is a constant initializer (ORT uploads it once and no kernel writes it).
bool ConstantInput(const OrtKernelInfo* info, size_t index);

// Whether input `index` of the node is a constant initializer [heads, D, D] float32 whose every head is
// Sylvester-Hadamard-structured (common/hadamard_check.h on a host copy, read once at kernel creation; ORT keeps
// initializers unchanged for the session's life). Anything else (not constant, not float32, not readable) is
// false, with the reason in *why.
bool ConstantHadamardRotation(const OrtKernelInfo* info, size_t index, const char** why);

}  // namespace tq::ort
