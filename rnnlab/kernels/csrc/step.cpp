// Single time steps for streaming and generation (no gradients): x [B,I], state [B,H] → new state.
// The arithmetic is in step.h. Three entries:
//  * the ops torch.ops.rnnlab.{rnn,lstm,gru}_step (dispatched, any strides);
//  * rnnlab._C.stream_step: a whole stacked-layer step called straight from Python, where one
//    step is a few microseconds of arithmetic and a dispatched op's own overhead (~3 µs) plus the
//    Python around it would dominate. It takes the tensors as they are, checks what it relies on,
//    and answers None whenever anything is unusual (gradients on, a dtype/device/shape mismatch,
//    a non-contiguous tensor, jit tracing, which would not see it): the caller then takes the
//    validated path, which raises the proper error.
//      stream_step(kind, x [B,I], hx, params, names) with kind 0 tanh RNN, 1 relu RNN, 2 LSTM,
//      3 GRU (reset after), 4 GRU (reset before); hx None, h [L,B,P] or (h [L,B,P], c [L,B,H]);
//      params the layer's parameter dict, names per layer (w_ih, w_hh, b_ih, b_hh, w_hr) keys
//      → (output [B,P], h_n) or (output, (h_n, c_n)); output is a copy of h_n[L-1]. The outputs
//      of both calls are tensors no one else refers to: fresh, or recycled when idle (recycle.h).
//  * rnnlab._C.cell_step: the same for one step of RNNCell / LSTMCell / GRUCell (see cell()).
#include <torch/csrc/jit/frontend/tracer.h>

#include <array>

#include "pycall.h"
#include "recycle.h"
#include "step.h"

