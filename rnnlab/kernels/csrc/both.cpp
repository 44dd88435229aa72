// rnnlab._C.both(name, args0, args1) → (out0, out1): the op torch.ops.rnnlab.<name> called twice
// at once, one call per core: the two directions of a bidirectional layer at inference
// (kernels.run_both). Each call runs on one thread: inside the OpenMP region the kernels' own
// splits are off (pipeline.h, split.h: at::in_parallel_region), MKL and oneDNN run serially.
// A direction of a bidirectional layer costs less on one core beside the other than on two cores
// after it (2 layers, H=256, B=32: GRU 13.3 ms vs 2 x 8.0, RNN 4.5 vs 2 x 2.8; measured as two
// one-thread processes pinned to the two cores). The arguments are every argument of the op's
// schema, as Tensors, None, bools or ints; the calls go below autograd (the caller records them:
// kernels/joint.py, or none is needed: kernels/paired.py).
#include <Python.h>
#include <omp.h>
#include <torch/csrc/autograd/python_variable.h>

#include <array>
#include <exception>
#include <vector>

#include <ATen/ThreadLocalState.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace {

using Stack = std::vector<c10::IValue>;

bool to_stack(PyObject* args, Stack& stack) {
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); ++i) {
    PyObject* a = PyTuple_GET_ITEM(args, i);
    if (THPVariable_Check(a)) {
      stack.emplace_back(THPVariable_Unpack(a));
    } else if (a == Py_None) {
      stack.emplace_back();
    } else if (PyBool_Check(a)) {
      stack.emplace_back(a == Py_True);
    } else if (PyLong_Check(a)) {
      stack.emplace_back(static_cast<int64_t>(PyLong_AsLongLong(a)));
    } else {
      return false;
    }
  }
  return true;
}

PyObject* from_stack(Stack& stack) {  // one output: the tensor; several: a tuple
  if (stack.size() == 1) return THPVariable_Wrap(stack[0].toTensor());
  PyObject* out = PyTuple_New(static_cast<Py_ssize_t>(stack.size()));
  for (size_t i = 0; i < stack.size(); ++i)
    PyTuple_SET_ITEM(out, static_cast<Py_ssize_t>(i), THPVariable_Wrap(stack[i].toTensor()));
  return out;
}

}  // namespace

PyObject* rnnlab_both(PyObject*, PyObject* args) {
  const char* name = nullptr;
  PyObject *a0 = nullptr, *a1 = nullptr;
  if (!PyArg_ParseTuple(args, "sO!O!", &name, &PyTuple_Type, &a0, &PyTuple_Type, &a1)) return nullptr;
  try {
    const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
    std::array<Stack, 2> stacks;
    if (!to_stack(a0, stacks[0]) || !to_stack(a1, stacks[1])) {
      PyErr_SetString(PyExc_TypeError, "both: expected Tensors, None, bools or ints as arguments");
      return nullptr;
    }
    std::array<std::exception_ptr, 2> errors;
    // the caller's thread-local state (grad mode, the profiler: allocations on the second thread
    // are reported too) for both threads of the region, and each below autograd
    const at::ThreadLocalState state;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel num_threads(2)
    {
      const at::ThreadLocalStateGuard caller(state);
      c10::impl::ExcludeDispatchKeyGuard below(c10::autograd_dispatch_keyset);
      const int n = omp_get_num_threads();
      for (int k = omp_get_thread_num(); k < 2; k += n) {
        try {
          op.callBoxed(stacks[k]);
        } catch (...) {
          errors[k] = std::current_exception();
        }
      }
    }
    Py_END_ALLOW_THREADS
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    PyObject* out0 = from_stack(stacks[0]);
    PyObject* out1 = from_stack(stacks[1]);
    return Py_BuildValue("(NN)", out0, out1);
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
}
