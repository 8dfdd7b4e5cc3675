#include "kernels/launch_errors.h"

#include <cstdarg>
#include <cstdio>

#include "kernels/tq_kernels.h"

namespace tq::kernels {
namespace {
thread_local char g_message[512] = "";
}  // namespace

cudaError_t invalid(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(g_message, sizeof(g_message), fmt, args);
  va_end(args);
  return cudaErrorInvalidValue;
}

cudaError_t cuda_failed(cudaError_t err, const char* what) {
  std::snprintf(g_message, sizeof(g_message), "%s: %s (%s)", what, cudaGetErrorString(err), cudaGetErrorName(err));
  return err;
}

void clear_error() { g_message[0] = '\0'; }

const char* last_error_message() { return g_message; }

int multiprocessor_count() {
  static thread_local int cached_device = -1;
  static thread_local int cached_count = 0;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 132;
  if (device != cached_device) {
    int count = 0;
    if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0) {
      count = 132;
    }
    cached_device = device;
    cached_count = count;
  }
  return cached_count;
}

int compute_capability_major() {
  static thread_local int cached_device = -1;
  static thread_local int cached_major = 0;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return 0;
  if (device != cached_device) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) major = 0;
    cached_device = device;
    cached_major = major;
  }
  return cached_major;
}

}  // namespace tq::kernels
