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

// Readies `kernel` for a launch of `threads` threads with smem_bytes of dynamic shared memory on the current
// device: raises its shared-memory limit to smem_bytes and, when blocks_per_sm is not null, stores its occupancy
// (resident blocks per SM) there. Both are driver calls worth several microseconds of host time per launch, and
// neither answer changes within a process, so they are cached per (device, kernel) and (device, kernel, threads,
// smem_bytes): a decode step reaches the driver only to launch. (A cudaDeviceReset clears the driver's side; a
// launch that needs more than 48 KB would then fail with the driver's error rather than run wrong.)
cudaError_t prepare_launch(const void* kernel, int threads, int smem_bytes, int* blocks_per_sm);

}  // namespace tq::kernels
