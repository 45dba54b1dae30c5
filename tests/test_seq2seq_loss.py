"""npl.seq2seq.sequence_loss (``tf.contrib.seq2seq.sequence_loss``, the PTB tutorial's loss).

* Every valid flag combination (9 of the 16) against two references written here, not npl's code:
  the documented math in float64 NumPy, and (where TensorFlow is installed) TF's function
  transcribed onto live TF ops in graph mode (TF 2 no longer ships ``tf.contrib``), values and
  gradients, float32 and float64.
* The gradient against float64 central differences, with a random cotangent for vector/matrix
  outputs and zero-weight rows and columns (div_no_nan).
* Output shapes (scalar / [B] / [T] / [B, T]), dtypes, zero weights, the custom
  ``softmax_loss_function`` protocol, the errors.
* The port: the PTB cost ``reduce_sum(loss)`` (and the older ``reduce_sum(loss) / batch_size``)
  computed with npl equals TF's documented formula; the legacy function ported line for line does
  not (a factor B/T).
"""
import doctest
import inspect
import itertools
import textwrap

import numpy as np
import pytest

import npl
from npl import seq2seq as S
from npl import losses as L
from helpers import numeric_grads, rel_err, assert_close, run_on_cupy_stand_in

F32, F64 = np.float32, np.float64

#: (average_across_timesteps, average_across_batch, sum_over_timesteps, sum_over_batch) -> output
#: shape, "B"/"T" standing for the batch / time sizes: TF's table, written out by hand.
COMBOS = {
    (True, True, False, False): (),          # the default: sum(e) / sum(w)
    (False, False, True, True): (),          # sum(e) / count_nonzero(w)
    (True, False, False, False): ("B",),
    (False, True, False, False): ("T",),     # the PTB tutorial's
    (False, False, True, False): ("B",),
    (False, False, False, True): ("T",),
    (True, False, False, True): ("B",),      # TF reduces the averaged axis only (sum_over_batch
    (False, True, True, False): ("T",),      # ... / sum_over_timesteps ignored)
    (False, False, False, False): ("B", "T"),
}
EXCLUSIVE = [f for f in itertools.product([True, False], repeat=4) if (f[0] and f[2]) or (f[1] and f[3])]
FLAG_NAMES = ("average_across_timesteps", "average_across_batch", "sum_over_timesteps", "sum_over_batch")
WORST = {}


def _kw(flags):
    return dict(zip(FLAG_NAMES, flags))


def _shape(flags, B, T):
    return tuple({"B": B, "T": T}[a] for a in COMBOS[flags])


def _data(rng, B=3, T=4, V=6, dtype=F64):
    z = (rng.standard_normal((B, T, V)) * 2).astype(dtype)
    t = rng.integers(0, V, (B, T))
    w = rng.random((B, T)).astype(dtype)
    w[1, :] = 0                                        # a zero row: [B] outputs divide by 0
    w[:, 2] = 0                                        # a zero column: [T] outputs divide by 0
    w[0, 0] = 0
    return z, t, w


def _crossent_ref(z, t):
    """logsumexp(z[b, t]) - z[b, t, target], one entry at a time in float64."""
    z = np.asarray(z, F64)
    B, T, _ = z.shape
    ce = np.empty((B, T))
    for b in range(B):
        for k in range(T):
            row = z[b, k]
            m = row.max()
            ce[b, k] = m + np.log(np.exp(row - m).sum()) - row[t[b, k]]
    return ce


def _reference(z, t, w, flags, crossent=None, epsilon=None):
    """tf.contrib.seq2seq.sequence_loss from its documented math, float64.  ``epsilon``: the older
    TF 1.x form, ``/ (denominator + 1e-12)`` instead of div_no_nan (average flags only)."""
    avg_t, avg_b, sum_t, sum_b = flags
    w = np.asarray(w, F64)
    e = (_crossent_ref(z, t) if crossent is None else crossent) * w

    def div(n, d):
        d = np.asarray(d, F64)
        if epsilon is not None:
            return n / (d + epsilon)
        return np.where(d != 0, n / np.where(d != 0, d, 1), 0.0)
    if avg_t and avg_b:
        return float(div(e.sum(), w.sum()))
    if sum_t and sum_b:
        return float(div(e.sum(), np.count_nonzero(w)))
    if avg_t or avg_b:
        ax = 0 if avg_b else 1
        return div(e.sum(ax), w.sum(ax))
    if sum_t or sum_b:
        ax = 0 if sum_b else 1
        return div(e.sum(ax), np.count_nonzero(w, axis=ax))
    return e


