"""The fused kernels' float32 GEMMs through either library (csrc/gemm.h, `kernels.gemm_library`):
the BLAS libtorch exports (MKL) or oneDNN's dnnl_sgemm. Each is forced in turn, whatever the CPU's
default, and the fused path must match the reference path (outputs and every gradient) on the
shapes that reach each GEMM form: B = 1 (mat-vec, BLAS's gemv above 1 MB of weights), one-thread
steps, steps under 16 rows (oneDNN: dnnl_sgemm, or its matmul primitive from 4 rows once W has
2 MB) and of 16 or more (oneDNN: the matmul primitive with W reordered once; BLAS: MKL's packed
GEMM), the split by hidden units (forward and backward), packed input (shorter steps than the
primitive's rows), two directions at once, a streaming step."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import num_threads, pair

import rnnlab
from rnnlab import kernels

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)

LIBRARIES = ["blas", pytest.param("onednn", marks=pytest.mark.skipif(
    not kernels.ONEDNN, reason="extension built without oneDNN: no dnnl_sgemm"))]


@pytest.fixture(params=LIBRARIES)
def library(request):
    before = kernels.gemm_library()
    assert kernels.gemm_library(request.param) == request.param
    yield request.param
    kernels.gemm_library(before)


@pytest.fixture
def two_threads():
    with num_threads(2):
        yield


def outputs_and_grads(layer, x, packed: bool, lengths=None) -> list[torch.Tensor]:
    """Output, final state(s) and the gradients of x and every parameter under a loss that weights
    each output element differently (so a wrong row or column shows). With ``lengths`` and not
    ``packed``: rnnlab's ``lengths=`` (padded output positions zero)."""
    layer.zero_grad()
    x = x.detach().clone().requires_grad_()
    inp, kw = x, {}
    if packed:
        if lengths is None:
            lengths = torch.linspace(x.shape[0], 1, x.shape[1]).round().long()
        inp = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    elif lengths is not None:
        kw = {"lengths": lengths}
    out, h = layer(inp, **kw)
    if packed:
        out = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])[0]
    states = list(h) if isinstance(h, tuple) else [h]
    loss = sum((t * torch.sin(torch.arange(t.numel(), dtype=t.dtype)).view_as(t)).sum()
               for t in (out, *states))
    loss.backward()
    return [out.detach(), *(s.detach() for s in states), x.grad,
            *(p.grad for p in layer.parameters())]


