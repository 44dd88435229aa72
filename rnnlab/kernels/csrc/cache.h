// Recycled workspaces: the large buffers a training forward saves for its backward (GRU
// [r|z|n|hn], LSTM gates and cell states), and a backward's weight gradients, kept across calls
// once their tensors are gone.
//
// glibc serves every block above its mmap ceiling (32 MB) with a fresh mapping and unmaps it on
// free, so a workspace that size is first-touched by every call: its page faults and the zeroing
// of its pages. Here, filling 52 MB: 11.7 ms fresh, 1.0 ms reused (with transparent huge pages,
// THP_MEM_ALLOC_ENABLE=1: 5.0 ms fresh; and that setting is process-wide). The GRU B=64 H=512
// training forward (52 MB workspace, 13.1 K faults a call) took 80.2 ms against 67.3 ms without
// the workspace; the whole training step, same process, alternating order, plain → recycled:
// 228.6 → 215.0 and 229.1 → 216.7 ms (torch 325.8 / 338.4).
//
// Below that ceiling glibc maps a block afresh too whenever it is above its moving mmap threshold,
// which depends on what the process freed before (another library's buffers included): GRU B=1
// H=512 training, torch's call between ours, made 1.2–1.5 K page faults a call (its two 3 MB
// weight gradients), LSTM B=8 H=512 0.7–2.6 K; with the weight gradients recycled from 2 MB,
// none. Same process, phases of seven calls alternating, ms, 32 MB → 2 MB minimum: GRU B=1
// H=512 11.87 → 10.75, LSTM B=8 H=512 66.2 → 62.6. A 256 KB minimum was 1–6 % slower where
// nothing faulted (RNN B=1 H=512 3.34 → 3.54: its 1 MB gradients). The input gradient and the
// backward's chunk buffers stay with the allocator: freed in the middle of a training step (a
// packed input's dx once its unpacking has read it), a cached block stays held under what the
// step allocates after it, and the packed RNN's peak rose above torch's (11.58 → 13.96 MB against
// 12.23), though it removed RNN B=64 H=512's 9.2 K faults a call (its 13 MB dx; 118 → 108 ms).
// The saved workspaces from 2 MB raise the packed LSTM's and GRU's peaks by < 1 MB (24.3 → 25.1
// and 21.7 → 22.1 MB, torch 41.6 and 36.5).
//
// A cached block is reused only when no tensor shares its storage (the storage's reference count
// is the cache's own), so a workspace still held (by autograd, or by a caller) is never handed
// out twice (a gradient kept in `.grad` keeps its block). Blocks below the cache's minimum size
// come from the allocator as before. The cache holds at most `limit` bytes, and a free block that
// no request took in the last kStale requests goes when a new block is made; `empty_cache` frees
// the blocks not in use.
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
  // A free block not handed out in this many requests goes when a request finds no fit: a
  // training step asks for 3–4 blocks per layer and direction, every step alike, while a run of
  // changing shapes would otherwise keep one block per shape up to the limit.
  static constexpr int64_t kStale = 256;
  struct Block {
    Tensor data;   // 1-D uint8
    int64_t last;  // the request that last took it (handed_)
  };
  std::mutex mutex_;
  std::vector<Block> blocks_;
  int64_t handed_ = 0;  // requests of at least min_bytes_ so far
  // (atomic: read without the mutex by the size check that lets small buffers skip it)
  std::atomic<int64_t> limit_{int64_t(1) << 30}, min_bytes_{int64_t(2) << 20};
};

// steps_like (common.h) through the cache: [T, B, width] or packed [N, width]
inline Tensor workspace_like(const Tensor& x, const StepRows& r, int64_t width) {
  auto& cache = WorkspaceCache::instance();
  if (r.packed) return cache.empty({x.size(0), width}, x.options());
  return cache.empty({r.T, r.B, width}, x.options());
}

}  // namespace rnnlab
