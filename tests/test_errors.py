"""Every bad input raises ValueError/TypeError naming the argument, before any computation."""

from __future__ import annotations

import pytest
import torch

import rnnlab
import rnnlab.kernels


def _no_compute(*args, **kwargs):
    raise AssertionError("computation started before the input was validated")


@pytest.fixture(autouse=True)
def _forbid_compute(monkeypatch):
    for name in ("rnn", "lstm", "gru"):  # every path of every layer goes through these
        monkeypatch.setattr(rnnlab.kernels, name, _no_compute)


def _raises(exc, arg, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert arg in str(info.value), f"message does not name {arg!r}: {info.value}"
    return str(info.value)


lstm = rnnlab.LSTM(4, 6, num_layers=2, bidirectional=True)
gru = rnnlab.GRU(4, 6)


def test_wrong_input_rank():
    msg = _raises(ValueError, "input", lstm, torch.randn(2, 3, 4, 4))
    assert "4-D" in msg and "3-D" in msg


def test_input_size_mismatch():
    msg = _raises(ValueError, "input", gru, torch.randn(5, 2, 7))
    assert "input_size=4" in msg and "7" in msg


@pytest.mark.parametrize(
    "bad,arg",
    [((2, 2, 6), "hx[0]"), ((3, 2, 6), "hx[0]"), ((4, 3, 6), "hx[0]"), ((4, 2, 5), "hx[0]")],
)
def test_hx_shape_mismatch(bad, arg):
    x = torch.randn(5, 2, 4)
    h0 = torch.zeros(bad)
    c0 = torch.zeros(4, 2, 6)
    msg = _raises(ValueError, arg, lstm, x, (h0, c0))
    assert "(4, 2, 6)" in msg  # expected: num_layers * num_directions = 4


def test_cell_state_shape_mismatch():
    x = torch.randn(5, 2, 4)
    msg = _raises(ValueError, "hx[1]", lstm, x, (torch.zeros(4, 2, 6), torch.zeros(4, 2, 3)))
    assert "(4, 2, 6)" in msg and "(4, 2, 3)" in msg


def test_hx_kind_mismatch():
    _raises(TypeError, "hx", lstm, torch.randn(5, 2, 4), torch.zeros(4, 2, 6))
    _raises(TypeError, "hx", gru, torch.randn(5, 2, 4), (torch.zeros(1, 2, 6),))


def test_unbatched_hx_rank():
    _raises(ValueError, "hx", gru, torch.randn(5, 4), torch.zeros(1, 2, 6))


def test_dtype_mismatch():
    msg = _raises(TypeError, "input", gru, torch.randn(5, 2, 4, dtype=torch.float64))
    assert "float32" in msg and "float64" in msg
    _raises(TypeError, "hx", gru, torch.randn(5, 2, 4), torch.zeros(1, 2, 6, dtype=torch.float64))


def test_device_mismatch():
    msg = _raises(ValueError, "input", gru, torch.randn(5, 2, 4, device="meta"))
    assert "cpu" in msg and "meta" in msg
    _raises(ValueError, "hx", gru, torch.randn(5, 2, 4), torch.zeros(1, 2, 6, device="meta"))


@pytest.mark.parametrize(
    "lengths,exc,text",
    [
        ([5, 5, 5], ValueError, "2"),
        ([5, 0], ValueError, "positive"),
        ([5, -1], ValueError, "positive"),
        ([6, 2], ValueError, "T=5"),
        (torch.tensor([1.5, 2.0]), TypeError, "dtype"),
        (torch.tensor([[5, 5]]), ValueError, "1-D"),
        ("ab", TypeError, "lengths"),
    ],
)
def test_bad_lengths(lengths, exc, text):
    msg = _raises(exc, "lengths", gru, torch.randn(5, 2, 4), lengths=lengths)
    assert text in msg


def test_empty_batch_and_empty_time():
    _raises(ValueError, "T (time steps)", gru, torch.randn(0, 2, 4))
    _raises(ValueError, "B (batch size)", gru, torch.randn(5, 0, 4))
    _raises(ValueError, "B (batch size)", rnnlab.GRUCell(4, 6), torch.randn(0, 4))


@pytest.mark.parametrize("arg", ["input_size", "hidden_size", "num_layers"])
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_sizes(arg, value):
    kwargs = {"input_size": 4, "hidden_size": 6, "num_layers": 1, arg: value}
    for cls in (rnnlab.RNN, rnnlab.LSTM, rnnlab.GRU):
        msg = _raises(ValueError, arg, cls, **kwargs)
        assert str(value) in msg
    if arg != "num_layers":
        kwargs.pop("num_layers")
        _raises(ValueError, arg, rnnlab.LSTMCell, **kwargs)


def test_non_int_size():
    _raises(TypeError, "hidden_size", rnnlab.GRU, 4, 6.0)


@pytest.mark.parametrize("proj", [6, 9, -1])
def test_proj_size_out_of_range(proj):
    msg = _raises(ValueError, "proj_size", rnnlab.LSTM, 4, 6, proj_size=proj)
    assert "hidden_size=6" in msg


def test_proj_size_only_for_lstm():
    _raises(ValueError, "proj_size", rnnlab.GRU, 4, 6, proj_size=2)
    _raises(ValueError, "proj_size", rnnlab.RNN, 4, 6, proj_size=2)


def test_unknown_nonlinearity_and_reset():
    msg = _raises(ValueError, "nonlinearity", rnnlab.RNN, 4, 6, nonlinearity="sigmoid")
    assert "'tanh'" in msg and "'sigmoid'" in msg
    _raises(ValueError, "nonlinearity", rnnlab.RNNCell, 4, 6, nonlinearity="gelu")
    msg = _raises(ValueError, "reset", rnnlab.GRU, 4, 6, reset="middle")
    assert "'before'" in msg
    _raises(ValueError, "reset", rnnlab.GRUCell, 4, 6, reset="sideways")


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_out_of_range(p):
    msg = _raises(ValueError, "dropout", rnnlab.LSTM, 4, 6, num_layers=2, dropout=p)
    assert "[0, 1]" in msg


def test_packed_with_lengths_rejected():
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 4), [5, 3])
    _raises(ValueError, "lengths", gru, packed, lengths=[5, 3])


