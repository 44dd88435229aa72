"""Generation: streaming equals re-running the prefix; sampling options behave."""

from __future__ import annotations

import pytest
import torch

from rnnlab.data.text import Vocab
from rnnlab.generate import pick, sample
from rnnlab.models import LanguageModel, ModelConfig


@pytest.fixture
def lm():
    torch.manual_seed(0)
    vocab = Vocab.build("abcdefgh \n", "char")
    return LanguageModel(
        ModelConfig(kind="lm", cell="gru", hidden=16, embed=8, layers=2, vocab_size=len(vocab))
    ).eval(), vocab


def test_step_carries_state_like_the_whole_sequence(lm):
    model, vocab = lm
    ids = vocab.encode("abc defg")
    full, _ = model(ids[None])  # (1, T, V)
    logits, state = model(ids[None, :3])
    for t in range(3, ids.numel()):
        step_logits, state = model.step(ids[t : t + 1], state)
        assert torch.allclose(step_logits[0], full[0, t], atol=1e-5)


def test_sample_is_seeded_and_greedy_with_top_k_1(lm):
    model, vocab = lm
    a = "".join(sample(model, vocab, "ab", 30, temperature=1.0, seed=3))
    b = "".join(sample(model, vocab, "ab", 30, temperature=1.0, seed=3))
    assert a == b and len(a) == 30
    greedy = "".join(sample(model, vocab, "ab", 10, top_k=1, seed=7))
    ids = vocab.encode("ab").tolist()
    for _ in range(10):  # the argmax continuation, computed by re-running the whole prefix each time
        logits, _ = model(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    assert greedy == vocab.decode(ids[2:])


def test_top_k_never_picks_outside_the_k_best():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([0.0, 5.0, 4.0, -1.0, 3.0])
    assert {pick(logits, 2.0, 2, g) for _ in range(200)} == {1, 2}


def test_bad_sampling_arguments(lm):
    model, vocab = lm
    for kw, msg in (
        ({"temperature": 0.0}, "temperature: expected a number > 0"),
        ({"top_k": -1}, "top_k: expected an int >= 0"),
        ({"length": -5}, "length: expected"),
    ):
        with pytest.raises(ValueError, match=msg):
            next(sample(model, vocab, "a", **kw))
    with pytest.raises(ValueError, match="prompt: characters"):
        next(sample(model, vocab, "XYZ"))
