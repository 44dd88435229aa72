// GRU, whole sequence, both reset forms: forward and backpropagation through time.
//   r = σ(gi_r + W_hr h + b_hr), z = σ(gi_z + W_hz h + b_hz), h_t = (1-z)⊙n + z⊙h
//   after:  n = tanh(gi_n + r⊙(W_hn h + b_hn))      workspace [r|z|n|hn], hn = W_hn h + b_hn
//   before: n = tanh(gi_n + W_hn (r⊙h) + b_hn)      workspace [r|z|n]
// reverse = true walks t = T-1 … 0 with h_{t+1} as the previous state (see rnn.cpp). Packed input
// (batch_sizes): x, hs, ws hold each step's running sequences only, as in rnn.cpp.
#include <algorithm>

#include "cache.h"
#include "split.h"

namespace rnnlab {

// x [T,B,I], h0 [B,H], w_ih [3H,I], w_hh [3H,H] → hs [T,B,H], ws [T (1 unless keep),B,4H or 3H]
// (packed: x [N,I] → hs [N,H], ws [N or B rows, 4H or 3H])
std::tuple<Tensor, Tensor> gru_fwd(const Tensor& x, const c10::optional<Tensor>& mask,
                                   const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                                   const c10::optional<Tensor>& b_ih,
                                   const c10::optional<Tensor>& b_hh, bool after, bool keep,
                                   bool reverse, const c10::optional<Tensor>& batch_sizes) {
  const StepRows rows = step_rows(x, batch_sizes);
  const int64_t T = rows.T, B = rows.B, H = h0.size(1), W = after ? 4 * H : 3 * H;
  // input projection; its bias (b_ih with the [r|z] part of b_hh folded in; b_hn stays separate:
  // reset "after" multiplies it by r) is added row by row in the gate pass
  const bool has_bias = b_ih.has_value() && b_ih->defined();
  Tensor proj_bias;
  if (has_bias) proj_bias = at::cat({b_ih->narrow(0, 0, 2 * H) + b_hh->narrow(0, 0, 2 * H),
                                     b_ih->narrow(0, 2 * H, H)});
  const int64_t K = chunk_steps(T, B, 3 * H);
  // Reset after, B = 1 (split) or B > 1 within split_batch's bounds (bsplit): both cores in the
  // recurrence, each on its half of the units (split.h); else the input projection of the next
  // chunk overlaps this chunk's recurrence (pipeline.h)
  const bool split =
      after && !rows.packed && split_units(B, mask.has_value() && mask->defined(), 3 * H * H, false);
  const bool bsplit = after && split_batch(B, 3 * H * H);
  // else, reset after, B ≥ 8 on the EPYC: two halves of the batch, one per core (split.h), as
  // the LSTM does. Same process, alternating, 2 threads, T=100, ms, pipelined or 2-thread step
  // GEMMs → halves, training / inference: B=64 H=64 8.38 → 7.50 / 2.99 → 2.36, B=32 H=64 4.33 →
  // 4.00 / 1.51 → 1.26, B=64 H=128 25.9 → 24.2 / 8.85 → 8.45 (30.4 → 29.7 / 10.2 → 9.66), B=32
  // H=128 13.1 → 12.3 / 4.02 → 4.07 (17.6 → 16.5 / 6.19 → 5.78), B=8 H=128 3.65 → 3.70 / 1.27 →
  // 1.14 (5.40 → 4.78 / 1.54 → 1.62); packed B=32 H=128 16.0 → 14.6 / 5.54 → 5.12, B=64 H=64
  // 11.1 → 11.5 / 3.75 → 3.97; B=64 H=256 (768 KB of W_hh, which each core then reads whole)
  // even: 140.8 → 140.1 / 39.2 → 40.4, 98.2 → 97.0 / 30.5 → 31.4. The backward keeps its pipeline.
  const bool halves = after && !split && !bsplit && batch_halves(B, 3 * H * H);
  const int64_t mid = halves ? halves_mid(rows) : 0;
  const bool overlap =
      !split && !bsplit && !halves && overlap_chunks((T + K - 1) / K, B, B * 3 * H * H, false);
  // input pre-activations: all steps', or (serial, long) Kc steps' at a time (proj_chunk_steps)
  const int64_t Kc = overlap ? T : proj_chunk_steps(T, B);
  auto gi = Kc < T ? at::empty({Kc * B, 3 * H}, x.options()) : steps_like(x, rows, 3 * H);
  auto hs = steps_like(x, rows, H);
  // the workspace BPTT needs (recycled: cache.h); without gradients one step's worth is reused
  auto ws = keep ? workspace_like(x, rows, W) : at::empty({1, B, W}, x.options());
  auto gh = at::zeros({B, 3 * H}, x.options());   // recurrent pre-activations of one step
  auto rh = at::empty({B, H}, x.options());       // r ⊙ h (reset="before")
  auto whh = w_hh.contiguous();
  auto h0c = h0.contiguous();
  auto bn = has_bias ? b_hh->narrow(0, 2 * H, H).contiguous() : at::zeros({H}, x.options());
  const StepOrder order{T, reverse};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_fwd", [&] {
    scalar_t* giv = gi.data_ptr<scalar_t>();
    int64_t row0 = 0;  // the step row in gi's first row: the chunk's first (chunked), else 0
    const scalar_t* pb = has_bias ? proj_bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* hsv = hs.data_ptr<scalar_t>();
    scalar_t* wsv = ws.data_ptr<scalar_t>();
    scalar_t* ghv = gh.data_ptr<scalar_t>();
    scalar_t* rhv = rh.data_ptr<scalar_t>();
    const scalar_t* w = whh.data_ptr<scalar_t>();
    const scalar_t* bnv = bn.data_ptr<scalar_t>();
    const bool* m = mask_ptr(mask);
    const scalar_t* h0v = h0c.data_ptr<scalar_t>();
    // q = h_{t-1} W_hh^T: whole, per batch half (halves), or W_hh's halves by units (batched
    // split; same pack slots)
    std::optional<BatchGemms<scalar_t>> step_rz;
    std::optional<StepGemm<scalar_t>> step_n;  // "before" only
    std::optional<UnitGemms<scalar_t>> units;
    if (bsplit) units.emplace(whh, 3, H, B);
    else step_rz.emplace(halves, mid, w, H, true, B, after ? 3 * H : 2 * H, H);
    if (!after) step_n.emplace(w + 2 * H * H, H, true, B, H, H, 1);
    const auto active = running_rows(rows, m);
    auto split_recurrence = [&](int64_t s0, int64_t s1) {  // B = 1, reset after, own units u
      run_split(H, s1 - s0, [&](int64_t i, const Units& u) {
        const int64_t t = order.at(s0 + i);
        const scalar_t* hp = prev_rows(rows, order, t, hsv, h0v, H).row(0);  // h_{t-1}
        scalar_t* g_t = giv + (t - row0) * 3 * H;
        for (int64_t k = 0; k < 3; ++k) std::fill(ghv + k * H + u.u0, ghv + k * H + u.u1, scalar_t(0));
        gemv_units<scalar_t>(w, H, 3, H, u, H, hp, ghv);  // q[u] = W_hh[u] h_{t-1}, each block
        gru_after_fwd_row(u.n(), H, g_t + u.u0, ghv + u.u0, H, pb ? pb + u.u0 : nullptr,
                          bnv + u.u0, hp + u.u0, wsv + (keep ? t : 0) * W + u.u0,
                          hsv + t * H + u.u0);
      });
    };
    auto bsplit_recurrence = [&](int64_t s0, int64_t s1) {  // B > 1, reset after, own units
      run_split(H, s1 - s0, [&](int64_t i, const Units& own) {
        const int64_t t = order.at(s0 + i);
        const int64_t n = rows.rows_of(t), act = active[t];
        const PrevRows<scalar_t> h = prev_rows(rows, order, t, hsv, h0v, H);
        scalar_t* out = hsv + rows.off[t] * H;
        scalar_t* g_t = giv + (rows.off[t] - row0) * 3 * H;
        scalar_t* s_t = wsv + (keep ? rows.off[t] : 0) * W;
        units->each(own, h, act, [&](int64_t u0, int64_t nu, scalar_t* q, int64_t ldq) {
          if (act < n) std::fill(q + act * ldq, q + n * ldq, scalar_t(0));
          for (int64_t b = 0; b < n; ++b)
            gru_after_fwd_row(nu, H, g_t + b * 3 * H + u0, q + b * ldq, nu, pb ? pb + u0 : nullptr,
                              bnv + u0, h.row(b) + u0, s_t + b * W + u0, out + b * H + u0);
          if (m) {  // padded steps keep the previous state
            for (int64_t b = 0; b < B; ++b)
              if (!m[t * B + b]) std::copy(h.row(b) + u0, h.row(b) + u0 + nu, out + b * H + u0);
          }
        });
      });
    };
    // the steps [s0, s1) of the batch rows [b0, b1) (all rows, or a half) through `gemm`
    auto steps = [&](int64_t s0, int64_t s1, int64_t b0, int64_t b1, const StepGemm<scalar_t>& gemm) {
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t t = order.at(s);
        const int64_t n = std::min(rows.rows_of(t), b1);  // rows [b0, n) run at t
        if (n <= b0) continue;  // (packed: the upper half's sequences have all ended, or not begun)
        const int64_t act = std::clamp<int64_t>(active[t], b0, n);  // … and [b0, act) unmasked
        const PrevRows<scalar_t> h = prev_rows(rows, order, t, hsv, h0v, H);  // h_{t-1}, by row
        // q = W_hh h_{t-1}: all rows for "after", the [r|z] rows first for "before" (its n rows
        // need r ⊙ h). Rows of finished sequences keep finite stale values, masked out below.
        scalar_t* q = ghv + b0 * 3 * H;
        h.from(b0).gemm(gemm, 0, q, 3 * H, act - b0);
        scalar_t* out = hsv + rows.off[t] * H;
        scalar_t* g_t = giv + (rows.off[t] - row0) * 3 * H;
        scalar_t* s_t = wsv + (keep ? rows.off[t] : 0) * W;
        if (after) {
          for_range(n - b0, 3 * H, [&](int64_t i0, int64_t i1) {
            for (int64_t b = b0 + i0; b < b0 + i1; ++b)
              gru_after_fwd_row(H, H, g_t + b * 3 * H, ghv + b * 3 * H, H, pb, bnv, h.row(b),
                                s_t + b * W, out + b * H);
          });
        } else {  // (never in halves)
          for_range(n, 3 * H, [&](int64_t i0, int64_t i1) {
            for (int64_t b = i0; b < i1; ++b) {
              if (pb) add_row(g_t + b * 3 * H, pb, 3 * H);
              gru_before_gates_row(H, g_t + b * 3 * H, ghv + b * 3 * H, h.row(b), s_t + b * W,
                                   rhv + b * H);
            }
          });
          (*step_n)(rhv, H, 0, ghv + 2 * H, 3 * H, act);
          for_range(n, 3 * H, [&](int64_t i0, int64_t i1) {
            for (int64_t b = i0; b < i1; ++b)
              gru_before_out_row(H, g_t + b * 3 * H, ghv + b * 3 * H + 2 * H, bnv, h.row(b),
                                 s_t + b * W, out + b * H);
          });
        }
        if (m) {  // padded steps keep the previous state
          for (int64_t b = b0; b < b1; ++b)
            if (!m[t * B + b]) std::copy(h.row(b), h.row(b) + H, out + b * H);
        }
      }
    };
    auto recurrence = [&](int64_t s0, int64_t s1) {
      row0 = Kc < T ? rows.off[order.span(s0, s1).first] : 0;  // step t at row off[t] - row0
      if (split) return split_recurrence(s0, s1);
      if (bsplit) return bsplit_recurrence(s0, s1);
      if (halves)
        return run_halves(B, mid, [&](int64_t b0, int64_t b1) {
          steps(s0, s1, b0, b1, step_rz->of(b0, b1));
        });
      steps(s0, s1, 0, B, step_rz->of(0, B));
    };
    if (Kc < T) run_projected_chunks(order, rows, Kc, gi, x, w_ih, recurrence);
    else run_projected(order, rows, K, overlap, gi, x, w_ih, recurrence);
  });
  return {hs, ws};
}