def _note(key, err):
    WORST[key] = max(WORST.get(key, 0.0), err)


# ----------------------------------------------------------------------------- signature
def test_signature_is_tensorflows():
    params = list(inspect.signature(S.sequence_loss).parameters.values())
    names = ["logits", "targets", "weights", *FLAG_NAMES, "softmax_loss_function", "name"]
    assert [p.name for p in params[:9]] == names
    assert [p.default for p in params[3:9]] == [True, True, False, False, None, None]
    assert params[9].name == "d_loss" and params[9].kind is inspect.Parameter.KEYWORD_ONLY
    assert npl.seq2seq is S and "seq2seq" in npl.__all__ and S.__all__ == ["sequence_loss"]


def test_docstrings_point_at_each_other():
    assert "tf.contrib.seq2seq.sequence_loss" in S.sequence_loss.__doc__
    assert "npl.losses.sequence_loss" in S.sequence_loss.__doc__
    for f in (L.sequence_loss, L.sequence_loss_by_example):
        assert "tf.contrib.legacy_seq2seq" in f.__doc__ and "npl.seq2seq.sequence_loss" in f.__doc__
    assert "npl.seq2seq.sequence_loss" in L.__doc__


def test_docstring_example():
    res = doctest.testmod(S, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


# ----------------------------------------------------------------------------- values and shapes
@pytest.mark.parametrize("flags", list(COMBOS))
@pytest.mark.parametrize("dtype", [F64, F32])
def test_every_combination_against_the_formula(rng, flags, dtype):
    B, T = 3, 4
    z, t, w = _data(rng, B, T, dtype=dtype)
    loss, d = S.sequence_loss(z, t, w, **_kw(flags))
    ref = _reference(z, t, w, flags)
    assert np.shape(loss) == _shape(flags, B, T)
    if COMBOS[flags] == ():
        assert type(loss) is float                     # as npl.losses.sequence_loss
    else:
        assert isinstance(loss, np.ndarray) and loss.dtype == dtype
    assert d.shape == z.shape and d.dtype == dtype and d.flags.c_contiguous
    e = rel_err(loss, ref)
    _note("formula %s" % np.dtype(dtype), e)
    tol = 1e-14 if dtype == F64 else 1e-6
    assert e < tol, e
    if (flags[0] or flags[1]) and not (flags[2] or flags[3]):
        # the averages of the older TF 1.x function ("/ (denominator + 1e-12)" for div_no_nan):
        # the same numbers to 1e-12 (0 where the denominator is 0: the numerator is 0 there too)
        assert_close(loss, _reference(z, t, w, flags, epsilon=1e-12), tol + 1e-11, "vs + 1e-12")


@pytest.mark.parametrize("flags", list(COMBOS))
def test_gradient_against_central_differences(rng, flags):
    B, T, V = 3, 4, 5
    z, t, w = _data(rng, B, T, V)
    shape = _shape(flags, B, T)
    g = rng.standard_normal(shape) if shape else 0.7
    loss, d = S.sequence_loss(z, t, w, **_kw(flags), d_loss=g)

    def f():
        return float(np.sum(g * np.asarray(S.sequence_loss(z, t, w, **_kw(flags))[0])))
    num = numeric_grads(f, [z])[0]
    e = rel_err(d, num)
    _note("gradient vs central differences (float64)", e)
    assert e < 1e-7, e
    # zero weights: their entries get no gradient
    assert np.all(d[w == 0] == 0)
    # the default cotangent is ones: the gradient of loss (scalar) or of loss.sum()
    _, d1 = S.sequence_loss(z, t, w, **_kw(flags))
    _, dg1 = S.sequence_loss(z, t, w, **_kw(flags), d_loss=np.ones(shape) if shape else 1.0)
    assert np.array_equal(d1, dg1)


@pytest.mark.parametrize("flags", list(COMBOS))
def test_float32_agrees_with_float64(rng, flags):
    z, t, w = _data(rng)
    l64, d64 = S.sequence_loss(z, t, w, **_kw(flags))
    l32, d32 = S.sequence_loss(z.astype(F32), t, w.astype(F32), **_kw(flags))
    assert d32.dtype == F32
    e = max(rel_err(l32, l64), rel_err(d32, d64))
    _note("float32 vs float64", e)
    assert e < 2e-6, e


def test_zero_weights():
    rng = np.random.default_rng(7)
    B, T, V = 2, 3, 4
    z = rng.standard_normal((B, T, V))
    t = rng.integers(0, V, (B, T))
    zero = np.zeros((B, T))
    for flags in COMBOS:
        loss, d = S.sequence_loss(z, t, zero, **_kw(flags))
        assert np.all(np.asarray(loss) == 0) and np.all(d == 0), flags
    # one weighted target per row: averages and "sum_over" means are that target's crossent
    w = np.zeros((B, T))
    w[0, 1], w[1, 2] = 3.0, 0.5
    ce = _crossent_ref(z, t)
    lb, _ = S.sequence_loss(z, t, w, average_across_batch=False)                      # [B]
    assert_close(lb, [ce[0, 1], ce[1, 2]], 1e-14, "[B] average")
    ls, _ = S.sequence_loss(z, t, w, False, False, True, False)                      # [B], by counts
    assert_close(ls, [3.0 * ce[0, 1], 0.5 * ce[1, 2]], 1e-14, "[B] sum_over_timesteps")
    lt, dt = S.sequence_loss(z, t, w, average_across_timesteps=False)                # [T]
    assert_close(lt, [0.0, ce[0, 1], ce[1, 2]], 1e-14, "[T] average")
    assert np.all(dt[:, 0] == 0)
    l0, _ = S.sequence_loss(z, t, w, False, False, True, True)                       # scalar, by count
    assert abs(l0 - (3.0 * ce[0, 1] + 0.5 * ce[1, 2]) / 2) < 1e-14
    # weights of both signs summing to 0 (an average's denominator 0, its numerator not): 0 and
    # a zero gradient, as div_no_nan gives, not a division by zero
    ws = np.array([[0.5, -0.5, 0.0], [1.0, 2.0, 0.0]])
    lb, db = S.sequence_loss(z, t, ws, average_across_batch=False)
    assert lb[0] == 0 and abs(lb[1] - (ce[1, 0] + 2 * ce[1, 1]) / 3) < 1e-14 and np.all(db[0] == 0)
    ws[1] = [-1.0, 0.25, 0.75]
    l, d = S.sequence_loss(z, t, ws)
    assert l == 0 and np.all(d == 0)
    # integer and boolean weights are cast, as TF's callers do with tf.sequence_mask
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    for wm in (mask, mask.astype(bool), mask.tolist()):
        l, _ = S.sequence_loss(z, t, wm)
        assert abs(l - ce[mask == 1].mean()) < 1e-14


def test_inputs_not_modified_and_views_accepted(rng):
    z, t, w = _data(rng)
    z0, t0, w0 = z.copy(), t.copy(), w.copy()
    zt = np.ascontiguousarray(z.transpose(1, 0, 2)).transpose(1, 0, 2)   # a non-contiguous view
    l1, d1 = S.sequence_loss(z, t, w, average_across_timesteps=False)
    l2, d2 = S.sequence_loss(zt, t.tolist(), w, average_across_timesteps=False)
    assert np.array_equal(l1, l2) and np.array_equal(d1, d2)
    assert np.array_equal(z, z0) and np.array_equal(t, t0) and np.array_equal(w, w0)


# ----------------------------------------------------------------------------- TensorFlow
def _tf_sequence_loss(tf, logits, targets, weights, avg_t, avg_b, sum_t, sum_b):
    """tf.contrib.seq2seq.sequence_loss (the TF 1.x version with the sum_over_* flags; TF 2 ships
    no contrib), transcribed onto live tf ops: sparse softmax cross entropy of the flattened
    logits times the flattened weights, then divide_no_nan by the weights' sum or nonzero count."""
    V = tf.shape(logits)[2]
    crossent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.reshape(targets, [-1]),
                                                              logits=tf.reshape(logits, [-1, V]))
    crossent *= tf.reshape(weights, [-1])
    if avg_t and avg_b:
        return tf.math.divide_no_nan(tf.reduce_sum(crossent), tf.reduce_sum(weights))
    if sum_t and sum_b:
        count = tf.cast(tf.math.count_nonzero(weights), crossent.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(crossent), count)
    crossent = tf.reshape(crossent, tf.shape(logits)[0:2])
    if avg_t or avg_b:
        ax = [0] if avg_b else [1]
        return tf.math.divide_no_nan(tf.reduce_sum(crossent, axis=ax), tf.reduce_sum(weights, axis=ax))
    if sum_t or sum_b:
        ax = [0] if sum_b else [1]
        count = tf.cast(tf.math.count_nonzero(weights, axis=ax), crossent.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(crossent, axis=ax), count)
    return crossent


def test_against_tensorflow():
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    rng = np.random.default_rng(11)
    B, T, V = 3, 4, 6
    cases, fetch = {}, {}
    g = tf.Graph()
    with g.as_default():
        for dtype in (F32, F64, "signed"):
            z, t, w = _data(rng, B, T, V, F64 if dtype == "signed" else dtype)
            if dtype == "signed":                      # weights of both signs, a row and a column
                w[0] = [0.5, -0.5, 0.0, 0.0]           # summing to 0 (div_no_nan's 0, not x / 0)
                w[2, 1] = 0.5                          # column 1: -0.5, 0, 0.5
            zt = tf.constant(z)
            for flags in COMBOS:
                shape = _shape(flags, B, T)
                cot = rng.standard_normal(shape).astype(z.dtype) if shape else z.dtype.type(1.3)
                loss = _tf_sequence_loss(tf, zt, tf.constant(t), tf.constant(w), *flags)
                grad = tf.gradients(loss, [zt], grad_ys=[tf.constant(cot)])[0]
                cases[dtype, flags] = (z, t, w, cot)
                fetch[dtype, flags] = (loss, grad)
        with v1.Session(graph=g) as s:
            got = s.run(fetch)
    for (dtype, flags), (tl, tg) in got.items():
        z, t, w, cot = cases[dtype, flags]
        nl, nd = S.sequence_loss(z, t, w, **_kw(flags), d_loss=cot if np.ndim(cot) else float(cot))
        assert np.shape(nl) == np.shape(tl), flags
        e = max(rel_err(nl, tl), rel_err(nd, tg))
        _note("vs TensorFlow %s" % (dtype if dtype == "signed" else np.dtype(dtype)), e)
        assert e < (2e-6 if dtype == F32 else 1e-13), "%s %s: relative error %.3g" % (dtype, flags, e)


