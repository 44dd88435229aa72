"""A layer's training call as a C++ autograd node (``csrc/layer_train.cpp``): the node is used on
dense sequences; its outputs, gradients and double backward equal those of the registered
Python formula (``ops._Eager``, the same kernels); saved-tensor hooks apply to it; and whatever it
does not serve (a dispatch or torch-function mode, packed rows) takes the registered path."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import rnnlab
from rnnlab import kernels
from rnnlab.kernels import ops

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)

FORMS = {
    "rnn-tanh": (rnnlab.RNN, {}),
    "rnn-relu": (rnnlab.RNN, {"nonlinearity": "relu"}),
    "gru": (rnnlab.GRU, {}),
    "gru-before": (rnnlab.GRU, {"reset": "before"}),
    "lstm": (rnnlab.LSTM, {}),
    "lstm-proj": (rnnlab.LSTM, {"proj_size": 3}),
    "rnn-nobias": (rnnlab.RNN, {"bias": False}),
}


def _layer(form: str, dtype: torch.dtype = torch.float64, **kw):
    cls, extra = FORMS[form]
    return cls(4, 5, num_layers=2, dtype=dtype, **extra, **kw)


def _state(layer, batch: int, dtype: torch.dtype):
    h = torch.randn(2, batch, layer.proj_size or 5, dtype=dtype, requires_grad=True)
    if isinstance(layer, rnnlab.LSTM):
        return h, torch.randn(2, batch, 5, dtype=dtype, requires_grad=True)
    return h


def _run(layer, x, hx, lengths):
    """Output, final state and the gradients of a loss on both, for x, hx and the parameters."""
    out, h = layer(x, hx, lengths=lengths)
    states = h if isinstance(h, tuple) else (h,)
    loss = out.pow(2).sum() + sum(s.sin().sum() for s in states)
    leaves = [x, *(hx if isinstance(hx, tuple) else (hx,)), *layer.parameters()]
    return [out, *states, *torch.autograd.grad(loss, leaves)]


def _node_names(out: torch.Tensor) -> set[str]:
    seen, todo = set(), [out.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn.name() in seen:
            continue
        seen.add(fn.name())
        todo.extend(f for f, _ in fn.next_functions)
    return seen


@pytest.mark.parametrize("lengths", [None, [6, 3, 5]], ids=["dense", "lengths"])
@pytest.mark.parametrize("form", list(FORMS))
def test_node_equals_the_registered_formula(form, lengths, monkeypatch):
    torch.manual_seed(0)
    layer = _layer(form)
    x = torch.randn(6, 3, 4, dtype=torch.float64, requires_grad=True)
    hx = _state(layer, 3, torch.float64)
    out, _ = layer(x, hx, lengths=lengths)
    cls = type(layer).__name__.capitalize()
    assert any(f"{cls}Train" in n for n in _node_names(out))  # the C++ node ran
    native = _run(layer, x, hx, lengths)
    monkeypatch.setattr(ops, "_NATIVE", {})
    registered = _run(layer, x, hx, lengths)
    out, _ = layer(x, hx, lengths=lengths)
    assert not any("Train>" in n for n in _node_names(out))
    for a, b in zip(native, registered, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("form", ["rnn-tanh", "gru", "lstm"])
def test_node_double_backward_equals_the_registered_formula(form, monkeypatch):
    """create_graph=True: the node calls back into Python for the differentiable reference."""
    torch.manual_seed(1)
    layer = _layer(form)
    x = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)

    def penalty() -> list[torch.Tensor]:
        out, _ = layer(x)
        (gx,) = torch.autograd.grad(out.tanh().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), [x, *layer.parameters()])

    native = penalty()
    monkeypatch.setattr(ops, "_NATIVE", {})
    for a, b in zip(native, penalty(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradgradcheck(lambda x: layer(x)[0], (x,))


@pytest.mark.parametrize("form", ["rnn-tanh", "gru", "lstm"])
def test_node_reverse_direction(form, monkeypatch):
    """The ops' reverse=True (a bidirectional layer's second direction) through the node."""
    torch.manual_seed(2)
    layer = rnnlab.RNN(4, 5, dtype=torch.float64) if form == "rnn-tanh" else _layer(form)
    x = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    w_ih, w_hh, b_ih, b_hh = (getattr(layer, f"{n}_l0") for n in ("weight_ih", "weight_hh", "bias_ih",
                                                                   "bias_hh"))
    h0 = torch.zeros(2, 5, dtype=torch.float64, requires_grad=True)

    def run() -> list[torch.Tensor]:
        if form == "lstm":
            hs = kernels.lstm(x, None, h0, h0, w_ih, w_hh, b_ih, b_hh, None, reverse=True)[0]
        elif form == "gru":
            hs = kernels.gru(x, None, h0, w_ih, w_hh, b_ih, b_hh, "after", reverse=True)[0]
        else:
            hs = kernels.rnn(x, None, h0, w_ih, w_hh, b_ih, b_hh, "tanh", reverse=True)
        return [hs, *torch.autograd.grad(hs.sin().sum(), [x, h0, w_ih, w_hh, b_ih])]

    native = run()
    monkeypatch.setattr(ops, "_NATIVE", {})
    for a, b in zip(native, run(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_node_applies_saved_tensor_hooks():
    layer = _layer("gru", torch.float32)
    x = torch.randn(4, 2, 4, requires_grad=True)
    packed, unpacked = [], []

    def pack(t):  # type: ignore[no-untyped-def]
        packed.append(t.shape)
        return t.clone()

    def unpack(t):  # type: ignore[no-untyped-def]
        unpacked.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        out, _ = layer(x)
    assert torch.Size([4, 2, 4]) in packed  # x, saved by the first layer's node
    out.sum().backward()
    assert len(unpacked) >= 2 * 6 and x.grad is not None


def test_node_declines_modes_and_packed_rows():
    """A dispatch mode and a torch-function mode see the registered op; packed rows take it too."""
    layer = _layer("lstm", torch.float32)
    x = torch.randn(4, 2, 4, requires_grad=True)

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    with Ops() as seen:
        layer(x)[0].sum().backward()
    assert "rnnlab.lstm_fwd.default" in seen.names and "rnnlab.lstm_bwd.default" in seen.names

    class Seen(TorchFunctionMode):
        names: list[str] = []

        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.names.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    with Seen():
        out, _ = layer(x)
    assert not any("Train>" in n for n in _node_names(out))
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, [4, 2])
    out, _ = layer(packed)
    assert not any("Train>" in n for n in _node_names(out.data))


@pytest.mark.parametrize("form", ["rnn-tanh", "gru", "lstm"])
def test_node_keeps_autograd_rules(form):
    """retain_graph, the error of a second backward without it, and the error when a saved
    weight was modified in place after the forward: as for any autograd node."""
    layer = _layer(form)
    x = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    out, _ = layer(x)
    out.sum().backward(retain_graph=True)
    first = x.grad.clone()
    out.sum().backward()
    torch.testing.assert_close(x.grad, 2 * first)
    with pytest.raises(RuntimeError, match="second time"):
        out.sum().backward()
    out, _ = layer(x)
    with torch.no_grad():
        layer.weight_hh_l0.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
