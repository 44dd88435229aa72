"""rnnlab: Elman RNN, LSTM and GRU written from their equations, drop-in for ``torch.nn``.

Tiers: ``cells`` (readable single-step math) → ``bptt`` (whole-sequence autograd Functions with
hand-written backward) → ``layers`` (``RNN``/``LSTM``/``GRU``) and ``cell_modules`` (the cells).
"""

from .cell_modules import GRUCell, LSTMCell, RNNCell
from .cells import gru_cell, lstm_cell, rnn_cell
from .layers import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCell",
    "LSTMCell",
    "RNNCell",
    "gru_cell",
    "lstm_cell",
    "rnn_cell",
]
