"""A cell module's step with gradients as one autograd node (``csrc/cell_train.cpp``).

Through torch ops a cell's step records about ten autograd nodes (two ``addmm``, ``chunk``, each
activation, the products and sums), and their bookkeeping, not the arithmetic, is most of a small
step's time. ``CellStep`` is one node: its forward and its hand-written backward are one C call
each. A double backward (``create_graph=True``) re-runs the cell's torch ops (``rnnlab.cells``)
on the saved inputs and differentiates those, so higher derivatives stay exact.

kind: 0 tanh RNN, 1 relu RNN, 2 LSTM, 3 GRU (reset "after"), 4 GRU (reset "before").
Shapes: x ``(B, I)``, h and c ``(B, H)``, weights and biases as the cell module holds them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import cells
from .ops import _C, AVAILABLE

_fwd = _C.cell_train_fwd if AVAILABLE else None
_bwd = _C.cell_train_bwd if AVAILABLE else None
_PLAIN = (Tensor, torch.nn.Parameter)
_FLOATS = (torch.float32, torch.float64)


def usable(x: Tensor, tensors: tuple[Tensor | None, ...]) -> bool:
    """Whether a step on ``x`` and ``tensors`` (states, weights) may take ``CellStep``: the
    extension built, eager mode with no torch.func transform or dispatch mode active, plain CPU
    float32/float64 tensors (a subclass keeps its own dispatch through the torch ops)."""
    if _fwd is None or not x.is_cpu or x.dtype not in _FLOATS or torch.compiler.is_compiling():
        return False
    if torch._C._are_functorch_transforms_active() or torch._C._len_torch_dispatch_stack():
        return False
    return type(x) in _PLAIN and all(t is None or type(t) in _PLAIN for t in tensors)


def _reference(kind: int, x: Tensor, h: Tensor, c: Tensor | None, *params: Tensor | None) -> Any:
    if kind <= 1:
        return cells.rnn_cell(x, h, *params, "relu" if kind else "tanh")
    if kind == 2:
        return cells.lstm_cell(x, (h, c), *params)
    return cells.gru_cell(x, h, *params, "after" if kind == 3 else "before")


class CellStep(torch.autograd.Function):
    """``apply(kind, x, h, c, w_ih, w_hh, b_ih, b_hh)`` → h' (LSTM: ``(h', c')``); c and the
    biases may be None."""

    @staticmethod
    def forward(ctx: Any, kind: int, x: Tensor, h: Tensor, c: Tensor | None, w_ih: Tensor,
                w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Any:
        h1, c1, saved = _fwd(kind, x, h, c, w_ih, w_hh, b_ih, b_hh)
        ctx.kind = kind
        ctx.save_for_backward(x, h, c, w_ih, w_hh, b_ih, b_hh, h1, c1, saved)
        return (h1, c1) if kind == 2 else h1

    @staticmethod
    def backward(ctx: Any, dh1: Tensor, dc1: Tensor | None = None) -> tuple:
        x, h, c, w_ih, w_hh, b_ih, b_hh, h1, c1, saved = ctx.saved_tensors
        inputs = (x, h, c, w_ih, w_hh, b_ih, b_hh)
        if torch.is_grad_enabled():  # create_graph=True: through the cell's own torch ops
            wanted = [t for t in inputs if t is not None and t.requires_grad]
            out = _reference(ctx.kind, *inputs)
            outs, grads = ((out, (dh1, dc1)) if ctx.kind == 2 else ((out,), (dh1,)))
            got = iter(torch.autograd.grad(outs, wanted, grads, create_graph=True, allow_unused=True))
            return (None, *(next(got) if t is not None and t.requires_grad else None for t in inputs))
        dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh = _bwd(ctx.kind, dh1, dc1, x, h, c, w_ih, w_hh, h1, c1,
                                                      saved)
        if b_ih is None:
            db_ih = db_hh = None
        return None, dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh
