// Dense fp32 sequences through oneDNN's RNN primitives (vanilla RNN, LSTM, linear-before-reset
// GRU): forward (inference or training, the latter keeping oneDNN's workspace) and backward.
// Built only when the oneDNN headers are found at install time (RNNLAB_ONEDNN). The equations are
// the cells' own; oneDNN's gate order and bias layout differ from torch's:
//   LSTM  gates [i|f|g|o] in both;  bias b = b_ih + b_hh                              (4, H)
//   RNN   h_t = f(W_ih x_t + W_hh h_{t-1} + b),  b = b_ih + b_hh                       (1, H)
//   GRU   oneDNN [u|r|o] = torch [z|r|n] (first two blocks swapped); lbr_gru's bias is
//         [b_iz+b_hz, b_ir+b_hr, b_in, b_hn] and n = tanh(W_in x + b_in + r⊙(W_hn h + b_hn))
// Layouts: x [T,B,I] = tnc; h0/c0 [B,H] = ldnc with L = D = 1; torch's w [G*H, I] = ldgoi.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <mutex>
#include <unordered_map>

#include "lru.h"
#include "oneapi/dnnl/dnnl.hpp"

#if DNNL_VERSION_MAJOR != 3
#error "rnnlab's oneDNN path needs the oneDNN v3 headers (onednn-devel-cpu-gomp)"
#endif

