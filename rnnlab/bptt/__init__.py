"""Reference whole-sequence autograd Functions with hand-written BPTT (any device, any dtype).

One ``torch.autograd.Function`` per cell family runs one layer in one direction over a whole
(time-major) sequence. They are the portable path of the layers and the oracle for fast kernels.
"""

from .gru import GRUFunction
from .lstm import LSTMFunction
from .rnn import RNNFunction

__all__ = ["GRUFunction", "LSTMFunction", "RNNFunction"]
