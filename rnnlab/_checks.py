"""Argument validation shared by cells and layers.

Every check runs before any computation and raises ``ValueError`` (bad value or shape) or
``TypeError`` (bad type or dtype) with a message that names the argument and says what was
expected and what was given.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor


def shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} ({value!r})")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int (> 0), got {value}")
    return value


def flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} ({value!r})")
    return value


def choice(name: str, value: object, options: Sequence[str]) -> str:
    if value not in options:
        raise ValueError(f"{name}: expected one of {tuple(options)}, got {value!r}")
    return str(value)


def probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float in [0, 1], got {type(value).__name__}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: expected a value in [0, 1], got {value}")
    return float(value)


def tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def same_shape(name: str, value: Tensor, expected: Sequence[int], what: str = "") -> None:
    if tuple(value.shape) != tuple(expected):
        extra = f" ({what})" if what else ""
        raise ValueError(
            f"{name}: expected shape {shape_str(expected)}{extra}, got {shape_str(value.shape)}"
        )


def matches_params(name: str, value: Tensor, ref: Tensor) -> None:
    """``value`` must share dtype and device with the parameters (``ref``)."""
    if value.dtype != ref.dtype:
        raise TypeError(
            f"{name}: expected dtype {ref.dtype} (the parameters' dtype), got {value.dtype}"
        )
    if value.device != ref.device:
        raise ValueError(
            f"{name}: expected device {ref.device} (the parameters' device), got {value.device}"
        )


def input_rank(name: str, value: Tensor, ranks: tuple[int, int]) -> bool:
    """Return True when ``value`` is batched (rank ``ranks[1]``), False when unbatched."""
    if value.dim() not in ranks:
        raise ValueError(
            f"{name}: expected a {ranks[0]}-D (unbatched) or {ranks[1]}-D (batched) tensor, "
            f"got {value.dim()}-D with shape {shape_str(value.shape)}"
        )
    return value.dim() == ranks[1]


def feature_size(name: str, value: Tensor, expected: int, what: str = "input_size") -> None:
    if value.shape[-1] != expected:
        raise ValueError(
            f"{name}: expected last dimension {what}={expected}, got {value.shape[-1]} "
            f"(shape {shape_str(value.shape)})"
        )


def nonempty(name: str, value: Tensor, dims: dict[str, int]) -> None:
    for label, dim in dims.items():
        if value.shape[dim] == 0:
            raise ValueError(
                f"{name}: {label} must be at least 1, got 0 (shape {shape_str(value.shape)})"
            )


def lengths(value: object, batch: int, steps: int, device: torch.device) -> Tensor:
    """Validate per-sequence ``lengths`` and return them as an int64 tensor on ``device``."""
    if isinstance(value, Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
            raise TypeError(f"lengths: expected an integer tensor, got dtype {value.dtype}")
        if value.dim() != 1:
            raise ValueError(
                f"lengths: expected a 1-D tensor of size {batch}, got shape "
                f"{shape_str(value.shape)}"
            )
        out = value.to(device=device, dtype=torch.long)
    elif isinstance(value, Sequence) and all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value
    ):
        out = torch.tensor(list(value), dtype=torch.long, device=device)
    else:
        raise TypeError(f"lengths: expected a 1-D integer tensor or list of ints, got {value!r}")
    if out.numel() != batch:
        raise ValueError(f"lengths: expected {batch} entries (the batch size), got {out.numel()}")
    if bool((out <= 0).any()):
        raise ValueError(f"lengths: every length must be positive, got {out.tolist()}")
    if bool((out > steps).any()):
        raise ValueError(
            f"lengths: every length must be <= T={steps} (the input's time steps), "
            f"got max {int(out.max())}"
        )
    return out
