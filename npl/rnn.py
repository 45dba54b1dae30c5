"""``npl.rnn``: the cells and stacked RNNs, named as in ``tf.contrib.rnn``."""
from .cells import (BasicRNNCell, BasicLSTMCell, LSTMCell, LSTMBlockCell, GRUCell,  # noqa: F401
                    GRUBlockCell, GRUBlockCellV2, MultiRNNCell, LSTMStateTuple, RNNCell,
                    LayerNormBasicLSTMCell)
from .rnn_ops import (static_rnn, static_bidirectional_rnn,  # noqa: F401
                      stack_bidirectional_dynamic_rnn, stack_bidirectional_rnn)
from .layers import DropoutWrapper, ResidualWrapper, DeviceWrapper  # noqa: F401  (tf.contrib.rnn.*)
from .layers import OutputProjectionWrapper, InputProjectionWrapper, EmbeddingWrapper  # noqa: F401

__all__ = ["BasicRNNCell", "BasicLSTMCell", "LSTMCell", "LSTMBlockCell", "GRUCell", "GRUBlockCell",
           "GRUBlockCellV2", "LayerNormBasicLSTMCell", "MultiRNNCell", "LSTMStateTuple", "RNNCell", "static_rnn",
           "static_bidirectional_rnn", "stack_bidirectional_dynamic_rnn", "stack_bidirectional_rnn",
           "DropoutWrapper",
           "ResidualWrapper", "DeviceWrapper", "OutputProjectionWrapper", "InputProjectionWrapper",
           "EmbeddingWrapper"]
