"""Gradient checking: compare hand-written backward passes with central finite differences.

A backward pass is checked through a random linear loss.  For a function ``y = f(a_1, ..., a_n)``
(any structure of output arrays) draw a fixed random cotangent ``w`` with the shape of ``y`` and set

    L(a_1, ..., a_n) = sum_k <w_k, y_k>                       (a scalar, computed in float64)

The analytic gradient ``dL/da`` is what the backward returns when given ``w`` as ``d_outputs``
(a vector-Jacobian product), and the numeric one is the central difference, entry by entry::

    dL/da[idx]  ~=  (L(a + eps*e_idx) - L(a - eps*e_idx)) / (2*eps)       error O(eps^2)

Both are compared with the relative error of each entry

    err[idx] = |analytic - numeric| / max(|analytic|, |numeric|, atol)

(``atol`` keeps entries that are zero in both from dividing by zero: below it the comparison is
absolute).  The report gives, for every array, the worst ``err`` and the index where it occurs.

Everything runs in float64 on the host: float32 inputs are upcast on a copy with a
:class:`GradcheckWarning` (float32 rounding alone is ~1e-7, too coarse for a check of this kind),
and :func:`gradcheck_cell` checks a float64 copy of the cell so the caller's cell is left as it was.

Two entry points:

* :func:`gradcheck` ``(fn, inputs, params)`` for any function: ``fn(inputs)`` runs the forward and
  returns ``(outputs, vjp)``; ``vjp(d_outputs)`` returns a dict of gradients, one per name in
  ``inputs`` and ``params``.  ``params`` are live arrays (e.g. ``cell.params``) that the forward reads;
  they are perturbed in place and restored.
* :func:`gradcheck_cell` ``(cell, x, state)`` for any cell, built-in or your own subclass of
  :class:`npl.cells.RNNCell`: runs :func:`npl.nn.dynamic_rnn` with ``return_trace=True`` and checks
  the inputs, every array of the initial state and every parameter.

>>> import numpy as np, npl
>>> from npl.gradcheck import gradcheck_cell
>>> cell = npl.rnn.GRUCell(3, seed=0, dtype=np.float64)
>>> x = np.random.default_rng(0).standard_normal((2, 4, 5))
>>> gradcheck_cell(cell, x).passed
True
"""
import copy
import sys
import types
import warnings

import numpy as np

from .backend import to_numpy, _is_cupy

__all__ = ["gradcheck", "gradcheck_cell", "float64_copy", "GradcheckReport", "ArrayCheck",
           "GradcheckWarning"]


class GradcheckWarning(UserWarning):
    """Issued when a float32 array is upcast (on a copy) to float64 for the check."""


# ------------------------------------------------------------------------------------ structures
def _named_leaves(value, name):
    """Flatten an array or a (named)tuple/list of arrays into [(name, array)].

    ``LSTMStateTuple(c, h)`` named ``state`` gives ``state.c`` and ``state.h``; a plain tuple gives
    ``state[0]``, ``state[1]``, ...; None entries are dropped.
    """
    if value is None:
        return []
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        out = []
        for field, v in zip(value._fields, value):
            out.extend(_named_leaves(v, "%s.%s" % (name, field)))
        return out
    if isinstance(value, (tuple, list)):
        out = []
        for k, v in enumerate(value):
            out.extend(_named_leaves(v, "%s[%d]" % (name, k)))
        return out
    return [(name, value)]


def _rebuild(template, leaves):
    """Inverse of :func:`_named_leaves`: put ``leaves`` (an iterator) into ``template``'s structure."""
    if template is None:
        return None
    if isinstance(template, tuple) and hasattr(template, "_fields"):
        return type(template)(*[_rebuild(v, leaves) for v in template])
    if isinstance(template, (tuple, list)):
        return type(template)(_rebuild(v, leaves) for v in template)
    return next(leaves)


def _is_float(a):
    return hasattr(a, "dtype") and np.dtype(a.dtype).kind == "f"


# ------------------------------------------------------------------------------------ report
class ArrayCheck:
    """The comparison for one array.

    Attributes: ``name``, ``shape``, ``checked`` (entries compared), ``max_rel_err``, ``index``
    (where the worst entry is, a tuple into ``shape``), ``analytic`` and ``numeric`` (the two values
    there), ``max_abs_err``, ``passed`` (``max_rel_err <= rtol``).
    """

    def __init__(self, name, shape, checked, max_rel_err, index, analytic, numeric, max_abs_err, rtol):
        self.name, self.shape, self.checked = name, tuple(shape), checked
        self.max_rel_err, self.index = max_rel_err, index
        self.analytic, self.numeric, self.max_abs_err = analytic, numeric, max_abs_err
        self.passed = bool(max_rel_err <= rtol)

    def __repr__(self):
        return ("ArrayCheck(%r, shape=%s, max_rel_err=%.3g at %s, passed=%s)"
                % (self.name, self.shape, self.max_rel_err, self.index, self.passed))


