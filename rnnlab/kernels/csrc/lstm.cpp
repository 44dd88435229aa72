// LSTM (optionally with projection), whole sequence: forward and backpropagation through time.
//   forward:  [i,f,g,o] = [σ,σ,tanh,σ](W_ih x_t + b + W_hh h_{t-1});  c_t = f⊙c_{t-1} + i⊙g
//             r_t = o⊙tanh(c_t);  h_t = W_hr r_t (or r_t)
//   backward: dr = dh W_hr;  dc += dr⊙o⊙(1-tanh²c);  da = [dc⊙g⊙i(1-i), dc⊙c_{t-1}⊙f(1-f),
//             dc⊙i⊙(1-g²), dr⊙tanh(c)⊙o(1-o)];  dh_{t-1} = da W_hh;  dc_{t-1} = dc⊙f
// reverse = true walks t = T-1 … 0 with (h, c)_{t+1} as the previous state (see rnn.cpp). Packed
// input (batch_sizes): x, hs, cs, gates hold each step's running sequences only, as in rnn.cpp.
#include <algorithm>
#include <optional>

#include "cache.h"
#include "split.h"

namespace rnnlab {

// x [T,B,I], h0 [B,P], c0 [B,H], w_ih [4H,I], w_hh [4H,P], w_hr [P,H]
// → hs [T,B,P], cs [T,B,H], gates [T,B,4H] (activated: the workspace BPTT needs); packed: x [N,I]
// → [N,P], [N,H], [N,4H]
std::tuple<Tensor, Tensor, Tensor> lstm_fwd(
    const Tensor& x, const c10::optional<Tensor>& mask, const Tensor& h0, const Tensor& c0,
    const Tensor& w_ih, const Tensor& w_hh, const c10::optional<Tensor>& b_ih,
    const c10::optional<Tensor>& b_hh, const c10::optional<Tensor>& w_hr, bool reverse,
    const c10::optional<Tensor>& batch_sizes) {
  const bool has_bias = b_ih.has_value() && b_ih->defined();
  const Tensor bias = has_bias ? (*b_ih + *b_hh).contiguous() : Tensor();
  const StepRows rows = step_rows(x, batch_sizes);
  const int64_t T = rows.T, B = rows.B, H = c0.size(1), P = h0.size(1), K = chunk_steps(T, B, 4 * H);
  const bool proj = w_hr.has_value() && w_hr->defined();
  // B = 1 without projection: both cores in the recurrence (split.h); else the input projection
  // of the next chunk overlaps this chunk's recurrence (pipeline.h)
  const bool split =
      !proj && !rows.packed && split_units(B, mask.has_value() && mask->defined(), 4 * H * P, false);
  // B ≥ 8 without projection on the EPYC: two halves of the batch, one per core (split.h)
  const bool halves = !split && !proj && batch_halves(B, 4 * H * P);
  const int64_t mid = halves ? halves_mid(rows) : 0;
  const bool overlap = !split && !halves && overlap_chunks((T + K - 1) / K, B, B * 4 * H * P, false);
  auto gates = workspace_like(x, rows, 4 * H);  // (recycled: cache.h)
  auto hs = steps_like(x, rows, P);
  auto cs = workspace_like(x, rows, H);
  auto r = proj ? at::empty({B, H}, x.options()) : Tensor();
  auto whh = w_hh.contiguous();
  auto whr = proj ? w_hr->contiguous() : Tensor();
  auto h0c = h0.contiguous();
  auto c0c = c0.contiguous();
  const StepOrder order{T, reverse};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_fwd", [&] {
    scalar_t* gv = gates.data_ptr<scalar_t>();
    scalar_t* hsv = hs.data_ptr<scalar_t>();
    scalar_t* csv = cs.data_ptr<scalar_t>();
    const scalar_t* w = whh.data_ptr<scalar_t>();
    const bool* m = mask_ptr(mask);
    const scalar_t* h0v = h0c.data_ptr<scalar_t>();
    const scalar_t* c0v = c0c.data_ptr<scalar_t>();
    scalar_t* rv = proj ? r.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bv = has_bias ? bias.data_ptr<scalar_t>() : nullptr;
    const BatchGemms<scalar_t> step(halves, mid, w, P, true, B, 4 * H, P);  // gates += h_{t-1} W_hh^T
    // h_t = r_t W_hr^T: packed once and on one MKL thread like the recurrent GEMM (as a plain
    // 2-thread GEMM per step it cost a fork/join each step)
    std::optional<StepGemm<scalar_t>> project;
    if (proj) project.emplace(whr.data_ptr<scalar_t>(), H, true, B, P, H, 1);
    const auto active = running_rows(rows, m);
    auto split_recurrence = [&](int64_t s0, int64_t s1) {  // B = 1, own units u
      run_split(H, s1 - s0, [&](int64_t i, const Units& u) {
        const int64_t t = order.at(s0 + i);
        const scalar_t* hp = prev_rows(rows, order, t, hsv, h0v, P).row(0);  // h_{t-1}
        const scalar_t* cp = prev_rows(rows, order, t, csv, c0v, H).row(0);  // c_{t-1}
        scalar_t* g = gv + t * 4 * H;
        gemv_units<scalar_t>(w, P, 4, H, u, P, hp, g);  // g[u] += W_hh[u] h_{t-1}
        if (bv)
          for (int64_t k = 0; k < 4; ++k) add_row(g + k * H + u.u0, bv + k * H + u.u0, u.n());
        lstm_fwd_row(u.n(), H, g + u.u0, cp + u.u0, csv + t * H + u.u0, hsv + t * P + u.u0);
      });
    };
    // the steps [s0, s1) of the batch rows [b0, b1) (all rows, or a half) through `gemm`
    auto steps = [&](int64_t s0, int64_t s1, int64_t b0, int64_t b1, const StepGemm<scalar_t>& gemm) {
      for (int64_t s = s0; s < s1; ++s) {
        const int64_t t = order.at(s);
        const int64_t n = std::min(rows.rows_of(t), b1);  // rows [b0, n) run at t
        if (n <= b0) continue;  // (packed: the upper half's sequences have all ended, or not begun)
        const int64_t act = std::clamp<int64_t>(active[t], b0, n);  // … and [b0, act) unmasked
        // (h, c)_{t-1}, by row
        const PrevRows<scalar_t> h = prev_rows(rows, order, t, hsv, h0v, P);
        const PrevRows<scalar_t> c = prev_rows(rows, order, t, csv, c0v, H);
        scalar_t* g = gv + rows.off[t] * 4 * H;
        scalar_t* hn = hsv + rows.off[t] * P;
        scalar_t* cn = csv + rows.off[t] * H;
        h.from(b0).gemm(gemm, 1, g + b0 * 4 * H, 4 * H, act - b0);
        scalar_t* rout = proj ? rv : hn;  // without projection r_t is h_t
        for_range(n - b0, 4 * H, [&](int64_t i0, int64_t i1) {
          for (int64_t b = b0 + i0; b < b0 + i1; ++b) {
            if (bv) add_row(g + b * 4 * H, bv, 4 * H);
            lstm_fwd_row(H, H, g + b * 4 * H, c.row(b), cn + b * H, rout + b * H);
          }
        });
        if (proj) (*project)(rv, H, 0, hn, P, n);
        if (m) {  // padded steps keep the previous state
          for (int64_t b = b0; b < b1; ++b) {
            if (m[t * B + b]) continue;
            std::copy(h.row(b), h.row(b) + P, hn + b * P);
            std::copy(c.row(b), c.row(b) + H, cn + b * H);
          }
        }
      }
    };
    auto recurrence = [&](int64_t s0, int64_t s1) {
      if (split) return split_recurrence(s0, s1);
      // (halves: never pipelined, so every step's projection ran first, on both cores)
      if (halves)
        return run_halves(B, mid, [&](int64_t b0, int64_t b1) { steps(s0, s1, b0, b1, step.of(b0, b1)); });
      steps(s0, s1, 0, B, step.of(0, B));
    };
    run_projected(order, rows, K, overlap, gates, x, w_ih, recurrence);
  });
  return {hs, cs, gates};
}

