// The recurrent GEMM of every time step, C[M,N] = A[M,K] @ op(W) + beta·C, with the weight W packed
// once per sequence (MKL's sgemm pack/compute API, exported by libtorch_cpu) instead of being
// re-packed by sgemm at each of the T steps. float64 has no packed API: plain GEMM.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "common.h"
#include "matvec.h"

extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k);
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest);
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc);
int MKL_Set_Num_Threads_Local(int nt);  // this thread's MKL thread count (0: the global one)
}

namespace rnnlab {

// above 1 MB of float weights BLAS's gemv beats gemv_step even with the weights re-read each step
// (H = 512: LSTM 0.40x with gemv_step; H ≤ 256: gemv_step measured 10–30 % faster than BLAS)
constexpr int64_t kBlasGemv = 262144;
// Per-step GEMMs of fewer multiply-adds run on one thread (MKL's thread-local setting, restored
// after the call): at this size the fork/join of a 2-thread GEMM costs more than it saves
// (measured, 2 threads, T=100: LSTM B=8 H=64 train 1.85 → 1.57 ms, B=64 H=64 9.14 → 8.62 ms;
// GRU B=32 H=64 4.16 → 3.82 ms; at 1.6M+ (GRU/LSTM B=8 H=256) serial steps were slower).
constexpr int64_t kSerialStep = 1200000;
// MKL CBLAS enum values (mkl_cblas.h)
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

// Batch size 1: C[1,N] = a[1,K] @ op(W) + beta·C (matvec.h).
template <typename T>
inline void gemv_step(const T* w, int64_t ldw, bool trans, int64_t N, int64_t K, const T* a,
                      T beta, T* c) {
  if (beta == T(0)) std::fill(c, c + N, T(0));
  if (N * K > kBlasGemv) return gemv<T>(trans, N, K, w, ldw, a, beta, c);  // measured: faster
  // One thread: splitting the rows over 2 threads (a static split) lost at every size up to
  // kBlasGemv to the fork/join (B=1 T=100, 2 threads: LSTM H=256 train 3.23 → 2.85 ms serial,
  // H=128 infer 0.38 → 0.34 ms; GRU H=256 train 2.54 → 2.28 ms; perf: 38 % in libgomp's barrier)
  if (trans) gemv_rows(w, ldw, 0, N, K, a, c);
  else gemv_cols(w, ldw, 0, N, K, a, c);
}

// MKL's packed format carries ~8 MB of fixed padding whatever the matrix size, so a fresh buffer
// per call costs thousands of page faults. Each thread keeps two grow-only scratch buffers (a
// kernel never needs more than two packed weights at once) and reuses them.
inline float* pack_scratch(int slot, size_t bytes) {
  static thread_local at::Tensor pool[2];
  const int64_t need = int64_t(bytes / sizeof(float)) + 16;
  if (!pool[slot].defined() || pool[slot].numel() < need) pool[slot] = at::empty({need}, at::kFloat);
  return pool[slot].data_ptr<float>();
}

template <typename T>
class StepGemm {
 public:
  // op(W) = W^T when trans (W is [N, K]), else W (W is [K, N]); ldw is W's row stride.
  StepGemm(const T* w, int64_t ldw, bool trans, int64_t M, int64_t N, int64_t K, int slot = 0)
      : w_(w), ldw_(ldw), trans_(trans), M_(M), N_(N), K_(K) {}
  // rows < M: only the first `rows` rows of A and C (the sequences still running)
  void operator()(const T* A, int64_t lda, T beta, T* C, int64_t ldc, int64_t rows = -1) const {
    const int64_t m = rows < 0 ? M_ : rows;
    if (m == 0) return;
    if (m == 1) return gemv_step<T>(w_, ldw_, trans_, N_, K_, A, beta, C);
    gemm<T>(false, trans_, m, N_, K_, T(1), A, lda, w_, ldw_, beta, C, ldc);
  }
  bool packed() const { return false; }  // (it reads W itself: W must outlive it)

