"""Sequence layers ``RNN``, ``LSTM`` and ``GRU``: drop-in replacements for ``torch.nn``'s.

Same constructor arguments, parameter names (``weight_ih_l{k}[_reverse]`` ...), shapes, gate order,
initialisation ``U(-1/√H, 1/√H)``, ``forward(input, hx)`` contract and return values; a torch
``state_dict`` loads unchanged both ways. Extra: ``forward(..., lengths=...)`` for padded batches.

Shape legend (as ``torch.nn``): ``T`` time steps, ``B`` batch, ``D`` = 2 if bidirectional else 1,
``L`` num_layers, ``H_out`` = proj_size or hidden_size.

- input: ``(T, B, I)``, ``(B, T, I)`` with ``batch_first``, ``(T, I)`` unbatched, or a ``PackedSequence``
- hx: ``(D·L, B, H_out)`` (LSTM: a tuple with ``c0 (D·L, B, H)``), or without ``B`` when unbatched
- output: ``(T, B, D·H_out)`` (same layout as the input); h_n like hx

Each layer and direction runs one whole-sequence autograd Function (``rnnlab.bptt``) with a
hand-written backward; dropout is applied to every layer's output but the last, in training only.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import _checks as check
from . import kernels, stepping
from . import sequence as seq
from .cells import GRU_RESETS, NONLINEARITIES

Params = tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]


class RNNBase(nn.Module):
    """Shared machinery of the three layers; use ``RNN``, ``LSTM`` or ``GRU``."""

    gates: int = 1
    supports_proj: bool = False  # LSTMP's h_t = W_hr h_t

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = check.positive_int("input_size", input_size)
        self.hidden_size = check.positive_int("hidden_size", hidden_size)
        self.num_layers = check.positive_int("num_layers", num_layers)
        self.bias = check.flag("bias", bias)
        self.batch_first = check.flag("batch_first", batch_first)
        self.dropout = check.probability("dropout", dropout)
        self.bidirectional = check.flag("bidirectional", bidirectional)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int):
            raise TypeError(f"proj_size: expected an int, got {type(proj_size).__name__}")
        if proj_size < 0 or proj_size >= hidden_size:
            raise ValueError(
                f"proj_size: expected 0 (no projection) or 0 < proj_size < hidden_size="
                f"{hidden_size}, got {proj_size}"
            )
        if proj_size and not self.supports_proj:
            raise ValueError(f"proj_size: supported by LSTM only, expected 0, got {proj_size}")
        self.proj_size = proj_size
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                f"dropout={dropout} acts between layers only, so it has no effect with "
                "num_layers=1",
                stacklevel=3,
            )
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        out = proj_size or hidden_size
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            for suffix in self._suffixes():
                in_size = input_size if layer == 0 else out * self.num_directions
                shapes = {
                    "weight_ih": (self.gates * hidden_size, in_size),
                    "weight_hh": (self.gates * hidden_size, out),
                }
                if bias:
                    shapes["bias_ih"] = (self.gates * hidden_size,)
                    shapes["bias_hh"] = (self.gates * hidden_size,)
                if proj_size:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                for kind, shape in shapes.items():
                    name = f"{kind}_l{layer}{suffix}"
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(name)
        self.reset_parameters()
        kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        # [layer][direction] → the five names, None where the layer has no such parameter
        self._param_names = [
            [tuple(n if n in self._flat_weights_names else None
                   for n in (f"{k}_l{layer}{suffix}" for k in kinds)) for suffix in self._suffixes()]
            for layer in range(num_layers)
        ]
        # the forward direction's, per layer: what the one-call step looks up (None: absent), as
        # the very key objects of _parameters (a lookup then matches by identity)
        keys = {name: name for name in self._parameters}
        self._step_names = [tuple(keys.get(n) for n in names[0]) for names in self._param_names]

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> list[str]:
        return ["", "_reverse"][: self.num_directions]

    def reset_parameters(self) -> None:
        """Every parameter ``~ U(-1/√hidden_size, 1/√hidden_size)``, as ``torch.nn``."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        names = self._flat_weights_names
        per = len(names) // (self.num_layers * self.num_directions)
        return [[getattr(self, n) for n in names[k : k + per]] for k in range(0, len(names), per)]

    def _params(self, layer: int, direction: int) -> Params:
        """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer and direction (None where absent), read
        from ``_parameters`` by name: a Module's attribute lookup goes through its
        ``__getattr__`` (~10 µs of a B = 1 call for the five). A registered name missing there (a
        parametrization or weight norm moved it) is read as an attribute."""
        registered = self._parameters
        return tuple(  # type: ignore[return-value]
            None if name is None else registered[name] if name in registered else getattr(self, name)
            for name in self._param_names[layer][direction]
        )

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for name, default in (("bias", True), ("batch_first", False), ("bidirectional", False)):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s

    # --- the per-family recurrence; subclasses run their autograd Function ---------------------
    def _run(
        self, x: Tensor, mask: Tensor | None, state: tuple[Tensor, ...], params: Params,
        reverse: bool = False, batch_sizes: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        """One layer, one direction: ``x (T, B, F)`` → per-step carried states ``(T, B, ·)``.

        ``reverse``: the backward direction, run on ``x`` as it is from t = T-1 down to 0 (state
        frozen on padded steps, so each sequence starts at its own last valid step); its final
        state is then at t = 0. With ``batch_sizes`` (only where ``_packed_rows``), ``x`` is a
        PackedSequence's data ``(N, F)`` and the states come back packed alike ``(N, ·)``."""
        raise NotImplementedError

    def _packed_rows(self, data: Tensor) -> bool:
        """Whether packed input runs packed (no padded copies): on the fused kernels."""
        return kernels.backend(data.device, data.dtype) == "fused"

    def _state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return [(self.num_layers * self.num_directions, batch, self.proj_size or self.hidden_size)]

    # --- forward ---------------------------------------------------------------------------------

    def forward(
        self, input: Tensor | PackedSequence, hx: Any = None, *, lengths: Any = None
    ) -> tuple[Tensor | PackedSequence, Any]:
        packed = isinstance(input, PackedSequence)
        first = self._params(0, 0)  # (the input is checked against w_ih_l0; layer 0 then runs them)
        # packed input on kernels that address its rows directly stays packed: x (N, F)
        rows = input.batch_sizes if packed and self._packed_rows(input.data) else None
        if rows is not None:
            seq.check_packed(input, lengths, self.input_size, first[0])
            x, lens, batched = input.data, None, True
            last = seq.last_rows(rows, x.device)  # each sequence's final step, for h_n
        else:
            x, lens, batched = seq.prepare_input(
                input, lengths, self.input_size, self.batch_first, first[0]
            )
        batch = x.shape[1] if rows is None else int(rows[0])
        shapes = self._state_shapes(batch)
        state = seq.prepare_state(hx, x, batched, shapes) if hx is not None else None
        steps = x.shape[0]
        mask = order = None
        if packed and input.sorted_indices is not None:  # x is in the packed (sorted) order
            order = input.sorted_indices
            if state is not None:
                state = tuple(s.index_select(1, order) for s in state)
        if lens is not None and bool((lens < steps).any()):
            if not packed:
                # longest first, so each step's running sequences are a prefix of the batch and
                # the kernels' recurrent GEMM skips the finished ones (undone at the end)
                lens, order = torch.sort(lens, descending=True, stable=True)
                x = x.index_select(1, order)
                if state is not None:
                    state = tuple(s.index_select(1, order) for s in state)
            mask = seq.step_mask(lens, steps)  # (T, B, 1)
        # each (layer, direction)'s initial state (B, H): hx's, or zeros made for it
        runs_state = (
            list(zip(*(s.unbind(0) for s in state)))
            if state is not None
            else [tuple(x.new_zeros(shape[1:]) for shape in shapes) for _ in range(shapes[0][0])]
        )
        # (1, B, H) final state of each (layer, direction), per state kind
        finals: list[list[Tensor]] = [[] for _ in shapes]
        layer_in = x
        directions = self.num_directions
        for layer in range(self.num_layers):
            outs = []
            params = [first if layer == d == 0 else self._params(layer, d) for d in range(directions)]
            # the directions together: one backward node, or at inference both at once
            with kernels.joint_directions(directions, params[0][1]):
                runs = [
                    self._run(layer_in, mask, runs_state[layer * directions + d], params[d],
                              reverse=d == 1, batch_sizes=rows)
                    for d in range(directions)
                ]
            for d, carried in enumerate(runs):
                for final, states in zip(finals, carried):
                    # state after each sequence's last valid step (a reverse run ends at t = 0)
                    if rows is not None:
                        last_state = states[:batch] if d == 1 else states.index_select(0, last)
                        final.append(last_state.unsqueeze(0))
                    else:
                        final.append(states[:1] if d == 1 else states[-1:])
                # padded outputs are zero (packed output drops them: no need)
                y = carried[0] if mask is None or packed else torch.where(mask, carried[0], 0.0)
                outs.append(y)
            layer_in = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        h_n = tuple(f[0] if len(f) == 1 else torch.cat(f) for f in finals)
        if order is not None:  # h_n (and a padded output) back to the caller's batch order
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel(), device=order.device)
            h_n = tuple(h.index_select(1, inverse) for h in h_n)
            if not packed:
                layer_in = layer_in.index_select(1, inverse)
        output: Tensor | PackedSequence = layer_in
        if rows is not None:
            output = PackedSequence(layer_in, rows, input.sorted_indices, input.unsorted_indices)
        elif packed:
            output = seq.pack_sorted(layer_in, input)
        elif not batched:
            output = layer_in.squeeze(1)
            h_n = tuple(h.squeeze(1) for h in h_n)
        elif self.batch_first:
            output = layer_in.transpose(0, 1)
        return output, (h_n if len(h_n) == 2 else h_n[0])


    # one time step for streaming/generation (stepping.py; the function itself, no call between)
    step = stepping.layer_step

    def _step_kernel(self, x: Tensor, state: tuple[Tensor, ...], params: Params) -> tuple[Tensor, ...]:
        raise NotImplementedError

    @property
    def _stream_kind(self) -> int | None:
        """The cell code of ``_C.stream_step`` (None: no one-call streaming step)."""
        return None


