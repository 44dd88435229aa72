"""The fused CPU kernels against the reference BPTT path: outputs and all gradients, fp32/fp64,
over the configuration grid; opcheck of every op; torch.compile without graph breaks. The
single-step kernels (Layer.step) are tested in test_stepping.py."""

from __future__ import annotations

import pytest
import torch
from conftest import VARIANTS, num_threads, tol

import rnnlab
from rnnlab import kernels

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)

LAYOUTS = [  # (num_layers, bidirectional, bias, lengths)
    (1, False, True, None),
    (2, True, True, [6, 3, 1, 6]),
    (3, False, False, [2, 6, 5, 4]),
    (2, True, False, None),
]


def _outputs_and_grads(layer, x, hx, lengths):
    out, h = layer(x, hx, lengths=lengths)
    states = list(h) if isinstance(h, tuple) else [h]
    loss = sum((t * torch.sin(torch.arange(t.numel(), dtype=t.dtype)).view_as(t)).sum()
               for t in [out, *states])
    leaves = [x, *(hx if isinstance(hx, tuple) else (hx,)), *layer.parameters()]
    return [out, *states, *torch.autograd.grad(loss, leaves)]


def test_backend_reports_and_can_be_forced():
    assert kernels.backend("cpu") == "fused"
    assert kernels.backend("cpu", torch.float16) == "reference"
    assert kernels.backend("meta") == "reference"
    with kernels.use_reference():
        assert kernels.backend("cpu") == "reference"
    assert kernels.backend("cpu") == "fused"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: f"L{l[0]}{'bi' if l[1] else ''}"
                         f"{'' if l[2] else '-nobias'}{'-len' if l[3] else ''}")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_matches_reference(variant, layout, dtype):
    layers, bidir, bias, lengths = layout
    cls, kw = VARIANTS[variant]
    layer = cls(5, 4, num_layers=layers, bidirectional=bidir, bias=bias, dtype=dtype, **kw)
    d = layers * (2 if bidir else 1)
    x = torch.randn(6, 4, 5, dtype=dtype, requires_grad=True)
    h0 = torch.randn(d, 4, layer.proj_size or 4, dtype=dtype, requires_grad=True)
    hx = (h0, torch.randn(d, 4, 4, dtype=dtype, requires_grad=True)) if cls is rnnlab.LSTM else h0
    _assert_fused_matches_reference(lambda: _outputs_and_grads(layer, x, hx, lengths), dtype)


def _assert_fused_matches_reference(run, dtype):
    """run() on the fused path and on the reference path: every output and gradient agrees."""
    fused = run()
    with kernels.use_reference():
        reference = run()
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, **tol(dtype))


def _sum_outputs_and_grads(layer, x, hx, lengths):
    """Like _outputs_and_grads with loss = out.sum(): the output's gradient is an expanded scalar
    (not contiguous), which the RNN backward copies chunk by chunk and overwrites in place."""
    out, _ = layer(x, hx, lengths=lengths)
    leaves = [x, *(hx if isinstance(hx, tuple) else (hx,)), *layer.parameters()]
    return [out, *torch.autograd.grad(out.sum(), leaves)]


@pytest.fixture
def threads(request):
    """torch's intra-op thread count for the test (restored after)."""
    with num_threads(request.param) as n:
        yield n


@pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=["serial", "pipelined"])
@pytest.mark.parametrize("grad", ["dense", "expanded"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_backward_in_several_chunks(variant, grad, threads):
    """T·B large enough that the fused backward works through several chunks of steps (chunks of
    ≥ 32 K gradient values: 128 steps for the RNN here, 43 for the GRU, 32 for the LSTM). With two
    threads the chunks run as a pipeline (csrc/pipeline.h: one thread's recurrence, the other's
    weight gradients, dx stages shared; in the forward the next chunk's input projection), in
    both directions."""
    cls, kw = VARIANTS[variant]
    layer = cls(3, 4, bidirectional=True, dtype=torch.float64, **kw)
    x = torch.randn(300, 64, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 64, layer.proj_size or 4, dtype=torch.float64, requires_grad=True)
    hx = (h0, torch.randn(2, 64, 4, dtype=torch.float64, requires_grad=True)) if cls is rnnlab.LSTM else h0
    # with lengths the layer masks the output, which makes its gradient dense again
    lengths = torch.randint(1, 301, (64,)) if grad == "dense" else None
    run = _outputs_and_grads if grad == "dense" else _sum_outputs_and_grads
    _assert_fused_matches_reference(lambda: run(layer, x, hx, lengths), torch.float64)


def _upstream(layout: str, steps: int, batch: int, width: int) -> torch.Tensor:
    """An output gradient [steps, batch, width] of the given memory layout."""
    values = torch.randn(steps, batch, 2 * width, dtype=torch.float64)
    return {
        "batch_major": values[..., :width].transpose(0, 1).contiguous().transpose(0, 1),
        "column_stride": values[..., ::2],  # neither rows nor columns contiguous: copied
        "time_broadcast": values[:1, :, :width].expand(steps, batch, width),
        "row_broadcast": values[0, 0, :width].expand(steps, batch, width),  # row stride 0
    }[layout]


@pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=["serial", "pipelined"])
@pytest.mark.parametrize("layout", ["batch_major", "column_stride", "time_broadcast", "row_broadcast"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_reads_upstream_gradient_layouts(variant, layout, threads):
    """The backward kernels read the output gradient where it lies when its rows allow (any row
    stride with contiguous columns, e.g. one direction's half of a bidirectional output's gradient;
    row stride 0 for an expanded row) and copy the chunk's steps otherwise: every layout gives the
    reference path's gradients, B = 1 (the two-core split at H = 376) and B = 5 in several chunks."""
    cls, kw = VARIANTS[variant]
    for steps, batch, hidden in [(40, 1, 376), (300, 5, 8)]:
        layer = cls(3, hidden, bidirectional=True, dtype=torch.float64, **kw)
        x = torch.randn(steps, batch, 3, dtype=torch.float64, requires_grad=True)
        upstream = _upstream(layout, steps, batch, 2 * (layer.proj_size or hidden))

        def run(layer=layer, x=x, upstream=upstream):
            out, _ = layer(x)
            return [out, *torch.autograd.grad(out, [x, *layer.parameters()], upstream)]

        _assert_fused_matches_reference(run, torch.float64)


@pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=["serial", "split"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_float_batch_one_matvecs(variant, threads):
    """float32 at B = 1, where the backward's mat-vec has an AVX-512 kernel (matvec.h) holding 256
    columns of the result in registers: H = 376 is one full tile plus a masked one of 120 columns
    (split over two cores with two threads), H = 40 a masked tile alone (one thread's mat-vec)."""
    cls, kw = VARIANTS[variant]
    for hidden in (376, 40):
        layer = cls(7, hidden, **kw)
        x = torch.randn(30, 1, 7, requires_grad=True)
        upstream = torch.randn(30, 1, layer.proj_size or hidden)

        def run(layer=layer, x=x, upstream=upstream):
            out, _ = layer(x)
            return [out, *torch.autograd.grad(out, [x, *layer.parameters()], upstream)]

        _assert_fused_matches_reference(run, torch.float32)


@pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=["serial", "pipelined"])
@pytest.mark.parametrize("shape", [(6, 4), (300, 64)], ids=["short", "chunked"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_packed_matches_reference(variant, shape, threads):
    """PackedSequence input, 2 layers, both directions, fp64: on the fused path the kernels work
    on the packed rows themselves (step t's n_t rows at Σ_{s<t} n_s; a reverse step takes h0 for
    the sequences whose reverse run starts there); the reference path on the unpacked steps. The
    long case runs the backward in several chunks (as a pipeline with two threads)."""
    steps, batch = shape
    cls, kw = VARIANTS[variant]
    layer = cls(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, **kw)
    x = torch.randn(steps, batch, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, batch, layer.proj_size or 4, dtype=torch.float64, requires_grad=True)
    hx = (h0, torch.randn(4, batch, 4, dtype=torch.float64, requires_grad=True)) if cls is rnnlab.LSTM else h0
    lengths = torch.randint(1, steps + 1, (batch,))
    lengths[0] = steps

    def run():
        out, h = layer(torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
        states = list(h) if isinstance(h, tuple) else [h]
        loss = out.data.sum() + sum((s * torch.cos(torch.arange(s.numel(), dtype=s.dtype)).view_as(s)).sum()
                                    for s in states)
        leaves = [x, *(hx if isinstance(hx, tuple) else (hx,)), *layer.parameters()]
        return [out.data, *states, *torch.autograd.grad(loss, leaves)]

    _assert_fused_matches_reference(run, torch.float64)


@pytest.mark.parametrize("threads", [1, 2], indirect=True, ids=["serial", "split"])
@pytest.mark.parametrize("grad", ["dense", "expanded"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fused_batch_one_on_two_cores(variant, grad, threads):
    """B = 1 with W_hh of ≥ 128 K weights (H = 376; its halves are 176 and 200 units): with two
    threads each core owns half the hidden units for the whole sequence (csrc/split.h), forward
    and backward, in both directions; T = 2100 runs the backward in two chunks (2048 + 52 steps),
    so the exchanged partial sums are folded into dh between them. The LSTM with projection and
    the GRU with reset "before" keep the one-thread recurrence."""
    cls, kw = VARIANTS[variant]
    layer = cls(2, 376, bidirectional=True, dtype=torch.float64, **kw)
    x = torch.randn(2100, 1, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 1, layer.proj_size or 376, dtype=torch.float64, requires_grad=True)
    hx = (h0, torch.randn(2, 1, 376, dtype=torch.float64, requires_grad=True)) if cls is rnnlab.LSTM else h0
    run = _outputs_and_grads if grad == "dense" else _sum_outputs_and_grads
    _assert_fused_matches_reference(lambda: run(layer, x, hx, None), torch.float64)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradcheck_fused(variant):
    cls, kw = VARIANTS[variant]
    layer = cls(3, 4, bidirectional=True, dtype=torch.float64, **kw)
    params = dict(layer.named_parameters())
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)

    def f(x, *ps):
        out, _ = torch.func.functional_call(layer, dict(zip(params, ps)), (x,), {"lengths": [5, 3]})
        return out

    assert kernels.backend() == "fused"
    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_() for p in params.values()]))


def _op_samples():
    T, B, I, H = 4, 3, 5, 6
    x = torch.randn(T, B, I, requires_grad=True)
    mask = torch.arange(T).unsqueeze(1).lt(torch.tensor([4, 2, 3])).unsqueeze(-1)

    def w(*shape):
        return torch.randn(*shape, requires_grad=True)

    h0, c0 = w(B, H), w(B, H)
    yield "rnn_fwd", (x, mask, h0, w(H, I), w(H, H), w(H), w(H), False)
    yield "rnn_fwd", (x, None, h0, w(H, I), w(H, H), None, None, True)
    yield "lstm_fwd", (x, mask, h0, c0, w(4 * H, I), w(4 * H, H), w(4 * H), w(4 * H), None)
    yield "lstm_fwd", (x, None, w(B, 2), c0, w(4 * H, I), w(4 * H, 2), None, None, w(2, H))
    yield "gru_fwd", (x, mask, h0, w(3 * H, I), w(3 * H, H), w(3 * H), w(3 * H), True, True)
    yield "gru_fwd", (x, None, h0, w(3 * H, I), w(3 * H, H), w(3 * H), w(3 * H), False, True)
    # the backward direction of a bidirectional layer, run in place (reverse=True)
    yield "rnn_fwd", (x, mask, h0, w(H, I), w(H, H), w(H), w(H), False, True)
    yield "gru_fwd", (x, mask, h0, w(3 * H, I), w(3 * H, H), w(3 * H), w(3 * H), True, True, True)
    yield "gru_fwd", (x, None, h0, w(3 * H, I), w(3 * H, H), None, None, False, True, True)
    yield "lstm_fwd", (x, mask, h0, c0, w(4 * H, I), w(4 * H, H), w(4 * H), w(4 * H), None, True)
    yield "lstm_fwd", (x, mask, w(B, 2), c0, w(4 * H, I), w(4 * H, 2), None, None, w(2, H), True)
    with torch.no_grad():
        yield "gru_fwd", (x.detach(), None, h0.detach(), torch.randn(3 * H, I),
                          torch.randn(3 * H, H), None, None, True, False)


@pytest.mark.parametrize("name,args", list(_op_samples()), ids=lambda v: v if isinstance(v, str) else "")
def test_opcheck(name, args):
    torch.library.opcheck(getattr(torch.ops.rnnlab, name).default, args)


def test_torch_compile_has_no_graph_breaks():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = rnnlab.LSTM(4, 8, num_layers=2, bidirectional=True)
            self.gru = rnnlab.GRU(16, 8)
            self.rnn = rnnlab.RNN(8, 8, nonlinearity="relu")

        def forward(self, x):
            y, _ = self.lstm(x)
            y, _ = self.gru(y)
            y, _ = self.rnn(y)
            return y

    torch._dynamo.reset()
    model = Model()
    x = torch.randn(7, 3, 4)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))
    compiled(x).sum().backward()  # the backward goes through the registered autograd formula
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradient_reaches_the_only_parameter_that_needs_it(variant):
    """With one parameter alone requiring a gradient (weight_hr for the projection, weight_hh
    otherwise), the fused call still records it (a call with nothing to differentiate skips
    autograd) and its gradient equals the reference path's; nothing else gets one."""
    cls, kw = VARIANTS[variant]
    layer = cls(3, 4, dtype=torch.float64, **kw)
    alone = "weight_hr_l0" if "proj_size" in kw else "weight_hh_l0"
    for name, p in layer.named_parameters():
        p.requires_grad_(name == alone)
    x = torch.randn(6, 2, 3, dtype=torch.float64)

    def run():
        out, _ = layer(x)
        return torch.autograd.grad((out * out).sum(), [getattr(layer, alone)])

    _assert_fused_matches_reference(run, torch.float64)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_non_contiguous_parameters_and_state(variant):
    """Weights stored transposed (non-contiguous views) and a non-contiguous h0 give the same
    results on the fused path (sequence and step) as on the reference path."""
    cls, kw = VARIANTS[variant]
    layer = cls(5, 6, dtype=torch.float64, **kw)
    with torch.no_grad():
        for name, p in list(layer.named_parameters()):
            if p.dim() == 2:
                setattr(layer, name, torch.nn.Parameter(p.t().contiguous().t()))
    assert not layer.weight_hh_l0.is_contiguous()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    h0 = torch.randn(3, 1, layer.proj_size or 6, dtype=torch.float64).transpose(0, 1)
    hx = (h0, torch.randn(1, 3, 6, dtype=torch.float64)) if cls is rnnlab.LSTM else h0
    with torch.no_grad():
        out, _ = layer(x, hx)
        y, _ = layer.step(x[0], hx)
        with kernels.use_reference():
            ref, _ = layer(x, hx)
    torch.testing.assert_close(out, ref, **tol(torch.float64))
    torch.testing.assert_close(y, ref[0], **tol(torch.float64))


@pytest.mark.parametrize("steps,batch", [(7, 3), (300, 64)], ids=["short", "chunked"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_reverse_kernel_equals_forward_on_flipped_time(cell, steps, batch):
    """reverse=True on x equals the forward kernel on x and the mask flipped in time (flipped
    back), outputs and all gradients: the in-place backward direction of bidirectional layers.
    "chunked": the backward runs through several chunks of steps."""
    T, B, I, H = steps, batch, 4, 5
    torch.manual_seed(0)
    g = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    c0 = [torch.randn(B, H, dtype=torch.float64)] if cell == "lstm" else []
    leaves = [torch.randn(T, B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64), *c0,
              torch.randn(g * H, I, dtype=torch.float64), torch.randn(g * H, H, dtype=torch.float64),
              torch.randn(g * H, dtype=torch.float64), torch.randn(g * H, dtype=torch.float64)]
    lengths = torch.randint(1, T + 1, (B,)).sort(descending=True).values
    lengths[0] = T
    mask = torch.arange(T).unsqueeze(1).lt(lengths).unsqueeze(-1)
    upstream = torch.randn(T, B, H, dtype=torch.float64)

    def run(reverse):
        xs = [t.clone().requires_grad_() for t in leaves]
        x, m = (xs[0], mask) if reverse else (xs[0].flip(0), mask.flip(0))
        if cell == "rnn":
            outs = [torch.ops.rnnlab.rnn_fwd(x, m, *xs[1:], False, reverse)]
        elif cell == "gru":
            outs = [torch.ops.rnnlab.gru_fwd(x, m, *xs[1:], True, True, reverse)[0]]
        else:  # hs and cs
            outs = list(torch.ops.rnnlab.lstm_fwd(x, m, *xs[1:], None, reverse)[:2])
        outs = [o if reverse else o.flip(0) for o in outs]
        loss = sum((o * upstream * (k + 1)).sum() for k, o in enumerate(outs))
        return [*outs, *torch.autograd.grad(loss, xs)]

    for a, b in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)

