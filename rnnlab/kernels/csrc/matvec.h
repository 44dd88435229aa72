// Batch size 1: the per-step matrix-vector products, c (+)= op(W) a, hand-written (BLAS's per-call
// overhead dominates at this size). Both read all of W once per step, from the core's L2 when the
// sequence runs split (split.h), so they are worth what they come close to its read bandwidth.
//   gemv_rows: c_j += W[j, 0:K] · a            (op(W) = W^T: dot products of W's contiguous rows)
//   gemv_cols: c[j0:j1] += Σ_k a_k W[k, j0:j1]  (op(W) = W: rows of W scaled and accumulated)
// gemv_cols for float on AVX-512 holds c in registers, 256 columns in 16 of them, while W's rows
// stream by; the generic one loads and stores c on every pass of four rows. One core, W in L2,
// GB/s read (plain loads summed: 193 at 384 KB): 384 KB 124 → 180, 1.5 MB 85 → 95. In the B = 1
// backward, op alone, same process, env-switched (2 threads, T=100, ms): GRU H=256 0.94 → 0.80,
// H=512 4.85 → 4.54; RNN H=256 0.33 → 0.30, H=512 1.51 → 1.33.
// Not kept: an AVX-512 gemv_rows (4 rows × 2 accumulators: one core alone 103 → 162 GB/s at
// 384 KB) measured within ±3 % of the `omp simd` one in the split forwards (RNN H=256/512, LSTM
// H=128/256, GRU H=128/256, inference), as did prefetching the state vector (the half the other
// core wrote) before it. Timed inside run_split, RNN H=512 spends ~4 µs per step in either version
// (512 KB per core: ~128 GB/s) and 0.25–0.4 µs at the barrier.
// Kept since: gemv_rows for float on AVX-512 sixteen rows at a time with one transposing sum of
// their accumulators (sum16), which pays at short rows, where the per-row horizontal sums cost
// more than the FMAs (K = 64: four per row). EPYC, B = 1 inference, T=100, 2 threads, layer µs,
// three alternating processes each: LSTM H=64 192 / 207 / 198 → 182 / 183 / 178, GRU H=64 167 /
// 169 / 214 → 154 / 153 / 151, H=128 317 / 334 / 343 → 300 / 304 / 285, RNN H=64 89 / 90 / 88 →
// 77 / 80 / 76; H = 256 and the split streaming steps even (L2-bound); LSTM H=64 streaming step
// 4.1 / 4.2 → 3.9 / 3.8 µs.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "rows.h"

namespace rnnlab {

template <typename T>
inline void gemv_rows(const T* __restrict w, int64_t ldw, int64_t j0, int64_t j1, int64_t K,
                      const T* __restrict a, T* __restrict c) {
  int64_t j = j0;
  for (; j + 4 <= j1; j += 4) {
    const T *w0 = w + j * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    RNNLAB_SIMD_REDUCE(s0, s1, s2, s3) for (int64_t k = 0; k < K; ++k) {
      s0 += w0[k] * a[k], s1 += w1[k] * a[k], s2 += w2[k] * a[k], s3 += w3[k] * a[k];
    }
    c[j] += s0, c[j + 1] += s1, c[j + 2] += s2, c[j + 3] += s3;
  }
  for (; j < j1; ++j) {
    T s0 = 0;
    for (int64_t k = 0; k < K; ++k) s0 += w[j * ldw + k] * a[k];
    c[j] += s0;
  }
}

template <typename T>
inline void gemv_cols(const T* __restrict w, int64_t ldw, int64_t j0, int64_t j1, int64_t K,
                      const T* __restrict a, T* __restrict c) {
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const T *w0 = w + k * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw, *w3 = w2 + ldw;
    const T a0 = a[k], a1 = a[k + 1], a2 = a[k + 2], a3 = a[k + 3];
    RNNLAB_SIMD for (int64_t j = j0; j < j1; ++j)
      c[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j];
  }
  for (; k < K; ++k) {
    const T ak = a[k];
    const T* wk = w + k * ldw;
    RNNLAB_SIMD for (int64_t j = j0; j < j1; ++j) c[j] += ak * wk[j];
  }
}

#if defined(__AVX512F__)
// the first n (≤ 16) lanes
inline __mmask16 lanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1); }

