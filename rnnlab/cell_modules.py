"""``RNNCell``, ``LSTMCell``, ``GRUCell``: single-step modules, drop-in for ``torch.nn``'s cells.

Same constructor arguments, parameter names (``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``),
shapes, gate order and init ``U(-1/√H, 1/√H)``; ``forward(input, hx=None)`` takes ``(B, I)`` or
unbatched ``(I,)`` input. The math is in ``rnnlab.cells``.

When nothing needs a gradient (``torch.no_grad()``, or no tensor involved requires one) a step on
the fused backend is one C call, ``kernels.cell_step``, the single-step kernels behind
``Layer.step``: a streaming loop over a cell then costs a few microseconds a step instead of the
dozen torch ops of the cell's equations. That call answers None for anything it does not check
itself (a non-contiguous tensor, a mismatched state, a parametrized weight), and the checked path
below runs, with its errors. With gradients, a validated step on the fused backend is one
autograd node (``kernels.cell_grad.CellStep``: the forward and its hand-written backward one C
call each) instead of the ~10 nodes of the cell's torch ops.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module

from . import _checks as check
from . import kernels
from .cells import GRU_RESETS, NONLINEARITIES, gru_cell, lstm_cell, rnn_cell

_fast = kernels.cell_step
_CellStep = kernels.cell_grad.CellStep
_RNN_KINDS = {"tanh": 0, "relu": 1}  # cell_step's kinds (csrc/step.cpp): 2 LSTM, 3/4 GRU after/before
_GRU_KINDS = {"after": 3, "before": 4}


def _fused(kind: int | None, input: Tensor, hx: Any, params: dict) -> Any:
    """``kernels.cell_step``'s answer, or None where the checked path must run."""
    if _fast is None or kind is None or kernels._forced_reference or torch.compiler.is_compiling():
        return None
    return _fast(kind, input, hx, params)


_cell_call = kernels.cell_call
_is_compiling = torch.compiler.is_compiling


def _one_node(kind: int | None, x: Tensor, tensors: tuple[Tensor | None, ...]) -> bool:
    """Whether a validated step takes ``CellStep`` (fused backend; see ``cell_grad.usable``)."""
    return kind is not None and not kernels._forced_reference and kernels.cell_grad.usable(x, tensors)


