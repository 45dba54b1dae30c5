"""Fused CUDA kernels for CuPy: the second executor of the formulas in :mod:`npl.gates`.

The CUDA source is ``rnn_kernels.cu`` beside this file (shipped as package data).  It is compiled
once per process with ``cupy.RawModule`` on first use and cached; kernel names are namespaced
(``npl_lstm_forward_f32``, ...).  :mod:`npl.gates` calls :func:`get` for cupy arrays and falls back
to its own array code (which runs on cupy as well) when a kernel does not cover the case (an
activation other than tanh) or when ``npl.kernels.enabled`` is False.

The kernels take contiguous arrays in npl's feature-major layout (states [H, B], gates [G*H, B],
peephole weights [H, 1]) of one dtype; the functions below check this and raise rather than let a
kernel read memory wrongly.  They take their array module from their inputs, so they run on any
arrays a kernel object returned by :func:`get` accepts (``tests/cuda_host.py`` runs them on NumPy
arrays, with the kernels emulated on the CPU); kernel scalars are NumPy scalars of the kernel's
parameter types (``np.int32``, the array dtype), as ``cupy.RawKernel`` needs.
"""
import os

import numpy as np

from ..backend import get_array_module

__all__ = ["SOURCE_PATH", "NAMES", "OPTIONS", "source", "enabled", "get", "lstm_forward",
           "lstm_backward",
           "gru_gates_forward", "gru_state_forward", "gru_backward", "gru_reset_backward"]

SOURCE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rnn_kernels.cu")
enabled = True
# The kernels in the source, each as npl_<name>_f32 and npl_<name>_f64, and the options CuPy's
# compiler (NVRTC) is given besides the target architecture that CuPy adds.
NAMES = ("lstm_forward", "lstm_backward", "gru_gates_forward", "gru_state_forward", "gru_backward",
         "gru_reset_backward")
OPTIONS = ("--std=c++14",)
_THREADS = 256
_modules = {}


def source():
    """The CUDA source text of the kernels."""
    with open(SOURCE_PATH, "r", encoding="utf-8") as f:
        return f.read()


def _module():
    mod = _modules.get("rnn")
    if mod is None:
        import cupy
        mod = _modules["rnn"] = cupy.RawModule(code=source(), options=OPTIONS)
    return mod


def get(name, dtype):
    """The compiled kernel ``npl_<name>_f32`` / ``_f64`` for ``dtype`` (compiled once, cached)."""
    if name not in NAMES:
        raise ValueError("npl.kernels.get: no kernel %r; the kernels are %s" % (name, ", ".join(NAMES)))
    sfx = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}.get(np.dtype(dtype))
    if sfx is None:
        raise TypeError("npl.kernels.get: dtype must be float32 or float64, got %s" % np.dtype(dtype))
    key = (name, sfx)
    k = _modules.get(key)
    if k is None:
        k = _modules[key] = _module().get_function("npl_%s_%s" % (name, sfx))
    return k


def _launch(name, n, dtype, arrays, args):
    """Check ``arrays`` ((label, array, allowed shapes, dtype) tuples), then launch ``npl_<name>``
    on ``args`` with one thread per element of an [H, B] array (n = H*B)."""
    for label, a, shapes, dt in arrays:
        if a.shape not in shapes:
            raise ValueError("npl.kernels.%s: %s has shape %s, expected %s"
                             % (name, label, a.shape, " or ".join(map(str, shapes))))
        if a.dtype != dt:
            raise ValueError("npl.kernels.%s: %s has dtype %s, expected %s" % (name, label, a.dtype, dt))
        if not a.flags.c_contiguous:
            raise ValueError("npl.kernels.%s: arrays must be C-contiguous (%s has strides %s)"
                             % (name, label, a.strides))
    blocks = (n + _THREADS - 1) // _THREADS
    get(name, dtype)((max(blocks, 1),), (_THREADS,), tuple(args))


def _states(dtype, H, B, **named):
    """Check entries for [H, B] arrays of ``dtype``."""
    return [(label, a, [(H, B)], dtype) for label, a in named.items()]


def _peep_args(peep, like, H):
    """(w_i, w_f, w_o), has_peep, check entries; without peepholes ``like`` stands in (unread)."""
    if peep is None:
        return (like, like, like), 0, []
    return tuple(peep), 1, [(label, w, [(H, 1), (H,)], like.dtype)
                            for label, w in zip(("w_i", "w_f", "w_o"), peep)]