# ----------------------------------------------------------------------------- the PTB port
def test_ptb_port():
    """ptb_word_lm.py: loss = tf.contrib.seq2seq.sequence_loss(logits, targets, tf.ones([B, T]),
    average_across_timesteps=False, average_across_batch=True); cost = tf.reduce_sum(loss).
    Its older form: loss = legacy_seq2seq.sequence_loss_by_example([logits [B*T, V]], [targets],
    [ones]); cost = tf.reduce_sum(loss) / batch_size.  Both are sum(crossent) / B."""
    rng = np.random.default_rng(3)
    B, T, V = 4, 5, 7                                   # B != T: the legacy port's factor shows
    logits = rng.standard_normal((B, T, V)) * 2
    targets = rng.integers(0, V, (B, T))
    ones = np.ones((B, T))
    documented = _crossent_ref(logits, targets).sum() / B      # TF's formula, by hand

    loss, d = S.sequence_loss(logits, targets, ones, average_across_timesteps=False,
                              average_across_batch=True)
    assert loss.shape == (T,)
    cost = float(np.sum(loss))
    assert abs(cost - documented) < 1e-12 * documented
    num = numeric_grads(lambda: float(np.sum(S.sequence_loss(
        logits, targets, ones, average_across_timesteps=False, average_across_batch=True)[0])), [logits])[0]
    assert_close(d, num, 1e-7, "PTB cost gradient vs central differences")

    # reduce_sum(loss) / batch from the unreduced [B, T] form
    lbt, dbt = S.sequence_loss(logits, targets, ones, average_across_timesteps=False,
                               average_across_batch=False, d_loss=np.full((B, T), 1.0 / B))
    assert abs(float(np.sum(lbt)) / B - documented) < 1e-12 * documented
    assert_close(dbt, d, 1e-15, "[B, T] form")

    # the older tutorial, on npl's legacy function (one [B*T, V] step): the same cost
    per, dl = L.sequence_loss_by_example([logits.reshape(-1, V)], [targets.reshape(-1)],
                                         [np.ones(B * T)], d_loss=np.full(B * T, 1.0 / B))
    assert abs(float(np.sum(per)) / B - documented) < 1e-11 * documented
    assert_close(dl[0].reshape(B, T, V), d, 1e-11, "legacy port")

    # the trap: the current tutorial ported onto the legacy function (its arrays are time-major
    # by default, and it averages per example) gives sum(crossent) / T
    wrong, _ = L.sequence_loss(logits, targets, ones, average_across_timesteps=False,
                               average_across_batch=True)
    assert abs(wrong - documented * B / T) < 1e-12 * documented and abs(wrong - documented) > 0.1