namespace rnnlab {
namespace {

using at::Tensor;
using dnnl::memory;
using tag = memory::format_tag;
enum Kind : int64_t { kTanh = 0, kRelu = 1, kLstm = 2, kGru = 3 };

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

int64_t n_gates(int64_t k) { return k == kLstm ? 4 : (k == kGru ? 3 : 1); }
int64_t n_bias(int64_t k) { return k == kGru ? 4 : n_gates(k); }

// Descriptors of one problem (T steps, batch B, input I, hidden H, output/state width P: the
// LSTM projection size, else H), in the user layouts.
struct Shape {
  int64_t kind, T, B, I, H, P;
  bool reverse = false;  // right to left: t = T-1 … 0, the final state is the one after t = 0
  bool proj() const { return P != H; }
  dnnl::rnn_direction dir() const {
    return reverse ? dnnl::rnn_direction::unidirectional_right2left
                   : dnnl::rnn_direction::unidirectional_left2right;
  }
  memory::desc md(memory::dims d, tag t) const { return memory::desc(d, memory::data_type::f32, t); }
  memory::desc seq(int64_t f) const { return md({T, B, f}, tag::tnc); }
  memory::desc state() const { return md({1, 1, B, P}, tag::ldnc); }
  memory::desc c_state() const { return md({1, 1, B, H}, tag::ldnc); }
  memory::desc w(int64_t in, tag t) const { return md({1, 1, in, n_gates(kind), H}, t); }
  memory::desc w_proj(tag t) const { return md({1, 1, H, P}, t); }  // torch's w_hr [P, H]: ldoi
  memory::desc bias() const { return md({1, 1, n_bias(kind), H}, tag::ldgo); }
};

// Primitives of one shape, created once and kept (LRU): forward inference, forward training and
// backward, plus the inference weights reordered into oneDNN's layout (valid while the weight
// tensors are alive and unmodified: checked through weak references and version counters).
struct Entry {
  dnnl::primitive_desc infer_pd, train_pd, bwd_pd;
  dnnl::primitive infer, train, bwd;
  memory w_layer, w_iter, w_proj;
  c10::optional<c10::weak_intrusive_ptr<c10::TensorImpl>> src_ih, src_hh, src_hr;
  uint32_t ver_ih = 0, ver_hh = 0, ver_hr = 0;
};

dnnl::primitive_desc make_fwd(const Shape& s, dnnl::prop_kind prop) {
  auto& e = engine();
  auto dir = s.dir();
  auto wl = s.w(s.I, tag::any), wi = s.w(s.P, tag::any);
  if (s.kind == kLstm && s.proj())  // LSTMP: h_t = W_hr (o ⊙ tanh c_t); no peepholes
    return dnnl::lstm_forward::primitive_desc(e, prop, dir, s.seq(s.I), s.state(), s.c_state(), wl,
                                              wi, memory::desc(), s.w_proj(tag::any), s.bias(),
                                              s.seq(s.P), s.state(), s.c_state());
  if (s.kind == kLstm)
    return dnnl::lstm_forward::primitive_desc(e, prop, dir, s.seq(s.I), s.state(), s.c_state(), wl,
                                              wi, s.bias(), s.seq(s.H), s.state(), s.c_state());
  if (s.kind == kGru)
    return dnnl::lbr_gru_forward::primitive_desc(e, prop, dir, s.seq(s.I), s.state(), wl, wi,
                                                 s.bias(), s.seq(s.H), s.state());
  auto act = s.kind == kRelu ? dnnl::algorithm::eltwise_relu : dnnl::algorithm::eltwise_tanh;
  return dnnl::vanilla_rnn_forward::primitive_desc(e, prop, act, dir, s.seq(s.I), s.state(), wl,
                                                   wi, s.bias(), s.seq(s.H), s.state());
}

// A typed copy of a forward primitive descriptor (the backward constructors want one).
template <class P>
P typed(const dnnl::primitive_desc& pd) {
  dnnl_primitive_desc_t copy;
  dnnl::error::wrap_c_api(dnnl_primitive_desc_clone(&copy, pd.get()), "cloning a primitive desc");
  return P(copy);
}

dnnl::primitive_desc make_bwd(const Shape& s, const dnnl::primitive_desc& hint) {
  auto& e = engine();
  auto b = dnnl::prop_kind::backward;
  auto dir = s.dir();
  auto wl = s.w(s.I, tag::any), wi = s.w(s.H, tag::any);
  auto x = s.seq(s.I), y = s.seq(s.H), h = s.state(), bias = s.bias();
  if (s.kind == kLstm) {
    return dnnl::lstm_backward::primitive_desc(e, b, dir, x, h, h, wl, wi, bias, y, h, h, x, h, h,
                                               wl, wi, bias, y, h, h,
                                               typed<dnnl::lstm_forward::primitive_desc>(hint));
  }
  if (s.kind == kGru) {
    return dnnl::lbr_gru_backward::primitive_desc(
        e, b, dir, x, h, wl, wi, bias, y, h, x, h, wl, wi, bias, y, h,
        typed<dnnl::lbr_gru_forward::primitive_desc>(hint));
  }
  auto act = s.kind == kRelu ? dnnl::algorithm::eltwise_relu : dnnl::algorithm::eltwise_tanh;
  return dnnl::vanilla_rnn_backward::primitive_desc(
      e, b, act, dir, x, h, wl, wi, bias, y, h, x, h, wl, wi, bias, y, h,
      typed<dnnl::vanilla_rnn_forward::primitive_desc>(hint));
}

std::mutex cache_mutex;

// The cached entry of a shape and thread count (created on first use; at most 64 kept, LRU).
std::shared_ptr<Entry> entry(const Shape& s, bool train) {
  // primitives are tuned for the thread count they were created under: part of the key
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int64_t>;
  static Lru<Key, Entry> cache(64);
  std::lock_guard<std::mutex> lock(cache_mutex);
  TORCH_CHECK(!(train && s.proj()), "onednn: LSTM projection is supported for inference only");
  // (one thread inside a parallel region: both.cpp runs two directions at once, one per core)
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  Key key{s.kind, s.T, s.B, s.I, s.H, s.P, s.reverse, threads};
  std::shared_ptr<Entry> en = cache.get(key, [] { return std::make_shared<Entry>(); });
  if (train && !en->train) {
    en->train_pd = make_fwd(s, dnnl::prop_kind::forward_training);
    en->train = dnnl::primitive(en->train_pd);
    en->bwd_pd = make_bwd(s, en->train_pd);
    en->bwd = dnnl::primitive(en->bwd_pd);
  } else if (!train && !en->infer) {
    en->infer_pd = make_fwd(s, dnnl::prop_kind::forward_inference);
    en->infer = dnnl::primitive(en->infer_pd);
  }
  return en;
}

memory wrap(const memory::desc& md, const Tensor& t) {
  return memory(md, engine(), t.defined() ? t.data_ptr() : nullptr);
}

// torch's gate blocks → oneDNN's (GRU: [r|z|n] → [z|r|n]; the swap is its own inverse).
Tensor to_onednn_gates(const Tensor& w, int64_t kind) {
  if (kind != kGru) return w.contiguous();
  auto blocks = w.chunk(3, 0);
  return at::cat({blocks[1], blocks[0], blocks[2]}, 0);
}

Tensor merged_bias(int64_t kind, const c10::optional<Tensor>& b_ih,
                   const c10::optional<Tensor>& b_hh, int64_t H, const at::TensorOptions& opt) {
  if (!b_ih.has_value() || !b_ih->defined()) return at::zeros({n_bias(kind) * H}, opt);
  if (kind != kGru) return (*b_ih + *b_hh).contiguous();
  auto i = b_ih->chunk(3), h = b_hh->chunk(3);
  return at::cat({i[1] + h[1], i[0] + h[0], i[2], h[2]});
}

// Reorder a user-layout weight (torch's [G*H, in] = ldgoi) into the layout `md` a primitive wants.
memory reorder_in(const Tensor& w, int64_t in, const Shape& s, const memory::desc& md,
                  dnnl::stream& st) {
  Tensor src = to_onednn_gates(w, s.kind);
  memory user = wrap(s.w(in, tag::ldgoi), src), out(md, engine());
  dnnl::reorder(user, out).execute(st, user, out);
  st.wait();
  return out;
}

bool same_weight(const c10::optional<c10::weak_intrusive_ptr<c10::TensorImpl>>& ref, uint32_t ver,
                 const Tensor& w) {
  if (!ref.has_value()) return false;
  auto alive = ref->lock();
  return alive.defined() && alive.get() == w.unsafeGetTensorImpl() && ver == w._version();
}

void check_inputs(const Tensor& x, const Tensor& h0, const Tensor& w_ih, int64_t H, int64_t kind) {
  TORCH_CHECK(kind >= kTanh && kind <= kGru, "onednn: kind must be 0..3, got ", kind);
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.dim() == 3 && h0.dim() == 2,
              "onednn: expected float32 x [T,B,I] and h0 [B,P]");
  TORCH_CHECK(w_ih.size(0) == n_gates(kind) * H && w_ih.size(1) == x.size(2),
              "onednn: w_ih must be [G*H, I]");
}

}  // namespace