class RNNCellBase(nn.Module):
    """Parameters, init and input checks shared by the three cells."""

    gates: int = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check.positive_int("input_size", input_size)
        self.hidden_size = check.positive_int("hidden_size", hidden_size)
        self.bias = check.flag("bias", bias)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        rows = self.gates * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(rows, **factory))
            self.bias_hh = nn.Parameter(torch.empty(rows, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")

    def _inputs(self, input: object, hx: object, count: int) -> tuple[Tensor, list[Tensor], bool]:
        """Validate; return batched ``x (B, I)``, ``count`` states ``(B, H)``, batched flag."""
        x = check.tensor("input", input)
        batched = check.input_rank("input", x, (1, 2))
        check.feature_size("input", x, self.input_size)
        check.matches_params("input", x, self.weight_ih)
        if not batched:
            x = x.unsqueeze(0)
        check.nonempty("input", x, {"B (batch size)": 0})
        if hx is None:
            return x, [x.new_zeros(x.shape[0], self.hidden_size) for _ in range(count)], batched
        given = list(hx) if isinstance(hx, tuple | list) else [hx]
        if len(given) != count:
            what = "a tuple (h, c)" if count == 2 else "a single tensor h"
            raise TypeError(f"hx: expected {what}, got {len(given)} tensor(s)")
        names = ["hx[0] (h)", "hx[1] (c)"] if count == 2 else ["hx"]
        states = []
        for name, h in zip(names, given):
            h = check.tensor(name, h)
            expected = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
            check.same_shape(name, h, expected, "batch, hidden_size" if batched else "unbatched")
            check.matches_params(name, h, self.weight_ih)
            states.append(h if batched else h.unsqueeze(0))
        return x, states, batched

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``nn.Module.__call__``, except that a plain call with no gradient needed is the fused
        step's C call straight away: ``kernels.cell_call`` checks in C that ``nn.Module.__call__``
        would only run our ``forward`` (no hooks, the cell's or global; not ``module.compile()``d;
        no ``forward`` patched in; no jit or FX trace) and answers None for anything it does not
        serve, and the call goes on as usual. (In Python those checks and ``Module.__call__``'s
        own cost ~1.2 µs, half of an H = 64 step. torch.compile traces the usual call.)"""
        if _cell_call is not None and not kwargs and not _is_compiling():
            fused = _cell_call(self, args)
            if fused is not None:
                return fused
        return nn.Module.__call__(self, *args, **kwargs)

    def _kind(self) -> int | None:
        """The step kernels' code of this cell's form (None: not one they know)."""
        raise NotImplementedError

    def _reference(self, x: Tensor, states: list[Tensor], params: tuple) -> Any:
        """The step through the cell's torch ops (``rnnlab.cells``) on validated, batched input."""
        raise NotImplementedError

    def _step(self, input: Tensor, hx: Any) -> Any:
        """forward: the one-call no-grad step, else validated and then one autograd node
        (``CellStep``) or the torch ops; unbatched input gets unbatched outputs."""
        kind = self._kind()
        fused = _fused(kind, input, hx, self._parameters)
        if fused is not None:
            return fused
        lstm = self.gates == 4
        x, states, batched = self._inputs(input, hx, 2 if lstm else 1)
        params = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if _one_node(kind, x, (*states, *params)):
            out = _CellStep.apply(kind, x, states[0], states[1] if lstm else None, *params)
        else:
            out = self._reference(x, states, params)
        if batched:
            return out
        return tuple(o.squeeze(0) for o in out) if lstm else out.squeeze(0)


class RNNCell(RNNCellBase):
    """Elman cell ``h' = f(W_ih x + b_ih + W_hh h + b_hh)`` — see ``rnnlab.cells.rnn_cell``."""

    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.nonlinearity = check.choice("nonlinearity", nonlinearity, NONLINEARITIES)
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._step(input, hx)

    def _kind(self) -> int | None:
        return _RNN_KINDS.get(self.nonlinearity)

    def _reference(self, x: Tensor, states: list[Tensor], params: tuple) -> Tensor:
        return rnn_cell(x, states[0], *params, self.nonlinearity)


class LSTMCell(RNNCellBase):
    """LSTM cell returning ``(h', c')`` — see ``rnnlab.cells.lstm_cell`` (rows ``[i|f|g|o]``)."""

    gates = 4

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        return self._step(input, hx)

    def _kind(self) -> int | None:
        return 2

    def _reference(self, x: Tensor, states: list[Tensor], params: tuple) -> tuple[Tensor, Tensor]:
        return lstm_cell(x, (states[0], states[1]), *params)


class GRUCell(RNNCellBase):
    """GRU cell — see ``rnnlab.cells.gru_cell``; ``reset="after"`` (torch) or ``"before"`` (Cho)."""

    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        reset: str = "after",
    ) -> None:
        self.reset = check.choice("reset", reset, GRU_RESETS)
        super().__init__(input_size, hidden_size, bias, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        return self._step(input, hx)

    def _kind(self) -> int | None:
        return _GRU_KINDS.get(self.reset)

    def _reference(self, x: Tensor, states: list[Tensor], params: tuple) -> Tensor:
        return gru_cell(x, states[0], *params, self.reset)


if kernels.calls_setup is not None:  # what cell_call reads (csrc/module_calls.cpp)
    kernels.calls_setup({"module_globals": vars(_module), "Module": nn.Module,
                         "kernels_globals": vars(kernels), "cells": (RNNCell, LSTMCell, GRUCell)})
