"""Reference-path cost at T and 4T: train time (forward + backward) and bytes saved for backward.

python benchmarks/scaling.py            # prints a markdown table
"""

from __future__ import annotations

import statistics
import time

import torch

import rnnlab
from rnnlab.bench.run import cpu_model


def saved_bytes(layer: torch.nn.Module, x: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return total


def train_time(layer: torch.nn.Module, x: torch.Tensor, reps: int = 7) -> float:
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        out, _ = layer(x)
        out.sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    batch, hidden, base = 8, 128, 100
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_model()}")
    print(f"B={batch}, I=H={hidden}; median of 7 train steps (forward + backward)\n")
    print("| layer | T | time (ms) | time ratio 4T/T | saved (MiB) | saved ratio 4T/T |")
    print("|---|---|---|---|---|---|")
    for cls in (rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU):
        layer = cls(hidden, hidden)
        rows = []
        for steps in (base, 4 * base):
            x = torch.randn(steps, batch, hidden, requires_grad=True)
            rows.append((steps, train_time(layer, x), saved_bytes(layer, x)))
        (t1, s1, m1), (t4, s4, m4) = rows
        print(f"| {cls.__name__} | {t1} | {s1 * 1e3:.1f} | | {m1 / 2**20:.2f} | |")
        print(
            f"| {cls.__name__} | {t4} | {s4 * 1e3:.1f} | {s4 / s1:.2f} | {m4 / 2**20:.2f} | "
            f"{m4 / m1:.2f} |"
        )


if __name__ == "__main__":
    main()
