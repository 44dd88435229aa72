// A layer's fused forward with gradients as a C++ autograd node, called straight from Python.
//
// Through `torch.autograd.Function` (ops.py `_Eager`) a training call pays Python at both ends:
// Function.apply's argument handling and context, then in the backward the Python node, the
// unpacking of its saved tensors and the plan/result functions around the backward kernel. At
// B = 1 and small H that is a sizeable part of the call (RNN H=64 T=100: ~50 µs of ~260). Here
// the forward kernel runs and its node is built in C++ (`torch::autograd::Function`), and the
// node's backward calls the backward kernel directly.
//
//   rnn_train(x, mask, h0, w_ih, w_hh, b_ih, b_hh, relu, reverse) → hs, or None
//   gru_train(x, mask, h0, w_ih, w_hh, b_ih, b_hh, after, keep, reverse) → (hs, ws), or None
//   lstm_train(x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse) → (hs, cs, gates), or None
//
// each the forward op's arguments but the trailing batch_sizes (dense sequences only).
//
// None (the caller then takes the registered path) for anything this does not serve: a tensor
// subclass or functorch wrapper, an active dispatch or torch-function mode, packed rows. A
// double backward (create_graph=True) calls back into Python (`set_slow_backward`), which runs the
// differentiable reference BPTT on the saved tensors, as the registered formula does.
#include <ATen/PythonTorchFunctionTLS.h>
#include <torch/autograd.h>
#include <torch/csrc/utils/pybind.h>

#include "pycall.h"
#include "sequence_ops.h"

namespace rnnlab {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

PyObject* slow_backward = nullptr;  // ops._slow_backward(name, saved, attrs, needs, grads)

c10::optional<Tensor> maybe(const Tensor& t) { return t.defined() ? c10::optional<Tensor>(t) : c10::nullopt; }

// The reference backward in Python for a double backward: the op's full gradient tuple (one
// entry per argument of torch.ops.rnnlab.<name>), of which the first `count` are returned.
// `flags`: the node's saved booleans the formula reads as context attributes.
variable_list call_slow(const char* name, AutogradContext* ctx, std::initializer_list<const char*> flags,
                        const variable_list& saved, const std::vector<bool>& needs,
                        const variable_list& grads, size_t count) {
  py::gil_scoped_acquire gil;
  if (!slow_backward) throw std::runtime_error("rnnlab: no slow backward registered");
  py::dict attrs;
  for (const char* flag : flags) attrs[flag] = ctx->saved_data.at(flag).toBool();
  py::tuple s(saved.size()), n(needs.size()), g(grads.size());
  for (size_t i = 0; i < saved.size(); ++i) s[i] = saved[i].defined() ? py::cast(saved[i]) : py::none();
  for (size_t i = 0; i < needs.size(); ++i) n[i] = py::bool_(needs[i]);
  for (size_t i = 0; i < grads.size(); ++i) g[i] = grads[i].defined() ? py::cast(grads[i]) : py::none();
  py::tuple out = py::reinterpret_borrow<py::object>(slow_backward)(name, s, attrs, n, g);
  variable_list result(count);
  for (size_t i = 0; i < count && i < out.size(); ++i)
    if (!out[i].is_none()) result[i] = out[i].cast<Tensor>();
  return result;
}

// needs_input_grad of the registered formula, by argument (non-tensors false), as bits
int64_t needs_of(std::initializer_list<c10::optional<Tensor>> args) {
  int64_t out = 0, bit = 1;
  for (const auto& t : args) {
    if (t.has_value() && t->defined() && t->requires_grad()) out |= bit;
    bit <<= 1;
  }
  return out;
}

std::vector<bool> needs_from(const AutogradContext* ctx, size_t count) {
  const int64_t bits = ctx->saved_data.at("needs").toInt();
  std::vector<bool> out(count);
  for (size_t i = 0; i < count; ++i) out[i] = (bits >> i) & 1;
  return out;
}

struct RnnTrain : torch::autograd::Function<RnnTrain> {
  // hs [T, B, H]; saved: x, mask, h0, w_ih, w_hh, hs
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const c10::optional<Tensor>& mask,
                        const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                        const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh, bool relu,
                        bool reverse) {
    ctx->set_materialize_grads(false);
    Tensor hs = rnn_fwd(x, mask, h0, w_ih, w_hh, b_ih, b_hh, relu, reverse, c10::nullopt);
    ctx->saved_data["relu"] = relu;
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["needs"] = needs_of({x, mask, h0, w_ih, w_hh, b_ih, b_hh});
    ctx->save_for_backward({x, mask.value_or(Tensor()), h0, w_ih, w_hh, hs});
    return hs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const std::vector<bool> needs = needs_from(ctx, 9);
    const bool relu = ctx->saved_data["relu"].toBool(), reverse = ctx->saved_data["reverse"].toBool();
    const variable_list saved = ctx->get_saved_variables();
    const Tensor& dhs = grads[0];
    if (at::GradMode::is_enabled()) {  // create_graph: the differentiable reference
      return call_slow("rnn_fwd", ctx, {"relu", "reverse"}, saved, needs, grads, 9);
    }
    variable_list out(9);
    if (!dhs.defined()) return out;
    auto [dx, dh0, dw_ih, dw_hh, db] = rnn_bwd(dhs, saved[0], maybe(saved[1]), saved[2], saved[3],
                                               saved[4], saved[5], relu, needs[0], reverse,
                                               c10::nullopt, c10::nullopt);
    if (needs[0]) out[0] = dx;
    if (needs[2]) out[2] = dh0;
    if (needs[3]) out[3] = dw_ih;
    if (needs[4]) out[4] = dw_hh;
    if (needs[5]) out[5] = db;
    if (needs[6]) out[6] = db;
    return out;
  }
};

