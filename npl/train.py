"""Optimizers, gradient clipping and a training loop, with TensorFlow 1's update rules.

Optimizers (``tf.compat.v1.train.*``): :class:`GradientDescentOptimizer`,
:class:`MomentumOptimizer`, :class:`RMSPropOptimizer`, :class:`AdamOptimizer`.  Each updates the
live parameter arrays IN PLACE::

    opt = npl.train.AdamOptimizer(1e-3)
    opt.apply_gradients([(grads[k], params[k], k) for k in params])   # or opt.update(params, grads)

``grads_and_vars`` holds ``(grad, var)`` or ``(grad, var, name)``; the name keys the optimizer's
slots (checkpoints use it: ``<name>/Adam``, ``<name>/Adam_1``, ``beta1_power``, ... exactly as
TensorFlow names them).  A gradient may be an :class:`npl.IndexedSlices` (an embedding's sparse
gradient): duplicate indices are summed first and the sparse update of TensorFlow 1 is applied
(Momentum and RMSProp touch only the listed rows; Adam decays ``m`` and ``v`` of every row and
updates every row, as TF1's ``_apply_sparse``).  ``None`` gradients are skipped.

Clipping: :func:`global_norm`, :func:`clip_by_global_norm` (``tf.clip_by_global_norm``).

Training loop: :func:`fit` (batches, epochs, seeded shuffling, stateful truncated BPTT, evaluation,
progress bar, history, NaN/inf detection) and :func:`plot_history`.
"""
import math
import numbers
import sys
import time

import numpy as np

from .array_ops import IndexedSlices, _scatter_add
from .backend import _is_cupy, default_xp, get_array_module
from ._checks import check_same_device

__all__ = ["Optimizer", "GradientDescentOptimizer", "MomentumOptimizer", "RMSPropOptimizer",
           "AdamOptimizer", "global_norm", "clip_by_global_norm", "fit", "History",
           "NonFiniteError", "evaluate", "plot_history", "new_figure", "make_streams"]


# ============================================================================ optimizers
def _dedup(grad):
    """Sum the rows of an IndexedSlices that share an index: ``(unique_indices, summed_values)``."""
    xp = get_array_module(grad.values)
    idx = xp.asarray(grad.indices).reshape(-1)
    vals = grad.values.reshape((idx.shape[0],) + tuple(grad.dense_shape[1:]))
    uniq, inv = xp.unique(idx, return_inverse=True)
    summed = xp.zeros((uniq.shape[0],) + tuple(vals.shape[1:]), vals.dtype)
    _scatter_add(summed, inv.reshape(-1), vals)
    return uniq, summed


