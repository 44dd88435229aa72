"""A layer equals its own cell stepped by hand in a Python loop (also with lengths, both directions).

This is the check for the variants torch has no layer for (GRU reset="before"), and an independent
check of the masking/reversal logic for the others.
"""

from __future__ import annotations

import pytest
import torch

import rnnlab

VARIANTS = {
    "rnn_tanh": (rnnlab.RNN, rnnlab.RNNCell, {}),
    "rnn_relu": (rnnlab.RNN, rnnlab.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (rnnlab.LSTM, rnnlab.LSTMCell, {}),
    "gru_after": (rnnlab.GRU, rnnlab.GRUCell, {"reset": "after"}),
    "gru_before": (rnnlab.GRU, rnnlab.GRUCell, {"reset": "before"}),
}


def _cell_for(layer, cell_cls, kw, suffix):
    in_size = (
        layer.input_size if suffix.startswith("_l0") else layer.num_directions * layer.hidden_size
    )
    cell = cell_cls(in_size, layer.hidden_size, dtype=torch.float64, **kw)
    cell.load_state_dict(
        {n: getattr(layer, n + suffix) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    )
    return cell


def _step(cell, xs, state):
    """Run ``cell`` over ``xs (t, I)`` for one sequence; return outputs ``(t, H)`` and last state."""
    outs = []
    for x_t in xs:
        state = cell(x_t, state)
        outs.append(state[0] if isinstance(state, tuple) else state)
    return torch.stack(outs), state


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_layer_equals_cell_loop_with_lengths(variant, bidirectional):
    layer_cls, cell_cls, kw = VARIANTS[variant]
    layer = layer_cls(3, 4, num_layers=2, bidirectional=bidirectional, dtype=torch.float64, **kw)
    steps, lengths = 6, [4, 6, 1]
    x = torch.randn(steps, 3, 3, dtype=torch.float64)
    out, h_n = layer(x, lengths=lengths)
    lstm = isinstance(layer, rnnlab.LSTM)
    dirs = ["", "_reverse"] if bidirectional else [""]
    for b, n in enumerate(lengths):
        seq = x[:n, b]  # (n, I) the valid steps only
        for layer_idx in range(2):
            outs = []
            for d, suffix in enumerate(dirs):
                cell = _cell_for(layer, cell_cls, kw, f"_l{layer_idx}{suffix}")
                zero = torch.zeros(4, dtype=torch.float64)
                ys, last = _step(
                    cell, seq if d == 0 else seq.flip(0), (zero, zero) if lstm else zero
                )
                outs.append(ys if d == 0 else ys.flip(0))
                k = layer_idx * len(dirs) + d
                h_last = last[0] if lstm else last
                torch.testing.assert_close((h_n[0] if lstm else h_n)[k, b], h_last)
                if lstm:
                    torch.testing.assert_close(h_n[1][k, b], last[1])
            seq = torch.cat(outs, dim=1)
        torch.testing.assert_close(out[:n, b], seq)
        assert torch.count_nonzero(out[n:, b]) == 0  # padded outputs are zero


def test_lengths_equal_to_separate_runs():
    """Each sequence of a padded batch gives what it gives alone (no leakage across padding)."""
    layer = rnnlab.GRU(3, 5, bidirectional=True, reset="before", dtype=torch.float64)
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    out, h = layer(x, lengths=torch.tensor([7, 3]))
    alone, h_alone = layer(x[:3, 1:2])
    torch.testing.assert_close(out[:3, 1:2], alone)
    torch.testing.assert_close(h[:, 1:2], h_alone)
