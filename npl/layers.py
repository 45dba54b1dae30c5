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
* :class:`OutputProjectionWrapper`, :class:`InputProjectionWrapper`, :class:`EmbeddingWrapper` --
  ``tf.contrib.rnn``'s wrappers that own variables (a projection, an embedding), under their scopes.

Every layer follows one protocol: ``forward(x, ...) -> (y, trace)``; ``trace.backward(d_y) -> d_x``
(``None`` for integer inputs) which ACCUMULATES parameter gradients into ``layer.grads`` (call
``zero_grad()`` between steps); ``params`` / ``grads`` are dicts whose arrays are the live ones.
A trace's backward runs once (:class:`npl.BackwardTwiceError` after that).
"""
import contextlib

import numpy as np

from . import activations as _act
from . import random as _random
from . import initializers as _init
from .array_ops import IndexedSlices, embedding_lookup, _OnceTrace, _scatter_add
from .backend import default_xp, get_array_module, to_device, resolve_backend
from .cells import RNNCell, LSTMCell, MultiRNNCell, Parameterized, glorot_uniform, _check_distinct, \
    hold_with, watch_with, StaleTraceError, TraceBase
from .rnn_ops import dynamic_rnn, check_current
from ._checks import as_array, float_array, is_real, check_fits, check_dtype, check_same_device, check_shape, resolve_dtype, \
    lengths_array, check_on_device
from . import workspace as _ws

__all__ = ["Layer", "Dense", "Embedding", "RNN", "Sequential", "DropoutWrapper", "ResidualWrapper",
           "DeviceWrapper", "OutputProjectionWrapper", "InputProjectionWrapper", "EmbeddingWrapper",
           "cell_param_names", "dropout_cells"]


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
    :class:`DeviceWrapper`) adds nothing to the names, as in TensorFlow; one that owns variables
    (:class:`OutputProjectionWrapper`, ...) opens its scope, as in TensorFlow
    (``output_projection_wrapper/basic_lstm_cell/kernel``, ``output_projection_wrapper/kernel``)."""
    if isinstance(cell, _VariableWrapper):
        return [("%s/%s" % (cell.name, k), k) for k in cell._params]
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


def dropout_cells(cell):
    """The cells in ``cell`` (through stacks and wrappers) that apply dropout of their own and
    share its switches: ``training`` (False: no dropout), ``replay`` and the kept ``masks`` --
    every :class:`DropoutWrapper`, and the cells with built-in dropout
    (:class:`npl.rnn.LayerNormBasicLSTMCell`).  ``Sequential(training=...)``, npl.train's
    evaluation and npl.gradcheck's mask replay go through this list."""
    return [c for c in _walk_cells(cell) if getattr(c, "_has_dropout", False)]


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
        """The dropout cells of every RNN layer (:func:`dropout_cells`: the DropoutWrappers and
        the cells with dropout of their own), which ``training=`` switches."""
        return [c for l in self.rnn_layers for c in dropout_cells(l.cell)]

    @staticmethod
    def _check_initial_state(initial_state, n):
        if initial_state is not None and (not isinstance(initial_state, tuple) or len(initial_state) != n
                                          or hasattr(initial_state, "_fields")):
            raise TypeError("initial_state must be None or a tuple of %d states (one per RNN layer), "
                            "got %s" % (n, type(initial_state).__name__))

    @contextlib.contextmanager
    def _dropout(self, training):
        """Every dropout cell switched to ``training`` for the call (None: as they are)."""
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
        hold_with(inner, input_mask, output_mask)         # trace memory


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

    _has_dropout = True        # see dropout_cells

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
        if float(state_keep_prob) < 1 and any(isinstance(c, DropoutWrapper) and c.state_keep_prob < 1
                                              for c in _walk_cells(cell)):
            raise ValueError("state_keep_prob < 1 on a DropoutWrapper around a DropoutWrapper that "
                             "drops the state too (directly, through other wrappers or in a "
                             "MultiRNNCell) is not supported; drop the state in one of them")
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
        super().to_device(name)
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
        hold_with(rec, None if xin is x else xin)          # the dropped inputs the layer keeps
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
# the device types TF 1.15's DeviceSpec knows by their short name ("/gpu:0"; any other type is
# written "/device:<TYPE>:<n>")
_TF_DEVICE_TYPES = frozenset({"CPU", "GPU", "TPU", "CUSTOM"})


