"""Checkpoints: one safetensors file, written atomically, never unpickled.

Layout of ``*.safetensors``:
- tensors ``model.<name>`` (the state dict), and for training checkpoints ``optim.<i>.<key>``
  (optimizer state), ``rng.torch`` (the CPU generator) and ``carry.<k>`` (the hidden state
  truncated BPTT carries into the next batch, gathered over all ranks);
- string metadata ``format``, ``model`` (ModelConfig JSON), ``task`` (task JSON: data source,
  vocabulary, scaling) and ``train`` (progress JSON: epoch, step, optimizer hyper-parameters, ...).

The file is written to a temporary name in the same folder, fsynced and renamed over the target,
so a crash leaves either the old checkpoint or the new one — never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

FORMAT = "rnnlab-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or not an rnnlab checkpoint."""


@dataclass
class Checkpoint:
    model_state: dict[str, Tensor]
    model: dict[str, Any]
    task: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)
    optim_state: dict[str, Tensor] = field(default_factory=dict)
    rng: Tensor | None = None
    carry: list[Tensor] = field(default_factory=list)


def save(path: str | Path, ckpt: Checkpoint) -> None:
    tensors: dict[str, Tensor] = {f"model.{k}": v for k, v in ckpt.model_state.items()}
    tensors.update({f"optim.{k}": v for k, v in ckpt.optim_state.items()})
    if ckpt.rng is not None:
        tensors["rng.torch"] = ckpt.rng
    tensors.update({f"carry.{i}": c for i, c in enumerate(ckpt.carry)})
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "model": json.dumps(ckpt.model),
        "task": json.dumps(ckpt.task),
        "train": json.dumps(ckpt.train),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_untie(tensors), tmp, metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _untie(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """safetensors refuses tensors sharing memory (tied weights): store a copy of the repeats."""
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen and v.numel() else v
        seen.add(ptr)
    return out


def load(path: str | Path) -> Checkpoint:
    """Read a checkpoint; raises ``CheckpointError`` naming the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint: expected a file, got {str(p)!r} (no such file)")
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"checkpoint {str(p)!r}: expected a complete safetensors file, got an unreadable one "
            f"(truncated or corrupt: {err})"
        ) from err
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {str(p)!r}: expected format {FORMAT!r}, got {meta.get('format')!r}"
        )
    try:
        model, task, train = (json.loads(meta[k]) for k in ("model", "task", "train"))
    except (KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {str(p)!r}: metadata is incomplete or corrupt ({err})") from err

    def group(prefix: str) -> dict[str, Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    carry = group("carry.")
    return Checkpoint(
        model_state=group("model."),
        model=model,
        task=task,
        train=train,
        optim_state=group("optim."),
        rng=tensors.get("rng.torch"),
        carry=[carry[str(i)] for i in range(len(carry))],
    )


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """``optimizer.state_dict()`` → tensors (``<param>.<key>``) + JSON-able param groups."""
    tensors: dict[str, Tensor] = {}
    for pid, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"{pid}.{key}"] = value if isinstance(value, Tensor) else torch.tensor(value)
    return tensors, state["param_groups"]


def unflatten_optimizer(tensors: dict[str, Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": groups}
