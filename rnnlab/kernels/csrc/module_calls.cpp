// The Python wrappers' fast-path checks in C, for the two single-step APIs of a streaming loop:
//  * rnnlab._C.cell_call(cell, args): RNNCell/LSTMCell/GRUCell.__call__ when nn.Module.__call__
//    would only run our forward (no hooks of the cell's or global ones, not compiled by
//    module.compile(), no forward patched in, not under an FX trace, which patches
//    nn.Module.__call__) → cell_step(kind, *args, cell._parameters) (step.cpp, which declines
//    under jit tracing);
//  * rnnlab._C.layer_step(layer, input, hx): RNN/LSTM/GRU.step when no dropout is active →
//    stream_step(kind, input, hx, layer._parameters, layer._step_names) (step.cpp).
// Both answer None for anything else (the forced reference backend, a subclass that overrides
// forward, _kind or _stream_kind, arguments cell_step or stream_step decline), and the Python
// wrapper then goes on as before. The checks are the ones cell_modules._plain_call and
// stepping.layer_step make, read from the same dicts: in Python they cost ~1.2 µs (cells) and
// ~0.5 µs (layers) a call, against ~2 µs for a whole H = 64 step (BENCHMARKS.md, design table).
// calls_setup(refs) hands over what they read; until then both answer None.
#include <algorithm>
#include <array>
#include <initializer_list>

#include "pycall.h"

PyObject* rnnlab_stream_step(PyObject*, PyObject* const* args, Py_ssize_t nargs);  // step.cpp
PyObject* rnnlab_cell_step(PyObject*, PyObject* const* args, Py_ssize_t nargs);    // step.cpp

namespace rnnlab {
namespace {

PyObject* intern(const char* s) { return PyUnicode_InternFromString(s); }

// The interned str s, made once per call site.
#define RNNLAB_KEY(s) ([] {                                   \
  static PyObject* const key = PyUnicode_InternFromString(s); \
  return key;                                                 \
}())

// What the checks read, all strong references held for the process's life (nullptr: not set).
struct Refs {
  PyObject* module_globals = nullptr;   // torch.nn.modules.module's dict (the global hooks)
  PyObject* module_type = nullptr;      // nn.Module
  PyObject* module_call = nullptr;      // nn.Module.__call__ as torch defines it
  PyObject* kernels_globals = nullptr;  // rnnlab.kernels' dict (_forced_reference)
  std::array<PyObject*, 3> forwards{};  // RNNCell, LSTMCell, GRUCell: forward
  std::array<PyObject*, 3> kinds{};     //   and _kind
  std::array<PyObject*, 3> streams{};   // RNN, LSTM, GRU: the _stream_kind property
} refs;

// d[key], borrowed (nullptr: absent)
PyObject* item(PyObject* d, PyObject* key) { return key ? PyDict_GetItemWithError(d, key) : nullptr; }

// Whether d[key] is a dict (an OrderedDict too) with something in it; true when it is absent or
// not a dict (the caller then declines).
bool nonempty(PyObject* d, PyObject* key) {
  PyObject* v = PyDict_GetItemWithError(d, key);
  return !v || !PyDict_Check(v) || PyDict_GET_SIZE(v) != 0;
}

// The index of f in fs, -1 when absent.
int index_of(const std::array<PyObject*, 3>& fs, PyObject* f) {
  for (int i = 0; i < 3; ++i)
    if (f && fs[i] == f) return i;
  return -1;
}

bool forced_reference() {
  PyObject* v = refs.kernels_globals ? item(refs.kernels_globals, RNNLAB_KEY("_forced_reference")) : nullptr;
  return !v || v != Py_False;
}

// Whether nn.Module.__call__ would call forward and nothing else.
bool plain_module(PyObject* d) {
  static PyObject* const keys[10] = {
      intern("_forward_hooks"), intern("_forward_pre_hooks"), intern("_backward_hooks"),
      intern("_backward_pre_hooks"), intern("_global_forward_hooks"), intern("_global_forward_pre_hooks"),
      intern("_global_backward_hooks"), intern("_global_backward_pre_hooks"), intern("forward"),
      intern("_compiled_call_impl")};
  static PyObject* const call = intern("__call__");
  for (int k = 0; k < 4; ++k)
    if (nonempty(d, keys[k])) return false;
  for (int k = 4; k < 8; ++k)
    if (nonempty(refs.module_globals, keys[k])) return false;
  if (PyDict_GetItemWithError(d, keys[8]) || PyDict_GetItemWithError(d, keys[9])) return false;
  return _PyType_Lookup(reinterpret_cast<PyTypeObject*>(refs.module_type), call) == refs.module_call;
}

