"""What ``rnnlab train | eval | sample | demo`` do, on top of the library (the parser is ``cli.py``)."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from .generate import sample
from .models import LanguageModel, ModelConfig, build_model
from .tasks import LanguageModelTask, Task, build_task, task_from_json
from .train import TrainConfig, Trainer
from .train import checkpoint as ckpt_io


def load_model(path: str | Path) -> tuple[torch.nn.Module, ckpt_io.Checkpoint]:
    """The model stored in a checkpoint (weights only; no pickle is ever read)."""
    ck = ckpt_io.load(path)
    try:
        model = build_model(ModelConfig(**ck.model))
        model.load_state_dict(ck.model_state)
    except (TypeError, RuntimeError, ValueError) as err:
        raise ckpt_io.CheckpointError(
            f"checkpoint {str(path)!r}: its weights do not fit its model config ({err})"
        ) from err
    return model.eval(), ck


def _table(rows: dict[str, dict[str, float]], cols: list[str]) -> str:
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, m in rows.items():
        cells = [f"{m[c]:.1%}" if c == "accuracy" else f"{m[c]:.4g}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(task: Task, model: torch.nn.Module, label: str, split: str) -> tuple[str, dict[str, Any]]:
    """Our metrics on ``split`` beside the task's baselines computed now, as markdown + JSON."""
    with torch.no_grad():
        ours = task.evaluate(model.eval(), split)
    rows = {label: ours, **task.baselines(split)}
    cols = [c for c in ("accuracy", "macro_f1", "mae", "rmse") if c in ours] or list(ours)
    return _table(rows, cols), rows


def _print_sample(model: LanguageModel, task: LanguageModelTask, prompt: str, length: int, seed: int) -> str:
    if task.level == "char" and any(ch not in task.vocab.index for ch in prompt):
        prompt = ""  # e.g. the demo's "ROMEO." on a user's corpus without capitals: start afresh
    print(f"\n--- sample (temperature 0.8, prompt {prompt!r}) ---\n{prompt}", end="", flush=True)
    text = ""
    for piece in sample(model, task.vocab, prompt, length, temperature=0.8, seed=seed):
        text += piece
        print(piece, end="", flush=True)
    print("\n---")
    return text


def train(opts: dict[str, Any]) -> dict[str, Any]:
    if opts.get("threads"):
        torch.set_num_threads(int(opts["threads"]))
    task = build_task(opts["task"], opts)
    names = {f.name for f in fields(ModelConfig)}
    model_cfg = ModelConfig(kind="", **{k: opts[k] for k in names if k in opts and k != "kind"})
    train_cfg = TrainConfig(**{f.name: opts[f.name] for f in fields(TrainConfig) if f.name in opts})
    trainer = Trainer(task, model_cfg, train_cfg)
    if trainer.dist.main:
        n_params = sum(p.numel() for p in trainer.model.parameters())
        print(
            f"[rnnlab] {task.name}: {model_cfg.cell.upper()} {model_cfg.layers}x{model_cfg.hidden}, "
            f"{n_params:,} parameters, {trainer.per_epoch} batches/epoch -> {train_cfg.out}",
            flush=True,
        )
    result = trainer.fit()
    trainer.dist.close()
    if not trainer.dist.main:
        return result
    out = Path(train_cfg.out)
    print(
        f"[rnnlab] stopped ({result['stopped']}) after {result['steps']} steps, "
        f"{result['train_minutes']:.1f} min; {task.summary(result['val'])}"
    )
    best = out / "best.safetensors"
    model, _ = load_model(best if best.exists() else out / "last.safetensors")
    if isinstance(task, LanguageModelTask):
        assert isinstance(model, LanguageModel)
        result["sample"] = _print_sample(model, task, opts.get("prompt") or "", 300, train_cfg.seed)
    else:
        table, rows = report(task, model, f"rnnlab {model_cfg.cell.upper()}", "test")
        print(f"\nTest split ({task.name}), beside baselines fitted in this run:\n{table}")
        (out / "results.md").write_text(table + "\n")
        result["test"] = rows
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"[rnnlab] saved {out}/{{best,last}}.safetensors, metrics.jsonl/.csv, loss.png, results.json")
    return result


def evaluate(path: str, split: str, data: str | None) -> dict[str, Any]:
    model, ck = load_model(path)
    task = task_from_json(ck.task, data)
    if isinstance(task, LanguageModelTask):
        metrics = task.evaluate(model, split)
        print(f"{path}: {task.summary(metrics)}")
        return metrics
    table, rows = report(task, model, f"rnnlab {ck.model['cell'].upper()} ({Path(path).name})", split)
    print(f"{task.name}, {split} split:\n{table}")
    return rows


def sample_cmd(path: str, prompt: str, length: int, temperature: float, top_k: int, seed: int) -> str:
    model, ck = load_model(path)
    if not isinstance(model, LanguageModel):
        raise ValueError(f"checkpoint: expected a language model, got a {ck.model['kind']!r} model ({path})")
    from .data.text import Vocab

    vocab = Vocab.from_json(ck.task["vocab"])
    sys.stdout.write(prompt)
    text = ""
    for piece in sample(model, vocab, prompt, length, temperature, top_k, seed):
        text += piece
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return text


def demo(opts: dict[str, Any]) -> int:
    """The main job: an LSTM character model of Shakespeare in a few minutes, then what to try next."""
    result = train(opts)
    out = opts["out"]
    bpc = result["val"]["bpc"]
    print(
        f"\nValidation: {result['val']['loss']:.3f} nats/char = {bpc:.3f} bits/char "
        f"(last 5% of the corpus; uniform over the vocabulary would be ~6.4 bits/char)."
    )
    print("Next, try (after `source .venv/bin/activate`, or with `.venv/bin/rnnlab`):")
    print(f"  rnnlab sample {out}/best.safetensors --prompt 'ROMEO.' --length 500 --temperature 0.7")
    print(f"  rnnlab eval {out}/best.safetensors")
    print("  rnnlab train --task charlm --cell gru --time-budget 6 --out runs/charlm-gru")
    print("  rnnlab train --task classify      # Amazon reviews -> rating, vs bag-of-words")
    print("  rnnlab train --task forecast --series co2")
    print("  rnnlab experiment long-range --quick   # the seed's claim: RNN vs LSTM vs GRU over long spans")
    print(f"  (loss curve: {out}/loss.png; metrics: {out}/metrics.csv)")
    return 0
