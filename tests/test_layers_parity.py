"""Layers against torch.nn.RNN/LSTM/GRU: outputs, final states and every gradient, over a grid."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import MODES, flat_state, pair, tol
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnlab

I, H, T, B = 4, 5, 7, 3
LENGTHS = [5, 7, 2]  # unsorted, one full length

# (num_layers, bidirectional, batch_first, bias, given hx) — every value of each option appears
LAYOUTS = [
    (1, False, False, True, False),
    (2, True, True, True, True),
    (3, False, True, False, True),
    (2, True, False, False, False),
    (3, True, False, True, True),
]
INPUTS = ["dense", "packed", "lengths", "unbatched"]


def _case_id(layout):
    n, bi, bf, bias, hx = layout
    return f"L{n}{'-bi' if bi else ''}{'-bf' if bf else ''}{'' if bias else '-nobias'}{'-hx' if hx else ''}"


def _run(layer, kind, x, hx, batch_first):
    """Feed ``x`` (padded, in the layer's layout) as ``kind``; return padded output and h_n."""
    if kind == "dense" or kind == "unbatched":
        return layer(x, hx)
    lengths = torch.tensor(LENGTHS)
    if kind == "lengths" and isinstance(layer, rnnlab.layers.RNNBase):
        return layer(x, hx, lengths=lengths)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    out, h = layer(packed, hx)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    if kind == "packed":
        return out.data, h  # compare the packed data itself
    return pad_packed_sequence(out, batch_first=batch_first, total_length=T)[0], h


def _loss(out, h):
    tensors = [out, *flat_state(h)]
    return sum(
        (t * torch.cos(torch.arange(t.numel(), dtype=t.dtype)).view_as(t)).sum() for t in tensors
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", INPUTS)
@pytest.mark.parametrize("layout", LAYOUTS, ids=_case_id)
@pytest.mark.parametrize("mode", list(MODES))
def test_layer_matches_torch(mode, layout, kind, dtype):
    layers, bidir, batch_first, bias, given_hx = layout
    ref, ours = pair(
        mode,
        I,
        H,
        dtype,
        num_layers=layers,
        bidirectional=bidir,
        batch_first=batch_first,
        bias=bias,
    )
    shape = (B, T, I) if batch_first else (T, B, I)
    if kind == "unbatched":
        shape = (T, I)
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    hx, leaves = None, [x]
    if given_hx:
        n = layers * (2 if bidir else 1)
        lead = (n,) if kind == "unbatched" else (n, B)
        h_out = 3 if mode == "lstm_proj" else H
        h0 = torch.randn(*lead, h_out, dtype=dtype, requires_grad=True)
        hx, leaves = h0, [x, h0]
        if mode.startswith("lstm"):
            c0 = torch.randn(*lead, H, dtype=dtype, requires_grad=True)
            hx, leaves = (h0, c0), [x, h0, c0]
    out_ref, h_ref = _run(ref, kind, x, hx, batch_first)
    out, h = _run(ours, kind, x, hx, batch_first)
    torch.testing.assert_close(out, out_ref, **tol(dtype))
    for a, b in zip(flat_state(h), flat_state(h_ref), strict=True):
        torch.testing.assert_close(a, b, **tol(dtype))
    g_ref = torch.autograd.grad(_loss(out_ref, h_ref), leaves + list(ref.parameters()))
    g = torch.autograd.grad(_loss(out, h), leaves + list(ours.parameters()))
    names = ["input", "h0", "c0"][: len(leaves)] + [n for n, _ in ours.named_parameters()]
    for name, a, b in zip(names, g, g_ref, strict=True):
        torch.testing.assert_close(a, b, **tol(dtype), msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("mode", list(MODES))
def test_state_dict_round_trip(mode):
    """torch → rnnlab and rnnlab → torch loads unchanged, and the names/shapes/order agree."""
    ref, ours = pair(mode, I, H, torch.float32, num_layers=2, bidirectional=True)
    assert list(ref.state_dict()) == list(ours.state_dict())
    back = type(ref)(I, H, num_layers=2, bidirectional=True, **MODES[mode][1])
    back.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I)
    torch.testing.assert_close(back(x)[0], ours(x)[0], **tol(torch.float32))


def test_default_init_matches_torch_distribution():
    for name, kw in itertools.islice(MODES.values(), 5):
        ref = getattr(torch.nn, name)(8, 64, num_layers=2, **kw)
        ours = getattr(rnnlab, name)(8, 64, num_layers=2, **kw)
        for (n1, p1), (n2, p2) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
            assert n1 == n2 and p1.shape == p2.shape and p1.dtype == p2.dtype
            assert p2.abs().max() <= 1 / 8  # U(-1/√H, 1/√H), H = 64
            if p2.numel() >= 256:  # std of U(-b, b) is b/√3; enough samples for a 10% band
                assert abs(p2.std().item() - (1 / 8) / 3**0.5) < 0.1 * (1 / 8) / 3**0.5


def test_repr_matches_torch():
    ref = torch.nn.LSTM(4, 5, num_layers=2, bidirectional=True, proj_size=3, batch_first=True)
    ours = rnnlab.LSTM(4, 5, num_layers=2, bidirectional=True, proj_size=3, batch_first=True)
    assert repr(ours) == repr(ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_reduced_precision_runs_on_the_reference_path(mode, dtype):
    """Dtypes the fused kernels do not cover go to the reference path and agree with torch.nn
    to the dtype's rounding; backward runs."""
    from rnnlab import kernels

    assert kernels.backend("cpu", dtype) == "reference"
    ref, ours = pair(mode, I, H, dtype, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=2e-2, rtol=2e-2)
    ours(x, lengths=LENGTHS)[0].float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad.float()).all()


def test_a_parametrized_weight_is_read_through_its_parametrization():
    """Layers read their weights from ``_parameters`` by name; one a parametrization moved out of
    it is read as the attribute (its parametrized value), with and without gradients."""
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    torch.manual_seed(0)
    layer = rnnlab.LSTM(4, 5, num_layers=2, bias=False)
    plain = rnnlab.LSTM(4, 5, num_layers=2, bias=False)
    plain.load_state_dict(layer.state_dict())
    with torch.no_grad():
        plain.weight_hh_l1.mul_(2)
    parametrize.register_parametrization(layer, "weight_hh_l1", Double())
    x = torch.randn(3, 2, 4)
    torch.testing.assert_close(layer(x)[0], plain(x)[0])
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], plain(x)[0])