def _parse_device(device):
    """``(device_type, device_index)`` of a TF device string, by the rules of TF's
    ``DeviceSpec.from_string``: the string is fields separated by "/", in any order, each
    ``job:<name>``, ``replica:<int>``, ``task:<int>``, a device ``<type>`` or ``<type>:<index>``
    (type CPU, GPU, TPU or CUSTOM in any case, kept upper-cased), or ``device:<type>:<index>``
    (the type as written, "cpu" and "gpu" upper-cased); an index ``*`` (or none) is None; empty fields are skipped, at most
    one device type.  ``(None, None)`` for None or "" (no device, as ``tf.device(None)``)."""
    if device is None:
        return None, None
    if not isinstance(device, str):
        raise TypeError("device must be a TensorFlow device string such as '/gpu:0' or '/cpu:0' "
                        "(or None); device functions and DeviceSpec objects are not supported, "
                        "got %s" % type(device).__name__)
    form = ("device must be a TensorFlow device string (fields such as '/job:<name>', "
            "'/replica:<n>', '/task:<n>', '/cpu:<n>', '/gpu:<n>', '/device:<TYPE>:<n>'), got %r: "
            % (device,))

    def integer(text, what):
        try:
            return int(text)
        except ValueError:
            raise ValueError(form + "%s %r is not an integer" % (what, text)) from None

    kind = index = None
    for part in device.split("/"):
        fields = part.split(":")
        key = fields[0]
        if len(fields) == 2 and key in ("job", "replica", "task"):
            if key != "job":
                integer(fields[1], key)
            continue
        if len(fields) <= 2 and key.upper() in _TF_DEVICE_TYPES:
            new_kind, idx = key.upper(), fields[1] if len(fields) == 2 else "*"
        elif len(fields) == 3 and key == "device":
            new_kind, idx = fields[1], fields[2]      # as written, but "cpu" / "gpu" upper-cased
            new_kind = new_kind.upper() if new_kind in ("cpu", "gpu") else new_kind
        elif key == "":
            continue                              # an empty field (TF skips it too)
        else:
            raise ValueError(form + "unknown field %r" % (part,))
        if kind is not None:
            raise ValueError(form + "more than one device type")
        kind, index = new_kind, None if idx == "*" else integer(idx, "the device index")
    return kind, index


class DeviceWrapper(_CellWrapper):
    """``tf.nn.rnn_cell.DeviceWrapper``: TF1 runs ``cell`` under ``tf.device(device)``.

    Numerically it is the wrapped cell: outputs, states, gradients, parameters and variable names
    are the cell's (no scope of its own, as in TF1), and its traces and checkpoints are the
    cell's.  npl places nothing: a cell runs where its arrays are (the backend of its parameters
    and inputs: ``cell.to_device``, ``npl.use``); with CuPy that is CuPy's current device
    (``cupy.cuda.Device(n).use()``).  The device is parsed by the rules of TF's
    ``DeviceSpec.from_string`` and kept, for a port to read: ``device`` (as given),
    ``device_type`` ("CPU", "GPU", "TPU", "CUSTOM", the ``<TYPE>`` of ``"/device:<TYPE>:<n>"``,
    or None) and ``device_index`` (an int, or None for ``"*"``, no index or no device).
    Accepted as by TF: None or "" (no device), ``"/cpu:0"``, ``"/gpu:1"``, ``"gpu"``,
    ``"/device:GPU:0"``, ``"/job:ps/task:0"``, fields in any order; a string TF refuses is a
    ValueError, a non-string (TF's device functions) a TypeError.

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


# ============================================================================ wrappers with variables
class _WrapperVariables(Parameterized):
    """The variables a wrapper creates itself, under its own scope (``kernel``, ``bias``,
    ``embedding``): a parameter-owning leaf, so that ``_leaves()`` (float64 copies, version bumps,
    the one-cell-per-layer check, inspect) sees them as it sees a cell's."""

    def __init__(self, name):
        self.name = name
        self._params, self._grads = {}, {}
        self._dtype = None
        self._seed = None

    built = property(lambda self: bool(self._params))
    dtype = property(lambda self: self._dtype)

    def _role(self, name):
        return name

    def _on_build(self):
        pass

    def _create(self, values, dtype, xp):
        self._dtype = np.dtype(dtype)
        self._params = {k: xp.asarray(v) for k, v in values.items()}
        self._grads = {k: xp.zeros_like(v) for k, v in self._params.items()}
        self._bump_version()


class _WrapperRecord(list):
    """The wrapped cell's record (one element, so the engine's record walkers see through it) plus
    what the wrapper's backward needs: the projection's input ``a`` [T*B, K], its activated output
    ``z`` (with an activation), the step mask and the variables' version at the forward."""

    def __init__(self, inner, a, z, mask, own):
        super().__init__([inner])
        self.a, self.z, self.mask, self.version = a, z, mask, own._version
        hold_with(inner, z)                                # trace memory (a: by the subclass)
        watch_with(inner, own)                             # stale variables: caught up front


