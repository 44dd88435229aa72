"""Python side of the fused CPU ops (``torch.ops.rnnlab.*``, C++ in ``csrc/``).

The C++ library registers each op's schema and CPU kernel with ``TORCH_LIBRARY``; here each op
gets a fake (meta) implementation, so ``torch.compile`` traces through it without graph breaks,
and each forward op gets its autograd formula: the fused backward kernel, or — when the backward
itself must be differentiable (``create_graph=True``) — the reference BPTT written in torch ops
(``rnnlab.bptt``), fed with the same saved tensors.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from ..bptt.gru import gru_backward
from ..bptt.lstm import lstm_backward
from ..bptt.rnn import rnn_backward
from . import joint, paired

try:
    from .. import _C  # (loading the library registers torch.ops.rnnlab.*)

    LOAD_ERROR: str | None = None
except ImportError as err:  # not built: the layers use the reference path
    _C = None
    LOAD_ERROR = f"{type(err).__name__}: {err}"

AVAILABLE = LOAD_ERROR is None
# built with oneDNN's RNN primitives (csrc/onednn.cpp; needs the oneDNN wheels at install time)
ONEDNN = AVAILABLE and hasattr(torch.ops.rnnlab, "onednn_fwd")
ONEDNN_KINDS = {"tanh": 0, "relu": 1, "lstm": 2, "gru": 3}


def _dx(x: Tensor, need: bool) -> Tensor:
    return x.new_empty(x.shape) if need else x.new_empty(0)


def _maybe(t: Tensor | None) -> Tensor | None:
    return t if t is not None and t.numel() > 0 else None


def _flip(t: Tensor | None) -> Tensor | None:
    """``t`` reversed in time (dim 0); None and empty tensors pass through."""
    return t.flip(0) if t is not None and t.numel() > 0 else t


def _same(t: Tensor | None) -> Tensor | None:
    return t


def _into(ctx: Any) -> Tensor | None:
    """The dx a joined backward adds into (``joint.py``); None for an op's own node."""
    return getattr(ctx, "dx_into", None)


def _reverse_arg(inputs: tuple, index: int) -> bool:
    """The op's trailing ``reverse`` argument (False when the call left it to its default)."""
    return bool(inputs[index]) if len(inputs) > index else False


class _Padded:
    """Packed ``(N, ·)`` rows ↔ padded ``(T, B, ·)`` steps, for the reference backward (double
    backward) of an op that ran on packed rows. Padded states are frozen as the padded layout's
    kernels leave them: after a sequence's end its last state; for a reverse run, the initial
    state (its reverse pass starts from it at its last step)."""

    def __init__(self, batch_sizes: Tensor, reverse: bool, device: torch.device) -> None:
        self.reverse = reverse
        steps, batch = batch_sizes.numel(), int(batch_sizes[0])
        valid = torch.arange(batch).unsqueeze(0) < batch_sizes.unsqueeze(1)  # (T, B)
        self.valid = valid.to(device)
        self.mask = self.valid.unsqueeze(-1)  # (T, B, 1)
        self.steps, self.batch = steps, batch

    def pad(self, rows: Tensor | None) -> Tensor | None:
        if rows is None:
            return None
        out = rows.new_zeros(self.steps, self.batch, rows.shape[-1])
        return out.masked_scatter(self.mask, rows.contiguous())

    def pad_states(self, rows: Tensor, initial: Tensor) -> Tensor:
        padded = self.pad(rows)
        if self.reverse:
            return torch.where(self.mask, padded, initial.unsqueeze(0))
        # forward: each sequence's last state carried over its padded steps
        lengths = self.valid.sum(0)  # (B,)
        last = padded[lengths - 1, torch.arange(self.batch, device=padded.device)]  # (B, H)
        return torch.where(self.mask, padded, last.unsqueeze(0))

    def pack(self, padded: Tensor) -> Tensor:
        return padded[self.valid]


