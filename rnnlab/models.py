"""Task heads on rnnlab layers: language model, many-to-one classifier, forecaster.

The seed's output equation ``o_t = softmax(V s_t)`` is the language model's head: ``V`` is
``LanguageModel.head`` applied at every step (softmax inside the cross-entropy loss). The
classifier applies its head once, after the last valid step (many-to-one); the forecaster maps the
last state to the next ``horizon`` values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .layers import GRU, LSTM, RNN, RNNBase

CELLS = ("rnn", "lstm", "gru")
POOLS = ("last", "mean", "max")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (stored as JSON in checkpoints)."""

    kind: str  # "lm" | "classifier" | "forecaster"
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    dropout: float = 0.0
    reset: str = "after"  # GRU only
    nonlinearity: str = "tanh"  # RNN only
    vocab_size: int = 0  # lm, classifier
    embed: int = 64  # lm, classifier
    tie: bool = False  # lm: share the embedding and output matrices (needs embed == hidden)
    classes: int = 0  # classifier
    pool: str = "last"  # classifier
    horizon: int = 1  # forecaster
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def make_layer(cfg: ModelConfig, input_size: int) -> RNNBase:
    """The recurrent layer stack named by ``cfg.cell`` (batch-first)."""
    if cfg.cell not in CELLS:
        raise ValueError(f"cell: expected one of {CELLS}, got {cfg.cell!r}")
    # torch applies layer dropout between layers only; the heads apply cfg.dropout themselves
    drop = cfg.dropout if cfg.layers > 1 else 0.0
    kw: dict[str, Any] = {"num_layers": cfg.layers, "dropout": drop, "batch_first": True}
    if cfg.cell == "rnn":
        return RNN(input_size, cfg.hidden, nonlinearity=cfg.nonlinearity, **kw)
    if cfg.cell == "gru":
        return GRU(input_size, cfg.hidden, reset=cfg.reset, **kw)
    return LSTM(input_size, cfg.hidden, **kw)


def detach_state(state: Any) -> Any:
    """Cut the graph behind a carried state (truncated BPTT) without copying it."""
    if state is None:
        return None
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class LanguageModel(nn.Module):
    """tokens ``(B, T)`` → embedding → rnnlab layer(s) → dropout → ``V`` → logits ``(B, T, vocab)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size < 1:
            raise ValueError(f"vocab_size: expected a positive int, got {cfg.vocab_size}")
        if cfg.tie and cfg.embed != cfg.hidden:
            raise ValueError(
                f"tie: expected embed == hidden to share V with the embedding, "
                f"got embed={cfg.embed}, hidden={cfg.hidden}"
            )
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed)
        self.rnn = make_layer(cfg, cfg.embed)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.vocab_size)  # the seed's V
        if cfg.tie:
            self.head.weight = self.embed.weight

    def forward(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        out, state = self.rnn(self.embed(tokens), state)  # (B, T, H)
        return self.head(self.drop(out)), state  # (B, T, vocab)

    @torch.no_grad()
    def step(self, token: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """One token per row ``(B,)`` → next-token logits ``(B, vocab)``, carrying ``state``."""
        out, state = self.rnn.step(self.embed(token), state)  # (B, H)
        return self.head(out), state


class Classifier(nn.Module):
    """Many-to-one: tokens ``(B, T)`` + lengths → layer → pooled state → logits ``(B, classes)``.

    ``pool="last"`` reads each sequence's state at its own last valid step (``h_n`` with
    ``lengths=``); ``"mean"``/``"max"`` pool the outputs over the valid steps only.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.pool not in POOLS:
            raise ValueError(f"pool: expected one of {POOLS}, got {cfg.pool!r}")
        if cfg.classes < 2:
            raise ValueError(f"classes: expected at least 2, got {cfg.classes}")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed, padding_idx=None)
        self.rnn = make_layer(cfg, cfg.embed)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cfg.hidden, cfg.classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out, h_n = self.rnn(self.embed(tokens), lengths=lengths)  # (B, T, H)
        if self.cfg.pool == "last":
            feat = (h_n[0] if isinstance(h_n, tuple) else h_n)[-1]  # (B, H): top layer, last valid step
        else:
            lengths = lengths.to(out.device)
            valid = torch.arange(tokens.shape[1], device=out.device)[None, :] < lengths[:, None]  # (B, T)
            if self.cfg.pool == "mean":
                feat = out.sum(1) / lengths[:, None].to(out.dtype)
            else:
                feat = out.masked_fill(~valid[..., None], float("-inf")).amax(1)
        return self.head(self.drop(feat))  # (B, classes)


class Forecaster(nn.Module):
    """Scaled history ``(B, L)`` → layer → last state → the next ``horizon`` values ``(B, horizon)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.rnn = make_layer(cfg, 1)
        self.head = nn.Linear(cfg.hidden, cfg.horizon)

    def forward(self, history: Tensor) -> Tensor:
        out, _ = self.rnn(history.unsqueeze(-1))  # (B, L, H)
        return self.head(out[:, -1])  # (B, horizon)


def build_model(cfg: ModelConfig) -> nn.Module:
    kinds = {"lm": LanguageModel, "classifier": Classifier, "forecaster": Forecaster}
    if cfg.kind not in kinds:
        raise ValueError(f"kind: expected one of {tuple(kinds)}, got {cfg.kind!r}")
    return kinds[cfg.kind](cfg)
