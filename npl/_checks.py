"""Argument validation shared by the public functions: clear errors naming the argument."""
import numbers

import numpy as np

from .backend import get_array_module, _is_cupy

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_array(x, name, xp=None, dtype=None):
    """Return ``x`` as an array of its own backend (lists and scalars become numpy arrays, of
    ``dtype`` when given: a Python list has no dtype to keep, as when TF feeds one; a subclass
    such as ``np.memmap`` becomes a plain ndarray view, so it takes the same paths)."""
    if x is None:
        raise TypeError("%s must be an array, got None" % name)
    if _is_cupy(x) or type(x) is np.ndarray:
        return x
    if isinstance(x, np.ndarray):
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple, numbers.Number)) or hasattr(x, "__array__"):
        plain = _python_numbers(x)
        try:
            a = np.asarray(x, dtype=dtype if plain else None)
        except Exception as e:  # ragged lists and the like
            raise TypeError("%s must be array-like: %s" % (name, e)) from None
        if a.dtype == object:
            raise TypeError("%s must be a numeric array, got an object array (ragged input?)" % name)
        if xp is not None and xp is not np:
            a = xp.asarray(a)
        return a
    raise TypeError("%s must be a numpy or cupy array, got %s" % (name, type(x).__name__))


def _python_numbers(x):
    """True for a Python number or a (nested) list or tuple of them: data with no dtype of its own
    (an array or NumPy scalar anywhere along the first path, or in the top list, has one)."""
    while isinstance(x, (list, tuple)):
        if not x or any(hasattr(e, "dtype") for e in x):
            return False
        x = x[0]
    return isinstance(x, numbers.Number) and not isinstance(x, np.generic)


def check_same_device(x, name, arrays, what, plural=True):
    """TypeError when ``x`` and ``arrays`` are not all on one device, naming both sides.

    ``what`` names the arrays: "GRUCell's parameters" (``plural``) or "params" (one array)."""
    if type(x) is np.ndarray:                     # the per-step common case: all NumPy
        for a in arrays:
            if a is not None and type(a) is not np.ndarray:
                break
        else:
            return
    arrays = [a for a in arrays if a is not None]
    if not arrays or all(_is_cupy(a) == _is_cupy(x) for a in arrays):
        return
    mine, other = ("cupy", "numpy") if _is_cupy(x) else ("numpy", "cupy")
    theirs = ("are %s arrays" % other) if plural else ("is a %s array" % other)
    raise TypeError("%s is a %s array but %s %s; move one to the other's device with "
                    "npl.to_device / npl.to_numpy (or .to_device on a cell or layer; new parameters "
                    "live on the backend in force: npl.use / NPL_BACKEND)" % (name, mine, what, theirs))


def device_name(xp_or_array):
    """"cupy" or "numpy": the device of an array, or of an array module."""
    if xp_or_array is np:
        return "numpy"
    if getattr(xp_or_array, "__name__", None) == "cupy" or _is_cupy(xp_or_array):
        return "cupy"
    return "numpy"


def check_on_device(x, name, xp, what="the forward's arrays"):
    """TypeError unless ``x`` lives on the device of the array module ``xp`` (a trace's device),
    naming ``x`` and both devices; never a silent copy."""
    mine, theirs = device_name(x), device_name(xp)
    if mine != theirs:
        raise TypeError("%s is a %s array but %s are %s arrays; move it to that device first "
                        "(npl.to_device(%s, %r); npl does not copy between devices behind your back)"
                        % (name, mine, what, theirs, name.split("[")[0], theirs))


def float_array(x, name, ndim=None, dtype=None):
    a = as_array(x, name, dtype=dtype)
    if a.dtype not in FLOAT_DTYPES:
        raise TypeError("%s must be float32 or float64, got dtype %s" % (name, a.dtype))
    if ndim is not None and a.ndim != ndim:
        raise ValueError("%s must have rank %d, got shape %s" % (name, ndim, tuple(a.shape)))
    return a


def check_name(name, arg="name", hint=""):
    """TF's ``name=`` arguments (an op's name in the graph): None or a string, and nothing else,
    so that a value meant for another parameter, given in its place, is not silently ignored."""
    if name is not None and not isinstance(name, str):
        raise TypeError("%s (TF's op name) must be a string or None, got %r%s" % (arg, name, hint))


