"""Seedable random generator used for parameter initialisation (``npl.set_random_seed``)."""
import numpy as np

__all__ = ["set_random_seed", "generator"]

_global = {"rng": np.random.default_rng()}


def set_random_seed(seed):
    """Seed npl's global generator (like ``tf.set_random_seed``): cells built afterwards without
    their own ``seed=`` draw their initial weights from it in a reproducible order."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError("seed must be an integer or None, got %r" % (seed,))
    if seed is not None and seed < 0:
        raise ValueError("seed must be a non-negative integer, got %r" % (seed,))
    _global["rng"] = np.random.default_rng(seed)


def generator(seed=None):
    """A generator for one cell: its own when ``seed`` is given, else the global one."""
    if seed is None:
        return _global["rng"]
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(check_seed(seed))


def check_seed(seed):
    """``seed`` as given, once it is None, a numpy Generator or a non-negative integer."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError("seed must be an integer, a numpy Generator or None, got %r" % (seed,))
    if seed < 0:
        raise ValueError("seed must be a non-negative integer, got %r" % (seed,))
    return seed
