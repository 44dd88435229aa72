// Registers the fused kernels as torch ops (namespace rnnlab) for the CPU. The Python side
// (rnnlab/kernels/ops.py) adds fake (meta) implementations and autograd formulas.
#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>

#include <string>

#include "cache.h"
#include "gemm.h"
#include "recycle.h"
#include "sequence_ops.h"

TORCH_LIBRARY(rnnlab, m) {
  m.def("rnn_fwd(Tensor x, Tensor? mask, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
        "Tensor? b_hh, bool relu, bool reverse=False, Tensor? batch_sizes=None) -> Tensor");
  m.def("rnn_bwd(Tensor dhs, Tensor x, Tensor? mask, Tensor h0, Tensor w_ih, Tensor w_hh, "
        "Tensor hs, bool relu, bool need_dx, bool reverse=False, Tensor? batch_sizes=None, "
        "Tensor(a!)? dx_into=None) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("lstm_fwd(Tensor x, Tensor? mask, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, "
        "Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool reverse=False, Tensor? batch_sizes=None) "
        "-> (Tensor, Tensor, Tensor)");
  m.def("lstm_bwd(Tensor? dhs, Tensor? dcs, Tensor x, Tensor? mask, Tensor h0, Tensor c0, "
        "Tensor w_ih, Tensor w_hh, Tensor? w_hr, Tensor hs, Tensor cs, Tensor gates, bool need_dx, "
        "bool reverse=False, Tensor? batch_sizes=None, Tensor(a!)? dx_into=None)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("gru_fwd(Tensor x, Tensor? mask, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
        "Tensor? b_hh, bool after, bool keep, bool reverse=False, Tensor? batch_sizes=None) "
        "-> (Tensor, Tensor)");
  m.def("gru_bwd(Tensor dhs, Tensor x, Tensor? mask, Tensor h0, Tensor w_ih, Tensor w_hh, "
        "Tensor hs, Tensor ws, bool after, bool need_dx, bool reverse=False, "
        "Tensor? batch_sizes=None, Tensor(a!)? dx_into=None) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // single steps for streaming (inference only: no autograd formula)
  m.def("rnn_step(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
        "bool relu) -> Tensor");
  m.def("lstm_step(Tensor x, Tensor h, Tensor c, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
        "Tensor? b_hh, Tensor? w_hr) -> (Tensor, Tensor)");
  m.def("gru_step(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
        "bool after) -> Tensor");
}

TORCH_LIBRARY_IMPL(rnnlab, CPU, m) {
  m.impl("rnn_fwd", &rnnlab::rnn_fwd);
  m.impl("rnn_bwd", &rnnlab::rnn_bwd);
  m.impl("lstm_fwd", &rnnlab::lstm_fwd);
  m.impl("lstm_bwd", &rnnlab::lstm_bwd);
  m.impl("gru_fwd", &rnnlab::gru_fwd);
  m.impl("gru_bwd", &rnnlab::gru_bwd);
  m.impl("rnn_step", &rnnlab::rnn_step);
  m.impl("lstm_step", &rnnlab::lstm_step);
  m.impl("gru_step", &rnnlab::gru_step);
}

// `import rnnlab._C` loads this library, which registers the ops above. The module has plain
// functions: stream_step and cell_step (step.cpp), cell_call, layer_step and calls_setup
// (module_calls.cpp), cell_train_fwd/bwd (cell_train.cpp), both
// (both.cpp), the workspace cache's two (cache.h), gemm_library and mm (gemm.h) and
// onednn_workspace_bytes(kind, T, B, I, H) (None when built without oneDNN), which the fake
// implementation of onednn_fwd uses to size its workspace.
#ifdef RNNLAB_ONEDNN
namespace rnnlab {
int64_t onednn_workspace_bytes(int64_t kind, int64_t T, int64_t B, int64_t I, int64_t H);
}
#endif

static PyObject* workspace_bytes(PyObject*, PyObject* args) {
  long long kind, T, B, I, H;
  if (!PyArg_ParseTuple(args, "LLLLL", &kind, &T, &B, &I, &H)) return nullptr;
#ifdef RNNLAB_ONEDNN
  try {
    return PyLong_FromLongLong(rnnlab::onednn_workspace_bytes(kind, T, B, I, H));
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
    return nullptr;
  }
#else
  Py_RETURN_NONE;
#endif
}

// workspace_cache(limit, min_bytes) → (limit, min_bytes, cached bytes); a negative argument
// keeps that setting. empty_cache() frees the cached blocks no tensor uses (cache.h) and drops
// the single steps' pooled outputs (recycle.h).
static PyObject* workspace_cache(PyObject*, PyObject* args) {
  long long limit, min_bytes;
  if (!PyArg_ParseTuple(args, "LL", &limit, &min_bytes)) return nullptr;
  auto& cache = rnnlab::WorkspaceCache::instance();
  cache.configure(limit, min_bytes);
  return Py_BuildValue("LLL", static_cast<long long>(cache.limit()),
                       static_cast<long long>(cache.min_bytes()),
                       static_cast<long long>(cache.cached_bytes()));
}

static PyObject* empty_cache(PyObject*, PyObject*) {
  rnnlab::WorkspaceCache::instance().empty_cache();
  rnnlab::recycle::clear();  // and the single steps' pooled outputs
  Py_RETURN_NONE;
}

// gemm_library(choice) → the library now running float GEMMs, "blas" or "onednn" (gemm.h);
// choice -1 reads, 0 sets BLAS, 1 oneDNN (refused without oneDNN: ValueError).
static PyObject* gemm_library(PyObject*, PyObject* args) {
  int choice;
  if (!PyArg_ParseTuple(args, "i", &choice)) return nullptr;
  if (choice == 1 && !rnnlab::onednn_gemm_built()) {
    PyErr_SetString(PyExc_ValueError, "gemm library 'onednn': rnnlab was built without oneDNN");
    return nullptr;
  }
  if (choice == 0 || choice == 1) rnnlab::gemm_lib_setting().store(choice);
  return PyUnicode_FromString(rnnlab::use_onednn_gemm() ? "onednn" : "blas");
}

static PyObject* cpu_is_amd(PyObject*, PyObject*) { return PyBool_FromLong(rnnlab::cpu_is_amd()); }

// mm(out, a, b): out = a @ b through the kernels' own GEMM (gemm.h mm_into: the library above for
// float, where the shape and strides suit it; else ATen), without the GIL. The bench times it
// beside torch.mm for its E_peak basis; kernels.mm checks the arguments first.
static PyObject* mm(PyObject*, PyObject* args) {
  PyObject *o, *a, *b;
  if (!PyArg_ParseTuple(args, "OOO", &o, &a, &b)) return nullptr;
  if (!THPVariable_Check(o) || !THPVariable_Check(a) || !THPVariable_Check(b)) {
    PyErr_SetString(PyExc_TypeError, "mm(out, a, b): expected three tensors");
    return nullptr;
  }
  at::Tensor out = THPVariable_Unpack(o);
  const at::Tensor A = THPVariable_Unpack(a), B = THPVariable_Unpack(b);
  std::string error;
  PyThreadState* state = PyEval_SaveThread();
  try {
    rnnlab::mm_into(out, A, B);
  } catch (const std::exception& e) {
    error = e.what();
  }
  PyEval_RestoreThread(state);
  if (!error.empty()) {
    PyErr_SetString(PyExc_RuntimeError, error.c_str());
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* rnnlab_stream_step(PyObject*, PyObject* const* args, Py_ssize_t nargs);  // step.cpp
PyObject* rnnlab_cell_step(PyObject*, PyObject* const* args, Py_ssize_t nargs);    // step.cpp
PyObject* rnnlab_cell_call(PyObject*, PyObject* const* args, Py_ssize_t nargs);      // module_calls.cpp
PyObject* rnnlab_layer_step(PyObject*, PyObject* const* args, Py_ssize_t nargs);     // module_calls.cpp
PyObject* rnnlab_calls_setup(PyObject*, PyObject* const* args, Py_ssize_t nargs);    // module_calls.cpp
PyObject* rnnlab_cell_train_fwd(PyObject*, PyObject* const* args, Py_ssize_t nargs);  // cell_train.cpp
PyObject* rnnlab_cell_train_bwd(PyObject*, PyObject* const* args, Py_ssize_t nargs);  // cell_train.cpp
PyObject* rnnlab_both(PyObject*, PyObject* args);  // both.cpp
PyObject* rnnlab_rnn_train(PyObject*, PyObject* const* args, Py_ssize_t nargs);  // layer_train.cpp
PyObject* rnnlab_gru_train(PyObject*, PyObject* const* args, Py_ssize_t nargs);  // layer_train.cpp
PyObject* rnnlab_lstm_train(PyObject*, PyObject* const* args, Py_ssize_t nargs);  // layer_train.cpp
PyObject* rnnlab_set_slow_backward(PyObject*, PyObject* const* args, Py_ssize_t nargs);  // layer_train.cpp

static PyMethodDef methods[] = {
    {"stream_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_stream_step)),
     METH_FASTCALL, "One no-grad time step of a stacked layer (see step.cpp); None: not handled."},
    {"cell_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_cell_step)),
     METH_FASTCALL, "One no-grad step of a cell module (see step.cpp); None: not handled."},
    {"cell_call", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_cell_call)),
     METH_FASTCALL, "A cell module's __call__ as one no-grad C step (module_calls.cpp); None: not handled."},
    {"layer_step", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_layer_step)),
     METH_FASTCALL, "A layer's step(input, hx) as one C call (module_calls.cpp); None: not handled."},
    {"calls_setup", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_calls_setup)),
     METH_FASTCALL, "What cell_call and layer_step read: the classes, nn.Module, the globals."},
    {"cell_train_fwd", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_cell_train_fwd)),
     METH_FASTCALL, "A cell module's step with gradients: forward, saving for backward (cell_train.cpp)."},
    {"cell_train_bwd", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_cell_train_bwd)),
     METH_FASTCALL, "The backward of cell_train_fwd's step (cell_train.cpp)."},
    {"rnn_train", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_rnn_train)),
     METH_FASTCALL, "rnn_fwd with gradients as a C++ autograd node (layer_train.cpp); None: not handled."},
    {"gru_train", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_gru_train)),
     METH_FASTCALL, "gru_fwd with gradients as a C++ autograd node (layer_train.cpp); None: not handled."},
    {"lstm_train", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_lstm_train)),
     METH_FASTCALL, "lstm_fwd with gradients as a C++ autograd node (layer_train.cpp); None: not handled."},
    {"set_slow_backward", reinterpret_cast<PyCFunction>(reinterpret_cast<void*>(rnnlab_set_slow_backward)),
     METH_FASTCALL, "The Python function the C++ nodes call for a double backward (layer_train.cpp)."},
    {"both", rnnlab_both, METH_VARARGS,
     "both(name, args0, args1): torch.ops.rnnlab.<name> on each, at once, one per core (both.cpp)."},
    {"onednn_workspace_bytes", workspace_bytes, METH_VARARGS,
     "Bytes of oneDNN's training workspace for (kind, T, B, I, H); None without oneDNN."},
    {"workspace_cache", workspace_cache, METH_VARARGS,
     "workspace_cache(limit, min_bytes) -> (limit, min_bytes, cached): set (< 0: keep) and read."},
    {"empty_cache", empty_cache, METH_NOARGS, "Free the cached workspaces no tensor uses."},
    {"cpu_is_amd", cpu_is_amd, METH_NOARGS, "Whether the CPU's vendor is AMD (cpuid)."},
    {"mm", mm, METH_VARARGS, "mm(out, a, b): out = a @ b through the kernels' GEMM (gemm.h)."},
    {"gemm_library", gemm_library, METH_VARARGS,
     "gemm_library(choice) -> 'blas' | 'onednn': set (0 BLAS, 1 oneDNN; -1 keeps) and read."},
    {nullptr, nullptr, 0, nullptr}};
static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }
