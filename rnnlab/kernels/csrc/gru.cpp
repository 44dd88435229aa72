// GRU, whole sequence, both reset forms: forward and backpropagation through time.
//   r = σ(gi_r + W_hr h + b_hr), z = σ(gi_z + W_hz h + b_hz), h_t = (1-z)⊙n + z⊙h
//   after:  n = tanh(gi_n + r⊙(W_hn h + b_hn))      workspace [r|z|n|hn], hn = W_hn h + b_hn
//   before: n = tanh(gi_n + W_hn (r⊙h) + b_hn)      workspace [r|z|n]
#include "common.h"

namespace rnnlab {

// x [T,B,I], h0 [B,H], w_ih [3H,I], w_hh [3H,H] → hs [T,B,H], ws [T,B,4H or 3H]
std::tuple<Tensor, Tensor> gru_fwd(const Tensor& x, const c10::optional<Tensor>& mask,
                                   const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                                   const c10::optional<Tensor>& b_ih,
                                   const c10::optional<Tensor>& b_hh, bool after) {
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1), W = after ? 4 * H : 3 * H;
  Tensor gi = project(x, w_ih, b_ih).contiguous();  // [T,B,3H]
  auto hs = at::empty({T, B, H}, x.options());
  auto ws = at::empty({T, B, W}, x.options());
  auto gh = at::empty({B, 3 * H}, x.options());   // recurrent pre-activations of one step
  auto rh = at::empty({B, H}, x.options());       // r ⊙ h (reset="before")
  auto whh = w_hh.contiguous();
  auto h0c = h0.contiguous();
  auto bhh = b_hh.has_value() && b_hh->defined() ? b_hh->contiguous() : Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_fwd", [&] {
    const scalar_t* giv = gi.data_ptr<scalar_t>();
    scalar_t* hsv = hs.data_ptr<scalar_t>();
    scalar_t* wsv = ws.data_ptr<scalar_t>();
    scalar_t* ghv = gh.data_ptr<scalar_t>();
    scalar_t* rhv = rh.data_ptr<scalar_t>();
    const scalar_t* w = whh.data_ptr<scalar_t>();
    const scalar_t* bias = bhh.defined() ? bhh.data_ptr<scalar_t>() : nullptr;
    const bool* m = mask_ptr(mask);
    const scalar_t* h = h0c.data_ptr<scalar_t>();
    for (int64_t t = 0; t < T; ++t) {
      const int64_t rows = after ? 3 * H : 2 * H;  // "before" needs r first for the n rows
      gemm<scalar_t>(false, true, B, rows, H, 1, h, H, w, H, 0, ghv, 3 * H);
      scalar_t* hn_out = hsv + t * B * H;
      for_range(B, 3 * H, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* g = giv + (t * B + b) * 3 * H;
          const scalar_t* q = ghv + b * 3 * H;
          const scalar_t* hb = h + b * H;
          scalar_t* s = wsv + (t * B + b) * W;
          RNNLAB_SIMD
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t br = bias ? bias[j] : scalar_t(0), bz = bias ? bias[H + j] : scalar_t(0);
            const scalar_t r = sigmoid(g[j] + q[j] + br);
            s[j] = r;
            s[H + j] = sigmoid(g[H + j] + q[H + j] + bz);
            if (after) {
              const scalar_t hn = q[2 * H + j] + (bias ? bias[2 * H + j] : scalar_t(0));
              s[3 * H + j] = hn;
              s[2 * H + j] = std::tanh(g[2 * H + j] + r * hn);
            } else {
              rhv[b * H + j] = r * hb[j];
            }
          }
        }
      });
      if (!after)  // W_hn (r ⊙ h)
        gemm<scalar_t>(false, true, B, H, H, 1, rhv, H, w + 2 * H * H, H, 0, ghv + 2 * H, 3 * H);
      for_range(B, 3 * H, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const scalar_t* g = giv + (t * B + b) * 3 * H;
          const scalar_t* q = ghv + b * 3 * H;
          const scalar_t* hb = h + b * H;
          scalar_t* s = wsv + (t * B + b) * W;
          scalar_t* out = hn_out + b * H;
          if (m && !m[t * B + b]) {
            std::copy(hb, hb + H, out);
            if (!after)
              for (int64_t j = 0; j < H; ++j) s[2 * H + j] = 0;  // never read: dh_in = 0 there
            continue;
          }
          RNNLAB_SIMD
          for (int64_t j = 0; j < H; ++j) {
            if (!after)
              s[2 * H + j] = std::tanh(g[2 * H + j] + q[2 * H + j] + (bias ? bias[2 * H + j] : scalar_t(0)));
            const scalar_t n = s[2 * H + j], z = s[H + j];
            out[j] = n + z * (hb[j] - n);  // (1-z) n + z h
          }
        }
      });
      h = hn_out;
    }
  });
  return {hs, ws};
}