struct GruTrain : torch::autograd::Function<GruTrain> {
  // (hs [T, B, H], ws: the workspace the backward reads); saved: x, mask, h0, w_ih, w_hh, hs, ws
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const c10::optional<Tensor>& mask,
                               const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                               const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh,
                               bool after, bool keep, bool reverse) {
    ctx->set_materialize_grads(false);
    auto [hs, ws] = gru_fwd(x, mask, h0, w_ih, w_hh, b_ih, b_hh, after, keep, reverse, c10::nullopt);
    ctx->saved_data["after"] = after;
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["needs"] = needs_of({x, mask, h0, w_ih, w_hh, b_ih, b_hh});
    ctx->save_for_backward({x, mask.value_or(Tensor()), h0, w_ih, w_hh, hs, ws});
    return {hs, ws};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const std::vector<bool> needs = needs_from(ctx, 10);
    const bool after = ctx->saved_data["after"].toBool(), reverse = ctx->saved_data["reverse"].toBool();
    const variable_list saved = ctx->get_saved_variables();
    if (grads[1].defined() || at::GradMode::is_enabled()) {  // the reference (see rnn)
      return call_slow("gru_fwd", ctx, {"after", "reverse"}, saved, needs, grads, 10);
    }
    variable_list out(10);
    if (!grads[0].defined()) return out;
    auto [dx, dh0, dw_ih, dw_hh, db_ih, db_hh] =
        gru_bwd(grads[0], saved[0], maybe(saved[1]), saved[2], saved[3], saved[4], saved[5], saved[6],
                after, needs[0], reverse, c10::nullopt, c10::nullopt);
    const Tensor* got[7] = {&dx, nullptr, &dh0, &dw_ih, &dw_hh, &db_ih, &db_hh};
    for (int i = 0; i < 7; ++i)
      if (needs[i] && got[i]) out[i] = *got[i];
    return out;
  }
};

struct LstmTrain : torch::autograd::Function<LstmTrain> {
  // (hs [T, B, P], cs [T, B, H], gates [T, B, 4H]); saved: x, mask, h0, c0, w_ih, w_hh, w_hr, and
  // the three outputs
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const c10::optional<Tensor>& mask,
                               const Tensor& h0, const Tensor& c0, const Tensor& w_ih, const Tensor& w_hh,
                               const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh,
                               const c10::optional<Tensor>& w_hr, bool reverse) {
    ctx->set_materialize_grads(false);
    auto [hs, cs, gates] = lstm_fwd(x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, c10::nullopt);
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["needs"] = needs_of({x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr});
    ctx->save_for_backward({x, mask.value_or(Tensor()), h0, c0, w_ih, w_hh, w_hr.value_or(Tensor()), hs,
                            cs, gates});
    return {hs, cs, gates};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const std::vector<bool> needs = needs_from(ctx, 10);
    const bool reverse = ctx->saved_data["reverse"].toBool();
    const variable_list saved = ctx->get_saved_variables();
    if (grads[2].defined() || at::GradMode::is_enabled()) {  // the reference (see rnn)
      return call_slow("lstm_fwd", ctx, {"reverse"}, saved, needs, grads, 10);
    }
    variable_list out(10);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    auto [dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr] =
        lstm_bwd(maybe(grads[0]), maybe(grads[1]), saved[0], maybe(saved[1]), saved[2], saved[3], saved[4],
                 saved[5], maybe(saved[6]), saved[7], saved[8], saved[9], needs[0], reverse, c10::nullopt,
                 c10::nullopt);
    const Tensor* got[9] = {&dx, nullptr, &dh0, &dc0, &dw_ih, &dw_hh, &db, &db, &dw_hr};
    for (int i = 0; i < 9; ++i)
      if (needs[i] && got[i] && got[i]->defined() && got[i]->numel() > 0) out[i] = *got[i];
    return out;
  }
};

