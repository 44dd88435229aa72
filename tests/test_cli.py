"""The `rnnlab` command runs as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def test_help_shows_examples():
    out = subprocess.run(
        [sys.executable, "-m", "rnnlab", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "example" in out and "--steps" in out


@pytest.mark.slow
def test_demo_runs_and_writes_results(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnlab",
            "demo",
            "--steps",
            "5",
            "--iters",
            "150",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Test accuracy" in proc.stdout
    rows = json.loads((tmp_path / "demo_results.json").read_text())
    assert {r["cell"] for r in rows} == {"RNN (tanh)", "LSTM", "GRU"}
    assert all(
        r["accuracy"] > 0.5 for r in rows
    )  # T = 5 is easy: all three learn it (chance 0.125)


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
