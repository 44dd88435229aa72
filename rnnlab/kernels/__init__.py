"""Kernel dispatch: the fused CPU ops when built, the reference BPTT Functions otherwise.

``backend(device)`` says which path a layer on ``device`` uses; ``use_reference()`` (a context
manager) or the environment variable ``RNNLAB_BACKEND=reference`` forces the reference path.
The two paths take the same arguments and return the same tensors (including the workspace
layout), so they are interchangeable and tested against each other.

Within the fused path, dense fp32 inference may go to oneDNN's RNN primitives instead
(``uses_onednn``: a rule measured per CPU, cell, hidden size, batch and thread count; override with
``onednn_mode`` or ``RNNLAB_ONEDNN``); ``stream_step`` is the one-call step behind ``Layer.step``,
``cell_step`` the one behind the cell modules' no-grad ``forward``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor

from ..bptt import GRUFunction, LSTMFunction, RNNFunction
from . import bands, cell_grad, ops
from .ops import _C, AVAILABLE, LOAD_ERROR, ONEDNN, ONEDNN_KINDS

_forced_reference = os.environ.get("RNNLAB_BACKEND", "").lower() == "reference"
# "auto" (measured rule below), "always" or "never"
_onednn_mode = os.environ.get("RNNLAB_ONEDNN", "auto").lower()

__all__ = ["AVAILABLE", "LOAD_ERROR", "ONEDNN", "backend", "cell_grad", "cell_step", "empty_cache",
           "gemm_library", "gru", "lstm", "onednn_mode", "reference_forced", "rnn", "stream_step",
           "use_reference", "uses_onednn", "workspace_cache"]


_FUSED_DTYPES = (torch.float32, torch.float64)


def _serves(on_cpu: bool, dtype: torch.dtype) -> bool:
    return AVAILABLE and not _forced_reference and on_cpu and dtype in _FUSED_DTYPES


def backend(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> str:
    """``"fused"`` when the compiled CPU kernels serve ``device``/``dtype``, else ``"reference"``."""
    return "fused" if _serves(torch.device(device).type == "cpu", dtype) else "reference"


@contextmanager
def use_reference(enabled: bool = True) -> Iterator[None]:
    """Run the layers on the reference path inside the ``with`` block."""
    global _forced_reference
    previous, _forced_reference = _forced_reference, enabled
    try:
        yield
    finally:
        _forced_reference = previous


@contextmanager
def onednn_mode(mode: str) -> Iterator[None]:
    """Inside the block, dense fp32 sequences go to oneDNN's primitives ``"always"``, ``"never"``,
    or by the measured rule (``"auto"``, the default; see ``uses_onednn``)."""
    global _onednn_mode
    if mode not in ("auto", "always", "never"):
        raise ValueError(f"mode: expected 'auto', 'always' or 'never', got {mode!r}")
    previous, _onednn_mode = _onednn_mode, mode
    try:
        yield
    finally:
        _onednn_mode = previous


def reference_forced() -> bool:
    """Whether the reference path is forced (``use_reference`` / ``RNNLAB_BACKEND=reference``)."""
    return _forced_reference


# One no-grad step of a stacked unidirectional layer in a single C call (csrc/step.cpp):
# stream_step(kind, x, hx, params, names) → (output, h_n), or None when the call needs the
# validated path (gradients on, any mismatch). None when the extension is not built.
stream_step = _C.stream_step if AVAILABLE else None
# The same for a cell module (RNNCell/LSTMCell/GRUCell.forward): cell_step(kind, x, hx, params)
# → h' or (h', c'), or None (gradients needed, any mismatch).
cell_step = _C.cell_step if AVAILABLE else None
# Those two with their Python wrappers' checks done in C (csrc/module_calls.cpp): cell_call(cell,
# args) is a cell module's __call__, layer_step(layer, input, hx) a layer's step, each None when
# not handled; calls_setup hands them the classes and globals they read (cell_modules, layers).
cell_call = _C.cell_call if AVAILABLE else None
layer_step = _C.layer_step if AVAILABLE else None
calls_setup = _C.calls_setup if AVAILABLE else None


def workspace_cache(limit: int | None = None, min_bytes: int | None = None) -> dict[str, int]:
    """Set and read the cache of large training workspaces (``csrc/cache.h``).

    The fused GRU and LSTM save a workspace for their backward ([T, B, 4H] floats: 52 MB at
    T=100, B=64, H=512), and every backward makes weight gradients. A fresh block that
    large costs every call its page faults and zeroing (~10 ms there, BENCHMARKS.md), so blocks
    of at least ``min_bytes`` (default 2 MB) are kept once their tensors are freed and handed to
    the next call, up to ``limit`` bytes in all (default 1 GiB; 0 turns the cache off); a free
    block that 256 requests in a row did not take goes when a new one is made. A block is never
    reused while any tensor still uses it (a gradient kept in ``.grad`` keeps its block).
    Changing a setting frees the blocks not in use (one in use then goes with a later
    ``empty_cache``, or when a call needs its room). The environment variable
    ``RNNLAB_WORKSPACE_CACHE`` sets the limit at import.

    Returns ``{"limit", "min_bytes", "cached"}`` (cached: bytes held, in use or not); all zeros
    when the extension is not built.
    """
    for name, value in (("limit", limit), ("min_bytes", min_bytes)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ValueError(f"{name}: expected a non-negative int (bytes), got {value!r}")
    if not AVAILABLE:
        return {"limit": 0, "min_bytes": 0, "cached": 0}
    got = _C.workspace_cache(-1 if limit is None else limit, -1 if min_bytes is None else min_bytes)
    return dict(zip(("limit", "min_bytes", "cached"), got))


def empty_cache() -> None:
    """Free the cached workspaces that no tensor uses (as ``torch.cuda.empty_cache`` does), and
    drop the single-step calls' pool of small outputs kept for reuse (``csrc/recycle.h``)."""
    if AVAILABLE:
        _C.empty_cache()


