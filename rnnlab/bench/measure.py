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
    """The GEMMs a layer needs (for E_gemm): input projection, one recurrent GEMM a step (and the
    LSTM's projection W_hr when ``state`` < ``hidden``), and for training the data/weight
    gradients. ``G`` gate blocks of ``H`` rows, hidden state width ``P``; ``rows``: the rows each
    step runs (a packed case's batch sizes), empty for ``batch`` rows at every step."""

    steps: int
    batch: int
    inputs: int
    hidden: int
    gates: int
    state: int
    rows: tuple[int, ...] = ()

    def step_rows(self) -> tuple[int, ...]:
        return self.rows or (self.batch,) * self.steps

    def flops_forward(self) -> float:
        """``F = 2·B·G·H·(I+P)`` per step (BENCH.md, with P = H unless projected), summed over
        the steps' rows, plus ``2·B·H·P`` a step for a projection."""
        n = sum(self.step_rows())
        projection = 2.0 * n * self.hidden * self.state if self.state != self.hidden else 0.0
        return 2.0 * n * self.gates * self.hidden * (self.inputs + self.state) + projection

    def reference_time(self, train: bool, dtype: torch.dtype = torch.float32) -> float:
        """Seconds to run just those GEMMs at the same shapes: the faster of torch.mm and, when the
        extension is built, the kernels' own GEMM (kernels.mm), as for the E_peak basis."""
        return min(interleaved(self.reference_runs(train, dtype), reps=5, warmup=1))

    def reference_runs(self, train: bool, dtype: torch.dtype = torch.float32) -> list[Callable[[], None]]:
        """One call per GEMM library (``mm_ways``) running just those GEMMs, operands made once:
        ``run_case`` times them in the same loop as the two layers, so that E_gemm's basis and
        our time are read under the same conditions."""
        rows, g, H, P = self.step_rows(), self.gates * self.hidden, self.hidden, self.state
        n, B, projected = sum(rows), max(self.step_rows()), P != H

        def new(*shape: int) -> Tensor:
            return torch.randn(*shape, dtype=dtype)

        x, w_ih, w_hh, w_hr = new(n, self.inputs), new(g, self.inputs), new(g, P), new(P, H)
        gates, dx, dw_ih = new(n, g), new(n, self.inputs), new(g, self.inputs)
        dw_hh, dw_hr = new(g, P), new(P, H)
        states, cells = new(n, P), new(n, H)
        h, step, r, d_step, d_r = new(B, P), new(B, g), new(B, H), new(B, P), new(B, H)
        # each step's operands, cut once (a slice in the timed loop would add its own cost)
        cut = [(h[:m], step[:m], r[:m], d_step[:m], d_r[:m]) for m in rows]

        def run(mm: Callable[[Tensor, Tensor, Tensor], object]) -> None:
            mm(x, w_ih.t(), gates)  # input projection, all steps
            for h_t, step_t, r_t, _, _ in cut:
                mm(h_t, w_hh.t(), step_t)  # gates_t += h_{t-1} W_hh^T
                if projected:
                    mm(r_t, w_hr.t(), h_t)  # h_t = r_t W_hr^T
            if train:
                for _, step_t, _, dh_t, dr_t in cut:
                    if projected:
                        mm(dh_t, w_hr, dr_t)  # dr = dh W_hr
                    mm(step_t, w_hh, dh_t)  # dh_{t-1} = da W_hh
                mm(gates, w_ih, dx)
                mm(gates.t(), x, dw_ih)
                mm(gates.t(), states, dw_hh)
                if projected:
                    mm(states.t(), cells, dw_hr)  # dW_hr = dh^T r

        return [lambda mm=mm: run(mm) for mm in mm_ways().values()]
