"""``rnnlab bench``: run the grid, print a table, write JSON and the BENCHMARKS.md tables."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

import rnnlab
from rnnlab import kernels

from .cases import GATES, Case, build, grid, step_rows, workload
from .measure import GemmShapes, interleaved, peak_bytes, sgemm_flops
from .report import markdown, targets


def cpu_model() -> str:
    path = Path("/proc/cpuinfo")
    if path.exists():
        for line in path.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _shapes(case: Case, inputs: int) -> GemmShapes:
    return GemmShapes(case.steps, case.batch, inputs, case.hidden, GATES[case.cell],
                      case.proj or case.hidden, step_rows(case) if case.packed else ())


def forward_flops(case: Case) -> float:
    """FLOPs of one forward (BENCH.md's F, summed over layers and directions; the grid's I = H,
    and a layer above the first reads both directions' outputs)."""
    d = 2 if case.bidirectional else 1
    width = case.proj or case.hidden
    return sum(d * _shapes(case, case.hidden if layer == 0 else d * width).flops_forward()
               for layer in range(case.layers))


def run_case(case: Case, threads: int, reps: int, roofline: bool, gemm_ref: bool = False) -> dict:
    """One case, train and infer, ours against torch's in the same loop. With ``roofline`` also
    the FLOPs of a call (``rooflines`` turns them into E_peak) and both sides' peak training
    memory; with ``gemm_ref`` (or ``roofline``) the layer's bare GEMMs timed in that same loop,
    E_gemm's basis (one-layer, one-direction cases)."""
    torch.set_num_threads(threads)
    ours, peer, make = build(case)
    row: dict = {"case": case.name, "group": case.group, **asdict(case), "threads": threads}
    with_ref = (roofline or gemm_ref) and case.layers == 1 and not case.bidirectional
    for mode in ("train", "infer"):
        train = mode == "train"
        # the GEMM reference alternates with the two layers: timed apart (session 22 and before,
        # once per run) it read a machine phase other than our time's, E_gemm 0.77–0.97 for one
        # case across runs
        refs = _shapes(case, case.hidden).reference_runs(train) if with_ref else []
        times = interleaved([workload(peer, make, train), workload(ours, make, train), *refs],
                            reps=reps)
        t_peer, t_ours = times[:2]
        entry = {"torch_ms": t_peer * 1e3, "ours_ms": t_ours * 1e3, "ratio": t_peer / t_ours}
        if roofline:
            # E_peak of both sides: where both run near the large SGEMM's rate, the ratio cannot
            # grow much (FLOP-bound), whatever either kernel does
            entry["flop"] = forward_flops(case) * (3 if train else 1)
        if refs:
            entry["gemm_ref_ms"] = min(times[2:]) * 1e3
        row[mode] = entry
    if roofline:
        row["mem_torch_mb"] = peak_bytes(workload(peer, make, True)) / 2**20
        kernels.empty_cache()  # so that our recycled workspaces are allocated, and counted, inside
        row["mem_ours_mb"] = peak_bytes(workload(ours, make, True)) / 2**20
    return row


def rooflines(rows: list[dict], peak: float) -> None:
    """Achieved FLOP/s, E_peak (÷ the large SGEMM's rate ``peak``) of both sides and E_gemm (the
    bare GEMMs' time ÷ ours), from each entry's own times, where ``run_case`` measured the basis."""
    for row in rows:
        for mode in ("train", "infer"):
            entry = row[mode]
            t_ours, t_peer = entry["ours_ms"] / 1e3, entry["torch_ms"] / 1e3
            if "flop" in entry:
                entry["flops_ours"], entry["flops_torch"] = entry["flop"] / t_ours, entry["flop"] / t_peer
                entry["E_peak"] = entry["flops_ours"] / peak
                entry["E_peak_torch"] = entry["flops_torch"] / peak
            if "gemm_ref_ms" in entry:
                entry["E_gemm"] = entry["gemm_ref_ms"] / entry["ours_ms"]


_TIMES = ("torch_ms", "ours_ms", "torch_us", "ours_us", "gemm_ref_ms")


def _median_entry(entries: list[dict]) -> dict:
    """The first entry (its extras: FLOPs) with the times and ratio of the entry whose ratio is the
    median (the lower middle one for an even count; its own GEMM basis where it timed one), and
    every entry's ratio."""
    ratios = [e["ratio"] for e in entries]
    pick = entries[ratios.index(statistics.median_low(ratios))]
    merged = {**entries[0], **{k: pick[k] for k in _TIMES if k in pick}, "ratio": pick["ratio"]}
    if len(entries) > 1:
        merged["pass_ratios"] = ratios
    return merged


def median_pass(passes: list[list[dict]], modes: tuple[str, ...] = ("train", "infer")) -> list[dict]:
    """Rows measured in several passes over the grid → one row each, per mode the median pass's
    times and ratio (``_median_entry``); the first pass's memory stays. ``modes`` ``()``: flat
    rows (streaming), each its own entry."""
    out = []
    for rows in zip(*passes, strict=True):
        if not modes:
            out.append(_median_entry(list(rows)))
            continue
        row = dict(rows[0])
        for mode in modes:
            row[mode] = _median_entry([r[mode] for r in rows])
        out.append(row)
    return out


def _stream_pair(cell: str, hidden: int, api: str, reps: int, steps: int = 100) -> tuple[float, float]:
    """Seconds per step: torch.nn.*Cell called per step vs rnnlab's (no_grad, B=1), ``api`` "cell"
    (rnnlab.*Cell, like for like) or "step" (``Layer.step`` of a one-layer RNN/LSTM/GRU)."""
    peer = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell](hidden, hidden)
    xs = list(torch.randn(steps, 1, hidden).unbind(0))  # prepared: the loops time the steps only
    if api == "cell":
        ours = {"rnn": rnnlab.RNNCell, "lstm": rnnlab.LSTMCell, "gru": rnnlab.GRUCell}[cell](hidden, hidden)
        ours.load_state_dict(peer.state_dict())
    else:
        ours = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}[cell](hidden, hidden)
        ours.load_state_dict({f"{k}_l0": v for k, v in peer.state_dict().items()})

    def run_peer() -> None:
        with torch.no_grad():
            state = None
            for x_t in xs:
                state = peer(x_t, state)

    def run_cell() -> None:
        with torch.no_grad():
            state = None
            for x_t in xs:
                state = ours(x_t, state)

    def run_step() -> None:
        with torch.no_grad():
            state = None
            for x_t in xs:
                _, state = ours.step(x_t, state)

    t_peer, t_ours = interleaved([run_peer, run_cell if api == "cell" else run_step], reps=reps)
    return t_peer / steps, t_ours / steps


STREAM_APIS = ("cell", "step")
_API_NAMES = {"cell": "rnnlab.*Cell", "step": "Layer.step"}


def streaming(threads: int, reps: int) -> list[dict]:
    """Per-step latency at B = 1, H ∈ {64, 256}, for the three cells, each of rnnlab's two
    single-step APIs in its own pairing with torch's cell (each of ours right after torch's)."""
    torch.set_num_threads(threads)
    rows = []
    for cell in GATES:
        for hidden in (64, 256):
            for api in STREAM_APIS:
                t_peer, t_ours = _stream_pair(cell, hidden, api, reps)
                rows.append({"cell": cell, "hidden": hidden, "api": api, "threads": threads,
                             "torch_us": t_peer * 1e6, "ours_us": t_ours * 1e6,
                             "ratio": t_peer / t_ours})
    return rows


def select(cases: list[Case], only: str | None) -> tuple[list[Case], bool]:
    """The cases whose name contains one of ``only``'s comma-separated patterns (any case), and
    whether the streaming rows run (a pattern in "stream"); everything when ``only`` is None."""
    if only is None:
        return cases, True
    patterns = [p.strip().lower() for p in only.split(",") if p.strip()]
    chosen = [c for c in cases if any(p in c.name.lower() for p in patterns)]
    stream = any(p in "stream" for p in patterns)
    if not chosen and not stream:
        raise ValueError(f"--only: expected a part of a case name such as {cases[0].name!r} or "
                         f"'stream', got {only!r}")
    return chosen, stream


