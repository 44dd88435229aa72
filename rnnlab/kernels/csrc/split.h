// Batch size 1 on both cores: each core owns half of the hidden units, and with them the rows of
// every gate block that feed those units, for the whole sequence.
//
// At B = 1 a step is a matrix-vector product that reads all of W_hh (GRU H=256: 768 KB), so a step
// costs what reading W_hh costs. Split by units, each core reads only its half of W_hh, and that
// half stays in the core's own L2 (2 MB here) from step to step. The gate math of a unit needs
// only that unit's rows, so a core computes its half of h_t alone; the one exchange per step is
// h_t itself (forward: the next mat-vec reads all of it) or the backward's partial sums
// dh_{t-1} = Σ_rows da W_hh (each core sums over its own rows; each reads both partials for its
// own units). One barrier per step. Microbenchmark, one thread → two (µs per step, mat-vec plus a
// gate pass): 768 KB 11.4 → 6.2, 256 KB 4.3 → 2.7, 64 KB 1.40 → 1.32, 16 KB 0.53 → 0.75.
#pragma once

#include <optional>
#include <type_traits>
#include <vector>

#include "pipeline.h"

namespace rnnlab {

// Recurrent weights (elements of W_hh) from which a B = 1 sequence runs split: the backward from
// 512 KB of floats, the forward from 128 KB.
// Backward: interleaved with torch as `rnnlab bench` runs, 2 threads, one-thread recurrence →
// split: T=100 GRU H=256 train 2.94 → 2.48 ms; LSTM H=512 14.4 → 11.6; RNN H=512 2.82 → 2.30;
// T=1000 GRU H=256 17.2 → 16.7. Below it the split lost what the chunk pipeline (pipeline.h) gains
// at B = 1 by running the weight gradients beside the recurrence: training with both passes split,
// T=1000 H=128: GRU 5.3 → 5.7 ms, LSTM 5.7 → 6.5; RNN H=256 5.1 → 5.5.
// Forward (one-thread pipelined recurrence → split, same protocol, train / infer ms): T=100 LSTM
// H=128 1.09 → 0.99 / 0.38 → 0.33, GRU H=128 0.99 → 0.84 / 0.34 → 0.26, RNN H=256 1.00 → 0.88 /
// 0.33 → 0.27; T=400 LSTM H=128 2.84 → 2.78 / 1.16 → 1.15, GRU H=128 2.75 → 2.37, RNN H=256 2.55 →
// 2.36; T=1000 even (LSTM H=128 5.72 → 5.72 / 2.40 → 2.51, GRU H=128 5.25 → 4.77, RNN H=256 even).
// At 64 KB it lost: LSTM H=64 T=100 0.63 → 0.60 train but 0.17 → 0.20 infer, T=1000 0.98 → 1.28.
constexpr int64_t kSplitMinBackward = 131072;
constexpr int64_t kSplitMinForward = 32768;

inline bool split_units(int64_t B, bool masked, int64_t weights, bool backward) {
  return B == 1 && !masked && weights >= (backward ? kSplitMinBackward : kSplitMinForward) &&
         at::get_num_threads() >= 2 && !at::in_parallel_region();
}

// B > 1 split by units too (forward, GRU reset "after": UnitGemms below) for W_hh of 192 K–768 K
// weights (H = 256–512: each core's half stays in its 2 MB L2) and up to 8 M multiply-adds per
// step. Same process, torch interleaved (alternating which runs first), 2 threads, T=100, ms,
// whole-matrix step (pipelined where pipeline.h says) → split: H=256 B=8 inference 2.45 → 2.40,
// training 8.74 → 8.50; B=16 4.49 → 4.36, 15.8 → 15.1; B=32 8.53 → 7.87, 28.4 → 26.8; packed B=32
// (lengths in [T/2, T]) 8.04 → 7.35, 25.8 → 24.5; H=512 B=8 8.30 → 8.13, 31.6 → 31.7; B=4 even.
// Above 8 M it lost or gained 1–2 %: H=256 B=64 15.5 → 16.1 / 57.3 → 59.1, H=512 B=32 30.4 →
// 31.1 / 101.3 → 102.4; H=512 B=16 16.5 → 16.2 / 55.1 → 54.5. The LSTM's version drew (B=32
// H=256 inference 11.8 → 11.5, training 38.7 → 38.8; B=64 H=256 22.6 → 23.3); not kept.
inline bool split_batch(int64_t B, int64_t weights) {
  return B > 1 && weights >= 196608 && weights <= 786432 && B * weights <= 8388608 &&
         at::get_num_threads() >= 2 && !at::in_parallel_region();
}

// The backward at B > 1 split by units too (LSTM, and GRU reset "after"; each core: its units'
// gate pass, then one single-thread GEMM of its gathered da columns by its gathered W_hh rows into
// a partial dh; UnitGemms below, backward form) from H = 256 while B ≤ H / 48: there a step is
// bound by reading W_hh (LSTM H=512: 4 MB), each core then reads half, and the weight-gradient
// GEMMs run after the recurrence on both cores instead of beside it (pipeline.h). Same process,
// torch interleaved, alternating order, 2 threads, T=100, training ms, pipelined or serial →
// split: LSTM B=2 H=256 5.64 → 4.76, B=4 H=256 8.08 → 7.26, B=2 H=512 39.8 → 32.9, B=4 H=512
// 36.7 → 29.2 (34.7 → 27.0), B=8 H=512 49.1 → 45.9, B=8 H=384 28.1 → 24.2, B=4 H=1024 162.0 →
// 130.5; GRU B=2 H=256 4.14 → 3.56, B=4 H=256 5.87 → 5.43, B=4 H=512 23.8 → 17.7, B=8 H=512
// 34.6 → 31.0, B=8 H=384 18.4 → 16.6. Past the bound it drew or lost, the pipeline winning once
// a step is compute-bound: LSTM B=8 H=256 11.11 → 10.99, B=16 H=256 20.3 → 20.8, B=64 H=256 73.0
// → 75.5, B=16 H=512 77.3 → 77.1; GRU B=8 H=256 9.39 → 9.02, B=16 H=256 17.1 → 17.7, B=16 H=512
// 60.2 → 59.1, B=32 H=512 105.8 → 108.5; and below H = 256: LSTM B=8 H=128 3.42 → 3.68, B=32
// H=128 12.3 → 12.7, B=64 H=64 7.57 → 8.54.
// Below H = 512 (W_hh within about one core's L2) the split's fixed cost per call (each core's
// W_hh rows gathered and packed) outweighs its gain on short sequences: EPYC, same process, 25
// alternating rounds, training ms, split → not, T = 1 / 3 / 10 / 30: GRU B=2 H=256 1.29 → 0.90,
// 0.97 → 0.79, 1.15 → 1.05, 1.90 → 1.94; B=4 H=256 0.92 → 0.76, 1.00 → 0.93, 1.47 → 1.39, 3.07
// → 3.11; LSTM B=2 H=256 0.68 → 0.41, 0.75 → 0.52, 1.12 → 0.95, 2.10 → 2.25; B=4 H=256 0.74 →
// 0.48, 0.90 → 0.66, 1.73 → 1.86, 3.58 → 3.67. At H = 512 the split won from T = 1 (GRU B=8
// 3.03 → 3.61, T=10 7.35 → 10.41; LSTM B=4 2.96 → 3.75, T=10 7.04 → 13.93).
constexpr int64_t kSplitBackMinSteps = 20;
inline bool split_batch_back(int64_t B, int64_t H, int64_t T) {
  return B > 1 && H >= 256 && B * 48 <= H && (H >= 512 || T >= kSplitBackMinSteps) &&
         at::get_num_threads() >= 2 && !at::in_parallel_region();
}

// The LSTM (and the GRU's forward, reset "after", where it is not split by units: gru.cpp) at
// B ≥ 8 as two batch halves (without projection; oneDNN as the GEMM library, i.e. the EPYC;
// packed input in the forward only, see halves_mid). Forward: the input projection of all
// steps first, one GEMM on both cores, then each core runs the whole time loop over its half of the
// batch rows, its own one-thread step GEMM and gate pass; the rows never meet, so nothing is
// exchanged. The chunk pipeline it replaces runs every step on one core while the other projects
// the next chunk, which takes it ~⅓ of the time (perf, LSTM B=64 H=64: the second core 62 % in
// libgomp's spin-wait). Up to 1 MB of W_hh, which each core then reads whole. Same process,
// alternating, 2 threads, T=100, op ms, pipelined → halves: B=8 H=64 0.79 → 0.65, B=64 H=64 6.10 →
// 5.44, B=8 H=128 2.33 → 1.90, B=32 H=128 9.64 → 7.41, B=64 H=128 15.65 → 13.87, B=8 H=256 7.75 →
// 7.53, B=32 H=256 22.79 → 20.67; B=32 H=64 drew (3.51 → 3.96; then the matmul primitive's per-call
// set-up went, matmul.cpp: 3.24 → 2.20 ms inference). The backward's recurrences as halves lost to
// the pipeline that runs the weight gradients beside them (B=64 H=128 23.5 → 26.7, B=8 H=256 13.1 →
// 14.4), so they run as halves only where no pipeline runs (steps over 8 M multiply-adds; then each
// chunk's weight GEMMs follow on both cores): backward op ms, B=32 H=256 46.5 → 43.9 (and 46.5 →
// 43.4), B=48 77.2 → 71.5, B=64 85.6 → 83.5.
constexpr int64_t kHalvesMaxWeights = 262144;
inline bool batch_halves(int64_t B, int64_t weights) {
  return B >= 8 && weights <= kHalvesMaxWeights && use_onednn_gemm() &&
         at::get_num_threads() >= 2 && !at::in_parallel_region();
}

// Where the halves meet: rows [0, mid) and [mid, B). Dense: the middle. Packed: the sequences are
// sorted longest first, so the lower rows run more steps; mid balances the two halves' work, a
// step of r rows counted as r + kStepRows (a step's fixed cost, in rows). Packed forward, before
// (one 2-thread step GEMM over the running rows) → middle → balanced, same process, alternating,
// lengths uniform in [T/2, T], inference ms: B=32 H=256 20.85 → 17.99 → 17.01, B=64 H=64 3.62 →
// 3.14 → 2.92, B=32 H=128 6.40 → 5.44 → 5.53, B=8 H=256 4.71 → 4.26 → 4.21; training (forward
// only as halves) B=32 H=256 52.0 → 49.7, B=64 H=128 27.8 → 25.7. The packed backward as halves
// drew (49.7 → 50.9, 25.7 → 25.4): not kept.
constexpr int64_t kStepRows = 4;
inline int64_t halves_mid(const StepRows& r) {
  if (!r.packed || r.B < 2) return (r.B + 1) / 2;
  std::vector<int64_t> len(r.B + 1, 0);  // len[b]: the steps row b runs (#t with n_t > b)
  for (int64_t t = 0; t < r.T; ++t)
    if (r.n(t) > 0) len[r.n(t) - 1] += 1;
  for (int64_t b = r.B - 1; b > 0; --b) len[b - 1] += len[b];
  int64_t lower = len[0] + kStepRows * len[0], upper = r.count(0, r.T) - len[0];
  int64_t best = 1, cost = std::max(lower, upper + kStepRows * len[1]);
  for (int64_t mid = 2; mid < r.B; ++mid) {  // rows [0, mid) against [mid, B)
    lower += len[mid - 1], upper -= len[mid - 1];
    const int64_t c = std::max(lower, upper + kStepRows * len[mid]);
    if (c < cost) cost = c, best = mid;
  }
  return best;
}

// A sequence's per-step GEMM (StepGemm, packed.h) over all B rows, or, for batch halves, one per
// half (pack slots 0 and 1); `of(b0, b1)` is the one for rows [b0, b1).
template <typename T>
class BatchGemms {
 public:
  // mid: where the halves meet (halves_mid)
  BatchGemms(bool halves, int64_t mid, const T* w, int64_t ldw, bool trans, int64_t B, int64_t N,
             int64_t K) {
    if (halves) lower_.emplace(w, ldw, trans, mid, N, K, 0), upper_.emplace(w, ldw, trans, B - mid, N, K, 1);
    else all_.emplace(w, ldw, trans, B, N, K);
  }
  const StepGemm<T>& of(int64_t b0, int64_t b1) const {
    return all_ ? *all_ : b0 > 0 ? *upper_ : *lower_;
  }

