"""Cost grows linearly in T: bytes saved for backward and bytes allocated by the backward (first
and second order) at 4T are ~4x those at T, not ~16x — on the reference path, and on the fused one
at lengths where its backward runs in several chunks (a pipelined backward holds two chunk buffers,
a constant that would blur the ratio if the shorter run fitted in one chunk).

Byte counts are deterministic, so this is no timed assertion; times are in BENCHMARKS.md.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

import rnnlab
from rnnlab import kernels

LAYERS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}


def _saved_bytes(layer, steps: int) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(torch.randn(steps, 4, 8, requires_grad=True))
    return total


def _backward_alloc_bytes(layer, steps: int, create_graph: bool) -> int:
    x = torch.randn(steps, 4, 8, requires_grad=True)
    out, _ = layer(x)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        (gx,) = torch.autograd.grad(out.pow(2).sum(), x, create_graph=create_graph)
        if create_graph:
            gx.pow(2).sum().backward()
    return sum(e.self_cpu_memory_usage for e in prof.key_averages() if e.self_cpu_memory_usage > 0)


@pytest.mark.parametrize("name", list(LAYERS))
def test_saved_memory_linear_in_T(name):
    layer = LAYERS[name](8, 16)
    ratio = _saved_bytes(layer, 160) / _saved_bytes(layer, 40)
    assert 3.5 < ratio < 4.2, ratio


@pytest.mark.parametrize("path", ["reference", "fused"])
@pytest.mark.parametrize("create_graph", [False, True], ids=["backward", "double-backward"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_backward_allocations_linear_in_T(name, create_graph, path):
    if path == "fused" and not kernels.AVAILABLE:
        pytest.skip(f"fused extension not built: {kernels.LOAD_ERROR}")
    layer = LAYERS[name](8, 16)
    steps = 40 if path == "reference" else 160  # B=4: ≥ 2 chunks of the fused backward from T=160
    with kernels.use_reference(path == "reference"):
        small = _backward_alloc_bytes(layer, steps, create_graph)
        large = _backward_alloc_bytes(layer, 4 * steps, create_graph)
    assert large / small < 4.5, (small, large)  # quadratic growth would give ~16
