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

template <typename T>
class StepGemm {
 public:
  // op(W) = W^T when trans (W is [N, K]), else W (W is [K, N]); ldw is W's row stride.
  StepGemm(const T* w, int64_t ldw, bool trans, int64_t M, int64_t N, int64_t K)
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
  StepGemm(const float* w, int64_t ldw, bool trans, int64_t M, int64_t N, int64_t K)
      : w_(w), ldw_(ldw), trans_(trans), M_(M), N_(N), K_(K) {
    packed_ = M > 1 || N * K <= kSmallWeight;  // measured: a large mat-vec is faster unpacked
    if (!packed_) return;
    const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, int(M), int(N), int(K));
    buffer_ = at::empty({int64_t(bytes / sizeof(float)) + 16}, at::kFloat);
    cblas_sgemm_pack(kRowMajor, kBMatrix, trans ? kTrans : kNoTrans, int(M), int(N), int(K), 1.0f,
                     w, int(ldw), buffer_.data_ptr<float>());
  }
  void operator()(const float* A, int64_t lda, float beta, float* C, int64_t ldc) const {
    if (!packed_) {
      gemm<float>(false, trans_, M_, N_, K_, 1.0f, A, lda, w_, ldw_, beta, C, ldc);
      return;
    }
    cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, int(M_), int(N_), int(K_), A, int(lda),
                        buffer_.data_ptr<float>(), int(N_), beta, C, int(ldc));
  }

 private:
  static constexpr int64_t kSmallWeight = 32768;
  bool packed_;
  const float* w_;
  int64_t ldw_;
  bool trans_;
  at::Tensor buffer_;
  int64_t M_, N_, K_;
};

}  // namespace rnnlab