namespace rnnlab {

namespace {

template <typename T>
const T* opt(const c10::optional<Tensor>& t) {  // biases are 1-D parameters: contiguous
  return (t.has_value() && t->defined()) ? t->data_ptr<T>() : nullptr;
}

// The step kernels index raw pointers by these shapes, so the ops check them before any work
// (a ValueError naming the argument): x [B,I], h [B,P], c [B,H] (LSTM), w_ih [G·H, I],
// w_hh [G·H, P], biases [G·H], w_hr [P, H] (LSTM projection; without it P = H).
void check_step(const char* op, const Tensor& x, const Tensor& h, const Tensor* c, const Tensor& w_ih,
                const Tensor& w_hh, const c10::optional<Tensor>& b_ih,
                const c10::optional<Tensor>& b_hh, const c10::optional<Tensor>& w_hr, int64_t gates) {
  auto fail = [&](const std::string& what) { throw std::invalid_argument(std::string(op) + ": " + what); };
  auto expect = [&](const char* arg, const Tensor& t, const std::vector<int64_t>& sizes) {
    if (t.sizes() != c10::IntArrayRef(sizes) || t.scalar_type() != x.scalar_type())
      fail(std::string(arg) + ": expected " + c10::toString(x.scalar_type()) + " " + shape_text(sizes) +
           ", got " + c10::toString(t.scalar_type()) + " " + shape_text(t.sizes()));
  };
  if (x.dim() != 2 || h.dim() != 2)
    fail("x and h: expected 2-D (batch, features), got " + std::to_string(x.dim()) + "-D and " +
         std::to_string(h.dim()) + "-D");
  const bool proj = w_hr.has_value() && w_hr->defined();
  const int64_t B = x.size(0), I = x.size(1), P = h.size(1);
  const int64_t H = c ? (c->dim() == 2 ? c->size(1) : -1) : P;
  expect("h", h, {B, P});
  if (c) expect("c", *c, {B, H});
  if (c && !proj && P != H)
    fail("h: expected " + shape_text({B, H}) + " (no w_hr), got " + shape_text(h.sizes()));
  expect("w_ih", w_ih, {gates * H, I});
  expect("w_hh", w_hh, {gates * H, P});
  if (b_ih.has_value() && b_ih->defined()) expect("b_ih", *b_ih, {gates * H});
  if (b_hh.has_value() && b_hh->defined()) expect("b_hh", *b_hh, {gates * H});
  if (proj) expect("w_hr", *w_hr, {P, H});
}

}  // namespace

Tensor rnn_step(const Tensor& x_, const Tensor& h_, const Tensor& w_ih_, const Tensor& w_hh_,
                const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh, bool relu) {
  check_step("rnn_step", x_, h_, nullptr, w_ih_, w_hh_, b_ih, b_hh, c10::nullopt, 1);
  auto x = x_.contiguous(), h = h_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  auto out = at::empty({B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnn_step", [&] {
    stepk::rnn(x.data_ptr<scalar_t>(), B, I, h.data_ptr<scalar_t>(), H, w_ih.data_ptr<scalar_t>(),
               w_hh.data_ptr<scalar_t>(), opt<scalar_t>(b_ih), opt<scalar_t>(b_hh), relu,
               out.data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<Tensor, Tensor> lstm_step(const Tensor& x_, const Tensor& h_, const Tensor& c_,
                                     const Tensor& w_ih_, const Tensor& w_hh_,
                                     const c10::optional<Tensor>& b_ih,
                                     const c10::optional<Tensor>& b_hh,
                                     const c10::optional<Tensor>& w_hr_) {
  check_step("lstm_step", x_, h_, &c_, w_ih_, w_hh_, b_ih, b_hh, w_hr_, 4);
  auto x = x_.contiguous(), h = h_.contiguous(), c = c_.contiguous();
  auto w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  auto w_hr = w_hr_.has_value() && w_hr_->defined() ? c10::optional<Tensor>(w_hr_->contiguous())
                                                    : c10::optional<Tensor>();
  const int64_t B = x.size(0), I = x.size(1), P = h.size(1), H = c.size(1);
  auto h_out = at::empty({B, P}, x.options());
  auto c_out = at::empty({B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_step", [&] {
    stepk::lstm(x.data_ptr<scalar_t>(), B, I, h.data_ptr<scalar_t>(), P, c.data_ptr<scalar_t>(), H,
                w_ih.data_ptr<scalar_t>(), w_hh.data_ptr<scalar_t>(), opt<scalar_t>(b_ih),
                opt<scalar_t>(b_hh), opt<scalar_t>(w_hr), h_out.data_ptr<scalar_t>(),
                c_out.data_ptr<scalar_t>());
  });
  return {h_out, c_out};
}

Tensor gru_step(const Tensor& x_, const Tensor& h_, const Tensor& w_ih_, const Tensor& w_hh_,
                const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh, bool after) {
  check_step("gru_step", x_, h_, nullptr, w_ih_, w_hh_, b_ih, b_hh, c10::nullopt, 3);
  auto x = x_.contiguous(), h = h_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  auto out = at::empty({B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_step", [&] {
    stepk::gru(x.data_ptr<scalar_t>(), B, I, h.data_ptr<scalar_t>(), H, w_ih.data_ptr<scalar_t>(),
               w_hh.data_ptr<scalar_t>(), opt<scalar_t>(b_ih), opt<scalar_t>(b_hh), after,
               out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace rnnlab

// --- the one-call stacked step -----------------------------------------------------------

namespace rnnlab {
namespace {

// Whether t is a contiguous plain CPU tensor of dtype st with the given sizes.
bool usable(const Tensor* t, at::ScalarType st, std::initializer_list<int64_t> sizes) {
  return t && t->scalar_type() == st && plain(*t) && t->is_contiguous() && t->sizes().equals(sizes);
}

struct LayerWeights {
  const Tensor *w_ih, *w_hh, *b_ih, *b_hh, *w_hr;
};

template <typename T>
const T* ptr(const Tensor* t) {
  return t ? t->data_ptr<T>() : nullptr;
}

template <typename T>
void run(long kind, const Tensor& x, const std::vector<LayerWeights>& w, int64_t B, int64_t P,
         int64_t H, const T* h, const T* c, T* h_n, T* c_n, T* out) {
  const T* in = x.data_ptr<T>();
  int64_t feat = x.size(1);
  for (size_t l = 0; l < w.size(); ++l) {
    const auto& p = w[l];
    T* h_l = h_n + l * B * P;
    if (kind == 2)
      stepk::lstm<T>(in, B, feat, h + l * B * P, P, c + l * B * H, H, ptr<T>(p.w_ih), ptr<T>(p.w_hh),
                     ptr<T>(p.b_ih), ptr<T>(p.b_hh), ptr<T>(p.w_hr), h_l, c_n + l * B * H);
    else if (kind >= 3)
      stepk::gru<T>(in, B, feat, h + l * B * P, H, ptr<T>(p.w_ih), ptr<T>(p.w_hh), ptr<T>(p.b_ih),
                    ptr<T>(p.b_hh), kind == 3, h_l);
    else
      stepk::rnn<T>(in, B, feat, h + l * B * P, H, ptr<T>(p.w_ih), ptr<T>(p.w_hh), ptr<T>(p.b_ih),
                    ptr<T>(p.b_hh), kind == 1, h_l);
    in = h_l;
    feat = P;
  }
  std::copy(in, in + B * P, out);
}

// (a, b), taking both references (nullptr, with the error set, when either is)
PyObject* pair(PyObject* a, PyObject* b) {
  PyObject* t = a && b ? PyTuple_New(2) : nullptr;
  if (!t) {
    Py_XDECREF(a);
    Py_XDECREF(b);
    return nullptr;
  }
  PyTuple_SET_ITEM(t, 0, a);
  PyTuple_SET_ITEM(t, 1, b);
  return t;
}

PyObject* step(PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 5 || at::GradMode::is_enabled() || !PyDict_Check(args[3]) || torch::jit::tracer::isTracing())
    Py_RETURN_NONE;
  const long kind = PyLong_AsLong(args[0]);
  const Tensor* xp = as_tensor(args[1]);
  PyObject* names = args[4];
  if (kind < 0 || kind > 4 || !xp || !PyList_Check(names) || PyList_GET_SIZE(names) < 1)
    Py_RETURN_NONE;
  const auto st = xp->scalar_type();
  if (xp->dim() != 2 || xp->size(0) < 1 || (st != at::kFloat && st != at::kDouble) || !plain(*xp) ||
      !xp->is_contiguous() || !bare_dispatch())
    Py_RETURN_NONE;
  const bool lstm = kind == 2;
  const int64_t L = PyList_GET_SIZE(names), B = xp->size(0), G = lstm ? 4 : (kind >= 3 ? 3 : 1);
  std::vector<LayerWeights> w(L);
  int64_t feat = xp->size(1), P = 0, H = 0;
  for (int64_t l = 0; l < L; ++l) {
    PyObject* keys = PyList_GET_ITEM(names, l);
    if (!PyTuple_Check(keys) || PyTuple_GET_SIZE(keys) != 5) Py_RETURN_NONE;
    std::array<const Tensor*, 5> t;
    for (int k = 0; k < 5; ++k) t[k] = as_tensor(PyDict_GetItem(args[3], PyTuple_GET_ITEM(keys, k)));
    if (!t[0] || t[0]->dim() != 2) Py_RETURN_NONE;
    H = t[0]->size(0) / G;
    P = t[4] ? t[4]->size(0) : H;
    if (!usable(t[0], st, {G * H, feat}) || !usable(t[1], st, {G * H, P}) ||
        (t[2] && !usable(t[2], st, {G * H})) || (t[3] && !usable(t[3], st, {G * H})) ||
        (!t[2] != !t[3]) || (t[4] && !usable(t[4], st, {P, H})))
      Py_RETURN_NONE;
    w[l] = {t[0], t[1], t[2], t[3], t[4]};
    feat = P;
  }
  // the state: zeros when hx is None
  Tensor h, c;
  PyObject* hx = args[2];
  auto opt = xp->options();
  if (hx == Py_None) {
    h = at::zeros({L, B, P}, opt);
    if (lstm) c = at::zeros({L, B, H}, opt);
  } else if (lstm) {
    if (!PyTuple_Check(hx) || PyTuple_GET_SIZE(hx) != 2) Py_RETURN_NONE;
    const Tensor *hp = as_tensor(PyTuple_GET_ITEM(hx, 0)), *cp = as_tensor(PyTuple_GET_ITEM(hx, 1));
    if (!usable(hp, st, {L, B, P}) || !usable(cp, st, {L, B, H})) Py_RETURN_NONE;
    h = *hp;
    c = *cp;
  } else {
    const Tensor* hp = as_tensor(hx);
    if (!usable(hp, st, {L, B, P})) Py_RETURN_NONE;
    h = *hp;
  }
  Tensor h_n, c_n, out;  // the outputs, recycled when idle (recycle.h)
  PyObject* h_obj = recycle::take({L, B, P}, st, &h_n);
  PyObject* c_obj = lstm && h_obj ? recycle::take({L, B, H}, st, &c_n) : nullptr;
  PyObject* out_obj = h_obj && (c_obj || !lstm) ? recycle::take({B, P}, st, &out) : nullptr;
  if (!out_obj) {
    Py_XDECREF(h_obj);
    Py_XDECREF(c_obj);
    return nullptr;
  }
  AT_DISPATCH_FLOATING_TYPES(st, "stream_step", [&] {
    run<scalar_t>(kind, *xp, w, B, P, H, h.data_ptr<scalar_t>(), lstm ? c.data_ptr<scalar_t>() : nullptr,
                  h_n.data_ptr<scalar_t>(), lstm ? c_n.data_ptr<scalar_t>() : nullptr,
                  out.data_ptr<scalar_t>());
  });
  return pair(out_obj, lstm ? pair(h_obj, c_obj) : h_obj);
}

// A cell module's step: kind as stream_step's; params the module's _parameters (weight_ih [G·H, I],
// weight_hh [G·H, H], bias_ih, bias_hh [G·H] or both absent); x [B,I] or unbatched [I]; hx None
// (zeros), h, or (h, c) for the LSTM, each [B,H] (unbatched [H]) → h' (LSTM (h', c')), new tensors
// shaped like the state. With gradients enabled it answers only when nothing requires one.
PyObject* cell(PyObject* const* args, Py_ssize_t nargs) {
  static PyObject* const keys[4] = {PyUnicode_InternFromString("weight_ih"),
                                    PyUnicode_InternFromString("weight_hh"),
                                    PyUnicode_InternFromString("bias_ih"),
                                    PyUnicode_InternFromString("bias_hh")};
  if (nargs != 4 || !PyLong_CheckExact(args[0]) || !PyDict_Check(args[3]) || torch::jit::tracer::isTracing())
    Py_RETURN_NONE;
  const long kind = PyLong_AsLong(args[0]);
  const Tensor* xp = as_tensor(args[1]);
  if (kind < 0 || kind > 4 || !xp || !keys[3]) Py_RETURN_NONE;
  const auto st = xp->scalar_type();
  const int64_t rank = xp->dim();
  if ((rank != 1 && rank != 2) || (st != at::kFloat && st != at::kDouble) || !plain(*xp) ||
      !xp->is_contiguous() || !bare_dispatch())
    Py_RETURN_NONE;
  const bool lstm = kind == 2;
  const int64_t G = lstm ? 4 : (kind >= 3 ? 3 : 1), B = rank == 2 ? xp->size(0) : 1;
  const int64_t I = xp->size(rank - 1);
  std::array<const Tensor*, 4> w;
  for (int k = 0; k < 4; ++k) w[k] = as_tensor(PyDict_GetItem(args[3], keys[k]));
  if (!w[0] || w[0]->dim() != 2 || B < 1) Py_RETURN_NONE;
  const int64_t H = w[0]->size(0) / G;
  if (!usable(w[0], st, {G * H, I}) || !usable(w[1], st, {G * H, H}) || (!w[2] != !w[3]) ||
      (w[2] && (!usable(w[2], st, {G * H}) || !usable(w[3], st, {G * H}))))
    Py_RETURN_NONE;
  // the state, [B,H] (unbatched [H]); zeros when hx is None
  auto state = [&](PyObject* obj) -> const Tensor* {
    const Tensor* t = as_tensor(obj);
    return (rank == 2 ? usable(t, st, {B, H}) : usable(t, st, {H})) ? t : nullptr;
  };
  const Tensor *hp = nullptr, *cp = nullptr;
  PyObject* hx = args[2];
  Tensor zero;
  if (hx == Py_None) {
    zero = at::zeros({B, H}, xp->options());
    hp = cp = &zero;
  } else if (lstm) {
    if (!PyTuple_Check(hx) || PyTuple_GET_SIZE(hx) != 2) Py_RETURN_NONE;
    hp = state(PyTuple_GET_ITEM(hx, 0));
    cp = state(PyTuple_GET_ITEM(hx, 1));
    if (!hp || !cp) Py_RETURN_NONE;
  } else if (!(hp = state(hx))) {
    Py_RETURN_NONE;
  }
  if (at::GradMode::is_enabled()) {
    for (const Tensor* t : {xp, hp, cp, w[0], w[1], w[2], w[3]})
      if (t && t->requires_grad()) Py_RETURN_NONE;
  }
  const auto sizes = rank == 2 ? std::vector<int64_t>{B, H} : std::vector<int64_t>{H};
  Tensor h_n, c_n;  // the outputs, recycled when idle (recycle.h)
  PyObject* h_obj = recycle::take(sizes, st, &h_n);
  PyObject* c_obj = lstm && h_obj ? recycle::take(sizes, st, &c_n) : nullptr;
  if (!h_obj || (lstm && !c_obj)) {
    Py_XDECREF(h_obj);
    return nullptr;
  }
  AT_DISPATCH_FLOATING_TYPES(st, "cell_step", [&] {
    const scalar_t *x = xp->data_ptr<scalar_t>(), *h = hp->data_ptr<scalar_t>();
    const scalar_t *w_ih = ptr<scalar_t>(w[0]), *w_hh = ptr<scalar_t>(w[1]);
    const scalar_t *b_ih = ptr<scalar_t>(w[2]), *b_hh = ptr<scalar_t>(w[3]);
    scalar_t* out = h_n.data_ptr<scalar_t>();
    if (lstm)
      stepk::lstm<scalar_t>(x, B, I, h, H, cp->data_ptr<scalar_t>(), H, w_ih, w_hh, b_ih, b_hh, nullptr,
                            out, c_n.data_ptr<scalar_t>());
    else if (kind >= 3)
      stepk::gru<scalar_t>(x, B, I, h, H, w_ih, w_hh, b_ih, b_hh, kind == 3, out);
    else
      stepk::rnn<scalar_t>(x, B, I, h, H, w_ih, w_hh, b_ih, b_hh, kind == 1, out);
  });
  return lstm ? pair(h_obj, c_obj) : h_obj;
}

}  // namespace
}  // namespace rnnlab

PyObject* rnnlab_cell_step(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::cell>(args, nargs);
}

PyObject* rnnlab_stream_step(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::step>(args, nargs);
}
