"""The oneDNN RNN-primitive path (dense fp32 sequences) against the reference BPTT and torch.nn:
outputs and all gradients, double backward, the cached inference weights, the dispatch rule,
opcheck and torch.compile."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab import kernels

pytestmark = pytest.mark.skipif(
    not kernels.ONEDNN, reason="extension built without oneDNN (onednn-devel-cpu-gomp not installed)"
)

VARIANTS = {  # the cells oneDNN has: vanilla RNN, LSTM without projection, GRU with reset after
    "rnn_tanh": (rnnlab.RNN, torch.nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnlab.RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnlab.LSTM, torch.nn.LSTM, {}),
    "gru": (rnnlab.GRU, torch.nn.GRU, {}),
}
LAYOUTS = [(1, False, True), (2, True, True), (3, False, False)]  # (num_layers, bidirectional, bias)
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _outputs_and_grads(layer, x, hx):
    out, h = layer(x, hx)
    states = list(h) if isinstance(h, tuple) else [h]
    loss = sum((t * torch.sin(torch.arange(t.numel(), dtype=t.dtype)).view_as(t)).sum()
               for t in [out, *states])
    leaves = [x, *(hx if isinstance(hx, tuple) else (hx,)), *layer.parameters()]
    return [out, *states, *torch.autograd.grad(loss, leaves)]


def _inputs(cls, layers, bidir, batch=4, hidden=6, steps=7, features=5):
    d = layers * (2 if bidir else 1)
    x = torch.randn(steps, batch, features, requires_grad=True)
    h0 = torch.randn(d, batch, hidden, requires_grad=True)
    hx = (h0, torch.randn(d, batch, hidden, requires_grad=True)) if cls is rnnlab.LSTM else h0
    return x, hx


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: f"L{l[0]}{'bi' if l[1] else ''}"
                         f"{'' if l[2] else '-nobias'}")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_onednn_matches_reference_and_torch(variant, layout):
    layers, bidir, bias = layout
    cls, torch_cls, kw = VARIANTS[variant]
    layer = cls(5, 6, num_layers=layers, bidirectional=bidir, bias=bias, **kw)
    peer = torch_cls(5, 6, num_layers=layers, bidirectional=bidir, bias=bias, **kw)
    peer.load_state_dict(layer.state_dict())
    x, hx = _inputs(cls, layers, bidir)
    with kernels.onednn_mode("always"):
        assert kernels.uses_onednn(variant.split("_")[0], x, None, 6, True)
        ours = _outputs_and_grads(layer, x, hx)
    with kernels.use_reference():
        reference = _outputs_and_grads(layer, x, hx)
    theirs = _outputs_and_grads(peer, x, hx)
    for a, b, c in zip(ours, reference, theirs, strict=True):
        torch.testing.assert_close(a, b, **TOL)
        torch.testing.assert_close(a, c, **TOL)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_onednn_inference_equals_training_forward(variant):
    cls, _, kw = VARIANTS[variant]
    layer = cls(5, 6, num_layers=2, **kw)
    x, hx = _inputs(cls, 2, False)
    with kernels.onednn_mode("always"):
        out_train, _ = layer(x, hx)
        with torch.no_grad():
            out_infer, _ = layer(x, hx)
    torch.testing.assert_close(out_infer, out_train.detach(), **TOL)


@pytest.mark.parametrize("bidir", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_double_backward_goes_through_the_reference(variant, bidir):
    cls, _, kw = VARIANTS[variant]
    layer = cls(3, 4, bidirectional=bidir, **kw)
    x, hx = _inputs(cls, 1, bidir, batch=2, hidden=4, steps=5, features=3)

    def grad_norm():
        out, _ = layer(x, hx)
        (g,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(g.pow(2).sum(), list(layer.parameters()))

    with kernels.onednn_mode("always"):
        ours = grad_norm()
    with kernels.use_reference():
        reference = grad_norm()
    for a, b in zip(ours, reference, strict=True):
        torch.testing.assert_close(a, b, **TOL)


def test_cached_inference_weights_follow_updates_and_new_layers():
    """Inference reuses oneDNN-reordered weights; an in-place update or another layer of the same
    shape must not see stale ones."""
    x = torch.randn(6, 8, 5)
    with kernels.onednn_mode("always"), torch.no_grad():
        for _ in range(3):  # fresh layers may land at a freed layer's addresses
            layer = rnnlab.LSTM(5, 6)
            out, _ = layer(x)
            with kernels.use_reference():
                torch.testing.assert_close(out, layer(x)[0], **TOL)
            for p in layer.parameters():
                p.mul_(0.5)
            out, _ = layer(x)
            with kernels.use_reference():
                torch.testing.assert_close(out, layer(x)[0], **TOL)
            del layer


@pytest.mark.parametrize("batch", [1, 9])
def test_onednn_projected_lstm_inference_matches_reference_and_torch(batch):
    """LSTM with proj_size: oneDNN's LSTMP primitive for inference (training keeps our kernel)."""
    layer = rnnlab.LSTM(5, 6, num_layers=2, proj_size=3)
    peer = torch.nn.LSTM(5, 6, num_layers=2, proj_size=3)
    peer.load_state_dict(layer.state_dict())
    x = torch.randn(7, batch, 5)
    hx = (torch.randn(2, batch, 3), torch.randn(2, batch, 6))
    with torch.no_grad():
        with kernels.onednn_mode("always"):
            assert kernels.uses_onednn("lstm", x, None, 6, False, proj=True)
            out, (h, c) = layer(x, hx)
        with kernels.use_reference():
            ref, (h_ref, c_ref) = layer(x, hx)
        theirs, (h_t, c_t) = peer(x, hx)
    for a, b, d in ((out, ref, theirs), (h, h_ref, h_t), (c, c_ref, c_t)):
        torch.testing.assert_close(a, b, **TOL)
        torch.testing.assert_close(a, d, **TOL)
    with kernels.onednn_mode("always"):  # with gradients the projection stays on rnnlab's kernel
        assert not kernels.uses_onednn("lstm", x, None, 6, True, proj=True)
        layer(x, hx)[0].sum().backward()
    assert layer.weight_hr_l0.grad is not None


