"""TF-style array helpers with backward passes: sequence_mask, boolean_mask, reverse_sequence,
embedding_lookup (whose gradient is an :class:`IndexedSlices`, as in TensorFlow)."""
import numbers

import numpy as np

from .backend import get_array_module, _is_cupy
from ._checks import as_array, float_array, check_same_device, check_shape, check_dtype, check_on_device, check_name

__all__ = ["sequence_mask", "boolean_mask", "reverse_sequence", "embedding_lookup", "IndexedSlices",
           "BackwardTwiceError"]


class BackwardTwiceError(RuntimeError, ValueError):
    """``backward`` was called a second time on one trace (its saved arrays are consumed)."""


class _OnceTrace:
    _done = False

    def _ensure_fresh(self):
        if self._done:
            raise BackwardTwiceError("backward was already called on this %s; run the forward again "
                                     "with return_trace=True for a new trace" % type(self).__name__)

    def _consume(self):
        """Mark the trace spent; called after the cotangent is validated, so that a backward
        rejected for a bad argument leaves the trace usable."""
        self._ensure_fresh()
        self._done = True


def _int_array(a, name, xp=None):
    seq = isinstance(a, (list, tuple))
    a = as_array(a, name, xp=xp)
    if seq and a.size == 0 and a.dtype.kind == "f":   # [] is float64 to NumPy; TF takes it as
        a = a.astype(np.int64)                         # an empty integer array
    if a.dtype.kind not in "iu":
        raise TypeError("%s must be an integer array, got dtype %s" % (name, a.dtype))
    return a


def _check_index_range(indices, rows, what, rows_name):
    """ValueError unless every index is in [0, rows) (NumPy would wrap -1 to the last row)."""
    if indices.size:
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= rows:
            raise ValueError("%s must be in [0, %d) (%s), got min %d max %d" % (what, rows, rows_name, lo, hi))


def _mask_dtype(dtype):
    if dtype is None:                  # TF: dtype=None returns the bool mask uncast
        return np.dtype(np.bool_)
    try:
        d = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    except TypeError:
        d = None
    if d is None or d.kind not in "biuf":
        raise TypeError("dtype must be a bool, integer or float dtype (e.g. bool, np.int32, np.float32), "
                        "got %r" % (dtype,))
    return d


def sequence_mask(lengths, maxlen=None, dtype=bool, name=None):
    """``mask[..., j] = j < lengths[...]``, shape ``lengths.shape + (maxlen,)``, as tf.sequence_mask.
    (``name``: TF's op name, accepted and unused.)

    >>> sequence_mask([1, 3, 2], 5).astype(int)
    array([[1, 0, 0, 0, 0],
           [1, 1, 1, 0, 0],
           [1, 1, 0, 0, 0]])
    """
    check_name(name)
    dtype = _mask_dtype(dtype)
    lengths = _int_array(lengths, "lengths")
    xp = get_array_module(lengths)
    if maxlen is None:
        maxlen = int(lengths.max()) if lengths.size else 0
    if isinstance(maxlen, bool) or not isinstance(maxlen, (numbers.Integral,)) and not (
            hasattr(maxlen, "ndim") and maxlen.ndim == 0 and maxlen.dtype.kind in "iu"):
        raise TypeError("maxlen must be an integer scalar, got %r" % (maxlen,))
    maxlen = int(maxlen)
    if maxlen < 0:
        raise ValueError("maxlen must be >= 0, got %d" % maxlen)
    m = xp.arange(maxlen) < lengths[..., None]
    if dtype == np.bool_:
        return m
    return m.astype(dtype)


class BooleanMaskTrace(_OnceTrace):
    def __init__(self, shape, dtype, index, xp):
        self.shape, self.dtype, self.index, self.xp = shape, dtype, index, xp

    def backward(self, d_output):
        """Scatter ``d_output`` back into zeros of the input's shape."""
        self._ensure_fresh()
        xp = self.xp
        n = int(self.index[0].size) if self.index else 0
        d = as_array(d_output, "d_output")
        a = self._axis
        expected = tuple(self.shape[:a]) + (n,) + tuple(self.shape[a + len(self.index):])
        check_shape(d, expected, "d_output")
        check_dtype(d, self.dtype, "d_output")
        check_on_device(d, "d_output", xp, "the forward's tensor and its cotangents")
        self._consume()
        out = xp.zeros(self.shape, self.dtype)
        out[(slice(None),) * self._axis + self.index] = d
        return out