 private:
  std::optional<StepGemm<T>> all_, lower_, upper_;
};

// f(b0, b1) for the batch rows' halves [0, mid) and [mid, B) (halves_mid) on two threads at once, or one
// after the other when only one thread comes.
template <class F>
void run_halves(int64_t B, int64_t mid, const F& f) {
  std::atomic<bool> failed{false};
  on_two_threads(failed, [&] { f(0, mid), f(mid, B); }, [&](int64_t role) {
    if (role == 0) f(0, mid);
    else f(mid, B);
  });
}

// Backward chunk length of a split sequence: whole sequences up to 2048 steps. The weight
// gradients then run after the recurrence as a few large GEMMs (the pipeline that overlaps them
// with it needs the second core); in 43-step chunks (chunk_steps) each dW GEMM re-read and
// re-wrote all of dW per chunk. The chunk buffers at B = 1 are at most the saved workspace's size.
inline int64_t split_chunk(int64_t T) { return std::min<int64_t>(T, 2048); }

// Backward chunk length of a batched split: twice chunk_steps (common.h), ~T/4. Its chunk buffers,
// the temporaries of its weight gradients and its one barrier-free GEMM pass per chunk balance
// peak memory against GEMM size. 2 threads, T=100, training ms / peak MB (torch's peak), whole
// sequence → 26 steps → 13: GRU B=8 H=512 29.5 / 20.3 → 29.6 / 17.5 → 31.7 / 16.5 (19.8); B=4
// H=512 19.3 / 13.9 → 19.7 / 11.8 → 21.1 / 11.3 (14.4); LSTM B=8 H=512 44.2 / 25.4 → 44.6 / 21.1
// → 46.1 / 20.1 (59.5); B=4 H=256 6.45 / 6.4 → 6.82 / 5.3 → 7.23 / 5.0 (15.1). Whole sequences
// put the GRU's peak above torch's.
inline int64_t split_batch_chunk(int64_t T, int64_t B, int64_t width) {
  return std::min<int64_t>(T, 2 * chunk_steps(T, B, width));
}

// The hidden units [u0, u1) a thread owns; role 0 or 1 (which partial-sum buffer it writes), and
// how many threads run (1 when only one came: it owns every unit).
struct Units {
  int64_t u0, u1;
  int role, threads;
  int64_t n() const { return u1 - u0; }
};

// A barrier for two threads spinning on a generation counter (an earlier prototype with libgomp's
// barrier made a per-step split slower: 3.17 → 3.64 µs per step, BENCHMARKS.md).
class PairBarrier {
 public:
  void wait(int64_t& generation) {
    ++generation;
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == 1) {
      arrived_.store(0, std::memory_order_relaxed);
      released_.store(generation, std::memory_order_release);
      return;
    }
    while (released_.load(std::memory_order_acquire) != generation) _mm_pause();
  }

