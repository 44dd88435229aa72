"""The cache of large training workspaces and gradients (csrc/cache.h, ``kernels.workspace_cache``):
a block is handed to the next call once no tensor uses it, never while one does, blocks of shapes
no longer asked for go, and results do not depend on it. The cache's minimum block size is
lowered here so that small problems go through it."""

from __future__ import annotations

import pytest
import torch
from conftest import gru_outputs_and_grads, tol

import rnnlab
from rnnlab import kernels
from rnnlab.bench.measure import peak_bytes

pytestmark = pytest.mark.skipif(
    not kernels.AVAILABLE, reason=f"fused extension not built: {kernels.LOAD_ERROR}"
)
op = torch.ops.rnnlab


@pytest.fixture
def small_blocks():
    """Every workspace of ≥ 1 KB through the cache, emptied before and after; settings restored."""
    before = kernels.workspace_cache()
    kernels.workspace_cache(limit=1 << 30, min_bytes=1024)
    kernels.empty_cache()
    yield
    kernels.workspace_cache(limit=before["limit"], min_bytes=before["min_bytes"])
    kernels.empty_cache()


def gru_workspace(x, h0, params):
    with torch._C._AutoDispatchBelowAutograd():
        return op.gru_fwd(x, None, h0, *params, True, True, False, None)[1]


def test_block_is_reused_once_free_and_never_while_held(small_blocks):
    layer = rnnlab.GRU(4, 8)
    params = [p.detach() for p in layer.parameters()]
    x, h0 = torch.randn(20, 3, 4), torch.zeros(3, 8)
    ws = gru_workspace(x, h0, params)
    first, held = ws.data_ptr(), ws.clone()
    assert kernels.workspace_cache()["cached"] == ws.numel() * 4
    again = gru_workspace(x, h0, params)  # ws still alive: a block of its own
    assert again.data_ptr() != first
    torch.testing.assert_close(ws, held, rtol=0, atol=0)  # untouched by the second call
    del ws, again
    third = gru_workspace(torch.randn(20, 3, 4), h0, params)
    assert third.data_ptr() == first  # the first block, free again
    assert third.shape == (20, 3, 32) and third.is_contiguous()


def test_only_blocks_of_a_near_size_are_reused(small_blocks):
    params = [p.detach() for p in rnnlab.GRU(4, 8).parameters()]
    h0 = torch.zeros(3, 8)
    first = gru_workspace(torch.randn(20, 3, 4), h0, params).data_ptr()
    shorter = gru_workspace(torch.randn(10, 3, 4), h0, params)  # half the size: a new block
    assert shorter.data_ptr() != first
    assert kernels.workspace_cache()["cached"] == (20 + 10) * 3 * 32 * 4


@pytest.mark.parametrize("form", ["dense", "packed"])
def test_gru_training_through_the_cache_matches_reference(form, small_blocks):
    layer = rnnlab.GRU(3, 5, num_layers=2, dtype=torch.float64)
    x = torch.randn(12, 4, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([12, 7, 12, 3])
    runs = [gru_outputs_and_grads(layer, x, h0, form, lengths) for _ in range(3)]
    assert kernels.workspace_cache()["cached"] > 0
    with kernels.use_reference():
        want = gru_outputs_and_grads(layer, x, h0, form, lengths)
    for got in runs:
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **tol(torch.float64))


def test_lstm_training_through_the_cache_matches_torch(small_blocks):
    ref = torch.nn.LSTM(3, 6, num_layers=2, dtype=torch.float64)
    ours = rnnlab.LSTM(3, 6, num_layers=2, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(15, 4, 3, dtype=torch.float64, requires_grad=True)

    def run(layer):
        out, (h, c) = layer(x)
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=x.dtype).view_as(out)).sum() + c.sum()
        return [out, h, c, *torch.autograd.grad(loss, [x, *layer.parameters()])]

    want = run(ref)
    for _ in range(3):
        for a, b in zip(run(ours), want):
            torch.testing.assert_close(a, b, **tol(torch.float64))
    assert kernels.workspace_cache()["cached"] > 0


