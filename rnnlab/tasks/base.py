"""What the trainer knows of a task: its batches, its loss, its metrics — nothing else."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..models import ModelConfig
from ..train.distributed import Dist


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters live (inputs are moved there by the tasks)."""
    return next(model.parameters()).device


class Task(ABC):
    """A data set + loss + metrics. Batches must be a deterministic function of the epoch."""

    name: str = "task"
    #: True when the loss returns a state to feed into the next batch (truncated BPTT on a stream)
    carries_state: bool = False
    #: what one "item" of throughput is (tokens for text, windows for series)
    unit: str = "item"

    @abstractmethod
    def model_config(self, base: ModelConfig) -> ModelConfig:
        """Fill in the data-dependent fields (vocabulary size, classes, horizon) of ``base``."""

    @abstractmethod
    def num_batches(self, dist: Dist) -> int:
        """Batches per epoch on each rank."""

    @abstractmethod
    def batches(self, epoch: int, start: int, dist: Dist) -> Iterator[Any]:
        """This rank's batches of ``epoch``, skipping the first ``start`` (resuming mid-epoch)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, Any, int]:
        """Mean training loss of one batch, the (detached) state to carry, and the item count."""

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics on ``split`` ("val" or "test"); ``loss`` is the one early stopping watches."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """What rebuilding the task needs (data source, vocabulary, scaling), for checkpoints."""

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        """Reference results computed on the same split in the same run (none by default)."""
        return {}

    def summary(self, metrics: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
