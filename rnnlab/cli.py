"""The ``rnnlab`` command line: train, eval, sample, demo (the lab commands and bench: cli_lab.py).

Options resolve in this order, later winning: built-in defaults → the task's defaults → a TOML
file given with ``--config`` (keys are option names, ``-`` or ``_``; tables are flattened) →
options on the command line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .cli_lab import add_bench, add_lab
from .data.fetch import DataUnavailable
from .tasks import TASKS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

S = argparse.SUPPRESS
DEFAULTS: dict[str, Any] = {
    "data": None,
    "series": "sunspots",
    "text_col": "review",
    "label_col": "score",
    "value_col": "value",
    "cell": "lstm",
    "reset": "after",
    "nonlinearity": "tanh",
    "hidden": 256,
    "layers": 1,
    "dropout": 0.0,
    "embed": 64,
    "tie": False,
    "pool": "last",
    "batch_size": 32,
    "bptt": 100,
    "val_fraction": 0.05,
    "min_freq": 2,
    "max_len": 300,
    "window": None,
    "horizon": None,
    "test_size": None,
    "season": None,
    "arima": None,
    "epochs": 0,
    "steps": 0,
    "time_budget": 0.0,
    "lr": 2e-3,
    "optimizer": "adam",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "clip": 1.0,
    "schedule": "cosine",
    "warmup": 0,
    "min_lr": 0.05,
    "patience": 0,
    "eval_every": 0,
    "ckpt_every": 0,
    "log_every": 20,
    "seed": 0,
    "out": None,
    "resume": False,
    "progress": True,
    "threads": 0,
    "device": "cpu",
    "prompt": "",
}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "charlm": {"epochs": 1, "eval_every": 500, "lr": 3e-3},
    "wordlm": {"epochs": 2, "bptt": 35, "embed": 128, "min_freq": 3, "eval_every": 500},
    "classify": {
        "hidden": 128,
        "embed": 64,
        "epochs": 8,
        "patience": 3,
        "dropout": 0.3,
        "lr": 2e-3,
        "schedule": "none",
        "pool": "max",
    },
    "forecast": {"hidden": 64, "epochs": 60, "lr": 3e-3, "log_every": 5},
}
DEMO = {
    "task": "charlm",
    "cell": "lstm",
    "hidden": 256,
    "time_budget": 4.0,
    "eval_every": 1000,
    "out": "runs/demo",
    "prompt": "ROMEO.\n",
}

EXAMPLES = """examples:
  rnnlab train --task charlm --cell lstm --time-budget 6 --out runs/charlm     # Shakespeare
  rnnlab train --task wordlm --cell gru --epochs 1
  rnnlab train --task charlm --data my_book.txt --hidden 512 --layers 2
  rnnlab train --task classify                   # Amazon fine-food reviews -> rating
  rnnlab train --task classify --data reviews.csv --text-col text --label-col stars
  rnnlab train --task forecast --series co2      # or --data series.csv --value-col y --window 48 ...
  rnnlab train --config configs/charlm.toml --lr 1e-3   # TOML, then command-line overrides
  rnnlab train --out runs/charlm --resume        # continue exactly where a run stopped
  torchrun --nproc_per_node=2 -m rnnlab train --task charlm --steps 200   # data-parallel (DDP)"""


def _add_train_options(p: argparse.ArgumentParser) -> None:
    def opt(name: str, help: str, **kw: Any) -> None:
        dest = name.lstrip("-").replace("-", "_")
        default = DEFAULTS.get(dest)
        shown = "" if default in (None, False, "") or kw.get("action") else f" (default {default})"
        p.add_argument(name, dest=dest, default=S, help=help + shown, **kw)

    opt("--config", "TOML file of options (command-line options override it)", metavar="FILE")
    opt("--task", f"what to train (default charlm): {', '.join(TASKS)}", choices=TASKS)
    g = p.add_argument_group("data")
    opt("--data", "your own data: a UTF-8 text file (LMs) or a CSV file (classify, forecast)")
    opt("--series", "built-in series for forecast: sunspots or co2", choices=("sunspots", "co2"))
    for col, what in (("--text-col", "text"), ("--label-col", "label"), ("--value-col", "value")):
        opt(col, f"CSV column holding the {what}")
    opt("--val-fraction", "held-out tail of an LM corpus", type=float)
    opt("--min-freq", "word vocabulary: keep words seen this often", type=int)
    opt("--max-len", "classify: words kept per text", type=int)
    for name, what in (
        ("--window", "past values fed in"),
        ("--horizon", "values forecast at once"),
        ("--test-size", "points in each of the val and test tails"),
        ("--season", "season length for seasonal-naive"),
    ):
        opt(name, f"forecast: {what} (preset per built-in series)", type=int)
    opt("--arima", "forecast: ARIMA order p,d,q for the baseline")
    del g
    opt("--cell", "recurrent cell", choices=("rnn", "lstm", "gru"))
    opt("--reset", "GRU reset placement (after: torch/cuDNN; before: Cho 2014)", choices=("after", "before"))
    opt("--nonlinearity", "RNN nonlinearity", choices=("tanh", "relu"))
    for name, what, typ in (
        ("--hidden", "hidden units", int),
        ("--layers", "stacked layers", int),
        ("--dropout", "dropout between layers and before the head", float),
        ("--embed", "embedding size", int),
    ):
        opt(name, what, type=typ)
    opt("--tie", "LM: tie the embedding and output weights", action="store_true")
    opt("--pool", "classify: how to read the sequence", choices=("last", "mean", "max"))
    opt("--batch-size", "sequences per step (global, over all processes)", type=int)
    opt("--bptt", "LM: steps per truncated-BPTT window", type=int)
    for name, what, typ in (
        ("--epochs", "passes over the data (0: no limit)", int),
        ("--steps", "optimizer steps in all (0: no limit)", int),
        ("--time-budget", "minutes of training (0: no limit)", float),
        ("--lr", "learning rate", float),
        ("--momentum", "SGD momentum", float),
        ("--weight-decay", "weight decay", float),
        ("--clip", "max gradient norm (0: off)", float),
        ("--warmup", "warm-up steps", int),
        ("--min-lr", "cosine floor (fraction)", float),
        ("--patience", "early stopping: evaluations without improvement (0: off)", int),
        ("--eval-every", "steps between evaluations (0: each epoch)", int),
        ("--ckpt-every", "steps between checkpoints (0: at evaluations)", int),
        ("--log-every", "steps between metric records", int),
        ("--seed", "random seed", int),
        ("--threads", "torch threads (0: torch's default)", int),
    ):
        opt(name, what, type=typ)
    opt("--device", "where to train: cpu, or cuda (GPU; one per torchrun rank)", choices=("cpu", "cuda"))
    opt("--optimizer", "optimizer", choices=("adam", "sgd"))
    opt("--schedule", "learning-rate schedule", choices=("none", "cosine", "plateau"))
    opt("--out", "run folder (default runs/<task>-<cell>)")
    opt("--resume", "continue from <out>/last.safetensors", action="store_true")
    opt("--no-progress", "no progress bar", action="store_false")
    opt("--prompt", "LM: prompt for the sample printed after training")


