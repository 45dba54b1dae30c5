"""Layers with hand-written backward passes, for building and training small models.

* :class:`Dense` -- ``tf.layers.dense`` / ``fully_connected``: ``y = act(x @ kernel + bias)`` on any
  leading shape; params ``kernel`` [in, out], ``bias`` [out].
* :class:`Embedding` -- params ``embeddings`` [V, D]; its gradient is a sparse
  :class:`npl.IndexedSlices` (the rows that were looked up), as in TensorFlow.
* :class:`RNN` -- runs an npl cell with :func:`npl.nn.dynamic_rnn`; outputs every step
  (``output="sequences"``) or the last valid step (``output="last"``).
* :class:`Sequential` -- a chain of the layers above; ``forward`` returns ``(output, trace)`` and
  ``trace.backward(d_output)`` runs every piece backwards.  Its ``params`` / ``grads`` are keyed by
  TensorFlow's variable names (``embedding/embeddings``, ``rnn/basic_lstm_cell/kernel``,
  ``rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel``, ``dense/kernel``, ...).
* :class:`DropoutWrapper` -- ``tf.nn.rnn_cell.DropoutWrapper`` for npl cells (input and output
  dropout; masks are kept in ``.masks`` and can be replayed).
* :class:`ResidualWrapper` -- ``tf.nn.rnn_cell.ResidualWrapper``: output = input + the cell's output.
* :class:`DeviceWrapper` -- ``tf.nn.rnn_cell.DeviceWrapper``: the cell, with its TF device recorded.

Every layer follows one protocol: ``forward(x, ...) -> (y, trace)``; ``trace.backward(d_y) -> d_x``
(``None`` for integer inputs) which ACCUMULATES parameter gradients into ``layer.grads`` (call
``zero_grad()`` between steps); ``params`` / ``grads`` are dicts whose arrays are the live ones.
A trace's backward runs once (:class:`npl.BackwardTwiceError` after that).
"""
import contextlib
import re

import numpy as np

from . import activations as _act
from . import random as _random
from . import initializers as _init
from .array_ops import IndexedSlices, embedding_lookup, _OnceTrace
from .backend import default_xp, get_array_module, to_device, resolve_backend
from .cells import RNNCell, LSTMCell, MultiRNNCell, Parameterized, glorot_uniform, _check_distinct, \
    StaleTraceError
from .rnn_ops import dynamic_rnn, check_current
from ._checks import float_array, is_real, check_fits, check_dtype, check_same_device, check_shape, resolve_dtype, \
    lengths_array, check_on_device
from . import workspace as _ws

__all__ = ["Layer", "Dense", "Embedding", "RNN", "Sequential", "DropoutWrapper", "ResidualWrapper",
           "DeviceWrapper", "cell_param_names"]


class Layer(Parameterized):
    """Base class: named parameters (TF names relative to the layer) and accumulated gradients."""

    _default_name = "layer"

    def __init__(self, name=None, dtype=None, seed=None):
        if name is not None and (not isinstance(name, str) or not name or "/" in name):
            raise ValueError("name must be a non-empty string without '/', got %r" % (name,))
        self.name = name or self._default_name
        self._dtype = resolve_dtype(dtype)
        self._seed = _random.check_seed(seed)
        self._params = {}
        self._grads = {}

    @property
    def built(self):
        return bool(self._params)

    @property
    def dtype(self):
        return self._dtype

    def set_params(self, values, strict=True):
        """Copy values into the parameters in place (names relative to the layer).

        Unknown names, missing names (with ``strict``) and wrong shapes raise ValueError before
        anything is changed.
        """
        if not isinstance(values, dict):
            raise TypeError("set_params expects a dict name -> array, got %s" % type(values).__name__)
        _validate_values(self.params, values, strict, "%s %r" % (type(self).__name__, self.name))
        live = self.params
        for k, v in values.items():
            _assign(live[k], v)
        self._bump_version()
        return self

    def to_device(self, backend=None):
        """Move the parameters and gradients to ``backend`` ("numpy" or "cupy", any case; None:
        the backend in force); returns self.  The name is checked before anything moves
        (ValueError; BackendError for "cupy" where CuPy cannot be used); an unbuilt layer
        remembers it and builds there.  The values are copied exactly; traces of earlier
        forwards raise :class:`npl.StaleTraceError`."""
        name = resolve_backend(backend, "%s.to_device" % type(self).__name__)
        self._device = name
        self._move(name)
        self._bump_version()
        return self

    def _move(self, name):
        self._params = {k: to_device(v, name) for k, v in self._params.items()}
        self._grads = {k: to_device(v, name) for k, v in self._grads.items()}

    def to_numpy(self):
        """``to_device("numpy")``."""
        return self.to_device("numpy")

    def output_width(self, input_width):
        """The last dimension of the output for inputs of last dimension ``input_width``."""
        return input_width

    def __call__(self, x, *args, **kwargs):
        """The forward's output only (no trace kept by the caller)."""
        return self.forward(x, *args, **kwargs)[0]

    def __repr__(self):
        return "%s(name=%r)" % (type(self).__name__, self.name)


def _validate_values(live, values, strict, what):
    unknown = sorted(set(values) - set(live))
    missing = sorted(set(live) - set(values))
    if unknown:
        raise ValueError("set_params: unknown parameter names %s for %s; expected %s"
                         % (unknown, what, sorted(live)))
    if strict and missing:
        raise ValueError("set_params: missing parameters %s for %s (strict=False sets only some)"
                         % (missing, what))
    for k, v in values.items():
        a = float_array(v, "set_params: params[%r]" % k)
        if tuple(a.shape) != tuple(live[k].shape):
            raise ValueError("set_params: %r must have shape %s, got %s"
                             % (k, tuple(live[k].shape), tuple(a.shape)))
        check_fits(a, live[k].dtype, "set_params: params[%r]" % k)


def _assign(dst, value):
    """``dst[...] = value`` across backends and dtypes (value converted to dst's device and dtype)."""
    xp = get_array_module(dst)
    if get_array_module(value) is not xp:
        value = to_device(value, "cupy" if xp is not np else "numpy")
    dst[...] = xp.asarray(value).astype(dst.dtype, copy=False)


def _check_input(layer, x, width, name="inputs"):
    if x.shape[-1] != width:
        raise ValueError("%s must have last dimension %d (layer %r was built for it), got shape %s"
                         % (name, width, layer.name, tuple(x.shape)))
    check_dtype(x, layer.dtype, name)
    check_same_device(x, name, layer._params.values(),
                      "the parameters of layer %r" % layer.name)


