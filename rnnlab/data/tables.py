"""Labelled texts and numeric series from CSV files (the cached data sets or the user's own).

Only the standard ``csv`` module is used, so a user's file needs nothing beyond a header row.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .text import Vocab


def _rows(path: str | Path, needed: list[str]) -> list[dict[str, str]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data: expected a CSV file, got {str(p)!r} (no such file)")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(p, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    header = table[0] if table else []
    for col in needed:
        if col not in header:
            raise ValueError(
                f"column {col!r}: expected one of the CSV header's columns {header}, in {str(p)!r}"
            )
    while len(table) > 1 and not table[-1]:
        table.pop()  # trailing blank lines
    # a blank line inside a one-column file is an empty cell (csv.DictReader would drop it)
    rows = [dict(zip(header, r or [""] * len(header))) for r in table[1:]]
    if not rows:
        raise ValueError(f"data: expected at least one data row in {str(p)!r}, got none")
    return rows


@dataclass
class Labelled:
    """Texts with their labels (strings), in file order."""

    texts: list[str]
    labels: list[str]


def read_labelled(path: str | Path, text_col: str, label_col: str) -> Labelled:
    rows = _rows(path, [text_col, label_col])
    return Labelled([r[text_col] for r in rows], [r[label_col] for r in rows])


def encode_texts(texts: list[str], vocab: Vocab, max_len: int) -> tuple[list[Tensor], Tensor]:
    """Lower-cased word ids per text (the first ``max_len`` tokens; at least ``<unk>``), and lengths."""
    seqs = []
    for t in texts:
        ids = vocab.encode(t.lower())[:max_len]
        seqs.append(ids if ids.numel() else torch.zeros(1, dtype=torch.long))
    return seqs, torch.tensor([s.numel() for s in seqs])


def build_text_vocab(texts: list[str], min_freq: int) -> Vocab:
    return Vocab.build("\n".join(t.lower() for t in texts), "word", min_freq=min_freq)


def pad(seqs: list[Tensor]) -> Tensor:
    """``[(T_i,)]`` → ``(B, max T_i)`` with zeros after each sequence's end."""
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)


def read_series(path: str | Path, value_col: str) -> Tensor:
    """One numeric column as float64 ``(N,)``; empty cells are filled linearly between neighbours."""
    rows = _rows(path, [value_col])
    vals = []
    for i, r in enumerate(rows):
        cell = r[value_col].strip()
        try:
            vals.append(float(cell) if cell else math.nan)
        except ValueError as err:
            raise ValueError(
                f"column {value_col!r}: expected numbers, got {cell!r} on data row {i + 1}"
            ) from err
    x = torch.tensor(vals, dtype=torch.float64)
    known = torch.nonzero(~torch.isnan(x)).flatten()
    if known.numel() < 2:
        raise ValueError(f"column {value_col!r}: expected at least 2 numbers, got {known.numel()}")
    if known.numel() < x.numel():
        idx = torch.arange(x.numel(), dtype=torch.float64)
        x = torch.from_numpy(np.interp(idx.numpy(), known.double().numpy(), x[known].numpy()))
    return x
