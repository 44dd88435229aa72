// Shared helpers of the fused whole-sequence kernels: row-major GEMM on raw pointers, activations,
// optional-tensor access. Layout conventions (all row-major, time-major):
//   x  [T, B, I]   input            mask [T, B, 1] bool (optional: all steps valid)
//   w_ih [G*H, I]  w_hh [G*H, P]    gate rows [i|f|g|o] (LSTM) or [r|z|n] (GRU)
//   hs [T, B, P]   carried states (frozen on padded steps), the layer output before masking
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <utility>
#include <vector>

#include "rows.h"

namespace rnnlab {

using at::Tensor;

// BLAS (Fortran interface, LP64) as exported by libtorch_cpu (MKL in the x86-64 wheels). Called
// on raw pointers: no tensor is created per time step.
extern "C" {
void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc);
void dgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc);
void sgemv_(const char* t, const int* m, const int* n, const float* alpha, const float* a,
            const int* lda, const float* x, const int* incx, const float* beta, float* y,
            const int* incy);
void dgemv_(const char* t, const int* m, const int* n, const double* alpha, const double* a,
            const int* lda, const double* x, const int* incx, const double* beta, double* y,
            const int* incy);
}

inline void blas_gemv(const char* t, const int* m, const int* n, const float* alpha,
                      const float* a, const int* lda, const float* x, const int* incx,
                      const float* beta, float* y, const int* incy) {
  sgemv_(t, m, n, alpha, a, lda, x, incx, beta, y, incy);
}
inline void blas_gemv(const char* t, const int* m, const int* n, const double* alpha,
                      const double* a, const int* lda, const double* x, const int* incx,
                      const double* beta, double* y, const int* incy) {
  dgemv_(t, m, n, alpha, a, lda, x, incx, beta, y, incy);
}

// Row-major y[N] = op(W) a + beta·y with op(W) = W^T (W [N, K], trans) or W (W [K, N]).
template <typename T>
inline void gemv(bool trans, int64_t N, int64_t K, const T* w, int64_t ldw, const T* a, T beta, T* y) {
  // column-major view of row-major W [N, K] is W^T [K, N]: y = W a is a 'T' gemv on it
  const char t = trans ? 'T' : 'N';
  const int m = static_cast<int>(trans ? K : N), n = static_cast<int>(trans ? N : K);
  const int ld = static_cast<int>(ldw), one = 1;
  const T alpha = 1;
  blas_gemv(&t, &m, &n, &alpha, w, &ld, a, &one, &beta, y, &one);
}

inline void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                      const float* alpha, const float* a, const int* lda, const float* b,
                      const int* ldb, const float* beta, float* c, const int* ldc) {
  sgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                      const double* alpha, const double* a, const int* lda, const double* b,
                      const int* ldb, const double* beta, double* c, const int* ldc) {
  dgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Row-major C[M, N] = alpha * op(A)[M, K] @ op(B)[K, N] + beta * C. BLAS is column-major, and a
// row-major matrix read column-major is its transpose, so this computes C^T = op(B)^T op(A)^T.
template <typename T>
inline void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                 int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  blas_gemm(&tb, &ta, &m, &n, &k, &alpha, B, &lb, A, &la, &beta, C, &lc);
}

// Pointer to the data of an optional tensor, or nullptr.
template <typename T>
inline const T* ptr_or_null(const c10::optional<Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->data_ptr<T>() : nullptr;
}

inline const bool* mask_ptr(const c10::optional<Tensor>& mask) {
  return (mask.has_value() && mask->defined()) ? mask->data_ptr<bool>() : nullptr;
}

// Input projection of the steps [t0, t1) as one GEMM: x[t0:t1] [n, B, I] @ w^T [I, G] into
// out[t0:t1] (out [T, B, G], contiguous). The bias is not added here: `addmm` first copies the
// broadcast bias into the whole output (LSTM B=64 H=64: 0.74 of its 1.55 ms), so the kernels add
// it row by row in the gate pass instead (add_row).
inline void project_into(Tensor& out, const Tensor& x, const Tensor& w, int64_t t0, int64_t t1) {
  const int64_t n = t1 - t0;
  Tensor rows = out.narrow(0, t0, n).view({n * x.size(1), w.size(0)});
  at::mm_out(rows, x.narrow(0, t0, n).reshape({n * x.size(1), x.size(2)}), w.t());
}

