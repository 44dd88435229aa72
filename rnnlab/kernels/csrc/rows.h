// Per-row gate math of the fused kernels: one batch row, H hidden units, no branches, restrict
// pointers, so GCC vectorises each loop (exp/tanh through glibc's libmvec under -ffast-math).
// Letters as in rnnlab/cells.py; `a` is a row of pre-activations, overwritten with activations.
// Functions taking (n, H) compute n hidden units starting at the pointers, their gate blocks H
// apart: a whole row is (H, H); the two-core B = 1 recurrence (split.h) gives each core its units.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#define RNNLAB_SIMD _Pragma("omp simd")
#define RNNLAB_PRAGMA(x) _Pragma(#x)
#define RNNLAB_SIMD_REDUCE(...) RNNLAB_PRAGMA(omp simd reduction(+ : __VA_ARGS__))

namespace rnnlab {

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// a += b over n values (the input bias, added to each row in the gate pass rather than broadcast
// into the whole projection output before the GEMM)
template <typename T>
inline void add_row(T* __restrict a, const T* __restrict b, int64_t n) {
  RNNLAB_SIMD for (int64_t j = 0; j < n; ++j) a[j] += b[j];
}

// LSTM forward: [i,f,g,o] = [σ,σ,tanh,σ](a);  c = f⊙c_prev + i⊙g;  r = o⊙tanh(c)
template <typename T>
inline void lstm_fwd_row(int64_t n, int64_t H, T* __restrict a, const T* __restrict c_prev, T* __restrict c,
                         T* __restrict r) {
  RNNLAB_SIMD for (int64_t j = 0; j < n; ++j) {
    const T i = sigmoid(a[j]), f = sigmoid(a[H + j]);
    const T g = std::tanh(a[2 * H + j]), o = sigmoid(a[3 * H + j]);
    a[j] = i, a[H + j] = f, a[2 * H + j] = g, a[3 * H + j] = o;
    const T cc = f * c_prev[j] + i * g;
    c[j] = cc;
    r[j] = o * std::tanh(cc);
  }
}

// LSTM backward of one valid row. In: activated gates a, c_t, c_{t-1}, dr (= dL/dr_t), dc (the
// gradient reaching c_t). Out: d (pre-activation gradients [di|df|dg|do]), dc ← dL/dc_{t-1}.
template <typename T>
inline void lstm_bwd_row(int64_t n, int64_t H, const T* __restrict a, const T* __restrict c,
                         const T* __restrict c_prev, const T* __restrict dr, T* __restrict dc,
                         T* __restrict d) {
  RNNLAB_SIMD for (int64_t j = 0; j < n; ++j) {
    const T i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
    const T tc = std::tanh(c[j]);
    const T dcell = dc[j] + dr[j] * o * (1 - tc * tc);  // through r = o tanh(c)
    d[j] = dcell * g * i * (1 - i);
    d[H + j] = dcell * c_prev[j] * f * (1 - f);
    d[2 * H + j] = dcell * i * (1 - g * g);
    d[3 * H + j] = dr[j] * tc * o * (1 - o);
    dc[j] = dcell * f;
  }
}

// GRU forward, reset after: g = W_ih x (+ pb, the input bias with b_h[rz] folded in, or null),
// q = W_hh h (rows [r|z|n], gate blocks nq apart), bn = b_hn; s ← [r|z|n|hn] with
// hn = W_hn h + b_hn; out = h_t
template <typename T>
inline void gru_after_fwd_row(int64_t n, int64_t H, const T* __restrict g, const T* __restrict q,
                              int64_t nq, const T* __restrict pb, const T* __restrict bn,
                              const T* __restrict h, T* __restrict s, T* __restrict out) {
  RNNLAB_SIMD for (int64_t j = 0; j < n; ++j) {
    T gp[3];
    for (int k = 0; k < 3; ++k) gp[k] = g[k * H + j] + (pb ? pb[k * H + j] : T(0));
    const T r = sigmoid(gp[0] + q[j]), z = sigmoid(gp[1] + q[nq + j]);
    const T hn = q[2 * nq + j] + bn[j];
    const T nn = std::tanh(gp[2] + r * hn);
    s[j] = r, s[H + j] = z, s[2 * H + j] = nn, s[3 * H + j] = hn;
    out[j] = nn + z * (h[j] - nn);  // (1 - z) n + z h
  }
}

// GRU forward, reset before, part 1: r, z from q = W_h[rz] h + b_h[rz]; rh ← r ⊙ h
template <typename T>
inline void gru_before_gates_row(int64_t H, const T* __restrict g, const T* __restrict q,
                                 const T* __restrict h, T* __restrict s, T* __restrict rh) {
  RNNLAB_SIMD for (int64_t j = 0; j < H; ++j) {
    const T r = sigmoid(g[j] + q[j]);
    s[j] = r;
    s[H + j] = sigmoid(g[H + j] + q[H + j]);
    rh[j] = r * h[j];
  }
}

// GRU forward, reset before, part 2: qn = W_hn (r ⊙ h), bn = b_hn; n, h_t
template <typename T>
inline void gru_before_out_row(int64_t H, const T* __restrict g, const T* __restrict qn,
                               const T* __restrict bn, const T* __restrict h, T* __restrict s,
                               T* __restrict out) {
  RNNLAB_SIMD for (int64_t j = 0; j < H; ++j) {
    const T n = std::tanh(g[2 * H + j] + qn[j] + bn[j]);
    const T z = s[H + j];
    s[2 * H + j] = n;
    out[j] = n + z * (h[j] - n);
  }
}

// GRU backward of one valid row, both forms. din = dL/dh_t. Out: gi ← [dar|daz|dan] (dar only for
// reset after), gh ← [dar|daz|dan⊙r] (reset after), d ← din ⊙ z (direct path to h_{t-1}).
template <typename T, bool After>
inline void gru_bwd_row(int64_t n, int64_t H, const T* __restrict s, const T* __restrict hp,
                        const T* __restrict din, T* __restrict gi, T* __restrict gh,
                        T* __restrict d) {
  RNNLAB_SIMD for (int64_t j = 0; j < n; ++j) {
    const T r = s[j], z = s[H + j], n = s[2 * H + j];
    const T dan = din[j] * (1 - z) * (1 - n * n);
    const T daz = din[j] * (hp[j] - n) * z * (1 - z);
    gi[H + j] = daz;
    gi[2 * H + j] = dan;
    if constexpr (After) {
      const T dar = dan * s[3 * H + j] * r * (1 - r);
      gi[j] = dar;
      gh[j] = dar, gh[H + j] = daz, gh[2 * H + j] = dan * r;
    }
    d[j] = din[j] * z;
  }
}

// GRU backward, reset before, part 2: q = d(r⊙h) = dan W_hn → dar, and d += q ⊙ r
template <typename T>
inline void gru_before_bwd_reset_row(int64_t H, const T* __restrict s, const T* __restrict hp,
                                     const T* __restrict q, T* __restrict gi, T* __restrict d) {
  RNNLAB_SIMD for (int64_t j = 0; j < H; ++j) {
    const T r = s[j];
    gi[j] = q[j] * hp[j] * r * (1 - r);
    d[j] += q[j] * r;
  }
}

// Bias gradients: out[j] (+)= Σ_r a[r, j] over `rows` rows of stride lda, columns [0, n) (`first`:
// out is written, not added to). With `b`, the sum is of a ⊙ b, whose rows go to prod (stride
// ldp) as well: the GRU's dan ⊙ r, which its dW_hn GEMM takes next. Rows summed in blocks of 64,
// then the blocks added: a two-level sum, whose rounding error grows with 64 + rows / 64 terms
// rather than with all the rows of a running sum. 256 columns at a time, partial sums on the stack.
template <typename T>
inline void col_sums(const T* a, int64_t lda, int64_t rows, int64_t n, T* out, bool first,
                     const T* b = nullptr, int64_t ldb = 0, T* prod = nullptr, int64_t ldp = 0) {
  constexpr int64_t kCols = 256, kBlock = 64;
  for (int64_t j0 = 0; j0 < n; j0 += kCols) {
    const int64_t w = std::min(kCols, n - j0);
    T total[kCols], part[kCols];
    std::fill(total, total + w, T(0));
    for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
      std::fill(part, part + w, T(0));
      for (int64_t r = r0; r < std::min(rows, r0 + kBlock); ++r) {
        const T* ar = a + r * lda + j0;
        if (b) {
          const T* br = b + r * ldb + j0;
          T* pr = prod + r * ldp + j0;
          RNNLAB_SIMD for (int64_t j = 0; j < w; ++j) part[j] += (pr[j] = ar[j] * br[j]);
        } else {
          RNNLAB_SIMD for (int64_t j = 0; j < w; ++j) part[j] += ar[j];
        }
      }
      RNNLAB_SIMD for (int64_t j = 0; j < w; ++j) total[j] += part[j];
    }
    T* o = out + j0;
    if (first) std::copy(total, total + w, o);
    else RNNLAB_SIMD for (int64_t j = 0; j < w; ++j) o[j] += total[j];
  }
}

}  // namespace rnnlab
