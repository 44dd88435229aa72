// The workspace cache (cache.h): one per process, shared by all threads under a mutex.
#include "cache.h"

#include <algorithm>

namespace rnnlab {

WorkspaceCache& WorkspaceCache::instance() {
  static WorkspaceCache cache;
  return cache;
}

// `block`'s storage as a contiguous tensor of `shape` (a new tensor, not a view of `block`)
static Tensor shaped(const Tensor& block, at::IntArrayRef shape, const at::TensorOptions& options) {
  std::vector<int64_t> strides(shape.size());
  int64_t stride = 1;
  for (size_t d = shape.size(); d-- > 0;) strides[d] = stride, stride *= std::max<int64_t>(shape[d], 1);
  return at::empty({0}, options).set_(block.storage(), 0, shape, strides);
}

Tensor WorkspaceCache::empty(at::IntArrayRef shape, const at::TensorOptions& options) {
  int64_t count = 1;
  for (const int64_t d : shape) count *= d;
  const int64_t bytes = count * int64_t(options.dtype().itemsize());
  if (options.device().type() != c10::DeviceType::CPU || bytes < min_bytes_)
    return at::empty(shape, options);
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t now = ++handed_;
  int64_t held = 0;
  for (auto& block : blocks_) {
    const auto size = int64_t(block.data.nbytes());
    if (bytes <= limit_ && !in_use(block.data) && size >= bytes && size <= bytes + bytes / 4) {
      block.last = now;
      return shaped(block.data, shape, options);
    }
    held += size;
  }
  // no fit: the free blocks no call has taken in the last kStale hand-outs go (another shape's),
  // and then more free blocks, oldest first, until the new one fits under the limit (all of
  // them when it cannot, or when the limit was lowered under what is held)
  for (auto it = blocks_.begin(); it != blocks_.end();) {
    if (in_use(it->data) || (held + bytes <= limit_ && now - it->last <= kStale)) {
      ++it;
      continue;
    }
    held -= int64_t(it->data.nbytes());
    it = blocks_.erase(it);
  }
  auto block = at::empty({bytes}, options.dtype(at::kByte));
  if (held + bytes <= limit_) blocks_.push_back(Block{block, now});
  return shaped(block, shape, options);
}

Tensor recycled_empty(at::IntArrayRef shape, const at::TensorOptions& options) {
  return WorkspaceCache::instance().empty(shape, options);
}

void WorkspaceCache::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  blocks_.erase(std::remove_if(blocks_.begin(), blocks_.end(),
                               [](const Block& block) { return !in_use(block.data); }),
                blocks_.end());
}

void WorkspaceCache::configure(int64_t limit, int64_t min_bytes) {
  if (limit < 0 && min_bytes < 0) return;  // (a read)
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (limit >= 0) limit_ = limit;
    if (min_bytes >= 0) min_bytes_ = min_bytes;
  }
  empty_cache();  // (a block in use then goes once a later call finds it free)
}

int64_t WorkspaceCache::cached_bytes() {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t held = 0;
  for (const auto& block : blocks_) held += int64_t(block.data.nbytes());
  return held;
}

}  // namespace rnnlab