def lstm_forward(g, c_prev, c, m, peep=None, cell_clip=None, clip_mask=None):
    """CUDA twin of :func:`npl.gates.lstm_forward_pointwise` (tanh activations)."""
    H, B = c.shape                                    # feature-major: [H, B]
    dt = g.dtype
    (w_i, w_f, w_o), has_peep, checks = _peep_args(peep, c, H)
    checks += [("g", g, [(4 * H, B)], dt)] + _states(dt, H, B, c_prev=c_prev, c=c, m=m)
    if cell_clip is not None:
        if clip_mask is None:
            raise ValueError("npl.kernels.lstm_forward: cell_clip needs clip_mask (the [H, B] bool "
                             "output)")
        if not cell_clip > 0:                         # the kernel reads cell_clip <= 0 as "no clip"
            raise ValueError("npl.kernels.lstm_forward: cell_clip must be positive, got %r"
                             % (cell_clip,))
        checks.append(("clip_mask", clip_mask, [(H, B)], np.dtype(bool)))
    else:
        clip_mask = get_array_module(g).empty((1,), bool)   # not written without cell_clip
    _launch("lstm_forward", H * B, dt, checks,
            (g, c_prev, c, m, w_i, w_f, w_o, np.int32(has_peep),
             dt.type(cell_clip if cell_clip is not None else 0), clip_mask, np.int32(B), np.int32(H)))


def lstm_backward(g, c_prev, c, dm, dc, dg, peep=None, clip_mask=None):
    """CUDA twin of :func:`npl.gates.lstm_backward_pointwise` (tanh activations)."""
    H, B = c.shape                                    # feature-major: [H, B]
    dt = g.dtype
    (w_i, w_f, w_o), has_peep, checks = _peep_args(peep, c, H)
    checks += ([("g", g, [(4 * H, B)], dt), ("dg", dg, [(4 * H, B)], dt)]
               + _states(dt, H, B, c_prev=c_prev, c=c, dm=dm, dc=dc))
    has_clip = 0 if clip_mask is None else 1
    if clip_mask is None:
        clip_mask = get_array_module(g).empty((1,), bool)   # not read without has_clip
    else:
        checks.append(("clip_mask", clip_mask, [(H, B)], np.dtype(bool)))
    _launch("lstm_backward", H * B, dt, checks,
            (g, c_prev, c, dm, dc, dg, w_i, w_f, w_o, np.int32(has_peep), clip_mask,
             np.int32(has_clip), np.int32(B), np.int32(H)))


def _gru(name, g, h_prev, *named):
    """Launch a GRU kernel on (g, h_prev, arrays..., B, H); ``named``: the other arrays as (label,
    array) pairs in the kernel's order, dg [3H, B] like g, the rest [H, B]."""
    H, B = h_prev.shape                               # feature-major: [H, B]
    dt = g.dtype
    checks = [(label, a, [(3 * H, B) if label in ("g", "dg") else (H, B)], dt)
              for label, a in (("g", g), ("h_prev", h_prev)) + named]
    _launch(name, H * B, dt, checks, tuple(a for _, a, _, _ in checks) + (np.int32(B), np.int32(H)))


def gru_gates_forward(g, h_prev, rh):
    """CUDA twin of :func:`npl.gates.gru_gates_forward` (not prescaled)."""
    _gru("gru_gates_forward", g, h_prev, ("rh", rh))


def gru_state_forward(g, h_prev, h):
    """CUDA twin of :func:`npl.gates.gru_state_forward` (tanh candidate)."""
    _gru("gru_state_forward", g, h_prev, ("h", h))


def gru_backward(g, h_prev, dh, dg, dh_prev):
    """CUDA twin of :func:`npl.gates.gru_backward_pointwise` (tanh candidate)."""
    _gru("gru_backward", g, h_prev, ("dh", dh), ("dg", dg), ("dh_prev", dh_prev))


def gru_reset_backward(g, h_prev, drh, dh_prev, dg):
    """CUDA twin of :func:`npl.gates.gru_reset_backward`."""
    _gru("gru_reset_backward", g, h_prev, ("drh", drh), ("dh_prev", dh_prev), ("dg", dg))
