"""The seed's claim, measured: plain RNNs forget over long spans, LSTM and GRU do not.

Each run trains one cell on one synthetic task at one length ``T`` with one seed, for at most
``iters`` Adam steps (fresh batches each step), checks a fixed validation batch every
``check_every`` steps and stops early once it is safely past "solved"; the final metric is taken on
a separate fixed test batch. Ablations are variants of the same runs (forget-gate bias, clipping,
GRU reset placement, the RNN's recurrent spectral radius).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import synthetic as syn
from ..models import ModelConfig, make_layer

# per task: input/output sizes, the metric, its baseline at length T, when it counts as solved, and
# when a run may stop early (checked on the validation batch)
TASKS: dict[str, dict[str, Any]] = {
    "adding": {"io": (2, 1), "metric": "mse", "baseline": lambda T: syn.ADDING_BASELINE,
               "solved": lambda m: m <= 0.01, "stop": lambda m: m <= 0.005},
    "order": {"io": (8, 4), "metric": "accuracy", "baseline": lambda T: 0.25,
              "solved": lambda m: m >= 0.95, "stop": lambda m: m >= 0.98},
    "copy": {"io": (10, 10), "metric": "cross_entropy", "baseline": syn.copy_baseline,
             "solved": lambda m: m <= 0.01, "stop": lambda m: m <= 0.005},
}


@dataclass
class Spec:
    task: str
    cell: str
    steps: int  # T
    seed: int = 0
    label: str = ""  # variant name shown in tables (defaults to the cell)
    forget_bias: float | None = 1.0  # LSTM: total forget-gate bias at init (None: torch's init)
    clip: float = 1.0  # gradient-norm clipping (0: off)
    reset: str = "after"  # GRU
    radius: float | None = None  # RNN: rescale W_hh to this spectral radius at init


class SeqModel(nn.Module):
    """A one-layer rnnlab layer and a linear read-out (at the last valid step, or at every step)."""

    def __init__(self, spec: Spec, hidden: int) -> None:
        super().__init__()
        n_in, n_out = TASKS[spec.task]["io"]
        self.rnn = make_layer(ModelConfig(kind="", cell=spec.cell, hidden=hidden, reset=spec.reset), n_in)
        self.head = nn.Linear(hidden, n_out)
        self.every_step = spec.task == "copy"
        init_variant(self.rnn, spec)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        out, h_n = self.rnn(x, lengths=lengths)  # (B, T, H)
        if self.every_step:
            return self.head(out)  # (B, T, O)
        return self.head((h_n[0] if isinstance(h_n, tuple) else h_n)[-1])  # (B, O)


@torch.no_grad()
def init_variant(rnn: nn.Module, spec: Spec) -> None:
    """Apply a spec's initialisation: LSTM forget bias (Jozefowicz et al. 2015), RNN spectral radius."""
    H = rnn.hidden_size
    if spec.cell == "lstm" and spec.forget_bias is not None:
        rnn.bias_ih_l0[H : 2 * H] = spec.forget_bias  # rows [i|f|g|o]: f is H:2H
        rnn.bias_hh_l0[H : 2 * H] = 0.0
    if spec.cell == "rnn" and spec.radius is not None:
        w = torch.randn(H, H, generator=torch.Generator().manual_seed(spec.seed)) / math.sqrt(H)
        rnn.weight_hh_l0.copy_(w * (spec.radius / torch.linalg.eigvals(w).abs().max()))


def make_batch(task: str, batch: int, steps: int, gen: torch.Generator) -> syn.Batch:
    return syn.TASKS[task](batch, steps, gen)


def loss_and_metric(model: SeqModel, task: str, b: syn.Batch) -> tuple[Tensor, float]:
    lengths = b.lengths if task == "order" else None
    out = model(b.x, lengths)
    if task == "adding":
        loss = F.mse_loss(out[:, 0], b.y)
        return loss, float(loss.detach())
    if task == "order":
        return F.cross_entropy(out, b.y), float((out.argmax(1) == b.y).float().mean())
    loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), b.y.reshape(-1))
    return loss, float(loss.detach())


def run(
    spec: Spec,
    iters: int,
    batch: int = 64,
    hidden: int = 128,
    lr: float = 1e-3,
    check_every: int = 100,
    keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one spec; returns its row of the results table (with the learning curve).

    ``keep``, when given, receives the trained model under ``"model"`` (for analyses).
    """
    if spec.task not in TASKS:
        raise ValueError(f"task: expected one of {tuple(TASKS)}, got {spec.task!r}")
    info = TASKS[spec.task]
    torch.manual_seed(spec.seed)
    model = SeqModel(spec, hidden)
    opt = torch.optim.Adam(model.parameters(), lr)
    gen = torch.Generator().manual_seed(spec.seed)
    val = make_batch(spec.task, 512, spec.steps, torch.Generator().manual_seed(10_000 + spec.seed))
    test = make_batch(spec.task, 2000, spec.steps, torch.Generator().manual_seed(20_000 + spec.seed))
    curve: list[tuple[int, float]] = []
    t0, it = time.perf_counter(), 0
    while it < iters:
        model.train()
        loss, _ = loss_and_metric(model, spec.task, make_batch(spec.task, batch, spec.steps, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if spec.clip:
            nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
        opt.step()
        it += 1
        if it % check_every == 0 or it == iters:
            model.eval()
            with torch.no_grad():
                _, metric = loss_and_metric(model, spec.task, val)
            curve.append((it, metric if math.isfinite(metric) else float("nan")))
            if info["stop"](metric):  # a margin below "solved", so the test batch agrees
                break
    model.eval()
    if keep is not None:
        keep["model"] = model
    with torch.no_grad():
        _, final = loss_and_metric(model, spec.task, test)
    return {
        **asdict(spec),
        "label": spec.label or spec.cell,
        "metric": info["metric"],
        "value": final,
        "baseline": info["baseline"](spec.steps),
        "solved": bool(info["solved"](final)),
        "iters": it,
        "seconds": time.perf_counter() - t0,
        "curve": curve,
    }
