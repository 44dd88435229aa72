// The single-step ops (torch.ops.rnnlab.*_step) for streaming and generation (no gradients):
// x [B,I], state [B,H] → new state. The arithmetic is in step.h.
#include "step.h"

namespace rnnlab {

namespace {

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
