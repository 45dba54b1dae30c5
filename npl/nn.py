"""``npl.nn``: the sequence functions and ops, named as in ``tf.nn`` / ``tf.compat.v1.nn``."""
from .rnn_ops import (dynamic_rnn, static_rnn, bidirectional_dynamic_rnn,  # noqa: F401
                      static_bidirectional_rnn)
from .array_ops import embedding_lookup  # noqa: F401
from .activations import tanh, sigmoid, relu  # noqa: F401
from . import rnn as rnn_cell  # noqa: F401  (npl.nn.rnn_cell.BasicLSTMCell, .DropoutWrapper: tf.nn.rnn_cell)

__all__ = ["dynamic_rnn", "static_rnn", "bidirectional_dynamic_rnn", "static_bidirectional_rnn",
           "embedding_lookup", "tanh", "sigmoid", "relu", "rnn_cell"]