# ============================================================================ Dense
class Dense(Layer):
    """``y = activation(x @ kernel + bias)`` on the last axis of ``x`` (any leading shape).

    Params (TF names): ``kernel`` [in, units] (glorot uniform, or ``kernel_initializer``),
    ``bias`` [units] (zeros, or ``bias_initializer``; see :mod:`npl.initializers`).
    ``activation``: None (linear, as tf.layers.dense), a name, or an npl activation.
    """

    _default_name = "dense"

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer=None,
                 bias_initializer=None, dtype=None, seed=None, input_size=None, name=None):
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError("units must be a positive integer, got %r" % (units,))
        self._kernel_init = _init.check(kernel_initializer, "kernel_initializer")
        self._bias_init = _init.check(bias_initializer, "bias_initializer")
        super().__init__(name, dtype, seed)
        self.units = int(units)
        self.activation = _act.get(activation, default=_act.identity)
        self.use_bias = bool(use_bias)
        if input_size is not None:
            self.build(input_size, self._dtype or np.float32)

    def build(self, input_size, dtype=np.float32):
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 1:
            raise ValueError("input_size must be a positive integer, got %r" % (input_size,))
        dtype = resolve_dtype(dtype) or np.dtype(np.float32)
        xp, rng = self._home_xp(), _random.generator(self._seed)
        self._dtype = dtype
        shape = (int(input_size), self.units)
        kernel = (glorot_uniform(shape, rng, dtype) if self._kernel_init is None
                  else _init.initialize(self._kernel_init, shape, dtype, rng, "kernel"))
        self._params = {"kernel": xp.asarray(kernel)}
        if self.use_bias:
            self._params["bias"] = (xp.zeros((self.units,), dtype) if self._bias_init is None else
                                    xp.asarray(_init.initialize(self._bias_init, (self.units,), dtype,
                                                                rng, "bias")))
        self._grads = {k: xp.zeros_like(v) for k, v in self._params.items()}
        self._bump_version()
        return self

    @property
    def input_size(self):
        return int(self._params["kernel"].shape[0]) if self.built else None

    def output_width(self, input_width):
        return self.units

    def forward(self, x):
        """``(y, trace)``: x [..., in] -> y [..., units]; ``trace.backward(d_y) -> d_x``."""
        x = float_array(x, "inputs")
        if x.ndim < 1:
            raise ValueError("inputs must have at least one dimension, got a scalar")
        if not self.built:
            if self._dtype is not None:
                check_dtype(x, self._dtype, "inputs")
            self.build(int(x.shape[-1]), x.dtype)
        K = self._params["kernel"]
        _check_input(self, x, K.shape[0])
        xp = get_array_module(x)
        x2 = x.reshape(-1, K.shape[0])
        y = xp.matmul(x2, K)                                        # [N, in] @ [in, units]
        if self.use_bias:
            y += self._params["bias"]
        if self.activation is not _act.identity:
            self.activation(y, out=y)
        y = y.reshape(tuple(x.shape[:-1]) + (self.units,))
        return y, DenseTrace(self, x2, y, x.shape)


class _LayerTrace(_OnceTrace):
    """A layer's trace: spent once, and stale once the layer's weights were replaced."""

    _replaced_by = "set_params, build or to_device"

    def _remember(self, layer):
        self.layer, self._version = layer, layer._version

    def _ensure_fresh(self):
        super()._ensure_fresh()
        if self._version != self.layer._version:
            raise StaleTraceError("the weights of %s %r were replaced (%s) after this trace's "
                                  "forward; run the forward again"
                                  % (type(self.layer).__name__, self.layer.name, self._replaced_by))


class DenseTrace(_LayerTrace):
    """Saved input [N, in] and output of a :class:`Dense` forward."""

    def __init__(self, layer, x2, y, in_shape):
        self._remember(layer)
        self._x2, self._y, self._in_shape = x2, y, tuple(in_shape)

    def _check(self, d_output, name="d_output"):
        d = float_array(d_output, name)
        check_shape(d, self._y.shape, name)
        check_dtype(d, self._y.dtype, name)
        check_on_device(d, name, get_array_module(self._y), "the forward's outputs")
        return d

    def backward(self, d_output):
        """Return ``d_inputs`` (shape of the inputs); accumulates ``kernel`` / ``bias`` gradients.

            d_pre = d_y * act'(y);  d_kernel += x^T @ d_pre;  d_bias += sum(d_pre);  d_x = d_pre @ kernel^T
        """
        self._ensure_fresh()
        d = self._check(d_output)
        self._consume()
        layer = self.layer
        xp = get_array_module(d)
        D = d.reshape(-1, layer.units)
        if layer.activation is not _act.identity:
            D = D * layer.activation.grad_from_output(self._y.reshape(-1, layer.units))
        K = layer._params["kernel"]
        layer._grads["kernel"] += xp.matmul(self._x2.T, D)          # [in, N] @ [N, units]
        if layer.use_bias:
            layer._grads["bias"] += D.sum(axis=0)
        return xp.matmul(D, K.T).reshape(self._in_shape)            # [N, units] @ [units, in]


# ============================================================================ Embedding
class Embedding(Layer):
    """Row lookup ``y = embeddings[ids]``: ids of any integer shape -> ``ids.shape + (D,)``.

    Param ``embeddings`` [input_dim, output_dim], initialised uniform in [-0.05, 0.05] (Keras's
    default) or by ``embeddings_initializer`` (Keras's name; see :mod:`npl.initializers`).  Its gradient (``grads["embeddings"]``) is an :class:`npl.IndexedSlices` holding one
    row per looked-up id (duplicates not merged, as TensorFlow's); with ``sparse_grad=False`` it is
    a dense array instead.
    """

    _default_name = "embedding"

    def __init__(self, input_dim, output_dim, dtype=None, seed=None, sparse_grad=True, name=None,
                 embeddings_initializer=None):
        for nm, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError("%s must be a positive integer, got %r" % (nm, v))
        super().__init__(name, dtype, seed)
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.sparse_grad = bool(sparse_grad)
        self._dtype = self._dtype or np.dtype(np.float32)
        init = _init.check(embeddings_initializer, "embeddings_initializer")
        xp, rng = default_xp(), _random.generator(seed)
        shape = (self.input_dim, self.output_dim)
        self._params = {"embeddings": xp.asarray(
            rng.uniform(-0.05, 0.05, shape).astype(self._dtype) if init is None
            else _init.initialize(init, shape, self._dtype, rng, "embeddings"))}
        self._grads = {} if self.sparse_grad else {"embeddings": xp.zeros_like(self._params["embeddings"])}
        self._slices = []

    @property
    def grads(self):
        if not self.sparse_grad:
            return dict(self._grads)
        E = self._params["embeddings"]
        xp = get_array_module(E)
        if not self._slices:
            vals, idx = xp.zeros((0, self.output_dim), E.dtype), xp.zeros((0,), np.int64)
        elif len(self._slices) == 1:
            vals, idx = self._slices[0].values, self._slices[0].indices
        else:
            vals = xp.concatenate([s.values for s in self._slices])
            idx = xp.concatenate([s.indices for s in self._slices])
        return {"embeddings": IndexedSlices(vals, idx, E.shape)}

    def zero_grad(self):
        self._slices = []
        super().zero_grad()

    def output_width(self, input_width=None):
        return self.output_dim

    def _move(self, name):
        super()._move(name)
        self._slices = [IndexedSlices(to_device(s.values, name), to_device(s.indices, name),
                                      s.dense_shape) for s in self._slices]

    def forward(self, ids):
        """``(y, trace)``; ``trace.backward(d_y)`` accumulates the row gradient and returns None."""
        y, tr = embedding_lookup(self._params["embeddings"], ids, return_trace=True)
        return y, EmbeddingLayerTrace(self, tr)


