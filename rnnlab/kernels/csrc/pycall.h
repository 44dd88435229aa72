// The plain Python functions of rnnlab._C called with METH_FASTCALL (step.cpp, cell_train.cpp):
// reading tensor arguments, and turning a C++ exception into a Python RuntimeError.
#pragma once

#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>

#include <exception>

namespace rnnlab {

// The tensor behind obj, or nullptr when obj is not a tensor (None included).
inline const at::Tensor* as_tensor(PyObject* obj) {
  return obj && THPVariable_Check(obj) ? &THPVariable_Unpack(obj) : nullptr;
}

// Whether t is a plain dense CPU tensor (no subclass, functorch wrapper, zero or nested tensor):
// its dispatch keys, autograd's, autocast's and ADInplaceOrView aside, are CPU's alone.
inline bool plain(const at::Tensor& t) {
  static const auto cpu = c10::DispatchKeySet(c10::DispatchKey::CPU);
  static const auto other = c10::autograd_dispatch_keyset | c10::autocast_dispatch_keyset |
                            c10::DispatchKeySet(c10::DispatchKey::ADInplaceOrView);
  return (t.key_set() - other) == cpu;
}

// Whether a call may skip the dispatcher: no Python dispatch mode (FakeTensorMode, a
// TorchDispatchMode) and no functorch transform active on this thread.
inline bool bare_dispatch() {
  const auto tls = c10::impl::tls_local_dispatch_key_set().included_;
  return !tls.has(c10::DispatchKey::Python) && !tls.has(c10::DispatchKey::FuncTorchDynamicLayerFrontMode);
}

// F(args, nargs), any C++ exception raised in Python as a RuntimeError.
template <PyObject* (*F)(PyObject* const*, Py_ssize_t)>
PyObject* guarded(PyObject* const* args, Py_ssize_t nargs) {
  try {
    return F(args, nargs);
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}

}  // namespace rnnlab