class RNN(RNNBase):
    r"""Elman RNN layer, drop-in for ``torch.nn.RNN``: ``h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``.

    The seed's ``s_t = f(U x_t + W s_{t-1})`` with ``U`` = ``weight_ih_l{k}``, ``W`` = ``weight_hh_l{k}``.
    ``nonlinearity`` is ``"tanh"`` or ``"relu"``.
    """

    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        proj_size: int = 0,
    ) -> None:
        self.nonlinearity = check.choice("nonlinearity", nonlinearity, NONLINEARITIES)
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size, device, dtype,
        )  # fmt: skip

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else "")

    def _step_kernel(self, x, state, params):  # type: ignore[no-untyped-def]
        w_ih, w_hh, b_ih, b_hh, _ = params
        relu = self.nonlinearity == "relu"
        return (torch.ops.rnnlab.rnn_step(x, state[0], w_ih, w_hh, b_ih, b_hh, relu),)

    def _run(self, x, mask, state, params, reverse=False, batch_sizes=None):  # type: ignore[no-untyped-def]
        w_ih, w_hh, b_ih, b_hh, _ = params
        nl = self.nonlinearity
        return (kernels.rnn(x, mask, state[0], w_ih, w_hh, b_ih, b_hh, nl, reverse, batch_sizes),)

    @property
    def _stream_kind(self) -> int | None:
        return None if self.bidirectional else (1 if self.nonlinearity == "relu" else 0)


