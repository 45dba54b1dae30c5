"""TensorFlow 1's variable initialisers, for the cells' and layers' ``initializer`` arguments.

``tf.random_uniform_initializer(-0.1, 0.1)`` ports as ``npl.random_uniform_initializer(-0.1, 0.1)``
(the names are also in ``npl.initializers``).  An initialiser is a callable
``init(shape, dtype=None, rng=None) -> numpy array``: the cell calls it once per parameter with
that parameter's shape and dtype and its own random generator (from the cell's ``seed``), unless
the initialiser was given a ``seed`` of its own.  Any other callable ``f(shape, dtype)`` that
returns an array of that shape works too (TensorFlow's own initialisers included, when
TensorFlow is installed); what it returns is checked (shape, finite real values) and cast to the
parameter's dtype.  The random streams are NumPy's, not TensorFlow's: the distributions are
TF's, the draws are not.

    >>> import numpy as np, npl
    >>> init = npl.random_uniform_initializer(-0.1, 0.1, seed=0)
    >>> w = init((3, 4), np.float32)
    >>> w.shape, w.dtype, bool((np.abs(w) <= 0.1).all())
    ((3, 4), dtype('float32'), True)
    >>> cell = npl.rnn.LSTMCell(4, initializer=npl.constant_initializer(0.5), input_size=2)
    >>> float(cell.params["kernel"][0, 0]), float(cell.params["bias"][0])   # TF: bias stays zero
    (0.5, 0.0)
"""
import inspect
import math
import numbers

import numpy as np

from . import random as _random
from ._checks import real_number

__all__ = ["Initializer", "zeros_initializer", "ones_initializer", "constant_initializer",
           "random_uniform_initializer", "random_normal_initializer",
           "truncated_normal_initializer", "glorot_uniform_initializer", "glorot_normal_initializer",
           "orthogonal_initializer", "initialize"]


def _fans(shape):
    """TF's fan-in and fan-out (``init_ops._compute_fans``): a kernel [in, out] has in and out;
    a vector [n] has n and n; a scalar 1 and 1; higher ranks multiply the leading (receptive
    field) dimensions in."""
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        fans = shape[0], shape[0]
    elif len(shape) == 2:
        fans = shape[0], shape[1]
    else:
        field = int(np.prod(shape[:-2]))
        fans = shape[-2] * field, shape[-1] * field
    return max(1, fans[0]), max(1, fans[1])          # TF's max(1, .) for empty shapes


class Initializer:
    """Base class: ``init(shape, dtype=None, rng=None)``.  ``seed`` (when given) makes the draws
    the initialiser's own, the same at every call; otherwise ``rng`` (the cell's generator) or a
    fresh one is used."""

    def __init__(self, seed=None, dtype=None):
        self.seed = _random.check_seed(seed)
        self.dtype = None if dtype is None else np.dtype(dtype)

    def _rng(self, rng):
        if self.seed is not None:
            return _random.generator(self.seed)
        return rng if rng is not None else _random.generator(None)

    _floats_only = True     # random draws need a float dtype (TF refuses others)

    def __call__(self, shape, dtype=None, partition_info=None, rng=None):
        """The value for a parameter of ``shape`` (and ``dtype``, default float32);
        ``partition_info`` is TF1's argument, accepted and unused."""
        shape = tuple(int(s) for s in shape)
        dtype = np.dtype(dtype or self.dtype or np.float32)
        if self._floats_only and dtype.kind != "f":
            raise TypeError("%s needs a float dtype, got %s" % (type(self).__name__, dtype))
        return np.asarray(self._draw(shape, self._rng(rng)), dtype=np.float64).astype(dtype)

    def _draw(self, shape, rng):
        """The values (any real dtype) of a parameter of ``shape``: what a subclass defines."""
        raise NotImplementedError("%s must define _draw(shape, rng)" % type(self).__name__)

    def __repr__(self):
        args = ", ".join("%s=%r" % kv for kv in sorted(vars(self).items()) if kv[1] is not None)
        return "%s(%s)" % (type(self).__name__, args)


class constant_initializer(Initializer):
    """``tf.constant_initializer(value=0, dtype, verify_shape=False)``, with TF1's shape rules:
    a number (or a one-element value) fills the parameter; a list or array of as many elements is
    laid out in row-major order; a shorter one is padded with its last element; a longer one is
    an error.  ``verify_shape=True``: the value's shape must be the parameter's."""

    _floats_only = False

    def __init__(self, value=0, dtype=None, verify_shape=False):
        super().__init__(None, dtype)
        self.verify_shape = bool(verify_shape)
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            self.value = real_number(value, "value")
        else:
            a = np.asarray(value)
            if a.dtype.kind not in "iuf" or a.size == 0 or not np.all(np.isfinite(a)):
                raise TypeError("constant_initializer: value must be a finite real number or a "
                                "non-empty array of them, got %r" % (value,))
            self.value = a

    def __call__(self, shape, dtype=None, partition_info=None, verify_shape=None, rng=None):
        """As :meth:`Initializer.__call__`; ``verify_shape`` (TF1's) overrides the constructor's."""
        verify = self.verify_shape if verify_shape is None else bool(verify_shape)
        if verify and np.shape(self.value) != tuple(int(n) for n in shape):
            raise ValueError("constant_initializer(verify_shape=True): value has shape %s but the "
                             "parameter has shape %s" % (np.shape(self.value), tuple(shape)))
        return super().__call__(shape, dtype, partition_info, rng)

    def _draw(self, shape, rng):
        v = self.value
        if isinstance(v, float):
            return np.full(shape, v)
        n, flat = int(np.prod(shape)), v.ravel()
        if flat.size > n:
            raise ValueError("constant_initializer: value has %d elements (shape %s), more than the "
                             "%d of the parameter's shape %s" % (flat.size, v.shape, n, shape))
        if flat.size < n:                                 # TF1: the last element fills the rest
            flat = np.concatenate([flat, np.full(n - flat.size, flat[-1], flat.dtype)])
        return flat.reshape(shape)