# op name → (op, setup_context, backward, backward op name, plan, result) of the ops whose
# autograd formula `call` applies in eager mode through `_Eager` (setup_context and backward: the
# functions torch.library registers for tracing; backward = plan → op → result, see `_formula`)
_EAGER: dict[str, tuple[Any, ...]] = {}


class _Eager(torch.autograd.Function):
    """A fused forward op under its registered autograd formula, without torch.library's Python
    wrapper around it. That wrapper rebuilds the op's argument list from its schema on every call
    (`fill_defaults`: 34 µs of a 124 µs one-step LSTM forward + backward). The old-style
    `forward(ctx, …)` skips the signature binding a `setup_context` Function pays per call (one-step
    LSTM layer, training: 184 µs with the wrapper, 168 with `setup_context`, 141 this way); it is
    not usable under torch.func transforms, where `call` keeps the registered path."""

    @staticmethod
    def forward(ctx: Any, *args: Any) -> Any:  # args: the op's arguments, all given, then its name
        ctx.op_name = args[-1]
        op, setup = _EAGER[ctx.op_name][:2]
        with torch._C._AutoDispatchBelowAutograd():
            output = op(*args[:-1])
        setup(ctx, args[:-1], output)
        return output

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple:
        return (*_EAGER[ctx.op_name][2](ctx, *grads), None)


_OPS: dict[str, Any] = {}  # name → torch.ops.rnnlab.<name>.default (looked up once)


def call(name: str, needs_grad: bool, *args: Any) -> Any:
    """``torch.ops.rnnlab.<name>(*args)``, every argument given. With nothing to differentiate it
    goes straight to the CPU kernel (torch.library's autograd wrapper cost 15–80 µs a call even
    under no_grad: LSTM B=1 H=128 inference 0.349 → 0.298 ms); with gradients in eager mode through
    `_Eager`; while torch.compile traces or a torch.func transform runs, as registered."""
    op = _OPS.get(name) or _OPS.setdefault(name, getattr(torch.ops.rnnlab, name).default)
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return op(*args)
    if not needs_grad:
        held = paired.current()
        if held is not None and held.takes(name, args):
            return held.run(name, args)
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)
    calls = joint.current()
    if calls is not None and calls.takes(name, args):
        return calls.run(name, args)
    native = _NATIVE.get(name)
    if native is not None and args[-1] is None:  # dense: the C++ node (layer_train.cpp)
        out = native(*args[:-1])
        if out is not None:
            return out
    return _Eager.apply(*args, name) if name in _EAGER else op(*args)


# op name → its C++ training entry (csrc/layer_train.cpp): the forward op's arguments but the
# trailing batch_sizes → the op's outputs with a C++ autograd node, or None when not handled
_NATIVE: dict[str, Any] = (
    {"rnn_fwd": _C.rnn_train, "gru_fwd": _C.gru_train, "lstm_fwd": _C.lstm_train} if AVAILABLE else {}
)


def _slow_backward(name: str, saved: tuple, attrs: dict, needs: tuple, grads: tuple) -> tuple:
    """A C++ node's double backward (create_graph=True): the registered formula's backward on a
    stand-in context, which then runs the differentiable reference BPTT."""
    ctx = SimpleNamespace(saved_tensors=saved, needs_input_grad=needs, batch_sizes=None, **attrs)
    return _EAGER[name][2](ctx, *grads)


def directions(pair: bool) -> AbstractContextManager[None]:
    """Around the fused forward ops of a bidirectional layer's two directions (all on one ``x``):
    with gradients, one autograd node whose backward makes one dx where that saves memory
    (``joint.py``); without, and with ``pair``, the two ops at once, one per core (``paired.py``).
    In eager mode; under torch.compile and torch.func transforms they run as usual."""
    stack = ExitStack()
    stack.enter_context(joint.joint_backward(_EAGER, _C.both if pair else None))
    if pair:
        stack.enter_context(paired.paired_forward(_C.both))  # (exits first: the held call runs)
    return stack