def boolean_mask(tensor, mask, name="boolean_mask", axis=None, return_trace=False):
    """Rows of ``tensor`` where ``mask`` is True (tf.boolean_mask; ``name``, TF's third argument,
    is accepted and unused: pass ``axis`` by keyword).

    ``mask`` covers dimensions ``axis .. axis+mask.ndim-1`` of ``tensor`` (axis defaults to 0) and
    those dimensions are flattened into one.  With ``return_trace=True`` also returns a trace whose
    ``backward(d_output)`` scatters the gradient back to the tensor's shape.
    """
    check_name(name, hint="; pass axis=%r by keyword" % (name,) if isinstance(name, numbers.Integral)
               else "")
    t = as_array(tensor, "tensor")
    m = as_array(mask, "mask")
    check_same_device(m, "mask", [t], "tensor", plural=False)
    xp = get_array_module(t, m)
    if m.dtype != np.bool_:
        raise TypeError("mask must be a bool array, got dtype %s" % m.dtype)
    axis = 0 if axis is None else axis
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError("axis must be an integer, got %r" % (axis,))
    if axis < 0:
        axis += t.ndim
    if m.ndim == 0:
        raise ValueError("mask cannot be a scalar")
    if axis < 0 or axis + m.ndim > t.ndim:
        raise ValueError("mask of rank %d does not fit tensor of shape %s at axis %d"
                         % (m.ndim, tuple(t.shape), axis))
    if tuple(t.shape[axis:axis + m.ndim]) != tuple(m.shape):
        raise ValueError("mask shape %s must match tensor shape %s at dimensions %d..%d (got %s)"
                         % (tuple(m.shape), tuple(t.shape), axis, axis + m.ndim - 1,
                            tuple(t.shape[axis:axis + m.ndim])))
    index = tuple(xp.nonzero(m))
    out = t[(slice(None),) * axis + index]
    if return_trace:
        tr = BooleanMaskTrace(t.shape, t.dtype, index, xp)
        tr._axis = axis
        return out, tr
    return out


def reverse_sequence(input, seq_lengths, seq_axis=None, batch_axis=None, name=None, seq_dim=None,
                     batch_dim=None):
    """Reverse the first ``seq_lengths[b]`` entries along ``seq_axis`` of each batch row (tf.reverse_sequence;
    TF1's argument order, ``name`` accepted and unused).

    Entries past a row's length stay where they are.  The function is its own backward:
    the gradient of ``reverse_sequence(x, L)`` is ``reverse_sequence(dy, L)``.
    """
    check_name(name)
    x = as_array(input, "input")
    xp = get_array_module(x)
    seq_axis = seq_axis if seq_axis is not None else seq_dim
    batch_axis = batch_axis if batch_axis is not None else (batch_dim if batch_dim is not None else 0)
    if seq_axis is None:
        raise ValueError("reverse_sequence needs seq_axis")
    for nm, a in (("seq_axis", seq_axis), ("batch_axis", batch_axis)):
        if isinstance(a, bool) or not isinstance(a, numbers.Integral) or not -x.ndim <= a < x.ndim:
            raise ValueError("%s must be an integer axis of an input of rank %d, got %r" % (nm, x.ndim, a))
    seq_axis %= x.ndim
    batch_axis %= x.ndim
    if seq_axis == batch_axis:
        raise ValueError("seq_axis and batch_axis must differ, both are %d" % seq_axis)
    L = _int_array(seq_lengths.get() if _is_cupy(seq_lengths) else seq_lengths, "seq_lengths")
    T, B = x.shape[seq_axis], x.shape[batch_axis]
    if L.shape != (B,):
        raise ValueError("seq_lengths must have shape (%d,) (the batch dimension), got %s" % (B, L.shape))
    if L.size and (L.min() < 0 or L.max() > T):
        raise ValueError("seq_lengths must be in [0, %d], got min %d max %d" % (T, L.min(), L.max()))
    L = L.astype(np.int64)            # uint64 - int would be float64 in NumPy: not an index
    t = np.arange(T)[:, None]
    idx = np.where(t < L[None, :], L[None, :] - 1 - t, t)          # [T, B] source time index
    shape = [1] * x.ndim
    shape[seq_axis], shape[batch_axis] = T, B
    if seq_axis > batch_axis:
        idx = idx.T
    idx = xp.asarray(idx.reshape(shape))
    return xp.take_along_axis(x, xp.broadcast_to(idx, x.shape) if x.ndim > 2 else idx, axis=seq_axis)


