"""Gradient flow through time: ‖∂L/∂h_t‖ against the lag T − t, for a loss at the last step only.

The sequence is fed through the real rnnlab layer one step at a time (``layer(x[:, t:t+1], state)``),
keeping each carried state ``h_t`` as a graph node; one backward of ``L`` then fills ``h_t.grad``
with the *total* derivative ∂L/∂h_t — everything that flows back through steps t+1 … T — using the
layers' own backward. The seed's claim in one picture: for a tanh RNN with recurrent spectral
radius < 1 the norm falls geometrically with lag (vanishing), above 1 it can grow (exploding), and
the LSTM's additive cell path keeps it within reach.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..experiments.long_range import SeqModel, Spec, loss_and_metric, make_batch, run

CASES = {  # label: spec fields
    "RNN (tanh), radius 0.9": {"cell": "rnn", "radius": 0.9},
    "RNN (tanh), radius 1.5": {"cell": "rnn", "radius": 1.5},
    "LSTM, forget bias 1": {"cell": "lstm", "forget_bias": 1.0},
    "GRU": {"cell": "gru"},
}


def state_gradients(model: SeqModel, x: Tensor, target: Tensor) -> Tensor:
    """``(T,)``: mean over the batch of ‖∂L/∂h_t‖₂ with L = MSE of the read-out after step T."""
    rnn, state, kept = model.rnn, None, []
    for t in range(x.shape[1]):
        _, state = rnn(x[:, t : t + 1], state)  # one step of the real layer
        h = state[0] if isinstance(state, tuple) else state  # (1, B, H): h_t, fed to step t + 1
        h.retain_grad()
        kept.append(h)
    loss = ((model.head(kept[-1][0])[:, 0] - target) ** 2).mean()  # read-out of h_T only
    loss.backward()
    return torch.stack([h.grad[0].norm(dim=-1).mean() for h in kept])  # type: ignore[union-attr]


def measure(
    steps: int = 100,
    train_iters: int = 5000,
    hidden: int = 64,
    seed: int = 0,
    batch: int = 64,
    lr: float = 2e-3,
) -> dict[str, Any]:
    """Norms by lag for every case, at initialisation and after training on the adding problem."""
    gen = torch.Generator().manual_seed(1234)
    probe = make_batch("adding", batch, steps, gen)
    result: dict[str, Any] = {"steps": steps, "train_iters": train_iters, "cases": {}}
    for label, fields in CASES.items():
        spec = Spec(task="adding", steps=steps, seed=seed, **fields)  # type: ignore[arg-type]
        torch.manual_seed(seed)
        fresh = SeqModel(spec, hidden)
        at_init = state_gradients(fresh, probe.x, probe.y)
        trained_row, trained = _train(spec, train_iters, hidden, batch, lr)
        after = state_gradients(trained, probe.x, probe.y)
        with torch.no_grad():
            _, mse = loss_and_metric(trained.eval(), "adding", probe)
        result["cases"][label] = {
            "init": at_init.flip(0).tolist(),  # index = lag T - t
            "trained": after.flip(0).tolist(),
            "trained_mse": mse,
            "train_iters": trained_row["iters"],
        }
    return result


def _train(spec: Spec, iters: int, hidden: int, batch: int, lr: float) -> tuple[dict[str, Any], SeqModel]:
    """Train on the adding problem (stopping early once solved) and return the model."""
    box: dict[str, SeqModel] = {}
    row = run(spec, iters, batch=batch, hidden=hidden, lr=lr, keep=box)
    return row, box["model"]


def ratios(norms: list[float]) -> dict[str, float]:
    """‖∂L/∂h_t‖ relative to lag 0: at the longest lag, and the smallest and largest over all lags."""
    first = max(norms[0], 1e-300)
    return {"last": norms[-1] / first, "min": min(norms) / first, "max": max(norms) / first}


def plot(result: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, phase in zip(axes, ("init", "trained")):
        for label, case in result["cases"].items():
            norms = torch.tensor(case[phase])
            ax.semilogy(range(len(norms)), (norms / norms[0]).clamp_min(1e-30).tolist(), label=label)
        ax.set_xlabel("lag T − t (steps back from the loss)")
        ax.set_title(
            "at initialisation"
            if phase == "init"
            else f"after training on the adding problem (≤ {result['train_iters']} steps)"
        )
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("‖∂L/∂h_t‖ / ‖∂L/∂h_T‖")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Gradient flow through time (T = {result['steps']}, loss at the last step only)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