# A backward's first half: ("op", the fused backward op's arguments), ("grads", the gradients the
# op would return: the reference BPTT ran) or ("done", the formula's result: nothing to do)
Plan = tuple[str, tuple]


def _formula(cell: str, setup: Any, plan: Any, result: Any) -> None:
    """Registers ``<cell>_fwd``'s autograd formula: setup, then backward = plan → op → result."""
    backward_op = getattr(torch.ops.rnnlab, f"{cell}_bwd").default

    def backward(ctx: Any, *grads: Tensor | None) -> tuple:
        kind, value = plan(ctx, *grads)
        if kind == "done":
            return value
        return result(ctx, backward_op(*value) if kind == "op" else value)

    torch.library.register_autograd(f"rnnlab::{cell}_fwd", backward, setup_context=setup)
    forward_op = getattr(torch.ops.rnnlab, f"{cell}_fwd").default
    _EAGER[f"{cell}_fwd"] = (forward_op, setup, backward, f"rnnlab::{cell}_bwd", plan, result)


def _register() -> None:
    lib = "rnnlab::"

    # --- fake implementations: shapes and dtypes only ------------------------------------------
    @torch.library.register_fake(lib + "rnn_fwd")
    def _(x, mask, h0, w_ih, w_hh, b_ih, b_hh, relu, reverse=False, batch_sizes=None):  # type: ignore[no-untyped-def]
        if batch_sizes is not None:  # packed: x (N, I) → (N, H)
            return x.new_empty(x.shape[0], h0.shape[1])
        return x.new_empty(x.shape[0], x.shape[1], h0.shape[1])

    @torch.library.register_fake(lib + "rnn_bwd")
    def _(dhs, x, mask, h0, w_ih, w_hh, hs, relu, need_dx, reverse=False, batch_sizes=None,  # type: ignore[no-untyped-def]
          dx_into=None):
        return (_dx(x, need_dx and dx_into is None), torch.empty_like(h0), torch.empty_like(w_ih),
                torch.empty_like(w_hh), w_hh.new_empty(w_hh.shape[0]))

    @torch.library.register_fake(lib + "lstm_fwd")
    def _(x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse=False, batch_sizes=None):  # type: ignore[no-untyped-def]
        if batch_sizes is not None:  # packed: x (N, I) → (N, ·)
            rows = x.shape[0]
            return (x.new_empty(rows, h0.shape[1]), x.new_empty(rows, c0.shape[1]),
                    x.new_empty(rows, w_ih.shape[0]))
        steps, batch = x.shape[0], x.shape[1]
        return (x.new_empty(steps, batch, h0.shape[1]), x.new_empty(steps, batch, c0.shape[1]),
                x.new_empty(steps, batch, w_ih.shape[0]))

    @torch.library.register_fake(lib + "lstm_bwd")
    def _(dhs, dcs, x, mask, h0, c0, w_ih, w_hh, w_hr, hs, cs, gates, need_dx,  # type: ignore[no-untyped-def]
          reverse=False, batch_sizes=None, dx_into=None):
        dw_hr = torch.empty_like(w_hr) if w_hr is not None else x.new_empty(0)
        return (_dx(x, need_dx and dx_into is None), torch.empty_like(h0), torch.empty_like(c0),
                torch.empty_like(w_ih), torch.empty_like(w_hh), w_ih.new_empty(w_ih.shape[0]), dw_hr)

    @torch.library.register_fake(lib + "gru_fwd")
    def _(x, mask, h0, w_ih, w_hh, b_ih, b_hh, after, keep, reverse=False, batch_sizes=None):  # type: ignore[no-untyped-def]
        hid, width = h0.shape[1], (4 if after else 3) * h0.shape[1]
        if batch_sizes is not None:  # packed: x (N, I) → (N, H), workspace (N or B rows, width)
            ws = x.new_empty(x.shape[0], width) if keep else x.new_empty(1, h0.shape[0], width)
            return x.new_empty(x.shape[0], hid), ws
        steps, batch = x.shape[0], x.shape[1]
        return (x.new_empty(steps, batch, hid), x.new_empty(steps if keep else 1, batch, width))

    @torch.library.register_fake(lib + "gru_bwd")
    def _(dhs, x, mask, h0, w_ih, w_hh, hs, ws, after, need_dx, reverse=False, batch_sizes=None,  # type: ignore[no-untyped-def]
          dx_into=None):
        return (_dx(x, need_dx and dx_into is None), torch.empty_like(h0), torch.empty_like(w_ih),
                torch.empty_like(w_hh), w_ih.new_empty(w_ih.shape[0]),
                w_hh.new_empty(w_hh.shape[0]))

    @torch.library.register_fake(lib + "rnn_step")
    def _(x, h, w_ih, w_hh, b_ih, b_hh, relu):  # type: ignore[no-untyped-def]
        return torch.empty_like(h)

    @torch.library.register_fake(lib + "lstm_step")
    def _(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr):  # type: ignore[no-untyped-def]
        return torch.empty_like(h), torch.empty_like(c)

    @torch.library.register_fake(lib + "gru_step")
    def _(x, h, w_ih, w_hh, b_ih, b_hh, after):  # type: ignore[no-untyped-def]
        return torch.empty_like(h)

    # --- autograd ---------------------------------------------------------------------------------
    def rnn_setup(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, mask, h0, w_ih, w_hh, b_ih, b_hh, relu = inputs[:8]
        ctx.set_materialize_grads(False)
        ctx.relu = relu
        ctx.reverse = _reverse_arg(inputs, 8)
        ctx.batch_sizes = inputs[9] if len(inputs) > 9 else None
        ctx.save_for_backward(x, mask, h0, w_ih, w_hh, output)

    def rnn_plan(ctx: Any, dhs: Tensor | None) -> Plan:
        x, mask, h0, w_ih, w_hh, hs = ctx.saved_tensors
        needs, rows = ctx.needs_input_grad, ctx.batch_sizes
        if dhs is None:
            return "done", (None,) * 10
        if torch.is_grad_enabled():  # double backward: differentiable reference BPTT
            packed = _Padded(rows, ctx.reverse, x.device) if rows is not None else None
            if packed is not None:  # the reference runs on padded steps with a mask
                dhs, x, hs, mask = packed.pad(dhs), packed.pad(x), packed.pad_states(hs, h0), packed.mask
            flip = _flip if ctx.reverse else _same  # a reverse run is a forward run in flipped time
            dx, dh0, dw_ih, dw_hh, db = rnn_backward(
                flip(dhs), flip(x), flip(mask), h0, w_ih, w_hh, flip(hs),
                "relu" if ctx.relu else "tanh", needs[0],
            )
            dx = flip(dx)
            if packed is not None and dx is not None:
                dx = packed.pack(dx)
            return "grads", (dx, dh0, dw_ih, dw_hh, db)
        return "op", (dhs, x, mask, h0, w_ih, w_hh, hs, ctx.relu, needs[0], ctx.reverse, rows, _into(ctx))

    def rnn_result(ctx: Any, grads: tuple) -> tuple:
        dx, dh0, dw_ih, dw_hh, db = grads
        needs = ctx.needs_input_grad
        return (_maybe(dx), None, dh0, dw_ih, dw_hh, db if needs[5] else None,
                db if needs[6] else None, None, None, None)

    _formula("rnn", rnn_setup, rnn_plan, rnn_result)

    def lstm_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = inputs[:9]
        ctx.set_materialize_grads(False)
        ctx.reverse = _reverse_arg(inputs, 9)
        ctx.batch_sizes = inputs[10] if len(inputs) > 10 else None
        ctx.save_for_backward(x, mask, h0, c0, w_ih, w_hh, w_hr, *output)

    def lstm_plan(ctx: Any, dhs: Tensor | None, dcs: Tensor | None, dg: Tensor | None) -> Plan:
        x, mask, h0, c0, w_ih, w_hh, w_hr, hs, cs, gates = ctx.saved_tensors
        needs, rows = ctx.needs_input_grad, ctx.batch_sizes
        if dg is not None or torch.is_grad_enabled():
            packed = _Padded(rows, ctx.reverse, x.device) if rows is not None else None
            if packed is not None:  # the reference runs on padded steps with a mask
                dhs, dcs, dg, x = packed.pad(dhs), packed.pad(dcs), packed.pad(dg), packed.pad(x)
                hs, cs = packed.pad_states(hs, h0), packed.pad_states(cs, c0)
                gates, mask = packed.pad(gates), packed.mask
            f = _flip if ctx.reverse else _same  # a reverse run is a forward run in flipped time
            grads = lstm_backward(f(dhs), f(dcs), f(dg), f(x), f(mask), h0, c0, w_ih, w_hh, w_hr,
                                  f(hs), f(cs), f(gates), needs[0])
            dx = f(grads[0])
            if packed is not None and dx is not None:
                dx = packed.pack(dx)
            return "grads", (dx, *grads[1:])
        if dhs is None and dcs is None:
            return "done", (None,) * 11
        return "op", (dhs, dcs, x, mask, h0, c0, w_ih, w_hh, w_hr, hs, cs, gates, needs[0], ctx.reverse,
                      rows, _into(ctx))

    def lstm_result(ctx: Any, grads: tuple) -> tuple:
        dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr = grads
        needs = ctx.needs_input_grad
        return (_maybe(dx), None, dh0, dc0, dw_ih, dw_hh, db if needs[6] else None,
                db if needs[7] else None, _maybe(dw_hr), None, None)

    _formula("lstm", lstm_setup, lstm_plan, lstm_result)

    def gru_setup(ctx: Any, inputs: tuple, output: tuple) -> None:
        x, mask, h0, w_ih, w_hh, b_ih, b_hh, after, keep = inputs[:9]
        ctx.set_materialize_grads(False)
        ctx.after = after
        ctx.reverse = _reverse_arg(inputs, 9)
        ctx.batch_sizes = inputs[10] if len(inputs) > 10 else None
        ctx.save_for_backward(x, mask, h0, w_ih, w_hh, *output)

    def gru_plan(ctx: Any, dhs: Tensor | None, dws: Tensor | None) -> Plan:
        x, mask, h0, w_ih, w_hh, hs, ws = ctx.saved_tensors
        needs, rows = ctx.needs_input_grad, ctx.batch_sizes
        if dws is not None or torch.is_grad_enabled():
            packed = _Padded(rows, ctx.reverse, x.device) if rows is not None else None
            if packed is not None:  # the reference runs on padded steps with a mask
                dhs, dws, x = packed.pad(dhs), packed.pad(dws), packed.pad(x)
                hs, ws, mask = packed.pad_states(hs, h0), packed.pad(ws), packed.mask
            f = _flip if ctx.reverse else _same  # a reverse run is a forward run in flipped time
            grads = gru_backward(f(dhs), f(dws), f(x), f(mask), h0, w_ih, w_hh, f(hs), f(ws),
                                 ctx.after, needs[0])
            dx = f(grads[0])
            if packed is not None and dx is not None:
                dx = packed.pack(dx)
            return "grads", (dx, *grads[1:])
        if dhs is None:
            return "done", (None,) * 11
        return "op", (dhs, x, mask, h0, w_ih, w_hh, hs, ws, ctx.after, needs[0], ctx.reverse, rows,
                      _into(ctx))

    def gru_result(ctx: Any, grads: tuple) -> tuple:
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = grads
        needs = ctx.needs_input_grad
        return (_maybe(dx), None, dh0, dw_ih, dw_hh, db_ih if needs[5] else None,
                db_hh if needs[6] else None, None, None, None, None)

    _formula("gru", gru_setup, gru_plan, gru_result)

    if ONEDNN:
        from . import onednn_autograd  # (imports this module: registered from here, once)

        onednn_autograd.register()


if AVAILABLE:
    _register()
    _C.set_slow_backward(_slow_backward)
