// Shared helpers of the fused whole-sequence kernels: where each step's rows live, chunks of
// steps, weight and bias gradients, optional-tensor access (the GEMM calls: gemm.h; the per-row
// gate math: rows.h). Layout conventions (all row-major, time-major):
//   x  [T, B, I]   input            mask [T, B, 1] bool (optional: all steps valid)
//   w_ih [G*H, I]  w_hh [G*H, P]    gate rows [i|f|g|o] (LSTM) or [r|z|n] (GRU)
//   hs [T, B, P]   carried states (frozen on padded steps), the layer output before masking
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "gemm.h"
#include "rows.h"

namespace rnnlab {

using at::Tensor;

// Pointer to the data of an optional tensor, or nullptr.
template <typename T>
inline const T* ptr_or_null(const c10::optional<Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->data_ptr<T>() : nullptr;
}

inline const bool* mask_ptr(const c10::optional<Tensor>& mask) {
  return (mask.has_value() && mask->defined()) ? mask->data_ptr<bool>() : nullptr;
}

// A [T, B, F] tensor as its [T·B, F] rows. `a` may be a narrowed view of a wider buffer: BLAS
// reads it in place (no copy) when its rows merge.
inline Tensor rows2d(const Tensor& a) {
  if (a.dim() == 2) return a;  // BLAS reads any row stride
  if (a.is_contiguous()) return a.view({-1, a.size(-1)});
  if (a.stride(0) == a.size(1) * a.stride(1))  // e.g. a narrowed last dim: rows merge in place
    return a.as_strided({a.size(0) * a.size(1), a.size(2)}, {a.stride(1), a.stride(2)});
  return a.reshape({-1, a.size(-1)});  // otherwise (e.g. batch_first input) a copy
}

// A weight gradient summed over the chunks of a backward: out = a^T b for the first chunk the
// backward runs (`first`: out's earlier contents are ignored, BLAS's beta = 0, so it needs no
// zeroing), out += a^T b for the others. Zeroing dW first and adding every chunk cost an extra pass
// over dW (GRU B=1 H=512 T=100: 3 MB each of dW_ih and dW_hh) on every backward.
inline void acc_tn(Tensor out, const Tensor& a, const Tensor& b, bool first) {
  mm_into(out, a.t(), b, first ? 0 : 1);
}
// out = Σ_rows a (first) or out += Σ_rows a: a bias gradient, as acc_tn. With b: of a ⊙ b, kept
// in prod (a fresh [rows, n] tensor). Our own pass (rows.h col_sums), both threads on half the
// columns each where it is not inside a parallel region: at::sum and at::mul took 5.6 ms of the
// GRU's B=64 H=256 backward (25 sums, 8 products), ~5x their time on the same shapes alone.
inline void acc_rows(Tensor out, const Tensor& a, bool first, const Tensor* b = nullptr,
                     Tensor* prod = nullptr) {
  const bool rows_of_columns = a.dim() == 2 && a.stride(1) == 1 && out.is_contiguous() &&
                               (!b || (b->dim() == 2 && b->stride(1) == 1));
  if (!rows_of_columns) {  // (a view with strided columns: ATen's reduction)
    Tensor s = a;
    if (b) s = *prod = a * *b;
    if (first) at::sum_out(out, s, 0);
    else out.add_(s.sum(0));
    return;
  }
  const int64_t rows = a.size(0), n = a.size(1);
  if (b) *prod = at::empty({rows, n}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "acc_rows", [&] {
    const scalar_t* av = a.data_ptr<scalar_t>();
    const scalar_t* bv = b ? b->data_ptr<scalar_t>() : nullptr;
    scalar_t* pv = b ? prod->data_ptr<scalar_t>() : nullptr;
    scalar_t* ov = out.data_ptr<scalar_t>();
    const int64_t half = (n / 2 + 15) / 16 * 16;  // halves on 64-byte lines
    auto cols = [&](int64_t j0, int64_t j1) {
      col_sums(av + j0, a.stride(0), rows, j1 - j0, ov + j0, first, bv ? bv + j0 : nullptr,
               b ? b->stride(0) : 0, pv ? pv + j0 : nullptr, n);
    };
    if (rows * n < 65536 || half >= n || at::in_parallel_region() || at::get_num_threads() < 2)
      return cols(0, n);
    at::parallel_for(0, 2, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) cols(i == 0 ? 0 : half, i == 0 ? half : n);
    });
  });
}

