"""rnnlab layers on a CUDA device (the reference path: one autograd Function per layer, per-step
torch ops) against torch.nn on the same device (cuDNN), train (forward + backward) and inference.

python benchmarks/cuda_timing.py            # prints a markdown table; needs a GPU
"""

from __future__ import annotations

import statistics
import sys

import torch

import rnnlab


def _time(fn, reps: int = 20) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs, CUDA events around each."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("cuda_timing: no CUDA device on this machine")
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; T=100, fp32 (TF32 off)")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print("| cell | B | H | train torch ms | train rnnlab ms | ratio "
          "| infer torch ms | infer rnnlab ms | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in ("RNN", "LSTM", "GRU"):
        for batch, hidden in ((1, 64), (32, 256), (256, 512)):
            ref = getattr(torch.nn, cell)(hidden, hidden).to(dev)
            ours = getattr(rnnlab, cell)(hidden, hidden).to(dev)
            ours.load_state_dict(ref.state_dict())
            x = torch.randn(100, batch, hidden, device=dev, requires_grad=True)
            row = []
            for layer in (ref, ours):
                row.append(_time(lambda layer=layer, x=x: layer(x)[0].sum().backward()))
            with torch.no_grad():
                for layer in (ref, ours):
                    row.append(_time(lambda layer=layer, x=x: layer(x)))
            tr, to, ir, io = row
            print(f"| {cell} | {batch} | {hidden} | {tr:.2f} | {to:.2f} | {tr / to:.3f} "
                  f"| {ir:.2f} | {io:.2f} | {ir / io:.3f} |")


if __name__ == "__main__":
    main()
