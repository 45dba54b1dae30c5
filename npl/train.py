"""Optimizers, gradient clipping and a training loop, with TensorFlow 1's update rules.

Optimizers (``tf.compat.v1.train.*``): :class:`GradientDescentOptimizer`,
:class:`MomentumOptimizer`, :class:`RMSPropOptimizer`, :class:`AdamOptimizer`.  Each updates the
live parameter arrays IN PLACE::

    opt = npl.train.AdamOptimizer(1e-3)
    opt.apply_gradients([(grads[k], params[k], k) for k in params])   # or opt.update(params, grads)

``grads_and_vars`` holds ``(grad, var)`` or ``(grad, var, name)``; the name keys the optimizer's
slots (checkpoints use it: ``<name>/Adam``, ``<name>/Adam_1``, ``beta1_power``, ... exactly as
TensorFlow names them).  A gradient may be an :class:`npl.IndexedSlices` (an embedding's sparse
gradient; indices must be in [0, rows)): the sparse update of TensorFlow 1 is applied
(GradientDescent subtracts each row in turn, duplicates included, as TF1's ``scatter_sub``; the
others sum duplicate indices first; Momentum and RMSProp touch only the listed rows, RMSProp with
TF1's sparse-kernel arithmetic; Adam decays ``m`` and ``v`` of every row and updates every row, as
TF1's ``_apply_sparse``).  ``None`` gradients are skipped.  A gradient may also be a Python list
(converted to the variable's dtype).  Float64 training matches TF1 bit for bit (TF1 rounds
Python-float hyperparameters to float32 first; see :class:`Optimizer`).

Clipping: :func:`global_norm`, :func:`clip_by_global_norm` (``tf.clip_by_global_norm``).

Training loop: :func:`fit` (batches, epochs, seeded shuffling, stateful truncated BPTT, evaluation,
progress bar, history, NaN/inf detection) and :func:`plot_history`.
"""
import contextlib
import inspect
import math
import numbers
import sys
import time

import numpy as np

from .array_ops import IndexedSlices, _scatter_add, _check_index_range
from .backend import _is_cupy, default_xp, get_array_module
from ._checks import as_array, check_name, check_same_device, real_number

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


def _hyper_value(x):
    """A validated hyperparameter as stored: NumPy floating scalars keep their type (and so their
    precision, see :func:`_cast_hyper`); other numbers become Python floats."""
    return x if isinstance(x, np.floating) else float(x)


def _tensor_dtype(x):
    """The dtype TF1's ``ops.convert_to_tensor`` gives a hyperparameter: float32 for a Python float,
    its own dtype for a NumPy (or CuPy) scalar or 0-d array."""
    if hasattr(x, "dtype"):
        return np.dtype(x.dtype)
    return np.dtype(np.float32)


def _cast_hyper(x, dtype):
    """A hyperparameter as TF1 hands it to the update kernel: ``convert_to_tensor(x)`` (a Python
    float becomes a FLOAT32 tensor, a Python int an int32 one, a NumPy scalar keeps its dtype),
    then ``math_ops.cast(., var.dtype)``.  So a Python-float learning rate of 0.1 reaches a float64
    variable as float64(float32(0.1)), exactly as in TensorFlow 1."""
    if hasattr(x, "dtype"):
        a = np.asarray(x.get() if _is_cupy(x) else x)
    elif isinstance(x, numbers.Integral):
        a = np.asarray(int(x))
    else:
        a = np.asarray(float(x), np.float32)
    with np.errstate(over="ignore"):              # 1e200 -> float32 inf, as in TF
        return a.astype(dtype)[()]