class EmbeddingLayerTrace(_LayerTrace):
    _replaced_by = "set_params or to_device"

    def __init__(self, layer, inner):
        self._remember(layer)
        self._inner = inner

    def backward(self, d_output):
        """Accumulate ``d embeddings`` (IndexedSlices, or dense); ids have no gradient: returns None."""
        self._ensure_fresh()
        s = self._inner.backward(d_output)              # checks d_output before it consumes
        self._consume()
        if self.layer.sparse_grad:
            self.layer._slices.append(s)
        else:
            self.layer._grads["embeddings"] += s.to_dense()
        return None


# ============================================================================ RNN
def cell_param_names(cell):
    """``[(tf_name, key)]``: TensorFlow's variable name (relative to the RNN scope, e.g.
    ``basic_lstm_cell/kernel`` or ``multi_rnn_cell/cell_0/lstm_cell/bias``) for each key of
    ``cell.params``.  A wrapper (:class:`DropoutWrapper`, :class:`ResidualWrapper`,
    :class:`DeviceWrapper`) adds nothing to the names, as in TensorFlow."""
    if isinstance(cell, _CellWrapper):
        return cell_param_names(cell.wrapped_cell)
    if isinstance(cell, MultiRNNCell):
        out = []
        for k, c in enumerate(cell.cells):
            out.extend(("%s/cell_%d/%s" % (cell.name, k, tf), "cell_%d/%s" % (k, key))
                       for tf, key in cell_param_names(c))
        return out
    return [("%s/%s" % (cell.name, k), k) for k in cell._params]


def _walk_cells(cell):
    yield cell
    if isinstance(cell, _CellWrapper):
        yield from _walk_cells(cell.wrapped_cell)
    elif isinstance(cell, MultiRNNCell):
        for c in cell.cells:
            yield from _walk_cells(c)


class RNN(Layer):
    """Runs ``cell`` over a sequence with :func:`npl.nn.dynamic_rnn`.

    output: ``"sequences"`` (every step: [B, T, out], or [T, B, out] with ``time_major``) or
    ``"last"`` (the output at each row's last valid step, [B, out]; zeros where a length is 0).
    ``return_sequences`` (Keras's name) may be given instead: True = "sequences", False = "last".
    Params are the cell's, named as TensorFlow names them under the scope ``name`` (default "rnn").
    """

    _default_name = "rnn"

    def __init__(self, cell, output="sequences", return_sequences=None, time_major=False, name=None):
        if not isinstance(cell, RNNCell):
            raise TypeError("cell must be an npl RNN cell (npl.rnn.BasicLSTMCell, ...), got %s"
                            % type(cell).__name__)
        if return_sequences is not None:
            output = "sequences" if return_sequences else "last"
        if output not in ("sequences", "last"):
            raise ValueError("output must be 'sequences' or 'last', got %r" % (output,))
        super().__init__(name)
        self.cell, self.output, self.time_major = cell, output, bool(time_major)

    @property
    def built(self):
        return self.cell.built

    @property
    def dtype(self):
        return self.cell.dtype

    @property
    def params(self):
        live = self.cell._params
        return {tf: live[key] for tf, key in cell_param_names(self.cell)}

    @property
    def grads(self):
        live = self.cell._grads
        return {tf: live[key] for tf, key in cell_param_names(self.cell)}

    def zero_grad(self):
        self.cell.zero_grad()

    def set_params(self, values, strict=True):
        if not isinstance(values, dict):
            raise TypeError("set_params expects a dict name -> array, got %s" % type(values).__name__)
        _validate_values(self.params, values, strict, "RNN %r" % self.name)
        to_key = dict(cell_param_names(self.cell))
        live = self.cell._params
        for k, v in values.items():
            _assign(live[to_key[k]], v)
        for leaf in self.cell._leaves():
            leaf._bump_version()
        return self

    def build(self, input_size, dtype=np.float32):
        if not self.cell.built:
            self.cell.build(input_size, dtype)
        elif self.cell.input_size != input_size:
            raise ValueError("RNN %r: the cell was built for input width %d, got %d"
                             % (self.name, self.cell.input_size, input_size))
        return self

    def output_width(self, input_width=None):
        return self.cell.output_size

    def to_device(self, backend=None):
        """The cell's ``to_device`` (its parameters and gradients; an unbuilt cell remembers the
        backend); returns self.  Traces of earlier forwards raise :class:`npl.StaleTraceError`."""
        name = resolve_backend(backend, "RNN.to_device")
        self.cell.to_device(name)
        self._device = name
        self._bump_version()
        return self

    def zero_state(self, batch_size, dtype=None):
        return self.cell.zero_state(batch_size, dtype)

    def forward(self, x, initial_state=None, sequence_length=None):
        """``(y, trace)``; ``trace.final_state`` is the cell's final state (carry it for truncated
        BPTT); ``trace.backward(d_y, d_final_state=None) -> d_x``."""
        outputs, final, tr = dynamic_rnn(self.cell, x, sequence_length=sequence_length,
                                         initial_state=initial_state, time_major=self.time_major,
                                         return_trace=True)
        y, last = self._select(outputs, tr.sequence_length)
        return y, RNNLayerTrace(self, tr, final, last, outputs.shape, y.shape)

    def __call__(self, x, initial_state=None, sequence_length=None):
        """The forward's output alone, from a pass that keeps no trace (``dynamic_rnn`` without
        ``return_trace``: on the C loops its working memory is a few steps, not the sequence)."""
        outputs, _ = dynamic_rnn(self.cell, x, sequence_length=sequence_length,
                                 initial_state=initial_state, time_major=self.time_major)
        return self._select(outputs, sequence_length)[0]

    def _select(self, outputs, sequence_length):
        """(y, the rows and steps it took or None): every step, or each row's last valid one
        (``sequence_length`` as dynamic_rnn took it)."""
        if self.output != "last":
            return outputs, None
        xp = get_array_module(outputs)
        T, B = outputs.shape[:2] if self.time_major else outputs.shape[1::-1]
        L = np.full(B, T) if sequence_length is None else lengths_array(sequence_length, B, T, np)
        rows = np.nonzero(L > 0)[0]
        last = (xp.asarray(rows), xp.asarray(L[rows] - 1))
        y = xp.zeros((B, self.cell.output_size), outputs.dtype)
        y[last[0]] = outputs[last[1], last[0]] if self.time_major else outputs[last[0], last[1]]
        return y, last


class RNNLayerTrace(_OnceTrace):
    """Trace of :meth:`RNN.forward`: ``final_state``; ``inner`` (the :class:`npl.rnn_ops.RNNTrace`,
    with its per-layer records); after backward ``d_initial_state``."""

    def __init__(self, layer, inner, final_state, last, out_shape, y_shape):
        self.layer, self.inner, self.final_state = layer, inner, final_state
        self._last, self._out_shape, self._y_shape = last, tuple(out_shape), tuple(y_shape)
        self.d_initial_state = None

    @property
    def records(self):
        return self.inner.records

    def _ensure_fresh(self):
        super()._ensure_fresh()
        check_current(self.inner)           # StaleTraceError after set_params / to_device

    def _check(self, d_output, name="d_output"):
        d = float_array(d_output, name)
        check_shape(d, self._y_shape, name)
        check_dtype(d, self.inner.dtype, name)
        check_on_device(d, name, self.inner._xp, "the forward's outputs")
        return d

    def _check_state(self, d_final_state, name="d_final_state"):
        inner = self.inner
        inner.cell._to_internal(d_final_state, inner.batch_size, inner.dtype, inner._xp, name)

    def backward(self, d_output=None, d_final_state=None):
        """Return ``d_inputs``; parameter gradients accumulate into the cell's grads."""
        self._ensure_fresh()
        d = None
        if d_output is not None:
            d = self._check(d_output)
            if self._last is not None:
                xp = get_array_module(d)
                full = xp.zeros(self._out_shape, d.dtype)
                b, t = self._last
                if self.layer.time_major:
                    full[t, b] = d[b]
                else:
                    full[b, t] = d[b]
                d = full
        dx, d0 = self.inner.backward(d, d_final_state)  # checks both before it consumes
        self._consume()
        self.d_initial_state = d0
        return dx


