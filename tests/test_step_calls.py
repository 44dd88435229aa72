"""The streaming APIs' C entry points (``csrc/module_calls.cpp``: a cell module's ``__call__`` and
``Layer.step`` with their Python checks made in C) and the pool that recycles their outputs
(``csrc/recycle.h``): each call takes the C path exactly when the Python checks would, and a
recycled output is never one that anything can still see."""

from __future__ import annotations

import gc
import warnings
import weakref

import pytest
import torch
from conftest import VARIANTS

import rnnlab
from rnnlab import kernels

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)

CELLS = {"rnn-tanh": (rnnlab.RNNCell, {}), "rnn-relu": (rnnlab.RNNCell, {"nonlinearity": "relu"}),
         "lstm": (rnnlab.LSTMCell, {}), "gru": (rnnlab.GRUCell, {}),
         "gru-before": (rnnlab.GRUCell, {"reset": "before"})}


def _reference(cell: torch.nn.Module, x: torch.Tensor, h):  # type: ignore[no-untyped-def]
    with kernels.use_reference(), torch.no_grad():
        return cell(x, h)


@pytest.mark.parametrize("form", list(CELLS))
def test_cell_call_takes_the_c_step_when_plain(form):
    """A plain call is answered in C with the reference path's values; the kind follows the
    cell's attributes as they are now (a nonlinearity or reset changed after construction)."""
    cls, kw = CELLS[form]
    cell = cls(5, 6, **kw)
    x = torch.randn(3, 5)
    h = (torch.randn(3, 6), torch.randn(3, 6)) if cls is rnnlab.LSTMCell else torch.randn(3, 6)
    with torch.no_grad():
        got = kernels.cell_call(cell, (x, h))
        assert got is not None
        torch.testing.assert_close(got, _reference(cell, x, h))
        torch.testing.assert_close(cell(x, h), got)
        if cls is rnnlab.RNNCell:
            cell.nonlinearity = "relu" if cell.nonlinearity == "tanh" else "tanh"
            torch.testing.assert_close(kernels.cell_call(cell, (x, h)), _reference(cell, x, h))
        if cls is rnnlab.GRUCell:
            cell.reset = "before" if cell.reset == "after" else "after"
            torch.testing.assert_close(kernels.cell_call(cell, (x, h)), _reference(cell, x, h))
    assert kernels.cell_call(cell, (x, h)) is None  # gradients on (the weights need them)


def test_cell_call_declines_what_module_call_would_not_skip():
    """None wherever ``nn.Module.__call__`` would do more than run our forward, or forward is
    not ours: hooks, a patched ``forward``, jit tracing, the forced reference backend, a subclass
    that overrides ``forward`` or ``_kind``; and arguments it does not serve."""
    cell = rnnlab.GRUCell(5, 6)
    x, h = torch.randn(2, 5), torch.randn(2, 6)
    with torch.no_grad():
        assert kernels.cell_call(cell, (x, h)) is not None
        assert kernels.cell_call(cell, (x,)) is not None  # zero state
        for args in ((), (x, h, h), [x, h]):
            assert kernels.cell_call(cell, args) is None
        for register in (cell.register_forward_hook, cell.register_forward_pre_hook):
            handle = register(lambda *a: None)
            assert kernels.cell_call(cell, (x, h)) is None
            handle.remove()
        module = torch.nn.modules.module
        for register in (module.register_module_forward_hook, module.register_module_forward_pre_hook):
            handle = register(lambda *a: None)
            assert kernels.cell_call(cell, (x, h)) is None
            handle.remove()
        cell.forward = lambda input, hx=None: input  # type: ignore[method-assign]
        assert kernels.cell_call(cell, (x, h)) is None
        assert cell(x, h) is x
        del cell.forward
        with kernels.use_reference():
            assert kernels.cell_call(cell, (x, h)) is None
        with warnings.catch_warnings():  # (torch.jit.trace is deprecated, not gone)
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(cell, (x, h))  # records the torch path: follows new inputs
        x2, h2 = torch.randn(2, 5), torch.randn(2, 6)
        torch.testing.assert_close(traced(x2, h2), cell(x2, h2))

        class Kind(rnnlab.GRUCell):
            def _kind(self) -> int | None:
                return None

        class Forward(rnnlab.GRUCell):
            def forward(self, input, hx=None):  # type: ignore[no-untyped-def]
                return super().forward(input, hx) * 2

        class Plain(rnnlab.GRUCell):
            pass

        for sub, served in ((Kind, False), (Forward, False), (Plain, True)):
            other = sub(5, 6)
            other.load_state_dict(cell.state_dict())
            assert (kernels.cell_call(other, (x, h)) is not None) == served
            scale = 2 if sub is Forward else 1
            torch.testing.assert_close(other(x, h), scale * cell(x, h))
        assert cell.training  # nothing but the above was changed
        cell.eval()
        assert kernels.cell_call(cell, (x, h)) is not None


class _Step(torch.nn.Module):
    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer.step(x)[0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_step_call_matches_stream_step_and_declines_dropout_and_bidirectional(variant):
    """``Layer.step``'s C entry: the one-call step's values; None while dropout is active
    (training with dropout > 0), for a bidirectional layer, or a subclass that overrides
    ``_stream_kind``, and then ``step`` goes on in Python as before."""
    cls, kw = VARIANTS[variant]
    layer = cls(5, 6, num_layers=2, **kw)
    x = torch.randn(3, 5)
    with torch.no_grad():
        got = kernels.layer_step(layer, x, None)
        want = kernels.stream_step(layer._stream_kind, x, None, layer._parameters, layer._step_names)
        for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want),
                        strict=True):
            torch.testing.assert_close(a, b)
        layer.dropout = 0.5
        assert kernels.layer_step(layer, x, None) is None
        out, _ = layer.step(x)  # through forward: dropout between the two layers
        layer.eval()
        assert kernels.layer_step(layer, x, None) is not None
        with warnings.catch_warnings():  # jit tracing records the checked path's step ops
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(_Step(layer), (x,))
        x2 = torch.randn(3, 5)
        torch.testing.assert_close(traced(x2), layer.step(x2)[0])
        with kernels.use_reference():
            assert kernels.layer_step(layer, x, None) is None

        class Other(cls):  # type: ignore[misc, valid-type]
            @property
            def _stream_kind(self) -> int | None:
                return None

        assert kernels.layer_step(Other(5, 6, **kw), x, None) is None
        both = cls(5, 6, bidirectional=True, **kw)
        assert kernels.layer_step(both, x, None) is None
        with pytest.raises(ValueError, match="bidirectional"):
            both.step(x)


def _leaves(out):  # type: ignore[no-untyped-def]
    return list(torch.utils._pytree.tree_leaves(out))


@pytest.mark.parametrize("api", ["cell", "step"])
def test_recycled_outputs_are_only_ones_nothing_refers_to(api):
    """A streaming loop gets its outputs from the pool (the same few storages come back), yet a
    tensor the caller kept, a view of one, one with an attribute set, a weak reference or
    ``requires_grad`` is never handed out again: every kept value stays what it was."""
    torch.manual_seed(0)
    model = rnnlab.LSTMCell(4, 5) if api == "cell" else rnnlab.LSTM(4, 5)
    xs = [torch.randn(1, 4) for _ in range(40)]

    def one(x, state):  # type: ignore[no-untyped-def]
        return model(x, state) if api == "cell" else model.step(x, state)[1]

    kept, views, tagged, weak, graded, seen = [], [], [], [], [], set()
    with torch.no_grad():
        state = None
        for i, x in enumerate(xs):
            state = one(x, state)
            h = state[0]
            assert not hasattr(h, "tag") and not h.requires_grad  # never a marked one again
            seen.add(h.data_ptr())
            mark = i // 2 % 5 if i % 2 == 0 else None  # every other output left alone
            if mark == 0:
                kept.append((h, h.clone()))
            elif mark == 1:
                views.append((h[0], h[0].clone()))
            elif mark == 2:
                h.tag = i  # type: ignore[attr-defined]
                tagged.append((i, h.clone()))
            elif mark == 3:
                weak.append((weakref.ref(h), h.clone()))
            elif mark == 4:
                h.requires_grad_()
                graded.append((h.data_ptr(), h.detach().clone()))
            del h  # (reference counting frees at once: nothing here makes a cycle)
    assert len(seen) <= len(xs) // 2 + 4  # the outputs left alone were recycled
    for t, value in kept + views:
        torch.testing.assert_close(t, value, rtol=0, atol=0)
    for ref, value in weak:  # alive in the pool (until its slot is needed), as it was
        if ref() is not None:
            torch.testing.assert_close(ref(), value, rtol=0, atol=0)
    with torch.no_grad():  # the whole loop again, nothing kept: same values as without a pool
        state = None
        for x in xs:
            state = one(x, state)
        fresh = None
        with kernels.use_reference():
            for x in xs:
                fresh = one(x, fresh)
        for a, b in zip(_leaves(state), _leaves(fresh), strict=True):
            torch.testing.assert_close(a, b)


def test_recycled_outputs_follow_inference_mode_and_empty_cache():
    """An output made inside ``torch.inference_mode`` is an inference tensor and one made outside
    is not, whichever the pooled one was; ``kernels.empty_cache`` drops the pool."""
    cell = rnnlab.RNNCell(3, 4)
    x = torch.randn(1, 3)
    for _ in range(3):
        with torch.inference_mode():
            assert cell(x).is_inference()
        with torch.no_grad():
            out = cell(x)
            assert not out.is_inference()
    ref = weakref.ref(out)
    del out
    assert ref() is not None  # pooled
    kernels.empty_cache()
    gc.collect()
    assert ref() is None