def _schedule_arity(fn):
    """How many positional arguments a callable learning rate is called with: 0 (TF1's
    convention: no required positional parameter) or 1 (the step count)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):               # no introspectable signature: npl's old convention
        return 1
    params = list(sig.parameters.values())
    required = [p.name for p in params if p.default is p.empty and p.kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    kw_required = [p.name for p in params if p.default is p.empty and p.kind is inspect.Parameter.KEYWORD_ONLY]
    if len(required) > 1 or kw_required:
        raise TypeError("a callable learning_rate must take no required argument (as in TensorFlow 1) "
                        "or one (the step count), got one with signature %s" % (sig,))
    return len(required)


def _is_number(x):
    """A real number or a 0-d real numeric array (what a learning rate or a metric may be)."""
    if isinstance(x, bool) or isinstance(x, np.bool_):
        return False
    if isinstance(x, numbers.Real):
        return True
    return hasattr(x, "dtype") and hasattr(x, "ndim") and x.ndim == 0 and np.dtype(x.dtype).kind in "iuf"


# The checkpoint name of an optimizer's step count (``iterations``), TensorFlow's name for the
# training step counter (tf.train.get_or_create_global_step): int64, scalar.
STEP_KEY = "global_step"


class Optimizer:
    """Base class: slot bookkeeping, ``apply_gradients``, state for checkpoints.

    ``learning_rate``: a non-negative number, or a callable evaluated once per ``apply_gradients``:
    one that takes no required positional argument is called with none, as TF1 calls it
    (``lambda: 0.1``); one that takes one required positional argument gets the number of steps
    applied so far, ``self.iterations`` (``lambda step: 0.1 / (1 + step)``).  It must return a
    number.

    Hyperparameters reach the update in TF1's precision: TF1 converts a Python float (learning
    rate, momentum, decay, beta1, beta2, epsilon) to a FLOAT32 tensor and then casts it to the
    variable's dtype, so float64 training uses ``float64(float32(0.1))`` for 0.1, here as in
    TensorFlow.  A NumPy scalar keeps its own dtype (``np.float64(0.1)`` is used exactly, as a
    float64 tensor would be in TF).

    Subclasses define ``_slot_specs`` (ordered ``(slot_name, initial_value)``, TF's creation order,
    which fixes the checkpoint suffixes ``""``, ``"_1"``, ...) and ``_update(g, var, slots)``: the
    dense rule, applied in place to whole arrays (or, for sparse gradients, to the gathered rows).
    """

    _slot_specs = ()

    def __init__(self, learning_rate, use_locking=False, name="Optimizer"):
        if callable(learning_rate):
            self._lr_arity = _schedule_arity(learning_rate)
        else:
            _positive(learning_rate, "learning_rate", allow_zero=True)
            learning_rate = _hyper_value(learning_rate)
        if not isinstance(name, str) or not name:
            raise ValueError("name must be a non-empty string, got %r" % (name,))
        self.learning_rate = learning_rate
        self._lr_now = None     # the learning rate of the step being applied (a callable's value)
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

    def _current_lr(self):
        """The learning rate for this step: a callable is called once per ``apply_gradients``, with
        no argument (TF1) or with ``self.iterations`` (see the class docstring)."""
        lr = self.learning_rate
        if not callable(lr):
            return lr
        value = lr() if self._lr_arity == 0 else lr(self.iterations)
        if not _is_number(value):
            raise TypeError("the learning_rate callable must return a number, got %r (%s)"
                            % (value, type(value).__name__))
        return value

    def _lr(self, dtype):
        lr = self._lr_now if self._lr_now is not None else self._current_lr()
        return _cast_hyper(lr, dtype)

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
        slots = self._slots[name]
        for s, a in slots.items():
            if _is_cupy(a) != _is_cupy(var):
                # the model was moved (to_device) since the slots were made: the same state, copied
                # exactly, follows the variable to its device (as the model's own arrays did)
                from .backend import to_device
                slots[s] = to_device(a, "cupy" if _is_cupy(var) else "numpy")
        return slots

    def _normalize(self, grads_and_vars):
        if isinstance(grads_and_vars, dict):
            raise TypeError("grads_and_vars must be a list of (grad, var) or (grad, var, name); for "
                            "dicts use optimizer.update(params, grads)")
        if isinstance(grads_and_vars, (str, bytes)) or not hasattr(grads_and_vars, "__iter__"):
            raise TypeError("grads_and_vars must be a list of (grad, var) or (grad, var, name), got %s"
                            % type(grads_and_vars).__name__)
        items = []
        for k, gv in enumerate(list(grads_and_vars)):
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
                    g._check(what="gradient of %r" % name)
                    _check_index_range(g.indices, v.shape[0], "gradient of %r: IndexedSlices indices" % name,
                                       "the rows of the variable")
                    gd = g.values
                else:
                    if not (hasattr(g, "shape") and hasattr(g, "dtype")):
                        plain = isinstance(g, (list, tuple, numbers.Number))
                        g = as_array(g, "gradient of %r" % name, xp=get_array_module(v))
                        if g.dtype.kind not in "iuf":
                            raise TypeError("gradient of %r must be a float array, got dtype %s"
                                            % (name, g.dtype))
                        if plain:                    # a Python list has no dtype: the variable's
                            g = g.astype(v.dtype, copy=False)
                    gd = g
                    if tuple(g.shape) != tuple(v.shape):
                        raise ValueError("gradient of %r must have the variable's shape %s, got %s"
                                         % (name, tuple(v.shape), tuple(g.shape)))
                if gd.dtype != v.dtype:
                    raise TypeError("gradient of %r has dtype %s but the variable has %s"
                                    % (name, gd.dtype, v.dtype))
                check_same_device(gd, "gradient of %r" % name, [v], "the variable %r" % name,
                                  plural=False)
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
        items = self._normalize(grads_and_vars)
        if global_step is not None and not (isinstance(global_step, np.ndarray) and global_step.ndim == 0
                                            and global_step.dtype.kind in "iu"):
            raise TypeError("global_step must be None or a 0-d integer numpy array, got %r" % (global_step,))
        self._lr_now = self._current_lr()       # once per step, as TF1's _prepare
        try:
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
        finally:
            self._lr_now = None
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
        spec[STEP_KEY] = ((), np.dtype(np.int64))
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
        out[STEP_KEY] = np.asarray(self.iterations, np.int64)
        return out

    def load_state_dict(self, state, params):
        """Set the state for ``params`` (dict name -> live array) from ``state`` (keyed as
        :meth:`state_dict`); shapes must match (ValueError listing what is missing or wrong)."""
        spec = self.state_spec(params)
        missing = sorted(set(spec) - set(state) - {STEP_KEY})     # state saved before it had one
        if missing:
            raise ValueError("optimizer state is missing %s" % missing)
        for k, (shape, dt) in spec.items():
            if k in state and tuple(np.shape(state[k])) != shape:
                raise ValueError("optimizer state %r must have shape %s, got %s"
                                 % (k, shape, tuple(np.shape(state[k]))))
        for name, v in params.items():
            xp = get_array_module(v)
            self._vars[name] = v
            self._slots[name] = {s: xp.asarray(np.asarray(state[self._slot_key(name, k)], v.dtype)).copy()
                                 for k, (s, _) in enumerate(self._slot_specs)}
        first = np.dtype(next(iter(params.values())).dtype) if params else np.dtype(np.float32)
        self._set_non_slot({k: state[k] for k in self._non_slot_init(first)})
        if STEP_KEY in state:
            step = np.asarray(state[STEP_KEY])
            if step.dtype.kind not in "iu" or int(step) < 0:
                raise ValueError("optimizer state %r must be a non-negative integer, got %r"
                                 % (STEP_KEY, state[STEP_KEY]))
            self.iterations = int(step)


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
    """``var -= learning_rate * grad``.  Sparse (IndexedSlices): ``var[indices[k]] -= lr *
    values[k]`` for each k in turn, duplicates NOT summed first (TF1's ``scatter_sub``)."""

    def __init__(self, learning_rate, use_locking=False, name="GradientDescent"):
        super().__init__(learning_rate, use_locking, name)

    def _update(self, g, var, slots):
        var -= self._lr(var.dtype) * g

    def _apply_sparse(self, grad, var, slots):
        idx = grad.indices.reshape(-1)
        vals = grad.values.reshape((idx.shape[0],) + tuple(var.shape[1:]))
        _scatter_add(var, idx, -(vals * self._lr(var.dtype)))     # var + (-x) == var - x exactly


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
        self.momentum = _hyper_value(momentum)
        self.use_nesterov = bool(use_nesterov)

    def _update(self, g, var, slots):
        lr, mu = self._lr(var.dtype), _cast_hyper(self.momentum, var.dtype)
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
        self.decay, self.momentum, self.epsilon = _hyper_value(decay), _hyper_value(momentum), \
            _hyper_value(epsilon)
        self.centered = bool(centered)
        self._slot_specs = (("rms", 1.0),) + ((("mg", 0.0),) if self.centered else ()) + (("momentum", 0.0),)

    def _update(self, g, var, slots):
        xp = get_array_module(var)
        dt = var.dtype.type
        eps = _cast_hyper(self.epsilon, var.dtype)
        lr, one_minus = self._lr(var.dtype), dt(1) - _cast_hyper(self.decay, var.dtype)
        ms, mom = slots["rms"], slots["momentum"]
        ms += (g * g - ms) * one_minus
        if self.centered:
            mg = slots["mg"]
            mg += (g - mg) * one_minus
            denom = ms - mg * mg + eps
        else:
            denom = ms + eps
        mom *= _cast_hyper(self.momentum, var.dtype)
        mom += g * lr / xp.sqrt(denom)
        var -= mom

    def _apply_sparse(self, grad, var, slots):
        """TF1's ``SparseApplyRMSProp`` / ``SparseApplyCenteredRMSProp`` kernels, on the rows of
        the (deduplicated) indices; their arithmetic differs from the dense kernel's::

            ms = ms * decay + grad^2 * (1 - decay);  mg = mg * decay + grad * (1 - decay)
            mom = mom * momentum + rsqrt(ms + epsilon [- mg^2]) * lr * grad;  var -= mom
        """
        xp = get_array_module(var)
        dt = var.dtype.type
        idx, g = _dedup(grad)
        lr, rho = self._lr(var.dtype), _cast_hyper(self.decay, var.dtype)
        mu, eps = _cast_hyper(self.momentum, var.dtype), _cast_hyper(self.epsilon, var.dtype)
        ms = slots["rms"][idx] * rho + (g * g) * (dt(1) - rho)
        slots["rms"][idx] = ms
        if self.centered:
            mg = slots["mg"][idx] * rho + g * (dt(1) - rho)
            slots["mg"][idx] = mg
            denom = ms + eps - mg * mg
        else:
            denom = ms + eps
        mom = slots["momentum"][idx] * mu + (dt(1) / xp.sqrt(denom)) * lr * g
        slots["momentum"][idx] = mom
        var[idx] -= mom


class AdamOptimizer(Optimizer):
    """TF1 ``ApplyAdam``; slots ``m`` (``<var>/Adam``), ``v`` (``<var>/Adam_1``); non-slot
    ``beta1_power``, ``beta2_power`` (start at beta1, beta2; multiplied by them after each step;
    FLOAT32 whatever the variables' dtype, as TF1 creates them from the Python floats, so a float64
    model's checkpoint holds float32 powers exactly as TF1's does)::

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
        self.beta1, self.beta2, self.epsilon = _hyper_value(beta1), _hyper_value(beta2), _hyper_value(epsilon)
        self._beta1_power = self._beta2_power = None

    def _non_slot_init(self, dtype=None):
        # TF1 creates the powers with initial_value=beta1 / beta2: FLOAT32 variables for Python
        # floats, whatever the dtype of the variables trained (a NumPy float64 beta gives float64)
        b1, b2 = _tensor_dtype(self.beta1), _tensor_dtype(self.beta2)
        return {"beta1_power": np.asarray(_cast_hyper(self.beta1, b1)),
                "beta2_power": np.asarray(_cast_hyper(self.beta2, b2))}

    def _non_slot(self):
        if self._beta1_power is None:
            return {}
        return {"beta1_power": np.asarray(self._beta1_power), "beta2_power": np.asarray(self._beta2_power)}

    def _set_non_slot(self, values):
        init = self._non_slot_init()
        self._beta1_power = np.asarray(values["beta1_power"], init["beta1_power"].dtype)[()]
        self._beta2_power = np.asarray(values["beta2_power"], init["beta2_power"].dtype)[()]

    def _prepare(self, var_list):
        if self._beta1_power is None:          # TF1: float32 non-slot variables (see _non_slot_init)
            init = self._non_slot_init()
            self._beta1_power, self._beta2_power = init["beta1_power"][()], init["beta2_power"][()]

    def _finish(self):                          # TF1: beta1_power * beta1 in the powers' dtype
        b1p, b2p = self._beta1_power, self._beta2_power
        self._beta1_power = b1p * _cast_hyper(self.beta1, b1p.dtype)
        self._beta2_power = b2p * _cast_hyper(self.beta2, b2p.dtype)

    def _hypers(self, dtype):
        return (_cast_hyper(self.beta1, dtype), _cast_hyper(self.beta2, dtype),
                _cast_hyper(self.epsilon, dtype))

    def _step_size(self, dtype):
        dt = dtype.type
        b1p, b2p = dt(self._beta1_power), dt(self._beta2_power)      # math_ops.cast(power, var.dtype)
        return self._lr(dtype) * np.sqrt(dt(1) - b2p) / (dt(1) - b1p)

    def _update(self, g, var, slots):
        xp = get_array_module(var)
        dt = var.dtype.type
        b1, b2, eps = self._hypers(var.dtype)
        m, v = slots["m"], slots["v"]
        m += (g - m) * (dt(1) - b1)
        v += (g * g - v) * (dt(1) - b2)
        var -= (m * self._step_size(var.dtype)) / (xp.sqrt(v) + eps)

    def _apply_sparse(self, grad, var, slots):
        xp = get_array_module(var)
        dt = var.dtype.type
        b1, b2, eps = self._hypers(var.dtype)
        idx, vals = _dedup(grad)
        m, v = slots["m"], slots["v"]
        m *= b1
        m[idx] += vals * (dt(1) - b1)
        v *= b2
        v[idx] += (vals * vals) * (dt(1) - b2)
        var -= self._step_size(var.dtype) * m / (xp.sqrt(v) + eps)


# ============================================================================ clipping
def _values(t):
    return t.values if isinstance(t, IndexedSlices) else t


def _float_entries(t_list):
    """The float arrays of ``t_list`` (IndexedSlices: their values; None skipped), each checked."""
    if not isinstance(t_list, (list, tuple)):
        raise TypeError("t_list must be a list or tuple of arrays, got %s" % type(t_list).__name__)
    arrays = []
    for k, t in enumerate(t_list):
        if t is None:
            continue
        a = _values(t)
        if not hasattr(a, "dtype") or not hasattr(a, "shape") or a.dtype.kind != "f":
            raise TypeError("t_list[%d] must be a float array or IndexedSlices, got %s"
                            % (k, type(t).__name__))
        arrays.append(a)
    return arrays


def _norm_parts(t_list):
    """``(scale, ssq, dtype, finite)``: the global norm is ``scale * sqrt(ssq)``, the squares summed
    in FLOAT64 (float32 gradients ~1e20 would overflow a float32 sum; TF sums in the input dtype).
    ``scale`` is 1 unless the float64 sum itself overflows with finite inputs; then the arrays are
    divided by their largest magnitude first.  ``dtype`` is the inputs' (result) dtype; ``finite``
    whether every input value is finite."""
    arrays = _float_entries(t_list)
    dtype = np.result_type(*[a.dtype for a in arrays]) if arrays else np.dtype(np.float64)
    total = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for a in arrays:
            a64 = a.astype(np.float64, copy=False)
            total += float((a64 * a64).sum())
    if math.isfinite(total):
        return 1.0, total, dtype, True
    finite = all(_all_finite(a) for a in arrays)
    if not finite:
        return 1.0, total, dtype, False
    big = max(float(get_array_module(a).abs(a).max()) for a in arrays if a.size)
    total = 0.0
    for a in arrays:
        r = a.astype(np.float64, copy=False) / big
        total += float((r * r).sum())
    return big, total, dtype, True


def global_norm(t_list, name=None):
    """``sqrt(sum_i ||t_i||^2)`` over the arrays of ``t_list`` (tf.global_norm).

    None entries are ignored; an :class:`npl.IndexedSlices` counts its ``values`` (duplicate indices
    NOT merged, as in TensorFlow).  The squares are accumulated in float64 (so finite float32
    gradients never overflow the sum) and the norm is returned as a NumPy scalar of the inputs'
    dtype, as TF's result (float32 gradients: ``np.float32``; float64: ``np.float64``, which is a
    Python float).  ``inf`` only when an input is non-finite or the norm exceeds that dtype's range.
    """
    check_name(name)
    return _norm_value(*_norm_parts(t_list)[:3])


def _norm_value(scale, ssq, dtype):
    """The global norm ``scale * sqrt(ssq)`` as a scalar of the inputs' dtype (NaN stays NaN)."""
    with np.errstate(over="ignore"):
        return dtype.type(scale * math.sqrt(ssq) if not math.isnan(ssq) else ssq)


