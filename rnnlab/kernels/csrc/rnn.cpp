// Elman RNN, whole sequence: forward and backpropagation through time.
//   forward:  a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh;  h_t = f(a_t)   (f = tanh | relu)
//   backward: da_t = dh ⊙ f'(a_t);  dh_{t-1} = da_t @ W_hh;  dW_ih = Σ da^T x, dW_hh = Σ da^T h_{t-1}
// reverse = true runs the recurrence from t = T-1 down to 0 (the backward direction of a
// bidirectional layer; h_{t+1} takes the place of h_{t-1}) on the input as it is: no reversed
// copies. With a mask, state frozen on padded steps is the same as reversing each sequence within
// its own length: a sequence's reverse pass starts from h0 at its last valid step.
#include "pipeline.h"

namespace rnnlab {

// x [T,B,I], h0 [B,H], w_ih [H,I], w_hh [H,H] → hs [T,B,H]
Tensor rnn_fwd(const Tensor& x, const c10::optional<Tensor>& mask, const Tensor& h0,
               const Tensor& w_ih, const Tensor& w_hh, const c10::optional<Tensor>& b_ih,
               const c10::optional<Tensor>& b_hh, bool relu, bool reverse) {
  const bool has_bias = b_ih.has_value() && b_ih->defined();
  const Tensor bias = has_bias ? (*b_ih + *b_hh).contiguous() : Tensor();
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1), K = chunk_steps(T, B, H);
  // the input projection of the next chunk overlaps this chunk's recurrence (pipeline.h)
  const bool overlap = overlap_chunks((T + K - 1) / K, B, B * H * H, false);
  auto hs = at::empty({T, B, H}, x.options());  // a_t input part, overwritten with h_t
  auto whh = w_hh.contiguous();
  auto h0c = h0.contiguous();
  const StepOrder order{T, reverse};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnn_fwd", [&] {
    scalar_t* out = hs.data_ptr<scalar_t>();
    const scalar_t* w = whh.data_ptr<scalar_t>();
    const bool* m = mask_ptr(mask);
    const scalar_t* h = h0c.data_ptr<scalar_t>();
    const scalar_t* bv = has_bias ? bias.data_ptr<scalar_t>() : nullptr;
    const StepGemm<scalar_t> step(w, H, true, B, H, H);  // a += h_{t-1} W_hh^T
    const auto active = active_rows(m, T, B);
    auto recurrence = [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t t = order.at(s);
        scalar_t* a = out + t * B * H;
        step(h, H, 1, a, H, active[t]);
        for_range(B, H, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            scalar_t* ab = a + b * H;
            const scalar_t* hb = h + b * H;
            const bool keep = m && !m[t * B + b];
            if (keep) {
              for (int64_t j = 0; j < H; ++j) ab[j] = hb[j];  // padded step: state frozen
              continue;
            }
            if (bv) add_row(ab, bv, H);
            if (relu) {
            RNNLAB_SIMD
              for (int64_t j = 0; j < H; ++j) ab[j] = ab[j] > 0 ? ab[j] : scalar_t(0);
            } else {
            RNNLAB_SIMD
              for (int64_t j = 0; j < H; ++j) ab[j] = std::tanh(ab[j]);
            }
          }
        });
        h = a;
      }
    };
    run_projected(order, K, overlap, hs, x, w_ih, recurrence);
  });
  return hs;
}

// Returns (dx, dh0, dw_ih, dw_hh, db); dx is empty when need_dx is false.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_bwd(
    const Tensor& dhs, const Tensor& x, const c10::optional<Tensor>& mask, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& hs, bool relu, bool need_dx, bool reverse) {
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1), K = chunk_steps(T, B, H);
  // weight gradients of one chunk overlap the next chunk's recurrence (pipeline.h)
  const bool overlap = overlap_chunks((T + K - 1) / K, B, B * H * H, true);
  const int64_t slots = chunk_slots((T + K - 1) / K, overlap);
  // each slot's chunk of pre-activation gradients: where the upstream gradient's chunk is a
  // private copy (it was not contiguous, e.g. the expanded one of out.sum()), da overwrites that
  // copy in place, else a buffer of the slot's own (allocated on first use)
  std::vector<Tensor> da(slots), da_buf(slots);
  auto dh = at::zeros({B, H}, x.options());
  auto dx = need_dx ? at::empty({T, B, x.size(2)}, x.options()) : at::empty({0}, x.options());
  auto dw_ih = at::zeros_like(w_ih), dw_hh = at::zeros_like(w_hh);
  auto db = at::zeros({H}, x.options());
  auto hs_c = hs.contiguous();
  auto whh = w_hh.contiguous();
  const StepOrder order{T, reverse};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnn_bwd", [&] {
    const scalar_t* hv = hs_c.data_ptr<scalar_t>();
    scalar_t* dhv = dh.data_ptr<scalar_t>();
    const bool* m = mask_ptr(mask);
    const StepGemm<scalar_t> step(whh.data_ptr<scalar_t>(), H, false, B, H, H);  // dh += da W_hh
    const auto active = active_rows(m, T, B);
    auto recurrence = [&](int64_t slot, int64_t s0, int64_t s1) {
      const auto span = order.span(s0, s1);  // the chunk's steps [t0, t1)
      const int64_t t0 = span.first, t1 = span.second;
      const Tensor g_chunk = grad_steps(dhs, t0, t1);
      const scalar_t* g_out = g_chunk.data_ptr<scalar_t>();  // steps t0.. of dL/dh (from outside)
      if (g_chunk.is_alias_of(dhs)) {
        if (!da_buf[slot].defined()) da_buf[slot] = at::empty({K, B, H}, x.options());
        da[slot] = da_buf[slot].narrow(0, 0, t1 - t0);
      } else {
        da[slot] = g_chunk;  // da_t[j] may replace g_t[j]
      }
      scalar_t* da0 = da[slot].data_ptr<scalar_t>();
      for (int64_t s = s1 - 1; s >= s0; --s) {
        const int64_t t = order.at(s);
        scalar_t* da_t = da0 + (t - t0) * B * H;
        for_range(B, H, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            const int64_t o = (t * B + b) * H, og = ((t - t0) * B + b) * H;
            scalar_t* dhb = dhv + b * H;
            scalar_t* dab = da_t + b * H;
            if (m && !m[t * B + b]) {  // padded: gradient passes to h_{t-1} untouched
              for (int64_t j = 0; j < H; ++j) dhb[j] += g_out[og + j];
              std::fill(dab, dab + H, scalar_t(0));
              continue;
            }
            RNNLAB_SIMD for (int64_t j = 0; j < H; ++j) {
              const scalar_t g = dhb[j] + g_out[og + j];
              const scalar_t h = hv[o + j];
              dab[j] = relu ? (h > 0 ? g : scalar_t(0)) : g * (1 - h * h);  // through f
              dhb[j] = 0;
            }
          }
        });
        step(da_t, H, 1, dhv, H, active[t]);
      }
    };
    auto weight_grads = [&](int64_t slot, int64_t s0, int64_t s1) {
      const int64_t t0 = order.span(s0, s1).first;
      add_weight_grads(da[slot], x, t0, dw_ih, db);
      add_prev_gemm(dw_hh, da[slot], h0, hs_c, t0, reverse);
    };
    auto input_grads = [&](int64_t slot, int64_t s0, int64_t s1) {  // dx = da W_ih
      input_grad(da[slot], w_ih, order.span(s0, s1).first, dx);
    };
    run_chunks(T, K, overlap, recurrence, weight_grads, input_grads);
  });
  return {dx, dh, dw_ih, dw_hh, db};
}

}  // namespace rnnlab