# ============================================================================ Sequential
class Sequential(Layer):
    """A chain of layers: ``Sequential([Embedding(V, D), RNN(cell), Dense(V)])``.

    ``forward(x, initial_state=None, sequence_length=None, training=None) -> (y, trace)``:
    ``initial_state`` is a tuple with one cell state per :class:`RNN` layer (or None for zeros);
    ``trace.final_state`` is such a tuple (feed it back for stateful / truncated-BPTT training);
    ``sequence_length`` goes to every RNN layer; ``training`` (when not None) switches every
    :class:`DropoutWrapper` on or off for this call.  ``trace.backward(d_y, d_final_state=None)``
    returns ``d_x`` (None when the first layer is an Embedding).  ``model(x, initial_state=None,
    sequence_length=None, training=None)`` returns ``y`` alone, every layer run without a trace
    (for evaluation and prediction: an RNN layer's working memory is then a few steps).

    ``params`` / ``grads``: one dict over all layers keyed ``<layer name>/<TF name>``; repeated
    layer names get TF's suffixes (``dense``, ``dense_1``, ...).  The model builds as soon as the
    input width is known: at construction when the first layer is an Embedding or ``input_size``
    is given, else on the first forward.
    """

    _default_name = "sequential"

    def __init__(self, layers, input_size=None, dtype=None, name=None):
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError("layers must be a non-empty list of npl.layers layers, got %r" % (layers,))
        for k, l in enumerate(layers):
            if not isinstance(l, Layer) or isinstance(l, Sequential):
                raise TypeError("layers[%d] must be a Dense, Embedding or RNN layer, got %s"
                                % (k, type(l).__name__))
        if len({id(l) for l in layers}) != len(layers):
            raise ValueError("the same layer object appears twice in layers")
        _check_distinct([l.cell._leaves() if isinstance(l, RNN) else [] for l in layers],
                        "Sequential", "layers")
        for k, l in enumerate(layers[1:], 1):
            if isinstance(l, Embedding):
                raise ValueError("layers[%d]: an Embedding can only be the first layer" % k)
        super().__init__(name, dtype)
        self.layers = list(layers)
        used = set()
        for l in self.layers:                       # TF-style unique names: dense, dense_1, ...
            base, n = l.name, 0
            while l.name in used:
                n += 1
                l.name = "%s_%d" % (base, n)
            used.add(l.name)
        if input_size is not None or isinstance(self.layers[0], Embedding):
            self.build(input_size, dtype)

    @property
    def rnn_layers(self):
        return [l for l in self.layers if isinstance(l, RNN)]

    @property
    def built(self):
        return all(l.built for l in self.layers)

    def build(self, input_size=None, dtype=None):
        """Build every layer for inputs of last dimension ``input_size``."""
        asked = resolve_dtype(dtype) or self._dtype
        dtype = asked or np.dtype(np.float32)
        width = input_size
        for l in self.layers:
            if isinstance(l, Embedding):
                if asked is not None and l.dtype != asked:
                    raise ValueError("Sequential: dtype=%s, but layers[0] (an Embedding) was created "
                                     "with dtype %s; pass dtype=%s to the Embedding as well"
                                     % (np.dtype(asked).name, l.dtype.name, np.dtype(asked).name))
                width = l.output_width()
                dtype = l.dtype
                continue
            if width is None:
                raise ValueError("Sequential.build needs input_size when the first layer is not an "
                                 "Embedding")
            if not l.built:
                l.build(int(width), dtype)
            width = l.output_width(width)
        return self

    @property
    def params(self):
        return {"%s/%s" % (l.name, k): v for l in self.layers for k, v in l.params.items()}

    @property
    def grads(self):
        return {"%s/%s" % (l.name, k): v for l in self.layers for k, v in l.grads.items()}

    def zero_grad(self):
        for l in self.layers:
            l.zero_grad()

    def to_device(self, backend=None):
        """Every layer's ``to_device`` (the name checked once, before anything moves); returns
        self.  Traces of earlier forwards raise :class:`npl.StaleTraceError`."""
        name = resolve_backend(backend, "Sequential.to_device")
        for l in self.layers:
            l.to_device(name)
        self._device = name
        self._bump_version()
        return self

    def set_params(self, values, strict=True):
        """Set weights from a dict keyed as :attr:`params`; validates everything before copying."""
        if not isinstance(values, dict):
            raise TypeError("set_params expects a dict name -> array, got %s" % type(values).__name__)
        per = {l.name: {} for l in self.layers}
        for k, v in values.items():
            head, _, rest = k.partition("/")
            if head not in per or not rest:
                raise ValueError("set_params: unknown parameter name %r; names start with a layer "
                                 "name %s" % (k, sorted(per)))
            per[head][rest] = v
        for l in self.layers:
            _validate_values(l.params, per[l.name], strict, "layer %r" % l.name)
        for l in self.layers:
            if per[l.name]:
                l.set_params(per[l.name], strict=False)
        return self

    def zero_state(self, batch_size, dtype=None):
        """A tuple of zero states, one per RNN layer."""
        return tuple(l.zero_state(batch_size, dtype) for l in self.rnn_layers)

    def dropout_wrappers(self):
        return [c for l in self.rnn_layers for c in _walk_cells(l.cell) if isinstance(c, DropoutWrapper)]

    @staticmethod
    def _check_initial_state(initial_state, n):
        if initial_state is not None and (not isinstance(initial_state, tuple) or len(initial_state) != n
                                          or hasattr(initial_state, "_fields")):
            raise TypeError("initial_state must be None or a tuple of %d states (one per RNN layer), "
                            "got %s" % (n, type(initial_state).__name__))

    @contextlib.contextmanager
    def _dropout(self, training):
        """Every DropoutWrapper switched to ``training`` for the call (None: as they are)."""
        wrappers = self.dropout_wrappers() if training is not None else []
        saved = [w.training for w in wrappers]
        try:
            for w in wrappers:
                w.training = bool(training)
            yield
        finally:
            for w, s in zip(wrappers, saved):
                w.training = s

    def forward(self, x, initial_state=None, sequence_length=None, training=None):
        n = len(self.rnn_layers)
        self._check_initial_state(initial_state, n)
        with self._dropout(training):
            traces, finals, y, k = [], [], x, 0
            for l in self.layers:
                if isinstance(l, RNN):
                    y, tr = l.forward(y, None if initial_state is None else initial_state[k],
                                      sequence_length)
                    finals.append(tr.final_state)
                    k += 1
                else:
                    y, tr = l.forward(y)
                traces.append(tr)
        return y, SequentialTrace(traces, tuple(finals))


    def __call__(self, x, initial_state=None, sequence_length=None, training=None):
        """The forward's output alone, every layer run without a trace (an :class:`RNN` layer as
        its ``__call__``; ``training`` as in :meth:`forward`)."""
        n = len(self.rnn_layers)
        self._check_initial_state(initial_state, n)
        with self._dropout(training):
            y, k = x, 0
            for l in self.layers:
                if isinstance(l, RNN):
                    y = l(y, None if initial_state is None else initial_state[k], sequence_length)
                    k += 1
                else:
                    y = l(y)
        return y