def test_cell_errors():
    cell = rnnlab.LSTMCell(4, 6)
    _raises(ValueError, "input", cell, torch.randn(2, 3, 4))
    _raises(ValueError, "input", cell, torch.randn(2, 5))
    _raises(ValueError, "hx[1]", cell, torch.randn(2, 4), (torch.zeros(2, 6), torch.zeros(3, 6)))
    _raises(TypeError, "hx", cell, torch.randn(2, 4), torch.zeros(2, 6))
    _raises(TypeError, "input", cell, torch.randn(2, 4, dtype=torch.float64))


STEP_B, STEP_I, STEP_H = 2, 3, 4


def _step_args(name: str) -> dict:
    g = {"rnn_step": 1, "lstm_step": 4, "gru_step": 3}[name]
    args = {"x": torch.randn(STEP_B, STEP_I), "h": torch.randn(STEP_B, STEP_H)}
    if name == "lstm_step":
        args["c"] = torch.randn(STEP_B, STEP_H)
    args |= {"w_ih": torch.randn(g * STEP_H, STEP_I), "w_hh": torch.randn(g * STEP_H, STEP_H),
             "b_ih": torch.randn(g * STEP_H), "b_hh": torch.randn(g * STEP_H)}
    return args


def _call_step(name: str, args: dict):  # type: ignore[no-untyped-def]
    op = getattr(torch.ops.rnnlab, name)
    if name == "lstm_step":
        return op(*args.values(), None)
    return op(*args.values(), True)


@pytest.mark.skipif(not rnnlab.kernels.AVAILABLE, reason="fused extension not built")
@pytest.mark.parametrize("arg", ["h", "w_ih", "w_hh", "b_ih", "b_hh"])
@pytest.mark.parametrize("name", ["rnn_step", "lstm_step", "gru_step"])
def test_step_ops_check_shapes_before_reading(name, arg):
    """The single-step ops index raw pointers by these shapes: a mismatch is a ValueError naming
    the argument (it used to read out of bounds)."""
    args = _step_args(name)
    args[arg] = torch.randn(*[n + 1 for n in args[arg].shape])
    with pytest.raises(ValueError, match=rf"{name}: {arg}: expected Float \[") as info:
        _call_step(name, args)
    assert "got Float [" in str(info.value)
    args = _step_args(name)
    args[arg] = args[arg].double()
    with pytest.raises(ValueError, match=rf"{name}: {arg}: expected Float .* got Double"):
        _call_step(name, args)