// → y [T,B,P], h_T [B,P], c_T [B,H] (LSTM; empty otherwise), workspace (uint8; empty unless train).
// w_hr [P,H]: LSTM projection (inference only).
std::tuple<Tensor, Tensor, Tensor, Tensor> onednn_fwd(
    int64_t kind, const Tensor& x_, const Tensor& h0_, const c10::optional<Tensor>& c0,
    const Tensor& w_ih, const Tensor& w_hh, const c10::optional<Tensor>& b_ih,
    const c10::optional<Tensor>& b_hh, const c10::optional<Tensor>& w_hr_, bool train, bool reverse) {
  const bool proj = w_hr_.has_value() && w_hr_->defined();
  TORCH_CHECK(!proj || kind == kLstm, "onednn_fwd: w_hr is for the LSTM only");
  const int64_t H = w_hh.size(0) / n_gates(kind);
  check_inputs(x_, h0_, w_ih, H, kind);
  Tensor x = x_.contiguous(), h0 = h0_.contiguous();
  const Tensor w_hr = proj ? w_hr_->contiguous() : Tensor();
  const Shape s{kind, x.size(0), x.size(1), x.size(2), H, h0.size(1), reverse};
  auto opt = x.options();
  auto en = entry(s, train);
  dnnl::stream st(engine());
  const auto& pd = train ? en->train_pd : en->infer_pd;
  memory wl, wi;
  if (train) {  // weights change between training calls: reorder each time
    wl = reorder_in(w_ih, s.I, s, pd.weights_desc(0), st);
    wi = reorder_in(w_hh, s.P, s, pd.weights_desc(1), st);
  } else {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (!same_weight(en->src_ih, en->ver_ih, w_ih) || !same_weight(en->src_hh, en->ver_hh, w_hh) ||
        (proj && !same_weight(en->src_hr, en->ver_hr, w_hr))) {
      en->w_layer = reorder_in(w_ih, s.I, s, pd.weights_desc(0), st);
      en->w_iter = reorder_in(w_hh, s.P, s, pd.weights_desc(1), st);
      en->src_ih.emplace(w_ih.getIntrusivePtr());
      en->src_hh.emplace(w_hh.getIntrusivePtr());
      en->ver_ih = w_ih._version();
      en->ver_hh = w_hh._version();
      if (proj) {
        memory user = wrap(s.w_proj(tag::ldoi), w_hr);
        en->w_proj = memory(pd.query_md(dnnl::query::exec_arg_md, DNNL_ARG_WEIGHTS_PROJECTION), engine());
        dnnl::reorder(user, en->w_proj).execute(st, user, en->w_proj);
        st.wait();
        en->src_hr.emplace(w_hr_->getIntrusivePtr());
        en->ver_hr = w_hr_->_version();
      }
    }
    wl = en->w_layer;
    wi = en->w_iter;
  }
  Tensor bias = merged_bias(kind, b_ih, b_hh, s.H, opt);
  Tensor y = at::empty({s.T, s.B, s.P}, opt), hT = at::empty({s.B, s.P}, opt);
  Tensor c0c = kind == kLstm ? c0->contiguous() : Tensor();
  Tensor cT = kind == kLstm ? at::empty({s.B, s.H}, opt) : at::empty({0}, opt);
  // zeroed: oneDNN leaves padding in it unwritten, and the op's outputs must be deterministic
  Tensor ws = at::zeros({train ? static_cast<int64_t>(pd.workspace_desc().get_size()) : 0},
                        opt.dtype(at::kByte));
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC_LAYER, wrap(s.seq(s.I), x)},     {DNNL_ARG_SRC_ITER, wrap(s.state(), h0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl},                  {DNNL_ARG_WEIGHTS_ITER, wi},
      {DNNL_ARG_BIAS, wrap(s.bias(), bias)},         {DNNL_ARG_DST_LAYER, wrap(s.seq(s.P), y)},
      {DNNL_ARG_DST_ITER, wrap(s.state(), hT)}};
  if (kind == kLstm) {
    args[DNNL_ARG_SRC_ITER_C] = wrap(s.c_state(), c0c);
    args[DNNL_ARG_DST_ITER_C] = wrap(s.c_state(), cT);
  }
  if (proj) args[DNNL_ARG_WEIGHTS_PROJECTION] = en->w_proj;
  if (train) args[DNNL_ARG_WORKSPACE] = wrap(pd.workspace_desc(), ws);
  (train ? en->train : en->infer).execute(st, args);
  st.wait();
  return {y, hT, cT, ws};
}

