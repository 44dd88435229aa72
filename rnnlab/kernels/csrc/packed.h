// The recurrent GEMM of every time step, C[M,N] = A[M,K] @ op(W) + beta·C, with the weight W packed
// once per sequence (MKL's sgemm pack/compute API, exported by libtorch_cpu) instead of being
// re-packed by sgemm at each of the T steps. float64 has no packed API: plain GEMM.
#pragma once

#include <ATen/ATen.h>

#include "common.h"

extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k);
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha,
                      const float* src, int ld, float* dest);
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc);
}

namespace rnnlab {

// MKL CBLAS enum values (mkl_cblas.h)
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;

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
  void operator()(const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
    gemm<T>(false, trans_, M_, N_, K_, T(1), A, lda, w_, ldw_, beta, C, ldc);
  }

 private:
  const T* w_;
  int64_t ldw_;
  bool trans_;
  int64_t M_, N_, K_;
};

template <>
class StepGemm<float> {
 public:
  StepGemm(const float* w, int64_t ldw, bool trans, int64_t M, int64_t N, int64_t K, int slot = 0)
      : w_(w), ldw_(ldw), trans_(trans), M_(M), N_(N), K_(K) {
    packed_ = M > 1 || N * K <= kSmallWeight;  // measured: a large mat-vec is faster unpacked
    if (!packed_) return;
    const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, int(M), int(N), int(K));
    buffer_ = pack_scratch(slot, bytes);
    cblas_sgemm_pack(kRowMajor, kBMatrix, trans ? kTrans : kNoTrans, int(M), int(N), int(K), 1.0f,
                     w, int(ldw), buffer_);
  }
  void operator()(const float* A, int64_t lda, float beta, float* C, int64_t ldc) const {
    if (!packed_) {
      gemm<float>(false, trans_, M_, N_, K_, 1.0f, A, lda, w_, ldw_, beta, C, ldc);
      return;
    }
    cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, int(M_), int(N_), int(K_), A, int(lda),
                        buffer_, int(N_), beta, C, int(ldc));
  }

 private:
  static constexpr int64_t kSmallWeight = 32768;
  bool packed_;
  const float* w_;
  int64_t ldw_;
  bool trans_;
  float* buffer_ = nullptr;
  int64_t M_, N_, K_;
};

}  // namespace rnnlab