class Optimizer:
    """Base class: slot bookkeeping, ``apply_gradients``, state for checkpoints.

    Subclasses define ``_slot_specs`` (ordered ``(slot_name, initial_value)``, TF's creation order,
    which fixes the checkpoint suffixes ``""``, ``"_1"``, ...) and ``_update(g, var, slots)``: the
    dense rule, applied in place to whole arrays (or, for sparse gradients, to the gathered rows).
    """

    _slot_specs = ()

    def __init__(self, learning_rate, use_locking=False, name="Optimizer"):
        if not callable(learning_rate):
            _positive(learning_rate, "learning_rate", allow_zero=True)
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string, got %r" % (name,))
        self.learning_rate = learning_rate
        self._name = name
        self._slots = {}        # var name -> {slot name: array}
        self._vars = {}         # var name -> the live array the slots belong to
        self._auto = {}         # id(var) -> auto name for unnamed variables
        self.iterations = 0

    @property
    def name(self):
        return self._name

    def get_slot_names(self):
        return [s for s, _ in self._slot_specs]

    def get_slot(self, var_name, slot_name):
        """The slot array ``slot_name`` (e.g. "m") of the variable called ``var_name``."""
        try:
            return self._slots[var_name][slot_name]
        except KeyError:
            raise KeyError("no slot %r for variable %r (variables: %s; slots: %s)"
                           % (slot_name, var_name, sorted(self._slots), self.get_slot_names())) from None

    def _lr(self, dtype):
        lr = self.learning_rate(self.iterations) if callable(self.learning_rate) else self.learning_rate
        return np.asarray(lr, dtype)[()]

    # -- variables and slots
    def _name_of(self, var, name):
        if name is not None:
            if not isinstance(name, str) or not name:
                raise TypeError("variable names must be non-empty strings, got %r" % (name,))
            return name
        key = id(var)
        if key not in self._auto:
            n = len(self._auto)
            self._auto[key] = "Variable" if n == 0 else "Variable_%d" % n
        return self._auto[key]

    def _slots_for(self, name, var):
        known = self._vars.get(name)
        if known is not None and known is not var:
            if tuple(known.shape) != tuple(var.shape) or known.dtype != var.dtype:
                raise ValueError("variable %r was seen with shape %s dtype %s, now %s %s"
                                 % (name, tuple(known.shape), known.dtype, tuple(var.shape), var.dtype))
        self._vars[name] = var
        if name not in self._slots:
            xp = get_array_module(var)
            self._slots[name] = {s: xp.full(var.shape, init, var.dtype) for s, init in self._slot_specs}
        return self._slots[name]

    def _normalize(self, grads_and_vars):
        if isinstance(grads_and_vars, dict):
            raise TypeError("grads_and_vars must be a list of (grad, var) or (grad, var, name); for "
                            "dicts use optimizer.update(params, grads)")
        items = []
        for k, gv in enumerate(grads_and_vars):
            if not isinstance(gv, (tuple, list)) or len(gv) not in (2, 3):
                raise TypeError("grads_and_vars[%d] must be (grad, var) or (grad, var, name), got %r"
                                % (k, type(gv).__name__))
            g, v = gv[0], gv[1]
            name = self._name_of(v, gv[2] if len(gv) == 3 else None)
            if not hasattr(v, "dtype") or not hasattr(v, "shape") or v.dtype not in (np.float32, np.float64):
                raise TypeError("the variable %r must be a float32/float64 array (updated in place), "
                                "got %s" % (name, type(v).__name__))
            if g is not None:
                if isinstance(g, IndexedSlices):
                    if tuple(g.dense_shape) != tuple(v.shape):
                        raise ValueError("gradient of %r: IndexedSlices dense_shape %s != variable shape %s"
                                         % (name, tuple(g.dense_shape), tuple(v.shape)))
                    gd = g.values
                else:
                    gd = g
                    if tuple(g.shape) != tuple(v.shape):
                        raise ValueError("gradient of %r must have the variable's shape %s, got %s"
                                         % (name, tuple(v.shape), tuple(g.shape)))
                if gd.dtype != v.dtype:
                    raise TypeError("gradient of %r has dtype %s but the variable has %s"
                                    % (name, gd.dtype, v.dtype))
                get_array_module(gd, v)
            items.append((name, g, v))
        names = [n for n, _, _ in items]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError("variable names must be unique in one apply_gradients call; repeated: %s" % dup)
        if items and all(g is None for _, g, _ in items):
            raise ValueError("No gradients provided for any variable: %s" % names)
        return items

    # -- applying
    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        """Apply one update to every variable with a gradient (in place); returns None.

        global_step: None, or a 0-d integer numpy array incremented in place (TF's global_step).
        """
        items = self._normalize(list(grads_and_vars))
        if global_step is not None and not (isinstance(global_step, np.ndarray) and global_step.ndim == 0
                                            and global_step.dtype.kind in "iu"):
            raise TypeError("global_step must be None or a 0-d integer numpy array, got %r" % (global_step,))
        self._prepare([v for _, g, v in items if g is not None])
        for nm, g, v in items:
            if g is None:
                continue
            slots = self._slots_for(nm, v)
            if isinstance(g, IndexedSlices):
                self._apply_sparse(g, v, slots)
            else:
                self._update(g, v, slots)
        self._finish()
        self.iterations += 1
        if global_step is not None:
            global_step[...] += 1

    def update(self, params, grads, global_step=None):
        """``apply_gradients`` from two dicts keyed by variable name (e.g. ``model.params`` and
        ``model.grads``); names in ``grads`` must be in ``params``; None gradients are skipped."""
        if not isinstance(params, dict) or not isinstance(grads, dict):
            raise TypeError("update(params, grads) expects two dicts name -> array")
        unknown = sorted(set(grads) - set(params))
        if unknown:
            raise ValueError("grads has names that are not in params: %s" % unknown)
        self.apply_gradients([(grads[k], params[k], k) for k in params if k in grads], global_step)

    def minimize(self, loss_and_grads, params, global_step=None):
        """Call ``loss_and_grads() -> (loss, grads_dict)``, apply the gradients to ``params`` (a dict
        name -> array) and return the loss."""
        loss, grads = loss_and_grads()
        self.update(params, grads, global_step)
        return loss

    def _prepare(self, var_list):
        pass

    def _finish(self):
        pass

    def _apply_sparse(self, grad, var, slots):
        """TF1 sparse semantics for rules that touch only the listed rows: sum duplicate rows, gather
        the variable's and slots' rows, apply the dense rule to them, scatter them back."""
        idx, vals = _dedup(grad)
        rows = {k: s[idx] for k, s in slots.items()}
        vrows = var[idx]
        self._update(vals, vrows, rows)
        var[idx] = vrows
        for k, s in slots.items():
            s[idx] = rows[k]

    # -- checkpoint state
    def _slot_key(self, var_name, k):
        return "%s/%s%s" % (var_name, self._name, "" if k == 0 else "_%d" % k)

    def _non_slot_init(self, dtype):
        """Non-slot variables at their initial values: dict TF name -> 0-d array (Adam's powers)."""
        return {}

    def _non_slot(self):
        """Current non-slot state (empty before the first step)."""
        return {}

    def _set_non_slot(self, values):
        pass

    def state_spec(self, params):
        """``{checkpoint name: (shape, dtype)}`` of the state this optimizer keeps for ``params``
        (a dict name -> array), whether or not it has taken a step yet."""
        spec = {}
        for name, v in params.items():
            for k, _ in enumerate(self._slot_specs):
                spec[self._slot_key(name, k)] = (tuple(v.shape), np.dtype(v.dtype))
        if params:
            first = np.dtype(next(iter(params.values())).dtype)
            spec.update({k: ((), a.dtype) for k, a in self._non_slot_init(first).items()})
        return spec

    def state_dict(self, params=None):
        """The optimizer's state under TensorFlow's names, as numpy arrays: ``<var>/<Name>``,
        ``<var>/<Name>_1``, ... per slot, plus non-slot variables (Adam: ``beta1_power``,
        ``beta2_power``).  With ``params`` (dict name -> array), state not created yet is reported
        at its initial value, so the keys always match :meth:`state_spec`."""
        from .backend import to_numpy
        out = {}
        for name in (list(params) if params is not None else list(self._slots)):
            slots = self._slots.get(name)
            for k, (s, init) in enumerate(self._slot_specs):
                if slots is not None:
                    out[self._slot_key(name, k)] = to_numpy(slots[s])
                else:
                    v = params[name]
                    out[self._slot_key(name, k)] = np.full(v.shape, init, np.dtype(v.dtype))
        ns = self._non_slot()
        if not ns and params:
            ns = self._non_slot_init(np.dtype(next(iter(params.values())).dtype))
        out.update(ns)
        return out

    def load_state_dict(self, state, params):
        """Set the state for ``params`` (dict name -> live array) from ``state`` (keyed as
        :meth:`state_dict`); shapes must match (ValueError listing what is missing or wrong)."""
        spec = self.state_spec(params)
        missing = sorted(set(spec) - set(state))
        if missing:
            raise ValueError("optimizer state is missing %s" % missing)
        for k, (shape, dt) in spec.items():
            if tuple(np.shape(state[k])) != shape:
                raise ValueError("optimizer state %r must have shape %s, got %s"
                                 % (k, shape, tuple(np.shape(state[k]))))
        for name, v in params.items():
            xp = get_array_module(v)
            self._vars[name] = v
            self._slots[name] = {s: xp.asarray(np.asarray(state[self._slot_key(name, k)], v.dtype)).copy()
                                 for k, (s, _) in enumerate(self._slot_specs)}
        first = np.dtype(next(iter(params.values())).dtype) if params else np.dtype(np.float32)
        self._set_non_slot({k: state[k] for k in self._non_slot_init(first)})


