"""Dropout between layers: identity in eval, Bernoulli(p) zeros scaled by 1/(1-p) in train, never last."""

from __future__ import annotations

import math

import pytest
import torch

import rnnlab


def _pass_through_rnn(p: float, hidden: int = 64) -> rnnlab.RNN:
    """2-layer relu RNN whose layer 2 copies its input: out = relu(dropout(relu(x)))."""
    rnn = rnnlab.RNN(
        hidden, hidden, num_layers=2, nonlinearity="relu", dropout=p, dtype=torch.float64
    )
    with torch.no_grad():
        for layer in range(2):
            getattr(rnn, f"weight_ih_l{layer}").copy_(torch.eye(hidden))
            getattr(rnn, f"weight_hh_l{layer}").zero_()
            getattr(rnn, f"bias_ih_l{layer}").zero_()
            getattr(rnn, f"bias_hh_l{layer}").zero_()
    return rnn


def test_eval_mode_is_identity():
    rnn = rnnlab.LSTM(4, 6, num_layers=3, dropout=0.5).eval()
    plain = rnnlab.LSTM(4, 6, num_layers=3)
    plain.load_state_dict(rnn.state_dict())
    x = torch.randn(5, 2, 4)
    torch.testing.assert_close(rnn(x)[0], plain(x)[0], atol=0, rtol=0)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_train_mode_zeroes_at_rate_p_and_rescales(p):
    rnn = _pass_through_rnn(p).train()
    x = torch.rand(50, 8, 64, dtype=torch.float64) + 0.5  # positive, so relu(x) = x
    out, _ = rnn(x)
    n = out.numel()
    dropped = (out == 0).double().mean().item()
    # binomial test: |rate - p| within 5 standard errors
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))


def test_dropout_never_after_last_layer():
    rnn = rnnlab.GRU(4, 32, num_layers=2, dropout=0.5).train()
    out, h_n = rnn(torch.randn(9, 16, 4))
    torch.testing.assert_close(out[-1], h_n[-1], atol=0, rtol=0)  # last layer's output untouched
    assert torch.count_nonzero(out) == out.numel()


def test_dropout_gradient_flows_through_kept_units_only():
    rnn = _pass_through_rnn(0.5).train()
    x = (torch.rand(3, 2, 64, dtype=torch.float64) + 0.5).requires_grad_()
    torch.manual_seed(1)
    out, _ = rnn(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).double() / 0.5)
