"""Text generation from a trained language model, one token at a time.

The prompt runs through the layers once (a whole-sequence forward); after that each new token is
one ``LanguageModel.step`` that carries the recurrent state — the prefix is never re-run, so every
token costs the same whatever the length so far.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from .data.text import Vocab
from .models import LanguageModel


def pick(logits: Tensor, temperature: float, top_k: int, gen: torch.Generator) -> int:
    """Sample from ``softmax(logits / temperature)`` restricted to the ``top_k`` largest (0: all)."""
    logits = logits.double() / temperature
    if 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))


def sample(
    model: LanguageModel,
    vocab: Vocab,
    prompt: str = "",
    length: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> Iterator[str]:
    """Yield the generated text piece by piece (one token each) after ``prompt``."""
    if length < 0:
        raise ValueError(f"length: expected an int >= 0, got {length}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k: expected an int >= 0 (0: no limit), got {top_k}")
    ids = vocab.encode(prompt, strict=True)
    if ids.numel() == 0:  # no prompt: start after a line break (or the first token)
        ids = torch.tensor([vocab.index.get("\n", 0)])
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        logits, state = model(ids[None], None)  # (1, P, V): the prompt in one pass
        logits = logits[0, -1]
        text, out = vocab.decode(ids), []
        for _ in range(length):
            tok = pick(logits, temperature, top_k, gen)
            out.append(tok)
            new = vocab.decode([*ids.tolist(), *out])
            yield new[len(text) :]
            text = new
            logits, state = model.step(torch.tensor([tok]), state)  # (1, V)
            logits = logits[0]