// c[0, 16V) (its last vector's lanes `last` only) += Σ_k a_k W[k, 0:16V]: c held in V registers
template <int V>
inline void cols_tile(const float* w, int64_t ldw, int64_t K, const float* a, float* c, __mmask16 last) {
  __m512 acc[V];
#pragma GCC unroll 16
  for (int i = 0; i < V; ++i) acc[i] = _mm512_maskz_loadu_ps(i + 1 < V ? 0xFFFF : last, c + 16 * i);
  for (int64_t k = 0; k < K; ++k) {
    const __m512 ak = _mm512_set1_ps(a[k]);
    const float* wk = w + k * ldw;
#pragma GCC unroll 16
    for (int i = 0; i < V; ++i)
      acc[i] = _mm512_fmadd_ps(ak, _mm512_maskz_loadu_ps(i + 1 < V ? 0xFFFF : last, wk + 16 * i), acc[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < V; ++i) _mm512_mask_storeu_ps(c + 16 * i, i + 1 < V ? 0xFFFF : last, acc[i]);
}

// Row sums of sixteen vectors: lane r of the result = Σ lanes of v[r]. A transposing tree (pairs
// interleaved and added, then quadruples, then 128-bit blocks) in 45 instructions, where a
// horizontal reduction per row costs ~8 each.
inline __m512 sum16(const __m512* v) {
  __m512 s2[8], s4[4], s8[2];
  for (int i = 0; i < 8; ++i)  // per 128-bit block: [x0+x2, y0+y2, x1+x3, y1+y3] of rows x, y
    s2[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]),
                          _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  for (int i = 0; i < 4; ++i)  // per block: [x, y, z, w], each row's sum over that block
    s4[i] = _mm512_add_ps(_mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                          _mm512_shuffle_ps(s2[2 * i], s2[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int i = 0; i < 2; ++i)  // blocks 0+1 and 2+3 of two quadruples
    s8[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s4[2 * i], s4[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_f32x4(s4[2 * i], s4[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(s8[0], s8[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(s8[0], s8[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// gemv_rows for float: sixteen rows at a time, one accumulator each, summed by sum16 (the
// generic version reduces each row's accumulator on its own, which dominates at short rows: K =
// 64 is four FMAs a row). Rows left over take the generic version.
inline void gemv_rows(const float* __restrict w, int64_t ldw, int64_t j0, int64_t j1, int64_t K,
                      const float* __restrict a, float* __restrict c) {
  int64_t j = j0;
  const __mmask16 tail = lanes(K % 16);
  for (; j + 16 <= j1; j += 16) {
    const float* wj = w + j * ldw;
    __m512 acc[16];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r) acc[r] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
      const __m512 ak = _mm512_loadu_ps(a + k);
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(wj + r * ldw + k), ak, acc[r]);
    }
    if (k < K) {
      const __m512 ak = _mm512_maskz_loadu_ps(tail, a + k);
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r)
        acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, wj + r * ldw + k), ak, acc[r]);
    }
    _mm512_storeu_ps(c + j, _mm512_add_ps(_mm512_loadu_ps(c + j), sum16(acc)));
  }
  if (j < j1) gemv_rows<float>(w, ldw, j, j1, K, a, c);
}

template <int... V>
inline void cols_tail(int v, const float* w, int64_t ldw, int64_t K, const float* a, float* c,
                      __mmask16 last, std::integer_sequence<int, V...>) {
  using Tile = void (*)(const float*, int64_t, int64_t, const float*, float*, __mmask16);
  static constexpr Tile tiles[] = {cols_tile<V + 1>...};
  tiles[v - 1](w, ldw, K, a, c, last);
}

inline void gemv_cols(const float* __restrict w, int64_t ldw, int64_t j0, int64_t j1, int64_t K,
                      const float* __restrict a, float* __restrict c) {
  int64_t j = j0;
  for (; j + 256 <= j1; j += 256) cols_tile<16>(w + j, ldw, K, a, c + j, 0xFFFF);
  if (j == j1) return;
  const int64_t n = j1 - j;  // < 256 columns left: ceil(n / 16) registers, the last one masked
  cols_tail(int((n + 15) / 16), w + j, ldw, K, a, c + j, lanes(n - (n - 1) / 16 * 16),
            std::make_integer_sequence<int, 16>());
}
#endif

}  // namespace rnnlab
