"""The benchmark grid of shared/BENCH.md and, for each case, our model and its peer.

Peers: ``torch.nn.RNN/LSTM/GRU`` (oneDNN for LSTM, the native loop for RNN/GRU); for variants torch
has no layer for (GRU ``reset="before"``), the eager loop a user would write today (rnnlab's own
readable cell stepped in Python, autograd through the loop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab
from rnnlab.cells import gru_cell

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
OURS = {"rnn": rnnlab.RNN, "lstm": rnnlab.LSTM, "gru": rnnlab.GRU}


@dataclass(frozen=True)
class Case:
    group: str
    cell: str
    steps: int
    batch: int
    hidden: int
    layers: int = 1
    bidirectional: bool = False
    packed: bool = False
    proj: int = 0
    variant: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def name(self) -> str:
        extra = "".join(
            [
                f" L{self.layers}" if self.layers > 1 else "",
                " bi" if self.bidirectional else "",
                " packed" if self.packed else "",
                f" proj{self.proj}" if self.proj else "",
                "".join(f" {k}={v}" for k, v in self.variant.items()),
            ]
        )
        return f"{self.cell.upper()} T={self.steps} B={self.batch} H={self.hidden}{extra}"


def grid(quick: bool = False) -> list[Case]:
    """Every case of BENCH.md (``quick``: a handful, for smoke tests)."""
    if quick:
        return [Case("main", c, 20, b, 32) for c in GATES for b in (1, 8)] + [
            Case("variant", "gru", 20, 8, 32, variant={"reset": "before"}),
            Case("packed", "lstm", 20, 8, 32, packed=True),
        ]
    cases = [
        Case("main", c, 100, b, h) for c in GATES for b in (1, 8, 32, 64) for h in (64, 128, 256, 512)
    ]
    cases += [Case("long", c, 1000, b, h) for c in GATES for b in (1, 8) for h in (64, 128)]
    cases += [
        Case("deepbench", "rnn", 672, 1, 32),
        Case("deepbench", "rnn", 96, 1, 64),
        Case("deepbench", "lstm", 150, 1, 256),
    ]
    cases += [Case("bidir", c, 100, 32, 256, layers=2, bidirectional=True) for c in GATES]
    cases += [Case("packed", c, 100, 32, 256, packed=True) for c in GATES]
    cases += [Case("proj", "lstm", 100, b, 256, proj=128) for b in (1, 32)]
    cases += [Case("variant", "gru", 100, b, 256, variant={"reset": "before"}) for b in (1, 32)]
    return cases


class EagerGRUBefore(nn.Module):
    """What a user writes today for Cho's GRU: the cell stepped in Python under autograd."""

    def __init__(self, ours: nn.Module) -> None:
        super().__init__()
        self.ours = ours

    def forward(self, x: Tensor, hx: Tensor) -> tuple[Tensor, Tensor]:
        m = self.ours
        h = hx[0]
        outs = []
        for x_t in x.unbind(0):
            h = gru_cell(x_t, h, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0, "before")
            outs.append(h)
        return torch.stack(outs), h


def packed_lengths(case: Case, seed: int = 0) -> Tensor:
    """A packed case's sequence lengths: uniform in [T/2, T] (BENCH.md), fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(case.steps // 2, case.steps + 1, (case.batch,), generator=gen)


def step_rows(case: Case, seed: int = 0) -> tuple[int, ...]:
    """The rows each step runs: B, or for a packed case its running sequences (batch_sizes)."""
    if not case.packed:
        return (case.batch,) * case.steps
    lengths = packed_lengths(case, seed)
    return tuple(int((lengths > t).sum()) for t in range(case.steps))


def build(case: Case, seed: int = 0) -> tuple[nn.Module, nn.Module, Callable[[], tuple]]:
    """(ours, peer, make_input) with identical weights; make_input gives the forward arguments."""
    torch.manual_seed(seed)
    kw: dict = {"num_layers": case.layers, "bidirectional": case.bidirectional}
    if case.proj:
        kw["proj_size"] = case.proj
    ours = OURS[case.cell](case.hidden, case.hidden, **kw, **case.variant)
    if case.variant:
        peer: nn.Module = EagerGRUBefore(ours)
    else:
        peer = TORCH[case.cell](case.hidden, case.hidden, **kw)
        ours.load_state_dict(peer.state_dict())
    x = torch.randn(case.steps, case.batch, case.hidden)
    n = case.layers * (2 if case.bidirectional else 1)
    h0 = torch.zeros(n, case.batch, case.proj or case.hidden)
    c0 = torch.zeros(n, case.batch, case.hidden)

    def state() -> object:  # initial state with gradients, as the protocol asks
        h = h0.detach().requires_grad_()
        return (h, c0.detach().requires_grad_()) if case.cell == "lstm" else h

    if case.packed:
        lengths = packed_lengths(case, seed)

        def make() -> tuple:
            xi = x.detach().requires_grad_()
            return (pack_padded_sequence(xi, lengths, enforce_sorted=False), state()), xi

    else:

        def make() -> tuple:
            xi = x.detach().requires_grad_()
            return (xi, state()), xi

    return ours, peer, make


def workload(model: nn.Module, make: Callable[[], tuple], train: bool) -> Callable[[], None]:
    """Forward under no_grad ("infer"), or forward + backward of out.sum() ("train")."""
    params = list(model.parameters())

    def infer() -> None:
        args, _ = make()
        with torch.no_grad():
            model(*args)

    def step() -> None:
        args, _ = make()
        out, _ = model(*args)
        data = out.data if hasattr(out, "batch_sizes") else out
        data.sum().backward()
        for p in params:
            p.grad = None

    return step if train else infer
