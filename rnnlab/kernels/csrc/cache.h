// Recycled workspaces: the large buffers a training forward saves for its backward (GRU
// [r|z|n|hn], LSTM gates and cell states), kept across calls once their tensors are gone.
//
// glibc serves every block above its mmap ceiling (32 MB) with a fresh mapping and unmaps it on
// free, so a workspace that size is first-touched by every call: its page faults and the zeroing
// of its pages. Here, filling 52 MB: 11.7 ms fresh, 1.0 ms reused (with transparent huge pages,
// THP_MEM_ALLOC_ENABLE=1: 5.0 ms fresh; and that setting is process-wide). The GRU B=64 H=512
// training forward (52 MB workspace, 13.1 K faults a call) took 80.2 ms against 67.3 ms without
// the workspace; the whole training step, same process, alternating order, plain → recycled:
// 228.6 → 215.0 and 229.1 → 216.7 ms (torch 325.8 / 338.4).
//
// A cached block is reused only when no tensor shares its storage (the storage's reference count
// is the cache's own), so a workspace still held (by autograd, or by a caller) is never handed
// out twice. Blocks below the cache's minimum size come from the allocator as before (glibc reuses
// those itself). The cache holds at most `limit` bytes; `empty_cache` frees the blocks not in use.
// Blocks are allocated with at::empty, so profilers and memory accounting see them once, when made.
#pragma once

#include <atomic>
#include <mutex>
#include <vector>

#include "common.h"

namespace rnnlab {

class WorkspaceCache {
 public:
  static WorkspaceCache& instance();

  // An uninitialised contiguous tensor of `shape`: a free cached block when one of 1–1.25x the
  // size is there, else a new block (kept when the limit allows)
  Tensor empty(at::IntArrayRef shape, const at::TensorOptions& options);
  void empty_cache();                              // frees the blocks no tensor uses
  void configure(int64_t limit, int64_t min_bytes);  // a negative value keeps the current one
  int64_t limit() const { return limit_; }
  int64_t min_bytes() const { return min_bytes_; }
  int64_t cached_bytes();                          // all blocks held, in use or not

 private:
  static bool in_use(const Tensor& block) { return block.storage().use_count() > 1; }
  std::mutex mutex_;
  std::vector<Tensor> blocks_;  // 1-D uint8 tensors
  // (atomic: read without the mutex by the size check that lets small buffers skip it)
  std::atomic<int64_t> limit_{int64_t(1) << 30}, min_bytes_{int64_t(32) << 20};
};

// steps_like (common.h) through the cache: [T, B, width] or packed [N, width]
inline Tensor workspace_like(const Tensor& x, const StepRows& r, int64_t width) {
  auto& cache = WorkspaceCache::instance();
  if (r.packed) return cache.empty({x.size(0), width}, x.options());
  return cache.empty({r.T, r.B, width}, x.options());
}

}  // namespace rnnlab