// The instance dict of obj (new reference), nullptr when it has none.
PyObject* dict_of(PyObject* obj) {
  PyObject* d = PyObject_GenericGetDict(obj, nullptr);
  if (d && !PyDict_Check(d)) Py_CLEAR(d);
  return d;
}

// -1 when s is not a str equal to one of a / b, else 0 for a, 1 for b.
int which(PyObject* s, const char* a, const char* b) {
  if (!s || !PyUnicode_Check(s)) return -1;
  if (PyUnicode_CompareWithASCIIString(s, a) == 0) return 0;
  return PyUnicode_CompareWithASCIIString(s, b) == 0 ? 1 : -1;
}

// The step kernels' kind of the class at index f (0 RNN, 1 LSTM, 2 GRU; a cell or a layer) from
// its instance dict d: tanh 0, relu 1, LSTM 2, GRU reset after 3, before 4; -1 when unknown.
long kind_of(int f, PyObject* d) {
  if (f == 1) return 2;
  if (f == 0) return which(item(d, RNNLAB_KEY("nonlinearity")), "tanh", "relu");
  const int reset = f == 2 ? which(item(d, RNNLAB_KEY("reset")), "after", "before") : -1;
  return reset < 0 ? -1 : 3 + reset;
}

// step(kind, rest...)'s answer (step.cpp), or None (a new reference) when kind < 0 or it declined;
// nullptr with the error set
PyObject* call_step(long kind, PyObject* (*step)(PyObject*, PyObject* const*, Py_ssize_t),
                    std::initializer_list<PyObject*> rest) {
  PyObject* argv[5];
  argv[0] = kind >= 0 && rest.size() < 5 ? PyLong_FromLong(kind) : nullptr;
  PyObject* result = nullptr;
  if (argv[0]) {
    std::copy(rest.begin(), rest.end(), argv + 1);
    result = step(nullptr, argv, Py_ssize_t(rest.size() + 1));
    Py_DECREF(argv[0]);
  }
  if (!result && !PyErr_Occurred()) Py_RETURN_NONE;
  return result;
}

// cell_step's kind for this cell (the class's _kind), -1 when the C call does not serve it
long cell_kind(PyObject* cell, PyObject* d) {
  static PyObject* const forward = intern("forward");
  static PyObject* const kind = intern("_kind");
  PyTypeObject* type = Py_TYPE(cell);
  const int f = index_of(refs.forwards, _PyType_Lookup(type, forward));
  return f < 0 || index_of(refs.kinds, _PyType_Lookup(type, kind)) != f ? -1 : kind_of(f, d);
}

PyObject* cell_call(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2 || !refs.module_globals || !PyTuple_Check(args[1])) Py_RETURN_NONE;
  PyObject *cell = args[0], *call_args = args[1];
  const Py_ssize_t n = PyTuple_GET_SIZE(call_args);
  if (n < 1 || n > 2 || forced_reference()) Py_RETURN_NONE;
  PyObject* d = dict_of(cell);
  if (!d) return PyErr_Occurred() ? nullptr : (Py_INCREF(Py_None), Py_None);
  long kind = plain_module(d) ? cell_kind(cell, d) : -1;
  PyObject* params = kind >= 0 ? item(d, RNNLAB_KEY("_parameters")) : nullptr;
  if (!params || !PyDict_Check(params)) kind = -1;
  PyObject* result = call_step(kind, rnnlab_cell_step,
                               {PyTuple_GET_ITEM(call_args, 0),
                                n == 2 ? PyTuple_GET_ITEM(call_args, 1) : Py_None, params});
  Py_DECREF(d);
  return result;
}

// stream_step's kind for this layer (its class's _stream_kind), -1 when the C call does not serve it
long layer_kind(PyObject* layer, PyObject* d) {
  static PyObject* const stream = intern("_stream_kind");
  const int f = index_of(refs.streams, _PyType_Lookup(Py_TYPE(layer), stream));
  return f < 0 || item(d, RNNLAB_KEY("bidirectional")) != Py_False ? -1 : kind_of(f, d);
}

PyObject* layer_step(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 3 || refs.streams[0] == nullptr || forced_reference()) Py_RETURN_NONE;
  PyObject* d = dict_of(args[0]);
  if (!d) return PyErr_Occurred() ? nullptr : (Py_INCREF(Py_None), Py_None);
  PyObject* dropout = item(d, RNNLAB_KEY("dropout"));
  const bool dropping = !dropout || PyObject_IsTrue(dropout) != 0;
  const bool training = item(d, RNNLAB_KEY("training")) != Py_False;
  long kind = dropping && training ? -1 : layer_kind(args[0], d);
  PyObject* params = kind >= 0 ? item(d, RNNLAB_KEY("_parameters")) : nullptr;
  PyObject* names = kind >= 0 ? item(d, RNNLAB_KEY("_step_names")) : nullptr;
  if (!params || !names) kind = -1;
  PyObject* result = call_step(kind, rnnlab_stream_step, {args[1], args[2], params, names});
  Py_DECREF(d);
  return result;
}

// calls_setup(refs): refs a dict with any of "module_globals", "Module", "kernels_globals",
// "cells" (RNNCell, LSTMCell, GRUCell) and "layers" (RNN, LSTM, GRU); each given one replaces
// what was held.
PyObject* setup(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 1 || !PyDict_Check(args[0])) {
    PyErr_SetString(PyExc_TypeError, "calls_setup: expected one dict");
    return nullptr;
  }
  PyObject* given = args[0];
  auto keep = [](PyObject*& slot, PyObject* v) {
    Py_XINCREF(v);
    Py_XSETREF(slot, v);
  };
  auto attrs = [&](const char* key, const char* name, std::array<PyObject*, 3>& into) -> bool {
    PyObject* classes = PyDict_GetItemString(given, key);
    if (!classes) return true;
    if (!PyTuple_Check(classes) || PyTuple_GET_SIZE(classes) != 3) {
      PyErr_Format(PyExc_TypeError, "calls_setup: %s: expected a tuple of 3 classes", key);
      return false;
    }
    PyObject* attr = intern(name);
    for (int i = 0; i < 3; ++i) {
      PyObject* cls = PyTuple_GET_ITEM(classes, i);
      PyTypeObject* type = PyType_Check(cls) ? reinterpret_cast<PyTypeObject*>(cls) : nullptr;
      keep(into[i], type ? _PyType_Lookup(type, attr) : nullptr);
    }
    Py_XDECREF(attr);
    return true;
  };
  if (PyObject* m = item(given, RNNLAB_KEY("Module"))) {
    keep(refs.module_type, m);
    PyObject* call = intern("__call__");
    PyTypeObject* type = PyType_Check(m) ? reinterpret_cast<PyTypeObject*>(m) : nullptr;
    keep(refs.module_call, type ? _PyType_Lookup(type, call) : nullptr);
    Py_XDECREF(call);
  }
  if (PyObject* g = item(given, RNNLAB_KEY("module_globals")))
    keep(refs.module_globals, PyDict_Check(g) ? g : nullptr);
  if (PyObject* g = item(given, RNNLAB_KEY("kernels_globals")))
    keep(refs.kernels_globals, PyDict_Check(g) ? g : nullptr);
  if (!attrs("cells", "forward", refs.forwards) || !attrs("cells", "_kind", refs.kinds) ||
      !attrs("layers", "_stream_kind", refs.streams))
    return nullptr;
  if (!refs.module_type || !refs.module_call || !refs.kernels_globals) Py_CLEAR(refs.module_globals);
  Py_RETURN_NONE;
}

}  // namespace
}  // namespace rnnlab

PyObject* rnnlab_cell_call(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::cell_call>(args, nargs);
}

PyObject* rnnlab_layer_step(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::layer_step>(args, nargs);
}

PyObject* rnnlab_calls_setup(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::setup>(args, nargs);
}