class SequentialTrace(_OnceTrace):
    """``traces`` (one per layer), ``final_state`` (tuple, one per RNN layer); after backward,
    ``d_initial_state`` (tuple, one per RNN layer)."""

    def __init__(self, traces, final_state):
        self.traces, self.final_state = traces, final_state
        self.d_initial_state = None

    def backward(self, d_output, d_final_state=None):
        """Return ``d_inputs``; every layer's gradients accumulate.  Both cotangents are checked
        before any layer runs, so a rejected call changes nothing and leaves the trace usable."""
        self._ensure_fresh()
        for tr in self.traces:
            tr._ensure_fresh()
        rnn_traces = [t for t in self.traces if isinstance(t, RNNLayerTrace)]
        if d_final_state is not None and (not isinstance(d_final_state, tuple)
                                          or len(d_final_state) != len(rnn_traces)):
            raise TypeError("d_final_state must be None or a tuple of %d states (one per RNN layer)"
                            % len(rnn_traces))
        last = self.traces[-1]
        if d_output is not None and hasattr(last, "_check"):
            last._check(d_output)
        if d_final_state is not None:
            for k, (tr, s) in enumerate(zip(rnn_traces, d_final_state)):
                if s is not None:
                    tr._check_state(s, "d_final_state[%d]" % k)
        self._consume()
        d, k = d_output, len(rnn_traces)
        d0 = [None] * k
        for tr in reversed(self.traces):
            if isinstance(tr, RNNLayerTrace):
                k -= 1
                d = tr.backward(d, None if d_final_state is None else d_final_state[k])
                d0[k] = tr.d_initial_state
            else:
                d = tr.backward(d)
        self.d_initial_state = tuple(d0)
        return d


# ============================================================================ cell wrappers
class _CellWrapper(RNNCell):
    """What TF1's cell wrappers share: a cell around ``cell`` whose parameters, gradients,
    parameter names, state structure, ``build`` and ``to_device`` are the wrapped cell's (a TF1
    wrapper adds no variable scope: ``.../cell_1/basic_lstm_cell/kernel`` inside one too).  The
    sequence pass, its trace-less form and the backward are the wrapped cell's unless a subclass
    adds to them.  ``_walk_cells``, ``cell_param_names`` and ``npl.convert`` see through it."""

    def __init__(self, cell):
        if not isinstance(cell, RNNCell):
            raise TypeError("cell must be an npl RNN cell, got %s" % type(cell).__name__)
        self._cell = cell

    @property
    def wrapped_cell(self):
        return self._cell

    @property
    def cell(self):
        return self._cell

    def _leaves(self):
        return self._cell._leaves()

    @property
    def name(self):
        return self._cell.name

    @property
    def _params(self):
        return self._cell._params

    @property
    def _grads(self):
        return self._cell._grads

    @property
    def params(self):
        return self._cell.params

    @property
    def grads(self):
        return self._cell.grads

    def zero_grad(self):
        self._cell.zero_grad()

    def set_params(self, values, strict=True):
        self._cell.set_params(values, strict)
        return self

    def _plan_params(self, values, strict, name="set_params"):
        return self._cell._plan_params(values, strict, name)

    def _apply_plan(self, plan):
        self._cell._apply_plan(plan)

    def build(self, input_size, dtype=np.float32):
        self._cell.build(input_size, dtype)
        return self

    def to_device(self, backend=None):
        """The wrapped cell's ``to_device`` (its parameters and gradients)."""
        self._cell.to_device(resolve_backend(backend, "%s.to_device" % type(self).__name__))
        return self

    def _home_xp(self):
        return self._cell._home_xp()

    num_units = property(lambda self: self._cell.num_units)
    built = property(lambda self: self._cell.built)
    input_size = property(lambda self: self._cell.input_size)
    dtype = property(lambda self: self._cell.dtype)
    _dtype = property(lambda self: self._cell.dtype)
    output_size = property(lambda self: self._cell.output_size)
    state_size = property(lambda self: self._cell.state_size)
    _chunkable = property(lambda self: self._cell._chunkable)

    def _xp(self):
        return self._cell._xp()

    def _maybe_build(self, x, name):
        self._cell._maybe_build(x, name)

    def _zero_state(self, batch_size, dtype, xp):
        return self._cell._zero_state(batch_size, dtype, xp)

    def _zeros_internal(self, batch, dtype, xp):
        return self._cell._zeros_internal(batch, dtype, xp)

    def _to_internal(self, state, batch, dtype, xp, name):
        return self._cell._to_internal(state, batch, dtype, xp, name)

    def _to_public(self, state):
        return self._cell._to_public(state)

    def _inner_forward(self, x, state, mask, state_mask):
        """The wrapped cell's sequence pass (a state mask passed on only where there is one, as
        MultiRNNCell does, so that a user's cell with the three-argument form works)."""
        if state_mask is None:
            return self._cell._forward_seq(x, state, mask)
        return self._cell._forward_seq(x, state, mask, state_mask)

    def _forward_seq(self, x, state, mask, state_mask=None):
        return self._inner_forward(x, state, mask, state_mask)

    def _backward_seq(self, rec, dout, dstate):
        return self._cell._backward_seq(rec, dout, dstate)

    def _infer_steps(self, x, mask):
        return self._cell._infer_steps(x, mask)

    def _infer_seq(self, x, state, mask, out):
        return self._cell._infer_seq(x, state, mask, out)

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self._cell)


# ============================================================================ DropoutWrapper
class _DropoutRecord(list):
    """The wrapped cell's record (as a one-element list, so the engine's record walkers see through
    it) plus the scaled masks used."""

    def __init__(self, inner, input_mask, output_mask):
        super().__init__([inner])
        self.input_mask, self.output_mask = input_mask, output_mask