// Returns (dx, dh0, dw_ih, dw_hh, db_ih, db_hh); dx empty when need_dx is false.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_bwd(
    const Tensor& dhs, const Tensor& x, const c10::optional<Tensor>& mask, const Tensor& h0,
    const Tensor& w_ih, const Tensor& w_hh, const Tensor& hs, const Tensor& ws, bool after,
    bool need_dx) {
  const int64_t T = x.size(0), B = x.size(1), H = h0.size(1), W = after ? 4 * H : 3 * H;
  auto dgi = at::empty({T, B, 3 * H}, x.options());
  auto dgh = after ? at::empty({T, B, 3 * H}, x.options()) : Tensor();
  auto dh = at::zeros({B, H}, x.options());
  auto drh = at::empty({B, H}, x.options());
  auto dhs_c = dhs.contiguous();
  auto hs_c = hs.contiguous();
  auto ws_c = ws.contiguous();
  auto h0c = h0.contiguous();
  auto whh = w_hh.contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_bwd", [&] {
    const scalar_t* go = dhs_c.data_ptr<scalar_t>();
    const scalar_t* hsv = hs_c.data_ptr<scalar_t>();
    const scalar_t* wsv = ws_c.data_ptr<scalar_t>();
    const scalar_t* w = whh.data_ptr<scalar_t>();
    scalar_t* dgiv = dgi.data_ptr<scalar_t>();
    scalar_t* dghv = after ? dgh.data_ptr<scalar_t>() : nullptr;
    scalar_t* dhv = dh.data_ptr<scalar_t>();
    scalar_t* drhv = drh.data_ptr<scalar_t>();
    const bool* m = mask_ptr(mask);
    for (int64_t t = T - 1; t >= 0; --t) {
      const scalar_t* hp_all = t > 0 ? hsv + (t - 1) * B * H : h0c.data_ptr<scalar_t>();
      for_range(B, 3 * H, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          const bool valid = !m || m[t * B + b];
          const scalar_t* s = wsv + (t * B + b) * W;
          const scalar_t* hp = hp_all + b * H;
          const scalar_t* gob = go + (t * B + b) * H;
          scalar_t* d = dhv + b * H;
          scalar_t* gi = dgiv + (t * B + b) * 3 * H;
          scalar_t* gh = after ? dghv + (t * B + b) * 3 * H : nullptr;
          RNNLAB_SIMD
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t tot = d[j] + gob[j];
            const scalar_t din = valid ? tot : scalar_t(0);
            const scalar_t r = s[j], z = s[H + j], n = s[2 * H + j];
            const scalar_t dan = din * (1 - z) * (1 - n * n);  // dn · tanh'
            const scalar_t daz = din * (hp[j] - n) * z * (1 - z);  // dz · σ'
            gi[H + j] = daz;
            gi[2 * H + j] = dan;
            if (after) {
              const scalar_t hn = s[3 * H + j];
              const scalar_t dar = dan * hn * r * (1 - r);  // dr · σ'
              gi[j] = dar;
              gh[j] = dar, gh[H + j] = daz, gh[2 * H + j] = dan * r;
            }
            d[j] = valid ? din * z : tot;  // direct path to h_{t-1} (+ kept on padding)
          }
        }
      });
      scalar_t* gi_t = dgiv + t * B * 3 * H;
      if (after) {
        gemm<scalar_t>(false, false, B, H, 3 * H, 1, dghv + t * B * 3 * H, 3 * H, w, H, 1, dhv, H);
      } else {
        // d(r⊙h) = dan W_hn;  dr = d(r⊙h) ⊙ h;  dh += d(r⊙h) ⊙ r + [dar|daz] W_h[rz]
        gemm<scalar_t>(false, false, B, H, H, 1, gi_t + 2 * H, 3 * H, w + 2 * H * H, H, 0, drhv, H);
        for (int64_t b = 0; b < B; ++b) {
          const scalar_t* s = wsv + (t * B + b) * W;
          const scalar_t* hp = hp_all + b * H;
          scalar_t* gi = gi_t + b * 3 * H;
          scalar_t* d = dhv + b * H;
          const scalar_t* q = drhv + b * H;
          RNNLAB_SIMD
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t r = s[j];
            gi[j] = q[j] * hp[j] * r * (1 - r);
            d[j] += q[j] * r;
          }
        }
        gemm<scalar_t>(false, false, B, H, 2 * H, 1, gi_t, 3 * H, w, H, 1, dhv, H);
      }
    }
  });
  Tensor dx = need_dx ? at::matmul(dgi, w_ih) : at::empty({0}, x.options());
  Tensor dw_hh, db_hh;
  if (after) {
    dw_hh = gemm_tn_prev(dgh, h0, hs_c);
    db_hh = dgh.sum({0, 1});
  } else {
    auto hp = at::cat({h0.unsqueeze(0), hs_c.slice(0, 0, T - 1)}, 0);
    auto r = ws_c.narrow(2, 0, H);
    dw_hh = at::cat({gemm_tn(dgi.narrow(2, 0, 2 * H), hp), gemm_tn(dgi.narrow(2, 2 * H, H), r * hp)}, 0);
    db_hh = dgi.sum({0, 1});
  }
  return {dx, dh, gemm_tn(dgi, x), dw_hh, dgi.sum({0, 1}), db_hh};
}

}  // namespace rnnlab
