"""The ``rnnlab`` lab commands (``experiment``, ``analyze``, ``report``) and ``bench``: the
subcommands that run the seed's experiments and analyses, and the speed benchmark. ``cli.py``
builds the parser and adds these to it."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def add_lab(sub: Any, fmt: type) -> None:
    """The lab commands: ``experiment``, ``analyze``, ``report``."""
    ex = sub.add_parser(
        "experiment",
        help="long-range tasks: RNN vs LSTM vs GRU (and ablations)",
        formatter_class=fmt,
        epilog="examples:\n  rnnlab experiment long-range --quick\n"
        "  rnnlab experiment long-range                 # full: 3 tasks, T up to 200, 3 seeds\n"
        "  rnnlab experiment long-range --quick --ablation forget-bias --out runs/ablation-fb\n"
        "  rnnlab experiment long-range --tasks order --lengths 50,100 --iters 4000",
    )
    ex.add_argument("which", choices=("long-range",), help="the experiment")
    ex.add_argument(
        "--quick", action="store_true", help="the <=10-minute setting (adding problem, T 20/50/100)"
    )
    ex.add_argument(
        "--ablation",
        default="none",
        choices=("none", "forget-bias", "clipping", "gru-reset", "radius"),
        help="compare variants instead of the three cells (default none)",
    )
    ex.add_argument("--tasks", default="", help="comma-separated: adding,order,copy (default: the setting's)")
    ex.add_argument("--cells", default="rnn,lstm,gru", help="cells compared (default rnn,lstm,gru)")
    ex.add_argument("--lengths", default="", help="comma-separated T values (default: the setting's)")
    ex.add_argument("--seeds", type=int, default=0, help="number of seeds (default: the setting's)")
    ex.add_argument("--iters", type=int, default=0, help="max Adam steps per run (default: the setting's)")
    ex.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ex.add_argument("--out", default="runs/long-range", help="results folder (default runs/long-range)")
    ex.set_defaults(func=_experiment)
    an = sub.add_parser(
        "analyze",
        help="gradient flow through time, or the gates of a trained model",
        formatter_class=fmt,
        epilog="examples:\n  rnnlab analyze gradients\n  rnnlab analyze gates runs/demo/best.safetensors",
    )
    an.add_argument("what", choices=("gradients", "gates"), help="the analysis")
    an.add_argument("checkpoint", nargs="?", help="gates: a char-LM checkpoint (LSTM or GRU)")
    an.add_argument("--steps", type=int, default=100, help="gradients: sequence length T (default 100)")
    an.add_argument("--train-iters", type=int, default=5000, help="gradients: max train steps (default 5000)")
    an.add_argument(
        "--chars", type=int, default=3000, help="gates: characters of held-out text (default 3000)"
    )
    an.add_argument("--unit", type=int, default=None, help="gates: also colour the text by this unit")
    an.add_argument("--out", default=None, help="folder (default runs/gradients or runs/gates)")
    an.set_defaults(func=_analyze)
    rp = sub.add_parser(
        "report",
        help="one self-contained HTML page of the results under runs/",
        formatter_class=fmt,
        epilog="example:\n  rnnlab report --runs runs --out runs/report.html",
    )
    rp.add_argument("--runs", default="runs", help="folder holding the result folders (default runs)")
    rp.add_argument("--out", default="runs/report.html", help="HTML file to write (default runs/report.html)")
    rp.set_defaults(func=_report)


def _experiment(args: argparse.Namespace) -> int:
    import torch

    from .experiments.suite import SETTINGS, long_range

    if args.threads:
        torch.set_num_threads(args.threads)
    setting = "quick" if args.quick else "full"
    seeds = list(range(args.seeds)) if args.seeds else None
    cmd = (
        "rnnlab " + " ".join(sys.argv[1:])
        if sys.argv[1:2] == ["experiment"]
        else f"rnnlab experiment {setting}"
    )
    print(f"[rnnlab] long-range experiment, {setting} setting: {SETTINGS[setting]}", flush=True)
    long_range(
        setting,
        args.out,
        ablation=args.ablation,
        tasks=[t for t in args.tasks.split(",") if t] or None,
        cells=[c for c in args.cells.split(",") if c],
        lengths=_ints(args.lengths) or None,
        seeds=seeds,
        iters=args.iters or None,
        command=cmd,
    )
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .analysis import run

    if args.what == "gradients":
        run.gradients(args.out or "runs/gradients", steps=args.steps, train_iters=args.train_iters)
        return 0
    if not args.checkpoint:
        raise ValueError("checkpoint: expected a char-LM checkpoint path for `analyze gates`, got none")
    run.gates(args.checkpoint, args.out or "runs/gates", chars=args.chars, unit=args.unit)
    return 0


def _report(args: argparse.Namespace) -> int:
    from .analysis.report import build

    print(f"wrote {build(args.runs, args.out)}")
    return 0


def add_bench(sub: Any, fmt: type) -> None:
    """The ``bench`` command (BENCHMARKS.md, shared/BENCH.md)."""
    bench = sub.add_parser(
        "bench",
        help="time rnnlab vs torch.nn side by side (shared/BENCH.md grid)",
        formatter_class=fmt,
        epilog="examples:\n  rnnlab bench                 # full grid, "
        "2 then 1 thread(s)\n  rnnlab bench --quick --no-markdown\n"
        "  rnnlab bench --passes 3      # the grid 3 times; each row its median pass\n"
        "  rnnlab bench --threads 2 --only 'LSTM T=100 B=32,stream'   # a few cases again",
    )
    bench.add_argument("--quick", action="store_true", help="a few small cases (smoke test)")
    bench.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    bench.add_argument("--reps", type=int, default=7, help="timed repetitions per case (median)")
    bench.add_argument("--passes", type=int, default=1,
                       help="times over the grid; each row is then its median pass (spread kept)")
    bench.add_argument("--json", default="bench_results.json", help="where to write raw results")
    bench.add_argument("--markdown", default="BENCHMARKS.md", help="file whose table to update")
    bench.add_argument("--no-markdown", action="store_true", help="do not touch BENCHMARKS.md")
    bench.add_argument("--only", default=None,
                       help="comma-separated parts of case names to run (e.g. 'LSTM T=100 B=32,"
                            "stream'); the table in BENCHMARKS.md is then left alone")
    bench.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    from .bench.run import main as bench_main

    threads = tuple(int(t) for t in args.threads.split(","))
    cmd = "rnnlab bench" + (" --quick" if args.quick else "") + f" --threads {args.threads}"
    if args.passes != 1:
        cmd += f" --passes {args.passes}"
    if args.only:
        cmd += f" --only {args.only!r}"
    bench_main(
        quick=args.quick,
        threads_list=threads,
        reps=args.reps,
        out_json=args.json,
        out_md=None if args.no_markdown else args.markdown,
        command=cmd,
        only=args.only,
        passes=args.passes,
    )
    return 0
