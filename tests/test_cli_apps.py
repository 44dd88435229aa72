"""`rnnlab train | eval | sample` as subprocesses on small data; resume after SIGKILL; torchrun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from tinydata import write_corpus, write_reviews, write_series

RNNLAB = [sys.executable, "-m", "rnnlab"]
TINY_LM = [
    "--task",
    "charlm",
    "--hidden",
    "32",
    "--embed",
    "8",
    "--batch-size",
    "8",
    "--bptt",
    "20",
    "--no-progress",
]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*RNNLAB, *args], capture_output=True, text=True)
    if check and proc.returncode:
        raise AssertionError(proc.stdout + proc.stderr)
    return proc


@pytest.mark.parametrize("command", ["train", "eval", "sample", "demo"])
def test_help_shows_examples(command):
    out = run(command, "--help").stdout
    assert "example" in out and "rnnlab" in out


def test_train_eval_sample_char_lm(tmp_path):
    data, out = write_corpus(tmp_path), tmp_path / "run"
    proc = run(
        "train",
        *TINY_LM,
        "--data",
        str(data),
        "--steps",
        "60",
        "--lr",
        "1e-2",
        "--out",
        str(out),
        "--prompt",
        "the ",
    )
    assert "validation loss" in proc.stdout and "--- sample" in proc.stdout
    ev = run("eval", str(out / "best.safetensors")).stdout
    assert "nats/char" in ev and "bits/char" in ev
    s1 = run(
        "sample", str(out / "best.safetensors"), "--prompt", "a dog", "--length", "40", "--seed", "1"
    ).stdout
    s2 = run(
        "sample", str(out / "best.safetensors"), "--prompt", "a dog", "--length", "40", "--seed", "1"
    ).stdout
    assert s1 == s2 and s1.startswith("a dog") and len(s1.rstrip("\n")) == 45


def test_classify_and_forecast_report_baselines(tmp_path):
    reviews = write_reviews(tmp_path)
    proc = run(
        "train",
        "--task",
        "classify",
        "--data",
        str(reviews),
        "--text-col",
        "text",
        "--label-col",
        "stars",
        "--epochs",
        "3",
        "--hidden",
        "16",
        "--min-freq",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path / "c"),
    )
    assert "majority class" in proc.stdout and "bag-of-words logistic regression" in proc.stdout
    rows = json.loads((tmp_path / "c" / "results.json").read_text())["test"]
    assert set(rows) == {"rnnlab LSTM", "majority class", "bag-of-words logistic regression"}
    series = write_series(tmp_path)
    proc = run(
        "train",
        "--task",
        "forecast",
        "--data",
        str(series),
        "--value-col",
        "y",
        "--window",
        "24",
        "--horizon",
        "6",
        "--test-size",
        "36",
        "--season",
        "12",
        "--arima",
        "2,0,0",
        "--epochs",
        "2",
        "--no-progress",
        "--out",
        str(tmp_path / "f"),
    )
    assert "naive" in proc.stdout and "ARIMA(2, 0, 0)" in proc.stdout
    ev = run("eval", str(tmp_path / "f" / "best.safetensors"), "--split", "test").stdout
    assert "seasonal naive (m=12)" in ev


def test_toml_config_with_command_line_override(tmp_path):
    data = write_corpus(tmp_path)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'task = "charlm"\ndata = "{data}"\n[model]\ncell = "gru"\nhidden = 24\n'
        f"[train]\nsteps = 5\nbatch-size = 4\nbptt = 10\nembed = 8\n"
    )
    run("train", "--config", str(cfg), "--hidden", "16", "--no-progress", "--out", str(tmp_path / "r"))
    w = load_file(str(tmp_path / "r" / "last.safetensors"))
    assert w["model.rnn.weight_hh_l0"].shape == (48, 16)  # GRU (3 gates) from the file, hidden from the CLI
    cfg.write_text("hiden = 3\n")
    proc = run("train", "--config", str(cfg), check=False)
    assert proc.returncode == 2 and "unknown ['hiden']" in proc.stderr


def test_clear_errors_for_missing_data_and_bad_checkpoints(tmp_path):
    proc = run("train", "--task", "charlm", "--data", str(tmp_path / "nope.txt"), check=False)
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    for cmd in (["eval", str(bad)], ["sample", str(bad)]):
        proc = run(*cmd, check=False)
        assert (
            proc.returncode == 2 and "truncated or corrupt" in proc.stderr and "Traceback" not in proc.stderr
        )


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_weights(tmp_path):
    data = write_corpus(tmp_path, 1500)
    args = [
        *TINY_LM,
        "--hidden",
        "96",
        "--data",
        str(data),
        "--steps",
        "800",
        "--ckpt-every",
        "20",
        "--eval-every",
        "100",
        "--dropout",
        "0.1",
        "--layers",
        "2",
        "--threads",
        "1",
    ]
    run("train", *args, "--out", str(tmp_path / "whole"))
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [*RNNLAB, "train", *args, "--out", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a few checkpoints exist, then kill hard mid-run
        if metrics.exists() and any(json.loads(x)["step"] >= 120 for x in metrics.read_text().splitlines()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be killed; make the run longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run("train", *args, "--out", str(killed), "--resume")
    a = load_file(str(tmp_path / "whole" / "last.safetensors"))
    b = load_file(str(killed / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["split"] == "train"] == list(range(20, 801, 20))


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None
    and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun not installed",
)
def test_torchrun_two_processes_match_one(tmp_path):
    data = write_corpus(tmp_path, 800)
    args = [
        "train",
        *TINY_LM,
        "--data",
        str(data),
        "--steps",
        "40",
        "--log-every",
        "5",
        "--eval-every",
        "20",
        "--threads",
        "1",
    ]
    run(*args, "--out", str(tmp_path / "one"))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    proc = subprocess.run(
        [
            torchrun,
            "--nproc_per_node=2",
            "--master_port=29531",
            "-m",
            "rnnlab",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    def curve(name):
        recs = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [(r["split"], r["step"], r["loss"]) for r in recs]

    one, two = curve("one"), curve("two")
    assert [r[:2] for r in one] == [r[:2] for r in two] and len(one) == 10
    for (_, _, a), (_, _, b) in zip(one, two):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-4)


def test_demo_prints_bits_per_char_a_sample_and_next_steps(tmp_path):
    data = write_corpus(tmp_path)
    proc = run("demo", *TINY_LM[2:], "--data", str(data), "--steps", "30", "--out", str(tmp_path / "demo"))
    assert "bits/char" in proc.stdout and "--- sample" in proc.stdout and "Next, try" in proc.stdout
    assert {"best.safetensors", "last.safetensors", "loss.png", "metrics.csv"} <= {
        p.name for p in (tmp_path / "demo").iterdir()
    }


def test_experiment_analyze_and_report_commands(tmp_path):
    runs = tmp_path / "runs"
    out = run(
        "experiment",
        "long-range",
        "--quick",
        "--lengths",
        "5",
        "--iters",
        "20",
        "--cells",
        "lstm,gru",
        "--out",
        str(runs / "long-range"),
    ).stdout
    assert "| adding | LSTM | 5 | 0 | mse |" in out
    out = run(
        "analyze", "gradients", "--steps", "8", "--train-iters", "20", "--out", str(runs / "gradients")
    ).stdout
    assert "RNN (tanh), radius 0.9" in out and (runs / "gradients" / "gradients.png").exists()
    lm = tmp_path / "lm"
    run("train", *TINY_LM, "--data", str(write_corpus(tmp_path)), "--steps", "20", "--out", str(lm))
    out = run(
        "analyze",
        "gates",
        str(lm / "best.safetensors"),
        "--chars",
        "300",
        "--unit",
        "5",
        "--out",
        str(runs / "gates"),
    ).stdout
    assert "forget f" in out and "tracks position in line" in out
    page = (runs / "gates" / "coloured.html").read_text()
    assert page.count('<div class="coloured">') == 4 and "c-unit 5 (chosen)" in page
    run("report", "--runs", str(runs), "--out", str(tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text()
    assert "Gradient flow through time" in page and "Gates of a trained character model" in page
    proc = run("analyze", "gates", check=False)
    assert proc.returncode == 2 and "checkpoint: expected a char-LM checkpoint" in proc.stderr
