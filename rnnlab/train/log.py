"""Metrics on disk (JSONL + CSV), the loss-curve PNG, and the progress bar."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only ``metrics.jsonl`` (one record per log/eval) mirrored to ``metrics.csv``."""

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.jsonl = folder / "metrics.jsonl"
        self.csv = folder / "metrics.csv"
        self.enabled = enabled
        self.records: list[dict[str, Any]] = []

    def resume_at(self, step: int) -> None:
        """Keep the records up to ``step`` (a resumed run rewrites what came after its checkpoint)."""
        if self.jsonl.exists():
            rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]
            self.records = [r for r in rows if r["step"] <= step]
        if self.enabled:
            self.jsonl.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def start_fresh(self) -> None:
        if self.enabled:
            self.jsonl.write_text("")

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.enabled:
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(record) + "\n")

    def write_csv(self) -> None:
        if not self.enabled:
            return
        cols: list[str] = []
        for r in self.records:
            cols += [k for k in r if k not in cols]
        with open(self.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(self.records)

    def plot(self, path: Path, title: str) -> None:
        """Training loss per logged step and validation loss per evaluation, on one axis."""
        if not self.enabled:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [(r["step"], r["loss"]) for r in self.records if r["split"] == "train"]
        val = [(r["step"], r["loss"]) for r in self.records if r["split"] == "val"]
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        if train:
            ax.plot(*zip(*train), label="train", lw=1, alpha=0.8)
        if val:
            ax.plot(*zip(*val), "o-", label="validation", lw=1.5)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def progress(total: int | None, enabled: bool, unit: str):  # type: ignore[no-untyped-def]
    """A tqdm bar on stderr (loss, tokens/s and ETA in its postfix), or a do-nothing stand-in.

    ``unit="s"`` counts seconds of a time budget. Without a terminal (logs, CI) it redraws every
    30 s instead of twice a second, so a log file gets a line now and then, not a flood.
    """
    from tqdm.auto import tqdm

    fmt = "{l_bar}{bar}| {n_fmt}/{total_fmt} s [{elapsed}<{remaining}{postfix}]" if unit == "s" else None
    return tqdm(total=total, disable=not enabled, unit=unit, dynamic_ncols=True, file=sys.stderr,
                mininterval=0.5 if sys.stderr.isatty() else 30.0, smoothing=0.1, bar_format=fmt)