class _VariableWrapper(_CellWrapper):
    """A TF1 wrapper that owns variables (tf.contrib.rnn's OutputProjectionWrapper,
    InputProjectionWrapper, EmbeddingWrapper).  Unlike DropoutWrapper it opens a variable scope
    named after its class, so in TF the wrapped cell's variables sit under it
    (``rnn/output_projection_wrapper/basic_lstm_cell/kernel``) next to the wrapper's own
    (``rnn/output_projection_wrapper/kernel``).  ``params`` / ``grads`` are keyed by TF's names
    relative to the wrapper: the wrapped cell's under its TF names (``basic_lstm_cell/kernel``,
    ``multi_rnn_cell/cell_0/gru_cell/gates/kernel``) and the wrapper's own (``kernel``, ``bias``,
    ``embedding``); the arrays are the live ones."""

    _default_name = None
    _own_names = ("kernel", "bias")

    def __init__(self, cell):
        _CellWrapper.__init__(self, cell)
        self._own = _WrapperVariables(self._default_name)
        self._input_size = None

    name = property(lambda self: self._own.name)
    built = property(lambda self: self._cell.built and self._own.built)
    input_size = property(lambda self: self._input_size if self.built else None)

    def _leaves(self):
        return self._cell._leaves() + [self._own]

    def _inner_names(self):
        return cell_param_names(self._cell)

    @property
    def _params(self):
        live = self._cell._params
        out = {tf: live[key] for tf, key in self._inner_names()}
        out.update(self._own._params)
        return out

    @property
    def _grads(self):
        live = self._cell._grads
        out = {tf: live[key] for tf, key in self._inner_names()}
        out.update(self._own._grads)
        return out

    params = property(lambda self: dict(self._params))
    grads = property(lambda self: dict(self._grads))

    def zero_grad(self):
        self._cell.zero_grad()
        self._own.zero_grad()

    # ------------------------------------------------------------- building
    def _own_values(self, input_size, dtype):
        """{name: initial value} of the wrapper's own variables for inputs of ``input_size``."""
        raise NotImplementedError("%s (a _VariableWrapper) must define _own_values" % type(self).__name__)

    def _inner_width(self, input_size):
        """The input width the wrapped cell sees."""
        raise NotImplementedError("%s (a _VariableWrapper) must define _inner_width" % type(self).__name__)

    def _build_own(self, input_size, dtype):
        self._own._create(self._own_values(input_size, dtype), dtype, self._cell._home_xp())
        self._input_size = int(input_size)

    def build(self, input_size, dtype=np.float32):
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 1:
            raise ValueError("input_size must be a positive integer, got %r" % (input_size,))
        dtype = resolve_dtype(dtype) or np.dtype(np.float32)
        self._cell.build(self._inner_width(int(input_size)), dtype)
        self._build_own(int(input_size), dtype)
        return self

    def _check_inner_width(self, width):
        if self._cell.built and self._cell.input_size != width:
            raise ValueError("%s feeds the wrapped cell inputs of width %d, but the cell was built "
                             "for width %d" % (type(self).__name__, width, self._cell.input_size))

    def _maybe_build(self, x, name):
        width = int(x.shape[-1])
        if self._own.built:
            if width != self._input_size:
                raise ValueError("%s must have feature width %d (%s was built for it), got shape %s"
                                 % (name, self._input_size, type(self).__name__, tuple(x.shape)))
            check_dtype(x, self._own.dtype, name)
            check_same_device(x, name, self._own._params.values(),
                              "%s's parameters" % type(self).__name__)
        inner = self._inner_width(width)
        self._check_inner_width(inner)
        if not self._cell.built:
            if self._cell.dtype is not None and self._cell.dtype != x.dtype:
                raise TypeError("%s has dtype %s but the wrapped cell was created with dtype=%s"
                                % (name, x.dtype, self._cell.dtype))
            self._cell.build(inner, x.dtype)
        check_dtype(x, self._cell.dtype, name)
        if not self._own.built:
            self._build_own(width, x.dtype)

    # ------------------------------------------------------------- parameters
    def _plan_params(self, values, strict, name="set_params"):
        if not isinstance(values, dict):
            raise TypeError("%s expects a dict name -> array, got %s" % (name, type(values).__name__))
        if not self.built:
            raise ValueError("%s on an unbuilt %s: build it first (cell.build(input_size, dtype) or "
                             "one forward), so that its variables exist" % (name, type(self).__name__))
        to_key = dict(self._inner_names())
        own = self._own._params
        unknown = sorted(k for k in values if k not in to_key and k not in own)
        if unknown:
            raise ValueError("%s: unknown parameter names %s for %s; expected %s"
                             % (name, unknown, type(self).__name__, sorted(self._params)))
        missing = sorted(k for k in own if k not in values)
        if strict and missing:
            raise ValueError("%s: missing parameters %s for %s (pass strict=False to set only some)"
                             % (name, missing, type(self).__name__))
        inner_vals = {to_key[k]: v for k, v in values.items() if k in to_key}
        inner_plan = None
        if isinstance(self._cell, MultiRNNCell):      # it checks everything in its own set_params
            inner_plan = ("multi", inner_vals, strict) if (inner_vals or strict) else None
        elif inner_vals or strict:
            inner_plan = self._cell._plan_params(inner_vals, strict, name)
        arrays = {}
        for k, v in values.items():
            if k in own:
                a = float_array(v, "%s: params[%r]" % (name, k))
                check_shape(a, own[k].shape, "%s: params[%r]" % (name, k))
                check_fits(a, own[k].dtype, "%s: params[%r]" % (name, k))
                arrays[k] = a
        return self._input_size, self._own.dtype, (inner_plan, arrays)

    def _apply_plan(self, plan):
        inner_plan, arrays = plan[2]
        if inner_plan is not None and inner_plan[0] == "multi":
            self._cell.set_params(inner_plan[1], inner_plan[2])
        elif inner_plan is not None:
            self._cell._apply_plan(inner_plan)
        for k, a in arrays.items():
            _assign(self._own._params[k], a)
        self._own._bump_version()

    def set_params(self, values, strict=True):
        """Set the wrapped cell's and the wrapper's variables from ``{TF name relative to the
        wrapper: array}`` (the keys of :attr:`params`); everything is checked before anything is
        set.  The wrapper must be built."""
        self._apply_plan(self._plan_params(values, strict))
        return self

    def to_device(self, backend=None):
        name = resolve_backend(backend, "%s.to_device" % type(self).__name__)
        self._cell.to_device(name)
        own = self._own
        own._device = name
        own._params = {k: to_device(v, name) for k, v in own._params.items()}
        own._grads = {k: to_device(v, name) for k, v in own._grads.items()}
        own._bump_version()
        return self

    def _check_fresh(self, rec):
        if rec.version != self._own._version:
            raise StaleTraceError(
                "the variables of %s were replaced (set_params, build or to_device) after this "
                "trace's forward; run the forward again" % type(self).__name__)

    def _infer_steps(self, x, mask):
        return 0

    def _infer_seq(self, x, state, mask, out):
        return None

    # ------------------------------------------------------------- the projection, one GEMM
    def _project(self, a2, act):
        """``act(a2 @ kernel + bias)`` for ``a2`` [N, K]: one GEMM over every step of the pass."""
        xp = get_array_module(a2)
        W, b = self._own._params["kernel"], self._own._params["bias"]
        z = _ws.empty(xp, (a2.shape[0], W.shape[1]), a2.dtype)
        xp.matmul(a2, W, out=z)
        z += b
        if act is not None:
            act(z, out=z)
        return z

    def _project_backward(self, rec, dz, act):
        """From ``dL/dz`` [N, O] (z the projection's output): accumulate ``kernel`` (one GEMM) and
        ``bias`` and return ``dL/da`` [N, K]."""
        if act is not None:
            dz = dz * act.grad_from_output(rec.z)
        g = self._own._grads
        g["kernel"] += rec.a.T @ dz
        g["bias"] += dz.sum(0)
        return dz @ self._own._params["kernel"].T


