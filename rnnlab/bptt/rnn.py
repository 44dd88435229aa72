"""Whole-sequence Elman RNN with hand-written backpropagation through time.

Forward, for every valid step ``t`` (``f`` = tanh or relu)::

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
    h_t = f(a_t)

Backward, ``dh`` being the gradient reaching ``h_t`` (from the output and from step ``t+1``)::

    da_t      = dh * f'(a_t)          # tanh: 1 - h_t²; relu: [h_t > 0]
    dh_{t-1}  = da_t @ W_hh           # through the recurrence
    dW_ih = Σ_t da_tᵀ x_t,  dW_hh = Σ_t da_tᵀ h_{t-1},  db = Σ_t da_t   (one GEMM each)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._common import add, by_needs, entering, freeze, gemm_tn, input_grads, project, split_masked, steps_of


class RNNFunction(torch.autograd.Function):
    """``(x, mask, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity) -> hs``; ``hs (T, B, H)`` carried states."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,  # (T, B, I)
        mask: Tensor | None,  # (T, B, 1) bool
        h0: Tensor,  # (B, H)
        w_ih: Tensor,  # (H, I)
        w_hh: Tensor,  # (H, H)
        b_ih: Tensor | None,  # (H,)
        b_hh: Tensor | None,  # (H,)
        nonlinearity: str,
    ) -> Tensor:
        steps = x.shape[0]
        hs = project(x, w_ih, add(b_ih, b_hh))  # (T, B, H), overwritten step by step with h_t
        act = torch.tanh_ if nonlinearity == "tanh" else torch.relu_
        h = h0
        for t, m in zip(range(steps), steps_of(mask, steps)):
            a = hs[t].addmm_(h, w_hh.t())  # a_t = (W_ih x_t + b) + W_hh h_{t-1}
            h_new = act(a)  # h_t = f(a_t)
            if m is not None:
                hs[t] = freeze(m, h_new, h)
            h = hs[t]
        ctx.nonlinearity = nonlinearity
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, mask, h0, w_ih, w_hh, hs)
        return hs

    @staticmethod
    def backward(ctx: Any, dhs: Tensor | None) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, mask, h0, w_ih, w_hh, hs = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if dhs is None:
            return (None,) * 8
        dx, dh0, dw_ih, dw_hh, db = rnn_backward(
            dhs, x, mask, h0, w_ih, w_hh, hs, ctx.nonlinearity, needs[0]
        )
        return by_needs(needs, dx, None, dh0, dw_ih, dw_hh, db, db, None)


def rnn_backward(
    dhs: Tensor,  # (T, B, H) gradient reaching each carried state from outside
    x: Tensor,
    mask: Tensor | None,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    hs: Tensor,
    nonlinearity: str,
    need_dx: bool,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
    """BPTT of ``RNNFunction``: ``(dx, dh0, dw_ih, dw_hh, db)`` with ``db`` for both biases.

    Written with differentiable torch ops, so it is also the double-backward path."""
    steps = x.shape[0]
    if nonlinearity == "tanh":
        deriv = 1 - hs * hs  # tanh'(a) = 1 - h²
    else:
        deriv = (hs > 0).to(hs.dtype)  # relu'(a) = [h > 0]
    dh = torch.zeros_like(h0)  # (B, H) gradient carried to step t from t+1
    das: list[Tensor] = [dh] * steps
    for t, dh_out, m, d_t in zip(
        reversed(range(steps)),
        reversed(dhs.unbind(0)),
        reversed(steps_of(mask, steps)),
        reversed(deriv.unbind(0)),
    ):
        dh_in, dh_keep = split_masked(dh + dh_out, m)
        da = dh_in * d_t  # through f
        das[t] = da
        dh = add(da @ w_hh, dh_keep)  # to h_{t-1}
    da_all = torch.stack(das)  # (T, B, H)
    dx, dw_ih, db = input_grads((need_dx, True, True), da_all, x, w_ih)
    assert dw_ih is not None and db is not None
    return dx, dh, dw_ih, gemm_tn(da_all, entering(h0, hs)), db