class DropoutWrapper(_CellWrapper):
    """``tf.nn.rnn_cell.DropoutWrapper`` for npl cells: dropout on inputs, outputs and state.

    At each step (TF semantics, ``variational_recurrent=False``) every input element is kept with
    probability ``input_keep_prob``, every output element with ``output_keep_prob`` and every
    element of the new state with ``state_keep_prob``; kept values are scaled by ``1 / keep_prob``:
    ``x' = x * mask_in``, ``y, s = cell(x', s_prev)``, ``y' = y * mask_out``,
    ``s' = s * mask_state`` with ``mask = bernoulli(keep_prob) / keep_prob``.  As with TF's default
    ``dropout_state_filter_visitor``, an LSTM's ``c`` is never dropped, only its ``h``; in a
    ``MultiRNNCell`` every layer's ``h`` is.  (TF's filter keeps ``c`` only inside an
    ``LSTMStateTuple``: around an LSTM with ``state_is_tuple=False`` it drops the concatenated
    state whole, which npl does not do, so state dropout refuses that form.)  The dropped state is what the next step reads and what
    the sequence returns as its final state; the step's output is the undropped ``h`` (then output
    dropout).  The engine applies the state mask inside its step loop (``state_mask`` of
    ``_forward_seq``), and the backward goes through the same masks.  With
    ``variational_recurrent=True`` one mask is used for every step of a call and, as in TF1, for
    every row of the batch (TF draws its noise with shape ``[1, depth]``).  A call is one
    ``dynamic_rnn`` / ``static_rnn``, or one step ``cell(x, state)``: TF1 keeps the mask over all
    steps of a ``session.run``, so to keep one mask over a hand-unrolled loop of steps, set
    ``replay = True`` after its first step (and back to False to draw new masks).

    The scaled masks of the last forward are kept in ``masks`` (``{"input": [T, B, I] or None,
    "output": [T, B, O] or None, "state": [T, B, P] (a list, one per layer, for a MultiRNNCell) or
    None}``; [1, B, .] when variational, every row the same).  Set ``replay = True`` to run the
    next forwards with those masks again (or assign ``masks`` yourself first).
    ``training = False`` turns dropout off (evaluation).  Parameters, gradients and names are the
    wrapped cell's.

    >>> import numpy as np, npl
    >>> inner = npl.rnn.BasicLSTMCell(3, seed=0, dtype=np.float64)
    >>> cell = npl.rnn.DropoutWrapper(inner, input_keep_prob=0.5, output_keep_prob=0.5,
    ...                               state_keep_prob=0.5, seed=1)
    >>> x = np.ones((2, 4))                                                   # B = 2, I = 4
    >>> y, s = cell(x, cell.zero_state(2))                                    # one step: T = 1
    >>> m = cell.masks                                         # scaled: 0 or 1 / keep_prob
    >>> m["input"].shape, m["output"].shape, m["state"].shape, sorted(set(m["input"].ravel().tolist()))
    ((1, 2, 4), (1, 2, 3), (1, 2, 3), [0.0, 2.0])
    >>> y0, s0 = inner(x * m["input"][0], inner.zero_state(2))            # the wrapped cell on x'
    >>> np.allclose(y, y0 * m["output"][0])                     # output: the undropped h, dropped
    True
    >>> np.allclose(s.h, s0.h * m["state"][0]), np.allclose(s.c, s0.c)    # state: h dropped, c kept
    (True, True)
    >>> cell.training = False                                                # evaluation
    >>> np.allclose(cell(x, cell.zero_state(2))[0], inner(x, inner.zero_state(2))[0])
    True
    """

    _chunkable = False          # its masks cover the whole sequence of one call

    def __init__(self, cell, input_keep_prob=1.0, output_keep_prob=1.0, state_keep_prob=1.0,
                 variational_recurrent=False, input_size=None, dtype=None, seed=None,
                 dropout_state_filter_visitor=None):
        _CellWrapper.__init__(self, cell)
        for nm, p in (("input_keep_prob", input_keep_prob), ("output_keep_prob", output_keep_prob),
                      ("state_keep_prob", state_keep_prob)):
            if not is_real(p):
                raise TypeError("%s must be a number in (0, 1], got %r" % (nm, p))
            if not 0 < float(p) <= 1:
                raise ValueError("%s must be a number in (0, 1], got %r" % (nm, p))
        if dropout_state_filter_visitor is not None:
            raise ValueError("dropout_state_filter_visitor: only TF's default (drop every state but an "
                             "LSTM's c) is supported; it must be None")
        if float(state_keep_prob) < 1:
            flat = [leaf for leaf in cell._leaves()
                    if isinstance(leaf, LSTMCell) and not leaf._state_is_tuple]
            if flat:
                raise ValueError(
                    "state_keep_prob < 1 around an LSTM cell with state_is_tuple=False (%s) is not "
                    "supported: TF's default filter then drops the whole concatenated [c, h] state, "
                    "c included, and npl drops only h; use state_is_tuple=True (TF's default, whose "
                    "LSTMStateTuple keeps c undropped)" % type(flat[0]).__name__)
        if float(state_keep_prob) < 1 and isinstance(cell, DropoutWrapper) and cell.state_keep_prob < 1:
            raise ValueError("state_keep_prob < 1 on a DropoutWrapper around a DropoutWrapper that "
                             "drops the state too is not supported; drop the state in one of them")
        self.input_keep_prob, self.output_keep_prob = float(input_keep_prob), float(output_keep_prob)
        self.state_keep_prob = float(state_keep_prob)
        self.variational_recurrent = bool(variational_recurrent)
        self.training = True
        self.replay = False
        self.masks = {"input": None, "output": None, "state": None}
        self._seed = seed
        self._rng = None if seed is None else _random.generator(seed)

    def to_device(self, backend=None):
        """The wrapped cell's ``to_device``; the kept masks (``masks``) move with it."""
        name = resolve_backend(backend, "DropoutWrapper.to_device")
        self._cell.to_device(name)
        if isinstance(self.masks, dict):
            self.masks = {k: to_device(m, name) for k, m in self.masks.items()}
        return self

    # -- dropout
    def _mask(self, keep, shape, dtype, xp):
        """Scaled Bernoulli mask: ``(u < keep) / keep`` with u uniform in [0, 1)."""
        rng = self._rng if self._rng is not None else _random.generator(None)
        m = (rng.random(shape) < keep).astype(dtype) / np.asarray(keep, dtype)
        return xp.asarray(m)

    def _state_widths(self):
        """Width of the dropped part of the state: h of each layer (an LSTM's c is kept)."""
        cell = self._cell
        while isinstance(cell, _CellWrapper):
            cell = cell._cell
        if isinstance(cell, MultiRNNCell):
            return [c.output_size for c in cell.cells]
        return cell.output_size

    def _masks_for(self, x, out_width):
        T, B, I = x.shape
        xp, dt = get_array_module(x), x.dtype
        Tm = 1 if self.variational_recurrent else T
        sw = self._state_widths()
        want = {"input": (Tm, B, I), "output": (Tm, B, out_width),
                "state": [(Tm, B, w) for w in sw] if isinstance(sw, list) else (Tm, B, sw)}
        keep = {"input": self.input_keep_prob, "output": self.output_keep_prob,
                "state": self.state_keep_prob}

        def one(p, shape):
            if not self.variational_recurrent:
                return self._mask(p, shape, dt, xp)
            # TF1: "for recurrent variational dropout we use the same dropout mask for all batch
            # elements" (noise of shape [1, depth]); kept as [1, B, depth] for the engine
            return xp.ascontiguousarray(xp.broadcast_to(self._mask(p, (1, 1, shape[2]), dt, xp), shape))

        def draw(k):
            if isinstance(want[k], list):
                return [one(keep[k], w) for w in want[k]]
            return one(keep[k], want[k])

        if self.replay:
            masks = {}
            for k in ("input", "output", "state"):
                m = self.masks.get(k) if isinstance(self.masks, dict) else None
                if keep[k] < 1 and m is None:
                    raise ValueError("replay=True but masks[%r] is None; run a forward with "
                                     "replay=False first or set the masks" % k)
                if m is not None:
                    ms, ws = (m, want[k]) if isinstance(want[k], list) else ([m], [want[k]])
                    if len(ms) != len(ws):
                        raise ValueError("masks[%r] must hold %d arrays (one per layer), got %d"
                                         % (k, len(ws), len(ms)))
                    for a, w in zip(ms, ws):
                        if not hasattr(a, "shape") or get_array_module(a) is not xp:
                            raise TypeError("masks[%r] must be a %s array of shape %s (the inputs' "
                                            "backend), got %s" % (k, xp.__name__, w, type(a).__name__))
                        check_shape(a, w, "masks[%r]" % k)
                        check_dtype(a, dt, "masks[%r]" % k)
                masks[k] = m
            return masks
        return {k: (draw(k) if keep[k] < 1 else None) for k in want}

    def _forward_seq(self, x, state, mask, state_mask=None):
        if not self.training:
            out, final, rec = self._inner_forward(x, state, mask, state_mask)
            return out, final, _DropoutRecord(rec, None, None)
        m = self._masks_for(x, self._cell.output_size)
        if m["state"] is not None and state_mask is not None:
            raise ValueError("state dropout in two nested DropoutWrappers is not supported")
        xin = x if m["input"] is None else x * m["input"]
        sm = m["state"] if m["state"] is not None else state_mask
        out, final, rec = self._inner_forward(xin, state, mask, sm)
        if m["output"] is not None:
            out = out * m["output"]
        self.masks = m
        return out, final, _DropoutRecord(rec, m["input"], m["output"])

    def _infer_steps(self, x, mask):
        return 0 if self.training else self._cell._infer_steps(x, mask)

    def _infer_seq(self, x, state, mask, out):
        """Evaluation (``training = False``) runs the wrapped cell's trace-less pass."""
        return None if self.training else self._cell._infer_seq(x, state, mask, out)

    def _backward_seq(self, rec, dout, dstate):
        if dout is not None and rec.output_mask is not None:
            dout = dout * rec.output_mask
        dx, d0 = self._cell._backward_seq(rec[0], dout, dstate)
        if rec.input_mask is not None:
            dx = dx * rec.input_mask
        return dx, d0

    def __repr__(self):
        return "DropoutWrapper(%r, input_keep_prob=%g, output_keep_prob=%g, state_keep_prob=%g)" % (
            self._cell, self.input_keep_prob, self.output_keep_prob, self.state_keep_prob)