def _options(args: argparse.Namespace, preset: dict[str, Any] | None = None) -> dict[str, Any]:
    given = {
        k.replace("no_progress", "progress"): v for k, v in vars(args).items() if k not in ("func", "command")
    }
    toml: dict[str, Any] = {}
    if "config" in given:
        with open(given.pop("config"), "rb") as f:
            raw = tomllib.load(f)
        flat = {}
        for k, v in raw.items():
            flat.update(v if isinstance(v, dict) else {k: v})
        toml = {k.replace("-", "_"): v for k, v in flat.items()}
        unknown = sorted(set(toml) - set(DEFAULTS) - {"task"})
        if unknown:
            raise ValueError(
                f"config: expected option names like {sorted(DEFAULTS)[:4]}..., got unknown {unknown}"
            )
    task = given.get("task") or toml.get("task") or (preset or {}).get("task") or "charlm"
    chosen = {**(preset or {}), **toml, **given}
    if "epochs" not in chosen and (chosen.get("steps") or chosen.get("time_budget")):
        chosen["epochs"] = 0  # a step or time limit replaces the task's default epoch count
    opts = {**DEFAULTS, **TASK_DEFAULTS[task], **chosen, "task": task}
    opts["out"] = opts["out"] or f"runs/{task}-{opts['cell']}"
    return opts


def _train(args: argparse.Namespace) -> int:
    from . import commands

    commands.train(_options(args))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from . import commands

    return commands.demo(_options(args, DEMO))


def _eval(args: argparse.Namespace) -> int:
    from . import commands

    commands.evaluate(args.checkpoint, args.split, args.data)
    return 0


def _sample(args: argparse.Namespace) -> int:
    from . import commands

    commands.sample_cmd(args.checkpoint, args.prompt, args.length, args.temperature, args.top_k, args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="rnnlab",
        formatter_class=fmt,
        epilog=EXAMPLES,
        description="Elman RNN, LSTM and GRU from their equations: train, "
        "evaluate and sample models on real data.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser(
        "train", help="train a model (LM, classifier, forecaster)", formatter_class=fmt, epilog=EXAMPLES
    )
    _add_train_options(tr)
    tr.set_defaults(func=_train)
    dm = sub.add_parser(
        "demo",
        help="the main job: an LSTM char-LM on Shakespeare in ~4 minutes",
        formatter_class=fmt,
        epilog="examples:\n  rnnlab demo\n  rnnlab demo --time-budget 2",
    )
    _add_train_options(dm)
    dm.set_defaults(func=_demo)
    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint (with the task's baselines)",
        formatter_class=fmt,
        epilog="examples:\n  rnnlab eval runs/charlm/best.safetensors\n"
        "  rnnlab eval runs/classify-lstm/best.safetensors --split test",
    )
    ev.add_argument("checkpoint", help="a .safetensors checkpoint written by rnnlab train")
    ev.add_argument("--split", default="val", choices=("val", "test"), help="held-out part (default val)")
    ev.add_argument("--data", default=None, help="the data file, if it moved since training")
    ev.set_defaults(func=_eval)
    sa = sub.add_parser(
        "sample",
        help="generate text from a language-model checkpoint",
        formatter_class=fmt,
        epilog="examples:\n  rnnlab sample runs/demo/best.safetensors --prompt 'ROMEO.' "
        "--length 400\n  rnnlab sample CKPT --temperature 0.5 --top-k 10 --seed 3",
    )
    sa.add_argument("checkpoint", help="a language-model checkpoint")
    sa.add_argument("--prompt", default="", help="text to start from (default: a line break)")
    sa.add_argument("--length", type=int, default=300, help="tokens to generate (default 300)")
    sa.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1.0)")
    sa.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest (default 0: all)")
    sa.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sa.set_defaults(func=_sample)
    add_bench(sub, fmt)
    add_lab(sub, fmt)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, DataUnavailable) as err:
        print(f"rnnlab {args.command}: error: {err}", file=sys.stderr)
        return 2
