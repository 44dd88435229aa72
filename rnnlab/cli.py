"""The ``rnnlab`` command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .demo import DemoConfig, run_demo


def _demo(args: argparse.Namespace) -> int:
    rows = []
    for steps in args.steps:
        cfg = DemoConfig(steps=steps, hidden=args.hidden, iters=args.iters, seed=args.seed)
        rows += [{"T": steps, **r} for r in run_demo(cfg)]
    print("\nTest accuracy (chance 12.5%):")
    cells = list(dict.fromkeys(str(r["cell"]) for r in rows))
    print(f"  {'T':>4}  " + "  ".join(f"{c:>11}" for c in cells))
    for steps in args.steps:
        accs = [r["accuracy"] for r in rows if r["T"] == steps]
        print(f"  {steps:>4}  " + "  ".join(f"{a:>11.1%}" for a in accs))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo_results.json").write_text(json.dumps(rows, indent=2))
    print(f"Saved {out / 'demo_results.json'}")
    print("Next: `make test`, or swap torch.nn.LSTM for rnnlab.LSTM in your own model.")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench.run import main as bench_main

    threads = tuple(int(t) for t in args.threads.split(","))
    cmd = "rnnlab bench" + (" --quick" if args.quick else "") + f" --threads {args.threads}"
    bench_main(quick=args.quick, threads_list=threads, reps=args.reps, out_json=args.json,
               out_md=None if args.no_markdown else args.markdown, command=cmd)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab",
        description="Elman RNN, LSTM and GRU from their equations (torch.nn-compatible).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  rnnlab demo\n  rnnlab demo --steps 20 50 --iters 1500\n  rnnlab bench --quick",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="train RNN, LSTM and GRU on a long-range recall task and compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  rnnlab demo --steps 60 --out runs/demo",
    )
    demo.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[10, 30, 60],
        help="sequence lengths T to remember across (one run per T)",
    )
    demo.add_argument("--hidden", type=int, default=64, help="hidden units per cell")
    demo.add_argument("--iters", type=int, default=800, help="Adam steps per cell and T")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.add_argument("--out", default="runs/demo", help="folder for demo_results.json")
    demo.set_defaults(func=_demo)
    bench = sub.add_parser(
        "bench",
        help="time rnnlab vs torch.nn side by side (shared/BENCH.md grid)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  rnnlab bench                 # full grid, 2 then 1 thread(s)\n"
        "  rnnlab bench --quick --no-markdown",
    )
    bench.add_argument("--quick", action="store_true", help="a few small cases (smoke test)")
    bench.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    bench.add_argument("--reps", type=int, default=7, help="timed repetitions per case (median)")
    bench.add_argument("--json", default="bench_results.json", help="where to write raw results")
    bench.add_argument("--markdown", default="BENCHMARKS.md", help="file whose table to update")
    bench.add_argument("--no-markdown", action="store_true", help="do not touch BENCHMARKS.md")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
