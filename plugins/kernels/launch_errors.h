// Host-side helpers of the launchers: the thread-local error message and parameter checks.
#pragma once

#include <cuda_runtime.h>

namespace tq::kernels {

// Records a printf-style message for last_error_message() and returns cudaErrorInvalidValue.
cudaError_t invalid(const char* fmt, ...);
// Records the message of a CUDA error raised by a launch (or a copy) and returns it.
cudaError_t cuda_failed(cudaError_t err, const char* what);
void clear_error();

// Multiprocessor count of the current device (cached per device).
int multiprocessor_count();
// Major compute capability of the current device (cached per device; 0 when it cannot be read).
int compute_capability_major();

}  // namespace tq::kernels
