"""npl: a from-scratch LSTM/GRU engine on NumPy (CuPy optional) with hand-written BPTT.

The API follows TensorFlow 1: ``npl.rnn.BasicLSTMCell``, ``npl.nn.dynamic_rnn``, ... Every
sequence function can return a trace whose ``backward`` is explicit backpropagation through time.
"""
from .backend import use, backend_name, get_array_module, to_numpy, to_device, BackendError  # noqa: F401
from .random import set_random_seed  # noqa: F401
from .array_ops import (sequence_mask, boolean_mask, reverse_sequence, embedding_lookup,  # noqa: F401
                        IndexedSlices, BackwardTwiceError)
from .cells import LSTMStateTuple, StaleTraceError  # noqa: F401
from . import activations, nn, rnn, data, convert  # noqa: F401
from . import losses, layers, train, checkpoint  # noqa: F401
from . import seq2seq  # noqa: F401  (tf.contrib.seq2seq.sequence_loss)
from . import legacy_seq2seq  # noqa: F401  (tf.contrib.legacy_seq2seq.rnn_decoder, ...)
from .train import clip_by_global_norm, global_norm  # noqa: F401
from . import gradcheck, inspect  # noqa: F401  (npl.gradcheck is a callable module)
from . import workspace  # noqa: F401
from . import initializers  # noqa: F401
from .initializers import (zeros_initializer, ones_initializer, constant_initializer,  # noqa: F401
                           random_uniform_initializer, random_normal_initializer,
                           truncated_normal_initializer, glorot_uniform_initializer,
                           glorot_normal_initializer, orthogonal_initializer)

__version__ = "0.1.0"

__all__ = ["use", "backend_name", "get_array_module", "to_numpy", "to_device", "BackendError",
           "set_random_seed", "sequence_mask", "boolean_mask", "reverse_sequence",
           "embedding_lookup", "IndexedSlices", "BackwardTwiceError", "StaleTraceError", "LSTMStateTuple",
           "activations", "nn", "rnn", "data", "convert", "losses", "seq2seq", "legacy_seq2seq",
           "layers", "train", "checkpoint", "clip_by_global_norm", "global_norm", "gradcheck",
           "inspect", "workspace",
           "initializers", "zeros_initializer", "ones_initializer", "constant_initializer",
           "random_uniform_initializer", "random_normal_initializer", "truncated_normal_initializer",
           "glorot_uniform_initializer", "glorot_normal_initializer", "orthogonal_initializer"]