def _positive(x, name, allow_zero=False):
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or \
            (x < 0 if allow_zero else x <= 0):
        raise ValueError("%s must be a %s finite number, got %r"
                         % (name, "non-negative" if allow_zero else "positive", x))


def _positive_int(x, name):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise ValueError("%s must be a positive integer, got %r" % (name, x))


def _unit(x, name):
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not 0 <= x < 1:
        raise ValueError("%s must be a number in [0, 1), got %r" % (name, x))


class GradientDescentOptimizer(Optimizer):
    """``var -= learning_rate * grad`` (sparse: on the listed rows, duplicates summed)."""

    def __init__(self, learning_rate, use_locking=False, name="GradientDescent"):
        super().__init__(learning_rate, use_locking, name)

    def _update(self, g, var, slots):
        var -= self._lr(var.dtype) * g


class MomentumOptimizer(Optimizer):
    """TF1 ``ApplyMomentum``; slot ``momentum`` (checkpoint ``<var>/Momentum``)::

        accum = accum * momentum + grad
        var  -= lr * accum                                  (use_nesterov=False)
        var  -= lr * grad + lr * momentum * accum           (use_nesterov=True)
    """

    _slot_specs = (("momentum", 0.0),)

    def __init__(self, learning_rate, momentum, use_locking=False, name="Momentum", use_nesterov=False):
        super().__init__(learning_rate, use_locking, name)
        _positive(momentum, "momentum", allow_zero=True)
        self.momentum = float(momentum)
        self.use_nesterov = bool(use_nesterov)

    def _update(self, g, var, slots):
        dt = var.dtype.type
        lr, mu = self._lr(var.dtype), dt(self.momentum)
        a = slots["momentum"]
        a *= mu
        a += g
        if self.use_nesterov:
            var -= g * lr + a * mu * lr
        else:
            var -= a * lr