def _progress(case: str, row: dict) -> None:
    tr, inf = row["train"], row["infer"]
    eg = f"{tr['E_gemm']:.2f}" if "E_gemm" in tr else "-"
    ep = f"{tr['flops_ours'] / 1e9:.0f}" if "flops_ours" in tr else "-"
    mem = (f"{row['mem_ours_mb'] / max(row['mem_torch_mb'], 1e-9):.2f}"
           if "mem_ours_mb" in row else "-")
    print(f"{case:<44} {tr['ratio']:>8.2f} {inf['ratio']:>8.2f} {eg:>7} {ep:>7} {mem:>8}", flush=True)


def main(quick: bool = False, threads_list: tuple[int, ...] = (2, 1), reps: int = 7,
         out_json: str = "bench_results.json", out_md: str | None = "BENCHMARKS.md",
         command: str = "rnnlab bench", only: str | None = None, passes: int = 1) -> dict:
    """The grid (or the ``only`` cases) at each thread count, ``passes`` times over: the noise
    of a shared machine comes in phases of seconds to minutes, so a ratio read once can land on
    either side of its line; with several passes each row is its median pass (``median_pass``)."""
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes: expected a positive int, got {passes!r}")
    cases, with_stream = select(grid(quick), only)
    if only is not None:
        out_md = None  # a partial run does not replace the table
    meta = {
        "cpu": cpu_model(), "torch": torch.__version__, "rnnlab": rnnlab.__version__,
        "backend": kernels.backend(), "python": platform.python_version(),
        "command": command, "date": time.strftime("%Y-%m-%d"), "passes": passes,
    }
    print(f"{meta['cpu']} | torch {meta['torch']} | rnnlab backend: {meta['backend']}")
    results: dict = {"meta": meta, "runs": {}}
    for threads in threads_list:
        by_library = sgemm_flops(threads)
        peak = max(by_library.values())
        rates = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in by_library.items())
        print(f"\n== {threads} thread(s); SGEMM 2048³ peak {peak / 1e9:.1f} GFLOP/s ({rates}) ==")
        all_rows: list[list[dict]] = []
        all_stream: list[list[dict]] = []
        for p in range(passes):
            if passes > 1:
                print(f"-- pass {p + 1} of {passes}")
            print(f"{'case':<44} {'train ×':>8} {'infer ×':>8} {'E_gemm':>7} {'GFLOP/s':>7} {'mem o/t':>8}")
            rows = []
            # (FLOPs and memory once: first thread count, first pass; the GEMM basis in each pass
            # of the first thread count, in the same loop as the case)
            for case in cases:
                first = threads == threads_list[0]
                rows.append(run_case(case, threads, reps, roofline=first and p == 0, gemm_ref=first))
                rooflines(rows[-1:], peak)
                _progress(case.name, rows[-1])
            stream = streaming(threads, reps) if with_stream else []
            for s in stream:
                print(f"stream {s['cell'].upper()} H={s['hidden']} ({_API_NAMES[s['api']]}): torch "
                      f"{s['torch_us']:.1f} µs, ours {s['ours_us']:.1f} µs per step = {s['ratio']:.2f}×",
                      flush=True)
            all_rows.append(rows)
            all_stream.append(stream)
        # the SGEMM again after the cases: this machine's rate drifts (seen 104–217 GFLOP/s on two
        # threads between runs), and E_peak takes the better of the two, per library
        for name, rate in sgemm_flops(threads).items():
            by_library[name] = max(by_library[name], rate)
        peak = max(by_library.values())
        rows = median_pass(all_rows)
        rooflines(rows, peak)
        run = {"sgemm_flops": peak, "sgemm_by_library": by_library, "cases": rows,
               "streaming": median_pass(all_stream, modes=())}
        if passes > 1:  # each pass's own value of the ratio targets, for the spread
            run["pass_targets"] = [
                [t for t in targets({"runs": {str(threads): {"cases": r, "streaming": s}}})
                 if t["what"] == "min ratio"]
                for r, s in zip(all_rows, all_stream, strict=True)
            ]
        results["runs"][str(threads)] = run
    results["targets"] = targets(results)
    Path(out_json).write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out_json}")
    if out_md:
        Path(out_md).write_text(markdown(results))
        print(f"wrote {out_md}")
    return results


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
