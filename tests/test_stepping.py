"""Layer.step, the single-step path for streaming and generation (rnnlab/stepping.py): the one C
call for the whole stack (``_C.stream_step``) and the checked path it falls back to, against
forward over the same steps; the B = 1 step split by hidden units over two threads; opcheck of
the dispatched step ops."""

from __future__ import annotations

import pytest
import torch
from conftest import VARIANTS, num_threads, tol

import rnnlab
from rnnlab import kernels

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_step_kernels_equal_forward(variant, batch, dtype):
    """Layer.step (the single-step kernels, no grad) reproduces forward over a sequence."""
    cls, kw = VARIANTS[variant]
    layer = cls(5, 6, num_layers=2, dtype=dtype, **kw)
    x = torch.randn(7, batch, 5, dtype=dtype)
    with torch.no_grad():
        out, h_ref = layer(x)
        state, outs = None, []
        for x_t in x:
            y, state = layer.step(x_t, state)
            outs.append(y)
    torch.testing.assert_close(torch.stack(outs), out, **tol(dtype))
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    h_ref if isinstance(h_ref, tuple) else (h_ref,), strict=True):
        torch.testing.assert_close(a, b, **tol(dtype))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lone_step_split_by_units_equals_forward(variant, dtype, threads):
    """B = 1 above 64 K weights: on two threads each computes its half of the units (step.h
    split_step; not with a projection or reset "before", which take BLAS's gemv), on one thread
    BLAS's gemv. H = 232 (the RNN: 232 · (64 + 232) weights) splits off-centre (112 + 120
    units); 3 layers, so each layer's step reads the whole state the one below wrote on both
    threads."""
    cls, kw = VARIANTS[variant]
    torch.manual_seed(0)
    layer = cls(64, 232, num_layers=3, dtype=dtype, **kw)
    x = torch.randn(6, 1, 64, dtype=dtype)
    with num_threads(threads), torch.no_grad():
        out, h_ref = layer(x)
        state, outs = None, []
        for x_t in x:
            y, state = layer.step(x_t, state)
            outs.append(y)
        # the dispatched step op of the first layer, from a zero state
        h0 = torch.zeros(1, layer.proj_size or 232, dtype=dtype)
        w = [layer._parameters.get(n) for n in layer._step_names[0]]  # w_ih, w_hh, b_ih, b_hh, w_hr
        if cls is rnnlab.LSTM:
            one = torch.ops.rnnlab.lstm_step(x[0], h0, torch.zeros(1, 232, dtype=dtype), *w)[0]
        elif cls is rnnlab.GRU:
            one = torch.ops.rnnlab.gru_step(x[0], h0, *w[:4], kw["reset"] == "after")
        else:
            one = torch.ops.rnnlab.rnn_step(x[0], h0, *w[:4], kw["nonlinearity"] == "relu")
        first = cls(64, 232, dtype=dtype, **kw)
        first.load_state_dict({k: v for k, v in layer.state_dict().items() if k.endswith("_l0")})
        one_ref = first(x[:1])[0][0]
    torch.testing.assert_close(torch.stack(outs), out, **tol(dtype))
    for a, b in zip(state if isinstance(state, tuple) else (state,),
                    h_ref if isinstance(h_ref, tuple) else (h_ref,), strict=True):
        torch.testing.assert_close(a, b, **tol(dtype))
    torch.testing.assert_close(one, one_ref, **tol(dtype))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_split_step_follows_weights_changed_in_place_and_replaced(cell):
    """The two-thread step (step.h split_step) reads the weights as they are at each call: after
    an in-place update, a parameter swapped for another tensor, and `empty_cache`, the steps
    still equal the whole-sequence forward. I = 72 and H = 200 (split 96 + 104 units) leave
    columns and rows outside the mat-vec's blocks of sixteen."""
    torch.manual_seed(0)
    layer = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}[cell](72, 200, num_layers=2)
    x = torch.randn(4, 1, 72)

    def steps_equal_forward() -> None:
        state, outs = None, []
        for x_t in x:
            y, state = layer.step(x_t, state)
            outs.append(y)
        torch.testing.assert_close(torch.stack(outs), layer(x)[0], rtol=1e-5, atol=1e-5)

    with num_threads(2), torch.no_grad():
        steps_equal_forward()
        steps_equal_forward()  # (the packs made by the first steps, now found)
        for p in layer.parameters():
            p.mul_(-0.7)
        steps_equal_forward()
        layer.weight_hh_l1 = torch.nn.Parameter(torch.randn_like(layer.weight_hh_l1) * 0.05)
        steps_equal_forward()
        kernels.empty_cache()
        steps_equal_forward()


