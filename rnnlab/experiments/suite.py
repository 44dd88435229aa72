"""`rnnlab experiment long-range`: the grid of runs, the ablations, the table and the plot."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from .long_range import TASKS, Spec, run

SETTINGS: dict[str, dict[str, Any]] = {
    # ≤ 10 minutes on 2 cores: the adding problem at three lengths, one seed
    "quick": {"tasks": ["adding"], "lengths": [25, 50, 100], "seeds": [0], "iters": 6000, "batch": 64,
              "hidden": 64, "lr": 2e-3},
    # the documented full run (its run time is in the README): all three tasks, two seeds
    "full": {"tasks": ["adding", "order", "copy"], "lengths": [25, 50, 100], "seeds": [0, 1],
             "iters": 6000,
             "batch": 64, "hidden": 64, "lr": 2e-3},
}

ABLATIONS = ("none", "forget-bias", "clipping", "gru-reset", "radius")


def variants(ablation: str, cells: list[str]) -> list[dict[str, Any]]:
    """Spec fields (and a label) for each model compared in ``ablation``."""
    if ablation == "none":
        names = {"rnn": "RNN (tanh)", "lstm": "LSTM", "gru": "GRU"}
        return [{"cell": c, "label": names[c]} for c in cells]
    if ablation == "forget-bias":
        return [{"cell": "lstm", "forget_bias": b, "label": f"LSTM, forget bias {b:g}"} for b in (0.0, 1.0)]
    if ablation == "clipping":
        return [
            {"cell": c, "clip": clip, "label": f"{c.upper()}, {'clip 1' if clip else 'no clipping'}"}
            for c in cells
            for clip in (1.0, 0.0)
        ]
    if ablation == "gru-reset":
        return [{"cell": "gru", "reset": r, "label": f"GRU, reset {r}"} for r in ("after", "before")]
    if ablation == "radius":
        return [{"cell": "rnn", "radius": r, "label": f"RNN, radius {r:g}"} for r in (0.9, 1.0, 1.5)]
    raise ValueError(f"ablation: expected one of {ABLATIONS}, got {ablation!r}")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | model | T | seed | metric | test value | baseline | solved | steps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['label']} | {r['steps']} | {r['seed']} | {r['metric']} | "
            f"{r['value']:.4g} | {r['baseline']:.4g} | {'yes' if r['solved'] else 'no'} | {r['iters']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Metric vs T per model (mean over seeds, each seed a dot), the baseline dashed, one panel a task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = [r for r in rows if r["task"] == task]
        lengths = sorted({r["steps"] for r in sub})
        for label in dict.fromkeys(r["label"] for r in sub):
            pts = [(r["steps"], r["value"]) for r in sub if r["label"] == label]
            means = [sum(v for t, v in pts if t == T) / max(1, sum(t == T for t, _ in pts)) for T in lengths]
            line = ax.plot(lengths, means, "o-", label=label)[0]
            ax.plot(*zip(*pts), ".", color=line.get_color(), alpha=0.5)
        ax.plot(
            lengths,
            [sub[0]["baseline"] if task != "copy" else TASKS[task]["baseline"](T) for T in lengths],
            "k--",
            lw=1,
            label="baseline",
        )
        metric = sub[0]["metric"]
        if metric != "accuracy":
            ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(f"test {metric}")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def long_range(
    setting: str,
    out: str | Path,
    *,
    ablation: str = "none",
    tasks: list[str] | None = None,
    cells: list[str] | None = None,
    lengths: list[int] | None = None,
    seeds: list[int] | None = None,
    iters: int | None = None,
    command: str = "",
    verbose: bool = True,
) -> list[dict[str, Any]]:
    if setting not in SETTINGS:
        raise ValueError(f"setting: expected one of {tuple(SETTINGS)}, got {setting!r}")
    cfg = dict(SETTINGS[setting])
    cfg.update(
        {k: v for k, v in (("tasks", tasks), ("lengths", lengths), ("seeds", seeds), ("iters", iters)) if v}
    )
    for t in cfg["tasks"]:
        if t not in TASKS:
            raise ValueError(f"tasks: expected names among {tuple(TASKS)}, got {t!r}")
    models = variants(ablation, cells or ["rnn", "lstm", "gru"])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for task in cfg["tasks"]:
        for T in cfg["lengths"]:
            for seed in cfg["seeds"]:
                for m in models:
                    row = run(
                        Spec(task=task, steps=T, seed=seed, **m), cfg["iters"], cfg["batch"], cfg["hidden"]
                    )
                    rows.append(row)
                    if verbose:
                        print(
                            f"  {task:7s} T={T:<4d} seed={seed} {row['label']:28s} {row['metric']} "
                            f"{row['value']:.4f} (baseline {row['baseline']:.4f}) "
                            f"{'solved' if row['solved'] else 'not solved'} after {row['iters']} steps, "
                            f"{row['seconds']:.0f} s",
                            flush=True,
                        )
    minutes = (time.perf_counter() - t0) / 60
    meta = {
        "setting": setting,
        "ablation": ablation,
        **cfg,
        "minutes": minutes,
        "command": command,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
    }
    (out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    table = markdown(rows)
    (out / "results.md").write_text(f"`{command}` — {minutes:.1f} min\n\n{table}\n")
    title = "long-range tasks" + ("" if ablation == "none" else f" — ablation: {ablation}")
    plot(rows, out / "long_range.png", title)
    if verbose:
        print(f"\n{table}\n\n{minutes:.1f} min; wrote {out}/results.json, results.md, long_range.png")
    return rows
