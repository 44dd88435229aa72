"""The two directions of a bidirectional layer together. Training (kernels/joint.py): the backward
ops' ``dx_into`` adds into a given buffer, the joined backward allocates one dx instead of two,
and its gradients equal the reference path's (first and second order). Inference
(kernels/paired.py): both directions at once through ``rnnlab._C.both``, with the outputs of
running them one after the other."""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import num_threads
from torch.profiler import ProfilerActivity, profile

import rnnlab
from rnnlab import _C, kernels

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)

T, B, I, H = 6, 3, 5, 4
LAYERS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}


def _bwd_samples():
    """(op, positional arguments up to batch_sizes) of each backward op, from a forward run."""
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0, c0 = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)

    def w(rows: int, cols: int) -> torch.Tensor:
        return torch.randn(rows, cols, dtype=torch.float64)

    w_ih, w_hh = w(H, I), w(H, H)
    hs = torch.ops.rnnlab.rnn_fwd(x, None, h0, w_ih, w_hh, None, None, False, True)
    yield "rnn_bwd", (torch.randn_like(hs), x, None, h0, w_ih, w_hh, hs, False, True, True, None)
    w_ih, w_hh = w(4 * H, I), w(4 * H, H)
    hs, cs, gates = torch.ops.rnnlab.lstm_fwd(x, None, h0, c0, w_ih, w_hh, None, None, None)
    yield "lstm_bwd", (torch.randn_like(hs), torch.randn_like(cs), x, None, h0, c0, w_ih, w_hh,
                       None, hs, cs, gates, True, False, None)
    w_ih, w_hh = w(3 * H, I), w(3 * H, H)
    hs, ws = torch.ops.rnnlab.gru_fwd(x, None, h0, w_ih, w_hh, None, None, True, True)
    yield "gru_bwd", (torch.randn_like(hs), x, None, h0, w_ih, w_hh, hs, ws, True, True, False, None)


SAMPLES = list(_bwd_samples())
IDS = [name for name, _ in SAMPLES]


@pytest.mark.parametrize("name,args", SAMPLES, ids=IDS)
def test_dx_into_adds_the_input_gradient_into_the_buffer(name, args):
    op = getattr(torch.ops.rnnlab, name)
    own = op(*args)
    start = torch.randn_like(own[0])
    into = start.clone()
    added = op(*args, into)
    assert added[0].numel() == 0  # dx went into the buffer
    torch.testing.assert_close(into, start + own[0], atol=1e-12, rtol=1e-12)
    for a, b in zip(added[1:], own[1:], strict=True):  # the other gradients are unchanged
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name,args", SAMPLES, ids=IDS)
def test_dx_into_of_the_wrong_shape_is_a_clear_error(name, args):
    op = getattr(torch.ops.rnnlab, name)
    with pytest.raises(ValueError, match=r"dx_into: expected a contiguous Double tensor of x's "
                                           r"shape \[6, 3, 5\], got Double \[6, 3, 4\]"):
        op(*args, torch.zeros(T, B, H, dtype=torch.float64))


@pytest.mark.parametrize("name,args", SAMPLES, ids=IDS)
def test_opcheck_backward_with_dx_into(name, args):
    """The schema declares the mutation of dx_into (test_schema would see an undeclared one)."""
    x = args[1] if name != "lstm_bwd" else args[2]
    torch.library.opcheck(getattr(torch.ops.rnnlab, name).default, (*args, torch.zeros_like(x)),
                          test_utils=("test_schema", "test_faketensor"))