 private:
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int64_t> released_{0};
};

// Where the units split: halves on 64-byte lines
inline int64_t split_mid(int64_t H) { return std::max<int64_t>(16, (H / 2) / 16 * 16); }

// step(i, units) for i = 0 … n-1 on two threads, a barrier after each, then finish(units) on each
// thread (after the last barrier, so it sees both threads' last step; the forwards need none).
// Alone: every unit, serially. The steps must not throw (pointer arithmetic only): a thread never
// leaves the other waiting.
template <class Step, class Finish = void (*)(const Units&)>
void run_split(int64_t H, int64_t n, const Step& step, const Finish& finish = [](const Units&) {}) {
  const int64_t mid = split_mid(H);
  PairBarrier barrier;
  std::atomic<bool> failed{false};
  auto alone = [&] {
    const Units all{0, H, 0, 1};
    for (int64_t i = 0; i < n; ++i) step(i, all);
    finish(all);
  };
  on_two_threads(failed, alone, [&](int64_t role) {
    const Units own = role == 0 ? Units{0, mid, 0, 2} : Units{mid, H, 1, 2};
    int64_t generation = 0;
    for (int64_t i = 0; i < n; ++i) {
      step(i, own);
      barrier.wait(generation);
    }
    finish(own);
  });
}

// Forward mat-vec of a thread's rows: for each of the G gate blocks, c[k H + u] += W[k H + u] · a
// for its units u (W row-major with row stride ldw, K columns).
template <typename T>
inline void gemv_units(const T* w, int64_t ldw, int64_t G, int64_t H, const Units& u, int64_t K,
                       const T* a, T* c) {
  for (int64_t k = 0; k < G; ++k) gemv_rows(w, ldw, k * H + u.u0, k * H + u.u1, K, a, c);
}