def clip_by_global_norm(t_list, clip_norm, use_norm=None, name=None):
    """``tf.clip_by_global_norm``: returns ``(clipped_list, global_norm)``.

        scale = clip_norm * min(1 / global_norm, 1 / clip_norm);   t_i <- t_i * scale

    so nothing changes (scale 1) when ``global_norm <= clip_norm``.  ``clip_norm``: a positive
    finite number.  ``use_norm``: a non-negative finite number that replaces the computed norm
    (returned as a float).  The computed norm is :func:`global_norm`'s (float64 sum of squares,
    returned in the inputs' dtype).  None entries stay None; IndexedSlices stay IndexedSlices
    (values scaled).  Finite inputs always give finite results (a norm beyond the float range is
    handled by rescaling); a non-finite input makes every clipped value NaN, as in TensorFlow (fit
    stops on it).  New arrays are returned.
    """
    check_name(name)
    clip = real_number(clip_norm, "clip_norm", allow_zero=False)
    big, ssq, rescaled = 1.0, None, False
    if use_norm is None:
        big, ssq, dtype, finite = _norm_parts(t_list)           # checks t_list
        norm = _norm_value(big, ssq, dtype)
        n = big * math.sqrt(ssq) if finite else float("nan")   # NaN: TF's ``scale + (n - n)``
        rescaled = finite and (big != 1.0 or not math.isfinite(n))
    else:
        _float_entries(t_list)
        norm = n = real_number(use_norm, "use_norm", allow_zero=True)
    if rescaled:                          # the norm is beyond float64: t * clip / norm, in two steps
        factor = clip / math.sqrt(ssq)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            n64 = np.float64(n)
            scale = np.float64(clip) * np.minimum(np.float64(1.0) / n64, np.float64(1.0) / np.float64(clip))
            scale = scale + (n64 - n64)

    def _clip(a):
        if rescaled:
            return ((a.astype(np.float64, copy=False) / big) * factor).astype(a.dtype, copy=False)
        if 0 < scale < np.finfo(a.dtype).tiny:      # a float32 scale would be subnormal: scale in float64
            return (a.astype(np.float64) * scale).astype(a.dtype)
        return a * a.dtype.type(scale)

    out = []
    for t in t_list:
        if t is None:
            out.append(None)
        elif isinstance(t, IndexedSlices):
            out.append(IndexedSlices(_clip(t.values), t.indices, t.dense_shape))
        else:
            out.append(_clip(t))
    return out, norm