# ----------------------------------------------------------------------------- softmax_loss_function
def _smoothed_xent(eps):
    """A label-smoothed cross entropy per row, with its gradient: npl's protocol."""
    def fn(labels, logits):
        N, V = logits.shape
        y = np.full(logits.shape, eps / V, logits.dtype)
        y[np.arange(N), labels] += logits.dtype.type(1 - eps)
        m = logits.max(1, keepdims=True)
        lse = m + np.log(np.exp(logits - m).sum(1, keepdims=True))
        return -(y * (logits - lse)).sum(1), np.exp(logits - lse) - y
    return fn


@pytest.mark.parametrize("flags", [(True, True, False, False), (False, True, False, False),
                                   (False, False, True, False), (False, False, False, False)])
def test_custom_softmax_loss_function(rng, flags):
    B, T, V = 3, 4, 5
    z, t, w = _data(rng, B, T, V)
    seen = {}

    def plain(labels, logits):                         # TF's default, through the protocol
        seen.update(labels=labels.copy(), logits=logits.copy())
        m = logits.max(1, keepdims=True)
        lse = m + np.log(np.exp(logits - m).sum(1, keepdims=True))
        p = np.exp(logits - lse)
        onehot = np.eye(logits.shape[1])[labels]
        return (lse[:, 0] - logits[np.arange(len(labels)), labels]), p - onehot
    ld, dd = S.sequence_loss(z, t, w, **_kw(flags))
    lp, dp = S.sequence_loss(z, t, w, **_kw(flags), softmax_loss_function=plain)
    assert_close(lp, ld, 1e-14, "custom = default")
    assert_close(dp, dd, 1e-14, "custom = default (gradient)")
    # called as TF calls it: keywords, targets [B*T], logits [B*T, V] in batch-major order
    assert np.array_equal(seen["labels"], t.reshape(-1))
    assert np.array_equal(seen["logits"], z.reshape(-1, V))

    fn = _smoothed_xent(0.2)
    shape = _shape(flags, B, T)
    g = rng.standard_normal(shape) if shape else 1.0
    loss, d = S.sequence_loss(z, t, w, **_kw(flags), softmax_loss_function=fn, d_loss=g)
    ce = fn(t.reshape(-1), z.reshape(-1, V))[0].reshape(B, T)
    assert_close(loss, _reference(z, t, w, flags, crossent=ce), 1e-14, "smoothed vs formula")
    num = numeric_grads(lambda: float(np.sum(g * np.asarray(S.sequence_loss(
        z, t, w, **_kw(flags), softmax_loss_function=fn)[0]))), [z])[0]
    e = rel_err(d, num)
    _note("custom loss gradient vs central differences", e)
    assert e < 1e-7, e