def _backward_alloc_bytes(layer: torch.nn.Module, x: torch.Tensor) -> int:
    out, _ = layer(x)
    grad = torch.randn_like(out)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        torch.autograd.grad(out, [x, *layer.parameters()], grad)
    return sum(e.self_cpu_memory_usage for e in prof.key_averages() if e.self_cpu_memory_usage > 0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_bidirectional_rnn_backward_allocates_one_dx(nonlinearity, monkeypatch):
    layer = rnnlab.RNN(I, H, bidirectional=True, nonlinearity=nonlinearity)
    x = torch.randn(40, 8, I, requires_grad=True)
    out, _ = layer(x)
    directions = {edge[0] for edge in out.grad_fn.next_functions}  # cat of the two directions
    assert [type(node).__name__ for node in directions] == ["_JointBackward"]
    joined = _backward_alloc_bytes(layer, x)
    monkeypatch.setattr(kernels, "joint_directions", lambda *args: contextlib.nullcontext())
    separate = _backward_alloc_bytes(layer, x)
    assert separate - joined >= x.numel() * x.element_size(), (separate, joined)


@pytest.mark.parametrize("name,hidden", [("lstm", 260), ("gru", 300)])
def test_directions_stay_two_nodes_where_joining_keeps_more(name, hidden):
    """Above PAIR_MAX_BYTES of W_hh the forwards run in turn, and one node would only keep the
    first direction's gate workspace (3–5 H per row) alive through the second's backward, more
    than the dx (I per row) it saves."""
    layer = LAYERS[name](I, hidden, bidirectional=True)
    assert layer.weight_hh_l0.numel() * 4 > kernels.PAIR_MAX_BYTES
    out, _ = layer(torch.randn(T, B, I, requires_grad=True))
    directions = {edge[0] for edge in out.grad_fn.next_functions}
    assert len(directions) == 2
    assert all(type(node).__name__ == "_JointBackward" for node in directions)


@pytest.mark.parametrize("name", list(LAYERS))
def test_training_runs_both_directions_at_once(name, both_calls, monkeypatch):
    """Forward at once; backward at once too for the LSTM and GRU (one node, two dx), in turn
    into one dx for the RNN (whose joined node saves memory)."""
    layer = LAYERS[name](I, H, bidirectional=True)
    x = torch.randn(T, B, I, requires_grad=True)

    def grads() -> list[torch.Tensor]:
        out, h = layer(x)
        loss = sum((t * torch.cos(torch.arange(t.numel(), dtype=t.dtype)).view_as(t)).sum()
                   for t in [out, *(h if isinstance(h, tuple) else (h,))])
        return list(torch.autograd.grad(loss, [x, *layer.parameters()]))

    together = grads()
    backward = [] if name == "rnn" else [f"rnnlab::{name}_bwd"]
    assert both_calls == [f"rnnlab::{name}_fwd", *backward]
    monkeypatch.setattr(kernels, "joint_directions", lambda *args: contextlib.nullcontext())
    for a, b in zip(together, grads(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("packed", [False, True], ids=["lengths", "packed"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_joint_backward_first_and_second_order_match_the_reference(name, packed):
    """2 bidirectional layers, fp64: gradients of the joined fused backward equal the reference
    path's, and so does a second-order gradient (the joined node with create_graph=True)."""
    layer = LAYERS[name](I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    lengths = torch.tensor([T, 4, 2])
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)

    def grads() -> list[torch.Tensor]:
        source = torch.nn.utils.rnn.pack_padded_sequence(x, lengths) if packed else x
        out, _ = layer(source) if packed else layer(source, lengths=lengths)
        data = out.data if packed else out
        loss = (data * torch.cos(torch.arange(data.numel(), dtype=data.dtype)).view_as(data)).sum()
        first = torch.autograd.grad(loss, [x, *layer.parameters()], create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in first), x)
        return [*first, *second]

    fused = grads()
    with kernels.use_reference():
        reference = grads()
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.fixture
def both_calls(monkeypatch) -> list[str]:
    """The op names `rnnlab._C.both` is called with (it still runs them)."""
    names: list[str] = []
    real = _C.both

    def spy(name, args0, args1):  # type: ignore[no-untyped-def]
        names.append(name)
        return real(name, args0, args1)

    monkeypatch.setattr(_C, "both", spy)
    return names


CASES = [("rnn", {}), ("lstm", {}), ("lstm", {"proj_size": 3}), ("gru", {}), ("gru", {"reset": "before"})]


@pytest.mark.parametrize("layout", ["dense", "lengths", "packed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,kw", CASES, ids=[f"{n}{'-' + str(k) if k else ''}" for n, k in CASES])
def test_inference_runs_both_directions_at_once(name, kw, dtype, layout, both_calls, monkeypatch):
    layer = LAYERS[name](I, H, num_layers=2, bidirectional=True, dtype=dtype, **kw)
    x = torch.randn(T, B, I, dtype=dtype)
    lengths = torch.tensor([T, 4, 2])

    def run():  # type: ignore[no-untyped-def]
        with torch.no_grad():
            if layout == "packed":
                out, h = layer(torch.nn.utils.rnn.pack_padded_sequence(x, lengths))
                out = out.data
            else:
                out, h = layer(x, lengths=lengths if layout == "lengths" else None)
        return [out, *(h if isinstance(h, tuple) else (h,))]

    together = run()
    assert both_calls == [f"rnnlab::{name}_fwd"] * 2  # each layer's two directions at once
    monkeypatch.setattr(kernels, "joint_directions", lambda *args: contextlib.nullcontext())
    in_turn = run()
    tol = {"atol": 1e-6, "rtol": 1e-6} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 1e-12}
    for a, b in zip(together, in_turn, strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_directions_above_one_l2_run_in_turn(both_calls):
    """One direction's W_hh over PAIR_MAX_BYTES: each core would stream it from L3 (slower)."""
    hidden = 300  # GRU: 3 * 300 * 300 * 4 bytes > 1 MiB
    layer = rnnlab.GRU(I, hidden, bidirectional=True)
    assert layer.weight_hh_l0.numel() * 4 > kernels.PAIR_MAX_BYTES
    with torch.no_grad():
        layer(torch.randn(T, B, I))
    assert both_calls == []


def test_one_thread_runs_directions_in_turn(both_calls):
    """With one thread the user gave us one core: no second thread for the other direction."""
    with num_threads(1):
        layer = rnnlab.LSTM(I, H, bidirectional=True)
        with torch.no_grad():
            layer(torch.randn(T, B, I))
        layer(torch.randn(T, B, I, requires_grad=True))[0].sum().backward()
    assert both_calls == []