// Σ_t a_t^T b_t for a [T, B, M], b [T, B, N] → [M, N] (one GEMM over all steps). `a` may be a
// narrowed view of a wider buffer: flattened to 2-D first, so BLAS reads it in place (no copy).
inline Tensor rows2d(const Tensor& a) {
  if (a.is_contiguous()) return a.view({-1, a.size(-1)});
  if (a.stride(0) == a.size(1) * a.stride(1))  // e.g. a narrowed last dim: rows merge in place
    return a.as_strided({a.size(0) * a.size(1), a.size(2)}, {a.stride(1), a.stride(2)});
  return a.reshape({-1, a.size(-1)});  // otherwise (e.g. batch_first input) a copy
}
inline Tensor gemm_tn(const Tensor& a, const Tensor& b) { return at::mm(rows2d(a).t(), rows2d(b)); }

// Σ_t a_t^T h_{t-1} with h_{-1} = h0, without materialising the shifted states.
inline Tensor gemm_tn_prev(const Tensor& a, const Tensor& h0, const Tensor& hs) {
  const int64_t T = a.size(0), B = a.size(1);
  auto a2 = rows2d(a), h2 = rows2d(hs);
  auto out = at::mm(a2.narrow(0, 0, B).t(), h0);
  if (T > 1) out.addmm_(a2.narrow(0, B, (T - 1) * B).t(), h2.narrow(0, 0, (T - 1) * B));
  return out;
}

// The order a run visits its steps: s-th step processed → time index t, forward (t = s) or, for the
// backward direction of a bidirectional layer, reverse (t = T-1-s). `prev(t)` is the step whose
// state feeds step t; outside [0, T) it is the initial state.
struct StepOrder {
  int64_t T;
  bool reverse;
  int64_t at(int64_t s) const { return reverse ? T - 1 - s : s; }
  int64_t prev(int64_t t) const { return reverse ? t + 1 : t - 1; }
  bool inside(int64_t t) const { return t >= 0 && t < T; }
  // the time indices [t0, t1) of the processed steps [s0, s1)
  std::pair<int64_t, int64_t> span(int64_t s0, int64_t s1) const {
    return reverse ? std::make_pair(T - s1, T - s0) : std::make_pair(s0, s1);
  }
};

// Backward runs in chunks of steps, so the per-step gradient buffers are chunk-sized (peak
// training memory stays near the saved activations) while the weight-gradient GEMMs stay large.
// A chunk is about T/8 steps and at most 2048 rows, but at least 32 K elements of the widest chunk
// buffer (`width` values per row): each chunk costs ~5 small ATen calls, which would otherwise
// dominate small problems (RNN B=8 H=64 train: 0.95 → 1.19 ms with 13-step chunks). Whole-sequence
// chunks (the rule before) measured within ±5 % of this at B ≥ 8 but for small RNNs (interleaved
// A/B, 2 threads: LSTM B=32 H=128 14.2 vs 14.0 ms, GRU B=64 H=256 62.4 vs 62.2, RNN B=32 H=128
// 3.40 vs 3.67 ms).
inline int64_t chunk_steps(int64_t T, int64_t B, int64_t width) {
  B = std::max<int64_t>(B, 1);
  const int64_t cap = std::min<int64_t>(2048 / B, (T + 7) / 8);
  const int64_t floor_rows = (32768 + width - 1) / std::max<int64_t>(width, 1);
  const int64_t floor_steps = (floor_rows + B - 1) / B;
  return std::max<int64_t>(1, std::min<int64_t>(T, std::max(floor_steps, cap)));
}

// The upstream gradient of steps [t0, t1) as a contiguous [t1-t0, B, H] block: a view when the
// gradient is contiguous, else a copy of those steps only, so a broadcast gradient (out.sum()'s is
// an expanded scalar) is never materialised for the whole sequence at once.
inline Tensor grad_steps(const Tensor& dhs, int64_t t0, int64_t t1) {
  return dhs.narrow(0, t0, t1 - t0).contiguous();
}

