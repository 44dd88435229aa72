"""Training: the loop (truncated BPTT, clipping, schedules, early stopping), checkpoints, DDP."""

from .checkpoint import Checkpoint, CheckpointError
from .loop import TrainConfig, Trainer

__all__ = ["Checkpoint", "CheckpointError", "TrainConfig", "Trainer"]
