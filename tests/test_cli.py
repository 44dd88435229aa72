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
    # both sides' share of the large SGEMM's rate, where the FLOPs are defined (not packed)
    dense = [c for c in cases if not c["packed"]]
    assert dense and all(c[m]["E_peak"] > 0 and c[m]["E_peak_torch"] > 0
                         for c in dense for m in ("train", "infer"))


def test_bench_forward_flops_sum_layers_and_directions():
    """BENCH.md's F = 2·B·G·H·(I+H) per step, per layer and direction; a second layer reads both
    directions' outputs (I = 2H). LSTM H=4, T=3, B=2: 2·(2·3·2·16·8) + 2·(2·3·2·16·12)."""
    from rnnlab.bench.cases import Case
    from rnnlab.bench.run import forward_flops

    case = Case(group="main", cell="lstm", steps=3, batch=2, hidden=4, layers=2, bidirectional=True)
    assert forward_flops(case) == 2 * (2 * 3 * 2 * 16 * 8) + 2 * (2 * 3 * 2 * 16 * 12)
    one = Case(group="main", cell="gru", steps=5, batch=1, hidden=3)
    assert forward_flops(one) == 2 * 5 * 1 * 9 * 6


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
