"""Shared helpers: build a torch.nn peer and an rnnlab layer with the same weights, compare them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

import rnnlab

# (rnnlab / torch.nn class name, extra constructor kwargs)
MODES = {
    "rnn_tanh": ("RNN", {"nonlinearity": "tanh"}),
    "rnn_relu": ("RNN", {"nonlinearity": "relu"}),
    "lstm": ("LSTM", {}),
    "lstm_proj": ("LSTM", {"proj_size": 3}),
    "gru": ("GRU", {}),
}

# the kernels' cell variants: (rnnlab class, constructor kwargs)
VARIANTS = {
    "rnn_tanh": (rnnlab.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (rnnlab.RNN, {"nonlinearity": "relu"}),
    "lstm": (rnnlab.LSTM, {}),
    "lstm_proj": (rnnlab.LSTM, {"proj_size": 3}),
    "gru_after": (rnnlab.GRU, {"reset": "after"}),
    "gru_before": (rnnlab.GRU, {"reset": "before"}),
}


def tol(dtype: torch.dtype) -> dict[str, float]:
    return (
        {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}
    )


def pair(mode: str, input_size: int, hidden: int, dtype: torch.dtype, **kw):
    """A torch.nn layer and an rnnlab layer holding the same (torch-initialised) weights."""
    name, extra = MODES[mode]
    ref = getattr(torch.nn, name)(input_size, hidden, dtype=dtype, **extra, **kw)
    ours = getattr(rnnlab, name)(input_size, hidden, dtype=dtype, **extra, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@contextmanager
def num_threads(n: int) -> Iterator[int]:
    """torch's intra-op thread count set to ``n`` inside the block, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def flat_state(h) -> list[torch.Tensor]:
    return list(h) if isinstance(h, tuple) else [h]


def gru_outputs_and_grads(layer, x, h0, form: str, lengths) -> list[torch.Tensor]:
    """A GRU layer's output, final state and the gradients (x, h0, parameters) of a loss weighting
    every value differently; ``form``: "dense", "lengths" (``lengths=``) or "packed"."""
    if form == "packed":
        out, h = layer(torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False), h0)
        out = out.data
    else:
        out, h = layer(x, h0, lengths=lengths if form == "lengths" else None)
    loss = sum((t * torch.sin(torch.arange(t.numel(), dtype=t.dtype)).view_as(t)).sum() for t in (out, h))
    return [out, h, *torch.autograd.grad(loss, [x, h0, *layer.parameters()])]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
