"""Text for language models: vocabularies and the batched streams truncated BPTT walks along.

A corpus becomes one long id sequence; ``streams`` cuts it into ``B`` contiguous rows so that
window ``k`` of row ``b`` continues exactly where window ``k - 1`` stopped — which is what lets the
trainer carry the hidden state from one batch to the next (detached) instead of starting at zero.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

UNK = "<unk>"
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|[0-9]+|\n|[^\sA-Za-z0-9]")


def words(text: str) -> list[str]:
    """Word-level tokens: words (with inner apostrophes), numbers, each punctuation mark, newlines."""
    return _WORD.findall(text)


@dataclass
class Vocab:
    """Token ↔ id table. ``level`` is "char" or "word"; word vocabularies have ``<unk>`` at id 0."""

    level: str
    tokens: list[str]

    def __post_init__(self) -> None:
        if self.level not in ("char", "word"):
            raise ValueError(f"level: expected 'char' or 'word', got {self.level!r}")
        self.index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, text: str, level: str, min_freq: int = 1, max_size: int | None = None) -> Vocab:
        if level == "char":
            return cls("char", sorted(set(text)))
        return cls.from_tokens(words(text), min_freq, max_size)

    @classmethod
    def from_tokens(cls, tokens: list[str], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """A word vocabulary: ``<unk>`` then the tokens seen at least ``min_freq`` times (sorted)."""
        kept = [w for w, c in Counter(tokens).most_common(max_size) if c >= min_freq]
        return cls("word", [UNK, *sorted(kept)])

    def ids(self, tokens: list[str]) -> Tensor:
        """Word ids (int64), unknown tokens → ``<unk>``."""
        unk = self.index[UNK]
        return torch.tensor([self.index.get(t, unk) for t in tokens], dtype=torch.long)

    def split(self, text: str) -> list[str]:
        return list(text) if self.level == "char" else words(text)

    def encode(self, text: str, *, strict: bool = False) -> Tensor:
        """Ids of ``text`` (int64). Unknown words map to ``<unk>``; unknown characters raise a
        ``ValueError`` naming them when ``strict`` (a prompt) and are dropped otherwise."""
        toks = self.split(text)
        if self.level == "word":
            return self.ids(toks)
        missing = sorted({t for t in toks if t not in self.index})
        if missing and strict:
            raise ValueError(f"prompt: characters {missing!r} are not in the model's vocabulary")
        return torch.tensor([self.index[t] for t in toks if t in self.index], dtype=torch.long)

    def decode(self, ids: list[int] | Tensor) -> str:
        toks = [self.tokens[int(i)] for i in ids]
        if self.level == "char":
            return "".join(toks)
        out = ""
        for t in toks:
            glue = not out or out.endswith("\n") or t == "\n" or not (t[0].isalnum() or t[0] == "<")
            out += t if glue else " " + t
        return out

    def to_json(self) -> dict[str, object]:
        return {"level": self.level, "tokens": self.tokens}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Vocab:
        return cls(str(data["level"]), list(data["tokens"]))  # type: ignore[call-overload]


def read_text(path: str | Path) -> str:
    """A UTF-8 text file, with a clear error when it is missing, empty or not UTF-8."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data: expected a UTF-8 text file, got {str(p)!r} (no such file)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"data: expected UTF-8 text in {str(p)!r}, got undecodable bytes ({err})") from err
    if not text:
        raise ValueError(f"data: expected a non-empty text file, got {str(p)!r} with 0 characters")
    return text


def split_tail(n: int, fraction: float) -> int:
    """Index where the held-out tail (the last ``fraction`` of ``n`` items) begins."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {fraction}")
    return n - max(1, int(round(n * fraction)))


def streams(ids: Tensor, batch: int) -> Tensor:
    """Cut a 1-D id sequence into ``batch`` contiguous rows: ``(N,)`` → ``(batch, N // batch)``."""
    length = ids.numel() // batch
    if length < 2:
        raise ValueError(
            f"batch_size: expected at most {ids.numel() // 2} streams for {ids.numel()} tokens, got {batch}"
        )
    return ids[: batch * length].view(batch, length)


def windows(rows: Tensor, bptt: int, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive ``(x, y)`` windows of ``rows (B, L)``: ``x = rows[:, s:s+T]``, ``y`` shifted by one.

    Every window but possibly the last has ``T = bptt`` steps; ``start`` skips that many windows
    (used when resuming mid-epoch).
    """
    length = rows.shape[1] - 1
    for k, s in enumerate(range(0, length, bptt)):
        if k >= start:
            t = min(bptt, length - s)
            yield rows[:, s : s + t], rows[:, s + 1 : s + 1 + t]  # (B, T), (B, T)


def num_windows(rows: Tensor, bptt: int) -> int:
    return -(-(rows.shape[1] - 1) // bptt)
