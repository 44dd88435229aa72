"""float64 gradcheck and gradgradcheck through each layer (hence through the hand-written BPTT)."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab import kernels

CASES = {
    "rnn_tanh": lambda: rnnlab.RNN(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64),
    "rnn_relu": lambda: rnnlab.RNN(3, 4, nonlinearity="relu", dtype=torch.float64),
    "lstm": lambda: rnnlab.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64),
    "lstm_proj": lambda: rnnlab.LSTM(3, 4, proj_size=2, bidirectional=True, dtype=torch.float64),
    "gru_after": lambda: rnnlab.GRU(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64),
    "gru_before": lambda: rnnlab.GRU(3, 4, bidirectional=True, reset="before", dtype=torch.float64),
}


def _function(layer, lengths):
    """(x, h0[, c0], *params) → (output, h_n[, c_n]) with the parameters as explicit inputs."""
    names = [n for n, _ in layer.named_parameters()]
    lstm = isinstance(layer, rnnlab.LSTM)

    def f(x, h0, c0, *params):
        state = (h0, c0) if lstm else h0
        out, h = torch.func.functional_call(
            layer, dict(zip(names, params)), (x, state), {"lengths": lengths}
        )
        return (out, *h) if lstm else (out, h)

    return f


def _inputs(layer):
    d = layer.num_layers * layer.num_directions
    h_out = layer.proj_size or layer.hidden_size
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(d, 2, h_out, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(d, 2, layer.hidden_size, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    return (x, h0, c0, *params)


@pytest.mark.parametrize("lengths", [None, [3, 5]], ids=["full", "lengths"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck(case, lengths):
    layer = CASES[case]()
    assert torch.autograd.gradcheck(_function(layer, lengths), _inputs(layer))


@pytest.mark.parametrize("lengths", [None, [3, 5]], ids=["full", "lengths"])
@pytest.mark.parametrize("case", list(CASES))
def test_gradgradcheck(case, lengths):
    """Double backward through the hand-written backward — something cuDNN cannot do."""
    layer = CASES[case]()
    assert torch.autograd.gradgradcheck(_function(layer, lengths), _inputs(layer))


def _packed_function(layer, lengths):
    """Like _function with a PackedSequence built from ``x`` inside (unsorted lengths), returning
    the packed output's data."""
    names = [n for n, _ in layer.named_parameters()]
    lstm = isinstance(layer, rnnlab.LSTM)

    def f(x, h0, c0, *params):
        state = (h0, c0) if lstm else h0
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, h = torch.func.functional_call(layer, dict(zip(names, params)), (packed, state))
        return (out.data, *h) if lstm else (out.data, h)

    return f


@pytest.mark.parametrize("case", list(CASES))
def test_gradcheck_and_gradgradcheck_packed(case):
    """Packed input: on the fused path the kernels address the packed rows directly (and the
    double backward pads them for the reference BPTT)."""
    layer = CASES[case]()
    d = layer.num_layers * layer.num_directions
    x = torch.randn(5, 3, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(d, 3, layer.proj_size or layer.hidden_size, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(d, 3, layer.hidden_size, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    f = _packed_function(layer, [2, 5, 4])
    inputs = (x, h0, c0, *params)
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def test_packed_rnn_runs_on_packed_rows(monkeypatch):
    """The fused kernels take the packed data itself (x (N, I) with batch_sizes), no padded copy;
    the reference path gets it padded."""
    seen = []
    run = kernels.rnn
    monkeypatch.setattr(kernels, "rnn", lambda x, *a: seen.append((x.dim(), a[-1] is not None)) or run(x, *a))
    layer = rnnlab.RNN(3, 4, bidirectional=True, dtype=torch.float64)
    packed = pack_padded_sequence(torch.randn(5, 3, 3, dtype=torch.float64), [2, 5, 4], enforce_sorted=False)
    out, _ = layer(packed)
    with kernels.use_reference():
        ref, _ = layer(packed)
    torch.testing.assert_close(out.data, ref.data, atol=1e-12, rtol=1e-12)
    fused = [(2, True)] * 2 if kernels.AVAILABLE else [(3, False)] * 2
    assert seen == fused + [(3, False)] * 2


def test_double_backward_matches_autograd_through_cells():
    """A gradient penalty (create_graph=True) equals the same penalty computed via the cells."""
    layer = rnnlab.LSTM(3, 4, dtype=torch.float64)
    cell = rnnlab.LSTMCell(3, 4, dtype=torch.float64)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)

    def penalty(run):
        out = run(x)
        (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), list(layer.parameters()) + [x])

    def by_cells(x):
        h = c = x.new_zeros(2, 4)
        outs = []
        for x_t in x.unbind(0):
            h, c = torch.func.functional_call(
                cell, {k[:-3]: v for k, v in layer.named_parameters()}, (x_t, (h, c))
            )
            outs.append(h)
        return torch.stack(outs)

    for a, b in zip(penalty(lambda x: layer(x)[0]), penalty(by_cells), strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
