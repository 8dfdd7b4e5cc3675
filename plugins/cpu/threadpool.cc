#include "cpu/threadpool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tq::cpu {
namespace {

class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // Returns false (and runs nothing) if the pool is busy with another call.
  bool run(int64_t num_tasks, int num_threads, const std::function<void(int64_t, int)>& fn) {
    std::unique_lock<std::mutex> busy(busy_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    const int helpers = num_threads - 1;
    grow(helpers);
    {
      std::lock_guard<std::mutex> lock(mu_);
      fn_ = &fn;
      num_tasks_ = num_tasks;
      next_.store(0);
      active_helpers_ = helpers;
      pending_ = helpers;
      ++generation_;
    }
    cv_.notify_all();
    drain(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    fn_ = nullptr;
    return true;
  }

 private:
  void grow(int helpers) {
    while (static_cast<int>(threads_.size()) < helpers) {
      const int id = static_cast<int>(threads_.size()) + 1;
      threads_.emplace_back([this, id] { loop(id); });
    }
  }

  void drain(int worker) {
    for (;;) {
      const int64_t task = next_.fetch_add(1);
      if (task >= num_tasks_) break;
      (*fn_)(task, worker);
    }
  }

  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
        if (id > active_helpers_) continue;
      }
      drain(id);
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--pending_ == 0) done_cv_.notify_one();
      }
    }
  }

  std::mutex busy_mu_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable done_cv_;
  std::vector<std::thread> threads_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t num_tasks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_helpers_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static Pool* p = new Pool();  // leaked on purpose: no join at static destruction time inside a plugin library
  return *p;
}

}  // namespace

void parallel_for(int64_t num_tasks, int num_threads, const std::function<void(int64_t, int)>& fn) {
  if (num_tasks <= 0) return;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads, num_tasks)));
  if (threads > 1 && pool().run(num_tasks, threads, fn)) return;
  for (int64_t t = 0; t < num_tasks; ++t) fn(t, 0);
}

}  // namespace tq::cpu