def _check_count(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError("%s: %s must be a positive integer, got %r" % (owner, name, value))
    return int(value)


class OutputProjectionWrapper(_VariableWrapper):
    """``tf.contrib.rnn.OutputProjectionWrapper``: the wrapped cell's output projected to
    ``output_size``, the state unchanged.  At every step::

        y_t, s_t = cell(x_t, s_{t-1})
        output_t = activation(y_t @ kernel + bias)         # kernel [H, O], bias [O]
        new state = s_t

    Shapes: x_t [B, I], y_t [B, H] with ``H = cell.output_size``, output [B, O] with
    ``O = output_size``.  Variables (TF 1.15's ``_Linear`` under the wrapper's scope):
    ``output_projection_wrapper/kernel`` [H, O] (glorot uniform, ``get_variable``'s default) and
    ``output_projection_wrapper/bias`` [O] (zeros); the wrapped cell's sit under the same scope
    (``rnn/output_projection_wrapper/basic_lstm_cell/kernel``).  ``activation``: None (linear, TF's
    default) or an npl activation (a name or ``tf.tanh``-like function, with its derivative).

    The sequence pass stays fused: the wrapped cell's pass, then one GEMM over all ``[T*B, H]``
    outputs; the backward is one GEMM for ``d kernel`` and one for the cell's output cotangent.
    Under ``dynamic_rnn`` the wrapper's output is zero past a row's length (TF's select), and
    no gradient flows through it there.

    >>> import numpy as np, npl
    >>> inner = npl.rnn.GRUCell(4, seed=0, dtype=np.float64)
    >>> cell = npl.rnn.OutputProjectionWrapper(inner, 3)
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 6))
    >>> out, state = npl.nn.dynamic_rnn(cell, x, sequence_length=[5, 2])
    >>> sorted(cell.params)
    ['bias', 'gru_cell/candidate/bias', 'gru_cell/candidate/kernel', 'gru_cell/gates/bias', 'gru_cell/gates/kernel', 'kernel']
    >>> y, s = npl.nn.dynamic_rnn(inner, x, sequence_length=[5, 2])
    >>> W, b = cell.params["kernel"], cell.params["bias"]
    >>> np.allclose(out[0], y[0] @ W + b), np.allclose(out[1, :2], y[1, :2] @ W + b), np.allclose(state, s)
    (True, True, True)
    >>> float(abs(out[1, 2:]).max())                                  # zero past a length
    0.0
    """

    _default_name = "output_projection_wrapper"

    def __init__(self, cell, output_size, activation=None, reuse=None):
        _VariableWrapper.__init__(self, cell)
        self._output_size = _check_count(output_size, "output_size", "OutputProjectionWrapper")
        self._activation = None if activation is None else _act.get(activation)

    output_size = property(lambda self: self._output_size)

    def _inner_width(self, input_size):
        return input_size

    def _own_values(self, input_size, dtype):
        rng = _random.generator(None)
        H, O = self._cell.output_size, self._output_size
        return {"kernel": glorot_uniform((H, O), rng, dtype), "bias": np.zeros((O,), dtype)}

    def _forward_seq(self, x, state, mask, state_mask=None):
        y, final, rec = self._inner_forward(x, state, mask, state_mask)
        T, B, H = y.shape
        xp = get_array_module(y)
        y2 = xp.ascontiguousarray(y.reshape(T * B, H))
        z = self._project(y2, self._activation)
        hold_with(rec, y2)                   # the cell's outputs, kept for the kernel gradient
        return (z.reshape(T, B, self._output_size), final,
                _WrapperRecord(rec, y2, z if self._activation is not None else None, mask,
                               self._own))

    def _backward_seq(self, rec, dout, dstate):
        self._check_fresh(rec)
        d_inner = None
        if dout is not None:            # past a length the output is zero by a select: no gradient
            xp = get_array_module(dout)
            T, B, O = dout.shape
            d = dout if rec.mask is None else xp.where(rec.mask, dout, 0)
            d_inner = self._project_backward(rec, d.reshape(T * B, O), self._activation) \
                .reshape(T, B, self._cell.output_size)
        return self._cell._backward_seq(rec[0], d_inner, dstate)

    def __repr__(self):
        return "OutputProjectionWrapper(%r, output_size=%d)" % (self._cell, self._output_size)


class InputProjectionWrapper(_VariableWrapper):
    """``tf.contrib.rnn.InputProjectionWrapper``: the input projected to ``num_proj`` before the
    wrapped cell.  At every step::

        p_t = activation(x_t @ kernel + bias)               # kernel [I, P], bias [P]
        output_t, s_t = cell(p_t, s_{t-1})

    Shapes: x_t [B, I], p_t [B, P] with ``P = num_proj``, output [B, cell.output_size].  TF 1.15
    builds the projection as ``_Linear(inputs, num_proj, True)``: it has a bias.  Variables
    ``input_projection_wrapper/kernel`` [I, P] (glorot uniform) and ``input_projection_wrapper/bias``
    [P] (zeros); the wrapped cell's sit under the same scope.  ``input_size`` is TF's deprecated,
    unused argument (accepted and ignored, as TF).  The sequence pass projects all ``[T*B, I]``
    inputs with one GEMM before the cell's fused pass, and the backward is one GEMM for
    ``d kernel`` and one for ``d inputs``; past a length the wrapped cell passes no gradient, so
    none reaches the inputs there.

    >>> import numpy as np, npl
    >>> inner = npl.rnn.BasicRNNCell(3, seed=0, dtype=np.float64)
    >>> cell = npl.rnn.InputProjectionWrapper(inner, 2, activation="tanh")
    >>> x = np.random.default_rng(0).standard_normal((2, 4, 5))
    >>> out, state = npl.nn.dynamic_rnn(cell, x)
    >>> W, b = cell.params["kernel"], cell.params["bias"]                # [5, 2], [2]
    >>> y, s = npl.nn.dynamic_rnn(inner, np.tanh(x @ W + b))
    >>> np.allclose(out, y), np.allclose(state, s), inner.input_size
    (True, True, 2)
    """

    _default_name = "input_projection_wrapper"

    def __init__(self, cell, num_proj, activation=None, input_size=None, reuse=None):
        _VariableWrapper.__init__(self, cell)
        self._num_proj = _check_count(num_proj, "num_proj", "InputProjectionWrapper")
        self._activation = None if activation is None else _act.get(activation)

    def _inner_width(self, input_size):
        return self._num_proj

    def _own_values(self, input_size, dtype):
        rng = _random.generator(None)
        P = self._num_proj
        return {"kernel": glorot_uniform((input_size, P), rng, dtype), "bias": np.zeros((P,), dtype)}

    def _forward_seq(self, x, state, mask, state_mask=None):
        T, B, I = x.shape
        xp = get_array_module(x)
        x2 = xp.ascontiguousarray(x.reshape(T * B, I))
        p = self._project(x2, self._activation)
        y, final, rec = self._inner_forward(p.reshape(T, B, self._num_proj), state, mask, state_mask)
        # trace memory: the projected inputs the cell keeps, and x2 where it is a copy of x
        # (reshaping a non-contiguous x, the transposed view of batch-major inputs, copies it)
        hold_with(rec, p, None if x.flags.c_contiguous else x2)
        return y, final, _WrapperRecord(rec, x2, p if self._activation is not None else None, mask,
                                        self._own)

    def _backward_seq(self, rec, dout, dstate):
        self._check_fresh(rec)
        dp, d0 = self._cell._backward_seq(rec[0], dout, dstate)   # zero past each row's length
        T, B, P = dp.shape
        dx = self._project_backward(rec, dp.reshape(T * B, P), self._activation)
        return dx.reshape(T, B, rec.a.shape[1]), d0

    def __repr__(self):
        return "InputProjectionWrapper(%r, num_proj=%d)" % (self._cell, self._num_proj)


def _state_dtype(state):
    while isinstance(state, (tuple, list)) and state:
        state = state[0]
    return getattr(state, "dtype", None)


class _EmbeddingTrace(TraceBase):
    """Trace of a pass of an :class:`EmbeddingWrapper` (``dynamic_rnn``, ``static_rnn`` or one
    step): the wrapped cell's trace (``inner``) and the ids.  ``backward`` takes the wrapped
    pass's cotangents, adds the embedding's gradient (one scatter-add of ``dL/d embedded`` into
    the dense ``grads["embedding"]``, repeated ids adding up) and returns ``(None,
    d_initial_state)``: integer ids have no gradient (TF's ``tf.gradients`` gives None)."""

    def __init__(self, wrapper, inner, ids, mode, embedded):
        self.cell, self.inner, self._ids, self._mode = wrapper, inner, ids, mode
        self._version = wrapper._own._version
        self._done = False
        hold_with(inner.records, embedded)        # the gathered embeddings the cell's pass keeps
        watch_with(inner.records, wrapper._own)   # a replaced embedding: caught up front

    @property
    def records(self):
        return self.inner.records

    def backward(self, d_outputs=None, d_final_state=None):
        from .rnn_ops import _ensure_fresh
        _ensure_fresh(self)
        if self._version != self.cell._own._version:
            raise StaleTraceError("the embedding of EmbeddingWrapper was replaced (set_params, build "
                                  "or to_device) after this trace's forward; run the forward again")
        if self._mode == "step" and d_outputs is not None:
            d_outputs = [d_outputs]
        d_emb, d0 = self.inner.backward(d_outputs, d_final_state)   # checks, then consumes
        self._done = True
        if self._mode != "dynamic":
            d_emb = get_array_module(d_emb[0]).stack(d_emb)         # [T, B, D], as the ids [T, B]
        E = self.cell._own._grads["embedding"]
        _scatter_add(E, self._ids.reshape(-1), d_emb.reshape(-1, E.shape[1]))
        return None, d0


class EmbeddingWrapper(_VariableWrapper):
    """``tf.contrib.rnn.EmbeddingWrapper``: integer symbol ids embedded, then the wrapped cell::

        e_t = embedding[ids_t]                          # embedding [embedding_classes, D]
        output_t, s_t = cell(e_t, s_{t-1})

    TF reshapes each step's ids to ``[-1]``: one step takes ids ``[B]`` or ``[B, 1]``;
    ``dynamic_rnn`` takes ``[batch, time, 1]`` (TF's ``dynamic_rnn`` needs rank 3), ``static_rnn``
    a list of ``[B]`` or ``[B, 1]``.  Ids must be integers in ``[0, embedding_classes)``
    (TypeError for float ids, ValueError out of range, naming the argument).  The variable is
    ``embedding_wrapper/embedding`` [embedding_classes, embedding_size], initialised by
    ``initializer`` or, as TF's default, uniform in ``[-sqrt(3), sqrt(3)]`` (variance 1); its dtype
    is the state's, so a pass needs ``dtype=`` or ``initial_state`` (as TF: integer inputs carry
    no float dtype).  The wrapped cell's variables sit under the same scope
    (``rnn/embedding_wrapper/lstm_cell/kernel``).

    A pass is one gather over all ``[T, B]`` ids, then the wrapped cell's fused pass; the backward
    is the cell's, then one scatter-add into the dense ``grads["embedding"]`` (as
    ``npl.layers.Embedding(sparse_grad=False)`` accumulates); its trace returns None for the ids.
    The wrapper takes ids, so it is the cell given to ``dynamic_rnn`` / ``static_rnn`` or called
    for one step (around a MultiRNNCell, as ``embedding_rnn_seq2seq`` uses it), not a layer inside
    a MultiRNNCell or another wrapper (a TypeError says so).

    >>> import numpy as np, npl
    >>> inner = npl.rnn.GRUCell(3, seed=0)
    >>> cell = npl.rnn.EmbeddingWrapper(inner, embedding_classes=5, embedding_size=2)
    >>> ids = np.array([[[1], [4], [0]], [[2], [2], [3]]])                  # [B = 2, T = 3, 1]
    >>> out, state = npl.nn.dynamic_rnn(cell, ids, dtype=np.float32)
    >>> E = cell.params["embedding"]
    >>> y, s = npl.nn.dynamic_rnn(inner, E[ids[..., 0]])
    >>> np.allclose(out, y), np.allclose(state, s), E.shape
    (True, True, (5, 2))
    """

    _default_name = "embedding_wrapper"
    _own_names = ("embedding",)
    _takes_ids = True

    def __init__(self, cell, embedding_classes, embedding_size, initializer=None, reuse=None):
        _VariableWrapper.__init__(self, cell)
        self._embedding_classes = _check_count(embedding_classes, "embedding_classes", "EmbeddingWrapper")
        self._embedding_size = _check_count(embedding_size, "embedding_size", "EmbeddingWrapper")
        self._initializer = _init.check(initializer, "initializer")

    embedding_classes = property(lambda self: self._embedding_classes)
    embedding_size = property(lambda self: self._embedding_size)

    def _inner_width(self, input_size):
        return self._embedding_size

    def _own_values(self, input_size, dtype):
        rng, shape = _random.generator(None), (self._embedding_classes, self._embedding_size)
        if self._initializer is None:
            s = np.sqrt(3.0)
            return {"embedding": rng.uniform(-s, s, shape).astype(dtype)}
        return {"embedding": _init.initialize(self._initializer, shape, dtype, rng, "embedding")}

    def build(self, input_size=1, dtype=np.float32):
        """Create the embedding and build the wrapped cell for ``embedding_size`` inputs
        (``input_size`` is the one id per row: 1)."""
        return _VariableWrapper.build(self, input_size, dtype)

    def _forward_seq(self, x, state, mask, state_mask=None):
        raise TypeError("EmbeddingWrapper reads integer ids, so it must be the cell given to "
                        "dynamic_rnn / static_rnn (or called for one step), not a layer inside a "
                        "MultiRNNCell or another wrapper; wrap the whole stack instead")

    # ------------------------------------------------------------- ids in
    def _float_dtype(self, dtype, initial_state):
        ft = resolve_dtype(dtype)
        if ft is None and initial_state is not None:
            ft = resolve_dtype(_state_dtype(initial_state), "initial_state's dtype")
        if ft is None:
            ft = self._own.dtype or self._cell.dtype
        if ft is None:
            raise ValueError("dtype: EmbeddingWrapper reads integer ids, which carry no float "
                             "dtype; pass dtype= (e.g. np.float32) or initial_state (as TF: 'If "
                             "there is no initial_state, you must give a dtype')")
        if self._own.built and self._own.dtype != ft:
            raise TypeError("dtype %s given, but the embedding of EmbeddingWrapper is %s (no silent "
                            "casting)" % (ft, self._own.dtype))
        if not self.built:
            self._check_inner_width(self._embedding_size)
            if not self._cell.built:
                self._cell.build(self._embedding_size, ft)
            self._build_own(1, ft)
        return ft

    def _ids(self, ids, name):
        a = as_array(ids, name, xp=self._cell._home_xp() if isinstance(ids, (list, tuple)) else None)
        if isinstance(ids, (list, tuple)) and a.size == 0 and a.dtype.kind == "f":
            a = a.astype(np.int64)
        if a.dtype.kind not in "iu":
            raise TypeError("%s must be integer symbol ids (EmbeddingWrapper looks them up), got "
                            "dtype %s" % (name, a.dtype))
        if a.size:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= self._embedding_classes:
                raise ValueError("%s must be ids in [0, %d) (embedding_classes), got min %d max %d"
                                 % (name, self._embedding_classes, lo, hi))
        return a

    def _embed(self, ids, name):
        E = self._own._params["embedding"]
        check_same_device(ids, name, [E], "EmbeddingWrapper's embedding", plural=False)
        return get_array_module(E).take(E, ids, axis=0)

    def _dynamic_rnn(self, inputs, sequence_length, initial_state, dtype, time_major, return_trace,
                     inputs_name="inputs", state_name="initial_state"):
        from .rnn_ops import _dynamic_rnn
        ids = self._ids(inputs, inputs_name)
        if ids.ndim != 3 or ids.shape[2] != 1:
            raise ValueError("%s must have shape [%s, 1] (one symbol id per row and step, as TF's "
                             "dynamic_rnn takes them for EmbeddingWrapper), got %s"
                             % (inputs_name, "time, batch" if time_major else "batch, time",
                                tuple(ids.shape)))
        ft = self._float_dtype(dtype, initial_state)
        ids = ids[..., 0]
        emb = self._embed(ids, inputs_name)                 # one gather over [B, T]
        res = _dynamic_rnn(self._cell, emb, sequence_length, initial_state, ft, time_major,
                           return_trace, "cell", inputs_name, state_name)
        if return_trace:
            return res[0], res[1], _EmbeddingTrace(self, res[2], ids, "dynamic", emb)
        return res

    def _static_rnn(self, inputs, initial_state, dtype, sequence_length, return_trace, mode="static"):
        from .rnn_ops import static_rnn
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise (ValueError if isinstance(inputs, (list, tuple)) else TypeError)(
                "inputs must be a non-empty list of [batch] (or [batch, 1]) id arrays, one per step, "
                "got %s" % ("an empty list" if isinstance(inputs, (list, tuple)) else type(inputs).__name__))
        ids = []
        for t, a in enumerate(inputs):
            nm = "inputs[%d]" % t if mode == "static" else "inputs"
            a = self._ids(a, nm)
            if not (a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)):
                raise ValueError("%s must have shape [batch] or [batch, 1] (one symbol id per row; "
                                 "TF reshapes it to [-1]), got %s" % (nm, tuple(a.shape)))
            a = a.reshape(-1)
            if ids and a.shape != ids[0].shape:
                raise ValueError("%s has %d ids but inputs[0] has %d" % (nm, a.shape[0], ids[0].shape[0]))
            ids.append(a)
        ft = self._float_dtype(dtype, initial_state)
        xp = get_array_module(ids[0])
        ids = xp.stack(ids)                                  # [T, B]
        emb = self._embed(ids, "inputs")                     # one gather over [T, B]
        res = static_rnn(self._cell, [emb[t] for t in range(emb.shape[0])], initial_state, ft,
                         sequence_length, return_trace=return_trace)
        if return_trace:
            return res[0], res[1], _EmbeddingTrace(self, res[2], ids, mode, emb)
        return res

    def __call__(self, inputs, state, scope=None, return_trace=False):
        """One step: ids ``[B]`` or ``[B, 1]``, ``state`` as the wrapped cell's; returns
        ``(output, new_state)`` (plus a trace whose ``backward(d_output, d_state)`` returns
        ``(None, d_state)``)."""
        if scope is not None and not isinstance(scope, str):
            raise TypeError("scope (the third argument, TF1's variable scope) must be a string or "
                            "None, got %r" % (scope,))
        res = self._static_rnn([inputs], state, None, None, return_trace, mode="step")
        if return_trace:
            return res[0][0], res[1], res[2]
        return res[0][0], res[1]

    def __repr__(self):
        return "EmbeddingWrapper(%r, embedding_classes=%d, embedding_size=%d)" % (
            self._cell, self._embedding_classes, self._embedding_size)