// Returns (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); dx empty when need_dx is false.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_bwd(
    const Tensor& dhs, const Tensor& x, const c10::optional<Tensor>& mask, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& hs, const Tensor& ws, bool after,
    bool need_dx, bool reverse, const c10::optional<Tensor>& batch_sizes,
    const c10::optional<Tensor>& dx_into) {
  const bool add_dx = adds_into(x, need_dx, dx_into);  // else dx is its own
  const StepRows rows = step_rows(x, batch_sizes);
  const int64_t T = rows.T, B = rows.B, H = h0.size(1), W = after ? 4 * H : 3 * H;
  // Reset after, B = 1 (split) or dense B > 1 with B ≤ H / 48 (bsplit): both cores in the
  // recurrence (split.h); else the weight gradients of one chunk overlap the next chunk's
  // recurrence (pipeline.h)
  const bool masked = mask.has_value() && mask->defined();
  const bool split = after && !rows.packed && split_units(B, masked, 3 * H * H, true);
  const bool bsplit = after && !rows.packed && !masked && split_batch_back(B, H, T);  // B > 1
  const int64_t K_one = split    ? split_chunk(T)
                        : bsplit ? split_batch_chunk(T, B, 3 * H)
                                 : chunk_steps(T, B, 3 * H);
  const bool overlap =
      !split && !bsplit && overlap_chunks((T + K_one - 1) / K_one, B, B * H * 3 * H, true);
  const int64_t K = pipelined_chunk(K_one, overlap);
  const int64_t slots = chunk_slots((T + K - 1) / K, overlap);
  // chunks' rows of [dar|daz|dan]. Reset after: the recurrent pre-activation gradient
  // [dar|daz|dan⊙r] differs from it only in its n block, made from it for the weight gradient
  auto dgi = at::empty({slots, K * B, 3 * H}, x.options());
  auto gh_step = after ? at::empty({B, 3 * H}, x.options()) : Tensor();
  auto dh = at::zeros({B, H}, x.options());
  auto partials = split ? at::empty({2, 2, H}, x.options()) : Tensor();
  auto drh = at::empty({B, H}, x.options());
  auto din_buf = at::empty({B, H}, x.options());
  Tensor dx, dw_ih, dw_hh, db_ih, db_hh;  // made on first use (common.h OnFirstUse)
  const OnFirstUse weights([&] {
    dw_ih = recycled_empty(w_ih.sizes(), w_ih.options()), dw_hh = recycled_empty(w_hh.sizes(), w_hh.options());
    db_ih = at::empty({3 * H}, x.options()), db_hh = at::empty({3 * H}, x.options());
  }, overlap);
  const OnFirstUse inputs([&] { dx = input_grads_like(x, need_dx, dx_into); }, overlap);
  auto hs_c = hs.contiguous();
  auto ws_c = ws.contiguous();
  auto h0c = h0.contiguous();
  auto whh = w_hh.contiguous();
  const StepOrder order{T, reverse};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_bwd", [&] {
    const scalar_t* hsv = hs_c.data_ptr<scalar_t>();
    const scalar_t* wsv = ws_c.data_ptr<scalar_t>();
    const scalar_t* w = whh.data_ptr<scalar_t>();
    scalar_t* ghs = after ? gh_step.data_ptr<scalar_t>() : nullptr;
    scalar_t* dhv = dh.data_ptr<scalar_t>();
    scalar_t* drhv = drh.data_ptr<scalar_t>();
    scalar_t* dinv = din_buf.data_ptr<scalar_t>();
    const bool* m = mask_ptr(mask);
    const StepGemm<scalar_t> back_all(w, H, false, B, H, after ? 3 * H : 2 * H);  // rows used
    const StepGemm<scalar_t> back_n(w + 2 * H * H, H, false, B, H, H, 1);        // "before"
    std::optional<UnitGemms<scalar_t>> units;  // (made after those: it reuses their pack slots)
    if (bsplit) units.emplace(whh, 3, H, B, true);
    const auto active = running_rows(rows, m);
    const scalar_t* h0v = h0c.data_ptr<scalar_t>();
    // B = 1, reset after, on both cores, own units u: dh[u] = Σ both partials of the step before
    auto split_steps = [&](int64_t s0, int64_t s1, int64_t t0, const scalar_t* go, int64_t ld,
                           scalar_t* dgiv) {
      const Partials<scalar_t> parts{partials.data_ptr<scalar_t>(), H};
      run_split(H, s1 - s0, [&](int64_t i, const Units& u) {
        const int64_t t = order.at(s1 - 1 - i);
        const scalar_t* hp = prev_rows(rows, order, t, hsv, h0v, H).row(0);  // h_{t-1}
        if (i > 0) parts.add_to(i - 1, u, dhv);
        const scalar_t* g = go + (t - t0) * ld;
        RNNLAB_SIMD for (int64_t j = u.u0; j < u.u1; ++j) dinv[j] = dhv[j] + g[j];
        scalar_t* gi_t = dgiv + (t - t0) * 3 * H;
        gru_bwd_row<scalar_t, true>(u.n(), H, wsv + t * W + u.u0, hp + u.u0, dinv + u.u0,
                                    gi_t + u.u0, ghs + u.u0, dhv + u.u0);
        partial_units<scalar_t>(w, H, 3, H, u, H, ghs, parts.mine(i, u));  // dgh[u] W_hh[u]
      }, [&](const Units& u) { parts.add_to(s1 - s0 - 1, u, dhv); });
    };
    // B > 1, reset after, on both cores (split.h split_batch_back), own units u, dense rows:
    // dh[:, u] = Σ both halves' partials of the step before (UnitGemms, backward form)
    auto bsplit_steps = [&](int64_t s0, int64_t s1, int64_t t0, const scalar_t* go, int64_t ld,
                            scalar_t* dgiv) {
      run_split(H, s1 - s0, [&](int64_t i, const Units& u) {
        const int64_t t = order.at(s1 - 1 - i), r0 = (t - t0) * B;
        if (i > 0) units->add_partials(i - 1, u, dhv);
        const PrevRows<scalar_t> hp = prev_rows(rows, order, t, hsv, h0v, H);  // h_{t-1}, by row
        for (int64_t b = 0; b < B; ++b) {
          const scalar_t* g = go + (r0 + b) * ld;
          scalar_t* d = dhv + b * H;
          scalar_t* din = dinv + b * H;
          RNNLAB_SIMD for (int64_t j = u.u0; j < u.u1; ++j) din[j] = d[j] + g[j];
          gru_bwd_row<scalar_t, true>(u.n(), H, wsv + (rows.off[t] + b) * W + u.u0, hp.row(b) + u.u0,
                                      din + u.u0, dgiv + (r0 + b) * 3 * H + u.u0,
                                      ghs + b * 3 * H + u.u0, d + u.u0);
        }
        units->partials(i, u, ghs);  // dgh W_hh, this thread's rows
      }, [&](const Units& u) { units->add_partials(s1 - s0 - 1, u, dhv); });
    };
    auto recurrence = [&](int64_t slot, int64_t s0, int64_t s1) {
      const auto span = order.span(s0, s1);  // the chunk's steps [t0, t1)
      const int64_t t0 = span.first, t1 = span.second;
      const StepGrads g = grad_steps(dhs, rows, t0, t1);
      const scalar_t* go = g.data<scalar_t>();  // steps t0.. of dL/dh (from outside), row stride ld
      const int64_t ld = g.ld;
      scalar_t* dgiv = dgi[slot].data_ptr<scalar_t>();
      if (split) return split_steps(s0, s1, t0, go, ld, dgiv);
      if (bsplit) return bsplit_steps(s0, s1, t0, go, ld, dgiv);
      for (int64_t s = s1 - 1; s >= s0; --s) {
        const int64_t t = order.at(s), r0 = rows.off[t] - rows.off[t0];  // step t's chunk rows
        const int64_t n = rows.rows_of(t), act = active[t];
        const PrevRows<scalar_t> hp = prev_rows(rows, order, t, hsv, h0v, H);  // h_{t-1}, by row
        scalar_t* gi_t = dgiv + r0 * 3 * H;
        scalar_t* gh_t = ghs;  // this step's [dar|daz|dan⊙r] rows (reset after)
        for_range(n, 3 * H, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            scalar_t* d = dhv + b * H;
            scalar_t* din = dinv + b * H;
            const scalar_t* gob = go + (r0 + b) * ld;
            for (int64_t j = 0; j < H; ++j) din[j] = d[j] + gob[j];  // total gradient at h_t
            if (m && !m[t * B + b]) {  // padded: it passes to h_{t-1} untouched
              std::copy(din, din + H, d);
              std::fill(gi_t + b * 3 * H, gi_t + (b + 1) * 3 * H, scalar_t(0));
              if (after) std::fill(gh_t + b * 3 * H, gh_t + (b + 1) * 3 * H, scalar_t(0));
              continue;
            }
            const scalar_t* sb = wsv + (rows.off[t] + b) * W;
            if (after)
              gru_bwd_row<scalar_t, true>(H, H, sb, hp.row(b), din, gi_t + b * 3 * H, gh_t + b * 3 * H,
                                          d);
            else
              gru_bwd_row<scalar_t, false>(H, H, sb, hp.row(b), din, gi_t + b * 3 * H, nullptr, d);
          }
        });
        if (after) {
          back_all(gh_t, 3 * H, 1, dhv, H, act);  // dh += dgh W_hh
        } else {
          // d(r⊙h) = dan W_hn;  dr = d(r⊙h) ⊙ h;  dh += d(r⊙h) ⊙ r + [dar|daz] W_h[rz]
          back_n(gi_t + 2 * H, 3 * H, 0, drhv, H, act);
          for (int64_t b = 0; b < act; ++b)  // rows past act are padded: no-op
            gru_before_bwd_reset_row(H, wsv + (rows.off[t] + b) * W, hp.row(b), drhv + b * H,
                                     gi_t + b * 3 * H, dhv + b * H);
          back_all(gi_t, 3 * H, 1, dhv, H, act);
        }
      }
    };
    auto weight_grads = [&](int64_t slot, int64_t s0, int64_t s1) {
      const auto span = order.span(s0, s1);
      const int64_t t0 = span.first, t1 = span.second;
      auto dgi_c = dgi[slot].narrow(0, 0, rows.count(t0, t1));  // [rows, 3H]
      const bool first = s1 == T;  // written, not added to (acc_tn)
      weights.ensure();
      add_weight_grads(dgi_c, x, rows, t0, t1, dw_ih, db_ih, first);
      auto rz = dgi_c.narrow(1, 0, 2 * H);
      Tensor prev;  // the chunk's previous states when gathered, for both blocks of dW_hh
      add_prev_grads(dw_hh.narrow(0, 0, 2 * H), rz, h0c, hs_c, rows, t0, t1, reverse, first, &prev);
      // W_hn's pre-activation gradient (a chunk-sized temporary): reset after dan ⊙ r, times
      // h_{t-1}; reset before dan, times r ⊙ h_{t-1}
      auto r = step_block(ws_c, rows, t0, t1).narrow(1, 0, H);
      auto dn = dgi_c.narrow(1, 2 * H, H);
      if (after) {
        // a block the n rows will not use goes before their temporary is made (peak memory)
        if (!gathers_prev(dw_hh.narrow(0, 2 * H, H), dn.size(0), H, rows, t0, t1, reverse)) prev = Tensor();
        Tensor dnr;  // dan ⊙ r, its column sums b_hn's gradient
        acc_rows(db_hh.narrow(0, 2 * H, H), dn, first, &r, &dnr);
        add_prev_grads(dw_hh.narrow(0, 2 * H, H), dnr, h0c, hs_c, rows, t0, t1, reverse, first, &prev);
      } else {
        if (!prev.defined()) prev = chunk_prev_states(h0c, hs_c, rows, t0, t1, reverse);
        acc_tn(dw_hh.narrow(0, 2 * H, H), dn, r * prev, first);
        acc_rows(db_hh.narrow(0, 2 * H, H), dn, first);
      }
    };
    auto input_grads = [&](int64_t slot, int64_t s0, int64_t s1) {  // dx = dgi W_ih
      const auto span = order.span(s0, s1);
      const int64_t count = rows.count(span.first, span.second);
      inputs.ensure();
      input_grad(dgi[slot].narrow(0, 0, count), w_ih, rows, span.first, span.second, dx, add_dx);
    };
    run_chunks(T, K, overlap, recurrence, weight_grads, input_grads);
  });
  // b_h[rz] enter r and z beside b_i[rz]: the same gradient, summed once (add_weight_grads)
  db_hh.narrow(0, 0, 2 * H).copy_(db_ih.narrow(0, 0, 2 * H));
  return {add_dx ? at::empty({0}, x.options()) : dx, dh, dw_ih, dw_hh, db_ih, db_hh};
}

}  // namespace rnnlab
