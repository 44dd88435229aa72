"""Batch-layout helpers for the layers: lengths → masks, in-sequence reversal, PackedSequence I/O.

Inside the layers every sequence is time-major ``(T, B, F)`` and padded; ``lengths`` (or the
lengths carried by a ``PackedSequence``) become a mask. These helpers convert at the boundary.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """``(T, B, 1)`` bool, true where ``t < lengths[b]``."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(1)  # (T, 1)
    return (t < lengths.unsqueeze(0)).unsqueeze(-1)


def reverse_index(lengths: Tensor, steps: int) -> Tensor:
    """``(T, B)`` gather index reversing each sequence within its own length; padding stays put.

    ``idx[t, b] = lengths[b] - 1 - t`` for ``t < lengths[b]``, else ``t``. It is an involution, so
    the same index un-reverses.
    """
    t = torch.arange(steps, device=lengths.device).unsqueeze(1)  # (T, 1)
    flipped = lengths.unsqueeze(0) - 1 - t  # (T, B)
    return torch.where(t < lengths.unsqueeze(0), flipped, t.expand_as(flipped))


def reverse(x: Tensor, index: Tensor | None) -> Tensor:
    """Reverse ``x (T, B, F)`` in time, per sequence when ``index`` (from ``reverse_index``) is given."""
    if index is None:
        return x.flip(0)
    return x.gather(0, index.unsqueeze(-1).expand_as(x))


def unpack_sorted(seq: PackedSequence) -> tuple[Tensor, Tensor]:
    """``PackedSequence`` → padded ``(T, B, F)`` in its *sorted* (longest first) batch order, and
    int64 lengths. ``seq.sorted_indices`` maps that order to the caller's."""
    as_sorted = PackedSequence(seq.data, seq.batch_sizes, None, None)
    padded, lengths = pad_packed_sequence(as_sorted, batch_first=False)
    return padded, lengths


def pack_sorted(out: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack padded ``out (T, B, F)``, in ``like``'s sorted batch order, with ``like``'s layout."""
    batch_sizes = like.batch_sizes  # (T,) on the CPU
    valid = torch.arange(out.shape[1]).unsqueeze(0) < batch_sizes.unsqueeze(1)  # (T, B)
    data = out[valid.to(out.device)]  # (N, F), time-major like packed data
    return PackedSequence(data, batch_sizes, like.sorted_indices, like.unsorted_indices)