class GradcheckReport:
    """Result of a gradient check: one :class:`ArrayCheck` per array, in the order checked.

    ``passed`` is True when every array passed; ``worst`` is the check with the largest error;
    ``report[name]`` looks one up; ``str(report)`` is a table; :meth:`raise_if_failed` raises
    AssertionError with that table.
    """

    def __init__(self, checks, rtol, atol, eps, title="gradcheck"):
        self.checks = list(checks)
        self.rtol, self.atol, self.eps, self.title = rtol, atol, eps, title

    @property
    def passed(self):
        return all(c.passed for c in self.checks)

    @property
    def worst(self):
        return max(self.checks, key=lambda c: c.max_rel_err) if self.checks else None

    @property
    def names(self):
        return [c.name for c in self.checks]

    def __getitem__(self, name):
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError("no array named %r in this report; names: %s" % (name, self.names))

    def __iter__(self):
        return iter(self.checks)

    def __len__(self):
        return len(self.checks)

    def __bool__(self):
        return self.passed

    def raise_if_failed(self):
        """Raise AssertionError (with the table) unless every array passed; returns self."""
        if not self.passed:
            raise AssertionError(str(self))
        return self

    def __str__(self):
        n = sum(c.checked for c in self.checks)
        head = ("%s: %s  (worst relative error %.2e, rtol %.0e, atol %.0e, eps %.0e; %d arrays, "
                "%d entries)" % (self.title, "PASSED" if self.passed else "FAILED",
                                 self.worst.max_rel_err if self.checks else 0.0, self.rtol,
                                 self.atol, self.eps, len(self.checks), n))
        rows = [("array", "shape", "checked", "max rel err", "at index", "analytic", "numeric", "ok")]
        for c in self.checks:
            rows.append((c.name, str(c.shape), str(c.checked), "%.2e" % c.max_rel_err, str(c.index),
                         "% .6e" % c.analytic, "% .6e" % c.numeric, "ok" if c.passed else "FAIL"))
        widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
        lines = [head] + ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        return "\n".join(lines)

    def __repr__(self):
        w = self.worst
        return ("<GradcheckReport %s: %d arrays, worst %s>"
                % ("passed" if self.passed else "FAILED", len(self.checks),
                   "none" if w is None else "%r %.2e at %s" % (w.name, w.max_rel_err, w.index)))


# ------------------------------------------------------------------------------------ core
def _compare(name, analytic, numeric, flat_idx, shape, rtol, atol):
    """Worst entry of |a - n| / max(|a|, |n|, atol) over the entries ``flat_idx`` of the array."""
    a = analytic.reshape(-1)[flat_idx]
    n = numeric
    diff = np.abs(a - n)
    den = np.maximum(np.maximum(np.abs(a), np.abs(n)), atol)
    err = diff / den
    if err.size == 0:
        return ArrayCheck(name, shape, 0, 0.0, (), 0.0, 0.0, 0.0, rtol)
    k = int(np.argmax(err))
    index = tuple(int(i) for i in np.unravel_index(int(flat_idx[k]), shape)) if shape else ()
    return ArrayCheck(name, shape, int(err.size), float(err[k]), index, float(a[k]), float(n[k]),
                      float(diff.max()), rtol)


