// The single-step calls' small outputs, recycled (step.cpp). A streaming loop makes and frees
// two or three tensors a step (`out, h = layer.step(x, h)`): a fresh tensor's allocation,
// Python object and later deallocation cost ~0.27 µs each, against ~1.3 µs for a whole call at
// H = 8 (BENCHMARKS.md, design table). So the calls keep the Python tensors they return in a
// pool and hand one out again once nothing but the pool refers to it: no Python reference (its
// refcount is the pool's 1, and it has no weak reference), no C++ one (the tensor's and its
// storage's use counts are 1: no view, no autograd graph holds it), no attribute set on it, no
// autograd metadata (requires_grad_ was never called on it), and still the exact torch.Tensor
// of the same dtype, sizes and dense layout over the whole of its own storage, made in the same
// inference mode. Nothing can tell such a tensor from a fresh one but its address. Only tensors
// of up to kPoolBytes are pooled, so the pool holds at most kPoolSlots × 64 KB. Every caller
// holds the GIL, which guards the pool.
#pragma once

#include <c10/core/InferenceMode.h>

#include <array>

#include "pycall.h"

namespace rnnlab {
namespace recycle {

constexpr int kPoolSlots = 16;
constexpr int64_t kPoolBytes = 64 << 10;

struct Pool {
  std::array<PyObject*, kPoolSlots> obj{};  // strong references (nullptr: empty)
  int next = 0;                             // the slot a fresh tensor takes next
};

inline Pool& pool() {
  static Pool p;
  return p;
}

// Whether o holds no attribute: its instance dict, if any, is empty.
inline bool no_attributes(PyObject* o) {
  PyObject* d = PyObject_GenericGetDict(o, nullptr);
  if (!d) {
    PyErr_Clear();
    return true;
  }
  const bool empty = PyDict_Check(d) && PyDict_GET_SIZE(d) == 0;
  Py_DECREF(d);
  return empty;
}

// Whether the pooled o can be handed out as a fresh [sizes] tensor of st (see the top).
inline bool idle(PyObject* o, c10::IntArrayRef sizes, at::ScalarType st) {
  const Py_ssize_t weaklist = Py_TYPE(o)->tp_weaklistoffset;
  if (Py_REFCNT(o) != 1 || Py_TYPE(o) != reinterpret_cast<PyTypeObject*>(THPVariableClass) ||
      weaklist <= 0 || *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(o) + weaklist))
    return false;
  const at::Tensor& t = THPVariable_Unpack(o);
  const auto* impl = t.unsafeGetTensorImpl();
  if (t.use_count() != 1 || t.weak_use_count() != 1 || impl->autograd_meta() || t.scalar_type() != st ||
      !t.sizes().equals(sizes) || !t.is_contiguous() || t.storage_offset() != 0 || !plain(t) ||
      t.is_inference() != c10::InferenceMode::is_enabled())
    return false;
  const auto& storage = t.storage();
  return storage.use_count() == 1 && storage.nbytes() == size_t(t.numel()) * t.element_size() &&
         no_attributes(o);
}

// A new reference to a tensor [sizes] of st for a call's output, set in *out: a pooled idle one,
// else a fresh one (pooled when small, replacing the oldest pooled one).
inline PyObject* take(c10::IntArrayRef sizes, at::ScalarType st, at::Tensor* out) {
  Pool& p = pool();
  for (PyObject* o : p.obj) {
    if (o && idle(o, sizes, st)) {
      Py_INCREF(o);
      *out = THPVariable_Unpack(o);
      return o;
    }
  }
  *out = at::detail::empty_cpu(sizes, st, false);
  PyObject* o = THPVariable_Wrap(*out);
  if (o && out->nbytes() <= size_t(kPoolBytes)) {
    Py_INCREF(o);
    PyObject* old = p.obj[p.next];
    p.obj[p.next] = o;
    p.next = (p.next + 1) % kPoolSlots;
    Py_XDECREF(old);
  }
  return o;
}

// Drops the pool's references (kernels.empty_cache).
inline void clear() {
  for (PyObject*& o : pool().obj) Py_CLEAR(o);
}

}  // namespace recycle
}  // namespace rnnlab