class IndexedSlices:
    """A sparse row gradient, as TensorFlow's ``tf.IndexedSlices``: ``values[k]`` belongs to row
    ``indices[k]`` of a dense array of shape ``dense_shape``; repeated indices add up.

    ``values`` has shape ``(len(indices),) + dense_shape[1:]`` (or ``indices.shape +
    dense_shape[1:]``); ``indices`` are integers (a Python list is accepted, ``[]`` included) in
    ``[0, dense_shape[0])``, on the device of ``values`` (a list is put there; an array on the
    other device is a TypeError).  Dtypes, shapes and devices are checked here; the index range
    is checked by :meth:`to_dense` and by the optimizers (a negative index would silently update
    the last row).
    """

    def __init__(self, values, indices, dense_shape):
        values = as_array(values, "IndexedSlices values")
        if isinstance(dense_shape, (str, bytes)) or not hasattr(dense_shape, "__iter__"):
            raise TypeError("IndexedSlices dense_shape must be a sequence of integers, got %r" % (dense_shape,))
        shape = tuple(dense_shape.tolist() if hasattr(dense_shape, "tolist") else dense_shape)
        if not shape or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0 for d in shape):
            raise ValueError("IndexedSlices dense_shape must be a non-empty sequence of non-negative "
                             "integers, got %r" % (dense_shape,))
        self.values, self.dense_shape = values, tuple(int(d) for d in shape)
        self.indices = _int_array(indices, "IndexedSlices indices", xp=get_array_module(values))
        self._check()

    def _check(self, what="IndexedSlices"):
        """Dtype, shape and device checks (values and indices on one device; not the index range:
        that needs the values of the indices)."""
        idx, vals = self.indices, self.values
        if not hasattr(idx, "dtype") or idx.dtype.kind not in "iu":
            raise TypeError("%s: indices must be an integer array, got %s"
                            % (what, getattr(idx, "dtype", type(idx).__name__)))
        if _is_cupy(idx) != _is_cupy(vals):
            raise TypeError("%s: indices is a %s array but values is a %s array; put both on one "
                            "device (npl.to_device / npl.to_numpy; no silent copies)"
                            % (what, "cupy" if _is_cupy(idx) else "numpy",
                               "cupy" if _is_cupy(vals) else "numpy"))
        tail = tuple(self.dense_shape[1:])
        if tuple(vals.shape) not in ((int(idx.size),) + tail, tuple(idx.shape) + tail):
            raise ValueError("%s: %d indices need values of shape %s (one row of dense_shape %s per "
                             "index), got %s" % (what, int(idx.size), (int(idx.size),) + tail,
                                                 self.dense_shape, tuple(vals.shape)))

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def shape(self):
        return self.dense_shape

    def to_dense(self):
        self._check()
        _check_index_range(self.indices, self.dense_shape[0], "IndexedSlices indices",
                           "the rows of dense_shape %s" % (self.dense_shape,))
        xp = get_array_module(self.values)
        out = xp.zeros(self.dense_shape, self.values.dtype)
        idx = self.indices.reshape(-1)
        _scatter_add(out, idx, self.values.reshape((idx.shape[0],) + self.dense_shape[1:]))
        return out

    def __repr__(self):
        return "IndexedSlices(%d rows of %s)" % (int(self.indices.size), self.dense_shape)


def _scatter_add(out, idx, vals):
    xp = get_array_module(out)
    if xp is np:
        np.add.at(out, idx, vals)
    else:  # pragma: no cover  (GPU only)
        import cupyx
        cupyx.scatter_add(out, idx, vals)


class EmbeddingTrace(_OnceTrace):
    def __init__(self, ids, shape, dtype):
        self.ids, self.shape, self.dtype = ids, shape, dtype

    def backward(self, d_output):
        """Return the gradient with respect to ``params`` as an :class:`IndexedSlices`."""
        self._ensure_fresh()
        d = float_array(d_output, "d_output")
        check_shape(d, tuple(self.ids.shape) + (self.shape[1],), "d_output")
        check_dtype(d, self.dtype, "d_output")
        check_on_device(d, "d_output", get_array_module(self.ids), "the forward's ids")
        self._consume()
        return IndexedSlices(d.reshape(-1, self.shape[1]), self.ids.reshape(-1), self.shape)


def embedding_lookup(params, ids, partition_strategy="mod", name=None, validate_indices=True,
                     max_norm=None, return_trace=False):
    """Rows of ``params`` [V, D] at ``ids`` (any shape): result shape ``ids.shape + (D,)``.

    Ids must be integers in [0, V) (always checked, as TF does on the CPU: ``validate_indices`` is
    accepted as TF1's deprecated flag).  TF1's signature: ``partition_strategy`` ("mod" or "div")
    only matters for sharded params, which npl does not take (one array, or a list of one);
    ``name`` is accepted and unused; ``max_norm`` (TF clips each looked-up row's norm) is not
    supported and must be None.  With ``return_trace=True`` also returns a trace whose
    ``backward(d_output)`` gives an :class:`IndexedSlices` (call ``.to_dense()`` for an array).
    """
    if partition_strategy not in ("mod", "div"):
        raise ValueError('partition_strategy must be "mod" or "div" (as in TF), got %r'
                         % (partition_strategy,))
    check_name(name)
    if not isinstance(validate_indices, (bool, np.bool_)):
        raise TypeError("validate_indices must be a bool, got %r" % (validate_indices,))
    if max_norm is not None:
        raise ValueError("max_norm: clipping the looked-up rows' norms is not supported; it must be "
                         "None, got %r" % (max_norm,))
    if isinstance(params, (list, tuple)):
        if len(params) != 1:
            raise ValueError("embedding_lookup: sharded params (a list of %d) are not supported; "
                             "concatenate them" % len(params))
        params = params[0]
    p = float_array(params, "params", ndim=2)
    i = _int_array(ids, "ids", xp=get_array_module(p) if isinstance(ids, (list, tuple)) else None)
    check_same_device(i, "ids", [p], "params", plural=False)
    xp = get_array_module(p, i)
    V = p.shape[0]
    if i.size:
        lo, hi = int(i.min()), int(i.max())
        if lo < 0 or hi >= V:
            raise ValueError("ids must be in [0, %d) (the rows of params), got min %d max %d" % (V, lo, hi))
    out = xp.take(p, i, axis=0)
    if return_trace:
        return out, EmbeddingTrace(i, tuple(p.shape), p.dtype)
    return out