class RMSPropOptimizer(Optimizer):
    """TF1 ``ApplyRMSProp`` / ``ApplyCenteredRMSProp``; slots ``rms`` (starts at ONES, as in TF1),
    ``mg`` (centered only), ``momentum``; checkpoint names ``<var>/RMSProp``, ``_1``, ``_2`` in that
    order::

        ms  += (grad^2 - ms) * (1 - decay)
        mg  += (grad - mg) * (1 - decay)                          (centered)
        mom  = mom * momentum + lr * grad / sqrt(ms [- mg^2] + epsilon)
        var -= mom
    """

    def __init__(self, learning_rate, decay=0.9, momentum=0.0, epsilon=1e-10, use_locking=False,
                 centered=False, name="RMSProp"):
        super().__init__(learning_rate, use_locking, name)
        _unit(decay, "decay")
        _positive(momentum, "momentum", allow_zero=True)
        _positive(epsilon, "epsilon", allow_zero=True)
        self.decay, self.momentum, self.epsilon = float(decay), float(momentum), float(epsilon)
        self.centered = bool(centered)
        self._slot_specs = (("rms", 1.0),) + ((("mg", 0.0),) if self.centered else ()) + (("momentum", 0.0),)

    def _update(self, g, var, slots):
        xp = get_array_module(var)
        dt = var.dtype.type
        lr, one_minus = self._lr(var.dtype), dt(1) - dt(self.decay)
        ms, mom = slots["rms"], slots["momentum"]
        ms += (g * g - ms) * one_minus
        if self.centered:
            mg = slots["mg"]
            mg += (g - mg) * one_minus
            denom = ms - mg * mg + dt(self.epsilon)
        else:
            denom = ms + dt(self.epsilon)
        mom *= dt(self.momentum)
        mom += g * lr / xp.sqrt(denom)
        var -= mom


class AdamOptimizer(Optimizer):
    """TF1 ``ApplyAdam``; slots ``m`` (``<var>/Adam``), ``v`` (``<var>/Adam_1``); non-slot
    ``beta1_power``, ``beta2_power`` (start at beta1, beta2; multiplied by them after each step)::

        lr_t = lr * sqrt(1 - beta2_power) / (1 - beta1_power)
        m   += (grad - m) * (1 - beta1)
        v   += (grad^2 - v) * (1 - beta2)
        var -= lr_t * m / (sqrt(v) + epsilon)

    Sparse gradients (IndexedSlices) follow TF1's ``_apply_sparse``: duplicates summed to g_s, then
    ``m = m * beta1; m[idx] += g_s * (1 - beta1)``, likewise ``v`` with ``g_s^2``, and the update
    of every row of ``var`` from the new m, v.
    """

    _slot_specs = (("m", 0.0), ("v", 0.0))

    def __init__(self, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-08, use_locking=False,
                 name="Adam"):
        super().__init__(learning_rate, use_locking, name)
        _unit(beta1, "beta1")
        _unit(beta2, "beta2")
        _positive(epsilon, "epsilon", allow_zero=True)
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)
        self._beta1_power = self._beta2_power = None

    def _non_slot_init(self, dtype):
        return {"beta1_power": np.asarray(self.beta1, dtype), "beta2_power": np.asarray(self.beta2, dtype)}

    def _non_slot(self):
        if self._beta1_power is None:
            return {}
        return {"beta1_power": np.asarray(self._beta1_power), "beta2_power": np.asarray(self._beta2_power)}

    def _set_non_slot(self, values):
        self._beta1_power = np.asarray(values["beta1_power"])[()]
        self._beta2_power = np.asarray(values["beta2_power"])[()]

    def _prepare(self, var_list):
        if self._beta1_power is None:          # TF: created with the first variable's dtype
            dt = np.dtype(var_list[0].dtype) if var_list else np.dtype(np.float32)
            self._beta1_power, self._beta2_power = dt.type(self.beta1), dt.type(self.beta2)

    def _finish(self):
        b1p, b2p = self._beta1_power, self._beta2_power
        self._beta1_power = b1p * b1p.dtype.type(self.beta1)
        self._beta2_power = b2p * b2p.dtype.type(self.beta2)

    def _step_size(self, dtype):
        dt = dtype.type
        b1p, b2p = dt(self._beta1_power), dt(self._beta2_power)
        return self._lr(dtype) * np.sqrt(dt(1) - b2p) / (dt(1) - b1p)

    def _update(self, g, var, slots):
        xp = get_array_module(var)
        dt = var.dtype.type
        m, v = slots["m"], slots["v"]
        m += (g - m) * (dt(1) - dt(self.beta1))
        v += (g * g - v) * (dt(1) - dt(self.beta2))
        var -= (m * self._step_size(var.dtype)) / (xp.sqrt(v) + dt(self.epsilon))

    def _apply_sparse(self, grad, var, slots):
        xp = get_array_module(var)
        dt = var.dtype.type
        idx, vals = _dedup(grad)
        m, v = slots["m"], slots["v"]
        m *= dt(self.beta1)
        m[idx] += vals * (dt(1) - dt(self.beta1))
        v *= dt(self.beta2)
        v[idx] += (vals * vals) * (dt(1) - dt(self.beta2))
        var -= self._step_size(var.dtype) * m / (xp.sqrt(v) + dt(self.epsilon))


