#include "kernels/launch_errors.h"

#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <vector>

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

namespace {
struct PreparedKernel {
  int device;
  const void* kernel;
  int smem_limit;  // the largest shared-memory limit set on this kernel so far
  struct Occupancy {
    int threads, smem_bytes, blocks_per_sm;
  };
  std::vector<Occupancy> occupancy;
};
std::mutex g_prepared_mutex;
std::vector<PreparedKernel> g_prepared;  // a few dozen kernel instances at most: a linear search is enough
}  // namespace

cudaError_t prepare_launch(const void* kernel, int threads, int smem_bytes, int* blocks_per_sm) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  std::lock_guard<std::mutex> lock(g_prepared_mutex);
  PreparedKernel* entry = nullptr;
  for (PreparedKernel& k : g_prepared) {
    if (k.device == device && k.kernel == kernel) entry = &k;
  }
  if (entry == nullptr) {
    g_prepared.push_back(PreparedKernel{device, kernel, -1, {}});
    entry = &g_prepared.back();
  }
  if (smem_bytes > entry->smem_limit) {
    e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
    if (e != cudaSuccess) return e;
    entry->smem_limit = smem_bytes;
  }
  if (blocks_per_sm == nullptr) return cudaSuccess;
  for (const PreparedKernel::Occupancy& o : entry->occupancy) {
    if (o.threads == threads && o.smem_bytes == smem_bytes) {
      *blocks_per_sm = o.blocks_per_sm;
      return cudaSuccess;
    }
  }
  int per_sm = 0;
  e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, static_cast<size_t>(smem_bytes));
  if (e != cudaSuccess) return e;
  entry->occupancy.push_back({threads, smem_bytes, per_sm});
  *blocks_per_sm = per_sm;
  return cudaSuccess;
}

}  // namespace tq::kernels
