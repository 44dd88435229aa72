"""The `rnnlab` command runs as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_quick_runs_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "rnnlab", "bench", "--quick", "--threads", "1", "--reps", "1",
         "--json", str(out), "--no-markdown"],
        capture_output=True, text=True, check=True,
    )
    assert "train" in proc.stdout and "stream" in proc.stdout
    results = json.loads(out.read_text())
    cases = results["runs"]["1"]["cases"]
    assert {c["cell"] for c in cases} == {"rnn", "lstm", "gru"}
    assert all(c["train"]["ratio"] > 0 and c["infer"]["ratio"] > 0 for c in cases)
    assert results["targets"], "the targets table is filled"
    # both sides' share of the large SGEMM's rate, packed cases included (their steps' rows)
    assert any(c["packed"] for c in cases)
    assert all(c[m]["E_peak"] > 0 and c[m]["E_peak_torch"] > 0 and c[m]["E_gemm"] > 0
               for c in cases for m in ("train", "infer"))


def test_bench_forward_flops_sum_layers_and_directions():
    """BENCH.md's F = 2·B·G·H·(I+H) per step, per layer and direction; a second layer reads both
    directions' outputs (I = 2H). LSTM H=4, T=3, B=2: 2·(2·3·2·16·8) + 2·(2·3·2·16·12)."""
    from rnnlab.bench.cases import Case
    from rnnlab.bench.run import forward_flops

    case = Case(group="main", cell="lstm", steps=3, batch=2, hidden=4, layers=2, bidirectional=True)
    assert forward_flops(case) == 2 * (2 * 3 * 2 * 16 * 8) + 2 * (2 * 3 * 2 * 16 * 12)
    one = Case(group="main", cell="gru", steps=5, batch=1, hidden=3)
    assert forward_flops(one) == 2 * 5 * 1 * 9 * 6


def test_bench_flops_and_gemm_reference_cover_packed_and_projected_cases():
    """A packed case counts the rows its steps run (its batch sizes), a projected LSTM adds W_hr's
    2·B·H·P a step; both get a GEMM reference (E_gemm) like the dense cases."""
    from rnnlab.bench.cases import Case, packed_lengths, step_rows
    from rnnlab.bench.run import _shapes, forward_flops

    packed = Case(group="packed", cell="lstm", steps=6, batch=4, hidden=3, packed=True)
    rows = step_rows(packed)
    lengths = packed_lengths(packed)
    assert rows == tuple(int((lengths > t).sum()) for t in range(6)) and rows[0] == 4
    assert sum(rows) == int(lengths.sum())
    assert forward_flops(packed) == 2 * sum(rows) * 12 * (3 + 3)
    proj = Case(group="proj", cell="lstm", steps=5, batch=2, hidden=4, proj=3)
    assert forward_flops(proj) == 2 * 5 * 2 * 16 * (4 + 3) + 2 * 5 * 2 * 4 * 3
    for case in (packed, proj):
        for train in (False, True):
            assert _shapes(case, case.hidden).reference_time(train) > 0


def test_bench_only_runs_the_matching_cases_and_rejects_unknown_ones(tmp_path):
    out = tmp_path / "bench.json"
    base = [sys.executable, "-m", "rnnlab", "bench", "--quick", "--threads", "1", "--reps", "1",
            "--json", str(out)]
    proc = subprocess.run(base + ["--only", "gru T=20 B=8"], capture_output=True, text=True, check=True,
                          cwd=tmp_path)
    names = [c["case"] for c in json.loads(out.read_text())["runs"]["1"]["cases"]]
    assert names == ["GRU T=20 B=8 H=32", "GRU T=20 B=8 H=32 reset=before"], names
    assert "stream" not in proc.stdout  # no pattern asked for the streaming rows
    assert not (tmp_path / "BENCHMARKS.md").exists()  # a partial run leaves the table alone
    bad = subprocess.run(base + ["--only", "LSTM T=7"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode != 0
    assert "--only: expected a part of a case name" in bad.stderr and "'LSTM T=7'" in bad.stderr


def test_bench_passes_keep_each_rows_median_pass_and_the_spread(tmp_path):
    out = tmp_path / "bench.json"
    base = [sys.executable, "-m", "rnnlab", "bench", "--quick", "--threads", "1", "--reps", "1",
            "--json", str(out), "--only", "RNN T=20 B=1"]
    subprocess.run(base + ["--passes", "2"], capture_output=True, text=True, check=True, cwd=tmp_path)
    results = json.loads(out.read_text())
    assert results["meta"]["passes"] == 2 and "--passes 2" in results["meta"]["command"]
    run = results["runs"]["1"]
    (row,) = run["cases"]
    for mode in ("train", "infer"):
        entry = row[mode]
        assert len(entry["pass_ratios"]) == 2
        assert entry["ratio"] == min(entry["pass_ratios"])  # the lower middle of two
        own = entry["torch_ms"] / entry["ours_ms"]  # that pass's own times
        assert abs(entry["ratio"] - own) < 1e-9 * own
    assert len(run["pass_targets"]) == 2
    assert all(t["what"] == "min ratio" for p in run["pass_targets"] for t in p)
    bad = subprocess.run(base + ["--passes", "0"], capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "passes: expected a positive int, got 0" in bad.stderr


def test_median_pass_takes_the_median_ratio_pass_with_its_times_and_first_pass_extras():
    """Its times, ratio and (where it timed one) GEMM basis; FLOPs and memory from pass 1."""
    from rnnlab.bench.run import median_pass, rooflines

    def row(t_peer: float, t_ours: float, **extra: float) -> dict:
        entry = {"torch_ms": t_peer, "ours_ms": t_ours, "ratio": t_peer / t_ours, **extra}
        return {"case": "c", "train": entry, "infer": dict(entry, ratio=t_peer / t_ours)}

    first = row(10.0, 5.0, flop=4e9, gemm_ref_ms=2.0)  # ratio 2.0, measured the roofline basis
    first["mem_ours_mb"] = 1.5
    passes = [[first], [row(12.0, 4.0)], [row(9.0, 3.6)]]  # ratios 2.0, 3.0, 2.5
    (merged,) = median_pass(passes)
    tr = merged["train"]
    assert (tr["torch_ms"], tr["ours_ms"], tr["ratio"]) == (9.0, 3.6, 2.5)
    assert tr["pass_ratios"] == [2.0, 3.0, 2.5] and merged["mem_ours_mb"] == 1.5
    rooflines([merged], peak=1e12)
    assert abs(tr["E_gemm"] - 2.0 / 3.6) < 1e-12  # the basis over the chosen pass's time
    assert abs(tr["E_peak"] - 4e9 / 3.6e-3 / 1e12) < 1e-12
    assert abs(tr["E_peak_torch"] - 4e9 / 9e-3 / 1e12) < 1e-12
    # each pass with its own GEMM basis (timed in the same loop): the chosen pass's
    passes = [[row(10.0, 5.0, gemm_ref_ms=2.0)], [row(12.0, 4.0, gemm_ref_ms=3.0)],
              [row(9.0, 3.6, gemm_ref_ms=3.3)]]
    (merged,) = median_pass(passes)
    rooflines([merged], peak=1e12)
    assert abs(merged["train"]["E_gemm"] - 3.3 / 3.6) < 1e-12
    # flat rows (streaming), an even count: the lower middle
    flat = [[{"cell": "rnn", "torch_us": t, "ours_us": 1.0, "ratio": t}] for t in (4.0, 6.0, 5.0, 7.0)]
    (s,) = median_pass(flat, modes=())
    assert (s["ratio"], s["torch_us"], s["pass_ratios"]) == (5.0, 5.0, [4.0, 6.0, 5.0, 7.0])


def test_targets_name_the_row_that_set_the_minimum_and_the_e_peak_it_would_need():
    """A B ≥ 8 target carries its worst row, our E_peak there and need × torch's E_peak; a B = 1
    target, not FLOP-bound, carries none; the table shows both."""
    from rnnlab.bench.report import section, targets

    def case(batch: int, ratio: float, e_peak: float, e_torch: float) -> dict:
        entry = {"torch_ms": ratio, "ours_ms": 1.0, "ratio": ratio, "E_peak": e_peak, "E_peak_torch": e_torch}
        return {"case": f"GRU B={batch}", "group": "main", "cell": "gru", "batch": batch, "hidden": 512,
                "train": dict(entry), "infer": dict(entry)}

    cases = [case(8, 2.4, 0.88, 0.36), case(64, 1.47, 0.98, 0.66), case(1, 6.0, 0.3, 0.05)]
    results = {"meta": {"cpu": "x", "torch": "t", "python": "p", "rnnlab": "r", "backend": "fused",
                        "date": "d", "command": "c"},
               "runs": {"2": {"cases": cases, "streaming": [], "sgemm_flops": 2e11}}}
    by_name = {t["target"]: t for t in targets(results)}
    infer = by_name["GRU infer B≥8"]
    assert (infer["got"], infer["met"], infer["worst"]) == (1.47, False, "GRU B=64")
    assert infer["e_peak"] == 0.98 and abs(infer["e_peak_needed"] - 1.5 * 0.66) < 1e-12
    assert "worst" not in by_name["GRU train B=1"] and by_name["GRU train B=1"]["got"] == 6.0
    results["targets"] = list(by_name.values())
    table = section(results)
    assert "| GRU B=64: 0.98 / 0.99 |" in table and "| yes | - |" in table
    # a miss that two decimals would round up to the line shows three
    results["targets"][0] = dict(results["targets"][0], got=1.496, met=False)
    assert "| 1.50 | 1.496 |" in section(results)
