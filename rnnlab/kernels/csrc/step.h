// One time step of each cell on raw row-major pointers (no gradients): x [B,I], h [B,P], c [B,H].
// Same math as the sequence kernels (rows.h); the affine maps write into a reused per-thread
// scratch, so a step writes only its outputs. Used by the step ops and by the one-call streaming
// step, both in step.cpp.
#pragma once

#include "packed.h"

namespace rnnlab {
namespace stepk {

constexpr int64_t kStreamGemv = 65536;  // weights above which a lone step uses BLAS's gemv

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
  // B = 1: gemv_step up to 64K weights, MKL's gemv above, measured for a lone streaming step at
  // 2 threads (H=256: RNN 5.3 µs vs 7.9 with gemv; LSTM 19 µs vs 36 and GRU 15.5 vs 20 with
  // gemv_step: its threaded split loses to MKL's once the weights no longer stay in cache)
  if (B == 1 && N * K > kStreamGemv) gemv<T>(true, N, K, w, K, a, T(1), out);
  else if (B == 1) gemv_step<T>(w, K, true, N, K, a, T(1), out);
  else gemm<T>(false, true, B, N, K, T(1), a, K, w, K, T(1), out, N);
}

// h' = f(W_ih x + b_ih + W_hh h + b_hh)
template <typename T>
void rnn(const T* x, int64_t B, int64_t I, const T* h, int64_t H, const T* w_ih, const T* w_hh,
         const T* b_ih, const T* b_hh, bool relu, T* out) {
  T* q = scratch<T>(B * H);
  affine(x, B, I, w_ih, b_ih, H, out);
  affine(h, B, H, w_hh, b_hh, H, q);
  RNNLAB_SIMD for (int64_t j = 0; j < B * H; ++j) {
    const T a = out[j] + q[j];
    out[j] = relu ? (a > 0 ? a : T(0)) : std::tanh(a);
  }
}

// [i,f,g,o] = [σ,σ,tanh,σ](W_ih x + b_ih + W_hh h + b_hh); c' = f⊙c + i⊙g; h' = W_hr (o⊙tanh c')
template <typename T>
void lstm(const T* x, int64_t B, int64_t I, const T* h, int64_t P, const T* c, int64_t H,
          const T* w_ih, const T* w_hh, const T* b_ih, const T* b_hh, const T* w_hr, T* h_out,
          T* c_out) {
  T* g = scratch<T>(2 * B * 4 * H + B * H);
  T* q = g + B * 4 * H;
  T* r = q + B * 4 * H;
  affine(x, B, I, w_ih, b_ih, 4 * H, g);
  affine(h, B, P, w_hh, b_hh, 4 * H, q);
  RNNLAB_SIMD for (int64_t j = 0; j < B * 4 * H; ++j) g[j] += q[j];
  T* rout = w_hr ? r : h_out;
  for (int64_t b = 0; b < B; ++b) lstm_fwd_row(H, H, g + b * 4 * H, c + b * H, c_out + b * H, rout + b * H);
  if (w_hr) affine<T>(r, B, H, w_hr, nullptr, P, h_out);
}

// [r|z] = σ(W_i{r,z} x + b + W_h{r,z} h + b);  after:  n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))
// before: n = tanh(W_in x + b_in + W_hn (r⊙h) + b_hn);  h' = (1-z)⊙n + z⊙h
template <typename T>
void gru(const T* x, int64_t B, int64_t I, const T* h, int64_t H, const T* w_ih, const T* w_hh,
         const T* b_ih, const T* b_hh, bool after, T* out) {
  T* gi = scratch<T>(2 * B * 3 * H + 2 * B * H + 4 * H + H + 3 * H);
  T* q = gi + B * 3 * H;
  T* s = q + B * 3 * H;  // one row's n pre-activation, then r ⊙ h
  T* rh = s + B * H;
  T* row = rh + B * H;       // [4H]
  T* no_bias = row + 4 * H;  // [H] zeros (q already holds b_hh)
  T* qz = no_bias + H;       // [3H]
  std::fill(no_bias, no_bias + H, T(0));
  affine(x, B, I, w_ih, b_ih, 3 * H, gi);
  if (after) {
    affine(h, B, H, w_hh, b_hh, 3 * H, q);
    for (int64_t b = 0; b < B; ++b)
      gru_after_fwd_row(H, H, gi + b * 3 * H, q + b * 3 * H, H, static_cast<const T*>(nullptr),
                        no_bias, h + b * H, row, out + b * H);
  } else {
    affine(h, B, H, w_hh, b_hh, 2 * H, q);  // [r|z] rows, q is [B, 2H] here
    for (int64_t b = 0; b < B; ++b) {
      std::copy(q + b * 2 * H, q + (b + 1) * 2 * H, qz);
      gru_before_gates_row(H, gi + b * 3 * H, qz, h + b * H, row, rh);
      affine(rh, 1, H, w_hh + 2 * H * H, b_hh ? b_hh + 2 * H : nullptr, H, s);
      gru_before_out_row(H, gi + b * 3 * H, s, no_bias, h + b * H, row, out + b * H);
    }
  }
}

}  // namespace stepk
}  // namespace rnnlab