 private:
  const T* w_;
  int64_t ldw_;
  bool trans_;
  int64_t M_, N_, K_;
};

// Per-step GEMMs that run oneDNN's matmul primitive (W reordered once per sequence) when oneDNN
// is the library: from 16 rows, and from 4 rows once W has 512 K elements (2 MB, more than one
// core's L2); below, dnnl_sgemm on W as it lies. Standalone, µs per step: [8, 512] @ [512,
// 2048]^T two threads 126 → 85 (sgemm → matmul), [4, 512] @ [512, 2048]^T one thread 122–146
// → 84–91, [4, 256] @ [256, 1024]^T 28–36 → 21–22. In the layers only the large W kept a gain:
// same process, alternating, LSTM op ms, M ≥ 16 → M ≥ 4 with 2 MB of W: forward B=4 H=512 14.3
// → 12.8 and 13.4 → 12.3, B=8 24.2 → 21.9 and 19.5 → 19.2, B=12 34.6 → 30.9; backward (split
// by units: each core's 1024 rows of W_hh) B=8 45.5 → 44.8, B=12 72.8 → 70.4; training layer
// B=8 H=512 65.2 → 63.8, B=4 39.4 → 37.0; GRU B=4/8 H=512 even. At smaller W matmul lost (M ≥ 2
// everywhere: LSTM B=8 H=64 training 2.64 → 3.11, H=128 7.30 → 7.85, GRU B=8 H=256 13.5 →
// 14.3), and at M = 2 (B=2 H=512 forward 9.06 → 11.03).
inline bool matmul_rows(int64_t M, int64_t weights) {
  return M >= 16 || (M >= 4 && weights >= 524288);
}

template <>
class StepGemm<float> {
 public:
  StepGemm(const float* w, int64_t ldw, bool trans, int64_t M, int64_t N, int64_t K, int slot = 0)
      : w_(w), ldw_(ldw), trans_(trans), M_(M), N_(N), K_(K) {
    serial_ = M * N * K < kSerialStep;
    // oneDNN as the GEMM library (gemm.h): its matmul primitive runs the full-batch steps that
    // matmul_rows picks (matmul.cpp; W reordered once, as MKL's pack is), dnnl_sgemm on W in
    // blocks of ≤ 15 rows a packed sequence's shorter ones (gemm.h onednn_sgemm_rows), dnnl_sgemm
    // the other steps of more than one row. Otherwise MKL's packed GEMM.
    const bool blocked = matmul_rows(M, N * K);
    sgemm_ = M > 1 && !blocked && use_onednn_gemm();
#ifdef RNNLAB_ONEDNN
    if (blocked && use_onednn_gemm()) matmul_ = onednn_matmul(w, ldw, trans, M, N, K);
#endif
    packed_ = M > 1 && !matmul_ && !sgemm_;  // B = 1: gemv_step
    if (!packed_) return;
    const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, int(M), int(N), int(K));
    buffer_ = pack_scratch(slot, bytes);
    cblas_sgemm_pack(kRowMajor, kBMatrix, trans ? kTrans : kNoTrans, int(M), int(N), int(K), 1.0f,
                     w, int(ldw), buffer_);
  }
  void operator()(const float* A, int64_t lda, float beta, float* C, int64_t ldc,
                  int64_t rows = -1) const {
    const int64_t m = rows < 0 ? M_ : rows;
    if (m == 0) return;
    if (m == 1) return gemv_step<float>(w_, ldw_, trans_, N_, K_, A, beta, C);
    if (sgemm_)
      return onednn_sgemm(false, trans_, m, N_, K_, 1.0f, A, lda, w_, ldw_, beta, C, ldc, serial_);
#ifdef RNNLAB_ONEDNN
    if (matmul_ && m == M_ && (beta == 0.0f || beta == 1.0f))
      return onednn_matmul_run(*matmul_, A, lda, beta, C, ldc, serial_);
#endif
    if (matmul_)  // (a packed sequence's shorter steps)
      return onednn_sgemm_rows(trans_, m, N_, K_, A, lda, w_, ldw_, beta, C, ldc, serial_);
    const int previous = serial_ ? MKL_Set_Num_Threads_Local(1) : 0;
    if (!packed_) gemm<float>(false, trans_, m, N_, K_, 1.0f, A, lda, w_, ldw_, beta, C, ldc);
    else
      cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, int(m), int(N_), int(K_), A, int(lda),
                          buffer_, int(N_), beta, C, int(ldc));
    if (serial_) MKL_Set_Num_Threads_Local(previous);
  }
  bool packed() const { return packed_; }  // false: it reads W itself, which must outlive it

 private:
  bool packed_, serial_, sgemm_;
  std::shared_ptr<OnednnMatmul> matmul_;  // (gemm.h; null without oneDNN)
  const float* w_;
  int64_t ldw_;
  bool trans_;
  float* buffer_ = nullptr;
  int64_t M_, N_, K_;
};

// The states entering one step, row by row: rows [0, split) of `a`, the others of `b`, both with
// row stride ld. A dense run, and a packed forward run (step t-1 holds every sequence of step t),
// take all rows from one place; a packed reverse step takes h_{t+1} for the n_{t+1} sequences that
// ran at t+1 and h0 for the others, whose reverse run starts at t.
template <typename T>
struct PrevRows {
  const T* a;
  const T* b;
  int64_t split, ld;
  const T* row(int64_t i) const { return (i < split ? a : b) + i * ld; }
  PrevRows from(int64_t b0) const { return {a + b0 * ld, b + b0 * ld, split - b0, ld}; }  // rows b0…
  // C[:rows] (+)= prev[:rows] @ op(W) through a StepGemm: one GEMM, or two across the split
  template <class Gemm>
  void gemm(const Gemm& step, T beta, T* C, int64_t ldc, int64_t rows) const {
    const int64_t first = std::min(split, rows);
    if (first > 0) step(a, ld, beta, C, ldc, first);
    if (rows > first) step(b + first * ld, ld, beta, C + first * ldc, ldc, rows - first);
  }
};

// The states entering step t of a run in `order` over `rows`: hs [steps' rows, ld], h0 [B, ld]
template <typename T>
inline PrevRows<T> prev_rows(const StepRows& r, const StepOrder& order, int64_t t, const T* hs,
                             const T* h0, int64_t ld) {
  const int64_t tp = order.prev(t);
  if (!order.inside(tp)) return {h0, h0, r.B, ld};
  return {hs + r.off[tp] * ld, h0, r.packed && order.reverse ? r.n(tp) : r.B, ld};
}

}  // namespace rnnlab
