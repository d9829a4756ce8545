// Task-queue parallelism shared by the CPU kernels.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace mgm {

// Channel-steps x states below which a parallel region is not worth starting.
constexpr int64_t kMinParallelWork = 1 << 15;

// Runs fn(k) for k in [0, ntasks) on the intra-op threads, each thread taking the next task
// from a shared counter: a thread slowed down by other processes (data loader workers, a
// busy machine) then takes fewer tasks instead of holding everyone at the barrier.
// Results never depend on which thread ran a task.
template <typename F>
void parallel_tasks(int64_t ntasks, const F& fn) {
  if (ntasks <= 0) return;
  const int64_t nthreads = std::min<int64_t>(at::get_num_threads(), ntasks);
  if (nthreads <= 1 || at::in_parallel_region()) {
    for (int64_t k = 0; k < ntasks; ++k) fn(k);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, nthreads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t k = next.fetch_add(1); k < ntasks; k = next.fetch_add(1)) fn(k);
    }
  });
}

}  // namespace mgm