# ============================================================================ ResidualWrapper
class _ResidualRecord(list):
    """The wrapped cell's record (a one-element list, so the engine's record walkers see through
    it), the step mask (the residual passes no gradient past a length) and, for a custom
    ``residual_fn``, the inputs and the wrapped cell's outputs its backward is given."""

    def __init__(self, inner, mask, x=None, y=None):
        super().__init__([inner])
        self.mask, self.x, self.y = mask, x, y


def _residual_pair(residual_fn):
    """``(fn, fn_backward)`` or ``(None, None)`` for the default ``inputs + outputs``."""
    if residual_fn is None:
        return None, None
    if isinstance(residual_fn, (tuple, list)) and len(residual_fn) == 2 \
            and all(callable(f) for f in residual_fn):
        return tuple(residual_fn)
    if callable(residual_fn):
        raise TypeError(
            "residual_fn: npl has no autograd, so a custom residual needs its backward too: pass "
            "residual_fn=(fn, fn_backward), fn(inputs, outputs) -> res and fn_backward(inputs, "
            "outputs, d_res) -> (d_inputs, d_outputs); got the single callable %r" % (residual_fn,))
    raise TypeError("residual_fn must be None or a pair (fn, fn_backward) of callables, got %s"
                    % type(residual_fn).__name__)


