// One time step of each cell on raw row-major pointers (no gradients): x [B,I], h [B,P], c [B,H].
// Same math as the sequence kernels (rows.h); the affine maps write into a reused per-thread
// scratch, so a step writes only its outputs. Used by the step ops and by the one-call streaming
// step, both in step.cpp.
#pragma once

#include <omp.h>

#include "split.h"

namespace rnnlab {
namespace stepk {

// A lone B = 1 step above 64 K weights (all G·H·(I + P) of W_ih and W_hh) runs on both cores
// split by hidden units (split.h): each thread computes, for its half of the units, their rows of
// every gate block of W_ih and W_hh and then their gate math, so its half of the weights stays in
// its core's L2 from call to call and a step needs no exchange between the threads. On one thread
// BLAS's gemv takes the steps above that size. Measured in BENCHMARKS.md (streaming rows).
constexpr int64_t kStreamGemv = 65536;

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
  // B = 1: gemv_step up to 64K weights, BLAS's gemv above (one thread, or a projection; on the
  // Xeon, 2 threads, it beat gemv_step's rows split over the threads: LSTM H=256 19 µs vs 36)
  if (B == 1 && N * K > kStreamGemv) gemv<T>(true, N, K, w, K, a, T(1), out);
  else if (B == 1) gemv_step<T>(w, K, true, N, K, a, T(1), out);
  else gemm<T>(false, true, B, N, K, T(1), a, K, w, K, T(1), out, N);
}

inline bool split_step(int64_t B, int64_t weights) {
  return B == 1 && weights > kStreamGemv && at::get_num_threads() >= 2 && !at::in_parallel_region();
}

// f(units) on two threads at once (one thread alone: every unit). A bare OpenMP region: the step
// calls no ATen, and at::parallel_for's bookkeeping cost ~0.4 µs of a 5.5 µs RNN H=256 step.
// f must not throw.
template <class F>
void both_halves(int64_t H, const F& f) {
  const int64_t mid = split_mid(H);
#pragma omp parallel num_threads(2)
  {
    const int role = omp_get_thread_num(), threads = omp_get_num_threads();
    if (threads == 1) f(Units{0, H, 0, 1});
    else f(role == 0 ? Units{0, mid, 0, 2} : Units{mid, H, 1, 2});
  }
}

// n zeros, for the calling thread
template <typename T>
const T* zeros(int64_t n) {
  static thread_local std::vector<T> z;
  if (int64_t(z.size()) < n) z.assign(n, T(0));
  return z.data();
}

// out[k H + j] = b1 + b2 + W[k H + j] · a for the G gate blocks k and the thread's units j
// (W [G H, K] row-major; either bias may be null)
template <typename T>
void affine_units(const T* a, int64_t K, const T* w, const T* b1, const T* b2, int64_t G, int64_t H,
                  const Units& u, T* out) {
  for (int64_t k = 0; k < G; ++k)
    for (int64_t j = k * H + u.u0; j < k * H + u.u1; ++j)
      out[j] = (b1 ? b1[j] : T(0)) + (b2 ? b2[j] : T(0));
  gemv_units(w, K, G, H, u, K, a, out);
}

// h' = f(W_ih x + b_ih + W_hh h + b_hh)
template <typename T>
void rnn(const T* x, int64_t B, int64_t I, const T* h, int64_t H, const T* w_ih, const T* w_hh,
         const T* b_ih, const T* b_hh, bool relu, T* out) {
  if (split_step(B, H * (I + H))) {
    return both_halves(H, [&](const Units& u) {
      T* a = scratch<T>(H);
      affine_units(x, I, w_ih, b_ih, b_hh, 1, H, u, a);
      gemv_units(w_hh, H, 1, H, u, H, h, a);
      RNNLAB_SIMD for (int64_t j = u.u0; j < u.u1; ++j)
        out[j] = relu ? (a[j] > 0 ? a[j] : T(0)) : std::tanh(a[j]);
    });
  }
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
  if (!w_hr && split_step(B, 4 * H * (I + H))) {
    return both_halves(H, [&](const Units& u) {
      T* g = scratch<T>(4 * H);
      affine_units(x, I, w_ih, b_ih, b_hh, 4, H, u, g);
      gemv_units(w_hh, H, 4, H, u, H, h, g);
      lstm_fwd_row(u.n(), H, g + u.u0, c + u.u0, c_out + u.u0, h_out + u.u0);
    });
  }
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
  if (after && split_step(B, 3 * H * (I + H))) {
    return both_halves(H, [&](const Units& u) {
      T* gi = scratch<T>(3 * H + 3 * H + 4 * H);
      T* q = gi + 3 * H;
      T* row = q + 3 * H;
      affine_units(x, I, w_ih, b_ih, static_cast<const T*>(nullptr), 3, H, u, gi);
      affine_units(h, H, w_hh, b_hh, static_cast<const T*>(nullptr), 3, H, u, q);
      gru_after_fwd_row(u.n(), H, gi + u.u0, q + u.u0, H, static_cast<const T*>(nullptr),
                        zeros<T>(H) + u.u0, h + u.u0, row + u.u0, out + u.u0);  // (q holds b_hn)
    });
  }
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
