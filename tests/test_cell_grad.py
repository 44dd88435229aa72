"""The cell modules' step with gradients as one autograd node (``kernels.cell_grad.CellStep``,
``csrc/cell_train.cpp``): float64 gradcheck and gradgradcheck of every input and parameter, the
same gradients as torch.nn's cells and as the cells' torch ops, and the cases that keep the torch
ops (the reference backend, a transform)."""

from __future__ import annotations

import pytest
import torch
from conftest import tol

import rnnlab
from rnnlab import kernels

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)

FORMS = {
    "rnn-tanh": ("RNNCell", {}),
    "rnn-relu": ("RNNCell", {"nonlinearity": "relu"}),
    "lstm": ("LSTMCell", {}),
    "lstm-nobias": ("LSTMCell", {"bias": False}),
    "gru": ("GRUCell", {}),
    "gru-before": ("GRUCell", {"reset": "before"}),
    "gru-before-nobias": ("GRUCell", {"reset": "before", "bias": False}),
}


def _cell(form: str, dtype: torch.dtype = torch.float64, input_size: int = 4, hidden: int = 5):
    name, kw = FORMS[form]
    return getattr(rnnlab, name)(input_size, hidden, dtype=dtype, **kw)


def _node(t: torch.Tensor) -> str:
    """The name of the node that made ``t``, below an unbatched call's squeeze."""
    node = t.grad_fn
    if type(node).__name__.startswith("SqueezeBackward"):
        node = node.next_functions[0][0]
    return type(node).__name__


def _call(cell, x, states, params):
    """The cell on x and states with its parameters replaced by ``params`` (in their order)."""
    names = [n for n, _ in cell.named_parameters()]
    hx = tuple(states) if isinstance(cell, rnnlab.LSTMCell) else states[0]
    out = torch.func.functional_call(cell, dict(zip(names, params, strict=True)), (x, hx))
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("form", list(FORMS))
def test_cell_step_node_passes_gradcheck_and_gradgradcheck(form):
    torch.manual_seed(0)
    cell = _cell(form)
    n_states = 2 if isinstance(cell, rnnlab.LSTMCell) else 1
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    states = [torch.randn(3, 5, dtype=torch.float64, requires_grad=True) for _ in range(n_states)]
    params = [p.detach().clone().requires_grad_(True) for p in cell.parameters()]
    out = _call(cell, x, states, params)
    assert _node(out[0]) == "CellStepBackward"  # one node, not the torch ops

    def f(x, *rest):
        return _call(cell, x, rest[:n_states], rest[n_states:])

    inputs = (x, *states, *params)
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)  # create_graph: the torch ops re-run


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("form", list(FORMS))
def test_cell_step_node_gradients_equal_the_torch_ops(form, dtype, batched):
    """Every gradient (input, states, weights, biases) as through the cell's torch ops (the
    reference backend), over several steps carried through the state; hx None on the first."""
    torch.manual_seed(1)
    cell = _cell(form, dtype, 6, 7)
    lead = (3,) if batched else ()
    xs = torch.randn(4, *lead, 6, dtype=dtype, requires_grad=True)

    def run():
        state, loss = None, 0.0
        for x_t in xs:
            state = cell(x_t, state)
            h = state[0] if isinstance(state, tuple) else state
            loss = loss + (h * torch.linspace(-1, 1, h.numel(), dtype=dtype).view_as(h)).sum()
        leaves = [xs, *cell.parameters()]
        return _node(h), torch.autograd.grad(loss, leaves)

    node, grads = run()
    with kernels.use_reference():
        ref_node, ref = run()
    assert node == "CellStepBackward" and ref_node != "CellStepBackward"
    for a, b in zip(grads, ref, strict=True):
        torch.testing.assert_close(a, b, **tol(dtype))


def test_lstm_cell_step_node_with_only_h_used_and_frozen_inputs():
    """An unused c' (its gradient materialised as zeros) and inputs that need no gradient."""
    torch.manual_seed(2)
    ref = torch.nn.LSTMCell(3, 4)
    cell = rnnlab.LSTMCell(3, 4)
    cell.load_state_dict(ref.state_dict())
    x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    h_ours, _ = cell(x, (h, c))
    h_ref, _ = ref(x, (h, c))
    h_ours.pow(2).sum().backward()
    h_ref.pow(2).sum().backward()
    for a, b in zip(cell.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, **tol(torch.float32))


def test_cell_step_node_is_not_used_under_vmap_or_a_dispatch_mode():
    from torch.utils.flop_counter import FlopCounterMode

    cell = rnnlab.GRUCell(3, 4)
    x, h = torch.randn(2, 3, requires_grad=True), torch.randn(2, 4)
    with FlopCounterMode(display=False) as counter:
        out = cell(x, h)
    assert counter.get_total_flops() > 0 and _node(out) != "CellStepBackward"
    per_sample = torch.func.vmap(torch.func.grad(lambda x, h: cell(x, h).sum()))(x, h)
    expected = torch.autograd.grad(cell(x, h).sum(), x)[0]
    torch.testing.assert_close(per_sample, expected)