class ResidualWrapper(_CellWrapper):
    """``tf.nn.rnn_cell.ResidualWrapper``: the wrapped cell's output plus its input (GNMT's
    residual stacks).  At every step::

        y_t, s_t = cell(x_t, s_{t-1})
        output_t = x_t + y_t                          (residual_fn(x_t, y_t) when given)
        new state = s_t                               (the cell's, unchanged)

    Shapes: x_t [B, I], y_t and the output [B, H] with ``H = cell.output_size``; the default
    residual needs ``I == H`` (ValueError naming both otherwise, at the first forward or build, or
    at once for a built cell).  ``output_size``, ``state_size``, parameters, gradients and
    variable names are the cell's: like TF1's wrapper it adds no variable scope.  Backward:
    ``d_x_t = d_output_t + (dL/dx_t through the cell, with d_y_t = d_output_t)``.

    The sequence pass stays the cell's fused pass: the residual is one add over the whole
    ``[T, B, H]`` output after it (and ``d_inputs += d_outputs`` once in the backward).  Under
    ``dynamic_rnn`` with ``sequence_length`` the *wrapper's* output is zero past a row's length,
    as in TF (the input is not added there), and no gradient reaches the inputs through the
    residual past it.  In a ``MultiRNNCell`` (``[cell0, ResidualWrapper(cell1), ...]``) the
    residual adds each layer's input, the previous layer's output.

    ``residual_fn`` (TF's argument): npl has no autograd, so it takes a pair
    ``(fn, fn_backward)``; a single callable is refused (TypeError), never run without its
    gradient.  ``fn(inputs, outputs) -> res`` gets the time-major arrays of a whole pass,
    ``inputs`` [T, B, I] and ``outputs`` [T, B, H] (T = 1 for one step ``cell(x, state)``), and
    returns ``res`` [T, B, H] (checked: shape, dtype, device), so it must work position by
    position on the last axis, as TF's per-step function does on [B, .].
    ``fn_backward(inputs, outputs, d_res) -> (d_inputs, d_outputs)`` returns the two cotangents
    ([T, B, I], [T, B, H]); ``d_res`` is zero past each row's length and so is what reaches the
    inputs there.  Neither may modify its arguments (``outputs`` is a view of the cell's saved
    slab).  With a custom pair the widths need not match.

    >>> import numpy as np, npl
    >>> inner = npl.rnn.GRUCell(4, seed=0, dtype=np.float64)
    >>> cell = npl.rnn.ResidualWrapper(inner)
    >>> x = np.random.default_rng(0).standard_normal((2, 3, 4))               # B = 2, T = 3, I = H = 4
    >>> out, state = npl.nn.dynamic_rnn(cell, x, sequence_length=[3, 1])
    >>> y, s = npl.nn.dynamic_rnn(inner, x, sequence_length=[3, 1])          # the cell alone
    >>> np.allclose(out[0], x[0] + y[0]), np.allclose(out[1, :1], x[1, :1] + y[1, :1])
    (True, True)
    >>> float(abs(out[1, 1:]).max()), np.allclose(state, s)     # zero past a length; the cell's state
    (0.0, True)
    >>> sorted(cell.params) == sorted(inner.params)                # no variables or scope of its own
    True
    >>> o1, s1, tr = cell(x[:, 0], state, return_trace=True)                  # one step
    >>> dx, ds = tr.backward(np.ones((2, 4)), None)
    >>> y1, _, tr1 = inner(x[:, 0], state, return_trace=True)
    >>> np.allclose(o1, x[:, 0] + y1), np.allclose(dx, 1 + tr1.backward(np.ones((2, 4)), None)[0])
    (True, True)
    """

    def __init__(self, cell, residual_fn=None):
        _CellWrapper.__init__(self, cell)
        self._fn, self._fn_backward = _residual_pair(residual_fn)
        self.residual_fn = residual_fn
        if cell.built:
            self._check_width(cell.input_size, "the wrapped cell's input_size")

    def _check_width(self, width, what):
        if self._fn is None and width != self._cell.output_size:
            raise ValueError("ResidualWrapper: the input width must equal the wrapped cell's "
                             "output_size to add them (input + output), got %s %d and output_size "
                             "%d (or pass residual_fn=(fn, fn_backward))"
                             % (what, width, self._cell.output_size))

    def build(self, input_size, dtype=np.float32):
        if isinstance(input_size, (int, np.integer)) and not isinstance(input_size, bool):
            self._check_width(int(input_size), "input_size")
        return super().build(input_size, dtype)

    def _maybe_build(self, x, name):
        self._check_width(int(x.shape[-1]), "the width of %s" % name)
        self._cell._maybe_build(x, name)

    def _result(self, res, like, what):
        """A custom function's array, checked against ``like`` (shape, dtype, device)."""
        res = float_array(res, what)
        check_on_device(res, what, get_array_module(like), "the inputs")
        check_shape(res, like.shape, what)
        check_dtype(res, like.dtype, what)
        return res

    def _residual(self, x, y):
        """The wrapper's output from the inputs and the cell's outputs ([T, B, .], one pass)."""
        if self._fn is None:
            xp = get_array_module(y)
            out = _ws.empty(xp, y.shape, y.dtype)
            return xp.add(x, y, out=out)                       # one add over [T, B, H]
        return self._result(self._fn(x, y), y, "residual_fn's result (fn(inputs, outputs))")

    def _forward_seq(self, x, state, mask, state_mask=None):
        self._check_width(int(x.shape[-1]), "the inputs' width")
        y, final, rec = self._inner_forward(x, state, mask, state_mask)
        out = self._residual(x, y)
        custom = self._fn is not None
        return out, final, _ResidualRecord(rec, mask, x if custom else None, y if custom else None)

    def _infer_seq(self, x, state, mask, out):
        """The cell's trace-less pass writes its outputs into ``out``; the residual is added there."""
        self._check_width(int(x.shape[-1]), "the inputs' width")
        final = self._cell._infer_seq(x, state, mask, out)
        if final is not None:
            if self._fn is None:
                out += x
            else:
                out[...] = self._residual(x, out.copy())
        return final

    def _backward_seq(self, rec, dout, dstate):
        d_res = None
        if dout is not None:           # past a length the output is zero by a select: no gradient
            xp = get_array_module(dout)
            d_res = dout if rec.mask is None else xp.where(rec.mask, dout, 0)
        if self._fn is None:
            dx, d0 = self._cell._backward_seq(rec[0], dout, dstate)    # the cell masks dout itself
            if d_res is not None:
                dx += d_res                                            # the residual: one add
            return dx, d0
        if d_res is None:                      # no output cotangent: the residual passes nothing
            return self._cell._backward_seq(rec[0], None, dstate)
        grads = self._fn_backward(rec.x, rec.y, d_res)
        if not isinstance(grads, (tuple, list)) or len(grads) != 2:
            raise TypeError("residual_fn's backward must return a pair (d_inputs, d_outputs), got %s"
                            % type(grads).__name__)
        d_in = self._result(grads[0], rec.x, "residual_fn's backward d_inputs")
        d_out = self._result(grads[1], rec.y, "residual_fn's backward d_outputs")
        dx, d0 = self._cell._backward_seq(rec[0], d_out, dstate)
        dx += d_in if rec.mask is None else xp.where(rec.mask, d_in, 0)
        return dx, d0

    def __repr__(self):
        return "ResidualWrapper(%r%s)" % (self._cell, "" if self._fn is None
                                          else ", residual_fn=%r" % (self.residual_fn,))


# ============================================================================ DeviceWrapper
_DEVICE_RE = re.compile(r"^/?(?:job:[A-Za-z0-9_.\-]+/)?(?:replica:\d+/)?(?:task:\d+/)?"
                        r"(?:device:)?(cpu|gpu):(\d+|\*)$", re.IGNORECASE)


def _parse_device(device):
    """``(device_type, device_index)`` of a TF device string: ("CPU" | "GPU", int or None for
    "*"); ``(None, None)`` for None or "" (no device, as ``tf.device(None)``)."""
    if device is None or (isinstance(device, str) and device == ""):
        return None, None
    if not isinstance(device, str):
        raise TypeError("device must be a TensorFlow device string such as '/gpu:0' or '/cpu:0' "
                        "(or None); device functions and DeviceSpec objects are not supported, "
                        "got %s" % type(device).__name__)
    m = _DEVICE_RE.match(device.strip())
    if m is None:
        raise ValueError("device must be a TensorFlow device string: '/cpu:<n>', '/gpu:<n>', "
                         "'/device:GPU:<n>' (an optional '/job:<name>/replica:<n>/task:<n>' "
                         "before it; <n> a non-negative integer or '*'), got %r" % (device,))
    kind, index = m.group(1).upper(), m.group(2)
    return kind, None if index == "*" else int(index)


class DeviceWrapper(_CellWrapper):
    """``tf.nn.rnn_cell.DeviceWrapper``: TF1 runs ``cell`` under ``tf.device(device)``.

    Numerically it is the wrapped cell: outputs, states, gradients, parameters and variable names
    are the cell's (no scope of its own, as in TF1), and its traces and checkpoints are the
    cell's.  npl places nothing: a cell runs where its arrays are (the backend of its parameters
    and inputs: ``cell.to_device``, ``npl.use``); with CuPy that is CuPy's current device
    (``cupy.cuda.Device(n).use()``).  The device is checked and kept, for a port to read:
    ``device`` (as given), ``device_type`` ("CPU", "GPU" or None) and ``device_index`` (an int,
    or None for ``"*"`` or no device).  Accepted: None or "" (no device), ``"/cpu:0"``,
    ``"/gpu:1"``, ``"/device:GPU:0"``, ``"gpu:*"``, with an optional
    ``"/job:<name>/replica:<n>/task:<n>"`` before it (case-insensitive, as TF's parser);
    anything else is a ValueError, a non-string (TF's device functions) a TypeError.

    >>> import numpy as np, npl
    >>> inner = npl.rnn.BasicLSTMCell(3, seed=0, dtype=np.float64)
    >>> cell = npl.rnn.DeviceWrapper(inner, "/gpu:1")
    >>> cell.device, cell.device_type, cell.device_index
    ('/gpu:1', 'GPU', 1)
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 4))
    >>> out, state = npl.nn.dynamic_rnn(cell, x)
    >>> y, s = npl.nn.dynamic_rnn(inner, x)
    >>> np.array_equal(out, y), np.array_equal(state.c, s.c), cell.params.keys() == inner.params.keys()
    (True, True, True)
    """

    def __init__(self, cell, device):
        _CellWrapper.__init__(self, cell)
        self._device_type, self._device_index = _parse_device(device)
        self._tf_device = device

    device = property(lambda self: self._tf_device)
    device_type = property(lambda self: self._device_type)
    device_index = property(lambda self: self._device_index)

    def __repr__(self):
        return "DeviceWrapper(%r, device=%r)" % (self._cell, self._tf_device)