// Returns (dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr); dx / dw_hr empty when not needed / no projection.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_bwd(
    const c10::optional<Tensor>& dhs, const c10::optional<Tensor>& dcs, const Tensor& x,
    const c10::optional<Tensor>& mask, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
    const Tensor& w_hh, const c10::optional<Tensor>& w_hr, const Tensor& hs, const Tensor& cs,
    const Tensor& gates, bool need_dx, bool reverse, const c10::optional<Tensor>& batch_sizes,
    const c10::optional<Tensor>& dx_into) {
  const bool add_dx = adds_into(x, need_dx, dx_into);  // else dx is its own
  const StepRows rows = step_rows(x, batch_sizes);
  const int64_t T = rows.T, B = rows.B, H = c0.size(1), P = h0.size(1);
  const bool proj = w_hr.has_value() && w_hr->defined();
  // B = 1 without projection (split), or dense B > 1 with B ≤ H / 48 (bsplit): both cores in the
  // recurrence (split.h); else the weight gradients of one chunk overlap the next chunk's
  // recurrence (pipeline.h): two buffers
  const bool masked = mask.has_value() && mask->defined();
  const bool split = !proj && !rows.packed && split_units(B, masked, 4 * H * P, true);
  const bool bsplit = !proj && !rows.packed && !masked && split_batch_back(B, H, T);  // B > 1
  const int64_t K_one = split    ? split_chunk(T)
                        : bsplit ? split_batch_chunk(T, B, 4 * H)
                                 : chunk_steps(T, B, 4 * H + (proj ? P : 0));
  const bool overlap =
      !split && !bsplit && overlap_chunks((T + K_one - 1) / K_one, B, B * P * 4 * H, true);
  // a serial backward's recurrences as two batch halves, one per core (split.h)
  const bool halves =
      !split && !bsplit && !overlap && !proj && !rows.packed && batch_halves(B, 4 * H * P);
  const int64_t mid = halves ? halves_mid(rows) : 0;
  const int64_t K = pipelined_chunk(K_one, overlap);
  const int64_t slots = chunk_slots((T + K - 1) / K, overlap);
  auto da = at::empty({slots, K * B, 4 * H}, x.options());  // chunks' pre-activation gradients
  auto dh = at::zeros({B, P}, x.options());
  auto dc = at::zeros({B, H}, x.options());
  auto partials = split ? at::empty({2, 2, P}, x.options()) : Tensor();
  auto dh_in = at::empty({B, P}, x.options());  // gradient entering the cell at step t
  auto dr = proj ? at::empty({B, H}, x.options()) : dh_in;
  auto dh_cells = proj ? at::empty({slots, K * B, P}, x.options()) : Tensor();
  Tensor dx, dw_ih, dw_hh, db, dw_hr;  // made on first use (common.h OnFirstUse)
  const OnFirstUse weights([&] {
    dw_ih = recycled_empty(w_ih.sizes(), w_ih.options()), dw_hh = recycled_empty(w_hh.sizes(), w_hh.options()), db = at::empty({4 * H}, x.options());
    dw_hr = proj ? at::empty_like(*w_hr) : at::empty({0}, x.options());
  }, overlap);
  const OnFirstUse inputs([&] { dx = input_grads_like(x, need_dx, dx_into); }, overlap);
  auto cs_c = cs.contiguous();
  auto hs_c = hs.contiguous();
  auto c0c = c0.contiguous();
  auto gates_c = gates.contiguous();
  auto whh = w_hh.contiguous();
  auto whr = proj ? w_hr->contiguous() : Tensor();
  const StepOrder order{T, reverse};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_bwd", [&] {
    const scalar_t* csv = cs_c.data_ptr<scalar_t>();
    const scalar_t* gv = gates_c.data_ptr<scalar_t>();
    scalar_t* dhv = dh.data_ptr<scalar_t>();
    scalar_t* dcv = dc.data_ptr<scalar_t>();
    scalar_t* dinv = dh_in.data_ptr<scalar_t>();
    scalar_t* drv = dr.data_ptr<scalar_t>();
    const bool* m = mask_ptr(mask);
    const scalar_t* w = whh.data_ptr<scalar_t>();
    const BatchGemms<scalar_t> step(halves, mid, w, P, false, B, P, 4 * H);  // dh += da W_hh
    std::optional<UnitGemms<scalar_t>> units;  // (made after `step`: it reuses the pack slots)
    if (bsplit) units.emplace(whh, 4, H, B, true);
    std::optional<StepGemm<scalar_t>> back_project;  // dr = dh W_hr (as in the forward)
    if (proj) back_project.emplace(whr.data_ptr<scalar_t>(), H, false, B, H, P, 1);
    const auto active = running_rows(rows, m);
    const scalar_t* c0v = c0c.data_ptr<scalar_t>();
    // B = 1 without projection (P = H) on both cores, own units u: dh[u] = Σ both partials of the
    // step before (split.h)
    auto split_steps = [&](int64_t s0, int64_t s1, int64_t t0, const scalar_t* gh_out, int64_t ldh,
                           const scalar_t* gc_out, int64_t ldc, scalar_t* dav) {
      const Partials<scalar_t> parts{partials.data_ptr<scalar_t>(), H};
      run_split(H, s1 - s0, [&](int64_t i, const Units& u) {
        const int64_t t = order.at(s1 - 1 - i);
        if (i > 0) parts.add_to(i - 1, u, dhv);
        const scalar_t* go = gh_out ? gh_out + (t - t0) * ldh : nullptr;
        const scalar_t* gc = gc_out ? gc_out + (t - t0) * ldc : nullptr;
        for (int64_t j = u.u0; j < u.u1; ++j) {
          dinv[j] = dhv[j] + (go ? go[j] : scalar_t(0));
          dhv[j] = 0;
          if (gc) dcv[j] += gc[j];
        }
        const scalar_t* cprev = prev_rows(rows, order, t, csv, c0v, H).row(0);  // c_{t-1}
        scalar_t* da_t = dav + (t - t0) * 4 * H;
        lstm_bwd_row(u.n(), H, gv + t * 4 * H + u.u0, csv + t * H + u.u0, cprev + u.u0,
                     dinv + u.u0, dcv + u.u0, da_t + u.u0);
        partial_units<scalar_t>(w, H, 4, H, u, H, da_t, parts.mine(i, u));  // da[u] W_hh[u]
      }, [&](const Units& u) { parts.add_to(s1 - s0 - 1, u, dhv); });
    };
    // B > 1 on both cores (split.h split_batch_back), own units u, dense rows: dh[:, u] = Σ both
    // halves' partials of the step before (UnitGemms, backward form)
    auto bsplit_steps = [&](int64_t s0, int64_t s1, int64_t t0, const scalar_t* gh_out,
                            int64_t ldh, const scalar_t* gc_out, int64_t ldc, scalar_t* dav) {
      run_split(H, s1 - s0, [&](int64_t i, const Units& u) {
        const int64_t t = order.at(s1 - 1 - i), r0 = (t - t0) * B;
        if (i > 0) units->add_partials(i - 1, u, dhv);
        const PrevRows<scalar_t> cprev = prev_rows(rows, order, t, csv, c0v, H);
        scalar_t* da_t = dav + r0 * 4 * H;
        for (int64_t b = 0; b < B; ++b) {
          scalar_t* d = dhv + b * H;
          scalar_t* di = dinv + b * H;
          scalar_t* dcb = dcv + b * H;
          const scalar_t* go = gh_out ? gh_out + (r0 + b) * ldh : nullptr;
          const scalar_t* gc = gc_out ? gc_out + (r0 + b) * ldc : nullptr;
          for (int64_t j = u.u0; j < u.u1; ++j) {
            di[j] = d[j] + (go ? go[j] : scalar_t(0));
            d[j] = 0;
            if (gc) dcb[j] += gc[j];
          }
          const int64_t row = rows.off[t] + b;
          lstm_bwd_row(u.n(), H, gv + row * 4 * H + u.u0, csv + row * H + u.u0,
                       cprev.row(b) + u.u0, di + u.u0, dcb + u.u0, da_t + b * 4 * H + u.u0);
        }
        units->partials(i, u, da_t);
      }, [&](const Units& u) { units->add_partials(s1 - s0 - 1, u, dhv); });
    };
    // the steps [s0, s1) of the batch rows [b0, b1) (all rows, or a half) through `gemm`
    auto steps = [&](int64_t s0, int64_t s1, int64_t t0, const scalar_t* gh_out, int64_t ldh,
                     const scalar_t* gc_out, int64_t ldc, scalar_t* dav, int64_t slot, int64_t b0,
                     int64_t b1, const StepGemm<scalar_t>& gemm) {
      for (int64_t s = s1 - 1; s >= s0; --s) {
        const int64_t t = order.at(s), r0 = rows.off[t] - rows.off[t0];  // step t's chunk rows
        const int64_t n = std::min(rows.rows_of(t), b1);  // rows [b0, n) run at t
        const int64_t act = std::clamp<int64_t>(active[t], b0, n);  // … and [b0, act) unmasked
        // split dh into the part entering the cell (valid step) and the part kept (padding; packed:
        // rows past n_t are sequences not running at t, whose dh waits untouched)
        for (int64_t b = b0; b < n; ++b) {
          const bool valid = !m || m[t * B + b];
          scalar_t* d = dhv + b * P;
          scalar_t* di = dinv + b * P;
          const scalar_t* go = gh_out ? gh_out + (r0 + b) * ldh : nullptr;
          for (int64_t j = 0; j < P; ++j) {
            const scalar_t v = d[j] + (go ? go[j] : scalar_t(0));
            di[j] = valid ? v : scalar_t(0);
            d[j] = valid ? scalar_t(0) : v;
          }
        }
        if (proj) {  // through h_t = W_hr r_t
          std::copy(dinv + b0 * P, dinv + n * P, dh_cells[slot].data_ptr<scalar_t>() + (r0 + b0) * P);
          (*back_project)(dinv + b0 * P, P, 0, drv + b0 * H, H, n - b0);
        }
        const PrevRows<scalar_t> cprev = prev_rows(rows, order, t, csv, c0v, H);  // c_{t-1}, by row
        scalar_t* da_t = dav + r0 * 4 * H;
        for_range(n - b0, 4 * H, [&](int64_t i0, int64_t i1) {
          for (int64_t b = b0 + i0; b < b0 + i1; ++b) {
            scalar_t* dcb = dcv + b * H;
            if (gc_out) {
              const scalar_t* gco = gc_out + (r0 + b) * ldc;
              for (int64_t j = 0; j < H; ++j) dcb[j] += gco[j];
            }
            scalar_t* d = da_t + b * 4 * H;
            if (m && !m[t * B + b]) {  // padded: dc passes to c_{t-1} untouched
              std::fill(d, d + 4 * H, scalar_t(0));
              continue;
            }
            lstm_bwd_row(H, H, gv + (rows.off[t] + b) * 4 * H, csv + (rows.off[t] + b) * H,
                         cprev.row(b), drv + b * H, dcb, d);
          }
        });
        gemm(da_t + b0 * 4 * H, 4 * H, 1, dhv + b0 * P, P, act - b0);
      }
    };
    // the recurrence of the chunk [s0, s1) of steps as run: da of each step into slot's buffer
    auto recurrence = [&](int64_t slot, int64_t s0, int64_t s1) {
      const auto span = order.span(s0, s1);  // the chunk's steps [t0, t1)
      const int64_t t0 = span.first, t1 = span.second;
      scalar_t* dav = da[slot].data_ptr<scalar_t>();
      // the upstream gradients of the chunk's steps, row strides ldh, ldc (common.h grad_steps)
      const StepGrads gh = grad_steps(dhs, rows, t0, t1), gc = grad_steps(dcs, rows, t0, t1);
      const scalar_t* gh_out = gh.data<scalar_t>();  // null when absent
      const scalar_t* gc_out = gc.data<scalar_t>();
      const int64_t ldh = gh.ld, ldc = gc.ld;
      if (split) return split_steps(s0, s1, t0, gh_out, ldh, gc_out, ldc, dav);
      if (bsplit) return bsplit_steps(s0, s1, t0, gh_out, ldh, gc_out, ldc, dav);
      if (halves)
        return run_halves(B, mid, [&](int64_t b0, int64_t b1) {
          steps(s0, s1, t0, gh_out, ldh, gc_out, ldc, dav, slot, b0, b1, step.of(b0, b1));
        });
      steps(s0, s1, t0, gh_out, ldh, gc_out, ldc, dav, slot, 0, B, step.of(0, B));
    };
    // the chunk's weight gradients, as GEMMs over all its steps
    auto weight_grads = [&](int64_t slot, int64_t s0, int64_t s1) {
      const auto span = order.span(s0, s1);
      const int64_t t0 = span.first, t1 = span.second, count = rows.count(t0, t1);
      auto da_c = da[slot].narrow(0, 0, count);  // [rows, 4H]
      const bool first = s1 == T;  // written, not added to (acc_tn)
      weights.ensure();
      add_weight_grads(da_c, x, rows, t0, t1, dw_ih, db, first);
      add_prev_grads(dw_hh, da_c, h0, hs_c, rows, t0, t1, reverse, first);
      if (proj) {  // dW_hr += Σ dh_t^T r_t,  r_t = o ⊙ tanh(c_t)
        auto r = at::tanh(step_block(cs_c, rows, t0, t1));  // one chunk-sized temporary
        r.mul_(step_block(gates_c, rows, t0, t1).narrow(1, 3 * H, H));
        acc_tn(dw_hr, dh_cells[slot].narrow(0, 0, count), r, first);
      }
    };
    auto input_grads = [&](int64_t slot, int64_t s0, int64_t s1) {  // dx = da W_ih
      const auto span = order.span(s0, s1);
      const int64_t count = rows.count(span.first, span.second);
      inputs.ensure();
      input_grad(da[slot].narrow(0, 0, count), w_ih, rows, span.first, span.second, dx, add_dx);
    };
    run_chunks(T, K, overlap, recurrence, weight_grads, input_grads);
  });
  return {add_dx ? at::empty({0}, x.options()) : dx, dh, dc, dw_ih, dw_hh, db, dw_hr};
}

}  // namespace rnnlab
