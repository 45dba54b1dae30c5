"""Fused CUDA kernels for CuPy: the second executor of the formulas in :mod:`npl.gates`.

The CUDA source is ``rnn_kernels.cu`` beside this file (shipped as package data).  It is compiled
once per process with ``cupy.RawModule`` on first use and cached; kernel names are namespaced
(``npl_lstm_forward_f32``, ...).  :mod:`npl.gates` calls :func:`get` for cupy arrays and falls back
to its own array code (which runs on cupy as well) when a kernel does not cover the case (an
activation other than tanh) or when ``npl.kernels.enabled`` is False.

The kernels take contiguous arrays; the functions below check this and raise rather than read
strided memory wrongly.
"""
import os

import numpy as np

__all__ = ["SOURCE_PATH", "source", "enabled", "get", "lstm_forward", "lstm_backward",
           "gru_gates_forward", "gru_state_forward", "gru_backward", "gru_reset_backward"]

SOURCE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rnn_kernels.cu")
enabled = True
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
        mod = _modules["rnn"] = cupy.RawModule(code=source(), options=("--std=c++14",))
    return mod


def get(name, dtype):
    """The compiled kernel ``npl_<name>_f32`` / ``_f64`` for ``dtype`` (compiled once, cached)."""
    sfx = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}[np.dtype(dtype)]
    key = (name, sfx)
    k = _modules.get(key)
    if k is None:
        k = _modules[key] = _module().get_function("npl_%s_%s" % (name, sfx))
    return k


def _launch(name, arrays, scalars, n, dtype):
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("npl.kernels.%s: arrays must be C-contiguous (got strides %s)"
                             % (name, a.strides))
    blocks = (n + _THREADS - 1) // _THREADS
    get(name, dtype)((max(blocks, 1),), (_THREADS,), tuple(arrays) + tuple(scalars))


def _peep_args(peep, like):
    if peep is None:
        return (like, like, like), 0
    return tuple(peep), 1


def lstm_forward(g, c_prev, c, m, peep=None, cell_clip=None, clip_mask=None):
    """CUDA twin of :func:`npl.gates.lstm_forward_pointwise` (tanh activations)."""
    B, H = c.shape
    dt = g.dtype.type
    (w_i, w_f, w_o), has_peep = _peep_args(peep, c)
    if clip_mask is None:
        import cupy
        clip_mask = cupy.empty((1,), bool)
    _launch("lstm_forward", (g, c_prev, c, m, w_i, w_f, w_o),
            (np.int32(has_peep), dt(cell_clip if cell_clip is not None else 0), clip_mask,
             np.int32(B), np.int32(H)), B * H, g.dtype)


def lstm_backward(g, c_prev, c, dm, dc, dg, peep=None, clip_mask=None):
    """CUDA twin of :func:`npl.gates.lstm_backward_pointwise` (tanh activations)."""
    B, H = c.shape
    (w_i, w_f, w_o), has_peep = _peep_args(peep, c)
    has_clip = 0 if clip_mask is None else 1
    if clip_mask is None:
        import cupy
        clip_mask = cupy.empty((1,), bool)
    _launch("lstm_backward", (g, c_prev, c, dm, dc, dg, w_i, w_f, w_o), (np.int32(has_peep), clip_mask,
            np.int32(has_clip), np.int32(B), np.int32(H)), B * H, g.dtype)


def gru_gates_forward(g, h_prev, rh):
    B, H = h_prev.shape
    _launch("gru_gates_forward", (g, h_prev, rh), (np.int32(B), np.int32(H)), B * H, g.dtype)


def gru_state_forward(g, h_prev, h):
    B, H = h_prev.shape
    _launch("gru_state_forward", (g, h_prev, h), (np.int32(B), np.int32(H)), B * H, g.dtype)


def gru_backward(g, h_prev, dh, dg, dh_prev):
    B, H = h_prev.shape
    _launch("gru_backward", (g, h_prev, dh, dg, dh_prev), (np.int32(B), np.int32(H)), B * H, g.dtype)


def gru_reset_backward(g, h_prev, drh, dh_prev, dg):
    B, H = h_prev.shape
    _launch("gru_reset_backward", (g, h_prev, drh, dh_prev, dg), (np.int32(B), np.int32(H)), B * H,
            g.dtype)
