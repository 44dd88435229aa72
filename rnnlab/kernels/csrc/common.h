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

// Input projection of all steps in one GEMM: x [T, B, I] @ w^T [I, G] + bias → [T, B, G].
inline Tensor project(const Tensor& x, const Tensor& w, const c10::optional<Tensor>& bias) {
  auto flat = x.reshape({-1, x.size(2)});
  auto out = (bias.has_value() && bias->defined()) ? at::addmm(*bias, flat, w.t()) : at::mm(flat, w.t());
  return out.view({x.size(0), x.size(1), w.size(0)});
}

// Σ_t a_t^T b_t for a [T, B, M], b [T, B, N] → [M, N] (one GEMM over all steps).
inline Tensor gemm_tn(const Tensor& a, const Tensor& b) {
  return at::mm(a.reshape({-1, a.size(-1)}).t(), b.reshape({-1, b.size(-1)}));
}

// Σ_t a_t^T h_{t-1} with h_{-1} = h0, without materialising the shifted states.
inline Tensor gemm_tn_prev(const Tensor& a, const Tensor& h0, const Tensor& hs) {
  auto out = at::mm(a[0].t(), h0);
  const int64_t T = a.size(0);
  if (T > 1) out.add_(gemm_tn(a.slice(0, 1, T), hs.slice(0, 0, T - 1)));
  return out;
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