# ============================================================================ clipping
def _values(t):
    return t.values if isinstance(t, IndexedSlices) else t


def global_norm(t_list):
    """``sqrt(sum_i ||t_i||^2)`` over the arrays of ``t_list`` (tf.global_norm).

    None entries are ignored; an :class:`npl.IndexedSlices` counts its ``values`` (duplicate indices
    NOT merged, as in TensorFlow).  Returns a Python float.
    """
    if not isinstance(t_list, (list, tuple)):
        raise TypeError("t_list must be a list or tuple of arrays, got %s" % type(t_list).__name__)
    total = 0.0
    for k, t in enumerate(t_list):
        if t is None:
            continue
        a = _values(t)
        if not hasattr(a, "dtype") or a.dtype.kind != "f":
            raise TypeError("t_list[%d] must be a float array or IndexedSlices, got %s"
                            % (k, type(t).__name__))
        total += float((a * a).sum())
    return math.sqrt(total)


def clip_by_global_norm(t_list, clip_norm, use_norm=None):
    """``tf.clip_by_global_norm``: returns ``(clipped_list, global_norm)``.

        scale = clip_norm * min(1 / global_norm, 1 / clip_norm);   t_i <- t_i * scale

    so nothing changes (scale 1) when ``global_norm <= clip_norm``.  ``use_norm`` replaces the
    computed norm.  None entries stay None; IndexedSlices stay IndexedSlices (values scaled).  A
    non-finite norm makes every clipped value NaN, as in TensorFlow.  New arrays are returned.
    """
    if not isinstance(t_list, (list, tuple)):
        raise TypeError("t_list must be a list or tuple of arrays, got %s" % type(t_list).__name__)
    if isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real) or not clip_norm > 0:
        raise ValueError("clip_norm must be a positive number, got %r" % (clip_norm,))
    norm = global_norm(t_list) if use_norm is None else float(use_norm)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.float64(norm)
        scale = np.float64(clip_norm) * np.minimum(np.float64(1.0) / n, np.float64(1.0) / clip_norm)
        scale = scale + (n - n)          # NaN when the norm is inf or NaN (TF's trick)
    out = []
    for t in t_list:
        if t is None:
            out.append(None)
        elif isinstance(t, IndexedSlices):
            out.append(IndexedSlices(t.values * t.values.dtype.type(scale), t.indices, t.dense_shape))
        else:
            out.append(t * t.dtype.type(scale))
    return out, norm


# ============================================================================ training loop
class NonFiniteError(FloatingPointError):
    """The loss (or the gradient norm) became NaN or infinite; the message names the step and the
    first non-finite parameter."""


class History:
    """What :func:`fit` recorded: ``loss`` (one per step), ``step`` (global step numbers),
    ``epoch_loss`` (mean per epoch), ``grad_norm`` (per step, when clipping), ``eval``
    (name -> list of ``(step, value)``), ``seconds`` (wall time)."""

    def __init__(self):
        self.loss, self.step, self.epoch_loss, self.grad_norm = [], [], [], []
        self.eval = {}
        self.seconds = 0.0

    def as_dict(self):
        return {"loss": list(self.loss), "step": list(self.step), "epoch_loss": list(self.epoch_loss),
                "grad_norm": list(self.grad_norm), "eval": {k: list(v) for k, v in self.eval.items()},
                "seconds": self.seconds}

    def __repr__(self):
        return "History(%d steps, %d epochs%s)" % (len(self.loss), len(self.epoch_loss),
                                                   "".join(", %s" % k for k in self.eval))


