"""Kernel dispatch: the fused CPU ops when built, the reference BPTT Functions otherwise.

``backend(device)`` says which path a layer on ``device`` uses; ``use_reference()`` (a context
manager) or the environment variable ``RNNLAB_BACKEND=reference`` forces the reference path.
The two paths take the same arguments and return the same tensors (including the workspace
layout), so they are interchangeable and tested against each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from ..bptt import GRUFunction, LSTMFunction, RNNFunction
from .ops import AVAILABLE, LOAD_ERROR

_forced_reference = os.environ.get("RNNLAB_BACKEND", "").lower() == "reference"

__all__ = ["AVAILABLE", "LOAD_ERROR", "backend", "gru", "lstm", "rnn", "use_reference"]


def backend(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> str:
    """``"fused"`` when the compiled CPU kernels serve ``device``/``dtype``, else ``"reference"``."""
    fused = (
        AVAILABLE
        and not _forced_reference
        and torch.device(device).type == "cpu"
        and dtype in (torch.float32, torch.float64)
    )
    return "fused" if fused else "reference"


@contextmanager
def use_reference(enabled: bool = True) -> Iterator[None]:
    """Run the layers on the reference path inside the ``with`` block."""
    global _forced_reference
    previous, _forced_reference = _forced_reference, enabled
    try:
        yield
    finally:
        _forced_reference = previous


def _fused(x: Tensor) -> bool:
    return backend(x.device, x.dtype) == "fused"


def rnn(x: Tensor, mask: Tensor | None, h0: Tensor, w_ih: Tensor, w_hh: Tensor,
        b_ih: Tensor | None, b_hh: Tensor | None, nonlinearity: str) -> Tensor:
    """One RNN layer/direction over a sequence → carried states ``(T, B, H)``."""
    if _fused(x):
        return torch.ops.rnnlab.rnn_fwd(x, mask, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity == "relu")
    return RNNFunction.apply(x, mask, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity)


def lstm(x: Tensor, mask: Tensor | None, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
         b_ih: Tensor | None, b_hh: Tensor | None, w_hr: Tensor | None
         ) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer/direction → ``(hs, cs, gates)``."""
    if _fused(x):
        return torch.ops.rnnlab.lstm_fwd(x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    return LSTMFunction.apply(x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)


def gru(x: Tensor, mask: Tensor | None, h0: Tensor, w_ih: Tensor, w_hh: Tensor,
        b_ih: Tensor | None, b_hh: Tensor | None, reset: str) -> tuple[Tensor, Tensor]:
    """One GRU layer/direction → ``(hs, workspace)``."""
    if _fused(x):
        keep = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (x, h0, w_ih, w_hh, b_ih, b_hh)
        )  # the workspace only matters for a backward
        return torch.ops.rnnlab.gru_fwd(x, mask, h0, w_ih, w_hh, b_ih, b_hh, reset == "after", keep)
    return GRUFunction.apply(x, mask, h0, w_ih, w_hh, b_ih, b_hh, reset)
