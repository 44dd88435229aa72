"""Batch-layout helpers for the layers: input/state validation and layout, lengths → masks,
PackedSequence I/O.

Inside the layers every sequence is time-major ``(T, B, F)`` and padded; ``lengths`` (or the
lengths carried by a ``PackedSequence``) become a mask. These helpers convert at the boundary.
The exception: packed input on the fused kernels stays packed (``last_rows`` then finds each
sequence's final state in it).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import _checks as check


def prepare_input(
    input: object, lengths: object, input_size: int, batch_first: bool, ref: Tensor
) -> tuple[Tensor, Tensor | None, bool]:
    """Validate ``input``/``lengths`` against the parameters ``ref``; return time-major ``x``,
    int64 lengths (or None) and whether the input was batched. A ``PackedSequence`` comes back
    padded in its sorted (longest-first) order."""
    if isinstance(input, PackedSequence):
        check_packed(input, lengths, input_size, ref)
        x, lens = unpack_sorted(input)
        return x, lens.to(x.device), True
    x = check.tensor("input", input)
    batched = check.input_rank("input", x, (2, 3))
    check.feature_size("input", x, input_size)
    check.matches_params("input", x, ref)
    if not batched:
        x = x.unsqueeze(1)
    elif batch_first:
        x = x.transpose(0, 1)
    if 0 in x.shape[:2]:
        check.nonempty("input", x, {"T (time steps)": 0, "B (batch size)": 1})
    lens = None
    if lengths is not None:
        lens = check.lengths(lengths, x.shape[1], x.shape[0], x.device)
    return x, lens, batched


def check_packed(input: PackedSequence, lengths: object, input_size: int, ref: Tensor) -> None:
    """Validate a ``PackedSequence`` input (its data against the parameters ``ref``)."""
    if lengths is not None:
        raise ValueError("lengths: must be None for PackedSequence input (it has them)")
    check.matches_params("input", input.data, ref)
    check.feature_size("input", input.data, input_size)


def last_rows(batch_sizes: Tensor, device: torch.device) -> Tensor:
    """Row of each sequence's last step in packed data (sorted order): step t's rows start at
    ``Σ_{s<t} n_s`` and sequence b is row b of each step it runs in; its length is the number of
    steps with ``n_t > b``."""
    n = batch_sizes.to(torch.int64)
    starts = torch.cumsum(n, 0) - n  # (T,)
    b = torch.arange(int(n[0]))
    lengths = (n.unsqueeze(0) > b.unsqueeze(1)).sum(1)  # (B,)
    return (starts[lengths - 1] + b).to(device)


def prepare_state(
    hx: object, x: Tensor, batched: bool, shapes: list[tuple[int, ...]]
) -> tuple[Tensor, ...]:
    """Validate ``hx`` against the expected batched ``shapes`` (or make zeros); return batched
    state tensors. LSTM states are a pair ``(h_0, c_0)``, the others a single ``h_0``."""
    names = ["hx[0] (h_0)", "hx[1] (c_0)"] if len(shapes) == 2 else ["hx"]
    if hx is None:
        return tuple(x.new_zeros(s) for s in shapes)
    if len(shapes) == 2:
        if not (isinstance(hx, tuple | list) and len(hx) == 2):
            raise TypeError(f"hx: expected a tuple (h_0, c_0) of tensors, got {type(hx).__name__}")
        given = tuple(hx)
    else:
        if isinstance(hx, tuple | list):
            raise TypeError("hx: expected a single tensor h_0, got a tuple")
        given = (hx,)
    states = []
    for name, h, shape in zip(names, given, shapes):
        h = check.tensor(name, h)
        expected = shape if batched else (shape[0], shape[2])
        what = "num_layers * num_directions, batch, hidden" if batched else "unbatched"
        check.same_shape(name, h, expected, what)
        check.matches_params(name, h, x)
        states.append(h if batched else h.unsqueeze(1))
    return tuple(states)


def step_mask(lengths: Tensor, steps: int) -> Tensor:
    """``(T, B, 1)`` bool, true where ``t < lengths[b]``."""
    t = torch.arange(steps, device=lengths.device).unsqueeze(1)  # (T, 1)
    return (t < lengths.unsqueeze(0)).unsqueeze(-1)


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
