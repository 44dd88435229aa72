"""Target checks and the markdown tables that ``rnnlab bench`` writes into BENCHMARKS.md.

Only the part of BENCHMARKS.md between the ``bench:start``/``bench:end`` markers is rewritten;
the notes around it (design choices, measurements behind them) are kept.
"""

from __future__ import annotations

from pathlib import Path

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def _rows(cases: list[dict], mode: str, **match: object) -> list[tuple[dict, dict]]:
    """(case, its ``mode`` entry) for the cases matching every ``match`` (a value or a test)."""
    return [(c, c[mode]) for c in cases
            if all(c.get(k) == v if not callable(v) else v(c.get(k)) for k, v in match.items())]


def _worst(need: float, rows: list[tuple[dict, dict]]) -> dict:
    """Where a min-ratio target over FLOP-bound rows (B ≥ 8) stands against the roofline: the
    row that set its minimum, our E_peak there, and the E_peak the needed ratio asks for given
    torch's time in the same run (need × torch's E_peak). Above ~1 it asks for more than the
    2048³ SGEMM rate, the fastest large GEMM this process measured."""
    case, entry = min(rows, key=lambda r: r[1]["ratio"])
    if case.get("batch", 0) < 8 or "E_peak_torch" not in entry:
        return {}
    return {"worst": case["case"], "e_peak": entry["E_peak"], "e_peak_needed": need * entry["E_peak_torch"]}


def targets(results: dict) -> list[dict]:
    """Each target of the kernels issue with its measured value (min over the cases it covers)."""
    rows: list[dict] = []
    for threads, run in results["runs"].items():
        cases, stream = run["cases"], run["streaming"]

        def add(name: str, need: float, values: list[float], what: str = "min ratio",
                threads: str = threads) -> None:
            if values:
                got = min(values)
                rows.append({"threads": int(threads), "target": name, "need": need, "got": got,
                             "what": what, "met": got >= need})

        def add_rows(name: str, need: float, mode: str, cases: list[dict] = cases,
                     **match: object) -> None:
            found = _rows(cases, mode, **match)
            add(name, need, [e["ratio"] for _, e in found])
            if found:
                rows[-1].update(_worst(need, found))

        big = lambda b: b >= 8  # noqa: E731
        main = {"group": "main"}
        for cell, need_b, need_1 in (("gru", 1.5, 8.0), ("rnn", 1.3, 5.0)):
            add_rows(f"{cell.upper()} train B≥8", need_b, "train", cell=cell, batch=big, **main)
            add_rows(f"{cell.upper()} infer B≥8", need_b, "infer", cell=cell, batch=big, **main)
            add_rows(f"{cell.upper()} train B=1", need_1, "train", cell=cell, batch=1, **main)
        add_rows("LSTM train B≥8", 1.0, "train", cell="lstm", batch=big, **main)
        add_rows("LSTM infer B≥8", 1.0, "infer", cell="lstm", batch=big, **main)
        small = {"cell": "lstm", "batch": 1, "hidden": lambda h: h <= 128, **main}
        add_rows("LSTM train B=1 H≤128", 1.5, "train", **small)
        add_rows("LSTM infer B=1 H≤128", 1.5, "infer", **small)
        for mode in ("train", "infer"):
            add_rows(f"LSTM packed {mode}", 2.0, mode, group="packed", cell="lstm")
            add_rows(f"LSTM proj_size {mode}", 2.0, mode, group="proj")
            add_rows(f"bidirectional L2 H256 B32 {mode}", 1.5, mode, group="bidir")
        # (rows from before the cell API was timed carry no "api": they are Layer.step's)
        add("streaming B=1, rnnlab.*Cell vs *Cell", 5.0,
            [s["ratio"] for s in stream if s.get("api") == "cell"])
        add("streaming B=1, Layer.step vs *Cell", 5.0,
            [s["ratio"] for s in stream if s.get("api", "step") == "step"])
        everything = [c[m]["ratio"] for c in cases for m in ("train", "infer")]
        add("nowhere below", 0.95, everything)
        egemm = [c["train"]["E_gemm"] for c in cases if c["group"] == "main" and c["batch"] == 32
                 and c["hidden"] == 256 and "E_gemm" in c["train"]]
        add("E_gemm train B=32 H=256", 0.8, egemm, "min E_gemm")
        mem = [c["mem_torch_mb"] / c["mem_ours_mb"] for c in cases if c.get("mem_ours_mb")]
        add("peak train memory ≤ torch", 1.0, mem, "min torch/ours")
    return rows


