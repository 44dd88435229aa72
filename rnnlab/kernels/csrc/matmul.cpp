// The per-step recurrent GEMM through oneDNN's matmul primitive (gemm.h OnednnMatmul), used when
// oneDNN is the GEMM library: C[M, N] = A[M, K] op(W) (+ C), W reordered once per sequence into
// the primitive's own blocked layout, so its brgemm kernels read it as oneDNN's RNN primitives do.
// Measured on the 2-core EPYC, µs per step, 2 threads, MKL packed → this: [64, 512] @ [512, 1536]
// 707 → 467, [32, 256] @ [256, 1024] 116 → 83, [8, 512] @ [512, 2048] 204 → 85 (dnnl_sgemm 94).
// Primitives have a fixed M (a run-time M fell back to oneDNN's slower jit gemm: [32, 256] @
// [256, 1024] 184 µs), so they serve full-batch steps; a packed sequence's shorter steps take
// gemm() on W itself. Built with RNNLAB_ONEDNN only.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <mutex>
#include <tuple>
#include <unordered_map>

#include "gemm.h"
#include "lru.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace rnnlab {
namespace {

using dnnl::memory;
using Dims = memory::dims;

dnnl::engine& cpu_engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

struct Prim {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

// Primitives by (M, N, K, lda, ldc, accumulate, threads): created once (JIT), kept, LRU of 64.
std::shared_ptr<Prim> primitive(int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldc, bool acc,
                                int threads) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, bool, int>;
  static Lru<Key, Prim> cache(64);
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  return cache.get(Key{M, N, K, lda, ldc, acc, threads}, [&] {
    const auto f32 = memory::data_type::f32;
    dnnl::primitive_attr attr;
    // our own scratchpad per thread: the library's shared one is not safe when a bidirectional
    // layer runs one direction per core through the same primitive (both.cpp)
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (acc) {  // C += A op(W)
      dnnl::post_ops ops;
      ops.append_sum(1.0f);
      attr.set_post_ops(ops);
    }
    memory::desc a(Dims{M, K}, f32, Dims{lda, 1}), c(Dims{M, N}, f32, Dims{ldc, 1});
    memory::desc w(Dims{K, N}, f32, memory::format_tag::any);
    auto pd = dnnl::matmul::primitive_desc(cpu_engine(), a, w, c, attr);
    return std::make_shared<Prim>(Prim{pd, dnnl::matmul(pd)});
  });
}

// Runs f with OpenMP's thread count at 1 for this thread when `serial` (restored after).
template <class F>
void with_threads(bool serial, const F& f) {
  const int previous = serial && !omp_in_parallel() ? omp_get_max_threads() : 0;
  if (previous > 1) omp_set_num_threads(1);
  f();
  if (previous > 1) omp_set_num_threads(previous);
}

}  // namespace

struct OnednnMatmul {
  const float* w;
  int64_t ldw, M, N, K;
  bool trans;
  // W in a primitive's layout: one per distinct layout (a 1-thread and a 2-thread primitive may
  // ask for different ones); the buffer is a tensor, so the profiler counts it
  std::vector<std::pair<memory::desc, at::Tensor>> packed;
  // the last call's primitive and packed W (a sequence's steps repeat one key: no cache lookup)
  std::tuple<int64_t, int64_t, bool, int> last_key{-1, -1, false, 0};
  std::shared_ptr<Prim> last;
  // … and its arguments, made once per key: a call only points A, C (and the scratchpad) at its
  // own buffers. Made per call they cost ~2.5 µs ([16, 64] @ [64, 256], one thread: 6.6 → 9.1 µs)
  std::unordered_map<int, memory> args;
  const void* weights(const memory::desc& md) {
    for (auto& p : packed)
      if (p.first == md) return p.second.data_ptr();
    const auto f32 = memory::data_type::f32;
    // op(W) as a [K, N] matrix: W^T of a row-major [N, K] W (trans), or W [K, N] itself
    memory::desc user(Dims{K, N}, f32, trans ? Dims{1, ldw} : Dims{ldw, 1});
    at::Tensor buf = at::empty({static_cast<int64_t>(md.get_size())}, at::kByte);
    memory src(user, cpu_engine(), const_cast<float*>(w)), dst(md, cpu_engine(), buf.data_ptr());
    dnnl::stream st(cpu_engine());
    dnnl::reorder(src, dst).execute(st, src, dst);
    st.wait();
    packed.emplace_back(md, buf);
    return buf.data_ptr();
  }
};

std::shared_ptr<OnednnMatmul> onednn_matmul(const float* w, int64_t ldw, bool trans, int64_t M,
                                            int64_t N, int64_t K) {
  return std::make_shared<OnednnMatmul>(OnednnMatmul{w, ldw, M, N, K, trans, {}});
}

void onednn_matmul_run(OnednnMatmul& m, const float* A, int64_t lda, float beta, float* C,
                       int64_t ldc, bool serial) {
  TORCH_CHECK(beta == 0.0f || beta == 1.0f, "onednn_matmul_run: beta must be 0 or 1");
  const int threads = serial || omp_in_parallel() ? 1 : omp_get_max_threads();
  with_threads(serial, [&] {
    const std::tuple<int64_t, int64_t, bool, int> key{lda, ldc, beta == 1.0f, threads};
    if (!m.last || key != m.last_key) {
      m.last = primitive(m.M, m.N, m.K, lda, ldc, beta == 1.0f, threads);
      const auto& pd = m.last->pd;
      void* w = const_cast<void*>(m.weights(pd.weights_desc()));
      m.args = {{DNNL_ARG_SRC, memory(pd.src_desc(), cpu_engine(), nullptr)},
                {DNNL_ARG_WEIGHTS, memory(pd.weights_desc(), cpu_engine(), w)},
                {DNNL_ARG_DST, memory(pd.dst_desc(), cpu_engine(), nullptr)},
                {DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), cpu_engine(), nullptr)}};
      m.last_key = key;
    }
    static thread_local dnnl::stream st(cpu_engine());
    static thread_local at::Tensor scratch;  // (per thread: a call may run on either core)
    const int64_t bytes = static_cast<int64_t>(m.last->pd.scratchpad_desc().get_size()) + 64;
    if (!scratch.defined() || scratch.numel() < bytes) scratch = at::empty({bytes}, at::kByte);
    m.args.at(DNNL_ARG_SRC).set_data_handle(const_cast<float*>(A));
    m.args.at(DNNL_ARG_DST).set_data_handle(C);
    m.args.at(DNNL_ARG_SCRATCHPAD).set_data_handle(scratch.data_ptr());
    m.last->prim.execute(st, m.args);
    st.wait();
  });
}

}  // namespace rnnlab
