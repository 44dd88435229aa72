"""Readable single-step cells: the math of rnnlab in one place.

Every function here advances one time step for a batch and is written straight from its equations.
They are the oracle the whole-sequence BPTT functions (``rnnlab.bptt``) and any fast kernel are
tested against, and the bodies of the ``RNNCell``/``LSTMCell``/``GRUCell`` modules.

Notation of the seed article vs. these parameters (PyTorch's names and layouts):

==================  ============================  ==========================================
seed                rnnlab / torch.nn             shape
==================  ============================  ==========================================
``U`` (input)       ``weight_ih``                 ``(G*H, I)``
``W`` (recurrent)   ``weight_hh``                 ``(G*H, H)`` (``(G*H, P)`` with projection)
``W_*·[h, x]``      ``W_i*·x + W_h*·h`` (split)   concatenation ≡ the two matrices side by side
``b_*``             ``bias_ih + bias_hh``         ``(G*H,)`` each
``V`` (output)      a task head, not the cell     ``(vocab, H)``
==================  ============================  ==========================================

``G`` is 1 (RNN), 4 (LSTM, gate rows ``[i|f|g|o]``) or 3 (GRU, gate rows ``[r|z|n]``).
Shapes: ``B`` batch, ``I`` input size, ``H`` hidden size, ``P`` LSTM projection size.
"""

from __future__ import annotations

import torch
from torch import Tensor

NONLINEARITIES = ("tanh", "relu")
GRU_RESETS = ("after", "before")


def affine(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``x @ w.T + b`` as one fused call (``b`` may be absent)."""
    return torch.addmm(b, x, w.t()) if b is not None else x @ w.t()


def rnn_cell(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    r"""Elman RNN step, the seed's ``s_t = f(U x_t + W s_{t-1})``.

    .. math::
        h_t = f(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh}),\quad f \in \{\tanh, \mathrm{relu}\}

    Shape: ``x (B, I)``, ``h (B, H)``, ``weight_ih (H, I)``, ``weight_hh (H, H)`` → ``(B, H)``.
    """
    a = affine(x, weight_ih, bias_ih) + affine(h, weight_hh, bias_hh)  # (B, H)
    if nonlinearity == "tanh":
        return torch.tanh(a)
    if nonlinearity == "relu":
        return torch.relu(a)
    raise ValueError(f"nonlinearity: expected one of {NONLINEARITIES}, got {nonlinearity!r}")


def lstm_cell(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    weight_hr: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""LSTM step (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000).

    .. math::
        i_t &= \sigma(W_{ii} x_t + b_{ii} + W_{hi} h_{t-1} + b_{hi})   && \text{input gate} \\
        f_t &= \sigma(W_{if} x_t + b_{if} + W_{hf} h_{t-1} + b_{hf})   && \text{forget gate} \\
        g_t &= \tanh(W_{ig} x_t + b_{ig} + W_{hg} h_{t-1} + b_{hg})    && \text{candidate } \tilde C_t \\
        o_t &= \sigma(W_{io} x_t + b_{io} + W_{ho} h_{t-1} + b_{ho})   && \text{output gate} \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t &= o_t \odot \tanh(c_t) \quad (\text{then } h_t = W_{hr} h_t \text{ with a projection})

    The seed writes the input gate with ``W_C``; it has its own weights ``W_i`` (rows ``0:H``).
    Rows of ``weight_ih``/``weight_hh`` are ``[i|f|g|o]``, each ``H`` tall.

    Shape: ``x (B, I)``, ``state = (h (B, P or H), c (B, H))`` → ``(h_t, c_t)``.
    """
    h, c = state
    gates = affine(x, weight_ih, bias_ih) + affine(h, weight_hh, bias_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # (B, H) each
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_t = f * c + i * g  # (B, H)
    h_t = o * torch.tanh(c_t)  # (B, H)
    if weight_hr is not None:
        h_t = h_t @ weight_hr.t()  # (B, P)
    return h_t, c_t


def gru_cell(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None = None,
    bias_hh: Tensor | None = None,
    reset: str = "after",
) -> Tensor:
    r"""GRU step (Cho et al. 2014) in either of its two published forms.

    .. math::
        r_t &= \sigma(W_{ir} x_t + b_{ir} + W_{hr} h_{t-1} + b_{hr})   && \text{reset gate} \\
        z_t &= \sigma(W_{iz} x_t + b_{iz} + W_{hz} h_{t-1} + b_{hz})   && \text{update gate} \\
        n_t &= \tanh(W_{in} x_t + b_{in} + r_t \odot (W_{hn} h_{t-1} + b_{hn}))
               && \texttt{reset="after"} \\
        n_t &= \tanh(W_{in} x_t + b_{in} + W_{hn} (r_t \odot h_{t-1}) + b_{hn})
               && \texttt{reset="before"} \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    ``reset="after"`` is PyTorch's and cuDNN's form (``torch.nn.GRU`` weights load unchanged and give
    identical results). ``reset="before"`` is Cho et al. 2014 and Olah's ``h̃ = tanh(W·[r ⊙ h, x])``;
    it has the same parameters but computes a different function. Olah's ``z`` is our ``1 - z``.
    Rows of the weights are ``[r|z|n]``, each ``H`` tall.

    Shape: ``x (B, I)``, ``h (B, H)``, ``weight_ih (3H, I)``, ``weight_hh (3H, H)`` → ``(B, H)``.
    """
    hidden = h.shape[-1]
    gi = affine(x, weight_ih, bias_ih)  # (B, 3H)
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    if reset == "after":
        gh = affine(h, weight_hh, bias_hh)  # (B, 3H)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
    elif reset == "before":
        b_rz = bias_hh[: 2 * hidden] if bias_hh is not None else None
        b_n = bias_hh[2 * hidden :] if bias_hh is not None else None
        h_r, h_z = affine(h, weight_hh[: 2 * hidden], b_rz).chunk(2, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + affine(r * h, weight_hh[2 * hidden :], b_n))
    else:
        raise ValueError(f"reset: expected one of {GRU_RESETS}, got {reset!r}")
    return (1 - z) * n + z * h  # (B, H)
