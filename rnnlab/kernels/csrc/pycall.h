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
