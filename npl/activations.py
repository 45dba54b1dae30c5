"""Activations with their derivatives written in terms of the activation's *output*.

The backward passes keep post-activation values only (the trace stores gates after their
nonlinearity), so every activation here gives ``grad_from_output(y) = f'(f^{-1}(y))``.
All functions work on numpy and cupy arrays alike and keep the input dtype.
"""
import numpy as np

from .backend import get_array_module

__all__ = ["Activation", "tanh", "sigmoid", "relu", "identity", "softsign", "get", "sigmoid_"]


class Activation:
    """A named elementwise function with an ``out=`` form and the derivative from its output."""

    def __init__(self, name, fn, grad_from_output, deriv_into):
        self.name = name
        self._fn = fn
        self._grad = grad_from_output
        self._deriv_into = deriv_into

    def __call__(self, x, out=None):
        return self._fn(x, out)

    def grad_from_output(self, y):
        """d f / d x evaluated where f(x) == y."""
        return self._grad(y)

    def deriv_into(self, y, out):
        """out = f'(x) where f(x) == y (out must not be y)."""
        self._deriv_into(y, out)

    def deriv_from_output(self, y, out, tmp):
        """out = f'(x) where f(x) == y, computed in the workspace ``tmp`` (out may be y)."""
        self._deriv_into(y, tmp)
        out[...] = tmp

    def mul_grad_from_output(self, d, y, tmp):
        """d *= f'(x) where f(x) == y, without allocating (``tmp`` is workspace; d must not be y)."""
        self._deriv_into(y, tmp)
        d *= tmp

    def __repr__(self):
        return "npl.activations.%s" % self.name


def _xp(a):
    return np if type(a) is np.ndarray else get_array_module(a)


def sigmoid_(x, out=None):
    """Logistic sigmoid as 0.5*tanh(x/2)+0.5: one tanh, no overflow, any dtype."""
    xp = _xp(x)
    if out is None:
        out = xp.multiply(x, 0.5)
    else:
        xp.multiply(x, 0.5, out=out)
    xp.tanh(out, out=out)
    out *= 0.5
    out += 0.5
    return out


def _tanh(x, out=None):
    return _xp(x).tanh(x, out=out) if out is not None else _xp(x).tanh(x)


def _relu(x, out=None):
    return _xp(x).maximum(x, 0, out=out) if out is not None else _xp(x).maximum(x, 0)


def _identity(x, out=None):
    if out is None:
        return x.copy()
    if out is not x:
        out[...] = x
    return out


def _softsign(x, out=None):
    xp = _xp(x)
    d = xp.abs(x)
    d += 1
    return xp.divide(x, d, out=out) if out is not None else x / d


def _d_tanh(y, tmp):
    _xp(y).multiply(y, y, out=tmp)
    _xp(y).subtract(1, tmp, out=tmp)


def _d_sigmoid(y, tmp):
    _xp(y).subtract(1, y, out=tmp)
    tmp *= y


def _d_relu(y, tmp):
    tmp[...] = y > 0


def _d_identity(y, tmp):
    tmp[...] = 1


def _d_softsign(y, tmp):
    _xp(y).abs(y, out=tmp)
    _xp(y).subtract(1, tmp, out=tmp)
    tmp *= tmp


tanh = Activation("tanh", _tanh, lambda y: 1 - y * y, _d_tanh)
sigmoid = Activation("sigmoid", sigmoid_, lambda y: y * (1 - y), _d_sigmoid)
relu = Activation("relu", _relu, lambda y: (y > 0).astype(y.dtype), _d_relu)
identity = Activation("identity", _identity, lambda y: _xp(y).ones_like(y), _d_identity)
softsign = Activation("softsign", _softsign, lambda y: (1 - _xp(y).abs(y)) ** 2, _d_softsign)

_BY_NAME = {"tanh": tanh, "sigmoid": sigmoid, "relu": relu, "identity": identity,
            "linear": identity, "softsign": softsign}


def get(act, default=tanh):
    """Resolve an activation given as None (the default), a name, or an Activation.

    TensorFlow functions (``tf.tanh``, ``tf.nn.relu``, ...) and numpy's ``np.tanh`` are recognised by
    their names, so a ported tutorial that passes ``activation=tf.nn.relu`` keeps working when the
    import is changed to npl.
    """
    if act is None:
        return default
    if isinstance(act, Activation):
        return act
    if isinstance(act, str):
        key = act.lower()
    else:
        key = getattr(act, "__name__", None)
        key = key.lower() if isinstance(key, str) else None
    if key in _BY_NAME:
        return _BY_NAME[key]
    raise TypeError("activation must be None, one of %s, or an npl.activations.Activation with a "
                    "derivative; got %r" % (sorted(_BY_NAME), act))

