"""The cell modules' no-grad fast path (``kernels.cell_step``, one C call a step): the same values
as torch.nn's cells and as the reference path, over every cell form, dtype, batched or not, given
or zero state, on one and two threads (the lone B = 1 step above 64 K weights split by units);
and the calls it declines (gradients needed, odd tensors, transforms), which then take the
checked path with its errors."""

from __future__ import annotations

import pytest
import torch
from conftest import num_threads, tol

import rnnlab
from rnnlab import cell_modules, kernels

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)

# name → (rnnlab cell kwargs, cell_step kind, torch.nn peer or None: no peer for reset "before")
FORMS = {
    "rnn-tanh": ("RNNCell", {"nonlinearity": "tanh"}, 0, True),
    "rnn-relu": ("RNNCell", {"nonlinearity": "relu"}, 1, True),
    "rnn-nobias": ("RNNCell", {"bias": False}, 0, True),
    "lstm": ("LSTMCell", {}, 2, True),
    "lstm-nobias": ("LSTMCell", {"bias": False}, 2, True),
    "gru": ("GRUCell", {}, 3, True),
    "gru-nobias": ("GRUCell", {"bias": False}, 3, True),
    "gru-before": ("GRUCell", {"reset": "before"}, 4, False),
}


def _make(form: str, input_size: int, hidden: int, dtype: torch.dtype):
    name, kw, kind, has_peer = FORMS[form]
    ours = getattr(rnnlab, name)(input_size, hidden, dtype=dtype, **kw)
    peer = None
    if has_peer:
        peer = getattr(torch.nn, name)(input_size, hidden, dtype=dtype, **kw)
        ours.load_state_dict(peer.state_dict())
    return ours, peer, kind


def _state(form: str, lead: tuple[int, ...], hidden: int, dtype: torch.dtype):
    h = torch.randn(*lead, hidden, dtype=dtype)
    return (h, torch.randn(*lead, hidden, dtype=dtype)) if form.startswith("lstm") else h


def _close(a, b, dtype) -> None:
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,),
                    strict=True):
        assert x.shape == y.shape
        torch.testing.assert_close(x, y, **tol(dtype))


