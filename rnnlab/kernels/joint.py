"""The two directions of a bidirectional layer in training (fused kernels, eager mode).

The forward ops called inside ``with joint_backward(formulas, both):`` run at once, without
autograd; on leaving the block their autograd node(s) are made, and the outputs already returned
become the nodes' outputs (the same tensor objects). How, by measurement (BENCHMARKS.md):

* **Forwards at once** (``both``: one direction's W_hh fits one core's L2): the first call is held
  back and runs with the second, one per core (``paired.py``, ``rnnlab._C.both``).
* **One node, one dx** where that saves memory. Both directions read the same ``x (T, B, F)``,
  so each backward makes a full ``dx``; as two nodes the first one waits in autograd's input
  buffer while the second is made (2-layer bidirectional RNN, H=256, B=32: 6.5 MB each, at the
  step's peak). One node runs the backwards in turn, the second adding its rows into the first's
  dx (the ops' ``dx_into``). But one node keeps both directions' saved tensors until it ends, so
  this pays only where a direction's saved outputs are smaller than ``x``: the RNN (states,
  H per row, against 2H from the second layer on), not the LSTM and GRU (gate workspaces of
  3–5 H per row).
* **One node, backwards at once** otherwise, where the forwards ran at once: each direction's
  fused backward on its core (LSTM and GRU; two dx, more memory than in turn, still below
  torch's on the bench grid).
* Else one node per direction.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor

from .paired import PairedCalls, block

_local = threading.local()


class _Sub:
    """The context one joined op's setup and backward functions see (the attributes they use)."""

    def __init__(self, name: str, args: tuple, outputs: tuple[Tensor, ...]) -> None:
        self.name, self.args, self.outputs = name, args, outputs
        self.n_args, self.n_out = len(args), len(outputs)
        self.to_save: tuple = ()
        self.saved_tensors: tuple = ()  # set for its backward
        self.needs_input_grad: tuple[bool, ...] = ()
        self.dx_into: Tensor | None = None

    def set_materialize_grads(self, value: bool) -> None:  # the joint node sets it (False)
        pass

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        self.to_save = tensors


class JointCalls:
    """The forward ops of one ``joint_backward`` block (all on the same ``x``)."""

    def __init__(self, formulas: dict[str, tuple[Any, ...]], both: Any = None) -> None:
        self.formulas = formulas  # op name → its autograd formula's parts: ops._EAGER
        self.subs: list[_Sub] = []
        self.pairs = PairedCalls(both) if both is not None else None  # forwards two at a time

    def takes(self, name: str, args: tuple) -> bool:
        return name in self.formulas and (not self.subs or args[0] is self.subs[0].args[0])

    def run(self, name: str, args: tuple) -> Any:
        op, setup = self.formulas[name][:2]
        if self.pairs is not None and self.pairs.takes(name, args):
            output = self.pairs.run(name, args)  # (the first: empty tensors, filled later)
        else:
            with torch._C._AutoDispatchBelowAutograd():
                output = op(*args)
        outputs = output if isinstance(output, tuple) else (output,)
        sub = _Sub(name, args, outputs)
        setup(sub, args, output)
        self.subs.append(sub)
        return output

    def finish(self) -> None:
        """Makes the node(s): one for all ops where that saves memory or where their forwards
        ran at once (then so do their backwards), else one per op (module docstring)."""
        if self.pairs is not None:
            self.pairs.finish()
        if not self.subs:
            return
        x = self.subs[0].args[0]
        saved_outputs = sum(o.numel() * o.element_size() for o in self.subs[-1].outputs)
        saves_memory = len(self.subs) > 1 and saved_outputs < x.numel() * x.element_size()
        # else, where the forwards ran at once, so do the backwards (one node, two dx)
        at_once = not saves_memory and self.pairs is not None and len(self.subs) == 2
        both = self.pairs.both if at_once and self.pairs is not None else None  # (narrows pairs)
        for group in [self.subs] if saves_memory or at_once else [[sub] for sub in self.subs]:
            _Joint.apply(group, self.formulas, both, *[a for sub in group for a in sub.args])


def current() -> JointCalls | None:
    return getattr(_local, "calls", None)


