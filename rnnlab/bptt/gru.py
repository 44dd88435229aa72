"""Whole-sequence GRU, both reset forms, with hand-written backpropagation through time.

Forward, for every valid step ``t`` (gate rows ``[r|z|n]``, ``gi = W_ih x_t + b_ih``)::

    r = σ(gi_r + W_hr h + b_hr),  z = σ(gi_z + W_hz h + b_hz)
    n = tanh(gi_n + r ⊙ (W_hn h + b_hn))      reset="after"  (PyTorch, cuDNN)
    n = tanh(gi_n + W_hn (r ⊙ h) + b_hn)      reset="before" (Cho et al. 2014, Olah)
    h_t = (1 - z) ⊙ n + z ⊙ h

Backward, ``dh`` being the gradient reaching ``h_t`` and ``h = h_{t-1}``::

    dn = dh ⊙ (1 - z),  dz = dh ⊙ (h - n),  dh_{t-1} = dh ⊙ z + ...
    dan = dn ⊙ (1 - n²)                                   # through tanh
    after:  dr = dan ⊙ hn          (hn = W_hn h + b_hn),  d(hn) = dan ⊙ r
    before: d(r⊙h) = dan @ W_hn,   dr = d(r⊙h) ⊙ h,  dh_{t-1} += d(r⊙h) ⊙ r
    dar = dr ⊙ r(1-r),  daz = dz ⊙ z(1-z)                  # through σ
    dh_{t-1} += [dar, daz, (d(hn))] @ W_hh                 # the rows the step used

The workspace ``[r, z, n(, hn)]`` is returned as an output (see ``lstm.py`` for why).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..cells import affine
from ._common import by_needs, entering, freeze, gemm_tn, input_grads, project, split_masked, steps_of


class GRUFunction(torch.autograd.Function):
    """``(x, mask, h0, w_ih, w_hh, b_ih, b_hh, reset) -> (hs, workspace)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,  # (T, B, I)
        mask: Tensor | None,  # (T, B, 1) bool
        h0: Tensor,  # (B, H)
        w_ih: Tensor,  # (3H, I)
        w_hh: Tensor,  # (3H, H)
        b_ih: Tensor | None,  # (3H,)
        b_hh: Tensor | None,  # (3H,)
        reset: str,
    ) -> tuple[Tensor, Tensor]:
        steps, batch, _ = x.shape
        hid = h0.shape[-1]
        after = reset == "after"
        gi = project(x, w_ih, b_ih)  # (T, B, 3H)
        ws = x.new_empty(steps, batch, (4 if after else 3) * hid)  # [r, z, n(, hn)]
        hs = x.new_empty(steps, batch, hid)
        w_rz, w_n = w_hh[: 2 * hid], w_hh[2 * hid :]
        b_rz = b_hh[: 2 * hid] if b_hh is not None else None
        b_n = b_hh[2 * hid :] if b_hh is not None else None
        h = h0
        for t, m in zip(range(steps), steps_of(mask, steps)):
            g, w = gi[t], ws[t]
            w[:, : 2 * hid] = torch.sigmoid(g[:, : 2 * hid] + affine(h, w_rz, b_rz))  # r, z
            r, z = w[:, :hid], w[:, hid : 2 * hid]
            if after:
                hn = affine(h, w_n, b_n)  # W_hn h + b_hn
                w[:, 3 * hid :] = hn
                n = torch.tanh(g[:, 2 * hid :] + r * hn)
            else:
                n = torch.tanh(g[:, 2 * hid :] + affine(r * h, w_n, b_n))
            w[:, 2 * hid : 3 * hid] = n
            hs[t] = freeze(m, torch.lerp(n, h, z), h)  # (1 - z) ⊙ n + z ⊙ h
            h = hs[t]
        ctx.after = after
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x, mask, h0, w_ih, w_hh, hs, ws)
        return hs, ws

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, dhs: Tensor | None, dws: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, mask, h0, w_ih, w_hh, hs, ws = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = gru_backward(
            dhs, dws, x, mask, h0, w_ih, w_hh, hs, ws, ctx.after, needs[0]
        )
        return by_needs(needs, dx, None, dh0, dw_ih, dw_hh, db_ih, db_hh, None)