def gemm_library(name: str | None = None) -> str:
    """Set and read which library runs the fused kernels' float32 GEMMs (``csrc/gemm.h``).

    ``"blas"``: the BLAS libtorch exports (MKL in the x86-64 wheels); ``"onednn"``: oneDNN's
    ``dnnl_sgemm`` (needs the extension's oneDNN build). The default follows the CPU: oneDNN on
    AMD, where MKL takes a slower code path (2-core EPYC: the input projection's GEMM 1.5x and
    a B=8 step's 2.3x faster through oneDNN; BENCHMARKS.md), BLAS elsewhere; the environment
    variable ``RNNLAB_GEMM`` (``blas`` / ``onednn``) sets it at import. float64 always runs BLAS.
    Returns the library in use after the call ("none" when the extension is not built).
    """
    choices = {"blas": 0, "mkl": 0, "onednn": 1}
    if name is not None and name not in choices:
        raise ValueError(f"name: expected one of 'blas', 'onednn', got {name!r}")
    if not AVAILABLE:
        return "none"
    return _C.gemm_library(-1 if name is None else choices[name])


def mm(a: Tensor, b: Tensor, out: Tensor | None = None) -> Tensor:
    """``a @ b`` for 2-D CPU float tensors through the fused kernels' own GEMM (``gemm_library``:
    oneDNN's ``dnnl_sgemm`` where the shape suits it, else ATen), into ``out`` when given. The
    bench times it beside ``torch.mm`` for its E_peak basis; any view with a unit stride works."""
    if not AVAILABLE:
        raise RuntimeError(f"kernels.mm: the fused extension is not built ({LOAD_ERROR})")
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.device.type != "cpu":
            got = f"{t.dim()}-D on {t.device}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a 2-D CPU tensor, got {got}")
        if t.dtype not in (torch.float32, torch.float64) or t.dtype != a.dtype:
            raise ValueError(f"{name}: expected float32 or float64 like a ({a.dtype}), got {t.dtype}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"b: expected {a.shape[1]} rows (a's columns), got {b.shape[0]}")
    shape = (a.shape[0], b.shape[1])
    if out is None:
        out = torch.empty(shape, dtype=a.dtype)
    elif tuple(out.shape) != shape or out.dtype != a.dtype or out.device.type != "cpu":
        raise ValueError(f"out: expected a {a.dtype} CPU tensor of shape {shape}, got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}")
    _C.mm(out, a, b)
    return out


_gemm_env = os.environ.get("RNNLAB_GEMM", "auto")
if AVAILABLE and _gemm_env != "auto":
    if _gemm_env not in ("blas", "mkl", "onednn"):
        raise ValueError(f"RNNLAB_GEMM: expected 'blas', 'onednn' or 'auto', got {_gemm_env!r}")
    gemm_library(_gemm_env)
if AVAILABLE and os.environ.get("RNNLAB_WORKSPACE_CACHE"):
    workspace_cache(limit=int(os.environ["RNNLAB_WORKSPACE_CACHE"]))


def _fused(x: Tensor) -> bool:
    """``backend(x.device, x.dtype) == "fused"``, without building a device: the layers ask on
    every call, where a B = 1 call's Python counts (see ``uses_onednn``)."""
    return _serves(x.is_cpu, x.dtype)


def uses_onednn(kind: str, x: Tensor, mask: Tensor | None, hidden: int, train: bool,
                proj: bool = False) -> bool:
    """Whether a fused-path call goes to oneDNN's RNN primitive instead of rnnlab's own kernel.

    Only dense (no lengths/packing) fp32 sequences qualify (oneDNN has no per-sample lengths and no
    fp64 RNNs), and an LSTM projection only for inference. Among those the rule follows
    BENCHMARKS.md's measurements, per CPU family (``bands.py``).
    """
    if not (ONEDNN and mask is None and x.dtype == torch.float32 and _fused(x)):
        return False
    if proj and train:
        return False
    if _onednn_mode != "auto":
        return _onednn_mode == "always"
    if train:  # rnnlab's backward beats oneDNN's training pass on the whole grid
        return False
    # (the bands first: they answer from a cache, and mostly "no")
    return (bands.prefers_onednn(kind, hidden, x.shape[1], torch.get_num_threads(), steps=x.shape[0])
            # two directions at once on ours beat oneDNN's in turn
            and ops.paired.current() is None)


def _flip_time(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """``x`` and ``mask`` reversed in time: on the reference path a reverse run is a forward run
    on these (the outputs flipped back)."""
    return x.flip(0), (mask.flip(0) if mask is not None else None)


# A bidirectional layer runs its two directions at once (one per core; inference and training)
# up to this size of one direction's W_hh, which then fits one core's L2 (2 MB here). 2 threads,
# T=100, one bidirectional layer, inference ms, one after the other → at once: LSTM B=64 H=256
# (1 MB) 47.6 → 46.2, RNN B=64 H=512 (1 MB) 50.0 → 48.8, GRU B=64 H=256 45.9 → 40.7; above it
# each core streams its W_hh from L3 and lost: GRU B=64 H=512 (3 MB) 132 → 143, LSTM B=64 H=512
# 168 → 192, GRU B=1 H=512 5.7 → 12.0.
PAIR_MAX_BYTES = 1 << 20


def joint_directions(count: int, w_hh: Tensor) -> AbstractContextManager[None]:
    """Around the ``count`` directions of one layer: two on the fused kernels run together
    (``ops.directions``: one backward node; at inference both at once, one per core, when
    ``w_hh``, one direction's recurrent weight, is at most PAIR_MAX_BYTES)."""
    if not (AVAILABLE and count == 2) or torch.compiler.is_compiling():
        return nullcontext()  # (traced, the ops run as registered: ops.call)
    # (two threads at least: with one, the pair would oversubscribe the core the user gave us)
    pair = torch.get_num_threads() >= 2 and w_hh.numel() * w_hh.element_size() <= PAIR_MAX_BYTES
    return ops.directions(pair=pair)


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def rnn(x: Tensor, mask: Tensor | None, h0: Tensor, w_ih: Tensor, w_hh: Tensor,
        b_ih: Tensor | None, b_hh: Tensor | None, nonlinearity: str, reverse: bool = False,
        batch_sizes: Tensor | None = None) -> Tensor:
    """One RNN layer/direction over a sequence → carried states ``(T, B, H)``.

    ``reverse``: run from the last step to the first (state frozen on padded steps, so each
    sequence starts from ``h0`` at its last valid step); the final state is then ``hs[0]``. The
    fused kernels and oneDNN (right-to-left direction) do this in place; the reference path runs
    forward on time-flipped copies. ``batch_sizes``: ``x`` is a PackedSequence's data ``(N, I)``
    (fused kernels only), and so are the states returned, ``(N, H)``.
    """
    train = _needs_grad(x, h0, w_ih, w_hh, b_ih, b_hh)
    packed = batch_sizes is not None  # (packed rows carry no mask: each step holds its own)
    if not packed and uses_onednn("rnn", x, mask, h0.shape[1], train):
        kind = ONEDNN_KINDS[nonlinearity]
        return ops.call("onednn_fwd", train, kind, x, h0, None, w_ih, w_hh, b_ih, b_hh, None, train,
                        reverse)[0]
    if packed or _fused(x):
        return ops.call("rnn_fwd", train, x, mask, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity == "relu",
                        reverse, batch_sizes)
    if reverse:
        x, mask = _flip_time(x, mask)
    hs = RNNFunction.apply(x, mask, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity)
    return hs.flip(0) if reverse else hs


def lstm(x: Tensor, mask: Tensor | None, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
         b_ih: Tensor | None, b_hh: Tensor | None, w_hr: Tensor | None, reverse: bool = False,
         batch_sizes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer/direction → ``(hs, cs, workspace)``; on the oneDNN path ``cs`` holds only
    the final cell state ``(1, B, H)`` (all the layer needs of it). ``reverse`` and
    ``batch_sizes`` as in ``rnn`` (only ``hs``/``cs`` are flipped back on the reference path)."""
    train = _needs_grad(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    packed = batch_sizes is not None
    if not packed and uses_onednn("lstm", x, mask, c0.shape[1], train, proj=w_hr is not None):
        hs, _, c_t, ws = ops.call("onednn_fwd", train, 2, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr,
                                  train, reverse)
        return hs, c_t.unsqueeze(0), ws
    if packed or _fused(x):
        return ops.call("lstm_fwd", train, x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse,
                        batch_sizes)
    if reverse:
        x, mask = _flip_time(x, mask)
    hs, cs, ws = LSTMFunction.apply(x, mask, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    return (hs.flip(0), cs.flip(0), ws) if reverse else (hs, cs, ws)


def gru(x: Tensor, mask: Tensor | None, h0: Tensor, w_ih: Tensor, w_hh: Tensor,
        b_ih: Tensor | None, b_hh: Tensor | None, reset: str, reverse: bool = False,
        batch_sizes: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One GRU layer/direction → ``(hs, workspace)``; ``reverse`` and ``batch_sizes`` as in
    ``rnn`` (only ``hs`` is flipped back on the reference path)."""
    keep = _needs_grad(x, h0, w_ih, w_hh, b_ih, b_hh)  # the workspace only matters for a backward
    packed = batch_sizes is not None
    if not packed and reset == "after" and uses_onednn("gru", x, mask, h0.shape[1], keep):
        hs, _, _, ws = ops.call("onednn_fwd", keep, 3, x, h0, None, w_ih, w_hh, b_ih, b_hh, None, keep,
                                reverse)
        return hs, ws
    if packed or _fused(x):
        return ops.call("gru_fwd", keep, x, mask, h0, w_ih, w_hh, b_ih, b_hh, reset == "after", keep,
                        reverse, batch_sizes)
    if reverse:
        x, mask = _flip_time(x, mask)
    hs, ws = GRUFunction.apply(x, mask, h0, w_ih, w_hh, b_ih, b_hh, reset)
    return (hs.flip(0) if reverse else hs), ws