def joint_backward(formulas: dict[str, tuple[Any, ...]], both: Any = None
                   ) -> AbstractContextManager[None]:
    """Forward ops called in this block (on one ``x``) get one autograd node (module docstring);
    with ``both`` (``rnnlab._C.both``) two of them run at once, one per core (``paired.py``)."""
    return block(_local, JointCalls(formulas, both))


class _Joint(torch.autograd.Function):
    """The node of one or more joined ops: their saved tensors as usual (save_for_backward, so a
    second-order backward runs through it too). Backward: with ``both``, the two ops' fused
    backward at once, one per core; else in reverse call order, each adding its dx into the one
    made before when that one is ours to write."""

    @staticmethod
    def forward(ctx: Any, subs: list[_Sub], formulas: dict, both: Any, *flat: Any) -> tuple[Tensor, ...]:
        ctx.set_materialize_grads(False)
        ctx.subs, ctx.formulas, ctx.both = subs, formulas, both
        ctx.save_for_backward(*[t for sub in subs for t in sub.to_save])
        outputs = tuple(o for sub in subs for o in sub.outputs)
        ctx.counts = [(sub.n_args, sub.n_out, len(sub.to_save)) for sub in subs]
        for sub in subs:  # no references from the node to its outputs but the saved ones (a cycle)
            sub.args = sub.outputs = sub.to_save = ()
        return outputs

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple:
        saved, subs = ctx.saved_tensors, ctx.subs
        needs = ctx.needs_input_grad[3:]
        # each op's first position in the flat arguments, the outputs and the saved tensors
        starts = [(0, 0, 0)]
        for n_args, n_out, n_saved in ctx.counts:
            a, o, v = starts[-1]
            starts.append((a + n_args, o + n_out, v + n_saved))
        for k, sub in enumerate(subs):
            (a0, _, v0), (a1, _, v1) = starts[k], starts[k + 1]
            sub.saved_tensors, sub.needs_input_grad = saved[v0:v1], needs[a0:a1]
        out_grads = [grads[starts[k][1]:starts[k + 1][1]] for k in range(len(subs))]
        got = _at_once(ctx, out_grads) if ctx.both is not None else None
        if got is None:
            got = _in_turn(ctx, out_grads)
        result: list[Tensor | None] = []
        dx = None
        for g in got:  # (several dx: each made by our backward; summed in place without a graph)
            if g[0] is not None:
                dx = g[0] if dx is None else dx + g[0] if torch.is_grad_enabled() else dx.add_(g[0])
            result += [None, *g[1:]]
        result[0] = dx  # x is the same tensor in every op: its gradient once
        for sub in subs:
            sub.saved_tensors = ()
        return (None, None, None, *result)


def _in_turn(ctx: Any, out_grads: list[tuple]) -> list[list]:
    """The ops' backward in reverse call order; each adds its dx into the last one's when that
    one is ours to write (made without a graph), and then returns None for it."""
    got: list[list] = [[] for _ in ctx.subs]
    dx = None
    for k in reversed(range(len(ctx.subs))):
        sub = ctx.subs[k]
        own = dx is not None and not torch.is_grad_enabled() and dx.is_contiguous()
        sub.dx_into = dx if own else None
        got[k] = list(ctx.formulas[sub.name][2](sub, *out_grads[k]))
        sub.dx_into = None
        if got[k][0] is not None:
            dx = got[k][0]
    return got


def _at_once(ctx: Any, out_grads: list[tuple]) -> list[list] | None:
    """Both fused backward ops at once (``rnnlab._C.both``), each making its own dx; None when
    either is not a fused call (nothing to do, or the reference BPTT of a double backward)."""
    plans = [ctx.formulas[sub.name][4](sub, *g) for sub, g in zip(ctx.subs, out_grads, strict=True)]
    if any(kind != "op" for kind, _ in plans):
        return None
    name = ctx.formulas[ctx.subs[0].name][3]
    outs = ctx.both(name, plans[0][1], plans[1][1])
    return [list(ctx.formulas[sub.name][5](sub, out)) for sub, out in zip(ctx.subs, outs, strict=True)]
