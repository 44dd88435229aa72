// The kernels' row-major gemm/gemv on raw pointers (at the end), and which library runs their
// float32 calls: the BLAS libtorch exports (MKL in the x86-64 wheels) or oneDNN's dnnl_sgemm (the
// wheel the oneDNN path links; built with RNNLAB_ONEDNN).
//
// Chosen once per process: RNNLAB_GEMM=blas|onednn, else by the CPU's vendor — oneDNN on AMD,
// BLAS elsewhere — and changeable at run time (kernels.gemm_library). Measured on a 2-core AMD
// EPYC (Zen 4, AVX-512), µs per call, 2 threads (BENCHMARKS.md "GEMM library"): the input
// projection's shape [3200, 256] @ [256, 1024] MKL 11 992 vs oneDNN 7 802; a per-step
// [8, 512] @ [512, 2048] MKL packed 221 vs oneDNN 94; 2048³ 93.9 vs 79.3 ms. MKL dispatches a
// slower code path on AMD; on the Intel Xeon every rule in these kernels was tuned with MKL.
// With oneDNN, a step GEMM of 16 rows or more runs its matmul primitive instead (matmul.cpp).
// float64 always runs BLAS (oneDNN has no dgemm).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#ifdef RNNLAB_ONEDNN
#include "oneapi/dnnl/dnnl.h"  // dnnl_sgemm: row-major C = alpha op(A) op(B) + beta C
#endif

namespace rnnlab {

// The per-step GEMM through oneDNN's matmul primitive, W reordered once (matmul.cpp): made for
// C[M, N] = A[M, K] op(W) (op(W) = W^T of a row-major [N, K] W when trans, else W [K, N]; W must
// outlive it), run with beta 0 or 1, on one thread when `serial`.
struct OnednnMatmul;
#ifdef RNNLAB_ONEDNN
std::shared_ptr<OnednnMatmul> onednn_matmul(const float* w, int64_t ldw, bool trans, int64_t M,
                                            int64_t N, int64_t K);
void onednn_matmul_run(OnednnMatmul& m, const float* A, int64_t lda, float beta, float* C,
                       int64_t ldc, bool serial);
#endif

enum class GemmLib : int { kBlas = 0, kOnednn = 1 };

constexpr bool onednn_gemm_built() {
#ifdef RNNLAB_ONEDNN
  return true;
#else
  return false;
#endif
}

inline bool cpu_is_amd() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
  char vendor[13];
  std::memcpy(vendor, &b, 4), std::memcpy(vendor + 4, &d, 4), std::memcpy(vendor + 8, &c, 4);
  vendor[12] = '\0';
  return std::string(vendor) == "AuthenticAMD";
#else
  return false;
#endif
}

inline GemmLib default_gemm_lib() {
  const char* env = std::getenv("RNNLAB_GEMM");
  const std::string v = env ? env : "auto";
  if (!onednn_gemm_built() || v == "blas" || v == "mkl") return GemmLib::kBlas;
  if (v == "onednn") return GemmLib::kOnednn;
  return cpu_is_amd() ? GemmLib::kOnednn : GemmLib::kBlas;
}

// The process-wide choice (one instance across the extension's translation units: inline).
inline std::atomic<int>& gemm_lib_setting() {
  static std::atomic<int> lib{static_cast<int>(default_gemm_lib())};
  return lib;
}
inline bool use_onednn_gemm() {
  return onednn_gemm_built() &&
         gemm_lib_setting().load(std::memory_order_relaxed) == static_cast<int>(GemmLib::kOnednn);
}