def make_streams(data, batch_size):
    """Cut a 1-D token sequence into ``batch_size`` contiguous streams for stateful training
    (TF's PTB reader): returns ``(x, y)`` of shape [batch_size, L] with ``y`` = ``x`` shifted by one,
    ``L = len(data) // batch_size - 1``."""
    d = np.asarray(data)
    if d.ndim != 1:
        raise ValueError("data must be a 1-D sequence, got shape %s" % (d.shape,))
    _positive_int(batch_size, "batch_size")
    n = d.shape[0] // batch_size
    if n < 2:
        raise ValueError("data of length %d is too short for batch_size %d (need at least %d)"
                         % (d.shape[0], batch_size, 2 * batch_size))
    streams = d[:n * batch_size].reshape(batch_size, n)
    return streams[:, :-1].copy(), streams[:, 1:].copy()


def _all_finite(a):
    xp = get_array_module(a)
    return not a.size or bool(xp.isfinite(a).all())


def _first_nonfinite(arrays):
    for name, a in arrays.items():
        a = _values(a)
        if a is None:
            continue
        if not _all_finite(a):
            return name
    return None


def _nonfinite_message(what, value, step, epoch, params, grads=None):
    bad_p = _first_nonfinite(params)
    msg = "%s is %s at step %d (epoch %d)" % (what, value, step, epoch)
    if bad_p is not None:
        msg += "; first non-finite parameter: %r" % bad_p
    else:
        msg += "; every parameter is finite"
        bad_g = _first_nonfinite(grads) if grads else None
        if bad_g is not None:
            msg += "; first non-finite gradient: %r" % bad_g
    return msg + " (try a lower learning rate or clip_norm)"


class _Progress:
    """tqdm when importable (and wanted), else one plain line per epoch / evaluation."""

    def __init__(self, enabled, total, epoch, epochs, file):
        self.enabled, self.file, self.bar = enabled, file, None
        self.epoch, self.epochs = epoch, epochs
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(total=total, desc="epoch %d/%d" % (epoch, epochs), file=file, leave=True)

    def step(self, loss):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss="%.4f" % loss, refresh=False)

    def close(self, line):
        if self.bar is not None:
            self.bar.set_postfix_str(line, refresh=True)
            self.bar.close()
        elif self.enabled:
            print("epoch %d/%d  %s" % (self.epoch, self.epochs, line), file=self.file, flush=True)


def _batches_plain(x, y, batch_size, rng):
    n = x.shape[0]
    order = np.arange(n) if rng is None else rng.permutation(n)
    xp = get_array_module(x)
    for s in range(0, n, batch_size):
        idx = order[s:s + batch_size]
        if xp is not np:
            idx = xp.asarray(idx)
        yield x[idx], y[idx]


def _batches_stateful(x, y, num_steps):
    L = x.shape[1]
    for s in range(0, L, num_steps):
        yield x[:, s:s + num_steps], y[:, s:s + num_steps]


def _batch_mover(model, x, y):
    """fit's batches -> the model's device: identity, or a host-to-GPU copy of each batch."""
    check_same_device(y, "y", [x], "x", plural=False)
    params = [_values(v) for v in getattr(model, "params", {}).values()]
    params = [v for v in params if hasattr(v, "shape")]
    if _is_cupy(x):                               # GPU data: only for a model on the GPU
        check_same_device(x, "x", params, "the model's parameters")
        return lambda a: a
    xp = get_array_module(*params) if params else default_xp()
    return (lambda a: a) if xp is np else xp.asarray


def _as_eval_dict(v):
    if isinstance(v, dict):
        return {str(k): float(val) for k, val in v.items()}
    return {"eval": float(v)}