// Where each step's rows live. Dense sequences ([T, B, ·] tensors): step t is rows [tB, (t+1)B) of
// the flattened [T·B, ·] view. Packed ones (a PackedSequence's data [N, ·], longest sequence first,
// batch_sizes n_0 ≥ n_1 ≥ …) hold only the sequences still running: rows [off_t, off_t + n_t), so
// step t's sequences are the prefix [0, n_t) of the batch, and step t+1's a prefix of step t's.
struct StepRows {
  int64_t T, B;
  bool packed;
  std::vector<int64_t> off;  // T + 1 row offsets
  int64_t n(int64_t t) const { return off[t + 1] - off[t]; }
  // rows step t has: its running sequences (packed), the whole batch (dense, padded rows included)
  int64_t rows_of(int64_t t) const { return packed ? n(t) : B; }
  int64_t count(int64_t t0, int64_t t1) const { return off[t1] - off[t0]; }
};

// x [T, B, I] (batch_sizes absent) or packed x [N, I] with batch_sizes [T] (int64, CPU)
inline StepRows step_rows(const Tensor& x, const c10::optional<Tensor>& batch_sizes) {
  StepRows r;
  r.packed = batch_sizes.has_value() && batch_sizes->defined();
  if (!r.packed) {
    r.T = x.size(0), r.B = x.size(1);
    for (int64_t t = 0; t <= r.T; ++t) r.off.push_back(t * r.B);
    return r;
  }
  const Tensor bs = batch_sizes->to(at::kLong).contiguous();
  const int64_t* n = bs.data_ptr<int64_t>();
  r.T = bs.numel(), r.B = r.T > 0 ? n[0] : 0;
  r.off.assign(1, 0);
  for (int64_t t = 0; t < r.T; ++t) r.off.push_back(r.off.back() + n[t]);
  return r;
}

// A new per-step tensor for x's steps: [T, B, width], or [N, width] when packed
inline Tensor steps_like(const Tensor& x, const StepRows& r, int64_t width) {
  if (r.packed) return at::empty({x.size(0), width}, x.options());
  return at::empty({r.T, r.B, width}, x.options());
}

// The rows of steps [t0, t1) of a [T, B, F] (dense) or [N, F] (packed) tensor as a 2-D block: a
// view when the tensor is contiguous (the kernels' own buffers always are).
inline Tensor step_block(const Tensor& a, const StepRows& r, int64_t t0, int64_t t1) {
  if (r.packed) return a.narrow(0, r.off[t0], r.count(t0, t1));
  return rows2d(a.narrow(0, t0, t1 - t0));
}

