"""Synthetic long-range tasks, generated on the fly from a seeded ``torch.Generator``.

- **Adding problem** (Hochreiter & Schmidhuber 1997; the form of Arjovsky et al. 2016): each step
  carries ``(value ~ U[0,1], marker ∈ {0,1})``; exactly two markers, one in each half of the
  sequence; the target is the sum of the two marked values. Always answering 1 (the mean of the
  sum) scores MSE = Var(a + b) = 2 · 1/12 = 1/6 ≈ 0.167.
- **Temporal order** (H&S 1997 §5.6, task 6a): a sequence ``B … E`` of distractors ``a b c d``
  with two relevant symbols ``X``/``Y`` at ``t1 ∈ [0.1T, 0.2T]`` and ``t2 ∈ [0.5T, 0.6T]``; the
  class is their order pair (XX, XY, YX, YY). Lengths vary in ``[T, T + 10]`` (the paper: 100–110),
  so batches go through ``lengths=``. Chance: 25% accuracy, cross-entropy ln 4.
- **Copy memory** (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): ``K`` symbols from an
  alphabet of ``A``, ``T`` blanks (the last replaced by a delimiter), then ``K`` blanks; the output
  must be blanks until the delimiter, then the ``K`` symbols. Emitting blanks and then guessing
  uniformly scores cross-entropy ``K · ln(A) / (T + 2K)`` per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Batch:
    x: Tensor  # (B, T, I) float inputs
    y: Tensor  # adding: (B,) float; order: (B,) long; copy: (B, T) long
    lengths: Tensor  # (B,) valid steps (all T except temporal order)


def adding(batch: int, steps: int, gen: torch.Generator) -> Batch:
    """Inputs ``(B, T, 2)`` = [value, marker]; target ``(B,)`` = sum of the two marked values."""
    if steps < 2:
        raise ValueError(f"steps: expected at least 2 for the adding problem, got {steps}")
    values = torch.rand(batch, steps, generator=gen)
    half = steps // 2
    first = torch.randint(0, half, (batch,), generator=gen)
    second = torch.randint(half, steps, (batch,), generator=gen)
    marker = torch.zeros(batch, steps)
    rows = torch.arange(batch)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return Batch(torch.stack([values, marker], -1), y, torch.full((batch,), steps))


ADDING_BASELINE = 1.0 / 6.0

ORDER_SYMBOLS = "abcdXYBE"  # distractors a-d, relevant X Y, begin B, end E
ORDER_CLASSES = ("XX", "XY", "YX", "YY")


def temporal_order(batch: int, steps: int, gen: torch.Generator) -> Batch:
    """One-hot inputs ``(B, T + 10, 8)`` (padded), class ``(B,)`` in ``ORDER_CLASSES``."""
    if steps < 20:
        raise ValueError(f"steps: expected at least 20 for the temporal-order task, got {steps}")
    lengths = steps + torch.randint(0, 11, (batch,), generator=gen)
    width = int(lengths.max())
    sym = torch.randint(0, 4, (batch, width), generator=gen)  # distractors
    t1 = torch.randint(int(0.1 * steps), int(0.2 * steps) + 1, (batch,), generator=gen)
    t2 = torch.randint(int(0.5 * steps), int(0.6 * steps) + 1, (batch,), generator=gen)
    first = torch.randint(0, 2, (batch,), generator=gen)  # 0: X, 1: Y
    second = torch.randint(0, 2, (batch,), generator=gen)
    rows = torch.arange(batch)
    sym[rows, t1] = 4 + first
    sym[rows, t2] = 4 + second
    sym[:, 0] = 6  # B
    sym[rows, lengths - 1] = 7  # E
    valid = torch.arange(width)[None, :] < lengths[:, None]
    x = torch.nn.functional.one_hot(sym, 8).float() * valid[..., None]
    return Batch(x, 2 * first + second, lengths)


ORDER_BASELINE = math.log(4.0)


def copy_memory(batch: int, steps: int, gen: torch.Generator, k: int = 10, alphabet: int = 8) -> Batch:
    """One-hot inputs ``(B, T + 2K, A + 2)`` (symbols 0..A-1, blank A, delimiter A+1);
    targets ``(B, T + 2K)``."""
    if steps < 1:
        raise ValueError(f"steps: expected at least 1 for the copy task, got {steps}")
    blank, delim = alphabet, alphabet + 1
    total = steps + 2 * k
    seq = torch.randint(0, alphabet, (batch, k), generator=gen)
    inp = torch.full((batch, total), blank)
    inp[:, :k] = seq
    inp[:, k + steps - 1] = delim
    target = torch.full((batch, total), blank)
    target[:, -k:] = seq
    x = torch.nn.functional.one_hot(inp, alphabet + 2).float()
    return Batch(x, target, torch.full((batch,), total))


def copy_baseline(steps: int, k: int = 10, alphabet: int = 8) -> float:
    """Cross-entropy of "blanks, then uniform guesses": ``K ln A / (T + 2K)``."""
    return k * math.log(alphabet) / (steps + 2 * k)


TASKS = {"adding": adding, "order": temporal_order, "copy": copy_memory}