# ============================================================================ training loop
class NonFiniteError(FloatingPointError):
    """The loss (or the gradient norm) became NaN or infinite; the message names the step and the
    first non-finite parameter."""


class History:
    """What :func:`fit` recorded: ``loss`` (one per step), ``step`` (global step numbers),
    ``epoch_loss`` (mean per epoch, weighted by batch size), ``grad_norm`` (per step, before
    clipping), ``eval``
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
    if params:
        xp = get_array_module(*params)
    else:                              # unbuilt: where it will be built (to_device, else in force)
        xp = model._home_xp() if hasattr(model, "_home_xp") else default_xp()
    return (lambda a: a) if xp is np else xp.asarray


def _as_eval_dict(v):
    what = "eval_fn must return a number or a dict name -> number"
    if isinstance(v, dict):
        for k, val in v.items():
            if not _is_number(val):
                raise TypeError("%s, got %r for key %r (%s)" % (what, val, k, type(val).__name__))
        return {str(k): float(val) for k, val in v.items()}
    if not _is_number(v):
        raise TypeError("%s, got %r (%s)" % (what, v, type(v).__name__))
    return {"eval": float(v)}


def _check_callbacks(callbacks):
    """fit's callbacks as a list, each checked callable (a single callable is accepted too)."""
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    if isinstance(callbacks, (str, bytes, dict)) or not hasattr(callbacks, "__iter__"):
        raise TypeError("callbacks must be a list of callables cb(info), got %s" % type(callbacks).__name__)
    callbacks = list(callbacks)
    for k, cb in enumerate(callbacks):
        if not callable(cb):
            raise TypeError("callbacks[%d] must be callable cb(info), got %r (%s)"
                            % (k, cb, type(cb).__name__))
    return callbacks


