"""Array backends: NumPy always, CuPy when it is installed and a CUDA device is present.

Computations take their array module from their inputs (:func:`get_array_module`), so NumPy in
gives NumPy out and CuPy in gives CuPy out.  The runtime setting (:func:`use` or the
``NPL_BACKEND`` environment variable) only decides where *new* parameters and states are created.
"""
import os

import numpy as np

__all__ = ["use", "backend_name", "get_array_module", "default_xp", "to_numpy", "to_device",
           "cupy_available", "BackendError", "resolve_backend"]


class BackendError(RuntimeError):
    """Raised when a backend is asked for that cannot be used on this machine."""


_state = {"name": None}


def _import_cupy():
    """Return the cupy module, or raise BackendError saying why it cannot be used."""
    try:
        import cupy  # noqa: F401  (optional extra: pip install npl-rnn[cuda])
    except ImportError as e:
        raise BackendError(
            "backend 'cupy' was requested but CuPy is not installed "
            "(install it with `pip install npl-rnn[cuda]` or a cupy-cudaXX wheel): %s" % e) from None
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # cupy raises its own CUDARuntimeError subclasses
        raise BackendError("backend 'cupy' was requested and CuPy is installed, but no CUDA device "
                           "could be opened: %s" % e) from None
    if n < 1:
        raise BackendError("backend 'cupy' was requested and CuPy is installed, but no CUDA device "
                           "is present")
    return cupy


def cupy_available():
    """True when CuPy imports and a CUDA device is present."""
    try:
        _import_cupy()
        return True
    except BackendError:
        return False


def use(name):
    """Choose where new parameters and states live: ``"numpy"``, ``"cupy"`` or ``"auto"``.

    ``"auto"`` picks CuPy when it is usable and NumPy otherwise.  Asking for ``"cupy"`` where it is
    not installed, or where no CUDA device is present, raises :class:`BackendError` saying which.
    Returns the name of the backend now in force.
    """
    if not isinstance(name, str):
        raise TypeError("use(name): name must be 'numpy', 'cupy' or 'auto', got %r" % (name,))
    key = name.strip().lower()
    if key == "numpy":
        _state["name"] = "numpy"
    elif key == "cupy":
        _import_cupy()
        _state["name"] = "cupy"
    elif key == "auto":
        _state["name"] = "cupy" if cupy_available() else "numpy"
    else:
        raise ValueError("use(name): name must be 'numpy', 'cupy' or 'auto', got %r" % (name,))
    return _state["name"]


def backend_name():
    """The name of the backend in force, reading ``NPL_BACKEND`` the first time."""
    if _state["name"] is None:
        value = os.environ.get("NPL_BACKEND", "numpy") or "numpy"
        try:
            use(value)
        except ValueError:
            raise ValueError("the environment variable NPL_BACKEND must be 'numpy', 'cupy' or 'auto' "
                             "(any case), got %r" % (value,)) from None
        except BackendError as e:
            raise BackendError("the environment variable NPL_BACKEND=%s asks for CuPy: %s"
                               % (value, e)) from None
    return _state["name"]


def resolve_backend(backend, what="to_device"):
    """The canonical name ("numpy" or "cupy") of a backend argument, checked before anything moves.

    ``None`` means the backend in force; names are case- and space-insensitive, as in :func:`use`
    (``"CUPY"``, ``" Numpy "``); an empty or unknown name is a ValueError, a non-string a
    TypeError; ``"cupy"`` where CuPy cannot be used raises :class:`BackendError` saying why.
    """
    if backend is None:
        return backend_name()
    if not isinstance(backend, str):
        raise TypeError("%s: backend must be 'numpy' or 'cupy' (or None for the backend in force), "
                        "got %r" % (what, backend))
    key = backend.strip().lower()
    if key not in ("numpy", "cupy"):
        raise ValueError("%s: backend must be 'numpy' or 'cupy' (or None for the backend in force), "
                         "got %r" % (what, backend))
    if key == "cupy":
        _import_cupy()
    return key


def default_xp():
    """The array module where new parameters and states are created."""
    if backend_name() == "cupy":
        return _import_cupy()
    return np


def _is_cupy(a):
    t = type(a)
    return t is not np.ndarray and t.__module__.startswith("cupy")


def get_array_module(*arrays):
    """Return ``numpy`` or ``cupy`` according to the arrays given (None entries are ignored).

    Mixing NumPy and CuPy arrays in one call is an error, never a silent copy.
    """
    ndarray = np.ndarray
    for a in arrays:                       # fast path: everything NumPy (the per-step common case)
        if a is not None and type(a) is not ndarray:
            break
    else:
        return np
    kinds = set()
    for a in arrays:
        if a is None:
            continue
        kinds.add("cupy" if _is_cupy(a) else "numpy")
    if len(kinds) > 1:
        raise TypeError("mixed numpy and cupy arrays in one call; move them to one device first "
                        "(npl.to_numpy / npl.to_device)")
    if kinds == {"cupy"}:
        import cupy
        return cupy
    return np


def to_numpy(x):
    """Return a NumPy copy of an array (or a structure of arrays: tuple, list, dict)."""
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, tuple):
        vals = [to_numpy(v) for v in x]
        return type(x)(*vals) if hasattr(x, "_fields") else tuple(vals)
    if isinstance(x, list):
        return [to_numpy(v) for v in x]
    if x is None:
        return None
    if _is_cupy(x):
        return x.get()
    return np.asarray(x)


def to_device(x, backend=None):
    """Move an array (or structure of arrays) to ``backend`` ("numpy"/"cupy", any case; default:
    the one in force).  An empty or unknown name raises ValueError, ``"cupy"`` without a usable
    CuPy :class:`BackendError`."""
    name = resolve_backend(backend)
    if name == "numpy":
        return to_numpy(x)
    return _to_cupy(x, _import_cupy())


def _to_cupy(x, cupy):
    if isinstance(x, dict):
        return {k: _to_cupy(v, cupy) for k, v in x.items()}
    if isinstance(x, tuple):
        vals = [_to_cupy(v, cupy) for v in x]
        return type(x)(*vals) if hasattr(x, "_fields") else tuple(vals)
    if isinstance(x, list):
        return [_to_cupy(v, cupy) for v in x]
    if x is None:
        return None
    return cupy.asarray(x)
