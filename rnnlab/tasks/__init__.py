"""Tasks: data + loss + metrics for the trainer (language model, classifier, forecaster)."""

from __future__ import annotations

from typing import Any

from .base import Task
from .classify import ClassifierTask
from .forecast import ForecastTask
from .lm import LanguageModelTask, load_corpus

TASKS = ("charlm", "wordlm", "classify", "forecast")


def build_task(name: str, opts: dict[str, Any]) -> Task:
    """A task from command-line/TOML options (``data`` defaults to the task's real data set)."""
    if name not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {name!r}")
    data = opts.get("data")
    if name in ("charlm", "wordlm"):
        source = data or "shakespeare"
        return LanguageModelTask(
            load_corpus(source),
            level="char" if name == "charlm" else "word",
            source=source,
            batch_size=opts["batch_size"],
            bptt=opts["bptt"],
            val_fraction=opts["val_fraction"],
            min_freq=opts["min_freq"],
        )
    if name == "classify":
        return ClassifierTask.from_source(
            data or "reviews",
            opts["text_col"],
            opts["label_col"],
            batch_size=opts["batch_size"],
            max_len=opts["max_len"],
            min_freq=opts["min_freq"],
            val_fraction=0.1,
        )
    keys = ("window", "horizon", "test_size", "season")
    arima = tuple(int(v) for v in opts["arima"].split(",")) if opts.get("arima") else None
    return ForecastTask.from_source(
        data or opts["series"],
        opts["value_col"],
        batch_size=opts["batch_size"],
        arima=arima,
        **{k: opts.get(k) for k in keys},
    )


def task_from_json(data: dict[str, Any], source: str | None = None) -> Task:
    """Rebuild the task a checkpoint was trained on (its vocabulary/scaling included)."""
    kinds = {"lm": LanguageModelTask, "classify": ClassifierTask, "forecast": ForecastTask}
    if data.get("task") not in kinds:
        raise ValueError(f"task: expected one of {tuple(kinds)} in the checkpoint, got {data.get('task')!r}")
    return kinds[data["task"]].from_json(data, source)  # type: ignore[attr-defined, no-any-return]


__all__ = [
    "TASKS",
    "ClassifierTask",
    "ForecastTask",
    "LanguageModelTask",
    "Task",
    "build_task",
    "task_from_json",
]