def gradcheck(fn, inputs, params=None, eps=1e-5, rtol=1e-5, atol=1e-5, seed=0, max_checks=None,
              title="gradcheck"):
    """Check the gradients of any npl computation against float64 central finite differences.

    fn:      ``fn(inputs) -> (outputs, vjp)``.  ``inputs`` is the dict below (float64 copies);
             ``outputs`` any array or (named)tuple/list of arrays; ``vjp(d_outputs)`` (called once,
             right after the forward that made it) returns a dict name -> gradient holding every
             float name of ``inputs`` (with the same structure) and every name of ``params``.
    inputs:  dict name -> array or structure of arrays (e.g. an LSTMStateTuple).  Float arrays are
             differentiated (float32 ones are upcast on a copy, with a :class:`GradcheckWarning`);
             integer and bool arrays (lengths, ids, masks) are passed through unchanged.  The
             check runs on the host: CuPy arrays, float and integer alike, are copied to NumPy.
    params:  dict name -> live float64 array that ``fn`` reads (``cell.params``); perturbed in place
             and restored.  float32 parameters raise TypeError (``fn`` would keep using them):
             check a float64 model (:func:`float64_copy`, or :func:`gradcheck_cell`).
    eps:     finite-difference step; rtol: largest relative error that passes; atol: the floor of
             the denominator (entries below it in both are compared absolutely).
    seed:    seeds the random cotangent ``w`` of the linear loss ``L = sum <w, outputs>``.
    max_checks: None to check every entry; an integer checks that many random entries per array.

    Returns a :class:`GradcheckReport`.

    >>> import numpy as np, npl
    >>> table = np.random.default_rng(0).standard_normal((5, 3))
    >>> def fn(inp):
    ...     y, tr = npl.nn.embedding_lookup(inp["table"], inp["ids"], return_trace=True)
    ...     return y, lambda d: {"table": tr.backward(d).to_dense()}
    >>> gradcheck(fn, {"table": table, "ids": np.array([[0, 2], [2, 4]])}).passed
    True
    """
    if not callable(fn):
        raise TypeError("fn must be callable as fn(inputs) -> (outputs, vjp), got %s"
                        % type(fn).__name__)
    if not isinstance(inputs, dict):
        raise TypeError("inputs must be a dict name -> array (or structure of arrays), got %s"
                        % type(inputs).__name__)
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise TypeError("params must be a dict name -> live array, got %s" % type(params).__name__)
    if not eps > 0:
        raise ValueError("eps must be positive, got %r" % (eps,))
    if max_checks is not None and (isinstance(max_checks, bool)
                                   or not isinstance(max_checks, (int, np.integer)) or max_checks < 1):
        raise ValueError("max_checks must be None or a positive integer, got %r" % (max_checks,))
    clash = sorted(set(inputs) & set(params))
    if clash:
        raise ValueError("names %s appear in both inputs and params; use distinct names" % clash)

    # float64 host copies of the inputs; the leaves we differentiate, as (key, name, array)
    upcast = []
    work = {}
    checked = []
    for key, value in inputs.items():
        leaves = _named_leaves(value, key)
        new = []
        for nm, a in leaves:
            if _is_float(a):
                if np.dtype(a.dtype) != np.float64:
                    upcast.append("%s (%s)" % (nm, np.dtype(a.dtype)))
                a = np.array(to_numpy(a), dtype=np.float64)
                checked.append((key, nm, a))
            elif _is_cupy(a):              # integer / bool CuPy arrays (ids, lengths, masks) go
                a = to_numpy(a)            # to the host with the float ones: fn runs on the host
            new.append(a)
        work[key] = _rebuild(value, iter(new)) if leaves else value
    for nm, a in params.items():
        if not (isinstance(a, np.ndarray) and a.dtype == np.float64):
            raise TypeError("params[%r] must be a live float64 numpy array for finite differences, "
                            "got %s %s; check a float64 copy of the model (npl.gradcheck.float64_copy "
                            "or gradcheck_cell, which upcasts for you)"
                            % (nm, "cupy" if _is_cupy(a) else type(a).__name__, getattr(a, "dtype", "")))
        checked.append((nm, nm, a))
    if upcast:
        warnings.warn("gradcheck: %s upcast to float64 on a copy (finite differences need float64)"
                      % ", ".join(upcast), GradcheckWarning, stacklevel=2)

    rng = np.random.default_rng(seed)
    outputs, vjp = _call(fn, work)
    out_leaves = _named_leaves(outputs, "outputs")
    w_leaves = [rng.standard_normal(np.shape(a)) if _is_float(a) else None for _, a in out_leaves]

    def loss():
        outs, _ = _call(fn, work)
        leaves = _named_leaves(outs, "outputs")
        if len(leaves) != len(w_leaves):
            raise ValueError("fn returned %d output arrays on a later call but %d on the first"
                             % (len(leaves), len(w_leaves)))
        return float(sum(float(np.sum(to_numpy(a).astype(np.float64) * w))
                         for (_, a), w in zip(leaves, w_leaves) if w is not None))

    cot = _rebuild(outputs, iter(None if w is None else w.astype(np.dtype(a.dtype))
                                 for w, (_, a) in zip(w_leaves, out_leaves)))
    grads = vjp(cot)
    if not isinstance(grads, dict):
        raise TypeError("vjp must return a dict name -> gradient, got %s" % type(grads).__name__)
    analytic = {}
    for key in list(inputs) + list(params):
        names = [nm for k, nm, _ in checked if k == key]
        if not names:
            continue
        if key not in grads or grads[key] is None:
            raise ValueError("vjp returned no gradient for %r; expected gradients for %s, got %s"
                             % (key, sorted({k for k in list(inputs) + list(params)}), sorted(grads)))
        g_leaves = _named_leaves(grads[key], key) if key in inputs else [(key, grads[key])]
        g_by_name = dict(g_leaves)
        for nm in names:
            if nm not in g_by_name:
                raise ValueError("vjp's gradient for %r has no entry %r (structure %s)"
                                 % (key, nm, [n for n, _ in g_leaves]))
            analytic[nm] = np.array(to_numpy(g_by_name[nm]), dtype=np.float64)

    results = []
    for _, nm, a in checked:
        g = analytic[nm]
        if g.shape != a.shape:
            raise ValueError("vjp's gradient for %r has shape %s, expected %s (the array's shape)"
                             % (nm, g.shape, a.shape))
        if max_checks is None or max_checks >= a.size:
            idx = np.arange(a.size)
        else:
            idx = np.sort(rng.choice(a.size, size=int(max_checks), replace=False))
        num = _central_differences(loss, a, idx, eps)
        results.append(_compare(nm, g, num, idx, a.shape, rtol, atol))
    return GradcheckReport(results, rtol, atol, eps, title)


