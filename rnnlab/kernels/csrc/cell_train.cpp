// One step of a cell module with gradients: the forward saving what its backward needs, and that
// backward written out (cell_modules.py's _CellStep, an autograd.Function, calls both). A cell's
// step through torch ops records ~10 autograd nodes (addmm, chunk, each activation, the products);
// here it is one node whose forward and backward are one C call each.
//   kind: 0 tanh RNN, 1 relu RNN, 2 LSTM, 3 GRU (reset after), 4 GRU (reset before)
//   x [B,I], h [B,H], c [B,H] (LSTM), w_ih [G·H, I], w_hh [G·H, H], b_ih, b_hh [G·H] (or None)
// forward (rows.h has each cell's row math):
//   RNN   h' = f(a), a = W_ih x + b_ih + W_hh h + b_hh                     saved: h' itself
//   LSTM  [i,f,g,o] = [σ,σ,tanh,σ](a); c' = f⊙c + i⊙g; h' = o⊙tanh(c')     saved: [i|f|g|o]
//   GRU   after:  n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))              saved: [r|z|n|hn]
//         before: n = tanh(W_in x + b_in + W_hn (r⊙h) + b_hn)              saved: [r|z|n]
//         h' = (1 - z)⊙n + z⊙h
// backward: d = the pre-activation gradients [B, G·H] (rows.h), then
//   dx = d W_ih,  dh = (direct path) + d_h W_hh,  dW_ih = dᵀ x,  dW_hh = d_hᵀ h,  db = Σ_b d
// where d_h is d with the GRU's n block times r (after), or split into [dar|daz] against h and
// dan against r⊙h (before).
#include "common.h"
#include "gemm.h"
#include "pycall.h"
#include "rows.h"