// Input projection of the steps [t0, t1) as one GEMM: x rows @ w^T into the same rows of out
// (contiguous). The bias is not added here: `addmm` first copies the broadcast bias into the whole
// output (LSTM B=64 H=64: 0.74 of its 1.55 ms), so the kernels add it row by row in the gate pass
// instead (add_row).
inline void project_into(Tensor& out, const Tensor& x, const Tensor& w, const StepRows& r, int64_t t0,
                         int64_t t1) {
  Tensor rows = step_block(out, r, t0, t1);
  mm_into(rows, step_block(x, r, t0, t1), w.t());
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
// A chunk is about T/8 steps and at most 2048 rows, but at least 32 K elements of its buffers
// (`width` values per row, all of them: the LSTM with projection keeps 4H + P): each chunk costs
// ~5 small ATen calls, which would otherwise dominate small problems (RNN B=8 H=64 train: 0.95 →
// 1.19 ms with 13-step chunks). Whole-sequence chunks (the rule before) measured within ±5 % of
// this at B ≥ 8 but for small RNNs (interleaved
// A/B, 2 threads: LSTM B=32 H=128 14.2 vs 14.0 ms, GRU B=64 H=256 62.4 vs 62.2, RNN B=32 H=128
// 3.40 vs 3.67 ms).
inline int64_t chunk_steps(int64_t T, int64_t B, int64_t width) {
  B = std::max<int64_t>(B, 1);
  const int64_t cap = std::min<int64_t>(2048 / B, (T + 7) / 8);
  const int64_t floor_rows = (32768 + width - 1) / std::max<int64_t>(width, 1);
  int64_t floor_steps = (floor_rows + B - 1) / B;
  // B = 1 whose floor covers the whole sequence: chunks of half of it, so that the two-core
  // pipeline (pipeline.h, which halves them again) runs the weight gradients of finished chunks
  // beside the recurrence (and the next chunk's input projection beside a forward recurrence).
  // Same process, torch interleaved, 2 threads, T=100, training ms, whole → half: RNN H=128
  // 0.693 → 0.643, H=256 1.448 → 1.367, LSTM H=64 0.560 → 0.522 (inference 0.202 → 0.189), GRU
  // H=64 0.823 → 0.807, RNN H=64 0.391 → 0.384; T=672 RNN H=32 0.778 → 0.767; T=20 LSTM H=64
  // 0.341 → 0.317. (GRU and LSTM at H=128, already in chunks, are unchanged.)
  if (B == 1 && floor_steps >= T && T >= 2) floor_steps = (T + 1) / 2;
  return std::max<int64_t>(1, std::min<int64_t>(T, std::max(floor_steps, cap)));
}

// The upstream gradient of steps [t0, t1), read where it lies when its rows allow it: rows of unit
// column stride at any row stride (a contiguous gradient, or one direction's half of a
// bidirectional output's gradient: row stride 2H), or a single row when every row is the same
// (out.sum()'s expanded gradient: row stride 0); anything else as a copy of those steps only.
struct StepGrads {
  Tensor rows;  // what is read: row i of the block at rows' data + i * ld
  int64_t ld;
  bool copy;  // rows is a private contiguous copy of the whole block (a kernel may overwrite it)
  template <typename T>
  const T* data() const { return rows.defined() ? rows.data_ptr<T>() : nullptr; }
};
inline StepGrads grad_steps(const Tensor& dhs, const StepRows& r, int64_t t0, int64_t t1) {
  Tensor block = step_block(dhs, r, t0, t1);  // [rows, H]
  if (block.stride(1) == 1) return {block, block.stride(0), !block.is_alias_of(dhs)};
  if (block.stride(0) == 0) return {block.narrow(0, 0, 1).contiguous(), 0, false};
  Tensor copy = block.contiguous();
  return {copy, copy.size(1), true};
}
// An optional upstream gradient: none read (a null pointer) when it is absent
inline StepGrads grad_steps(const c10::optional<Tensor>& dhs, const StepRows& r, int64_t t0, int64_t t1) {
  return dhs.has_value() && dhs->defined() ? grad_steps(*dhs, r, t0, t1) : StepGrads{Tensor(), 0, false};
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

// The input weights' gradients of a chunk of steps [t0, t1): dW_ih (+)= da^T x, db (+)= Σ da
// (da: the chunk's [rows, G] pre-activation gradients; `first` as acc_tn).
inline void add_weight_grads(const Tensor& da, const Tensor& x, const StepRows& r, int64_t t0, int64_t t1,
                             Tensor& dw_ih, Tensor& db, bool first) {
  auto a2 = rows2d(da);
  acc_tn(dw_ih, a2, step_block(x, r, t0, t1), first);
  acc_rows(db, a2, first);
}

// The gradients a backward returns, made when first needed: a serial backward then makes them
// after its first chunk's recurrence, whose upstream-gradient copy is gone by then, not before it
// (GRU B=1 H=64 training peak 0.365 → 0.32 MB, with dx made after the weight gradients). A
// pipelined one (`now`) makes them up front: its second thread writes them beside the recurrence.
class OnFirstUse {
 public:
  OnFirstUse(std::function<void()> make, bool now) : make_(std::move(make)) {
    if (now) ensure();
  }
  void ensure() const {
    if (!made_) make_(), made_ = true;
  }

 private:
  std::function<void()> make_;
  mutable bool made_ = false;
};

// dx of a backward. `into`: the dx that the other direction of a bidirectional layer wrote for
// the same x (its joint backward, kernels/ops.py `joint`); this backward then adds its rows to
// that buffer and returns an empty dx. Checked before any computation; true when it adds.
inline std::string shape_text(c10::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

inline bool adds_into(const Tensor& x, bool need, const c10::optional<Tensor>& into) {
  if (!into.has_value() || !into->defined()) return false;
  // (std::invalid_argument, a ValueError in Python: under torch 2.11 + CUDA 13 on a lent H100 a
  // failing TORCH_CHECK here crashed the process — Segmentation fault — while ATen's own errors
  // raised through the same op; seen 2026-11-26, cause not found)
  if (into->sizes() != x.sizes() || into->scalar_type() != x.scalar_type() || !into->is_contiguous())
    throw std::invalid_argument(
        std::string("dx_into: expected a contiguous ") + c10::toString(x.scalar_type()) +
        " tensor of x's shape " + shape_text(x.sizes()) + ", got " +
        c10::toString(into->scalar_type()) + " " + shape_text(into->sizes()) +
        (into->is_contiguous() ? "" : " (not contiguous)"));
  return need;
}

// An uninitialised contiguous tensor from the recycled blocks of cache.h when it is that large,
// else at::empty (defined in cache.cpp)
Tensor recycled_empty(at::IntArrayRef shape, const at::TensorOptions& options);

// dx of a backward: x's shape, `into` when it adds there, or empty when x needs no gradient
inline Tensor input_grads_like(const Tensor& x, bool need, const c10::optional<Tensor>& into) {
  if (need && into.has_value() && into->defined()) return *into;
  return need ? at::empty(x.sizes(), x.options()) : at::empty({0}, x.options());
}

// The input gradient of a chunk of steps [t0, t1): its rows of dx = da W_ih, or += when `add`
// (nothing when dx is empty: not needed).
inline void input_grad(const Tensor& da, const Tensor& w_ih, const StepRows& r, int64_t t0, int64_t t1,
                       Tensor& dx, bool add) {
  if (dx.numel() == 0) return;
  auto rows = step_block(dx, r, t0, t1);  // a view: dx is contiguous
  mm_into(rows, rows2d(da), w_ih, add ? 1 : 0);
}

// Packed layout: the states entering the steps [t0, t1), gathered row by row into a [rows, H]
// block (h_{t-1}: rows [0, n_t) of step t-1, or of h0 at t = 0; reverse: h_{t+1} for the
// n_{t+1} sequences still running at t+1, h0 for those whose reverse run starts at t).
inline Tensor packed_prev_states(const Tensor& h0, const Tensor& hs, const StepRows& r, int64_t t0,
                                 int64_t t1, bool reverse) {
  const int64_t H = hs.size(-1);
  auto out = at::empty({r.count(t0, t1), H}, hs.options());
  const int64_t bytes = H * int64_t(hs.element_size());
  const char* h0v = static_cast<const char*>(h0.data_ptr());
  const char* hv = static_cast<const char*>(hs.data_ptr());
  char* o = static_cast<char*>(out.data_ptr());
  for (int64_t t = t0; t < t1; ++t) {
    char* dst = o + (r.off[t] - r.off[t0]) * bytes;
    const int64_t n = r.n(t);
    const int64_t from_hs = reverse ? (t + 1 < r.T ? r.n(t + 1) : 0) : (t > 0 ? n : 0);
    const int64_t src_row = reverse ? (t + 1 < r.T ? r.off[t + 1] : 0) : (t > 0 ? r.off[t - 1] : 0);
    std::memcpy(dst, hv + src_row * bytes, from_hs * bytes);
    std::memcpy(dst + from_hs * bytes, h0v + from_hs * bytes, (n - from_hs) * bytes);
  }
  return out;
}

// The states entering the steps [t0, t1) as a [rows, H] block (dense: materialised only when the
// chunk starts at the sequence's first step, whose previous state is h0).
inline Tensor chunk_prev_states(const Tensor& h0, const Tensor& hs, const StepRows& r, int64_t t0,
                                int64_t t1, bool reverse) {
  if (r.packed) return packed_prev_states(h0, hs, r, t0, t1, reverse);
  return rows2d(prev_states(h0, hs, t0, t1 - t0, reverse));
}

// Whether add_prev_grads gathers the chunk's previous states into one block for `out`
inline bool gathers_prev(const Tensor& out, int64_t rows, int64_t H, const StepRows& r, int64_t t0,
                         int64_t t1, bool reverse) {
  const bool starts = reverse ? t1 == r.T : t0 == 0;  // the chunk holds the first step run
  return r.packed || !starts || rows * H <= out.numel();
}

// dW (+)= Σ_{t in [t0, t1)} da_t^T h_prev(t) for the chunk's da [rows, G] (h_prev as StepOrder;
// `first` as acc_tn). A dense chunk that holds the sequence's first step takes h0 for it: its
// states are gathered into one block when that copy is no larger than dW, else h0's rows are a
// GEMM of their own (a rank-B update, which reads and writes all of dW: GRU B=1 H=512, 3 MB).
// `prev`, when given, keeps the block for the chunk's other dW_hh blocks (GRU: r/z and n).
inline void add_prev_grads(Tensor out, const Tensor& da, const Tensor& h0, const Tensor& hs,
                           const StepRows& r, int64_t t0, int64_t t1, bool reverse, bool first,
                           Tensor* prev = nullptr) {
  const int64_t B = r.B, n = t1 - t0, H = hs.size(-1);
  if (gathers_prev(out, da.size(0), H, r, t0, t1, reverse)) {
    Tensor own;
    Tensor& block = prev ? *prev : own;
    if (!block.defined()) block = chunk_prev_states(h0, hs, r, t0, t1, reverse);
    return acc_tn(out, da, block, first);
  }
  // h0 enters the step at the chunk's end (reverse: rows of step T-1) or start (rows of step 0)
  const int64_t h0_row = reverse ? (n - 1) * B : 0, rest_row = reverse ? 0 : B;
  acc_tn(out, da.narrow(0, h0_row, B), h0, first);
  if (n > 1) {
    auto states = rows2d(hs.narrow(0, reverse ? t0 + 1 : 0, n - 1));
    acc_tn(out, da.narrow(0, rest_row, (n - 1) * B), states, false);
  }
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

// Rows each step's recurrent GEMM needs: the running sequences, n_t when packed; dense, the
// prefix the mask allows (active_rows)
inline std::vector<int64_t> running_rows(const StepRows& r, const bool* m) {
  if (!r.packed) return active_rows(m, r.T, r.B);
  std::vector<int64_t> n(r.T);
  for (int64_t t = 0; t < r.T; ++t) n[t] = r.n(t);
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
