"""``rnnlab demo``: the three cells on a small long-range memory task, side by side.

Task ("remember the first symbol"): a sequence of ``T`` one-hot symbols drawn from ``K``; after the
last step the model must name the *first* symbol. Everything in between is distraction, so the cell
must carry one piece of information across ``T - 1`` steps — the seed's point about plain RNNs
("cannot conserve information for many steps") versus LSTM and GRU. Chance accuracy is ``1/K``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .layers import GRU, LSTM, RNN


@dataclass
class DemoConfig:
    steps: int = 30  # T, the distance to remember across
    symbols: int = 8  # K
    hidden: int = 64
    batch: int = 64
    iters: int = 800
    lr: float = 1e-2
    seed: int = 0


def recall_batch(cfg: DemoConfig, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """One batch: one-hot inputs ``(T, B, K)`` and targets ``(B,)`` = the first symbol."""
    seq = torch.randint(cfg.symbols, (cfg.steps, cfg.batch), generator=gen)  # (T, B)
    return nn.functional.one_hot(seq, cfg.symbols).float(), seq[0]


class Recall(nn.Module):
    """Sequence layer → last state → linear classifier (many-to-one, the seed's review example)."""

    def __init__(self, layer: nn.Module, hidden: int, symbols: int) -> None:
        super().__init__()
        self.layer, self.head = layer, nn.Linear(hidden, symbols)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.layer(x)  # (T, B, H)
        return self.head(out[-1])  # (B, K)


def run_demo(cfg: DemoConfig, out_dir: Path | None = None) -> list[dict[str, float | str]]:
    """Train RNN, LSTM and GRU on the recall task; print and return their test accuracies."""
    layers = {
        "RNN (tanh)": lambda: RNN(cfg.symbols, cfg.hidden),
        "LSTM": lambda: LSTM(cfg.symbols, cfg.hidden),
        "GRU": lambda: GRU(cfg.symbols, cfg.hidden),
    }
    print(
        f"Remember the first of T={cfg.steps} symbols (K={cfg.symbols}, chance "
        f"{1 / cfg.symbols:.1%}); {cfg.iters} Adam steps of batch {cfg.batch}, hidden {cfg.hidden}."
    )
    rows: list[dict[str, float | str]] = []
    for name, make in layers.items():
        torch.manual_seed(cfg.seed)
        model = Recall(make(), cfg.hidden, cfg.symbols)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        start = time.perf_counter()
        for _ in range(cfg.iters):
            x, y = recall_batch(cfg, gen)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        seconds = time.perf_counter() - start
        test_gen = torch.Generator().manual_seed(cfg.seed + 1)
        with torch.no_grad():
            x, y = recall_batch(DemoConfig(**{**asdict(cfg), "batch": 2000}), test_gen)
            acc = (model(x).argmax(-1) == y).float().mean().item()
        rows.append({"cell": name, "accuracy": acc, "final_loss": loss.item(), "seconds": seconds})
        print(
            f"  {name:<11} test accuracy {acc:6.1%}   final train loss {loss.item():.3f}   "
            f"({seconds:.1f} s)"
        )
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "demo_results.json"
        path.write_text(json.dumps({"config": asdict(cfg), "results": rows}, indent=2))
        print(f"Saved {path}")
    return rows
