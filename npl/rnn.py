"""``npl.rnn``: the cells and stacked RNNs, named as in ``tf.contrib.rnn``."""
from .cells import (BasicRNNCell, BasicLSTMCell, LSTMCell, LSTMBlockCell, GRUCell,  # noqa: F401
                    GRUBlockCell, GRUBlockCellV2, MultiRNNCell, LSTMStateTuple, RNNCell)
from .rnn_ops import (static_rnn, static_bidirectional_rnn,  # noqa: F401
                      stack_bidirectional_dynamic_rnn)
from .layers import DropoutWrapper, ResidualWrapper, DeviceWrapper  # noqa: F401  (tf.contrib.rnn.*)

__all__ = ["BasicRNNCell", "BasicLSTMCell", "LSTMCell", "LSTMBlockCell", "GRUCell", "GRUBlockCell",
           "GRUBlockCellV2", "MultiRNNCell", "LSTMStateTuple", "RNNCell", "static_rnn",
           "static_bidirectional_rnn", "stack_bidirectional_dynamic_rnn", "DropoutWrapper",
           "ResidualWrapper", "DeviceWrapper"]
