// The chunk loops of the whole-sequence kernels, optionally as pipelines over the two cores.
//
// In the backward each chunk of steps has three stages: its recurrence (dh flowing from step to
// step, serial in time), its weight gradients (dW += da^T [x | h_prev], db += Σ da: accumulated,
// so one thread runs them in chunk order) and its input gradient (dx rows = da W_ih: rows of its
// own). Run one after the other, the second core idles through every recurrence when the per-step
// GEMMs are too small to split (perf, LSTM B=64 H=64 training: 25 % of the samples in libgomp's
// spin-wait; and ATen's parallel_for in this extension was a serial loop until it was built with
// -fopenmp). Overlapped, thread A runs the recurrences back to back while thread B runs the weight
// gradients (and the dx it gets to first) of the chunks A has finished; A takes dx stages while it
// waits for a chunk buffer and after its last recurrence. Buffers alternate between two slots.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <immintrin.h>

#include <atomic>
#include <exception>
#include <memory>

#include "packed.h"

namespace rnnlab {

// Whether a chunk pipeline runs: two threads free, and per-step work that one thread does as
// well as two. Inside the pipeline's parallel region the recurrence's BLAS calls run on one thread,
// so a step must be one that runs on one thread anyway (a B = 1 step above kBlasGemv weights is
// MKL's threaded gemv: LSTM B=1 H=512 inference went 6.5 → 16.1 ms with it pipelined) or, in the
// backward, small enough that the weight gradients moved to the other core make up for it.
// Backward, interleaved A/B, serial → overlapped (2 threads, T=100, ms): LSTM B=8 H=64 1.16 →
// 0.80, B=64 H=64 7.06 → 5.31, B=64 H=128 (4.2 M multiply-adds per step) 16.7 → 14.9, B=32 H=256
// (8.4 M) 26.5 → 26.5, B=64 H=256 (16.8 M) 48.3 → 50.1; GRU B=64 H=64 6.16 → 4.44, B=32 H=256
// (6.3 M) 25.2 → 22.0, B=64 H=256 (12.6 M) 43.9 → 42.4; RNN B=64 H=64 2.88 → 1.93, B=64 H=256
// (4.2 M) 16.5 → 14.9. The forward has only the input projection to move: it makes up for a
// single-threaded step GEMM up to ~3 M multiply-adds, and up to 7 M while that one core keeps
// W_hh in its L2 (≤ 1 MB of floats). Training forward, one projection → pipelined (ms): GRU B=32
// H=128 (1.6 M) 2.94 → 2.68, LSTM B=32 H=128 (2.1 M) 3.73 → 3.49, GRU B=16 H=256 (3.1 M) 4.48 →
// 4.25, LSTM B=16 H=256 (4.2 M) 5.48 → 5.45, RNN B=32 H=512 (8.4 M) 9.56 → 9.81. Whole layer
// with torch interleaved, 3.2 M → 7 M limit (train / infer ms): LSTM proj B=32 H=256 (4.2 M,
// 512 KB) training 33.0 → 30.5 and 31.6 → 29.6 in two runs; RNN B=64 H=256 (4.2 M, 256 KB) 18.2 → 17.5,
// 6.64 → 6.05 infer; LSTM B=64 H=128 (4.2 M, 256 KB) 22.2 → 21.3 train; GRU B=32 H=256 (6.3 M,
// 768 KB) 29.1 → 28.8 / 9.33 → 9.03; RNN B=16 H=512 (4.2 M, 1 MB) even. Past one L2 it lost:
// GRU B=8 H=512 (6.3 M, 3 MB of W_hh) 33.1 → 36.4 / 8.99 → 13.4.
constexpr int64_t kOverlapBackward = 8000000, kOverlapForward = 3200000;
constexpr int64_t kOverlapForwardL2 = 7000000, kOverlapWeightsL2 = 262144;

inline bool overlap_chunks(int64_t chunks, int64_t B, int64_t step_macs, bool backward) {
  if (chunks < 2 || at::get_num_threads() < 2 || at::in_parallel_region()) return false;
  if (B == 1) return step_macs <= kBlasGemv;  // the hand-written single-thread mat-vec
  if (backward) return step_macs <= kOverlapBackward;
  const int64_t weights = step_macs / B;  // elements of W_hh: each step multiplies B rows by it
  return step_macs <= kOverlapForward || (step_macs <= kOverlapForwardL2 && weights <= kOverlapWeightsL2);
}

// Steps per input projection in a serial forward whose pre-activations are internal (the GRU's):
// whole sequences up to 2048 rows, else chunks of ≥ 2048 rows, one GEMM each, into one buffer.
// A whole-sequence buffer above glibc's 32 MB mmap ceiling is mapped afresh by every call, and
// its page faults (~0.9 µs each here) cost more than the smaller GEMMs: GRU B=64 H=512 T=100
// (39 MB of pre-activations; 9.6 K faults a call), same process, alternating order, ms, whole →
// chunks: inference 73.0 → 64.9, training 229 → 218; below that size even (B=64 H=256 17.7 →
// 17.8 / 61.2 → 60.2, B=32 H=512 35.9 → 35.7, T=1000 B=8 H=128 10.2 → 10.2, B=1 H=512 training
// 9.20 → 9.03).
inline int64_t proj_chunk_steps(int64_t T, int64_t B) {
  return std::min<int64_t>(T, std::max<int64_t>(1, (2048 + B - 1) / B));
}

// Chunk length in the backward pipeline: half the one-thread chunk, so its two alternating chunk
// buffers hold what one did. Interleaved A/B, full → half chunks (2 threads, T=100, training ms,
// peak MB): 2-layer bidirectional RNN B=32 H=256 52.3 → 50.9, 37.4 → 36.8; LSTM B=64 H=64
// 8.07 → 7.55, 13.0 → 12.1; LSTM B=32 H=128 13.7 → 12.6; GRU B=32 H=256 31.0 → 32.5 (noise:
// ±5 %); LSTM proj B=1 H=256 peak 2.56 → 2.42.
inline int64_t pipelined_chunk(int64_t K, bool overlap) { return overlap ? (K + 1) / 2 : K; }

// Chunk buffers the pipeline cycles through (callers allocate this many). Two measured faster
// than four or eight (LSTM B=64 H=64 backward 5.31 / 5.50 / 6.24 ms; GRU B=32 H=256 22.0 / 24.9):
// the buffers stay in cache.
inline int64_t chunk_slots(int64_t chunks, bool overlap) {
  return overlap ? std::min<int64_t>(chunks, 2) : 1;
}

// role(0) and role(1) on two threads at once, each with the caller's dispatch state and below
// autograd (an OpenMP worker starts with default state, grad mode on, and the roles' ATen calls
// must not reach autograd), or serial() when only one thread comes. A role that throws sets
// `failed`, which ends the other's waits (spin_until), and the exception reaches the caller.
template <class Serial, class Role>
void on_two_threads(std::atomic<bool>& failed, const Serial& serial, const Role& role) {
  const c10::impl::LocalDispatchKeySet keys = c10::impl::tls_local_dispatch_key_set();
  at::parallel_for(0, 2, 1, [&](int64_t first, int64_t last) {
    c10::impl::ForceDispatchKeyGuard same_keys(keys);
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    try {
      if (last - first == 2) return serial();
      role(first);
    } catch (...) {
      failed.store(true);
      throw;
    }
  });
}

// Spin until done() holds; false if the other role failed meanwhile. `idle` runs between polls
// (returning whether it did some work; no pause then).
template <class Done, class Idle>
bool spin_until(const std::atomic<bool>& failed, const Done& done, const Idle& idle) {
  while (!done()) {
    if (failed.load(std::memory_order_relaxed)) return false;
    if (!idle()) _mm_pause();
  }
  return true;
}
template <class Done>
bool spin_until(const std::atomic<bool>& failed, const Done& done) {
  return spin_until(failed, done, [] { return false; });
}

// The chunks [s0, s1) of steps as run, in backward order (s1 = T first), chunk size K, each in
// three stages: rec(slot, s0, s1), then acc(slot, s0, s1) (gradients accumulated over chunks, so
// run in chunk order by one thread) and dx(slot, s0, s1) (rows of its own, any thread). slot is
// the chunk's buffer, j % chunk_slots.
template <class Rec, class Acc, class Dx>
void run_chunks(int64_t T, int64_t K, bool overlap, const Rec& rec, const Acc& acc, const Dx& dx) {
  const int64_t chunks = (T + K - 1) / K, slots = chunk_slots(chunks, overlap);
  auto stage = [&](const auto& f, int64_t j) {  // chunk j in backward order: [s0, s1)
    const int64_t s1 = T - j * K;
    f(j % slots, std::max<int64_t>(0, s1 - K), s1);
  };
  auto serial = [&] {
    for (int64_t j = 0; j < chunks; ++j) stage(rec, j), stage(acc, j), stage(dx, j);
  };
  if (!overlap) return serial();
  // rec_done: chunks whose recurrence finished; parts[j]: stages after it done (2: slot free);
  // claimed[j]: someone took chunk j's dx
  std::atomic<int64_t> rec_done{0};
  std::unique_ptr<std::atomic<int>[]> parts(new std::atomic<int>[chunks]);
  std::unique_ptr<std::atomic<bool>[]> claimed(new std::atomic<bool>[chunks]);
  for (int64_t j = 0; j < chunks; ++j) parts[j] = 0, claimed[j] = false;
  std::atomic<bool> failed{false};
  auto try_dx = [&](int64_t j) {
    if (claimed[j].exchange(true)) return false;
    stage(dx, j);
    parts[j].fetch_add(1, std::memory_order_release);
    return true;
  };
  on_two_threads(failed, serial, [&](int64_t role) {
    if (role == 0) {  // the recurrences, back to back; dx stages while a slot is still busy
      for (int64_t j = 0; j < chunks; ++j) {
        const int64_t o = j - slots;  // the chunk that last used slot j % slots
        auto slot_free = [&] { return o < 0 || parts[o].load(std::memory_order_acquire) == 2; };
        auto help = [&] {
          for (int64_t i = std::max<int64_t>(o, 0); i < j; ++i)
            if (try_dx(i)) return true;
          return false;
        };
        if (!spin_until(failed, slot_free, help)) return;
        stage(rec, j);
        rec_done.store(j + 1, std::memory_order_release);
      }
      for (int64_t j = chunks - 1; j >= 0; --j) try_dx(j);  // the last ones, from the end
    } else {  // the accumulating GEMMs in chunk order, and each dx not taken yet
      for (int64_t j = 0; j < chunks; ++j) {
        if (!spin_until(failed, [&] { return rec_done.load(std::memory_order_acquire) > j; })) return;
        stage(acc, j);
        parts[j].fetch_add(1, std::memory_order_release);
        try_dx(j);
      }
    }
  });
}

// The forward's two stages per chunk of steps, in run order: the input projection of the chunk's
// steps into `out` (one GEMM: out[t] = x[t] w^T), then rec(s0, s1), its recurrence. Overlapped,
// thread B projects chunk j+1 while thread A runs chunk j's recurrence (A projects chunk 0
// itself); otherwise one projection of all steps, then the recurrence.
template <class Rec>
void run_projected(const StepOrder& order, const StepRows& rows, int64_t K, bool overlap, Tensor& out,
                   const Tensor& x, const Tensor& w, const Rec& rec) {
  const int64_t T = order.T, chunks = (T + K - 1) / K;
  auto proj = [&](int64_t s0, int64_t s1) {
    const auto span = order.span(s0, s1);
    project_into(out, x, w, rows, span.first, span.second);
  };
  auto serial = [&] {
    proj(0, T);
    rec(0, T);
  };
  if (!overlap) return serial();
  std::unique_ptr<std::atomic<bool>[]> ready(new std::atomic<bool>[chunks]);
  for (int64_t j = 0; j < chunks; ++j) ready[j] = false;
  std::atomic<bool> failed{false};
  on_two_threads(failed, serial, [&](int64_t role) {
    for (int64_t j = 0; j < chunks; ++j) {
      const int64_t s0 = j * K, s1 = std::min(T, s0 + K);
      if (role == 1) {  // B: the projections of chunks 1, 2, …
        if (j == 0) continue;
        proj(s0, s1);
        ready[j].store(true, std::memory_order_release);
        continue;
      }
      if (j == 0) proj(s0, s1);  // A: chunk 0's projection, then every recurrence
      else if (!spin_until(failed, [&] { return ready[j].load(std::memory_order_acquire); })) return;
      rec(s0, s1);
    }
  });
}

// The same, serial, with the projections in a chunk-sized buffer `buf` ([rows, G], rows ≥ Kc
// steps' rows): chunk by chunk of Kc steps, the chunk's projection into buf's first rows (step t
// at row off[t] - off[t0], t0 the chunk's first time index), then rec(s0, s1) on it.
template <class Rec>
void run_projected_chunks(const StepOrder& order, const StepRows& rows, int64_t Kc, Tensor& buf,
                          const Tensor& x, const Tensor& w, const Rec& rec) {
  for (int64_t s0 = 0; s0 < order.T; s0 += Kc) {
    const int64_t s1 = std::min(order.T, s0 + Kc);
    const auto span = order.span(s0, s1);
    Tensor out = buf.narrow(0, 0, rows.count(span.first, span.second));
    mm_into(out, step_block(x, rows, span.first, span.second), w.t());
    rec(s0, s1);
  }
}

}  // namespace rnnlab
