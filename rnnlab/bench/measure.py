"""Measurement primitives of ``rnnlab bench``: interleaved timing, peak memory, GEMM roofline.

Protocol (shared/BENCH.md): warm up, then alternate ours and the peer in the same loop and take the
median of the repetitions; ratios are ``peer_time / our_time`` from one process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from .. import kernels


def interleaved(fns: list[Callable[[], object]], reps: int = 7, warmup: int = 2,
                budget: float = 0.3, max_reps: int = 101) -> list[float]:
    """Median seconds of each function, run alternately so drift hits all of them alike.

    At least ``reps`` repetitions after ``warmup`` rounds; short calls get more, up to ``max_reps``,
    so that the timed rounds take about ``budget`` seconds (a 0.3 ms call is timed ~100 times, a
    fifth as many rounds again as warm-up): the median of seven sub-millisecond calls moved by
    ±10–15 % from run to run."""
    def round_() -> list[float]:
        out = []
        for fn in fns:
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
        return out

    for _ in range(warmup - 1):
        round_()
    last = round_()  # the warm-up's last round sizes the count
    count = max(reps, min(max_reps, int(budget / max(sum(last), 1e-9))))
    for _ in range(count // 5 - warmup):  # the longer warm-up of short calls
        round_()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(count):
        for i, t in enumerate(round_()):
            times[i].append(t)
    return [statistics.median(t) for t in times]


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes held by tensors allocated during ``fn`` (CPU allocator events, in time order)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    raw = prof.profiler.kineto_results.events()  # type: ignore[union-attr]
    events = sorted((e for e in raw if e.name() == "[memory]"), key=lambda e: e.start_ns())
    held = peak = 0
    for e in events:
        held += e.nbytes()
        peak = max(peak, held)
    return peak


def mm_ways() -> dict[str, Callable[[Tensor, Tensor, Tensor], object]]:
    """The ways the bench runs a GEMM ``out = a @ b``, by name: ``torch.mm``, and the fused
    kernels' own (``kernels.mm``) when the extension is built."""
    ways: dict[str, Callable[[Tensor, Tensor, Tensor], object]] = {
        "torch.mm": lambda a, b, out: torch.mm(a, b, out=out)}
    if kernels.AVAILABLE:
        ways[f"rnnlab ({kernels.gemm_library()})"] = kernels.mm
    return ways


def sgemm_flops(threads: int, n: int = 2048) -> dict[str, float]:
    """Achieved FLOP/s of one large float32 GEMM (n³) with ``threads`` threads, by library:
    ``torch.mm`` and, when the extension is built, the fused kernels' own GEMM (``kernels.mm``:
    oneDNN's ``dnnl_sgemm`` on AMD, where torch's MKL takes a slower path: 2-core EPYC, 175–186
    against 205–217 GFLOP/s). E_peak divides by the best of them: the machine's attainable rate,
    not one library's."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    ways = mm_ways()
    times = interleaved([lambda mm=mm: mm(a, b, out) for mm in ways.values()], reps=5, warmup=1)
    return {name: 2 * n**3 / t for name, t in zip(ways, times)}


@dataclass
class GemmShapes:
    """The GEMMs a layer needs (for E_gemm): input projection, T recurrent steps, and for training
    the data/weight gradients. ``G`` gate blocks of ``H`` rows, hidden state width ``P``."""

    steps: int
    batch: int
    inputs: int
    hidden: int
    gates: int
    state: int

    def flops_forward(self) -> float:
        """``F = 2·B·G·H·(I+H)`` per step, times T (BENCH.md)."""
        g = self.gates * self.hidden
        return 2.0 * self.steps * self.batch * g * (self.inputs + self.state)

    def reference_time(self, train: bool, dtype: torch.dtype = torch.float32) -> float:
        """Seconds to run just those GEMMs at the same shapes: the faster of torch.mm and, when the
        extension is built, the kernels' own GEMM (kernels.mm), as for the E_peak basis."""
        T, B, g = self.steps, self.batch, self.gates * self.hidden
        x = torch.randn(T * B, self.inputs, dtype=dtype)
        w_ih = torch.randn(g, self.inputs, dtype=dtype)
        w_hh = torch.randn(g, self.state, dtype=dtype)
        h = torch.randn(B, self.state, dtype=dtype)
        proj, step = torch.empty(T * B, g, dtype=dtype), torch.empty(B, g, dtype=dtype)
        d_step = torch.empty(B, self.state, dtype=dtype)
        dx = torch.empty(T * B, self.inputs, dtype=dtype)
        dw_ih = torch.empty(g, self.inputs, dtype=dtype)
        dw_hh = torch.empty(g, self.state, dtype=dtype)
        states = torch.randn(T * B, self.state, dtype=dtype)

        def run(mm: Callable[[Tensor, Tensor, Tensor], object]) -> None:
            mm(x, w_ih.t(), proj)
            for _ in range(T):
                mm(h, w_hh.t(), step)
            if train:
                for _ in range(T):
                    mm(step, w_hh, d_step)
                mm(proj, w_ih, dx)
                mm(proj.t(), x, dw_ih)
                mm(proj.t(), states, dw_hh)

        return min(interleaved([lambda mm=mm: run(mm) for mm in mm_ways().values()], reps=5, warmup=1))