def fit(model, loss, optimizer, x, y, batch_size=32, epochs=1, shuffle=None, seed=None,
        stateful=False, num_steps=None, clip_norm=None, eval_fn=None, eval_every=None,
        callbacks=(), progress=True, max_steps=None, file=None):
    """Train ``model`` and return a :class:`History`.

    model: anything with ``forward(x[, initial_state=...]) -> (output, trace)``,
    ``trace.backward(d_output)``, ``params``, ``grads`` and ``zero_grad()`` (e.g.
    :class:`npl.layers.Sequential`); stateful training also needs ``trace.final_state``.
    loss: ``loss(labels, output) -> (value, d_output)`` (any :mod:`npl.losses` function, or its name).
    optimizer: an :class:`Optimizer`.

    Data:

    * ``stateful=False``: ``x`` [N, ...] and ``y`` [N, ...] are cut into batches of ``batch_size``
      along axis 0 (the last may be smaller), reshuffled every epoch when ``shuffle`` (default True)
      from ``numpy.random.default_rng(seed)`` -- the same seed gives the same batches.
    * ``stateful=True`` (truncated BPTT): ``x`` [B, L, ...] and ``y`` [B, L, ...] are B parallel
      streams (see :func:`make_streams`) cut along axis 1 into windows of ``num_steps``, in order;
      the final state of each window is the initial state of the next (gradients stop at the window
      edge), and the state restarts from zeros at each epoch.  Shuffling is not allowed.

    Device: the batches go where the model's parameters are (the backend in force for a model
    with none yet). NumPy ``x`` and ``y`` for a model on CuPy stay on the host and each batch is
    copied to the GPU as it is used; CuPy data for a NumPy model is a TypeError.

    Each step: ``zero_grad``, forward, loss, backward, optional ``clip_by_global_norm(clip_norm)``,
    ``optimizer.apply_gradients``.  A NaN / infinite loss (or gradient norm) raises
    :class:`NonFiniteError` naming the step and the first non-finite parameter.

    eval_fn: ``eval_fn(model) -> float or dict name -> float``, run at the end of every epoch and,
    with ``eval_every=k``, every k steps.  callbacks: callables ``cb(info)`` with ``info`` a dict
    (step, epoch, loss, grad_norm, model); a callback returning True stops training.
    progress: a tqdm bar when tqdm is importable, else one plain line per epoch (to ``file``,
    default stderr); False for silence.  max_steps: stop after that many steps.
    """
    from . import losses as _losses
    loss_fn = _losses.get(loss)
    if not isinstance(optimizer, Optimizer):
        raise TypeError("optimizer must be an npl.train optimizer, got %s" % type(optimizer).__name__)
    _positive_int(epochs, "epochs")
    _positive_int(batch_size, "batch_size")
    if eval_every is not None:
        _positive_int(eval_every, "eval_every")
    if clip_norm is not None:
        _positive(clip_norm, "clip_norm")
    if not hasattr(x, "shape") or not hasattr(y, "shape"):
        raise TypeError("x and y must be arrays, got %s and %s" % (type(x).__name__, type(y).__name__))
    if stateful:
        if shuffle:
            raise ValueError("shuffle=True cannot be used with stateful=True: the windows of each "
                             "stream must come in order for the carried state to make sense")
        if num_steps is None:
            raise ValueError("stateful=True needs num_steps (the truncated-BPTT window length)")
        _positive_int(num_steps, "num_steps")
        if x.ndim < 2 or tuple(y.shape[:2]) != tuple(x.shape[:2]):
            raise ValueError("stateful=True needs x and y of shape [streams, time, ...] with the same "
                             "first two dimensions, got %s and %s" % (tuple(x.shape), tuple(y.shape)))
        n_batches = -(-x.shape[1] // num_steps)
    else:
        if x.shape[0] != y.shape[0]:
            raise ValueError("x and y must have the same number of examples (axis 0), got %d and %d"
                             % (x.shape[0], y.shape[0]))
        if x.shape[0] == 0:
            raise ValueError("x has no examples")
        n_batches = -(-x.shape[0] // batch_size)
    to_model = _batch_mover(model, x, y)
    shuffle = (not stateful) if shuffle is None else bool(shuffle)
    rng = np.random.default_rng(seed) if shuffle else None
    file = sys.stderr if file is None else file
    hist = History()
    t0 = time.perf_counter()
    step, stop = 0, False

    def run_eval():
        for k, v in _as_eval_dict(eval_fn(model)).items():
            hist.eval.setdefault(k, []).append((step, v))

    for epoch in range(1, epochs + 1):
        bar = _Progress(progress, n_batches, epoch, epochs, file)
        state, losses = None, []
        batches = _batches_stateful(x, y, num_steps) if stateful else _batches_plain(x, y, batch_size, rng)
        for xb, yb in batches:
            xb, yb = to_model(xb), to_model(yb)
            model.zero_grad()
            if stateful:
                out, tr = model.forward(xb, initial_state=state)
            else:
                out, tr = model.forward(xb)
            step += 1
            if not _all_finite(out):
                bar.close("stopped: non-finite output")
                raise NonFiniteError(_nonfinite_message("the model output", "non-finite", step, epoch,
                                                        model.params))
            value, d_out = loss_fn(yb, out)
            value = float(value)
            if not math.isfinite(value):
                bar.close("stopped: loss %s" % value)
                raise NonFiniteError(_nonfinite_message("the loss", value, step, epoch, model.params))
            tr.backward(d_out)
            params, grads = model.params, model.grads
            names = list(params)
            glist = [grads.get(k) for k in names]
            gnorm = None
            if clip_norm is not None:
                glist, gnorm = clip_by_global_norm(glist, clip_norm)
                if not math.isfinite(gnorm):
                    bar.close("stopped: gradient norm %s" % gnorm)
                    raise NonFiniteError(_nonfinite_message("the gradient norm", gnorm, step, epoch,
                                                            params, grads))
                hist.grad_norm.append(gnorm)
            optimizer.apply_gradients([(g, params[k], k) for k, g in zip(names, glist)])
            if stateful:
                state = tr.final_state
            hist.loss.append(value)
            hist.step.append(step)
            losses.append(value)
            bar.step(value)
            if eval_fn is not None and eval_every is not None and step % eval_every == 0:
                run_eval()
            info = {"step": step, "epoch": epoch, "loss": value, "grad_norm": gnorm, "model": model}
            for cb in callbacks:
                if cb(info) is True:
                    stop = True
            if max_steps is not None and step >= max_steps:
                stop = True
            if stop:
                break
        hist.epoch_loss.append(float(np.mean(losses)) if losses else float("nan"))
        if eval_fn is not None and not (eval_every is not None and step % eval_every == 0):
            run_eval()
        line = "step %d  loss %.4f" % (step, hist.epoch_loss[-1])
        for k, v in hist.eval.items():
            line += "  %s %.4f" % (k, v[-1][1])
        bar.close(line)
        if stop:
            break
    hist.seconds = time.perf_counter() - t0
    return hist


def evaluate(model, loss, x, y, batch_size=None, stateful=False, num_steps=None):
    """Mean loss of ``model`` on ``(x, y)`` without training (dropout off for a Sequential).

    Batches (``batch_size``, default all of x) or, with ``stateful``, windows of ``num_steps`` with
    the state carried, as in :func:`fit`, each on the model's device as in :func:`fit`; the mean
    weights each batch by its number of examples (windows by their length).  Returns a float,
    handy inside ``eval_fn``::

        fit(..., eval_fn=lambda m: {"val_loss": evaluate(m, "mse", x_val, y_val)})
    """
    from . import losses as _losses
    from .layers import Layer, Sequential
    loss_fn = _losses.get(loss)
    kw = {"training": False} if isinstance(model, Sequential) else {}
    to_model = _batch_mover(model, x, y)
    total, count, state = 0.0, 0, None
    if stateful:
        if num_steps is None:
            raise ValueError("stateful=True needs num_steps (the window length)")
        _positive_int(num_steps, "num_steps")
        batches = _batches_stateful(x, y, num_steps)
    else:
        if batch_size is not None:
            _positive_int(batch_size, "batch_size")
        batches = _batches_plain(x, y, batch_size or max(int(x.shape[0]), 1), None)
    for xb, yb in batches:
        xb, yb = to_model(xb), to_model(yb)
        if stateful:
            out, tr = model.forward(xb, initial_state=state, **kw)
            state, n = tr.final_state, xb.shape[1]
        else:                         # npl's layers: a call keeps no trace
            out = model(xb, **kw) if isinstance(model, Layer) else model.forward(xb, **kw)[0]
            n = xb.shape[0]
        total += float(loss_fn(yb, out)[0]) * n
        count += n
    if count == 0:
        raise ValueError("x has no examples")
    return total / count


def new_figure(figsize, required=True, probe=False, what="plotting"):
    """A matplotlib Figure drawn on the Agg canvas (no display, no pyplot state), for PNG files.

    matplotlib is the optional ``[plot]`` extra and is imported here only.  Without it: an
    ImportError saying how to install it when ``required``, else a printed note and None (so an
    example can carry on without its plot).  ``probe=True`` only checks that it can be imported.
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as e:
        if required:
            raise ImportError("%s needs matplotlib, which is not installed (pip install "
                              "matplotlib, or npl-rnn[plot]): %s" % (what, e)) from None
        print("matplotlib is not installed: no plot written (pip install matplotlib)")
        return None
    if probe:
        return None
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def plot_history(history, path, title=None):
    """Write a PNG of the training loss per step (and the evaluation metrics) to ``path``.

    Needs matplotlib (imported here, not at package import); uses the Agg canvas directly, so no
    display or pyplot state is touched.  Returns ``path``.
    """
    new_figure(None, probe=True, what="plot_history")   # a clear ImportError before any work
    h = history.as_dict() if isinstance(history, History) else history
    if not isinstance(h, dict) or "loss" not in h:
        raise TypeError("history must be an npl.train.History or a dict with a 'loss' list, got %s"
                        % type(history).__name__)
    ev = h.get("eval") or {}
    fig = new_figure((7, 3.2 * (1 + bool(ev))))
    ax = fig.add_subplot(1 + bool(ev), 1, 1)
    steps = h.get("step") or list(range(1, len(h["loss"]) + 1))
    ax.plot(steps, h["loss"], lw=1, label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    if ev:
        ax2 = fig.add_subplot(2, 1, 2)
        for k, pts in ev.items():
            if pts:
                s, v = zip(*pts)
                ax2.plot(s, v, marker="o", lw=1, label=k)
        ax2.set_xlabel("step")
        ax2.grid(alpha=0.3)
        ax2.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path
