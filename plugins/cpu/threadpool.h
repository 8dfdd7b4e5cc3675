// A small persistent thread pool for the CPU kernels: parallel_for over task indices.
// The calling thread takes part. If another parallel_for is already running (ORT inter-op threads calling two
// ops at once), the call runs its tasks inline on the calling thread instead of waiting.
#pragma once

#include <cstdint>
#include <functional>

namespace tq::cpu {

// Runs fn(task, worker) for task in [0, num_tasks) on up to num_threads threads; worker in [0, num_threads) is
// unique among concurrently running calls of fn (use it to index per-thread scratch). Exceptions must not escape
// fn (callers catch inside and record a status).
void parallel_for(int64_t num_tasks, int num_threads, const std::function<void(int64_t task, int worker)>& fn);

}  // namespace tq::cpu
