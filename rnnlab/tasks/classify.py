"""Review → rating: many-to-one classification of variable-length texts (the seed's "evaluation of a
product from a customer's comment").

Each batch is padded to its longest text and passed with ``lengths=``, so every review's state is
read at its own last word (padding never enters the recurrence). Baselines on the same split, in
the same run: the majority class and a bag-of-words (1–2-gram) logistic regression.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import fetch
from ..data.tables import Labelled, build_text_vocab, encode_texts, pad, read_labelled
from ..data.text import Vocab
from ..models import ModelConfig
from ..train.distributed import Dist
from .base import Task, device_of


def macro_f1(pred: Tensor, target: Tensor, classes: int) -> float:
    """Mean over classes of F1 = 2·TP / (2·TP + FP + FN) (a class never seen nor predicted counts 0)."""
    f1s = []
    for c in range(classes):
        tp = int(((pred == c) & (target == c)).sum())
        fp = int(((pred == c) & (target != c)).sum())
        fn = int(((pred != c) & (target == c)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return sum(f1s) / classes


def _split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, int(round(n * fraction)))
    return perm[k:].sort().values, perm[:k].sort().values


class ClassifierTask(Task):
    name = "review → rating"
    unit = "text"

    def __init__(
        self,
        train: Labelled,
        test: Labelled | None,
        *,
        source: str = "reviews",
        text_col: str = "review",
        label_col: str = "score",
        batch_size: int = 32,
        max_len: int = 300,
        min_freq: int = 2,
        val_fraction: float = 0.1,
        vocab: Vocab | None = None,
        classes: list[str] | None = None,
    ) -> None:
        if test is None:  # a user's single CSV: hold out a test part too
            rest, held = _split(len(train.texts), val_fraction, seed=1)
            test = Labelled([train.texts[i] for i in held], [train.labels[i] for i in held])
            train = Labelled([train.texts[i] for i in rest], [train.labels[i] for i in rest])
        tr, va = _split(len(train.texts), val_fraction, seed=0)
        parts = {"train": tr, "val": va}
        self.classes = classes or sorted(set(train.labels))
        if len(self.classes) < 2:
            raise ValueError(f"{label_col}: expected at least 2 distinct labels, got {self.classes}")
        self.vocab = vocab or build_text_vocab([train.texts[i] for i in tr], min_freq)
        index = {c: i for i, c in enumerate(self.classes)}
        self.text: dict[str, list[str]] = {k: [train.texts[i] for i in v] for k, v in parts.items()}
        self.text["test"] = test.texts
        raw = {k: [train.labels[i] for i in v] for k, v in parts.items()} | {"test": test.labels}
        unknown = sorted({lab for labs in raw.values() for lab in labs} - set(index))
        if unknown:
            raise ValueError(f"{label_col}: expected labels among {self.classes}, got also {unknown}")
        self.y = {k: torch.tensor([index[lab] for lab in v]) for k, v in raw.items()}
        self.x = {k: encode_texts(v, self.vocab, max_len) for k, v in self.text.items()}
        self.batch_size, self.max_len, self.min_freq, self.val_fraction = (
            batch_size,
            max_len,
            min_freq,
            val_fraction,
        )
        self.source, self.text_col, self.label_col = source, text_col, label_col
        if len(self.y["train"]) < batch_size:
            raise ValueError(
                f"batch_size: expected at most {len(self.y['train'])} (training texts), got {batch_size}"
            )

    def model_config(self, base: ModelConfig) -> ModelConfig:
        base.kind, base.vocab_size, base.classes = "classifier", len(self.vocab), len(self.classes)
        return base

    def num_batches(self, dist: Dist) -> int:
        return len(self.y["train"]) // self.batch_size  # full global batches only: equal shards

    def batches(self, epoch: int, start: int, dist: Dist) -> Iterator[Any]:
        seqs, lengths = self.x["train"]
        order = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(10_000 + epoch))
        for k in range(start, self.num_batches(dist)):
            idx = dist.shard(order[k * self.batch_size : (k + 1) * self.batch_size], 0)
            yield pad([seqs[i] for i in idx]), lengths[idx], self.y["train"][idx]

    def loss(self, model: nn.Module, batch: Any, carry: Any) -> tuple[Tensor, Any, int]:
        x, lengths, y = batch  # (B, T), (B,), (B,); lengths stay on the CPU
        dev = device_of(model)
        return F.cross_entropy(model(x.to(dev), lengths), y.to(dev)), None, len(y)

    @torch.no_grad()
    def predict(self, model: nn.Module, split: str) -> tuple[Tensor, Tensor]:
        seqs, lengths = self.x[split]
        order = lengths.argsort(descending=True)  # similar lengths together: less padding
        logits = torch.empty(len(seqs), len(self.classes))
        for k in range(0, len(seqs), 128):
            idx = order[k : k + 128]
            x = pad([seqs[i] for i in idx]).to(device_of(model))
            logits[idx] = model(x, lengths[idx]).float().cpu()
        return logits, self.y[split]

    def evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        logits, y = self.predict(model, split)
        pred = logits.argmax(1)
        return {
            "loss": float(F.cross_entropy(logits, y)),
            "accuracy": float((pred == y).float().mean()),
            "macro_f1": macro_f1(pred, y, len(self.classes)),
        }

    def baselines(self, split: str) -> dict[str, dict[str, float]]:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression

        y_train, y = self.y["train"], self.y[split]
        majority = int(torch.bincount(y_train, minlength=len(self.classes)).argmax())
        maj = torch.full_like(y, majority)
        vec = CountVectorizer(ngram_range=(1, 2), min_df=2, lowercase=True)
        clf = LogisticRegression(max_iter=2000, C=0.5)
        clf.fit(vec.fit_transform(self.text["train"]), y_train.numpy())
        bow = torch.from_numpy(clf.predict(vec.transform(self.text[split])))
        k = len(self.classes)
        return {
            "majority class": {"accuracy": float((maj == y).float().mean()), "macro_f1": macro_f1(maj, y, k)},
            "bag-of-words logistic regression": {
                "accuracy": float((bow == y).float().mean()),
                "macro_f1": macro_f1(bow, y, k),
            },
        }

    def summary(self, metrics: dict[str, float]) -> str:
        m = metrics
        return f"loss {m['loss']:.4f}, accuracy {m['accuracy']:.1%}, macro-F1 {m['macro_f1']:.3f}"

    def to_json(self) -> dict[str, Any]:
        return {
            "task": "classify",
            "source": self.source,
            "text_col": self.text_col,
            "label_col": self.label_col,
            "batch_size": self.batch_size,
            "max_len": self.max_len,
            "min_freq": self.min_freq,
            "val_fraction": self.val_fraction,
            "vocab": self.vocab.to_json(),
            "classes": self.classes,
        }

    @classmethod
    def from_source(
        cls, source: str, text_col: str = "review", label_col: str = "score", **kw: Any
    ) -> ClassifierTask:
        """``"reviews"`` (Amazon fine-food, its own train/test) or a CSV path (split here)."""
        if source == "reviews":
            train = read_labelled(fetch.reviews_path("train"), "review", "score")
            test: Labelled | None = read_labelled(fetch.reviews_path("test"), "review", "score")
        else:
            train, test = read_labelled(source, text_col, label_col), None
        return cls(train, test, source=source, text_col=text_col, label_col=label_col, **kw)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str | None = None) -> ClassifierTask:
        return cls.from_source(
            source or data["source"],
            data["text_col"],
            data["label_col"],
            batch_size=data["batch_size"],
            max_len=data["max_len"],
            min_freq=data["min_freq"],
            val_fraction=data["val_fraction"],
            vocab=Vocab.from_json(data["vocab"]),
            classes=data["classes"],
        )