# (batch, hidden, input): which GEMM forms they reach with two threads
SHAPES = {
    "B1-matvec": (1, 40, 7),          # hand-written mat-vec
    "B1-split": (1, 264, 7),          # B = 1 split by units (LSTM/GRU W_hh ≥ 128 K weights)
    "B3-units": (3, 264, 5),          # B > 1 split by units: forward (GRU), backward (LSTM, GRU)
    "B9-serial": (9, 24, 6),          # one-thread steps (< 1.2 M multiply-adds), < 16 rows
    "B20-two-thread": (20, 144, 8),   # two-thread steps of ≥ 16 rows (matmul / MKL packed)
    "B40-packed": (40, 112, 8),       # ≥ 16 rows, one thread for the RNN, two for the others
    "B6-large-w": (6, 368, 8),        # LSTM: < 16 rows on the matmul primitive (W_hh ≥ 2 MB)
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "lstm_proj", "gru"])
def test_fused_matches_reference_under_each_library(library, two_threads, mode, shape):
    B, H, I = SHAPES[shape]
    torch.manual_seed(0)
    _, layer = pair(mode, I, H, torch.float32)
    x = torch.randn(11, B, I)
    for packed in ([False, True] if B > 2 else [False]):
        fused = outputs_and_grads(layer, x, packed)
        with kernels.use_reference():
            reference = outputs_and_grads(layer, x, packed)
        for a, b in zip(fused, reference, strict=True):
            # 1e-5, relative to the tensor's largest value: a weight gradient here sums up to
            # 440 rows, and its fp32 rounding grows with that sum whatever the library
            scale = max(1.0, b.abs().max().item())
            torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.skipif(not kernels.ONEDNN, reason="extension built without oneDNN: no batch halves")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("batch,hidden", [(9, 40), (20, 40), (32, 256)])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_batch_halves_match_torch(two_threads, monkeypatch, cell, batch, hidden, dtype):
    """With oneDNN as the library and two threads, a forward of B ≥ 8 runs as two batch halves,
    one per core (csrc/split.h batch_halves; the GRU where it is not split by units, i.e. not at
    B = 32, H = 256): B = 9 splits 5 + 4 rows (under 16: dnnl_sgemm), B = 20 10 + 10; at B = 32,
    H = 256 (steps above the backward pipeline's 8 M multiply-adds) the LSTM backward's
    recurrences too. With lengths=, the finished rows of each half stay frozen; as a packed
    sequence, the forward's halves meet where their work balances (the longest sequences in the
    lower half; halves_mid) and the reverse direction's halves start at different steps. The
    reverse direction runs its halves right to left (its directions in turn, not one per core:
    PAIR_MAX_BYTES 0); float64 takes BLAS's dgemm per half. Training, and inference on rnnlab's
    kernel (not oneDNN's RNN primitive)."""
    monkeypatch.setattr(kernels, "PAIR_MAX_BYTES", 0)
    before = kernels.gemm_library()
    kernels.gemm_library("onednn")
    try:
        torch.manual_seed(0)
        ref, ours = pair(cell, 6, hidden, dtype, num_layers=2, bidirectional=True)
        x = torch.randn(12, batch, 6, dtype=dtype)
        lengths = torch.randint(1, 13, (batch,))
        lengths[0] = 12
        tol = {"atol": 2e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
        for lens, packed in ((None, False), (lengths, False), (lengths, True)):
            got = outputs_and_grads(ours, x, packed=packed, lengths=lens)
            expected = outputs_and_grads(ref, x, packed=lens is not None, lengths=lens)
            for a, b in zip(got, expected, strict=True):
                torch.testing.assert_close(a, b, **tol)
        with torch.no_grad(), kernels.onednn_mode("never"):
            torch.testing.assert_close(ours(x)[0], ref(x)[0], **tol)
    finally:
        kernels.gemm_library(before)


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_two_layers_bidirectional_match_torch(library, two_threads, mode):
    torch.manual_seed(0)
    ref, ours = pair(mode, 16, 48, torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(13, 33, 16)
    for layer in (ref, ours):
        layer.zero_grad()
    expected = outputs_and_grads(ref, x, packed=False)
    got = outputs_and_grads(ours, x, packed=False)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_streaming_step_matches_torch_cell(library, cell):
    """A lone step at H = 256 (above 64 K weights) on one thread multiplies through the library's
    gemv (on two threads it is split by units instead: test_kernels.py)."""
    torch.manual_seed(0)
    layer = getattr(rnnlab, cell)(32, 256)
    ref = getattr(torch.nn, cell + "Cell")(32, 256)
    ref.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    xs = torch.randn(5, 1, 32)
    state = None
    h = torch.zeros(1, 256)
    c = torch.zeros(1, 256)
    with torch.no_grad(), num_threads(1):
        for x in xs:
            out, state = layer.step(x, state)
            if cell == "LSTM":
                h, c = ref(x, (h, c))
            else:
                h = ref(x, h)
            torch.testing.assert_close(out, h, atol=1e-5, rtol=1e-5)


def test_gemm_library_reads_sets_and_rejects_bad_names():
    before = kernels.gemm_library()
    assert before in ("blas", "onednn")
    try:
        assert kernels.gemm_library("blas") == "blas"
        assert kernels.gemm_library() == "blas"
        assert kernels.gemm_library("mkl") == "blas"
        with pytest.raises(ValueError, match="name: expected one of 'blas', 'onednn', got 'cublas'"):
            kernels.gemm_library("cublas")
        assert kernels.gemm_library() == "blas"
    finally:
        kernels.gemm_library(before)


def test_environment_variable_sets_the_library_at_import():
    code = "from rnnlab import kernels; print(kernels.gemm_library())"
    env = {**os.environ, "RNNLAB_GEMM": "blas"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "blas"
    env["RNNLAB_GEMM"] = "fastest"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "RNNLAB_GEMM: expected 'blas', 'onednn' or 'auto', got 'fastest'" in bad.stderr


# (M, K, N) across mm_into's forms: under 16 rows, 16–255 rows with op(B) transposed and large
# (ATen keeps it), from 256 rows
MM_SHAPES = [(7, 33, 20), (40, 512, 700), (300, 64, 96)]


@pytest.mark.parametrize("shape", MM_SHAPES)
@pytest.mark.parametrize("transposed", [False, True])
def test_mm_matches_torch_under_each_library(library, two_threads, shape, transposed):
    """kernels.mm (the bench's E_peak basis beside torch.mm) is a @ b whichever library runs it,
    for a stored and a transposed b, into a given out or a new one."""
    torch.manual_seed(0)
    m, k, n = shape
    a = torch.randn(m, k)
    b = torch.randn(n, k).t() if transposed else torch.randn(k, n)
    out = torch.full((m, n), float("nan"))
    assert kernels.mm(a, b, out) is out
    torch.testing.assert_close(out, a @ b, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kernels.mm(a.double(), b.double()), a.double() @ b.double(),
                               rtol=1e-12, atol=1e-10)


def test_mm_rejects_bad_arguments_by_name():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    with pytest.raises(ValueError, match="b: expected 4 rows"):
        kernels.mm(a, torch.randn(3, 5))
    with pytest.raises(ValueError, match="a: expected a 2-D CPU tensor, got 3-D"):
        kernels.mm(torch.randn(2, 3, 4), b)
    with pytest.raises(ValueError, match="b: expected float32 or float64 like a"):
        kernels.mm(a, b.double())
    with pytest.raises(ValueError, match=r"out: expected a torch.float32 CPU tensor of shape \(3, 5\)"):
        kernels.mm(a, b, torch.empty(5, 3))
