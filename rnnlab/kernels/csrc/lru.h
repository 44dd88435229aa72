// A least-recently-used map of shared values with a fixed capacity: the primitive caches of
// onednn.cpp (RNN primitives per shape) and matmul.cpp (matmul primitives per GEMM shape). Not
// locked: each caller holds its own mutex around get().
#pragma once

#include <cstddef>
#include <list>
#include <map>
#include <memory>
#include <utility>

namespace rnnlab {

template <class Key, class Value>
class Lru {
 public:
  explicit Lru(size_t capacity) : capacity_(capacity) {}

  // The value under key, made by make() (a std::shared_ptr<Value>) when absent; it becomes the
  // most recent entry, and the least recent one goes once there are more than `capacity`.
  template <class Make>
  std::shared_ptr<Value> get(const Key& key, const Make& make) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return it->second->second;
    }
    std::shared_ptr<Value> made = make();
    order_.emplace_front(key, made);
    index_[key] = order_.begin();
    if (order_.size() > capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
    return made;
  }

 private:
  size_t capacity_;
  std::list<std::pair<Key, std::shared_ptr<Value>>> order_;  // most recent first
  std::map<Key, typename decltype(order_)::iterator> index_;
};

}  // namespace rnnlab