def _call(fn, work):
    res = fn(work)
    if not isinstance(res, tuple) or len(res) != 2 or not callable(res[1]):
        raise TypeError("fn must return (outputs, vjp) with vjp callable as vjp(d_outputs) -> dict; "
                        "got %s" % (type(res).__name__,))
    return res


def _central_differences(loss, a, idx, eps):
    """(L(a + eps e_k) - L(a - eps e_k)) / 2 eps for the flat entries ``idx`` of ``a`` (in place)."""
    flat = a.reshape(-1)
    if not np.shares_memory(flat, a):
        raise ValueError("cannot perturb a non-contiguous array in place; pass a contiguous one")
    out = np.empty(len(idx), np.float64)
    for n, k in enumerate(idx):
        old = flat[k]
        flat[k] = old + eps
        fp = loss()
        flat[k] = old - eps
        fm = loss()
        flat[k] = old
        out[n] = (fp - fm) / (2 * eps)
    return out


# ------------------------------------------------------------------------------------ cells
def _leaf_cells(cell):
    """The cells that own parameters, through stacks and wrappers (``DropoutWrapper``)."""
    return cell._leaves()


def _fix_dropout_masks(cell, x, sequence_length, time_major):
    """Make every dropout cell (DropoutWrapper, or a cell with dropout of its own) of the float64
    copy ``cell`` replay one set of float64 masks, so that the finite-difference forwards differ
    only by the perturbation: masks already set for replay are converted, the others are drawn by
    one forward on ``x``."""
    from .layers import dropout_cells
    from .rnn_ops import dynamic_rnn

    def float64(m):                   # a mask, a list of them (one per layer) or a dict of them
        if m is None:
            return None
        if isinstance(m, dict):
            return {k: float64(v) for k, v in m.items()}
        if isinstance(m, list):
            return [float64(a) for a in m]
        return np.array(to_numpy(m), np.float64)

    wrappers = [c for c in dropout_cells(cell) if c.training]
    if not wrappers:
        return
    for w in wrappers:
        if w.replay:
            w.masks = float64(w.masks)
    if not all(w.replay for w in wrappers):
        dynamic_rnn(cell, x, sequence_length=sequence_length, time_major=time_major, dtype=np.float64)
        for w in wrappers:
            w.replay = True


def float64_copy(cell):
    """A deep copy of ``cell`` with float64 NumPy parameters (and zero gradients).

    The original is not touched.  Activations are shared, not copied.  Works for every cell,
    including subclasses of :class:`npl.cells.RNNCell` written by the user.
    """
    from . import activations as _act
    memo = {id(a): a for a in _act._BY_NAME.values()}
    clone = copy.deepcopy(cell, memo)
    for c in _leaf_cells(clone):
        c._dtype = np.dtype(np.float64)
        c._device = "numpy"        # an unbuilt copy builds on the host too (finite differences)
        if c.built:
            c._params = {k: np.array(to_numpy(v), dtype=np.float64) for k, v in c._params.items()}
            c._grads = {k: np.zeros_like(v) for k, v in c._params.items()}
            c._on_build()
    return clone


