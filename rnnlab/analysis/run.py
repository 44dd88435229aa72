"""`rnnlab analyze gradients | gates`: run an analysis, save JSON + figures for the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from . import gates as G
from . import gradients as grad


def gradients(out: str | Path, steps: int = 100, train_iters: int = 5000, hidden: int = 64) -> dict[str, Any]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = grad.measure(steps=steps, train_iters=train_iters, hidden=hidden)
    (out / "gradients.json").write_text(json.dumps(result))
    grad.plot(result, str(out / "gradients.png"))
    print(f"‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ at lag {steps - 1} [smallest, largest over all lags], T = {steps}:")
    for label, case in result["cases"].items():
        a, b = grad.ratios(case["init"]), grad.ratios(case["trained"])
        print(
            f"  {label:24s} init {a['last']:9.2g} [{a['min']:.2g}, {a['max']:.2g}]  trained {b['last']:9.2g} "
            f"[{b['min']:.2g}, {b['max']:.2g}]  (adding MSE {case['trained_mse']:.4f} after "
            f"{case['train_iters']} steps)"
        )
    print(f"wrote {out}/gradients.json, gradients.png")
    return result


def _saturation_plot(stats: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stats), figsize=(3.6 * len(stats), 3.6), squeeze=False)
    for ax, (name, s) in zip(axes[0], stats.items()):
        ax.scatter(s["left"], s["right"], s=8, alpha=0.6)
        ax.plot([0, 1], [1, 0], "k:", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("fraction left-saturated (< 0.1)")
        ax.set_title(name)
    axes[0][0].set_ylabel("fraction right-saturated (> 0.9)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _histogram(values: dict[str, torch.Tensor], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for name, v in values.items():
        ax.hist(v.flatten().tolist(), bins=50, range=(0, 1), histtype="step", density=True, label=name)
    ax.set_xlabel("gate activation")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title("Gate activation distributions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gates(
    checkpoint: str, out: str | Path, chars: int = 3000, data: str | None = None, unit: int | None = None
) -> dict[str, Any]:
    """Gate saturation and interpretable units of a trained char-LM over its validation text."""
    from ..commands import load_model
    from ..models import LanguageModel
    from ..tasks import LanguageModelTask, task_from_json

    model, ck = load_model(checkpoint)
    if not isinstance(model, LanguageModel) or model.cfg.cell == "rnn":
        raise ValueError(
            f"checkpoint: expected an LSTM or GRU language model, got {ck.model['kind']!r} "
            f"{ck.model['cell']!r} ({checkpoint})"
        )
    task = task_from_json(ck.task, data)
    assert isinstance(task, LanguageModelTask)
    ids = task.val_ids[:chars]
    text = task.vocab.decode(ids)
    rec = G.record(model, ids)
    names = G.GATES[model.cfg.cell]
    stats = {n: G.saturation(rec[n]) for n in names}
    state = "c" if "c" in rec else "h"
    acts = rec[state].tanh() if state == "c" else rec[state]
    feats = G.text_features(text) if task.level == "char" else {}
    units = G.find_units(acts, feats) if feats else {}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    label = f"{model.cfg.cell.upper()} {model.cfg.layers}x{model.cfg.hidden}"
    _saturation_plot(stats, out / "saturation.png", f"Gate saturation per unit ({label}, {len(ids)} chars)")
    _histogram({n: rec[n] for n in names}, out / "gate_hist.png")
    pages = []
    for feat, u in units.items():
        shown = "tanh(c)" if state == "c" else "h"
        title = f"{state}-unit {u['unit']} ({shown}; tracks {feat}, r = {u['r']:+.2f})"
        pages.append(G.colour_html(text[:1500], acts[:1500, u["unit"]], title))
    if unit is not None:  # a unit the user chose
        if not 0 <= unit < acts.shape[1]:
            raise ValueError(f"unit: expected 0 <= unit < {acts.shape[1]} (hidden units), got {unit}")
        pages.insert(0, G.colour_html(text[:1500], acts[:1500, unit], f"{state}-unit {unit} (chosen)"))
    (out / "coloured.html").write_text("\n".join(pages))
    result = {
        "checkpoint": str(checkpoint),
        "model": label,
        "chars": len(ids),
        "saturation": {
            n: {k: v for k, v in s.items() if k not in ("left", "right")} for n, s in stats.items()
        },
        "units": units,
    }
    (out / "gates.json").write_text(json.dumps(result, indent=1))
    for n, s in result["saturation"].items():
        print(
            f"  {n:9s} left-saturated {s['mean_left']:.1%}, right-saturated {s['mean_right']:.1%} "
            f"(units mostly right: {s['mostly_right_units']}, mostly left: {s['mostly_left_units']})"
        )
    for feat, u in units.items():
        print(f"  unit {u['unit']:4d} tracks {feat} (r = {u['r']:+.2f})")
    print(f"wrote {out}/gates.json, saturation.png, gate_hist.png, coloured.html")
    return result