def gru_backward(
    dhs: Tensor | None,  # (T, B, H) gradient reaching each carried state from outside
    dws: Tensor | None,  # (T, B, 4H or 3H) ... and the workspace (double backward only)
    x: Tensor,
    mask: Tensor | None,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    hs: Tensor,
    ws: Tensor,
    after: bool,
    need_dx: bool,
) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """BPTT of ``GRUFunction``: ``(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)``.

    Written with differentiable torch ops, so it is also the double-backward path."""
    steps = x.shape[0]
    hid = h0.shape[-1]

    parts = ws.chunk(4 if after else 3, dim=2)  # r, z, n(, hn): (T, B, H) each
    r, z, n = parts[:3]
    hp = entering(h0, hs)  # h_{t-1} for every step
    dr_act, dz_act, dn_act = r * (1 - r), z * (1 - z), 1 - n * n
    w_rz, w_n = w_hh[: 2 * hid], w_hh[2 * hid :]
    dh = torch.zeros_like(h0)
    dgis: list[Tensor] = [dh] * steps  # pre-activation gradients of the input part
    dghs: list[Tensor] = [dh] * steps  # ... and of the recurrent part (reset="after")
    per_step = zip(
        *(reversed(steps_of(v, steps)) for v in (dhs, dws, mask)),
        *(reversed(v.unbind(0)) for v in (*parts, hp, dr_act, dz_act, dn_act)),
    )
    for t, (dh_out, dw_out, m, r_t, z_t, n_t, *rest) in zip(reversed(range(steps)), per_step):
        hn_t = rest[0] if after else None
        h_t, dr_a, dz_a, dn_a = rest[-4:]
        dh_in, dh_keep = split_masked(dh if dh_out is None else dh + dh_out, m)
        dn = dh_in * (1 - z_t)  # h_t = (1 - z) n + z h
        dz = dh_in * (h_t - n_t)
        direct = dh_in * z_t
        extra = dw_out.chunk(4 if after else 3, dim=1) if dw_out is not None else None
        if extra is not None:
            dn, dz = dn + extra[2], dz + extra[1]
        dan = dn * dn_a  # through tanh
        if after:
            dr = dan * hn_t
            dhn = dan * r_t if extra is None else dan * r_t + extra[3]
        else:
            drh = dan @ w_n  # d(r ⊙ h)
            dr = drh * h_t
            direct = direct + drh * r_t
        if extra is not None:
            dr = dr + extra[0]
        dar, daz = dr * dr_a, dz * dz_a  # through σ
        dgis[t] = torch.cat([dar, daz, dan], dim=1)
        if after:
            dghs[t] = torch.cat([dar, daz, dhn], dim=1)
            dh = direct + dghs[t] @ w_hh
        else:
            dh = direct + dgis[t][:, : 2 * hid] @ w_rz
        if dh_keep is not None:
            dh = dh + dh_keep
    dgi = torch.stack(dgis)  # (T, B, 3H)
    dx, dw_ih, db_ih = input_grads((need_dx, True, True), dgi, x, w_ih)
    assert dw_ih is not None and db_ih is not None
    if after:
        dgh = torch.stack(dghs)  # (T, B, 3H)
        dw_hh, db_hh = gemm_tn(dgh, hp), dgh.sum(dim=(0, 1))
    else:
        drz, dan_all = dgi[..., : 2 * hid], dgi[..., 2 * hid :]
        dw_hh = torch.cat([gemm_tn(drz, hp), gemm_tn(dan_all, r * hp)], dim=0)
        db_hh = dgi.sum(dim=(0, 1))
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh
