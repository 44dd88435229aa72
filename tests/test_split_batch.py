"""The GRU forward at B > 1 split by hidden units over the two cores (csrc/split.h `split_batch`,
`UnitGemms`): each core runs the whole sequence for its half of the units, with its rows of
W_hh gathered and packed, one barrier per step. Used for W_hh of 192 K–768 K weights (H = 264
here: halves of 128 and 136 units) and reset "after"; against the reference path, outputs and
all gradients, dense, with lengths, packed, both directions; and the LSTM backward split the same
way at B > 1 (below)."""

from __future__ import annotations

import pytest
import torch
from conftest import gru_outputs_and_grads, num_threads, tol

import rnnlab
from rnnlab import kernels

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)

H = 264  # 3 H² = 209 K weights: split with two threads


@pytest.fixture(params=[1, 2], ids=["serial", "split"])
def threads(request):
    with num_threads(request.param) as n:
        yield n


@pytest.mark.parametrize("form", ["dense", "lengths", "packed"])
@pytest.mark.parametrize(
    "dtype, bidirectional",
    # fp64 both directions: 1.7 MB of W_hh per direction is above kernels.PAIR_MAX_BYTES, so the
    # directions run in turn and each splits (fp32's would run at once, one per core, unsplit)
    [(torch.float32, False), (torch.float64, True)],
    ids=["f32", "f64-bi"],
)
def test_gru_split_by_units_matches_reference(form, dtype, bidirectional, threads):
    torch.manual_seed(0)
    layer = rnnlab.GRU(5, H, bidirectional=bidirectional, dtype=dtype)
    dirs = 2 if bidirectional else 1
    # (T = 21: below H = 512 the backward splits from 20 steps, split.h kSplitBackMinSteps)
    x = torch.randn(21, 3, 5, dtype=dtype, requires_grad=True)
    h0 = torch.randn(dirs, 3, H, dtype=dtype, requires_grad=True)
    lengths = torch.tensor([14, 21, 2])
    fused = gru_outputs_and_grads(layer, x, h0, form, lengths)
    with kernels.use_reference():
        reference = gru_outputs_and_grads(layer, x, h0, form, lengths)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, **tol(dtype))


def test_gru_split_by_units_matches_torch(threads):
    """Inference at B = 8, H = 264 (split; oneDNN only from B = 64 at this H) against torch.nn.GRU."""
    torch.manual_seed(0)
    ours = rnnlab.GRU(7, H)
    ref = torch.nn.GRU(7, H)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(12, 8, 7)
    with torch.no_grad():
        (out, h), (out_ref, h_ref) = ours(x), ref(x)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)


# The backward at B > 1 split by units (split.h split_batch_back: H ≥ 256 and B ≤ H / 48;
# UnitGemms' backward form: each core gathers its units' columns of da and multiplies them by its
# gathered, packed rows of W_hh into a partial dh, one barrier per step), LSTM and GRU (reset
# "after"). H = 264: halves of 128 and 136 units, B = 5 (5 · 48 = 240 ≤ 264), T = 40: chunks of
# 14 / 18 steps (split_batch_chunk), so dh and dc cross chunk boundaries. Both directions: at least
# 836 KB of W_hh per direction in fp32 (GRU: the pair runs at once, one per core, unsplit) and
# 1.7–2.2 MB in fp64 (above kernels.PAIR_MAX_BYTES: in turn, each split, the reverse one included).
def outputs_and_grads(layer, x, states):
    out, final = layer(x, tuple(states) if len(states) == 2 else states[0])
    finals = list(final) if len(states) == 2 else [final]
    loss = (out * torch.sin(torch.arange(out.numel(), dtype=x.dtype)).view_as(out)).sum()
    loss = loss + sum((f * (k + 0.3)).sum() for k, f in enumerate(finals))
    return [out, *finals, *torch.autograd.grad(loss, [x, *states, *layer.parameters()])]


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_backward_split_by_units_matches_reference(cell, dtype, bidirectional, threads):
    torch.manual_seed(0)
    dirs = 2 if bidirectional else 1
    layer = getattr(rnnlab, cell)(3, H, num_layers=2, bidirectional=bidirectional, dtype=dtype)
    x = torch.randn(40, 5, 3, dtype=dtype, requires_grad=True)
    count = 2 if cell == "LSTM" else 1
    states = [torch.randn(2 * dirs, 5, H, dtype=dtype, requires_grad=True) for _ in range(count)]
    fused = outputs_and_grads(layer, x, states)
    with kernels.use_reference():
        reference = outputs_and_grads(layer, x, states)
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, **tol(dtype))


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_backward_split_by_units_matches_torch(cell, threads):
    """Training at B = 2, H = 256 (split; the GRU's forward too) against torch.nn: every gradient.
    (The dense cases of test_gru_split_by_units_matches_reference, B = 3, split their backward.)"""
    torch.manual_seed(0)
    ours = getattr(rnnlab, cell)(6, 256)
    ref = getattr(torch.nn, cell)(6, 256)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(24, 2, 6, requires_grad=True)  # (≥ kSplitBackMinSteps = 20 steps)
    states = [torch.randn(1, 2, 256, requires_grad=True) for _ in range(2 if cell == "LSTM" else 1)]
    for a, b in zip(outputs_and_grads(ours, x, states), outputs_and_grads(ref, x, states), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
