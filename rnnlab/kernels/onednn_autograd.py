"""The oneDNN ops' Python side (``torch.ops.rnnlab.onednn_fwd/onednn_bwd``, csrc/onednn.cpp):
fake implementations, and the forward's autograd formula (oneDNN's backward primitive, or — for a
double backward — the forward re-run on the differentiable reference path). Moved out of
``ops.py``, which registers it when the extension was built with oneDNN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..bptt import GRUFunction, LSTMFunction, RNNFunction
from .ops import _C, _flip, _reverse_arg, _same


def register() -> None:
    """Fake implementations and the autograd formula of the oneDNN ops (called by ops.py)."""

    lib = "rnnlab::"

    @torch.library.register_fake(lib + "onednn_fwd")
    def _(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, train, reverse=False):  # type: ignore[no-untyped-def]
        steps, batch, out = x.shape[0], x.shape[1], h0.shape[1]
        dims = (int(steps), int(batch), int(x.shape[2]), int(out))
        nbytes = _C.onednn_workspace_bytes(kind, *dims) if train else 0
        return (x.new_empty(steps, batch, out), h0.new_empty(batch, out),
                c0.new_empty(c0.shape) if kind == 2 else h0.new_empty(0),
                x.new_empty(nbytes, dtype=torch.uint8))

    @torch.library.register_fake(lib + "onednn_bwd")
    def _(kind, dy, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, hT, cT, ws, reverse=False):  # type: ignore[no-untyped-def]
        n_bias = w_ih.shape[0]
        return (torch.empty_like(x), torch.empty_like(h0),
                torch.empty_like(h0) if kind == 2 else h0.new_empty(0), torch.empty_like(w_ih),
                torch.empty_like(w_hh), w_ih.new_empty(n_bias), w_ih.new_empty(n_bias))

    def setup(ctx: Any, inputs: tuple, output: tuple) -> None:
        kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, train = inputs[:10]
        if w_hr is not None and torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in inputs[1:9]
        ):
            raise RuntimeError("onednn_fwd: the LSTM projection (w_hr) is supported for inference only")
        ctx.set_materialize_grads(False)
        ctx.kind = kind
        ctx.reverse = _reverse_arg(inputs, 10)
        y, h_t, c_t, ws = output
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_t, c_t, ws)

    def reference(kind: int, reverse: bool, x: Tensor, h0: Tensor, c0: Tensor | None, w_ih: Tensor,
                  w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
                  ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The same forward on the differentiable reference path → ``(y, h_T, c_T)`` (a reverse
        run: forward on flipped time, ``y`` flipped back)."""
        f = _flip if reverse else _same
        c_t = None
        if kind == 2:
            hs, cs, _ = LSTMFunction.apply(f(x), None, h0, c0, w_ih, w_hh, b_ih, b_hh, None)
            c_t = cs[-1]
        elif kind == 3:
            hs, _ = GRUFunction.apply(f(x), None, h0, w_ih, w_hh, b_ih, b_hh, "after")
        else:
            hs = RNNFunction.apply(f(x), None, h0, w_ih, w_hh, b_ih, b_hh, "relu" if kind else "tanh")
        return f(hs), hs[-1], c_t

    def grad(ctx: Any, dy: Tensor | None, dh_t: Tensor | None, dc_t: Tensor | None,
             dws: Tensor | None) -> tuple:
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_t, c_t, ws = ctx.saved_tensors
        needs = ctx.needs_input_grad
        kind = ctx.kind
        if dy is None and dh_t is None and dc_t is None:
            return (None,) * 11
        if torch.is_grad_enabled():  # double backward: re-run on the differentiable reference path
            inputs = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
            wrt = [t for t in inputs if t is not None and t.requires_grad]
            outs, grads_out = [], []
            for out, g in zip(reference(kind, ctx.reverse, *inputs), (dy, dh_t, dc_t)):
                if out is not None and g is not None:
                    outs.append(out)
                    grads_out.append(g)
            found = iter(torch.autograd.grad(outs, wrt, grads_out, create_graph=True, allow_unused=True))
            return (None, *(next(found) if t is not None and t.requires_grad else None for t in inputs),
                    None, None, None)
        if dy is None:
            dy = torch.zeros_like(y)
        if dh_t is not None:  # h_T is y[-1] (y[0] for a reverse run)
            dy = dy.clone()
            dy[0 if ctx.reverse else -1] += dh_t
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = torch.ops.rnnlab.onednn_bwd(
            kind, dy, dc_t, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_t, c_t if kind == 2 else None, ws,
            ctx.reverse,
        )
        return (None, dx if needs[1] else None, dh0 if needs[2] else None,
                dc0 if needs[3] else None, dw_ih if needs[4] else None, dw_hh if needs[5] else None,
                db_ih if needs[6] else None, db_hh if needs[7] else None, None, None, None)

    torch.library.register_autograd(lib + "onednn_fwd", grad, setup_context=setup)
