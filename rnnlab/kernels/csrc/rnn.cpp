// Elman RNN, whole sequence: forward and backpropagation through time.
//   forward:  a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh;  h_t = f(a_t)   (f = tanh | relu)
//   backward: da_t = dh ⊙ f'(a_t);  dh_{t-1} = da_t @ W_hh;  dW_ih = Σ da^T x, dW_hh = Σ da^T h_{t-1}
// reverse = true runs the recurrence from t = T-1 down to 0 (the backward direction of a
// bidirectional layer; h_{t+1} takes the place of h_{t-1}) on the input as it is: no reversed
// copies. With a mask, state frozen on padded steps is the same as reversing each sequence within
// its own length: a sequence's reverse pass starts from h0 at its last valid step.
// Packed input (batch_sizes given; common.h StepRows): x [N, I] → hs [N, H], step t holding only
// the n_t sequences still running; a reverse step takes h_{t+1} for the n_{t+1} sequences that ran
// at t+1 and h0 for the others (their reverse run starts at t).
#include "split.h"

namespace rnnlab {

// x [T,B,I] (or packed [N,I]), h0 [B,H], w_ih [H,I], w_hh [H,H] → hs [T,B,H] (or [N,H])
Tensor rnn_fwd(const Tensor& x, const c10::optional<Tensor>& mask, const Tensor& h0,
               const Tensor& w_ih, const Tensor& w_hh, const c10::optional<Tensor>& b_ih,
               const c10::optional<Tensor>& b_hh, bool relu, bool reverse,
               const c10::optional<Tensor>& batch_sizes) {
  const bool has_bias = b_ih.has_value() && b_ih->defined();
  const Tensor bias = has_bias ? (*b_ih + *b_hh).contiguous() : Tensor();
  const StepRows rows = step_rows(x, batch_sizes);
  const int64_t T = rows.T, B = rows.B, H = h0.size(1), K = chunk_steps(T, B, H);
  // B = 1: both cores in the recurrence (split.h); else the input projection of the next chunk
  // overlaps this chunk's recurrence (pipeline.h)
  const bool split = !rows.packed && split_units(B, mask.has_value() && mask->defined(), H * H, false);
  const bool overlap = !split && overlap_chunks((T + K - 1) / K, B, B * H * H, false);
  // a_t input part, overwritten with h_t
  auto hs = steps_like(x, rows, H);
  auto whh = w_hh.contiguous();
  auto h0c = h0.contiguous();
  const StepOrder order{T, reverse};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnn_fwd", [&] {
    scalar_t* out = hs.data_ptr<scalar_t>();
    const scalar_t* w = whh.data_ptr<scalar_t>();
    const bool* m = mask_ptr(mask);
    const scalar_t* h0v = h0c.data_ptr<scalar_t>();
    const scalar_t* bv = has_bias ? bias.data_ptr<scalar_t>() : nullptr;
    const StepGemm<scalar_t> step(w, H, true, B, H, H);  // a += h_{t-1} W_hh^T
    const auto active = running_rows(rows, m);
    auto activate = [&](scalar_t* __restrict a, int64_t n) {
      if (relu) {
        RNNLAB_SIMD for (int64_t j = 0; j < n; ++j) a[j] = a[j] > 0 ? a[j] : scalar_t(0);
      } else {
        RNNLAB_SIMD for (int64_t j = 0; j < n; ++j) a[j] = std::tanh(a[j]);
      }
    };
    auto split_recurrence = [&](int64_t s0, int64_t s1) {  // B = 1, own units u
      run_split(H, s1 - s0, [&](int64_t i, const Units& u) {
        const int64_t t = order.at(s0 + i);
        const scalar_t* hp = prev_rows(rows, order, t, out, h0v, H).row(0);  // h_{t-1}
        scalar_t* a = out + t * H;
        gemv_units<scalar_t>(w, H, 1, H, u, H, hp, a);  // a[u] += W_hh[u] h_{t-1}
        if (bv) add_row(a + u.u0, bv + u.u0, u.n());
        activate(a + u.u0, u.n());
      });
    };
    auto recurrence = [&](int64_t s0, int64_t s1) {
      if (split) return split_recurrence(s0, s1);
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t t = order.at(s);
        scalar_t* a = out + rows.off[t] * H;
        const int64_t n = rows.rows_of(t), act = active[t];
        const PrevRows<scalar_t> h = prev_rows(rows, order, t, out, h0v, H);  // h_{t-1}, by row
        h.gemm(step, 1, a, H, act);
        for_range(n, H, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            scalar_t* ab = a + b * H;
            if (m && !m[t * B + b]) {  // padded step: state frozen
              std::copy(h.row(b), h.row(b) + H, ab);
              continue;
            }
            if (bv) add_row(ab, bv, H);
            activate(ab, H);
          }
        });
      }
    };
    run_projected(order, rows, K, overlap, hs, x, w_ih, recurrence);
  });
  return hs;
}

// Returns (dx, dh0, dw_ih, dw_hh, db); dx is empty when need_dx is false.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_bwd(
    const Tensor& dhs, const Tensor& x, const c10::optional<Tensor>& mask, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& hs, bool relu, bool need_dx, bool reverse,
    const c10::optional<Tensor>& batch_sizes, const c10::optional<Tensor>& dx_into) {
  const bool add_dx = adds_into(x, need_dx, dx_into);  // else dx is its own
  const StepRows rows = step_rows(x, batch_sizes);
  const int64_t T = rows.T, B = rows.B, H = h0.size(1);
  // B = 1: both cores in the recurrence (split.h); else the weight gradients of one chunk overlap
  // the next chunk's recurrence (pipeline.h)
  const bool split = !rows.packed && split_units(B, mask.has_value() && mask->defined(), H * H, true);
  const int64_t K_one = split ? split_chunk(T) : chunk_steps(T, B, H);
  const bool overlap = !split && overlap_chunks((T + K_one - 1) / K_one, B, B * H * H, true);
  const int64_t K = pipelined_chunk(K_one, overlap);
  const int64_t slots = chunk_slots((T + K - 1) / K, overlap);
  // each slot's chunk of pre-activation gradients [rows, H]: where the upstream gradient's chunk
  // is a private copy (common.h grad_steps), da overwrites that copy in place, else a buffer of
  // the slot's own (allocated on first use)
  std::vector<Tensor> da(slots), da_buf(slots);
  auto dh = at::zeros({B, H}, x.options());
  auto partials = split ? at::empty({2, 2, H}, x.options()) : Tensor();
  Tensor dx, dw_ih, dw_hh, db;  // made on first use (common.h OnFirstUse)
  const OnFirstUse weights([&] {
    dw_ih = recycled_empty(w_ih.sizes(), w_ih.options()), dw_hh = recycled_empty(w_hh.sizes(), w_hh.options()), db = at::empty({H}, x.options());
  }, overlap);
  const OnFirstUse inputs([&] { dx = input_grads_like(x, need_dx, dx_into); }, overlap);
  auto hs_c = hs.contiguous();
  auto whh = w_hh.contiguous();
  const StepOrder order{T, reverse};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnn_bwd", [&] {
    const scalar_t* hv = hs_c.data_ptr<scalar_t>();
    scalar_t* dhv = dh.data_ptr<scalar_t>();
    const bool* m = mask_ptr(mask);
    const scalar_t* w = whh.data_ptr<scalar_t>();
    const StepGemm<scalar_t> step(w, H, false, B, H, H);  // dh += da W_hh
    const auto active = running_rows(rows, m);
    // B = 1 on both cores, own units u: dh[u] = Σ both partials of the step before (split.h)
    auto split_steps = [&](int64_t s0, int64_t s1, int64_t t0, const scalar_t* g_out, int64_t ld,
                           scalar_t* da0) {
      const Partials<scalar_t> parts{partials.data_ptr<scalar_t>(), H};
      run_split(H, s1 - s0, [&](int64_t i, const Units& u) {
        const int64_t t = order.at(s1 - 1 - i);
        if (i > 0) parts.add_to(i - 1, u, dhv);
        scalar_t* da_t = da0 + (t - t0) * H;
        const scalar_t* g = g_out + (t - t0) * ld;
        const scalar_t* h = hv + t * H;
        RNNLAB_SIMD for (int64_t j = u.u0; j < u.u1; ++j) {
          const scalar_t v = dhv[j] + g[j];
          da_t[j] = relu ? (h[j] > 0 ? v : scalar_t(0)) : v * (1 - h[j] * h[j]);
          dhv[j] = 0;
        }
        partial_units<scalar_t>(w, H, 1, H, u, H, da_t, parts.mine(i, u));  // da_t[u] W_hh[u]
      }, [&](const Units& u) { parts.add_to(s1 - s0 - 1, u, dhv); });
    };
    auto recurrence = [&](int64_t slot, int64_t s0, int64_t s1) {
      const auto span = order.span(s0, s1);  // the chunk's steps [t0, t1)
      const int64_t t0 = span.first, t1 = span.second;
      const StepGrads g = grad_steps(dhs, rows, t0, t1);
      const scalar_t* g_out = g.data<scalar_t>();  // steps t0.. of dL/dh (from outside), row stride ld
      const int64_t ld = g.ld;
      if (g.copy) {
        da[slot] = g.rows;  // da_t[j] may replace g_t[j]
      } else {
        if (!da_buf[slot].defined()) da_buf[slot] = at::empty({K * B, H}, x.options());
        da[slot] = da_buf[slot].narrow(0, 0, rows.count(t0, t1));
      }
      scalar_t* da0 = da[slot].data_ptr<scalar_t>();
      if (split) return split_steps(s0, s1, t0, g_out, ld, da0);
      for (int64_t s = s1 - 1; s >= s0; --s) {
        const int64_t t = order.at(s);
        const int64_t n = rows.rows_of(t), r0 = rows.off[t] - rows.off[t0];
        scalar_t* da_t = da0 + r0 * H;
        for_range(n, H, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            const int64_t o = (rows.off[t] + b) * H, og = (r0 + b) * ld;
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
        // dh[:n] += da_t W_hh: the state entering step t of each running sequence (packed and
        // reverse: rows past n_{t+1} are h0's gradient, never touched again)
        step(da_t, H, 1, dhv, H, active[t]);
      }
    };
    auto weight_grads = [&](int64_t slot, int64_t s0, int64_t s1) {
      const auto span = order.span(s0, s1);
      const bool first = s1 == T;  // written, not added to (acc_tn)
      weights.ensure();
      add_weight_grads(da[slot], x, rows, span.first, span.second, dw_ih, db, first);
      add_prev_grads(dw_hh, da[slot], h0, hs_c, rows, span.first, span.second, reverse, first);
    };
    auto input_grads = [&](int64_t slot, int64_t s0, int64_t s1) {  // dx = da W_ih
      const auto span = order.span(s0, s1);
      inputs.ensure();
      input_grad(da[slot], w_ih, rows, span.first, span.second, dx, add_dx);
    };
    run_chunks(T, K, overlap, recurrence, weight_grads, input_grads);
  });
  return {add_dx ? at::empty({0}, x.options()) : dx, dh, dw_ih, dw_hh, db};
}

}  // namespace rnnlab