namespace rnnlab {
namespace {

PyObject* wrap(const Tensor& t) { return t.defined() ? THPVariable_Wrap(t) : (Py_INCREF(Py_None), Py_None); }

PyObject* tuple_of(std::initializer_list<Tensor> ts) {
  PyObject* out = PyTuple_New(static_cast<Py_ssize_t>(ts.size()));
  if (!out) return nullptr;
  Py_ssize_t k = 0;
  for (const Tensor& t : ts) {
    PyObject* item = wrap(t);
    if (!item) {
      Py_DECREF(out);
      return nullptr;
    }
    PyTuple_SET_ITEM(out, k++, item);
  }
  return out;
}

template <typename T>
const T* ptr(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// out[B, N] = a[B, K] Wᵀ (+ bias per row); W is [N, K] with row stride ldw
template <typename T>
void affine(const T* a, int64_t B, int64_t K, const T* w, int64_t ldw, const T* bias, int64_t N, T* out) {
  gemm_routed<T>(false, true, B, N, K, a, K, w, ldw, T(0), out, N);
  if (bias)
    for (int64_t b = 0; b < B; ++b) add_row(out + b * N, bias, N);
}

template <typename T>
void forward(long kind, const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih,
             const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh, Tensor& h1, Tensor& c1,
             Tensor& saved) {
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  const T *xv = x.data_ptr<T>(), *hv = h.data_ptr<T>(), *wi = w_ih.data_ptr<T>(), *wh = w_hh.data_ptr<T>();
  const T *bi = ptr<T>(b_ih), *bh = ptr<T>(b_hh);
  T* out = h1.data_ptr<T>();
  if (kind <= 2) {  // a = W_ih x + b_ih + W_hh h + b_hh
    const int64_t G = kind == 2 ? 4 : 1;
    Tensor q = at::empty({B, G * H}, x.options());
    T* a = kind == 2 ? saved.data_ptr<T>() : out;
    affine<T>(xv, B, I, wi, I, bi, G * H, a);
    affine<T>(hv, B, H, wh, H, bh, G * H, q.data_ptr<T>());
    add_row(a, q.data_ptr<T>(), B * G * H);
    if (kind == 2) {
      for (int64_t b = 0; b < B; ++b)
        lstm_fwd_row(H, H, a + b * 4 * H, c.data_ptr<T>() + b * H, c1.data_ptr<T>() + b * H, out + b * H);
    } else {
      RNNLAB_SIMD for (int64_t j = 0; j < B * H; ++j)
        out[j] = kind == 1 ? (a[j] > 0 ? a[j] : T(0)) : std::tanh(a[j]);
    }
    return;
  }
  Tensor gi = at::empty({B, 3 * H}, x.options()), q = at::empty({B, 3 * H}, x.options());
  const std::vector<T> zero(H, T(0));  // (q holds b_hn)
  T *g = gi.data_ptr<T>(), *qv = q.data_ptr<T>(), *s = saved.data_ptr<T>();
  affine<T>(xv, B, I, wi, I, bi, 3 * H, g);
  if (kind == 3) {
    affine<T>(hv, B, H, wh, H, bh, 3 * H, qv);
    for (int64_t b = 0; b < B; ++b)
      gru_after_fwd_row(H, H, g + b * 3 * H, qv + b * 3 * H, H, static_cast<const T*>(nullptr), zero.data(),
                        hv + b * H, s + b * 4 * H, out + b * H);
    return;
  }
  // reset before: [r|z] first, then n from W_hn (r⊙h)
  Tensor rh = at::empty({B, H}, x.options()), qn = at::empty({B, H}, x.options());
  affine<T>(hv, B, H, wh, H, bh, 2 * H, qv);  // q [B, 2H]
  for (int64_t b = 0; b < B; ++b)
    gru_before_gates_row(H, g + b * 3 * H, qv + b * 2 * H, hv + b * H, s + b * 3 * H,
                         rh.data_ptr<T>() + b * H);
  affine<T>(rh.data_ptr<T>(), B, H, wh + 2 * H * H, H, bh ? bh + 2 * H : nullptr, H, qn.data_ptr<T>());
  for (int64_t b = 0; b < B; ++b)
    gru_before_out_row(H, g + b * 3 * H, qn.data_ptr<T>() + b * H, zero.data(), hv + b * H, s + b * 3 * H,
                       out + b * H);
}

// Gradients of every input: dx, dh, dc (LSTM), dW_ih, dW_hh, db_ih, db_hh (with biases)
template <typename T>
void backward(long kind, const Tensor& dh1_, const Tensor& dc1_, const Tensor& x, const Tensor& h,
              const Tensor& c, const Tensor& w_ih, const Tensor& w_hh, const Tensor& h1, const Tensor& c1,
              const Tensor& saved, std::array<Tensor, 7>& grads) {
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1), G = kind == 2 ? 4 : (kind >= 3 ? 3 : 1);
  const auto opt = x.options();
  const Tensor dh1 = dh1_.defined() ? dh1_.contiguous() : at::zeros({B, H}, opt);
  const T *xv = x.data_ptr<T>(), *hv = h.data_ptr<T>(), *wi = w_ih.data_ptr<T>(), *wh = w_hh.data_ptr<T>();
  const T* din = dh1.data_ptr<T>();
  Tensor d = at::empty({B, G * H}, opt), dx = at::empty({B, I}, opt), dh = at::empty({B, H}, opt);
  T *dv = d.data_ptr<T>(), *dhv = dh.data_ptr<T>();
  Tensor dw_ih = at::empty({G * H, I}, opt), dw_hh = at::empty({G * H, H}, opt);
  Tensor db_hh = at::empty({G * H}, opt);
  T* dwh = dw_hh.data_ptr<T>();
  const T* dhh = dv;  // the gradient W_hh sees (GRU after: its own)
  Tensor gh, dc;
  if (kind <= 1) {  // da = dh' ⊙ f'(a), from h' = f(a)
    const T* o = h1.data_ptr<T>();
    RNNLAB_SIMD for (int64_t j = 0; j < B * H; ++j)
      dv[j] = din[j] * (kind == 1 ? (o[j] > 0 ? T(1) : T(0)) : (1 - o[j] * o[j]));
  } else if (kind == 2) {
    dc = dc1_.defined() ? dc1_.clone(at::MemoryFormat::Contiguous) : at::zeros({B, H}, opt);
    for (int64_t b = 0; b < B; ++b)
      lstm_bwd_row(H, H, saved.data_ptr<T>() + b * 4 * H, c1.data_ptr<T>() + b * H, c.data_ptr<T>() + b * H,
                   din + b * H, dc.data_ptr<T>() + b * H, dv + b * 4 * H);
  } else if (kind == 3) {
    gh = at::empty({B, 3 * H}, opt);
    for (int64_t b = 0; b < B; ++b)
      gru_bwd_row<T, true>(H, H, saved.data_ptr<T>() + b * 4 * H, hv + b * H, din + b * H, dv + b * 3 * H,
                           gh.data_ptr<T>() + b * 3 * H, dhv + b * H);
    dhh = gh.data_ptr<T>();
  } else {
    const T* s = saved.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b)
      gru_bwd_row<T, false>(H, H, s + b * 3 * H, hv + b * H, din + b * H, dv + b * 3 * H,
                            static_cast<T*>(nullptr), dhv + b * H);
    Tensor q = at::empty({B, H}, opt), rh = at::empty({B, H}, opt);  // d(r⊙h) = dan W_hn
    gemm_routed<T>(false, false, B, H, H, dv + 2 * H, 3 * H, wh + 2 * H * H, H, T(0), q.data_ptr<T>(), H);
    T* rhv = rh.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b) {
      gru_before_bwd_reset_row(H, s + b * 3 * H, hv + b * H, q.data_ptr<T>() + b * H, dv + b * 3 * H,
                               dhv + b * H);
      for (int64_t j = 0; j < H; ++j) rhv[b * H + j] = s[b * 3 * H + j] * hv[b * H + j];
    }
    // dh += [dar|daz] W_h[rz]; dW_h[rz] = [dar|daz]ᵀ h; dW_hn = danᵀ (r⊙h)
    gemm_routed<T>(false, false, B, H, 2 * H, dv, 3 * H, wh, H, T(1), dhv, H);
    gemm_routed<T>(true, false, 2 * H, H, B, dv, 3 * H, hv, H, T(0), dwh, H);
    gemm_routed<T>(true, false, H, H, B, dv + 2 * H, 3 * H, rhv, H, T(0), dwh + 2 * H * H, H);
  }
  const T beta = kind == 3 ? T(1) : T(0);  // (GRU after: dh holds the direct path z⊙dh')
  if (kind != 4) {
    gemm_routed<T>(false, false, B, H, G * H, dhh, G * H, wh, H, beta, dhv, H);
    gemm_routed<T>(true, false, G * H, H, B, dhh, G * H, hv, H, T(0), dwh, H);
  }
  gemm_routed<T>(false, false, B, I, G * H, dv, G * H, wi, I, T(0), dx.data_ptr<T>(), I);
  gemm_routed<T>(true, false, G * H, I, B, dv, G * H, xv, I, T(0), dw_ih.data_ptr<T>(), I);
  Tensor db_ih = at::empty({G * H}, opt);
  col_sums(dv, G * H, B, G * H, db_ih.data_ptr<T>(), true);
  col_sums(dhh, G * H, B, G * H, db_hh.data_ptr<T>(), true);
  grads = {dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh};
}