def test_step_with_grad_uses_the_differentiable_path():
    layer = rnnlab.GRU(3, 4)
    x = torch.randn(2, 3, requires_grad=True)
    y, h = layer.step(x)
    y.sum().backward()
    assert x.grad is not None and layer.weight_hh_l0.grad is not None


@pytest.mark.parametrize("name", ["rnn_step", "lstm_step", "gru_step"])
def test_opcheck_step_ops(name):
    B, I, H = 2, 3, 4
    g = {"rnn_step": 1, "lstm_step": 4, "gru_step": 3}[name]
    x, h = torch.randn(B, I), torch.randn(B, H)
    w = (torch.randn(g * H, I), torch.randn(g * H, H), torch.randn(g * H), torch.randn(g * H))
    args = {"rnn_step": (x, h, *w, False), "lstm_step": (x, h, torch.randn(B, H), *w, None),
            "gru_step": (x, h, *w, True)}[name]
    torch.library.opcheck(getattr(torch.ops.rnnlab, name).default, args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_streaming_step_is_one_call_and_declines_what_it_does_not_check(variant):
    """``Layer.step`` without grad goes through ``_C.stream_step`` (one C call for the stack); on any
    mismatch the call answers None and the checked path raises the usual error."""
    cls, kw = VARIANTS[variant]
    layer = cls(5, 6, num_layers=2, **kw)
    args = (layer._stream_kind, layer._parameters, layer._step_names)
    # the names are _parameters' own key objects: the C call's dict lookups match by identity
    keys = list(layer._parameters)
    assert all(any(n is k for k in keys) for names in args[2] for n in names if n is not None)
    x = torch.randn(3, 5)
    with torch.no_grad():
        result = kernels.stream_step(args[0], x, None, args[1], args[2])
        assert result is not None
        out, h = result
        last = (h[0] if isinstance(h, tuple) else h)[-1]
        torch.testing.assert_close(out, last)
        torch.testing.assert_close(out, layer.step(x)[0])
        out.add_(1.0)  # the output is a tensor of its own, not a view of the returned state
        assert not torch.equal(out, last)
        assert kernels.stream_step(args[0], torch.randn(3, 4), None, args[1], args[2]) is None
        with pytest.raises(ValueError, match="input"):
            layer.step(torch.randn(3, 4))
        bad_h = torch.zeros(2, 2, layer.proj_size or 6)
        hx = (bad_h, torch.zeros(2, 2, 6)) if cls is rnnlab.LSTM else bad_h
        assert kernels.stream_step(args[0], x, hx, args[1], args[2]) is None
        with pytest.raises(ValueError, match="hx"):
            layer.step(x, hx)
    assert kernels.stream_step(args[0], x, None, args[1], args[2]) is None  # gradients on


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checked_step_path_equals_forward(variant):
    """The checked step path (taken when the one-call step declines: here a non-contiguous input,
    then a parametrized weight that is not in ``_parameters``) returns forward's output and h_n
    with h_n shaped (L, B, H) like forward's."""
    from torch.nn.utils import parametrize

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    cls, kw = VARIANTS[variant]
    layer = cls(5, 6, num_layers=3, **kw).double()
    x = torch.randn(5, 4, dtype=torch.float64).t()  # (B=4, I=5), not contiguous
    for _ in range(2):
        with torch.no_grad():
            args = (layer._stream_kind, layer._parameters, layer._step_names)
            assert kernels.stream_step(args[0], x, None, args[1], args[2]) is None
            out, h = layer.step(x)
            ref_out, ref_h = layer(x.unsqueeze(0))
        torch.testing.assert_close(out, ref_out[0], **tol(torch.float64))
        for a, b in zip(h if isinstance(h, tuple) else (h,),
                        ref_h if isinstance(ref_h, tuple) else (ref_h,), strict=True):
            assert a.shape == b.shape == (3, 4, a.shape[-1])
            torch.testing.assert_close(a, b, **tol(torch.float64))
        parametrize.register_parametrization(layer, "weight_hh_l1", Doubled())
        x = x.contiguous()  # the second round declines for the parametrized weight alone