def gradcheck_cell(cell, x, state=None, sequence_length=None, time_major=False, eps=1e-5, rtol=1e-5,
                   atol=1e-5, seed=0, max_checks=None):
    """Gradient-check a cell through :func:`npl.nn.dynamic_rnn` and its trace's backward.

    cell:   any npl cell (also MultiRNNCell, DropoutWrapper, ResidualWrapper (a custom
            ``residual_fn`` pair included), DeviceWrapper and your own RNNCell subclasses).  A
            float64 copy is checked (:func:`float64_copy`); ``cell`` itself, its parameters and
            gradients are left as they were.  An unbuilt cell's copy is built from ``x`` with the
            cell's initialiser.  A DropoutWrapper (or a cell with dropout of its own, such as
            LayerNormBasicLSTMCell) in training mode is checked with one fixed set of masks: its
            own when it is set to ``replay``, else masks drawn once for the check.
    x:      [batch, time, depth] (or [time, batch, depth] with ``time_major``).
    state:  initial state structured as ``cell.state_size``; None draws a random one (seeded by
            ``seed``) so the state's gradient is checked at a non-trivial point.
    sequence_length: optional int [batch]; the masking is part of what is checked.

    The loss is ``L = <w_out, outputs> + <w_state, final_state>`` with random ``w``.  Checked arrays:
    ``inputs``, every array of ``initial_state`` (``initial_state.c``, ``initial_state.h``, ...)
    and every parameter under its TF name.  Returns a :class:`GradcheckReport`.
    """
    from .rnn_ops import dynamic_rnn
    from .cells import RNNCell
    if not isinstance(cell, RNNCell):
        raise TypeError("cell must be an npl RNN cell (a subclass of npl.cells.RNNCell), got %s"
                        % type(cell).__name__)
    if not _is_float(x) and not isinstance(x, (list, tuple)):
        raise TypeError("x must be a float array [batch, time, depth], got %s" % type(x).__name__)
    xa = np.asarray(to_numpy(x))
    if xa.ndim != 3:
        raise ValueError("x must have rank 3 ([batch, time, depth]), got shape %s" % (xa.shape,))
    c64 = float64_copy(cell)
    upcast = [] if xa.dtype == np.float64 else ["x (%s)" % xa.dtype]
    upcast += ["the cell's parameters (%s)" % c.dtype for c in _leaf_cells(cell)
               if c.built and c.dtype != np.float64][:1]
    if state is not None:
        upcast += ["state (%s)" % np.dtype(a.dtype) for _, a in _named_leaves(state, "s")
                   if np.dtype(a.dtype) != np.float64][:1]
    if upcast:
        warnings.warn("gradcheck_cell: %s upcast to float64 on a copy (finite differences need "
                      "float64; the cell passed in is not modified)" % ", ".join(upcast),
                      GradcheckWarning, stacklevel=2)
    x64 = xa.astype(np.float64)
    B = x64.shape[1] if time_major else x64.shape[0]
    if not c64.built:
        x_tm = x64 if time_major else x64.transpose(1, 0, 2)
        c64._maybe_build(x_tm, "x")
    _fix_dropout_masks(c64, x64, sequence_length, time_major)
    rng = np.random.default_rng(seed + 7919)
    if state is None:
        zero = c64.zero_state(B, np.float64)
        state64 = _rebuild(zero, iter(0.5 * rng.standard_normal(np.shape(a))
                                      for _, a in _named_leaves(zero, "s")))
    else:
        state64 = _rebuild(state, iter(np.array(to_numpy(a), dtype=np.float64)
                                       for _, a in _named_leaves(state, "s")))

    def fn(inp):
        out, final, tr = dynamic_rnn(c64, inp["inputs"], sequence_length=sequence_length,
                                     initial_state=inp["initial_state"], time_major=time_major,
                                     return_trace=True)

        def vjp(d):
            c64.zero_grad()
            dx, ds = tr.backward(d[0], d[1])
            grads = {k: v.copy() for k, v in c64.grads.items()}
            grads.update(inputs=dx, initial_state=ds)
            return grads
        return (out, final), vjp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradcheckWarning)
        return gradcheck(fn, {"inputs": x64, "initial_state": state64}, c64.params, eps=eps,
                         rtol=rtol, atol=atol, seed=seed, max_checks=max_checks,
                         title="gradcheck_cell(%s)" % type(cell).__name__)


# ``npl.gradcheck(...)`` calls :func:`gradcheck` while ``npl.gradcheck.gradcheck_cell`` etc. stay
# reachable: the module is made callable (a documented Python feature, module __class__ assignment).
class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return gradcheck(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
