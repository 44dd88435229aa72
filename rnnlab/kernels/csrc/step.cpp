// One time step of each cell, for streaming and generation (no gradients): x [B,I], state [B,H].
// Same math as the sequence kernels (rows.h); the affine maps write into a reused per-thread
// scratch, so a step allocates only its outputs.
#include "packed.h"

namespace rnnlab {

namespace {

// A per-thread scratch of n elements of T (grow-only).
template <typename T>
T* scratch(int64_t n) {
  static thread_local std::vector<double> buf;
  const size_t need = size_t(n * sizeof(T) / sizeof(double) + 1);
  if (buf.size() < need) buf.resize(need);
  return reinterpret_cast<T*>(buf.data());
}

// out[B, N] = a[B, K] @ W^T + bias (W is [N, K] row-major; bias may be null)
template <typename T>
void affine(const T* a, int64_t B, int64_t K, const T* w, const T* bias, int64_t N, T* out) {
  for (int64_t b = 0; b < B; ++b) {
    if (bias) std::copy(bias, bias + N, out + b * N);
    else std::fill(out + b * N, out + (b + 1) * N, T(0));
  }
  // a single step reads its weights cold: from 64K weights BLAS's gemv (threaded, prefetching)
  // measured faster than gemv_step, which wins inside the sequence loop where W stays cached
  if (B == 1 && N * K >= 65536) gemv<T>(true, N, K, w, K, a, T(1), out);
  else if (B == 1) gemv_step<T>(w, K, true, N, K, a, T(1), out);
  else gemm<T>(false, true, B, N, K, T(1), a, K, w, K, T(1), out, N);
}

template <typename T>
const T* opt(const c10::optional<Tensor>& t) {  // biases are 1-D parameters: contiguous
  return (t.has_value() && t->defined()) ? t->data_ptr<T>() : nullptr;
}

}  // namespace

Tensor rnn_step(const Tensor& x_, const Tensor& h_, const Tensor& w_ih_, const Tensor& w_hh_,
                const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh, bool relu) {
  auto x = x_.contiguous(), h = h_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  auto out = at::empty({B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnn_step", [&] {
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* q = scratch<scalar_t>(B * H);
    affine(x.data_ptr<scalar_t>(), B, I, w_ih.data_ptr<scalar_t>(), opt<scalar_t>(b_ih), H, o);
    affine(h.data_ptr<scalar_t>(), B, H, w_hh.data_ptr<scalar_t>(), opt<scalar_t>(b_hh), H, q);
    RNNLAB_SIMD for (int64_t j = 0; j < B * H; ++j) {
      const scalar_t a = o[j] + q[j];
      o[j] = relu ? (a > 0 ? a : scalar_t(0)) : std::tanh(a);
    }
  });
  return out;
}

std::tuple<Tensor, Tensor> lstm_step(const Tensor& x_, const Tensor& h_, const Tensor& c_,
                                     const Tensor& w_ih_, const Tensor& w_hh_,
                                     const c10::optional<Tensor>& b_ih,
                                     const c10::optional<Tensor>& b_hh,
                                     const c10::optional<Tensor>& w_hr_) {
  auto x = x_.contiguous(), h = h_.contiguous(), c = c_.contiguous();
  auto w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  auto w_hr = w_hr_.has_value() && w_hr_->defined() ? c10::optional<Tensor>(w_hr_->contiguous())
                                                    : c10::optional<Tensor>();
  const int64_t B = x.size(0), I = x.size(1), P = h.size(1), H = c.size(1);
  const bool proj = w_hr.has_value() && w_hr->defined();
  auto h_out = at::empty({B, P}, x.options());
  auto c_out = at::empty({B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_step", [&] {
    scalar_t* g = scratch<scalar_t>(2 * B * 4 * H + B * H);
    scalar_t* q = g + B * 4 * H;
    scalar_t* r = q + B * 4 * H;
    affine(x.data_ptr<scalar_t>(), B, I, w_ih.data_ptr<scalar_t>(), opt<scalar_t>(b_ih), 4 * H, g);
    affine(h.data_ptr<scalar_t>(), B, P, w_hh.data_ptr<scalar_t>(), opt<scalar_t>(b_hh), 4 * H, q);
    RNNLAB_SIMD for (int64_t j = 0; j < B * 4 * H; ++j) g[j] += q[j];
    scalar_t* rout = proj ? r : h_out.data_ptr<scalar_t>();
    for (int64_t b = 0; b < B; ++b)
      lstm_fwd_row(H, g + b * 4 * H, c.data_ptr<scalar_t>() + b * H,
                   c_out.data_ptr<scalar_t>() + b * H, rout + b * H);
    if (proj)
      affine<scalar_t>(r, B, H, w_hr->data_ptr<scalar_t>(), nullptr, P, h_out.data_ptr<scalar_t>());
  });
  return {h_out, c_out};
}

Tensor gru_step(const Tensor& x_, const Tensor& h_, const Tensor& w_ih_, const Tensor& w_hh_,
                const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh, bool after) {
  auto x = x_.contiguous(), h = h_.contiguous(), w_ih = w_ih_.contiguous(), w_hh = w_hh_.contiguous();
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  auto out = at::empty({B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_step", [&] {
    const scalar_t* hv = h.data_ptr<scalar_t>();
    const scalar_t* w = w_hh.data_ptr<scalar_t>();
    const scalar_t* bh = opt<scalar_t>(b_hh);
    scalar_t* gi = scratch<scalar_t>(2 * B * 3 * H + 2 * B * H);
    scalar_t* q = gi + B * 3 * H;
    scalar_t* s = q + B * 3 * H;  // [r|z|n(|hn)] of one row at a time, then r ⊙ h
    scalar_t* rh = s + B * H;
    affine(x.data_ptr<scalar_t>(), B, I, w_ih.data_ptr<scalar_t>(), opt<scalar_t>(b_ih), 3 * H, gi);
    scalar_t* o = out.data_ptr<scalar_t>();
    std::vector<scalar_t> row(4 * H), no_bias(H, scalar_t(0));  // q already holds b_hh
    if (after) {
      affine(hv, B, H, w, bh, 3 * H, q);
      for (int64_t b = 0; b < B; ++b)
        gru_after_fwd_row(H, gi + b * 3 * H, q + b * 3 * H, no_bias.data(), hv + b * H, row.data(),
                          o + b * H);
    } else {
      affine(hv, B, H, w, bh, 2 * H, q);  // [r|z] rows, q is [B, 2H] here
      std::vector<scalar_t> qz(3 * H);
      for (int64_t b = 0; b < B; ++b) {
        std::copy(q + b * 2 * H, q + (b + 1) * 2 * H, qz.data());
        gru_before_gates_row(H, gi + b * 3 * H, qz.data(), hv + b * H, row.data(), rh);
        affine(rh, 1, H, w + 2 * H * H, bh ? bh + 2 * H : nullptr, H, s);
        gru_before_out_row(H, gi + b * 3 * H, s, no_bias.data(), hv + b * H, row.data(), o + b * H);
      }
    }
  });
  return out;
}

}  // namespace rnnlab