// cell_train_fwd(kind, x, h, c|None, w_ih, w_hh, b_ih|None, b_hh|None) → (h', c'|None, saved|None)
PyObject* train_fwd(PyObject* const* args, Py_ssize_t nargs) {
  TORCH_CHECK(nargs == 8, "cell_train_fwd: expected 8 arguments, got ", nargs);
  const long kind = PyLong_AsLong(args[0]);
  TORCH_CHECK(kind >= 0 && kind <= 4, "cell_train_fwd: kind must be 0-4, got ", kind);
  std::array<Tensor, 7> t;  // x, h, c, w_ih, w_hh, b_ih, b_hh (contiguous)
  for (int k = 0; k < 7; ++k) {
    const Tensor* p = as_tensor(args[k + 1]);
    if (p) t[k] = p->contiguous();
  }
  const Tensor& x = t[0];
  const int64_t B = x.size(0), H = t[1].size(1);
  Tensor h1 = at::empty({B, H}, x.options());
  Tensor c1 = kind == 2 ? at::empty({B, H}, x.options()) : Tensor();
  const int64_t kept = kind == 2 || kind == 3 ? 4 * H : (kind == 4 ? 3 * H : 0);
  Tensor saved = kept ? at::empty({B, kept}, x.options()) : Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cell_train_fwd", [&] {
    forward<scalar_t>(kind, x, t[1], t[2], t[3], t[4], t[5], t[6], h1, c1, saved);
  });
  return tuple_of({h1, c1, saved});
}

// cell_train_bwd(kind, dh'|None, dc'|None, x, h, c|None, w_ih, w_hh, h', c'|None, saved|None)
//   → (dx, dh, dc|None, dW_ih, dW_hh, db_ih, db_hh)
PyObject* train_bwd(PyObject* const* args, Py_ssize_t nargs) {
  TORCH_CHECK(nargs == 11, "cell_train_bwd: expected 11 arguments, got ", nargs);
  const long kind = PyLong_AsLong(args[0]);
  TORCH_CHECK(kind >= 0 && kind <= 4, "cell_train_bwd: kind must be 0-4, got ", kind);
  std::array<Tensor, 10> t;  // dh', dc', x, h, c, w_ih, w_hh, h', c', saved
  for (int k = 0; k < 10; ++k) {
    const Tensor* p = as_tensor(args[k + 1]);
    if (p) t[k] = k < 2 ? *p : p->contiguous();
  }
  std::array<Tensor, 7> grads;
  AT_DISPATCH_FLOATING_TYPES(t[2].scalar_type(), "cell_train_bwd", [&] {
    backward<scalar_t>(kind, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8], t[9], grads);
  });
  return tuple_of({grads[0], grads[1], grads[2], grads[3], grads[4], grads[5], grads[6]});
}

}  // namespace
}  // namespace rnnlab

PyObject* rnnlab_cell_train_fwd(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::train_fwd>(args, nargs);
}

PyObject* rnnlab_cell_train_bwd(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  return rnnlab::guarded<rnnlab::train_bwd>(args, nargs);
}