// dy [T,B,H], dc_T [B,H] (LSTM, optional) → dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> onednn_bwd(
    int64_t kind, const Tensor& dy_, const c10::optional<Tensor>& dcT, const Tensor& x_,
    const Tensor& h0_, const c10::optional<Tensor>& c0, const Tensor& w_ih, const Tensor& w_hh,
    const c10::optional<Tensor>& b_ih, const c10::optional<Tensor>& b_hh, const Tensor& y,
    const Tensor& hT, const c10::optional<Tensor>& cT, const Tensor& ws, bool reverse) {
  check_inputs(x_, h0_, w_ih, h0_.size(1), kind);
  Tensor x = x_.contiguous(), h0 = h0_.contiguous(), dy = dy_.contiguous();
  const Shape s{kind, x.size(0), x.size(1), x.size(2), h0.size(1), h0.size(1), reverse};
  auto opt = x.options();
  auto en = entry(s, true);
  const auto& pd = en->bwd_pd;
  TORCH_CHECK(ws.numel() == static_cast<int64_t>(pd.workspace_desc().get_size()),
              "onednn_bwd: the workspace does not match (was the forward run with train=True?)");
  dnnl::stream st(engine());
  memory wl = reorder_in(w_ih, s.I, s, pd.weights_desc(0), st);
  memory wi = reorder_in(w_hh, s.H, s, pd.weights_desc(1), st);
  // oneDNN accumulates into the weight gradients: start them at zero
  memory dwl(pd.diff_weights_desc(0), engine()), dwi(pd.diff_weights_desc(1), engine());
  std::memset(dwl.get_data_handle(), 0, pd.diff_weights_desc(0).get_size());
  std::memset(dwi.get_data_handle(), 0, pd.diff_weights_desc(1).get_size());
  const int64_t G = n_gates(kind);
  Tensor bias = merged_bias(kind, b_ih, b_hh, s.H, opt);
  Tensor db = at::zeros({n_bias(kind) * s.H}, opt);
  Tensor dx = at::empty({s.T, s.B, s.I}, opt), dh0 = at::empty({s.B, s.H}, opt);
  Tensor zero = at::zeros({s.B, s.H}, opt);
  Tensor dc0 = kind == kLstm ? at::empty({s.B, s.H}, opt) : at::empty({0}, opt);
  Tensor dcTc = kind == kLstm && dcT.has_value() && dcT->defined() ? dcT->contiguous() : zero;
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC_LAYER, wrap(s.seq(s.I), x)},   {DNNL_ARG_SRC_ITER, wrap(s.state(), h0)},
      {DNNL_ARG_WEIGHTS_LAYER, wl},                {DNNL_ARG_WEIGHTS_ITER, wi},
      {DNNL_ARG_BIAS, wrap(s.bias(), bias)},       {DNNL_ARG_DST_LAYER, wrap(s.seq(s.H), y)},
      {DNNL_ARG_DST_ITER, wrap(s.state(), hT)},    {DNNL_ARG_WORKSPACE, wrap(pd.workspace_desc(), ws)},
      {DNNL_ARG_DIFF_SRC_LAYER, wrap(s.seq(s.I), dx)},
      {DNNL_ARG_DIFF_SRC_ITER, wrap(s.state(), dh0)},
      {DNNL_ARG_DIFF_WEIGHTS_LAYER, dwl},          {DNNL_ARG_DIFF_WEIGHTS_ITER, dwi},
      {DNNL_ARG_DIFF_BIAS, wrap(s.bias(), db)},    {DNNL_ARG_DIFF_DST_LAYER, wrap(s.seq(s.H), dy)},
      {DNNL_ARG_DIFF_DST_ITER, wrap(s.state(), zero)}};
  Tensor c0c;
  if (kind == kLstm) {
    c0c = c0->contiguous();
    args[DNNL_ARG_SRC_ITER_C] = wrap(s.state(), c0c);
    args[DNNL_ARG_DST_ITER_C] = wrap(s.state(), cT->contiguous());
    args[DNNL_ARG_DIFF_SRC_ITER_C] = wrap(s.state(), dc0);
    args[DNNL_ARG_DIFF_DST_ITER_C] = wrap(s.state(), dcTc);
  }
  en->bwd.execute(st, args);
  // weight gradients back to torch's layout (and gate order)
  Tensor dw_ih = at::empty({G * s.H, s.I}, opt), dw_hh = at::empty({G * s.H, s.H}, opt);
  memory uih = wrap(s.w(s.I, tag::ldgoi), dw_ih), uhh = wrap(s.w(s.H, tag::ldgoi), dw_hh);
  dnnl::reorder(dwl, uih).execute(st, dwl, uih);
  dnnl::reorder(dwi, uhh).execute(st, dwi, uhh);
  st.wait();
  Tensor db_ih = db, db_hh = db;
  if (kind == kGru) {
    dw_ih = to_onednn_gates(dw_ih, kind);
    dw_hh = to_onednn_gates(dw_hh, kind);
    auto d = db.chunk(4);  // [z, r, n_input, n_hidden]
    db_ih = at::cat({d[1], d[0], d[2]});
    db_hh = at::cat({d[1], d[0], d[3]});
  }
  return {dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh};
}

// Bytes of the training workspace for a shape (the fake implementation sizes its output with it).
int64_t onednn_workspace_bytes(int64_t kind, int64_t T, int64_t B, int64_t I, int64_t H) {
  const Shape s{kind, T, B, I, H, H};
  return static_cast<int64_t>(entry(s, true)->train_pd.workspace_desc().get_size());
}

}  // namespace rnnlab

TORCH_LIBRARY_FRAGMENT(rnnlab, m) {
  m.def("onednn_fwd(int kind, Tensor x, Tensor h0, Tensor? c0, Tensor w_ih, Tensor w_hh, "
        "Tensor? b_ih, Tensor? b_hh, Tensor? w_hr, bool train, bool reverse=False) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("onednn_bwd(int kind, Tensor dy, Tensor? dcT, Tensor x, Tensor h0, Tensor? c0, "
        "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor y, Tensor hT, Tensor? cT, "
        "Tensor ws, bool reverse=False) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(rnnlab, CPU, m) {
  m.impl("onednn_fwd", &rnnlab::onednn_fwd);
  m.impl("onednn_bwd", &rnnlab::onednn_bwd);
}
