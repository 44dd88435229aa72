"""Pieces every whole-sequence BPTT function shares.

The structure is the one cuDNN, haste and oneDNN use: the input projection of all ``T`` steps is one
GEMM before the time loop, the loop does only the recurrent part, and the weight gradients are one
GEMM each over all steps after the backward loop. Per-step tensors are read with ``unbind`` and
written with ``stack`` so nothing grows quadratically in ``T`` (no slice of a full-size gradient per
step), also when the backward itself is differentiated (``create_graph=True``).

Masks: ``mask`` is ``None`` or a bool tensor ``(T, B, 1)``, true where step ``t`` of sequence ``b`` is
valid. On an invalid step the carried state is frozen (``h_t = h_{t-1}``), so the state after the
last step is each sequence's state after its last valid step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def project(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """All input projections at once: ``x (T, B, I) @ weight.T (I, G) + bias`` → ``(T, B, G)``."""
    steps, batch, _ = x.shape
    flat = x.reshape(steps * batch, -1)
    out = torch.addmm(bias, flat, weight.t()) if bias is not None else flat @ weight.t()
    return out.view(steps, batch, -1)


def entering(h0: Tensor, hs: Tensor) -> Tensor:
    """States entering each step: ``[h0, h_0, ..., h_{T-2}]`` → ``(T, B, H)``."""
    return torch.cat([h0.unsqueeze(0), hs[:-1]], dim=0)


def gemm_tn(a: Tensor, b: Tensor) -> Tensor:
    """``sum_t a_t.T @ b_t`` for ``a (T, B, M)``, ``b (T, B, N)`` → ``(M, N)`` in one GEMM."""
    return a.reshape(-1, a.shape[-1]).t() @ b.reshape(-1, b.shape[-1])


def input_grads(
    needs: Sequence[bool], da: Tensor, x: Tensor, weight: Tensor
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of ``project``: ``(dx, dweight, dbias)``; ``needs`` flags (x, weight, bias)."""
    dx = (da @ weight) if needs[0] else None  # (T, B, I)
    dw = gemm_tn(da, x) if needs[1] else None  # (G, I)
    db = da.sum(dim=(0, 1)) if needs[2] else None  # (G,)
    return dx, dw, db


def steps_of(t: Tensor | None, steps: int) -> Sequence[Tensor | None]:
    """Per-step views of ``t (T, ...)``, or ``None`` for every step when ``t`` is absent."""
    return t.unbind(0) if t is not None else [None] * steps


def split_masked(grad: Tensor, m: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Route a state gradient: ``(into the cell, kept for the frozen state)``."""
    if m is None:
        return grad, None
    zero = grad.new_zeros(())
    return torch.where(m, grad, zero), torch.where(m, zero, grad)


def add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def freeze(m: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    """Carried state: the new one on valid steps, the old one on padding."""
    return new if m is None else torch.where(m, new, old)


def by_needs(needs: Sequence[bool], *grads: Tensor | None) -> tuple[Tensor | None, ...]:
    """The gradients autograd asked for (``ctx.needs_input_grad``), ``None`` elsewhere."""
    return tuple(g if n else None for g, n in zip(grads, needs, strict=True))
