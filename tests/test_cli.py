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