def test_custom_softmax_loss_function_errors(rng):
    z, t, w = _data(rng)
    N, V = z.shape[0] * z.shape[1], z.shape[2]
    good = _smoothed_xent(0.0)
    cases = [
        (lambda labels, logits: good(labels=labels, logits=logits)[0], TypeError, "must return a pair"),
        (lambda labels, logits: (1.0, np.zeros((N, V))), ValueError, r"losses must have shape \(12,\)"),
        (lambda labels, logits: (np.zeros(N), np.zeros((N, V - 1))), ValueError, r"d_logits must have shape"),
        (lambda labels, logits: (np.zeros(N, F32), np.zeros((N, V), F32)), TypeError, "dtype float32"),
        (lambda labels, logits: (np.full(N, np.nan), np.zeros((N, V))), ValueError, "losses must be finite"),
        ("xent", TypeError, "softmax_loss_function must be None or a callable"),
    ]
    for fn, exc, match in cases:
        with pytest.raises(exc, match=match):
            S.sequence_loss(z, t, w, softmax_loss_function=fn)
    with pytest.raises(TypeError, match="labels"):             # TF calls it with keywords
        S.sequence_loss(z, t, w, softmax_loss_function=lambda a, b: good(a, b))


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("flags", EXCLUSIVE)
def test_exclusive_flags(rng, flags):
    z, t, w = _data(rng)
    which = "timesteps" if flags[0] and flags[2] else "batch"
    with pytest.raises(ValueError, match="average_across_%s and sum_over_%s cannot both be True"
                       % (which, which)):
        S.sequence_loss(z, t, w, **_kw(flags))


def test_shape_and_type_errors(rng):
    B, T, V = 3, 4, 6
    z, t, w = _data(rng, B, T, V)
    seq = S.sequence_loss
    w_inf, z_nan = w.copy(), z.copy()
    w_inf[0, 1], z_nan[2, 3, 1] = np.inf, np.nan
    bad = [
        (lambda: seq(z[0], t, w), ValueError, r"logits must be a \[batch_size, sequence_length, "
         r"num_classes\] array \(rank 3\), got shape \(4, 6\)"),
        (lambda: seq(z[None], t, w), ValueError, r"rank 3\), got shape \(1, 3, 4, 6\)"),
        (lambda: seq(list(z.transpose(1, 0, 2)), t, w), TypeError, "legacy_seq2seq"),
        (lambda: seq(z.astype(np.float16), t, w), TypeError, "logits must be float32 or float64"),
        (lambda: seq(z[:, :, :0], t, w), ValueError, "at least one class"),
        (lambda: seq(z, t[0], w), ValueError, r"targets must be a \[batch_size, sequence_length\] "
         r"array \(rank 2\), got shape \(4,\)"),
        (lambda: seq(z, t[..., None], w), ValueError, r"targets .* \(rank 2\), got shape \(3, 4, 1\)"),
        (lambda: seq(z, t.T, w), ValueError, r"targets must have shape \[batch_size, sequence_length\] "
         r"= \(3, 4\) .*got \(4, 3\)"),
        (lambda: seq(z, t.astype(F64), w), TypeError, "targets must be an integer array"),
        (lambda: seq(z, t + V, w), ValueError, r"targets must be in \[0, 6\)"),
        (lambda: seq(z, t, w[0]), ValueError, r"weights must be a \[batch_size, sequence_length\] "
         r"array \(rank 2\), got shape \(4,\)"),
        (lambda: seq(z, t, 1.0), ValueError, r"weights .* \(rank 2\), got shape \(\)"),
        (lambda: seq(z, t, w[:, :1]), ValueError, r"weights must have shape .* = \(3, 4\) .*got \(3, 1\)"),
        (lambda: seq(z, t, w.T), ValueError, r"weights must have shape .*got \(4, 3\)"),
        (lambda: seq(z, t, w.astype(complex)), TypeError, "weights must be float32 or float64"),
        (lambda: seq(z, t, w_inf), ValueError, "weights must be finite"),
        (lambda: seq(z_nan, t, w), ValueError, "logits must be finite"),
        (lambda: seq(z, t, w, d_loss=np.ones(2)), ValueError, r"d_loss must have the loss's shape \(\)"),
        (lambda: seq(z, t, w, False, True, d_loss=np.ones(B)), ValueError,
         r"d_loss must have the loss's shape \(4,\) .*got \(3,\)"),
        (lambda: seq(z, t, w, False, False, d_loss=np.ones(T)), ValueError, r"shape \(3, 4\)"),
        (lambda: seq(z, t, w, d_loss=float("nan")), ValueError, "d_loss must be finite"),
        (lambda: seq(z, t, w, name=3), TypeError, "name must be None or a string"),
    ]
    for k, (f, exc, match) in enumerate(bad):
        with pytest.raises(exc, match=match):
            f()
    assert seq(z, t, w, name="sequence_loss")[0] == seq(z, t, w)[0]