@pytest.mark.parametrize("given_hx", [True, False], ids=["hx", "zeros"])
@pytest.mark.parametrize("lead", [(1,), (3,), ()], ids=["B1", "B3", "unbatched"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("form", list(FORMS))
def test_fused_cell_equals_torch_and_reference(form, dtype, lead, given_hx):
    ours, peer, kind = _make(form, 5, 6, dtype)
    x = torch.randn(*lead, 5, dtype=dtype)
    hx = _state(form, lead, 6, dtype) if given_hx else None
    with torch.no_grad():
        assert kernels.cell_step(kind, x, hx, ours._parameters) is not None  # the fast path runs
        out = ours(x, hx)
        with kernels.use_reference():
            _close(out, ours(x, hx), dtype)
        if peer is not None:
            _close(out, peer(x, hx), dtype)
    for o in out if isinstance(out, tuple) else (out,):  # new tensors, not the state's storage
        for s in (hx if isinstance(hx, tuple) else (hx,)):
            assert s is None or o.untyped_storage().data_ptr() != s.untyped_storage().data_ptr()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("form", ["rnn-tanh", "lstm", "gru", "gru-before"])
def test_fused_cell_streaming_above_the_split_threshold(form, dtype, threads):
    """H = 232 with I = 64 (above 64 K weights: at B = 1 on two threads each thread computes its
    half of the units; reset "before" and one thread take BLAS's gemv): 20 steps carried through
    the state equal torch's cell (or the reference path)."""
    torch.manual_seed(0)
    ours, peer, _ = _make(form, 64, 232, dtype)
    xs = torch.randn(20, 1, 64, dtype=dtype)
    with num_threads(threads), torch.no_grad():
        state = ref_state = None
        for x_t in xs:
            state = ours(x_t, state)
            if peer is not None:
                ref_state = peer(x_t, ref_state)
            else:
                with kernels.use_reference():
                    ref_state = ours(x_t, ref_state)
        _close(state, ref_state, dtype)


@pytest.mark.parametrize("form", ["rnn-tanh", "lstm", "gru-before"])
def test_fused_cell_declines_what_it_does_not_check(form):
    """None from ``cell_step`` whenever the checked path must run: then that path gives the same
    values or raises its usual error."""
    from torch.nn.utils import parametrize

    ours, _, kind = _make(form, 5, 6, torch.float32)
    x = torch.randn(3, 5)
    hx = _state(form, (3,), 6, torch.float32)
    with torch.no_grad():
        expected = ours(x, hx)
        # a non-contiguous input: declined, same values through the checked path
        xt = torch.randn(5, 3).t()
        assert kernels.cell_step(kind, xt, hx, ours._parameters) is None
        with kernels.use_reference():
            _close(ours(xt, hx), ours(xt.contiguous(), hx), torch.float32)
        # wrong feature size, wrong state shape: declined, then the checked path's errors
        assert kernels.cell_step(kind, torch.randn(3, 4), hx, ours._parameters) is None
        with pytest.raises(ValueError, match="input"):
            ours(torch.randn(3, 4), hx)
        bad = _state(form, (2,), 6, torch.float32)
        assert kernels.cell_step(kind, x, bad, ours._parameters) is None
        with pytest.raises(ValueError, match="hx"):
            ours(x, bad)
        # a dtype mismatch between input and weights
        assert kernels.cell_step(kind, x.double(), None, ours._parameters) is None
    # gradients on: declined while anything requires one, taken once nothing does
    assert kernels.cell_step(kind, x, hx, ours._parameters) is None
    out = ours(x, hx)
    assert (out[0] if isinstance(out, tuple) else out).requires_grad
    ours.requires_grad_(False)
    assert kernels.cell_step(kind, x, hx, ours._parameters) is not None
    _close(ours(x, hx), expected, torch.float32)
    ours.requires_grad_(True)
    # a parametrized weight is not in _parameters: declined, and the parametrization applies
    parametrize.register_parametrization(ours, "weight_hh", _Doubled())
    with torch.no_grad():
        assert kernels.cell_step(kind, x, hx, ours._parameters) is None
        doubled = ours(x, hx)
        with kernels.use_reference():
            _close(doubled, ours(x, hx), torch.float32)
    assert not torch.equal(doubled[0] if isinstance(doubled, tuple) else doubled,
                           expected[0] if isinstance(expected, tuple) else expected)


class _Doubled(torch.nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


def test_fused_cell_declines_under_transforms_and_modes():
    """torch.func.vmap and a dispatch mode see the cell's torch ops, not the C call."""
    from torch.utils.flop_counter import FlopCounterMode

    cell = rnnlab.GRUCell(5, 6)
    xs, h = torch.randn(4, 2, 5), torch.randn(2, 6)
    with torch.no_grad():
        expected = torch.stack([cell(x, h) for x in xs])
        torch.testing.assert_close(torch.func.vmap(lambda x: cell(x, h))(xs), expected)
        with FlopCounterMode(display=False) as counter:
            cell(xs[0], h)
    assert counter.get_total_flops() > 0
    with torch.inference_mode():  # inference tensors are plain CPU tensors: taken
        assert kernels.cell_step(3, xs[0], h, cell._parameters) is not None
        torch.testing.assert_close(cell(xs[0], h), expected[0])


def test_fused_cell_kind_follows_the_modules_settings():
    """The kind passed to ``cell_step`` is read at each call: a cell whose nonlinearity or reset
    is changed after construction computes the new form (an unknown one takes the checked path)."""
    cell = rnnlab.RNNCell(5, 6)
    x, h = torch.randn(2, 5), torch.randn(2, 6)
    with torch.no_grad():
        pre = x @ cell.weight_ih.t() + cell.bias_ih + h @ cell.weight_hh.t() + cell.bias_hh
        torch.testing.assert_close(cell(x, h), torch.tanh(pre))
        cell.nonlinearity = "relu"
        torch.testing.assert_close(cell(x, h), torch.relu(pre))
        gru = rnnlab.GRUCell(5, 6)
        gru.reset = "before"
        with kernels.use_reference():
            before = gru(x, h)
        torch.testing.assert_close(gru(x, h), before)
        cell.nonlinearity = "gelu"  # unknown to the kernel: declined, the cell's own check raises
        with pytest.raises(ValueError, match="nonlinearity"):
            cell(x, h)
    assert cell_modules._RNN_KINDS == {"tanh": 0, "relu": 1}
    assert cell_modules._GRU_KINDS == {"after": 3, "before": 4}


def test_fused_cell_call_keeps_module_call_semantics():
    """``__call__`` takes the C call first only when ``nn.Module.__call__`` would just run our
    forward: hooks (the cell's and global), keyword arguments and an overridden ``forward`` all
    still behave as with torch.nn's cells."""
    cell = rnnlab.GRUCell(5, 6)
    x, h = torch.randn(2, 5), torch.randn(2, 6)
    with torch.no_grad():
        expected = cell(x, h)
        doubled = cell.forward(2 * x, h)
        torch.testing.assert_close(cell(input=x, hx=h), expected)
        calls = []
        handle = cell.register_forward_pre_hook(lambda m, args: (2 * args[0], *args[1:]))
        torch.testing.assert_close(cell(x, h), doubled)
        handle.remove()
        handle = cell.register_forward_hook(lambda m, args, out: out + 1)
        torch.testing.assert_close(cell(x, h), expected + 1)
        handle.remove()
        handle = torch.nn.modules.module.register_module_forward_hook(
            lambda m, args, out: calls.append(type(m).__name__))
        cell(x, h)
        handle.remove()
        assert calls == ["GRUCell"]
        torch.testing.assert_close(cell(x, h), expected)  # hooks gone: the C call again

        class Shifted(rnnlab.GRUCell):
            def forward(self, input, hx=None):  # type: ignore[no-untyped-def]
                return super().forward(input, hx) - 1

        shifted = Shifted(5, 6)
        shifted.load_state_dict(cell.state_dict())
        torch.testing.assert_close(shifted(x, h), expected - 1)


def test_fused_cell_under_torch_compile_and_fx():
    """torch.compile traces the cell's torch ops (one graph, no break); an FX trace, which
    patches ``nn.Module.__call__``, records the cell as a module call (a leaf: its checks
    take tensors, not FX proxies), and the traced module then runs it as usual."""
    cell = rnnlab.LSTMCell(5, 6)
    x, h, c = torch.randn(2, 5), torch.randn(2, 6), torch.randn(2, 6)
    with torch.no_grad():
        expected = cell(x, (h, c))
        compiled = torch.compile(lambda x, h, c: cell(x, (h, c)), fullgraph=True, backend="eager")
        for got, want in zip(compiled(x, h, c), expected, strict=True):
            torch.testing.assert_close(got, want)

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = cell

        def forward(self, x, h, c):  # type: ignore[no-untyped-def]
            return self.cell(x, (h, c))

    class Leaf(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):  # type: ignore[no-untyped-def]
            return isinstance(m, rnnlab.LSTMCell) or super().is_leaf_module(m, qualname)

    traced = torch.fx.GraphModule(Wrap(), Leaf().trace(Wrap()))
    assert any(n.op == "call_module" and n.target == "cell" for n in traced.graph.nodes)
    with torch.no_grad():
        for got, want in zip(traced(x, h, c), expected, strict=True):
            torch.testing.assert_close(got, want)
