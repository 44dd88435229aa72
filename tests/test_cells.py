"""Single-step cells against torch.nn.*Cell (values and gradients), and the GRU reset-before form."""

from __future__ import annotations

import pytest
import torch
from conftest import tol

import rnnlab


def _grads(out, tensors):
    outs = list(out) if isinstance(out, tuple) else [out]
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).view_as(o)).sum() for o in outs)
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("given_hx", [True, False])
@pytest.mark.parametrize(
    "name,kw",
    [
        ("RNNCell", {"nonlinearity": "tanh"}),
        ("RNNCell", {"nonlinearity": "relu"}),
        ("LSTMCell", {}),
        ("GRUCell", {}),
        ("RNNCell", {"bias": False}),
        ("LSTMCell", {"bias": False}),
        ("GRUCell", {"bias": False}),
    ],
)
def test_cell_matches_torch(name, kw, dtype, batched, given_hx):
    ref = getattr(torch.nn, name)(5, 6, dtype=dtype, **kw)
    ours = getattr(rnnlab, name)(5, 6, dtype=dtype, **kw)
    ours.load_state_dict(ref.state_dict())
    lead = (4,) if batched else ()
    x = torch.randn(*lead, 5, dtype=dtype, requires_grad=True)
    hx = None
    leaves = [x]
    if given_hx:
        hs = [torch.randn(*lead, 6, dtype=dtype, requires_grad=True) for _ in range(2)]
        hx = tuple(hs) if name == "LSTMCell" else hs[0]
        leaves += list(hs) if name == "LSTMCell" else [hs[0]]
    out_ref, out = ref(x, hx), ours(x, hx)
    torch.testing.assert_close(out, out_ref, **tol(dtype))
    params = list(ours.parameters())
    g = _grads(out, leaves + params)
    g_ref = _grads(out_ref, leaves + list(ref.parameters()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, **tol(dtype))


def test_cell_parameters_and_init_match_torch():
    for name in ("RNNCell", "LSTMCell", "GRUCell"):
        ref, ours = getattr(torch.nn, name)(3, 64), getattr(rnnlab, name)(3, 64)
        assert [(n, p.shape) for n, p in ref.named_parameters()] == [
            (n, p.shape) for n, p in ours.named_parameters()
        ]
        bound = 1 / 64**0.5
        for p in ours.parameters():
            assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound
            assert abs(p.std().item() - bound / 3**0.5) < 0.2 * bound  # U(-b, b) has std b/√3


def test_gru_reset_before_is_cho_olah_concatenated_form():
    """reset="before": n = tanh(W·[r ⊙ h, x] + b), the seed/Olah form, with W = [W_hn | W_in]."""
    cell = rnnlab.GRUCell(4, 5, reset="before", dtype=torch.float64)
    x, h = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    w_ir, w_iz, w_in = cell.weight_ih.chunk(3)
    w_hr, w_hz, w_hn = cell.weight_hh.chunk(3)
    b_r, b_z, b_n = (cell.bias_ih + cell.bias_hh).chunk(3)
    hx = torch.cat([h, x], dim=1)  # [h_{t-1}, x_t]
    r = torch.sigmoid(hx @ torch.cat([w_hr, w_ir], 1).t() + b_r)
    z_olah = 1 - torch.sigmoid(hx @ torch.cat([w_hz, w_iz], 1).t() + b_z)  # Olah's z is our 1 - z
    n = torch.tanh(torch.cat([r * h, x], 1) @ torch.cat([w_hn, w_in], 1).t() + b_n)
    expected = (1 - z_olah) * h + z_olah * n
    torch.testing.assert_close(cell(x, h), expected)
    after = rnnlab.GRUCell(4, 5, dtype=torch.float64)
    after.load_state_dict(cell.state_dict())
    assert (after(x, h) - cell(x, h)).abs().max() > 1e-3  # a different function


def test_lstm_input_gate_uses_its_own_weights():
    """The seed misprints i_t with W_C; our i_t depends on rows 0:H (W_i) only."""
    cell = rnnlab.LSTMCell(2, 3, bias=False, dtype=torch.float64)
    x, h, c = (torch.randn(1, k, dtype=torch.float64) for k in (2, 3, 3))
    with torch.no_grad():
        cell.weight_ih[6:9] = 0.0  # W_C (candidate g) := 0 → g = 0, so c_t = f ⊙ c
        cell.weight_hh[6:9] = 0.0
    _, c_t = cell(x, (h, c))
    f = torch.sigmoid(x @ cell.weight_ih[3:6].t() + h @ cell.weight_hh[3:6].t())
    torch.testing.assert_close(c_t, f * c)
    with torch.no_grad():
        cell.weight_ih[6:9] = 1.0
    i = torch.sigmoid(x @ cell.weight_ih[0:3].t() + h @ cell.weight_hh[0:3].t())
    g = torch.tanh(x @ cell.weight_ih[6:9].t() + h @ cell.weight_hh[6:9].t())
    torch.testing.assert_close(cell(x, (h, c))[1], f * c + i * g)