def test_dispatch_rule():
    from rnnlab.kernels import bands

    big = torch.randn(3, 64, 8)
    with torch.no_grad():
        assert kernels.uses_onednn("lstm", big, None, 128, False)
        # (the GRU's band differs by CPU family: the test below pins both tables)
        expected = bands.prefers_onednn("gru", 128, 64, torch.get_num_threads(), steps=3)
        assert kernels.uses_onednn("gru", big, None, 128, False) == expected
        assert not kernels.uses_onednn("lstm", big.double(), None, 128, False)  # fp32 only
        mask = torch.ones(3, 64, 1, dtype=torch.bool)
        assert not kernels.uses_onednn("lstm", big, mask, 128, False)  # no per-sample lengths
        assert not kernels.uses_onednn("lstm", big, None, 128, True)  # our backward is faster
        assert not kernels.uses_onednn("lstm", torch.randn(3, 1, 8), None, 64, False)
        with kernels.onednn_mode("never"):
            assert not kernels.uses_onednn("lstm", big, None, 128, False)
        with kernels.use_reference():
            assert not kernels.uses_onednn("lstm", big, None, 128, False)
    with pytest.raises(ValueError, match="mode: expected"):
        with kernels.onednn_mode("sometimes"):
            pass


def test_dispatch_bands_follow_the_cpu_family():
    """The bands are per CPU family: on the EPYC oneDNN's GRU won from H = 256 at B ≥ 8 and the
    LSTM's at H = 512 from B = 1 to 39 (rnnlab's kernel from B = 40), where the Xeon's rules keep
    rnnlab's kernels; the EPYC keeps the GRU at H = 128 on rnnlab's kernel (batch halves), where
    the Xeon goes to oneDNN from B = 32."""
    from rnnlab.kernels import bands

    assert bands.PLATFORM in bands.BANDS
    amd, intel = ("amd", "intel")
    assert bands.prefers_onednn("gru", 512, 8, 2, amd) and not bands.prefers_onednn("gru", 512, 8, 2, intel)
    assert bands.prefers_onednn("lstm", 512, 1, 2, amd) and not bands.prefers_onednn("lstm", 512, 1, 2, intel)
    assert not bands.prefers_onednn("lstm", 512, 64, 2, amd) and bands.prefers_onednn("lstm", 512, 32, 2, amd)
    assert not bands.prefers_onednn("gru", 128, 64, 2, amd) and bands.prefers_onednn("gru", 128, 64, 2, intel)
    for platform in (amd, intel):  # both: our RNN up to H = 256, our GRU at H = 64, oneDNN's LSTM
        assert not bands.prefers_onednn("rnn", 256, 64, 2, platform)
        assert not bands.prefers_onednn("gru", 64, 64, 2, platform)
        assert bands.prefers_onednn("lstm", 128, 64, 2, platform)
        assert bands.prefers_onednn("lstm", 128, 64, 1, platform)
        assert not bands.prefers_onednn("rnn", 512, 64, 1, platform)
    # short sequences (T ≤ 10, B ≥ 32, H 128–512): oneDNN's RNN and GRU on the EPYC, 2 threads
    assert bands.prefers_onednn("rnn", 256, 32, 2, amd, steps=1)
    assert bands.prefers_onednn("gru", 128, 64, 2, amd, steps=10)
    assert not bands.prefers_onednn("rnn", 256, 32, 2, amd, steps=11)
    assert not bands.prefers_onednn("rnn", 256, 16, 2, amd, steps=1)
    assert not bands.prefers_onednn("rnn", 64, 32, 2, amd, steps=1)
    assert not bands.prefers_onednn("rnn", 256, 32, 1, amd, steps=1)
    assert not bands.prefers_onednn("rnn", 256, 32, 2, intel, steps=1)


def _op_samples():
    T, B, I, H = 4, 3, 5, 6

    def w(*shape):
        return torch.randn(*shape, requires_grad=True)

    x, h0, c0 = w(T, B, I), w(B, H), w(B, H)
    for kind, gates in ((0, 1), (1, 1), (2, 4), (3, 3)):
        c = c0 if kind == 2 else None
        yield (kind, x, h0, c, w(gates * H, I), w(gates * H, H), w(gates * H), w(gates * H), None,
               True)
        yield (kind, x.detach(), h0.detach(), None if c is None else c.detach(),
               torch.randn(gates * H, I), torch.randn(gates * H, H), None, None, None, False)
        # right to left (the reverse direction of a bidirectional layer)
        yield (kind, x, h0, c, w(gates * H, I), w(gates * H, H), w(gates * H), w(gates * H), None,
               True, True)
    P = 4  # LSTM with projection: inference only
    yield (2, x.detach(), torch.randn(B, P), c0.detach(), torch.randn(4 * H, I), torch.randn(4 * H, P),
           torch.randn(4 * H), torch.randn(4 * H), torch.randn(P, H), False)


@pytest.mark.parametrize("args", list(_op_samples()),
                         ids=lambda a: f"kind{a[0]}-{'train' if a[9] else 'infer'}"
                         f"{'-reverse' if len(a) > 10 else ''}")
def test_opcheck_onednn(args):
    torch.library.opcheck(torch.ops.rnnlab.onednn_fwd.default, args)


def test_torch_compile_through_onednn():
    lstm, gru = rnnlab.LSTM(4, 8), rnnlab.GRU(8, 8)
    x = torch.randn(7, 3, 4)

    def f(x):
        return gru(lstm(x)[0])[0]

    torch._dynamo.reset()
    with kernels.onednn_mode("always"):
        explanation = torch._dynamo.explain(f)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), f(x))
        compiled(x).sum().backward()
    assert all(p.grad is not None for p in [*lstm.parameters(), *gru.parameters()])
