"""One time step of a stacked layer (``RNN/LSTM/GRU.step``): streaming and text generation.

Without gradients on the fused backend a step is a few microseconds of arithmetic, so it takes the
shortest path there is: ``kernels.layer_step`` (its dropout and backend checks made in C, then
``kernels.stream_step``), one C call for the whole stack, which answers
None for anything it does not check itself (a non-contiguous input, a mismatched state, a
parametrized weight it cannot find in ``_parameters``). Then the checked path below runs: the
arguments validated with the layers' messages, one single-step op per layer. With gradients, or
on the reference backend, a step is ``forward`` over one time step.

Shapes: input ``(B, I)``; h like ``forward``'s h_n, ``(L, B, H_out)`` (LSTM: with c ``(L, B, H)``);
the output ``(B, H_out)`` is the last layer's new h.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _checks as check
from . import kernels
from . import sequence as seq

if TYPE_CHECKING:
    from .layers import RNNBase


_fast = kernels.layer_step


def layer_step(self: RNNBase, input: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
    """One time step for streaming/generation: ``input (B, I)`` → ``(output (B, H_out), h)``.

    Same result as ``forward(input.unsqueeze(0), hx)`` with the time dimension dropped (h like
    ``forward``'s h_n); the state is carried by the caller, so nothing is re-run.
    Unidirectional layers only. Without gradients on the fused backend it calls the single-step
    kernels directly (low latency; see the module docstring). This is ``RNN/LSTM/GRU.step``.
    """
    # (the fast path's checks, no dropout active and the fused backend, are made in C: a step of
    # a small layer takes ~0.9 µs in all, and in Python they cost ~0.5 µs)
    if _fast is not None:
        result = _fast(self, input, hx)
        if result is not None:
            return result
    if self.bidirectional:
        raise ValueError("step: expected a unidirectional layer, got bidirectional=True")
    x = check.tensor("input", input)
    if x.dim() != 2:
        raise ValueError(f"input: expected a 2-D (B, I) tensor for step, got {x.dim()}-D")
    if torch.is_grad_enabled() or kernels.backend(x.device, x.dtype) != "fused":
        out, h = self.forward(x.unsqueeze(0), hx)
        assert isinstance(out, Tensor)
        return out[0], h
    check.feature_size("input", x, self.input_size)
    check.matches_params("input", x, self._params(0, 0)[0])
    check.nonempty("input", x, {"B (batch size)": 0})
    state = seq.prepare_state(hx, x.unsqueeze(0), True, self._state_shapes(x.shape[0]))
    finals: list[list[Tensor]] = [[] for _ in state]  # per state kind, each layer's (B, ·)
    new: tuple[Tensor, ...] = ()
    for index in range(self.num_layers):
        # (through _params: a parametrized weight is read as its parametrization gives it)
        new = self._step_kernel(x, tuple(s[index] for s in state), self._params(index, 0))
        for final, h in zip(finals, new):
            final.append(h)
        x = new[0]
        if self.dropout and self.training and index < self.num_layers - 1:
            x = F.dropout(x, self.dropout, training=True)
    h_n = tuple(torch.stack(f) for f in finals)  # (L, B, ·)
    return new[0], (h_n if len(h_n) == 2 else h_n[0])