// The row counts M for which oneDNN runs a GEMM when it is the library: below 16 and from 256.
// Between, dnnl_sgemm took a slower path than MKL (2-core EPYC, [M, 512] @ [512, 2048], µs, MKL
// packed → oneDNN, two threads: M=8 204 → 94, M=15 374 → 162, M=16 303 → 1036, M=24 370 → 1106;
// one thread: M=15 513 → 321, M=16 463 → 654; [32, 256] @ [256, 1024] two threads 116 → 164),
// and from 256 rows it is ahead again ([3200, 256] @ [256, 1024] 11 992 → 7 802).
inline bool onednn_rows(int64_t M) { return M < 16 || M >= 256; }
// The whole-matrix GEMMs (mm_into: input projections, dx, weight gradients) also for M in
// [16, 256) unless B is transposed and large: the cliff above is dnnl_sgemm packing a transposed
// B ([N, K] read as op(B) = B^T) on every call, which costs ~N·K, so M rows pay for it from about
// N·K / 4096. Two threads, µs, MKL → oneDNN: op(B) = B^T (the input projection x W_ih^T) [100,
// 128] @ [128, 512] 91 → 80, [128, …] 178 → 100, [16, …] 24 → 24; [64, 256] @ [256, 1024] 290 →
// 275, [32, …] 168 → 196 (loses below N·K / 4096); [100, 512] @ [512, 2048] 1708 → 1918 (loses:
// MKL keeps it); B as stored (dx = da W_ih) [200, 2048] @ [2048, 512] 2645 → 2146, [64, 512] @
// [512, 128] 50 → 43, [100, 1024] @ [1024, 256] 292 → 240; B^T first (dW = da^T x) [32, 672] @
// [672, 32] 18 → 10. Layers, same process, switched per call, alternating, training / inference
// ms, old rule → this one: LSTM B=1 H=128 1.12 → 1.03 / 0.350 → 0.342, H=256 T=150 6.15 → 5.83 /
// 1.68 → 1.55, H=512 21.1 → 19.8; LSTM B=8 H=512 71.0 → 68.3, B=8 H=256 20.1 → 19.3, B=32 H=128
// 19.3 → 18.3; GRU B=8 H=512 77.3 → 72.6, B=8 H=128 5.01 → 4.76 / 1.51 → 1.36; RNN B=1 H=64 T=96
// 0.415 → 0.320; T=1000 B=1 LSTM H=128 10.1 → 9.6, GRU H=64 3.04 → 2.82.
inline bool onednn_takes(int64_t M, int64_t N, int64_t K, bool trans_b) {
  return onednn_rows(M) || !trans_b || M * 4096 >= N * K;
}

// Row-major C[M, N] = alpha op(A) op(B) + beta C through oneDNN, on one thread when `serial`
// (OpenMP's thread count is the calling thread's own setting, restored after; inside a parallel
// region oneDNN runs serially anyway). Only called when use_onednn_gemm().
inline void onednn_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                         const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                         float* C, int64_t ldc, bool serial = false) {
#ifdef RNNLAB_ONEDNN
  const int previous = serial && !omp_in_parallel() ? omp_get_max_threads() : 0;
  if (previous > 1) omp_set_num_threads(1);
  const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K,
                                          alpha, A, lda, B, ldb, beta, C, ldc);
  if (previous > 1) omp_set_num_threads(previous);
  TORCH_CHECK(status == dnnl_success, "dnnl_sgemm failed with status ", static_cast<int>(status));
#else
  TORCH_CHECK(false, "rnnlab was built without oneDNN: no dnnl_sgemm");
#endif
}

// The same with op(A) non-transposed, in blocks of at most 15 rows: dnnl_sgemm's kernel for
// M < 16 reads W as it lies, while from 16 rows it packs op(B) on every call (onednn_rows). For
// 16 ≤ M < 256 rows against a W of many weights (a packed sequence's shorter steps, which the
// full-batch matmul primitive does not take; mm_into's GEMMs that MKL took) this beats MKL on
// AMD. µs per call, one thread → two, MKL → blocks: [16, 256] @ [256, 1024] 118 → 93 / 85 → 52,
// [18, …] 136 → 102 / 101 → 56, [24, …] 158 → 132 / 101 → 73, [32, …] 198 → 182 / 133 → 110;
// [18, 512] @ [512, 2048] 529 → 373 / 384 → 204, [64, …] 1524 → 1407 / 1095 → 771.
inline void onednn_sgemm_rows(bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                              int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                              int64_t ldc, bool serial) {
  const int64_t blocks = (M + 14) / 15, rows = (M + blocks - 1) / blocks;
  for (int64_t r0 = 0; r0 < M; r0 += rows)
    onednn_sgemm(false, trans_b, std::min(rows, M - r0), N, K, 1.0f, A + r0 * lda, lda, B, ldb, beta,
                 C + r0 * ldc, ldc, serial);
}

template <typename T>
inline void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
                 int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);  // (below)

