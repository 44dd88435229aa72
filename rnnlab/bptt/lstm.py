"""Whole-sequence LSTM (optionally with projection) with hand-written backpropagation through time.

Forward, for every valid step ``t`` (gate rows ``[i|f|g|o]``)::

    [i, f, g, o] = [σ, σ, tanh, σ](W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    c_t = f ⊙ c_{t-1} + i ⊙ g
    r_t = o ⊙ tanh(c_t)
    h_t = W_hr r_t   (or h_t = r_t without projection)

Backward, ``dh``/``dc`` being the gradients reaching ``h_t``/``c_t``::

    dr   = dh @ W_hr                    (or dh)
    do   = dr ⊙ tanh(c_t)
    dc  += dr ⊙ o ⊙ (1 - tanh²(c_t))    # through h_t = o ⊙ tanh(c_t)
    di   = dc ⊙ g,  df = dc ⊙ c_{t-1},  dg = dc ⊙ i
    da   = [di·i(1-i), df·f(1-f), dg·(1-g²), do·o(1-o)]   # through the activations
    dh_{t-1} = da @ W_hh,  dc_{t-1} = dc ⊙ f

The activated gates are returned as a third output (the layers ignore it). Saving them as an output
rather than as a hidden buffer keeps them on the autograd graph, so the backward is itself
differentiable: double backward (``create_graph=True``) works, and a gradient reaching the gates
(``dgates``) is added to ``[di, df, dg, do]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._common import add, by_needs, entering, freeze, gemm_tn, input_grads, project, split_masked, steps_of


class LSTMFunction(torch.autograd.Function):
    """``(x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr) -> (hs, cs, gates)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,  # (T, B, I)
        mask: Tensor | None,  # (T, B, 1) bool
        h0: Tensor,  # (B, P) — P = H without projection
        c0: Tensor,  # (B, H)
        w_ih: Tensor,  # (4H, I)
        w_hh: Tensor,  # (4H, P)
        b_ih: Tensor | None,  # (4H,)
        b_hh: Tensor | None,  # (4H,)
        w_hr: Tensor | None,  # (P, H)
    ) -> tuple[Tensor, Tensor, Tensor]:
        steps, batch, _ = x.shape
        hidden = c0.shape[-1]
        gates = project(x, w_ih, add(b_ih, b_hh))  # (T, B, 4H), activated in place per step
        hs = x.new_empty(steps, batch, h0.shape[-1])  # (T, B, P)
        cs = x.new_empty(steps, batch, hidden)  # (T, B, H)
        h, c = h0, c0
        for t, m in zip(range(steps), steps_of(mask, steps)):
            a = gates[t].addmm_(h, w_hh.t())  # (B, 4H) pre-activations
            a[:, : 2 * hidden].sigmoid_()  # i, f
            a[:, 2 * hidden : 3 * hidden].tanh_()  # g
            a[:, 3 * hidden :].sigmoid_()  # o
            i, f, g, o = a.chunk(4, dim=1)
            c_new = torch.addcmul(f * c, i, g)  # c_t = f ⊙ c_{t-1} + i ⊙ g
            h_new = o * torch.tanh(c_new)  # r_t = o ⊙ tanh(c_t)
            if w_hr is not None:
                h_new = h_new @ w_hr.t()  # h_t = W_hr r_t
            cs[t] = freeze(m, c_new, c)
            hs[t] = freeze(m, h_new, h)
            h, c = hs[t], cs[t]
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, mask, h0, c0, w_ih, w_hh, w_hr, hs, cs, gates)
        return hs, cs, gates

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dhs: Tensor | None, dcs: Tensor | None, dgates: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, mask, h0, c0, w_ih, w_hh, w_hr, hs, cs, gates = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr = lstm_backward(
            dhs, dcs, dgates, x, mask, h0, c0, w_ih, w_hh, w_hr, hs, cs, gates, needs[0]
        )
        return by_needs(needs, dx, None, dh0, dc0, dw_ih, dw_hh, db, db, dw_hr)


def lstm_backward(
    dhs: Tensor | None,  # (T, B, P) gradient reaching each carried h from outside
    dcs: Tensor | None,  # (T, B, H) ... and each carried c
    dgates: Tensor | None,  # (T, B, 4H) ... and each activated gate (double backward only)
    x: Tensor,
    mask: Tensor | None,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    w_hr: Tensor | None,
    hs: Tensor,
    cs: Tensor,
    gates: Tensor,
    need_dx: bool,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """BPTT of ``LSTMFunction``: ``(dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr)``.

    Written with differentiable torch ops, so it is also the double-backward path."""
    steps = x.shape[0]
    i, f, g, o = gates.chunk(4, dim=2)  # (T, B, H) each
    tanh_c = torch.tanh(cs)
    dtanh_c = o * (1 - tanh_c * tanh_c)  # ∂h/∂c before projection
    deriv = torch.cat([i * (1 - i), f * (1 - f), 1 - g * g, o * (1 - o)], dim=2)  # (T, B, 4H)
    c_prev = entering(c0, cs)
    dh, dc = torch.zeros_like(h0), torch.zeros_like(c0)
    das: list[Tensor] = [dc] * steps
    dh_cells: list[Tensor] = [dh] * steps
    per_step = zip(
        *(
            reversed(steps_of(v, steps))
            for v in (dhs, dcs, dgates, mask, tanh_c, dtanh_c, deriv, c_prev)
        ),
        *(reversed(v.unbind(0)) for v in (i, f, g)),
    )
    for t, (dh_out, dc_out, dg_out, m, tc, dtc, d_t, cp, i_t, f_t, g_t) in zip(
        reversed(range(steps)), per_step
    ):
        dh_in, dh_keep = split_masked(add(dh, dh_out), m)
        dc_in, dc_keep = split_masked(add(dc, dc_out), m)
        dh_cells[t] = dh_in
        dr = dh_in @ w_hr if w_hr is not None else dh_in  # through the projection
        dc_in = dc_in + dr * dtc  # through h = o ⊙ tanh(c)
        dpost = torch.cat([dc_in * g_t, dc_in * cp, dc_in * i_t, dr * tc], dim=1)
        da = add(dpost, dg_out) * d_t  # through σ / tanh
        das[t] = da
        dh = add(da @ w_hh, dh_keep)  # to h_{t-1}
        dc = add(dc_in * f_t, dc_keep)  # to c_{t-1}
    da_all = torch.stack(das)  # (T, B, 4H)
    dx, dw_ih, db = input_grads((need_dx, True, True), da_all, x, w_ih)
    assert dw_ih is not None and db is not None
    dw_hh = gemm_tn(da_all, entering(h0, hs))
    dw_hr = gemm_tn(torch.stack(dh_cells), o * tanh_c) if w_hr is not None else None
    return dx, dh, dc, dw_ih, dw_hh, db, dw_hr