// Whether t (a tensor argument, or nullptr for None) is one this entry serves.
bool plain_arg(const Tensor* t) { return !t || plain(*t); }

// No dispatch mode, functorch transform or torch-function mode (which would see the op).
bool bare_call() { return bare_dispatch() && !at::impl::torch_function_mode_enabled(); }

// The optional tensor argument obj (None → nullopt); `ok` false when obj is neither.
c10::optional<Tensor> opt_arg(PyObject* obj, bool& ok) {
  if (obj == Py_None) return c10::nullopt;
  const Tensor* t = as_tensor(obj);
  ok = ok && t && plain_arg(t);
  return t ? c10::optional<Tensor>(*t) : c10::nullopt;
}

PyObject* rnn_train(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 9 || !bare_call()) Py_RETURN_NONE;
  const Tensor *x = as_tensor(args[0]), *h0 = as_tensor(args[2]);
  const Tensor *w_ih = as_tensor(args[3]), *w_hh = as_tensor(args[4]);
  bool ok = x && h0 && w_ih && w_hh && plain_arg(x) && plain_arg(h0) && plain_arg(w_ih) && plain_arg(w_hh);
  auto mask = opt_arg(args[1], ok), b_ih = opt_arg(args[5], ok), b_hh = opt_arg(args[6], ok);
  if (!ok) Py_RETURN_NONE;
  const bool relu = PyObject_IsTrue(args[7]) == 1, reverse = PyObject_IsTrue(args[8]) == 1;
  Tensor hs;
  {
    pybind11::gil_scoped_release no_gil;
    hs = RnnTrain::apply(*x, mask, *h0, *w_ih, *w_hh, b_ih, b_hh, relu, reverse);
  }
  return THPVariable_Wrap(hs);
}

// The tensors args[i] for i in `required` (each a plain tensor) and `optional` (None or one).
struct Args {
  std::vector<c10::optional<Tensor>> t;
  bool ok = true;
  Args(PyObject* const* args, std::initializer_list<int> required, std::initializer_list<int> optional,
       size_t count)
      : t(count) {
    for (int i : required) {
      const Tensor* p = as_tensor(args[i]);
      ok = ok && p && plain_arg(p);
      if (p) t[i] = *p;
    }
    for (int i : optional) t[i] = opt_arg(args[i], ok);
  }
  const Tensor& operator[](int i) const { return *t[i]; }
};

PyObject* wrap_all(const variable_list& outs) {
  PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(outs.size()));
  if (!tuple) return nullptr;
  for (size_t i = 0; i < outs.size(); ++i) {
    PyObject* item = THPVariable_Wrap(outs[i]);
    if (!item) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, static_cast<Py_ssize_t>(i), item);
  }
  return tuple;
}

// gru_train(x, mask, h0, w_ih, w_hh, b_ih, b_hh, after, keep, reverse) → (hs, ws), or None
PyObject* gru_train(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 10 || !bare_call()) Py_RETURN_NONE;
  Args a(args, {0, 2, 3, 4}, {1, 5, 6}, 7);
  if (!a.ok) Py_RETURN_NONE;
  const bool after = PyObject_IsTrue(args[7]) == 1, keep = PyObject_IsTrue(args[8]) == 1;
  const bool reverse = PyObject_IsTrue(args[9]) == 1;
  variable_list outs;
  {
    pybind11::gil_scoped_release no_gil;
    outs = GruTrain::apply(a[0], a.t[1], a[2], a[3], a[4], a.t[5], a.t[6], after, keep, reverse);
  }
  return wrap_all(outs);
}

// lstm_train(x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse) → (hs, cs, gates), or None
PyObject* lstm_train(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 10 || !bare_call()) Py_RETURN_NONE;
  Args a(args, {0, 2, 3, 4, 5}, {1, 6, 7, 8}, 9);
  if (!a.ok) Py_RETURN_NONE;
  const bool reverse = PyObject_IsTrue(args[9]) == 1;
  variable_list outs;
  {
    pybind11::gil_scoped_release no_gil;
    outs = LstmTrain::apply(a[0], a.t[1], a[2], a[3], a[4], a[5], a.t[6], a.t[7], a.t[8], reverse);
  }
  return wrap_all(outs);
}

PyObject* set_slow(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 1) Py_RETURN_NONE;
  Py_XDECREF(slow_backward);
  Py_INCREF(args[0]);
  slow_backward = args[0];
  Py_RETURN_NONE;
}

}  // namespace
}  // namespace rnnlab

PyObject* rnnlab_rnn_train(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::rnn_train>(args, nargs);
}

PyObject* rnnlab_gru_train(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::gru_train>(args, nargs);
}

PyObject* rnnlab_lstm_train(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::lstm_train>(args, nargs);
}

PyObject* rnnlab_set_slow_backward(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::set_slow>(args, nargs);
}
