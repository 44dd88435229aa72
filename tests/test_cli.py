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
