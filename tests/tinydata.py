"""Small data slices the tests make themselves (no downloads)."""

from __future__ import annotations

import math
import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "my friend", "the king", "a bird"]
VERBS = ["sees", "likes", "finds", "hears"]
OBJECTS = ["the mat.", "a hat.", "the sea.", "my song."]


def corpus(n_lines: int = 400, seed: int = 0) -> str:
    """A tiny grammar's sentences, one per line: learnable, not trivially periodic."""
    rng = random.Random(seed)
    return "".join(
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}\n" for _ in range(n_lines)
    )


def write_corpus(folder: Path, n_lines: int = 400) -> Path:
    path = folder / "tiny.txt"
    path.write_text(corpus(n_lines))
    return path


def write_reviews(folder: Path, n: int = 240, seed: int = 0) -> Path:
    """Reviews whose label is decided by a sentiment word somewhere among neutral words."""
    rng = random.Random(seed)
    filler = ["this", "product", "arrived", "in", "a", "box", "and", "taste", "was", "the", "coffee"]
    rows = ["text,stars"]
    for _ in range(n):
        label = rng.choice(["great", "other"])
        word = rng.choice(
            ["delicious", "wonderful", "love"] if label == "great" else ["awful", "stale", "bad"]
        )
        words = [rng.choice(filler) for _ in range(rng.randint(4, 20))]
        words.insert(rng.randint(0, len(words)), word)
        rows.append(f'"{" ".join(words)}",{label}')
    path = folder / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def write_series(folder: Path, n: int = 400) -> Path:
    """A noisy seasonal series (period 12) with a trend, and one missing value."""
    rng = random.Random(0)
    vals = [f"{10 + 0.01 * t + 3 * math.sin(2 * math.pi * t / 12) + rng.gauss(0, 0.2):.4f}" for t in range(n)]
    vals[50] = ""
    path = folder / "series.csv"
    path.write_text("y\n" + "\n".join(vals) + "\n")
    return path