// Backward partial sum of a thread's rows: part[0:N] = Σ_k Σ_u d[k H + u] W[k H + u, 0:N]; what
// dh_{t-1} = d W_hh is once both threads' parts are added.
template <typename T>
inline void partial_units(const T* w, int64_t ldw, int64_t G, int64_t H, const Units& u, int64_t N,
                          const T* d, T* part) {
  std::fill(part, part + N, T(0));
  for (int64_t k = 0; k < G; ++k) {
    const int64_t r0 = k * H + u.u0;
    gemv_cols(w + r0 * ldw, ldw, 0, N, u.n(), d + r0, part);
  }
}

// The backward's exchange buffers: partial sums by step parity and thread, [2][2][H] — a thread
// writes step i's into parity i & 1 while the other may still read step i-1's.
template <typename T>
struct Partials {
  T* p;
  int64_t H;
  T* mine(int64_t i, const Units& u) const { return p + ((i & 1) * 2 + u.role) * H; }
  // dh[u] += both threads' partials of step i, for the thread's own units
  void add_to(int64_t i, const Units& u, T* dh) const {
    for (int r = 0; r < u.threads; ++r) {
      const T* q = p + ((i & 1) * 2 + r) * H;
      RNNLAB_SIMD for (int64_t j = u.u0; j < u.u1; ++j) dh[j] += q[j];
    }
  }
};