# ----------------------------------------------------------------------------- CuPy stand-in
def test_on_the_cupy_stand_in():
    """All on the device: the NumPy numbers; a target, weight or cotangent on the other device: a
    TypeError naming it (tests/fake_cupy refuses implicit copies as CuPy does)."""
    code = textwrap.dedent("""
        import numpy as np, cupy, npl
        assert getattr(cupy, "fake", False)
        seq = npl.seq2seq.sequence_loss
        rng = np.random.default_rng(0)
        z = rng.standard_normal((3, 4, 5)); t = rng.integers(0, 5, (3, 4)); w = rng.random((3, 4))
        w[1] = 0; w[:, 2] = 0
        dev = lambda a: npl.to_device(a, "cupy")
        combos = %r
        for flags in combos:
            ln, dn = seq(z, t, w, *flags)
            g = np.ones(np.shape(ln)) * 0.5 if np.ndim(ln) else 0.5
            lc, dc = seq(dev(z), dev(t), dev(w), *flags, d_loss=dev(g) if np.ndim(ln) else 0.5)
            assert type(dc) is cupy.ndarray and (type(lc) is float) == (np.ndim(ln) == 0)
            assert np.allclose(npl.to_numpy(lc) if np.ndim(ln) else lc, ln, rtol=1e-12, atol=0)
            assert np.allclose(npl.to_numpy(dc), dn * 0.5, rtol=1e-12, atol=1e-15)
        def refuses(name, **kw):
            args = dict(logits=dev(z), targets=dev(t), weights=dev(w)); args.update(kw)
            try:
                seq(**args)
            except TypeError as e:
                assert name in str(e) and "numpy" in str(e) and "cupy" in str(e), e
            else:
                raise AssertionError(name)
        refuses("targets", targets=t); refuses("weights", weights=w)
        refuses("d_loss", average_across_batch=False, d_loss=np.ones(3))
        refuses("targets", logits=z, weights=w, targets=dev(t))
        refuses("softmax_loss_function's losses", softmax_loss_function=lambda labels, logits: (
            np.zeros(12), cupy.zeros((12, 5))))
        print("ok")
    """) % (list(COMBOS),)
    assert run_on_cupy_stand_in(code, timeout=120).strip() == "ok"


def test_zz_report_worst_errors():
    """Prints the worst errors measured above (run with -s to see them)."""
    for k, v in sorted(WORST.items()):
        print("seq2seq.sequence_loss worst relative error, %s: %.2e" % (k, v))


def test_a_custom_loss_function_cannot_modify_the_callers_arrays():
    """The labels and logits a softmax_loss_function receives are read-only views on NumPy."""
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((2, 3, 4))
    targets = rng.integers(0, 4, (2, 3))
    keep = logits.copy()

    def clobber(labels, logits):
        logits[...] = 0.0
        return np.zeros(labels.shape), np.zeros(logits.shape)

    with pytest.raises(ValueError, match="read-only"):
        S.sequence_loss(logits, targets, np.ones((2, 3)), softmax_loss_function=clobber)
    np.testing.assert_array_equal(logits, keep)