def test_weight_gradient_held_by_the_caller_is_never_handed_out_again(small_blocks):
    params = [p.detach() for p in rnnlab.GRU(16, 32).parameters()]  # W_hh's gradient: 12 KB
    x, h0 = torch.randn(20, 3, 16), torch.zeros(3, 32)
    with torch._C._AutoDispatchBelowAutograd():
        hs, ws = op.gru_fwd(x, None, h0, *params, True, True, False, None)

        def backward(seed):
            dhs = torch.randn(20, 3, 32, generator=torch.Generator().manual_seed(seed))
            return op.gru_bwd(dhs, x, None, h0, params[0], params[1], hs, ws, True, True)

        first = backward(0)
        dw_hh, held, cached = first[3], first[3].clone(), kernels.workspace_cache()["cached"]
        again = backward(1)
        # first's dW_ih and dW_hh are alive: new blocks for those two
        grads = params[0].numel() + params[1].numel()
        assert kernels.workspace_cache()["cached"] - cached == 4 * grads
        assert again[3].data_ptr() != dw_hh.data_ptr()
        torch.testing.assert_close(dw_hh, held, rtol=0, atol=0)  # untouched by the second call
        del first, dw_hh, again
        cached = kernels.workspace_cache()["cached"]
        third = backward(0)
    assert kernels.workspace_cache()["cached"] == cached  # every block taken again
    torch.testing.assert_close(third[3], held, rtol=0, atol=0)


def test_blocks_of_shapes_no_longer_asked_for_go(small_blocks):
    """A free block that 256 requests in a row did not take is freed when a new block is made:
    one workspace per length T (384 T bytes: GRU, B=3, H=8), none reusable by a longer one."""
    params = [p.detach() for p in rnnlab.GRU(4, 8).parameters()]
    h0 = torch.zeros(3, 8)
    for steps in range(3, 303):  # requests 1 … 300 (T ≥ 3: at least the fixture's 1 KB)
        gru_workspace(torch.randn(steps, 3, 4), h0, params)
    # at the last request (300) the blocks last taken before request 44 (T < 46) went
    assert kernels.workspace_cache()["cached"] == 384 * sum(range(46, 303))


def test_limit_zero_turns_it_off_and_empty_cache_frees(small_blocks):
    params = [p.detach() for p in rnnlab.GRU(4, 8).parameters()]
    x, h0 = torch.randn(20, 3, 4), torch.zeros(3, 8)
    gru_workspace(x, h0, params)
    assert kernels.workspace_cache()["cached"] > 0
    kernels.empty_cache()  # nothing uses the block any more
    assert kernels.workspace_cache()["cached"] == 0
    kernels.workspace_cache(limit=0)
    ws = gru_workspace(x, h0, params)
    assert kernels.workspace_cache()["cached"] == 0 and ws.shape == (20, 3, 32)


def test_memory_peak_counts_the_recycled_block(small_blocks):
    layer = rnnlab.GRU(16, 32)
    x = torch.randn(50, 8, 16)

    def step():
        layer(x.requires_grad_())[0].sum().backward()

    kernels.workspace_cache(limit=0)
    step()  # (one-time allocations out of the way)
    without = peak_bytes(step)
    kernels.workspace_cache(limit=1 << 30)
    kernels.empty_cache()  # as rnnlab bench does before it measures
    assert peak_bytes(step) >= without


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_ops_pass_opcheck_through_the_cache(cell, small_blocks):
    """Outputs built on a cached block (its storage may be up to 1.25x the tensor) pass the
    schema, fake-tensor and AOT-dispatch checks, the second call on a reused block."""
    T, B, I, H = 4, 3, 5, 6
    x = torch.randn(T, B, I, requires_grad=True)

    def w(*shape):
        return torch.randn(*shape, requires_grad=True)

    if cell == "gru":
        args = (x, None, w(B, H), w(3 * H, I), w(3 * H, H), w(3 * H), w(3 * H), True, True)
    else:
        args = (x, None, w(B, H), w(B, H), w(4 * H, I), w(4 * H, H), w(4 * H), w(4 * H), None)
    for _ in range(2):
        torch.library.opcheck(getattr(op, f"{cell}_fwd").default, args)
    assert kernels.workspace_cache()["cached"] > 0


@pytest.mark.parametrize("name, value", [("limit", -1), ("min_bytes", 1.5)])
def test_bad_settings_are_refused(name, value):
    with pytest.raises(ValueError, match=f"{name}: expected a non-negative int"):
        kernels.workspace_cache(**{name: value})
