"""Long-range task generators: labels are right, baselines are what the papers say."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.data import synthetic as syn


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_adding_markers_target_and_baseline():
    b = syn.adding(4000, 50, gen())
    values, marks = b.x[..., 0], b.x[..., 1]
    assert b.x.shape == (4000, 50, 2) and torch.equal(marks.sum(1), torch.full((4000,), 2.0))
    assert (marks[:, :25].sum(1) == 1).all() and (marks[:, 25:].sum(1) == 1).all()  # one in each half
    assert torch.allclose((values * marks).sum(1), b.y)
    # predicting the constant 1 scores Var(a + b) = 1/6; measured on the sample it is close
    assert float(((b.y - 1) ** 2).mean()) == pytest.approx(syn.ADDING_BASELINE, abs=0.01)
    assert torch.equal(syn.adding(3, 10, gen(5)).x, syn.adding(3, 10, gen(5)).x)  # seeded


def test_temporal_order_labels_positions_and_lengths():
    b = syn.temporal_order(500, 100, gen(1))
    sym = b.x.argmax(-1)  # (B, W)
    assert ((b.lengths >= 100) & (b.lengths <= 110)).all()
    for row in range(500):
        n = int(b.lengths[row])
        s = sym[row, :n]
        assert s[0] == 6 and s[-1] == 7  # B ... E
        assert b.x[row, n:].abs().sum() == 0  # padding is zero
        rel = [(t, int(v)) for t, v in enumerate(s.tolist()) if v in (4, 5)]
        assert len(rel) == 2 and 10 <= rel[0][0] <= 20 and 50 <= rel[1][0] <= 60
        assert syn.ORDER_CLASSES[int(b.y[row])] == "XY"[rel[0][1] - 4] + "XY"[rel[1][1] - 4]
    assert torch.bincount(b.y, minlength=4).min() > 80  # all four classes occur
    assert syn.ORDER_BASELINE == pytest.approx(math.log(4))


def test_copy_memory_layout_and_baseline():
    T, K, A = 30, 10, 8
    b = syn.copy_memory(64, T, gen(2), k=K, alphabet=A)
    inp = b.x.argmax(-1)
    assert b.x.shape == (64, T + 2 * K, A + 2) and b.y.shape == (64, T + 2 * K)
    assert torch.equal(inp[:, :K], b.y[:, -K:])  # the output repeats the first K symbols
    assert (inp[:, K + T - 1] == A + 1).all() and (b.y[:, : T + K] == A).all()
    assert (inp[:, K : K + T - 1] == A).all() and (inp[:, -K:] == A).all()
    # the baseline "blanks, then uniform" has exactly this cross-entropy
    logits = torch.full((64, T + 2 * K, A + 2), -1e9)
    logits[:, : T + K, A] = 0.0
    logits[:, T + K :, :A] = 0.0
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, A + 2), b.y.reshape(-1))
    assert float(ce) == pytest.approx(syn.copy_baseline(T, K, A), rel=1e-6)
    assert syn.copy_baseline(T, K, A) == pytest.approx(K * math.log(A) / (T + 2 * K))


def test_generators_reject_bad_lengths():
    with pytest.raises(ValueError, match="steps: expected at least 20"):
        syn.temporal_order(2, 10, gen())
    with pytest.raises(ValueError, match="steps: expected at least 2"):
        syn.adding(2, 1, gen())