def is_real(v):
    """A real number: a Python or NumPy int or float, not a bool, a string or a complex."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def real_number(x, name, allow_zero=None, hint=""):
    """``x`` as a float, once it is a finite real number (a Python or NumPy number or a 0-d real
    array): any sign with ``allow_zero=None``, ``>= 0`` with True, ``> 0`` with False.  TypeError
    for other types, ValueError for other values, both naming ``name`` (``hint`` is appended)."""
    if hasattr(x, "ndim") and hasattr(x, "dtype") and not isinstance(x, np.generic):
        if x.ndim != 0 or np.dtype(x.dtype).kind not in "iuf":
            raise TypeError("%s must be a number, got an array of shape %s dtype %s%s"
                            % (name, tuple(x.shape), x.dtype, hint))
        x = float(x)
    if not is_real(x):
        raise TypeError("%s must be a number, got %r (%s)%s" % (name, x, type(x).__name__, hint))
    x = float(x)
    bad = x < 0 if allow_zero else x <= 0 if allow_zero is False else False
    if not np.isfinite(x) or bad:
        kind = {None: "", True: "non-negative ", False: "positive "}[allow_zero]
        raise ValueError("%s must be a %sfinite number, got %r%s" % (name, kind, x, hint))
    return x


def check_fits(a, dtype, name):
    """Refuse a float64 array whose finite values overflow the float32 it is to be stored in."""
    if np.dtype(dtype).itemsize < a.dtype.itemsize:
        xp = get_array_module(a)
        big = float(xp.max(xp.abs(xp.where(xp.isfinite(a), a, 0)))) if a.size else 0.0
        if big > float(np.finfo(dtype).max):
            raise ValueError("%s has finite values up to %.3g, which overflow %s (its largest is %.3g)"
                             % (name, big, np.dtype(dtype), float(np.finfo(dtype).max)))


def check_dtype(a, dtype, name):
    if a.dtype != dtype:
        raise TypeError("%s has dtype %s but the computation is in %s (no silent casting; "
                        "convert with .astype first)" % (name, a.dtype, np.dtype(dtype)))


def check_shape(a, shape, name):
    if tuple(a.shape) != tuple(shape):
        raise ValueError("%s must have shape %s, got %s" % (name, tuple(shape), tuple(a.shape)))


def resolve_dtype(dtype, name="dtype"):
    if dtype is None:
        return None
    try:
        d = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
    except TypeError:
        raise TypeError("%s must be float32 or float64, got %r" % (name, dtype)) from None
    if d not in FLOAT_DTYPES:
        raise TypeError("%s must be float32 or float64, got %s" % (name, d))
    return d


def lengths_array(sequence_length, batch, max_time, xp, name="sequence_length"):
    """Validate sequence lengths: integers in [0, max_time], one per batch row. Returns numpy int64."""
    if sequence_length is None:
        return None
    a = sequence_length
    if _is_cupy(a):
        a = a.get()
    a = np.asarray(a)
    if a.dtype == object or a.dtype.kind not in "iub":
        if a.dtype.kind == "f" and a.size and np.all(np.floor(a) == a):
            raise TypeError("%s must be an integer array, got dtype %s (cast with .astype(int))"
                            % (name, a.dtype))
        raise TypeError("%s must be an integer array, got dtype %s" % (name, a.dtype))
    if a.dtype.kind == "b":
        raise TypeError("%s must be an integer array, got dtype bool" % name)
    if a.ndim != 1 or a.shape[0] != batch:
        raise ValueError("%s must have shape [batch_size] = (%d,), got %s"
                         % (name, batch, tuple(a.shape)))
    if a.size and a.min() < 0:
        raise ValueError("%s must be >= 0, got minimum %d" % (name, int(a.min())))
    if a.size and a.max() > max_time:
        raise ValueError("%s must be <= max_time = %d, got maximum %d"
                         % (name, max_time, int(a.max())))
    return a.astype(np.int64)


def same_xp(*arrays):
    return get_array_module(*arrays)
