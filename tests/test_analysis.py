"""Analyses against hand-computed cases: gradient flow, gate recording, saturation, units, report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import torch

import rnnlab
from rnnlab.analysis import gates as G
from rnnlab.analysis import gradients as grad
from rnnlab.analysis.report import build
from rnnlab.experiments.long_range import SeqModel, Spec, init_variant, run
from rnnlab.experiments.suite import long_range
from rnnlab.models import LanguageModel, ModelConfig


def test_state_gradients_match_the_chain_rule_by_hand():
    """1-unit ReLU RNN kept in its linear region: ∂L/∂h_t = ∂L/∂h_T · w^(T−t)."""
    model = SeqModel(Spec(task="adding", cell="rnn", steps=6), hidden=1)
    model.rnn = rnnlab.RNN(2, 1, nonlinearity="relu", batch_first=True)
    w, v, c = 0.7, 1.5, 0.1
    with torch.no_grad():
        model.rnn.weight_hh_l0.fill_(w)
        model.rnn.weight_ih_l0.copy_(torch.tensor([[1.0, 0.5]]))
        model.rnn.bias_ih_l0.fill_(0.2)
        model.rnn.bias_hh_l0.fill_(0.0)
        model.head.weight.fill_(v)
        model.head.bias.fill_(c)
    x = torch.rand(1, 6, 2)  # positive inputs keep every pre-activation > 0
    y = torch.tensor([0.3])
    norms = grad.state_gradients(model, x, y)
    h = torch.zeros(1)
    for t in range(6):
        h = torch.relu(x[0, t] @ torch.tensor([1.0, 0.5]) + 0.2 + w * h)
    dL_dhT = 2 * (v * h + c - y) * v
    expected = torch.tensor([abs(float(dL_dhT)) * w ** (5 - t) for t in range(6)])
    assert torch.allclose(norms, expected, rtol=1e-5)
    assert grad.ratios(norms.flip(0).tolist())["last"] == pytest.approx(w**5, rel=1e-4)


def test_spectral_radius_and_forget_bias_variants():
    rnn = SeqModel(Spec(task="adding", cell="rnn", steps=5, radius=1.5), 16).rnn
    assert float(torch.linalg.eigvals(rnn.weight_hh_l0.detach()).abs().max()) == pytest.approx(1.5, rel=1e-4)
    lstm = SeqModel(Spec(task="adding", cell="lstm", steps=5, forget_bias=1.0), 8).rnn
    total = lstm.bias_ih_l0 + lstm.bias_hh_l0
    assert torch.allclose(total[8:16], torch.ones(8)) and not torch.allclose(total[:8], torch.ones(8))
    init_variant(lstm, Spec(task="adding", cell="lstm", steps=5, forget_bias=None))  # None: untouched
    assert torch.allclose(lstm.bias_ih_l0 + lstm.bias_hh_l0, total)


@pytest.mark.parametrize(
    "cell,reset", [("lstm", "after"), ("gru", "after"), ("gru", "before"), ("rnn", "after")]
)
def test_recorded_gates_reproduce_the_layer(cell, reset):
    torch.manual_seed(0)
    lm = LanguageModel(
        ModelConfig(kind="lm", cell=cell, reset=reset, hidden=12, embed=5, vocab_size=9)
    ).eval()
    ids = torch.randint(0, 9, (40,))
    rec = G.record(lm, ids)
    out, _ = lm.rnn(lm.embed(ids)[None])
    assert torch.allclose(rec["h"], out[0], atol=1e-5)
    for name in G.GATES.get(cell, ()):
        assert rec[name].shape == (40, 12) and ((rec[name] > 0) & (rec[name] < 1)).all()


def test_saturation_fractions_by_hand():
    v = torch.tensor([[0.05, 0.5], [0.95, 0.5], [0.99, 0.02], [0.5, 0.01]])  # (T=4, H=2)
    s = G.saturation(v)
    assert s["left"] == [0.25, 0.5] and s["right"] == [0.5, 0.0]
    assert s["mean_left"] == pytest.approx(0.375) and s["mostly_right_units"] == 0


def test_text_features_and_unit_finding():
    text = "ROMEO.\nO [aside] she\nspeaks.\n"
    f = G.text_features(text)
    assert f["inside brackets"][text.index("a")] == 1 and f["inside brackets"][text.index("she")] == 0
    assert f["position in line"][text.index("O [")] == 0 and f["position in line"][2] == 2
    assert f["speaker-name line"][0] == 1 and f["speaker-name line"][text.index("she")] == 0
    acts = torch.randn(len(text), 5) * 0.01
    acts[:, 3] = f["inside brackets"] * 2 - 1  # unit 3 is a bracket detector
    assert G.find_units(acts, f)["inside brackets"] == {"unit": 3, "r": pytest.approx(1.0, abs=1e-5)}
    page = G.colour_html("a<b", torch.tensor([1.0, -0.5, 0.0]), "t")
    assert "&lt;" in page and "rgba(220,40,40,1.00)" in page and "rgba(40,90,220,0.50)" in page


def test_long_range_run_learns_a_short_adding_problem_and_writes_outputs(tmp_path):
    row = run(Spec(task="adding", cell="gru", steps=8, seed=0), iters=600, batch=64, hidden=32, lr=3e-3)
    assert row["value"] < 0.05 < row["baseline"]  # far below the 1/6 baseline at T = 8
    rows = long_range("quick", tmp_path, lengths=[5], iters=30, cells=["rnn", "lstm"], verbose=False)
    assert [r["label"] for r in rows] == ["RNN (tanh)", "LSTM"]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["meta"]["iters"] == 30 and len(res["rows"]) == 2
    assert "| adding | LSTM | 5 | 0 | mse |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "long_range.png").read_bytes()[:4] == b"\x89PNG"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_headless_chromium(tmp_path):
    runs = tmp_path / "runs"
    long_range("quick", runs / "long-range", lengths=[5], iters=20, cells=["rnn", "gru"], verbose=False)
    long_range(
        "quick", runs / "ablation-gru-reset", ablation="gru-reset", lengths=[5], iters=20, verbose=False
    )
    page = build(runs, tmp_path / "report.html")
    html = page.read_text()
    assert html.count("<img") == 2 and "Arjovsky" in html and "data:image/png;base64," in html
    browser = _chromium()
    if browser is None:
        pytest.skip(
            "no Chromium on this machine (.ci/run installs Debian's chromium); HTML checked without it"
        )
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'prof'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1)))
    assert attrs == {"figures": "2", "loaded": "2", "errors": "0"}, attrs


def test_report_without_results_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected result folders"):
        build(tmp_path, tmp_path / "r.html")