// out += Σ_{t in [t0, t0+n)} a_t^T h_{t-1}  (h_{-1} = h0), a: the chunk's [n, B, M] rows.
// reverse: the previous state of step t is h_{t+1} (h_T = h0).
inline void add_prev_gemm(Tensor out, const Tensor& a, const Tensor& h0, const Tensor& hs, int64_t t0,
                          bool reverse = false) {
  const int64_t n = a.size(0), B = a.size(1);
  auto a2 = rows2d(a);
  if (reverse) {
    const bool last = t0 + n == hs.size(0);  // the chunk holds step T-1, whose previous is h0
    if (last) out.addmm_(a2.narrow(0, (n - 1) * B, B).t(), h0);
    const int64_t m = last ? n - 1 : n;
    if (m > 0) out.addmm_(a2.narrow(0, 0, m * B).t(), rows2d(hs.narrow(0, t0 + 1, m)));
    return;
  }
  if (t0 == 0) {
    out.addmm_(a2.narrow(0, 0, B).t(), h0);
    if (n > 1) out.addmm_(a2.narrow(0, B, (n - 1) * B).t(), rows2d(hs.narrow(0, 0, n - 1)));
  } else {
    out.addmm_(a2.t(), rows2d(hs.narrow(0, t0 - 1, n)));
  }
}

// States entering the chunk's steps, materialised: [h_{t0-1}, ..., h_{t0+n-2}] → [n, B, H]
// (reverse: [h_{t0+1}, ..., h_{t0+n}] with h_T = h0)
inline Tensor prev_states(const Tensor& h0, const Tensor& hs, int64_t t0, int64_t n,
                          bool reverse = false) {
  if (reverse) {
    if (t0 + n < hs.size(0)) return hs.narrow(0, t0 + 1, n);
    return at::cat({hs.narrow(0, t0 + 1, n - 1), h0.unsqueeze(0)}, 0);
  }
  if (t0 > 0) return hs.narrow(0, t0 - 1, n);
  return at::cat({h0.unsqueeze(0), hs.narrow(0, 0, n - 1)}, 0);
}

// The input weights' gradients of a chunk [t0, t0+n): dW_ih += da^T x, db += Σ da.
inline void add_weight_grads(const Tensor& da, const Tensor& x, int64_t t0, Tensor& dw_ih, Tensor& db) {
  auto a2 = rows2d(da);
  dw_ih.addmm_(a2.t(), rows2d(x.narrow(0, t0, da.size(0))));
  db.add_(a2.sum(0));
}

// The input gradient of a chunk: dx[t0 : t0+n] = da W_ih (nothing when dx is empty: not needed).
inline void input_grad(const Tensor& da, const Tensor& w_ih, int64_t t0, Tensor& dx) {
  if (dx.numel() == 0) return;
  auto rows = dx.narrow(0, t0, da.size(0)).view({-1, dx.size(2)});  // contiguous: dx is [T, B, I]
  at::mm_out(rows, rows2d(da), w_ih);
}

// Rows still running at each step when the mask has "prefix form" (batch sorted by decreasing
// length, as the layers arrange it): step t's valid rows are exactly [0, n_t). Then each step's
// recurrent GEMM needs only those n_t rows. Without a mask, or in any other form: n_t = B.
inline std::vector<int64_t> active_rows(const bool* m, int64_t T, int64_t B) {
  std::vector<int64_t> n(T, B);
  if (!m) return n;
  for (int64_t t = 0; t < T; ++t) {
    int64_t k = 0;
    while (k < B && m[t * B + k]) ++k;
    for (int64_t b = k; b < B; ++b)
      if (m[t * B + b]) return std::vector<int64_t>(T, B);  // not a prefix: use all rows
    n[t] = k;
  }
  return n;
}

// Run f(begin, end) over [0, n) in parallel when the work is large enough to pay for threads.
template <typename F>
inline void for_range(int64_t n, int64_t work_per_item, const F& f) {
  if (n * work_per_item < 32768) {
    f(0, n);
  } else {
    at::parallel_for(0, n, std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_item)), f);
  }
}

}  // namespace rnnlab