class zeros_initializer(constant_initializer):
    """``tf.zeros_initializer``."""

    def __init__(self, dtype=None):
        super().__init__(0.0, dtype)


class ones_initializer(constant_initializer):
    """``tf.ones_initializer``."""

    def __init__(self, dtype=None):
        super().__init__(1.0, dtype)


class random_uniform_initializer(Initializer):
    """Uniform on ``[minval, maxval)``; ``maxval=None`` is 1, as in TF1 for floats."""

    def __init__(self, minval=0.0, maxval=None, seed=None, dtype=None):
        super().__init__(seed, dtype)
        self.minval = real_number(minval, "minval")
        self.maxval = 1.0 if maxval is None else real_number(maxval, "maxval")
        if not self.minval < self.maxval:
            raise ValueError("random_uniform_initializer: minval must be below maxval, got %r and %r"
                             % (self.minval, self.maxval))

    def _draw(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, size=shape)


class random_normal_initializer(Initializer):
    """Normal with ``mean`` and ``stddev``."""

    def __init__(self, mean=0.0, stddev=1.0, seed=None, dtype=None):
        super().__init__(seed, dtype)
        self.mean = real_number(mean, "mean")
        self.stddev = real_number(stddev, "stddev", allow_zero=False)

    def _draw(self, shape, rng):
        return rng.normal(self.mean, self.stddev, size=shape)


def _truncated(rng, shape, stddev):
    """Normal(0, stddev) redrawn until within two standard deviations, as TF's truncated normal."""
    out = rng.standard_normal(size=shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(size=int(bad.sum()))
        bad = np.abs(out) > 2
    return out * stddev


class truncated_normal_initializer(random_normal_initializer):
    """Normal with ``mean`` and ``stddev``, values beyond two standard deviations redrawn."""

    def _draw(self, shape, rng):
        return self.mean + _truncated(rng, shape, self.stddev)


class glorot_uniform_initializer(Initializer):
    """Uniform on ``[-limit, limit]``, ``limit = sqrt(6 / (fan_in + fan_out))``: TF1's default for
    every kernel (the one npl's cells use when no initialiser is given)."""

    def _draw(self, shape, rng):
        fan_in, fan_out = _fans(shape)
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape)


class glorot_normal_initializer(Initializer):
    """Truncated normal with ``stddev = sqrt(2 / (fan_in + fan_out)) / 0.8796...`` (TF's correction
    for the truncation, so that the draws' variance is ``2 / (fan_in + fan_out)``)."""

    def _draw(self, shape, rng):
        fan_in, fan_out = _fans(shape)
        return _truncated(rng, shape, math.sqrt(2.0 / (fan_in + fan_out)) / .87962566103423978)


class orthogonal_initializer(Initializer):
    """A (semi-)orthogonal matrix times ``gain``: the parameter flattened to ``[prod(shape[:-1]),
    shape[-1]]`` has orthonormal rows or columns (whichever are fewer), as TF's."""

    def __init__(self, gain=1.0, seed=None, dtype=None):
        super().__init__(seed, dtype)
        self.gain = real_number(gain, "gain")

    def _draw(self, shape, rng):
        if len(shape) < 2:
            raise ValueError("orthogonal_initializer needs a parameter of rank 2 or more, got shape %s"
                             % (shape,))
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        if rows * cols == 0:
            return np.zeros(shape)
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))                   # a uniform draw over the orthogonal group
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)


def _takes_rng(fn):
    if isinstance(fn, Initializer):
        return True
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "rng" in params


def initialize(initializer, shape, dtype, rng, name):
    """``initializer(shape, dtype[, rng])`` checked: a NumPy array of exactly ``shape`` with finite
    real values, cast to ``dtype``.  ``name`` is the parameter's, for the error messages."""
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    try:
        value = initializer(shape, dtype, rng=rng) if _takes_rng(initializer) else initializer(shape, dtype)
    except (TypeError, ValueError) as e:
        kind = TypeError if isinstance(e, TypeError) else ValueError
        raise kind("initializer for %s (shape %s): %s" % (name, shape, e)) from e
    a = np.asarray(value)
    if a.shape != shape:
        raise ValueError("initializer for %s returned shape %s, expected %s"
                         % (name, tuple(a.shape), shape))
    if a.dtype.kind not in "iuf":
        raise ValueError("initializer for %s must return finite real numbers, got dtype %s"
                         % (name, a.dtype))
    with np.errstate(over="ignore"):
        out = a.astype(dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError("initializer for %s must return finite real numbers%s"
                         % (name, " within %s's range" % dtype if np.all(np.isfinite(a)) else ""))
    return out


def check(initializer, name):
    """None or a callable, else a TypeError naming the argument."""
    if initializer is not None and not callable(initializer):
        raise TypeError("%s must be a callable initializer (e.g. npl.random_uniform_initializer(-0.1, "
                        "0.1)) or None, got %r" % (name, initializer))
    return initializer