// gemm() routed as mm_into below routes its tensors: dnnl_sgemm where onednn_takes the shape,
// else its 15-row blocks for an op(A) as stored, else BLAS (gemm). Also the cell step's GEMMs
// (cell_train.cpp), whose few rows (a batch) meet whole weight matrices as mm_into's do.
template <typename T>
inline void gemm_routed(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A,
                        int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if constexpr (std::is_same<T, float>::value) {
    if (use_onednn_gemm() && onednn_takes(M, N, K, trans_b))
      return onednn_sgemm(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    if (use_onednn_gemm() && !trans_a)
      return onednn_sgemm_rows(trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc, false);
  }
  gemm<T>(trans_a, trans_b, M, N, K, T(1), A, lda, B, ldb, beta, C, ldc);
}

// A 2-D operand as row-major op(X): {transposed, leading dimension}, or ld < 0 when its strides
// are neither (the caller falls back to ATen).
inline std::pair<bool, int64_t> operand(const at::Tensor& x) {
  if (x.stride(1) == 1 && x.stride(0) >= std::max<int64_t>(1, x.size(1))) return {false, x.stride(0)};
  if (x.stride(0) == 1 && x.stride(1) >= std::max<int64_t>(1, x.size(0))) return {true, x.stride(1)};
  return {false, -1};
}

// out = a @ b + beta·out for 2-D tensors (any of them a transposed or narrowed view): oneDNN for
// float when it is the GEMM library and the strides allow: dnnl_sgemm where the shape suits it
// (onednn_takes), else, for a op(A) as stored, dnnl_sgemm in blocks of ≤ 15 rows
// (onednn_sgemm_rows: what MKL took, a transposed B of many weights against 16–255 rows, e.g.
// a chunk's input projection x W_ih^T); otherwise ATen (MKL). µs, two threads / one, MKL →
// blocks: [25, 256] @ [256, 1024] 124 → 73 / 173 → 139, [50, …] 208 → 140 / 300 → 279; [100,
// 512] @ [512, 2048] 1654 → 1103 / 2190 → 2045, [240, …] 3547 → 2614 / 5100 → 4906; [100, 512]
// @ [512, 1536] 1226 → 815. Layers (B = 1, split: the projection of all 100 steps at once),
// same process, alternating, ms, inference / training: GRU H=512 3.09 → 2.90 / 8.51 → 8.39 (and
// 4.20 → 3.57 / 11.05 → 10.56); LSTM P=128 H=256 1.01 → 0.94 / 3.16 → 3.06 (chunks of steps);
// LSTM B=8 H=512 training 62.9 → 62.1; elsewhere even (LSTM B=1 H ≤ 256 projects on dnnl_sgemm).
inline void mm_into(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, double beta = 0) {
  if (use_onednn_gemm() && out.scalar_type() == at::kFloat && out.numel() > 0 && a.size(1) > 0) {
    const auto [ta, lda] = operand(a);
    const auto [tb, ldb] = operand(b);
    const int64_t M = out.size(0), N = out.size(1), K = a.size(1);
    const bool routed = !ta || onednn_takes(M, N, K, tb);  // (else ATen, below)
    if (lda > 0 && ldb > 0 && out.stride(1) == 1 && out.stride(0) >= N && routed)
      return gemm_routed<float>(ta, tb, M, N, K, a.data_ptr<float>(), lda, b.data_ptr<float>(), ldb,
                                static_cast<float>(beta), out.data_ptr<float>(), out.stride(0));
  }
  if (beta == 0) at::mm_out(out, a, b);
  else out.addmm_(a, b, beta, 1);
}

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
  if constexpr (std::is_same<T, float>::value) {
    if (use_onednn_gemm())  // y[1, N] = a[1, K] op(W) (gemm.h)
      return onednn_sgemm(false, trans, 1, N, K, 1.0f, a, K, w, ldw, beta, y, N);
  }
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
  if constexpr (std::is_same<T, float>::value) {
    if (use_onednn_gemm() && onednn_rows(M))
      return onednn_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
  const int la = static_cast<int>(lda), lb = static_cast<int>(ldb), lc = static_cast<int>(ldc);
  blas_gemm(&tb, &ta, &m, &n, &k, &alpha, B, &lb, A, &la, &beta, C, &lc);
}

}  // namespace rnnlab