// Batched split (B > 1): each thread's rows of W_hh (its units in every one of the G gate blocks)
// gathered into one [G n, K] matrix W_u and packed once, so a step is one single-thread GEMM per
// thread into a buffer of its own. Forward (split_batch, GRU): q [rows, G n] = h_{t-1} W_u^T, gate
// block k at columns k n. Backward (split_batch_back: LSTM, GRU): the thread's columns of da [B, G H]
// gathered the same way, a [B, G n], then part [B, K] = a W_u, its share of dh_{t-1} = da W_hh.
// The packs take slots 0 and 1 of the calling thread (packed.h pack_scratch): no other StepGemm
// of the caller may be in use meanwhile.
template <typename T>
class UnitGemms {
 public:
  UnitGemms(const Tensor& w, int64_t G, int64_t H, int64_t B, bool backward = false)
      : G_(G), H_(H), B_(B), K_(w.size(1)) {
    const int64_t mid = split_mid(H);
    const int64_t u0[2] = {0, mid}, n[2] = {mid, H - mid};
    if (backward) parts_ = at::empty({2, 2, B, K_}, w.options());  // [step parity][half]
    for (int half = 0; half < 2; ++half) {
      n_[half] = n[half], u0_[half] = u0[half];
      if (n[half] == 0) continue;  // (H too small to split: the other half has every unit)
      std::vector<Tensor> blocks;
      for (int64_t k = 0; k < G; ++k) blocks.push_back(w.narrow(0, k * H + u0[half], n[half]));
      rows_[half] = at::cat(blocks, 0);  // [G n, K]
      const T* wu = rows_[half].template data_ptr<T>();
      out_[half] = at::empty({B, G * n[half]}, w.options());  // q, or the gathered da
      if (backward) gemm_[half].emplace(wu, K_, false, B, K_, G * n[half], half);
      else gemm_[half].emplace(wu, K_, true, B, G * n[half], K_, half);
      // a packed W_u (packed.h) is a copy, and the backward's GEMM always has B > 1 rows, so W_u
      // can go then (peak training memory; the forward keeps it: a packed run's last steps may
      // have one row, which StepGemm multiplies from W_u itself)
      if (backward && gemm_[half]->packed()) rows_[half] = Tensor();
    }
  }
  // f(u0, n, q, ldq) for the halves a thread owns (both when it runs alone), after
  // q = prev[:rows] W_u^T for that half
  template <class F>
  void each(const Units& u, const PrevRows<T>& prev, int64_t rows, const F& f) const {
    for (int half = 0; half < 2; ++half) {
      if (u.threads == 2 && half != u.role) continue;
      T* q = out_[half].template data_ptr<T>();
      prev.gemm(*gemm_[half], T(0), q, G_ * n_[half], rows);
      f(u0_[half], n_[half], q, G_ * n_[half]);
    }
  }
  // Backward, step i: part [B, K] = da[:, the half's columns] W_u for the halves a thread owns
  // (da [B, G H]), into the buffer of i's parity: the other thread may still read step i-1's
  void partials(int64_t i, const Units& u, const T* da) const {
    for (int half = 0; half < 2; ++half) {
      if (u.threads == 2 && half != u.role) continue;
      T* part = part_of(i, half);
      const int64_t n = n_[half];
      if (n == 0) {
        std::fill(part, part + B_ * K_, T(0));
        continue;
      }
      T* a = out_[half].template data_ptr<T>();
      for (int64_t b = 0; b < B_; ++b)
        for (int64_t k = 0; k < G_; ++k) {
          const T* src = da + b * G_ * H_ + k * H_ + u0_[half];
          std::copy(src, src + n, a + (b * G_ + k) * n);
        }
      (*gemm_[half])(a, G_ * n, T(0), part, K_);
    }
  }
  // dh [B, K = H] += both halves' partials of step i, in the thread's own columns u
  void add_partials(int64_t i, const Units& u, T* dh) const {
    for (int64_t b = 0; b < B_; ++b)
      for (int half = 0; half < 2; ++half) {
        const T* q = part_of(i, half) + b * K_;
        T* d = dh + b * K_;
        RNNLAB_SIMD for (int64_t j = u.u0; j < u.u1; ++j) d[j] += q[j];
      }
  }

 private:
  T* part_of(int64_t i, int half) const {
    return parts_.template data_ptr<T>() + ((i & 1) * 2 + half) * B_ * K_;
  }
  int64_t G_, H_, B_, K_, n_[2], u0_[2];
  Tensor rows_[2], out_[2], parts_;
  std::optional<StepGemm<T>> gemm_[2];
};

}  // namespace rnnlab