@pytest.mark.parametrize("mode", list(MODES))
def test_parametrized_weight_is_read_through_its_parametrization(mode):
    """A parametrization moves ``weight_hh_l0`` out of ``_parameters``: the layer must read the
    parametrized value (not skip it) and send the gradient to the original parameter."""
    from torch.nn.utils import parametrize

    class Doubled(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    torch.manual_seed(0)
    name, kw = MODES[mode]
    layer = getattr(rnnlab, name)(I, H, num_layers=2, bidirectional=True, **kw).double()
    plain = getattr(rnnlab, name)(I, H, num_layers=2, bidirectional=True, **kw).double()
    plain.load_state_dict(layer.state_dict())
    with torch.no_grad():
        plain.weight_hh_l1_reverse.mul_(2)
    parametrize.register_parametrization(layer, "weight_hh_l1_reverse", Doubled())
    assert "weight_hh_l1_reverse" not in layer._parameters
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, h = layer(x)
    ref_out, ref_h = plain(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(flat_state(h), flat_state(ref_h))
    _loss(out, h).backward()
    _loss(ref_out, ref_h).backward()
    original = layer.parametrizations.weight_hh_l1_reverse.original
    torch.testing.assert_close(original.grad, 2 * plain.weight_hh_l1_reverse.grad)
