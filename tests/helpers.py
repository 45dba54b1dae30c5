"""One small helper set used by every reference test: random structures, a linear loss on any
output structure, and a central-difference gradient of that loss (float64)."""
import numpy as np

import npl
from npl.cells import LSTMStateTuple


def flatten(s):
    if s is None:
        return []
    if isinstance(s, (tuple, list)):
        out = []
        for v in s:
            out.extend(flatten(v))
        return out
    return [s]


def unflatten(like, leaves):
    it = iter(leaves)

    def build(s):
        if isinstance(s, (tuple, list)):
            vals = [build(v) for v in s]
            if hasattr(s, "_fields"):
                return type(s)(*vals)
            return type(s)(vals)
        return next(it)
    return build(like)


def random_like(s, rng, scale=1.0):
    return unflatten(s, [(rng.standard_normal(a.shape) * scale).astype(a.dtype) for a in flatten(s)])


def random_state(cell, batch, rng, dtype=np.float64, scale=0.5):
    z = cell.zero_state(batch, dtype)
    return random_like(z, rng, scale)


def randomize_params(cell, rng, scale=0.5):
    """Random values for every parameter (biases and peepholes too: layout bugs hide behind zeros)."""
    cell.set_params({k: (rng.standard_normal(v.shape) * scale).astype(v.dtype)
                     for k, v in cell.params.items()})


def linear_loss(outputs, weights):
    return sum(float((np.asarray(o, np.float64) * w).sum()) for o, w in zip(flatten(outputs), flatten(weights)))


def numeric_grads(f, arrays, eps=1e-6):
    """Central differences of the scalar f() with respect to each array (perturbed in place)."""
    grads = []
    for a in arrays:
        g = np.zeros(a.shape, np.float64)
        flat, gf = a.reshape(-1), g.reshape(-1)
        assert flat.base is a or flat is a or np.shares_memory(flat, a)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            fp = f()
            flat[k] = old - eps
            fm = f()
            flat[k] = old
            gf[k] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-12)
    return float(np.abs(a - b).max(initial=0) / den)


def assert_close(actual, expected, rtol, what=""):
    e = rel_err(actual, expected)
    assert e <= rtol, "%s: relative error %.3g > %.3g" % (what, e, rtol)