def _check_seed(seed):
    """fit's seed: anything numpy.random.default_rng takes (None, a non-negative integer, a
    SeedSequence, ...), refused up front with a message naming it."""
    if isinstance(seed, (bool, np.bool_, str, bytes, float)):
        raise TypeError("seed must be None or a non-negative integer, got %r" % (seed,))
    try:
        np.random.default_rng(seed)
    except TypeError:
        raise TypeError("seed must be None or a non-negative integer, got %r" % (seed,)) from None
    except ValueError as e:
        raise ValueError("seed must be None or a non-negative integer, got %r (%s)" % (seed, e)) from None


def _check_xy(x, y, stateful):
    if not hasattr(x, "shape") or not hasattr(y, "shape"):
        raise TypeError("x and y must be arrays, got %s and %s" % (type(x).__name__, type(y).__name__))
    if stateful:
        if len(x.shape) < 2 or len(y.shape) < 2 or tuple(y.shape[:2]) != tuple(x.shape[:2]):
            raise ValueError("stateful=True needs x and y of shape [streams, time, ...] with the same "
                             "first two dimensions, got %s and %s" % (tuple(x.shape), tuple(y.shape)))
    else:
        if len(x.shape) < 1 or len(y.shape) < 1:
            raise ValueError("x and y must have an examples axis (axis 0), got shapes %s and %s"
                             % (tuple(x.shape), tuple(y.shape)))
        if x.shape[0] != y.shape[0]:
            raise ValueError("x and y must have the same number of examples (axis 0), got %d and %d"
                             % (x.shape[0], y.shape[0]))


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
    ``optimizer.apply_gradients``.  A non-finite output, loss or gradient norm (clipped or not)
    raises :class:`NonFiniteError` naming the step and the first non-finite parameter (or
    gradient); a bad gradient is caught before it is applied, so the weights are those of the step
    before.  ``History.grad_norm`` has every step's global gradient norm (before clipping);
    ``History.epoch_loss`` is each epoch's mean loss weighted by the batches' sizes (a stateful
    window's by its length), as :func:`evaluate` weights them.  Dropout wrappers keep their own
    ``training`` mode (True unless set otherwise).

    Resuming: a checkpoint holds the optimizer's slots and step count (``global_step``), so
    learning-rate schedules continue; the shuffling order continues only if the same
    ``numpy.random.Generator`` is passed as ``seed`` again (an integer seed restarts the order),
    and a DropoutWrapper's random stream is not saved (as in TF's checkpoints).

    eval_fn: ``eval_fn(model) -> float or dict name -> float``, run at the end of every epoch and,
    with ``eval_every=k``, every k steps (anything else it returns is a TypeError naming eval_fn).
    callbacks: a list of callables ``cb(info)`` (or one callable) with ``info`` a dict (step,
    epoch, loss, grad_norm, model); a callback returning True (or ``numpy.True_``) stops training.  seed: None or a
    non-negative integer (anything ``numpy.random.default_rng`` takes).
    progress: a tqdm bar when tqdm is importable, else one plain line per epoch (to ``file``,
    default stderr); False for silence.  max_steps: None, or a positive integer: stop after that
    many steps.  Every argument is checked before the first step.
    """
    from . import losses as _losses
    loss_fn = _losses.get(loss)
    if not isinstance(optimizer, Optimizer):
        raise TypeError("optimizer must be an npl.train optimizer, got %s" % type(optimizer).__name__)
    _positive_int(epochs, "epochs")
    _positive_int(batch_size, "batch_size")
    if eval_every is not None:
        _positive_int(eval_every, "eval_every")
    if max_steps is not None:
        _positive_int(max_steps, "max_steps")
    if clip_norm is not None:
        _positive(clip_norm, "clip_norm")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError("eval_fn must be None or a callable eval_fn(model), got %s" % type(eval_fn).__name__)
    callbacks = _check_callbacks(callbacks)
    _check_seed(seed)
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
            if clip_norm is not None:
                glist, gnorm = clip_by_global_norm(glist, clip_norm)
            else:                       # checked too: a NaN gradient must not reach the weights
                gnorm = global_norm(glist)
            gnorm = float(gnorm)
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
            losses.append((value, xb.shape[1] if stateful else xb.shape[0]))
            bar.step(value)
            if eval_fn is not None and eval_every is not None and step % eval_every == 0:
                run_eval()
            info = {"step": step, "epoch": epoch, "loss": value, "grad_norm": gnorm, "model": model}
            for cb in callbacks:
                r = cb(info)
                if isinstance(r, (bool, np.bool_)) and r:      # True or numpy's True stops
                    stop = True
            if max_steps is not None and step >= max_steps:
                stop = True
            if stop:
                break
        # weighted by each batch's examples (a stateful window's steps), as evaluate's mean
        hist.epoch_loss.append(math.fsum(v * n for v, n in losses) / sum(n for _, n in losses)
                               if losses else float("nan"))
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
    """Mean loss of ``model`` on ``(x, y)`` without training (dropout off: a Sequential's, and an
    RNN layer's DropoutWrappers and cells with dropout of their own; their modes are restored
    after).

    Batches (``batch_size``, default all of x) or, with ``stateful``, windows of ``num_steps`` with
    the state carried, as in :func:`fit`, each on the model's device as in :func:`fit`; the mean
    weights each batch by its number of examples (windows by their length).  Returns a float,
    handy inside ``eval_fn``::

        fit(..., eval_fn=lambda m: {"val_loss": evaluate(m, "mse", x_val, y_val)})
    """
    from . import losses as _losses
    from .layers import Sequential
    loss_fn = _losses.get(loss)
    kw = {"training": False} if isinstance(model, Sequential) else {}
    with _dropout_off(model if not kw else None):
        return _evaluate(model, loss_fn, kw, x, y, batch_size, stateful, num_steps)


def _dropout_off(model):
    """A context that sets ``training = False`` on the dropout cells (DropoutWrappers and cells
    with dropout of their own) of an RNN layer or cell (a Sequential does it itself with
    ``training=False``), and restores them after."""
    from .layers import RNN, dropout_cells
    from .cells import RNNCell
    cell = model.cell if isinstance(model, RNN) else model if isinstance(model, RNNCell) else None
    wrappers = [] if cell is None else dropout_cells(cell)

    @contextlib.contextmanager
    def ctx():
        saved = [w.training for w in wrappers]
        try:
            for w in wrappers:
                w.training = False
            yield
        finally:
            for w, t in zip(wrappers, saved):
                w.training = t
    return ctx()


def _evaluate(model, loss_fn, kw, x, y, batch_size, stateful, num_steps):
    from .layers import Layer
    _check_xy(x, y, stateful)
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