class LSTM(RNNBase):
    r"""LSTM layer, drop-in for ``torch.nn.LSTM`` (gate rows ``[i|f|g|o]``, optional ``proj_size``).

    See ``rnnlab.cells.lstm_cell`` for the equations; ``forward`` takes and returns ``(h, c)`` tuples.
    """

    gates = 4
    supports_proj = True

    def _state_shapes(self, batch: int) -> list[tuple[int, ...]]:
        n = self.num_layers * self.num_directions
        return [(n, batch, self.proj_size or self.hidden_size), (n, batch, self.hidden_size)]

    def _step_kernel(self, x, state, params):  # type: ignore[no-untyped-def]
        return tuple(torch.ops.rnnlab.lstm_step(x, state[0], state[1], *params))

    def _run(self, x, mask, state, params, reverse=False, batch_sizes=None):  # type: ignore[no-untyped-def]
        hs, cs, _ = kernels.lstm(x, mask, state[0], state[1], *params, reverse, batch_sizes)
        return hs, cs

    @property
    def _stream_kind(self) -> int | None:
        return None if self.bidirectional else 2


class GRU(RNNBase):
    r"""GRU layer, drop-in for ``torch.nn.GRU`` (gate rows ``[r|z|n]``).

    ``reset="after"`` (default) is PyTorch/cuDNN's form, ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``,
    and loads ``torch.nn.GRU`` weights with identical results. ``reset="before"`` is Cho et al. 2014 /
    Olah's ``n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)``: same parameters, different function.
    """

    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        proj_size: int = 0,
        reset: str = "after",
    ) -> None:
        self.reset = check.choice("reset", reset, GRU_RESETS)
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
            proj_size, device, dtype,
        )  # fmt: skip

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", reset={self.reset!r}" if self.reset != "after" else "")

    def _step_kernel(self, x, state, params):  # type: ignore[no-untyped-def]
        w_ih, w_hh, b_ih, b_hh, _ = params
        after = self.reset == "after"
        return (torch.ops.rnnlab.gru_step(x, state[0], w_ih, w_hh, b_ih, b_hh, after),)

    def _run(self, x, mask, state, params, reverse=False, batch_sizes=None):  # type: ignore[no-untyped-def]
        w_ih, w_hh, b_ih, b_hh, _ = params
        hs, _ = kernels.gru(x, mask, state[0], w_ih, w_hh, b_ih, b_hh, self.reset, reverse, batch_sizes)
        return (hs,)

    @property
    def _stream_kind(self) -> int | None:
        return None if self.bidirectional else (3 if self.reset == "after" else 4)


if kernels.calls_setup is not None:  # what layer_step reads (csrc/module_calls.cpp)
    kernels.calls_setup({"kernels_globals": vars(kernels), "layers": (RNN, LSTM, GRU)})