def _case_table(run: dict, roofline: bool) -> list[str]:
    head = "| case | train torch ms | train ours ms | train × | infer torch ms | infer ours ms | infer × |"
    sep = "|---|---|---|---|---|---|---|"
    if roofline:
        head += (" E_gemm (train) | E_peak (train) | E_peak torch (train) | E_gemm (infer) |"
                 " E_peak (infer) | E_peak torch (infer) | mem torch MB | mem ours MB |")
        sep += "---|---|---|---|---|---|---|---|"
    lines = [head, sep]
    for c in run["cases"]:
        tr, inf = c["train"], c["infer"]
        line = (f"| {c['case']} | {tr['torch_ms']:.2f} | {tr['ours_ms']:.2f} | **{tr['ratio']:.2f}** | "
                f"{inf['torch_ms']:.2f} | {inf['ours_ms']:.2f} | **{inf['ratio']:.2f}** |")
        if roofline:
            f = lambda d, k: f"{d[k]:.2f}" if k in d else "-"  # noqa: E731
            mem = (f"{c['mem_torch_mb']:.1f} | {c['mem_ours_mb']:.1f}" if "mem_ours_mb" in c
                   else "- | -")
            line += (f" {f(tr, 'E_gemm')} | {f(tr, 'E_peak')} | {f(tr, 'E_peak_torch')} |"
                     f" {f(inf, 'E_gemm')} | {f(inf, 'E_peak')} | {f(inf, 'E_peak_torch')} | {mem} |")
        lines.append(line)
    lines += ["", "Streaming: 100 steps called one by one from Python, no grad, the inputs x_t prepared "
              "as a list beforehand (the time is the step calls, Python call included); each of "
              "rnnlab's two single-step APIs is timed in its own pairing with torch's cell.", "",
              "| streaming (B=1, per step) | rnnlab API | torch.nn.*Cell µs | rnnlab µs | × |",
              "|---|---|---|---|---|"]
    for s in run["streaming"]:
        api = {"cell": "rnnlab.*Cell", "step": "Layer.step"}[s.get("api", "step")]
        lines.append(f"| {s['cell'].upper()} H={s['hidden']} | {api} | {s['torch_us']:.1f} | "
                     f"{s['ours_us']:.1f} | **{s['ratio']:.2f}** |")
    return lines


def _pass_values(results: dict) -> dict[tuple[int, str], str]:
    """(threads, target) → each pass's value, "a / b / c", where the run made several passes."""
    out: dict[tuple[int, str], list[str]] = {}
    for run in results["runs"].values():
        for pass_targets in run.get("pass_targets", []):
            for t in pass_targets:
                out.setdefault((t["threads"], t["target"]), []).append(f"{t['got']:.2f}")
    return {k: " / ".join(v) for k, v in out.items()}


def section(results: dict) -> str:
    meta = results["meta"]
    passes = meta.get("passes", 1)
    how = ("medians of interleaved repetitions" if passes == 1 else
           f"medians of interleaved repetitions; the grid ran {passes} times over, and each row "
           "is the pass with the median ratio (its own times), per mode")
    each = _pass_values(results)
    out = [START, "", f"Machine: {meta['cpu']}; torch {meta['torch']}; Python {meta['python']}; "
           f"rnnlab {meta['rnnlab']} (backend `{meta['backend']}`); {meta['date']}.",
           f"Command: `{meta['command']}`. Ratios are torch_time / rnnlab_time in the same process, "
           f"{how} (> 1 means rnnlab is faster).", "", "### Targets", ""]
    out += ["Roofline of a target over rows of B ≥ 8: the row that set its minimum, our E_peak "
            "there, and the E_peak the needed ratio asks for at torch's time in the same pass "
            "(needed × torch's E_peak); above ~1 it asks for more than the 2048³ SGEMM rate.", ""]
    spread_head = " each pass |" if each else ""
    out += [f"| threads | target | needed | measured |{spread_head} met | worst row: E_peak ours / "
            "needed |", "|---|---|---|---|" + ("---|" if each else "") + "---|---|"]
    for t in results["targets"]:
        spread = f" {each.get((t['threads'], t['target']), '-')} |" if each else ""
        roof = (f"{t['worst']}: {t['e_peak']:.2f} / {t['e_peak_needed']:.2f}" if "worst" in t else "-")
        # (three decimals where two would round a miss up to the line)
        got = f"{t['got']:.3f}" if not t["met"] and round(t["got"], 2) >= t["need"] else f"{t['got']:.2f}"
        out.append(f"| {t['threads']} | {t['target']} ({t['what']}) | {t['need']:.2f} | "
                   f"{got} |{spread} {'yes' if t['met'] else '**no**'} | {roof} |")
    for i, (threads, run) in enumerate(results["runs"].items()):
        libs = run.get("sgemm_by_library", {})
        rates = f" ({', '.join(f'{k} {v / 1e9:.1f}' for k, v in libs.items())})" if libs else ""
        out += ["", f"### {threads} thread(s) — SGEMM 2048³ (the best library, better of before and "
                f"after the cases; the E_peak basis): {run['sgemm_flops'] / 1e9:.1f} GFLOP/s{rates}",
                ""]
        out += _case_table(run, roofline=i == 0)
    out += ["", END]
    return "\n".join(out)


def markdown(results: dict, path: str = "BENCHMARKS.md") -> str:
    """BENCHMARKS.md with its generated section replaced (appended when it has none)."""
    old = Path(path).read_text() if Path(path).exists() else "# Benchmarks\n"
    new = section(results)
    if START in old and END in old:
        return old[: old.index(START)] + new + old[old.index(END) + len(END):]
    return old.rstrip() + "\n\n## `rnnlab bench` results\n\n" + new + "\n"
