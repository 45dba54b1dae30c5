"""Losses with TensorFlow 1 semantics, each returning ``(loss, d_predictions)``.

Every function computes the loss *and* its gradient with respect to the logits / predictions in one
pass (there is no autograd in npl), so a training step reads::

    logits, trace = model.forward(x)
    loss, d_logits = npl.losses.sparse_softmax_cross_entropy(labels, logits)
    trace.backward(d_logits)

Functions (argument order as in TensorFlow: labels first):

* :func:`softmax_cross_entropy` (``tf.losses.softmax_cross_entropy``), one-hot / soft labels;
* :func:`sparse_softmax_cross_entropy` (``tf.losses.sparse_softmax_cross_entropy``), integer labels;
* :func:`mean_squared_error` (``tf.losses.mean_squared_error``);
* :func:`sequence_loss_by_example` and :func:`sequence_loss`
  (``tf.contrib.legacy_seq2seq``), weighted per-step cross entropy over a sequence, averaged per
  example.  ``tf.contrib.seq2seq.sequence_loss`` (batch-major ``[B, T, V]``, averaged per target:
  the PTB tutorial's) is a different function: :func:`npl.seq2seq.sequence_loss`.

The ``tf.losses`` functions take ``weights`` (a scalar or an array broadcastable to the per-example
losses) and a ``reduction`` (:class:`Reduction`; default ``SUM_BY_NONZERO_WEIGHTS``, TF's default,
which is the plain mean when ``weights`` is 1).  The cross entropies use the log-sum-exp shift
``z - max(z)`` so large logits do not overflow.  Computations stay in the dtype of the logits /
predictions (TensorFlow 1 rounds the weighted reduction through float32; npl keeps float64 as
float64).  Bad input raises ValueError / TypeError naming the argument: labels out of range, shape
mismatches, NaN or infinite logits.  Labels, targets and weights must be on the device of the
logits / predictions: Python lists and scalars are put there, a NumPy array for CuPy logits (or
the reverse) is a TypeError naming both devices (never a silent copy).
"""
import numbers

import numpy as np

from .backend import get_array_module
from ._checks import as_array, float_array, check_on_device, check_same_device

__all__ = ["Reduction", "softmax_cross_entropy", "sparse_softmax_cross_entropy",
           "mean_squared_error", "sequence_loss_by_example", "sequence_loss", "get"]


class Reduction:
    """How a weighted loss is reduced to a scalar (the string values of ``tf.losses.Reduction``).

    With per-example losses ``l`` and weights ``w`` broadcast to ``l``'s shape:

    * ``SUM``: ``sum(w * l)``
    * ``MEAN``: ``sum(w * l) / sum(w)``
    * ``SUM_OVER_BATCH_SIZE``: ``sum(w * l) / l.size``
    * ``SUM_BY_NONZERO_WEIGHTS`` (default): ``sum(w * l) / count_nonzero(w)``

    A zero denominator gives a loss of 0 and a zero gradient (TF's ``div_no_nan``).
    """
    SUM = "weighted_sum"
    MEAN = "weighted_mean"
    SUM_OVER_BATCH_SIZE = "weighted_sum_over_batch_size"
    SUM_BY_NONZERO_WEIGHTS = "weighted_sum_by_nonzero_weights"
    SUM_OVER_NONZERO_WEIGHTS = SUM_BY_NONZERO_WEIGHTS

    @classmethod
    def all(cls):
        return (cls.SUM, cls.MEAN, cls.SUM_OVER_BATCH_SIZE, cls.SUM_BY_NONZERO_WEIGHTS)


# ----------------------------------------------------------------------------- shared pieces
def _check_finite(a, name):
    xp = get_array_module(a)
    if a.size and not bool(xp.isfinite(a).all()):
        h = _host(a)
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(h))[0])
        raise ValueError("%s must be finite, got %s at index %s" % (name, h[bad], bad))


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _log_softmax(z):
    """``(log_softmax(z), softmax(z))`` over the last axis, with the max shift for stability.

        log p = z - m - log(sum(exp(z - m))),   m = max(z)
    """
    xp = get_array_module(z)
    shifted = z - z.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    s = e.sum(axis=-1, keepdims=True)
    logp = shifted - xp.log(s)
    return logp, e / s


def _on(x, name, xp, what):
    """``x`` as an array on the device of ``xp`` (lists and scalars are converted there; an array
    on the other device is a TypeError naming ``name`` and both devices)."""
    a = as_array(x, name, xp)
    check_on_device(a, name, xp, what)
    return a


def _int_labels(labels, num_classes, shape, xp, name="labels"):
    lab = _on(labels, name, xp, "the logits")
    if lab.dtype.kind not in "iu":
        raise TypeError("%s must be an integer array of class ids, got dtype %s" % (name, lab.dtype))
    if tuple(lab.shape) != tuple(shape):
        raise ValueError("%s must have shape %s (the logits' shape without the class axis), got %s"
                         % (name, tuple(shape), tuple(lab.shape)))
    if lab.size:
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError("%s must be in [0, %d) (the number of classes), got min %d max %d"
                             % (name, num_classes, lo, hi))
    return lab


def _weights(weights, loss_shape, dtype, xp, what="the logits"):
    """Weights as an array broadcast to ``loss_shape`` (TF: a scalar, or the losses' rank with each
    dimension 1 or equal), on the device of ``xp``: a list is put there, an array of rank >= 1 on
    the other device is a TypeError (a 0-d array is a scalar)."""
    if isinstance(weights, numbers.Number) and not isinstance(weights, bool):
        return xp.full(loss_shape, weights, dtype)
    if isinstance(weights, (list, tuple)):
        weights = xp.asarray(np.asarray(weights, dtype))
    w = as_array(weights, "weights", xp)
    if w.dtype.kind in "iub":                       # TF casts integer / bool weights to the losses'
        w = w.astype(dtype)                         # float type
    w = float_array(w, "weights")
    if w.ndim == 0:
        return xp.full(loss_shape, float(w), dtype)
    check_on_device(w, "weights", xp, what)
    ok = w.ndim == len(loss_shape) and all(a in (1, b) for a, b in zip(w.shape, loss_shape))
    if not ok:
        raise ValueError("weights must be a scalar or broadcastable to the losses' shape %s (same "
                         "rank, each dimension 1 or equal), got shape %s"
                         % (tuple(loss_shape), tuple(w.shape)))
    _check_finite(w, "weights")
    return xp.broadcast_to(xp.asarray(w, dtype), loss_shape)


def _reduce(losses, weights, reduction):
    """Reduce per-example ``losses`` with ``weights`` (already broadcast) as TF does.

    Returns ``(loss, coeff)`` with ``coeff = d loss / d losses`` (same shape as ``losses``).
    """
    xp = get_array_module(losses)
    if reduction not in Reduction.all():
        raise ValueError("reduction must be one of %s, got %r (Reduction.NONE is not offered: use "
                         "sequence_loss_by_example for per-example values)" % (Reduction.all(), reduction))
    total = float((losses * weights).sum())
    if reduction == Reduction.SUM:
        den = 1.0
    elif reduction == Reduction.MEAN:
        den = float(weights.sum())
    elif reduction == Reduction.SUM_OVER_BATCH_SIZE:
        den = float(losses.size)
    else:
        den = float(xp.count_nonzero(weights))
    if den == 0:
        return 0.0, xp.zeros_like(losses)
    return total / den, weights / losses.dtype.type(den)


# ----------------------------------------------------------------------------- tf.losses
def softmax_cross_entropy(onehot_labels, logits, weights=1.0, label_smoothing=0.0,
                          reduction=Reduction.SUM_BY_NONZERO_WEIGHTS):
    """``tf.losses.softmax_cross_entropy``: returns ``(loss, d_logits)``.

    onehot_labels: [..., C] float (one-hot or any distribution), the shape of ``logits`` [..., C].
    Per example ``l = -sum_c y_c * log_softmax(z)_c`` with, when ``label_smoothing > 0``,
    ``y = y * (1 - label_smoothing) + label_smoothing / C``; then reduced with ``weights`` and
    ``reduction``.  Gradient per example: ``dl/dz = softmax(z) * sum(y) - y`` -- exact for any
    labels; TensorFlow's kernel returns ``softmax(z) - y``, which agrees when each row of labels
    sums to 1 (one-hot or a distribution) and is not the gradient otherwise.
    """
    z = float_array(logits, "logits")
    xp = get_array_module(z)
    if z.ndim < 1:
        raise ValueError("logits must have a class axis, got a scalar")
    y = _on(onehot_labels, "onehot_labels", xp, "the logits")
    if y.dtype.kind not in "fiub":
        raise TypeError("onehot_labels must be numeric, got dtype %s" % y.dtype)
    if tuple(y.shape) != tuple(z.shape):
        raise ValueError("onehot_labels must have the shape of logits %s, got %s"
                         % (tuple(z.shape), tuple(y.shape)))
    if not np.isscalar(label_smoothing) or not 0 <= label_smoothing <= 1:
        raise ValueError("label_smoothing must be a number in [0, 1], got %r" % (label_smoothing,))
    _check_finite(z, "logits")
    y = y.astype(z.dtype, copy=False)
    _check_finite(y, "onehot_labels")
    if label_smoothing > 0:
        C = z.shape[-1]
        y = y * z.dtype.type(1 - label_smoothing) + z.dtype.type(label_smoothing / C)
    logp, p = _log_softmax(z)
    losses = -(y * logp).sum(axis=-1)                                # [...]
    w = _weights(weights, losses.shape, z.dtype, xp)
    loss, coeff = _reduce(losses, w, reduction)
    d = (p * y.sum(axis=-1, keepdims=True) - y) * coeff[..., None]  # [..., C]
    return loss, d


def sparse_softmax_cross_entropy(labels, logits, weights=1.0,
                                 reduction=Reduction.SUM_BY_NONZERO_WEIGHTS):
    """``tf.losses.sparse_softmax_cross_entropy``: returns ``(loss, d_logits)``.

    labels: integer class ids of shape ``logits.shape[:-1]`` (or with a trailing 1, squeezed as
    in TF1), each in [0, C); ``weights`` likewise may carry a trailing 1.
    Per example ``l = logsumexp(z) - z[label]``; gradient ``softmax(z) - onehot(label)``, scaled by
    the reduction's coefficient.
    """
    z = float_array(logits, "logits")
    xp = get_array_module(z)
    if z.ndim < 1:
        raise ValueError("logits must have a class axis, got a scalar")
    # TF1 (_remove_squeezable_dimensions): labels with a trailing 1 in place of the class axis,
    # and weights one rank above the labels with a trailing 1, are squeezed
    lab_shape = np.shape(labels)
    if len(lab_shape) == z.ndim and lab_shape[-1:] == (1,):
        labels = as_array(labels, "labels", xp)[..., 0]
    w_shape = np.shape(weights)
    if len(w_shape) == z.ndim and w_shape[-1:] == (1,):
        weights = as_array(weights, "weights", xp)[..., 0]
    lab = _int_labels(labels, z.shape[-1], z.shape[:-1], xp)
    _check_finite(z, "logits")
    losses, d = _sparse_xent(z, lab)
    w = _weights(weights, losses.shape, z.dtype, xp)
    loss, coeff = _reduce(losses, w, reduction)
    d *= coeff[..., None]
    return loss, d


def _sparse_xent(z, lab):
    """Per-example ``logsumexp(z) - z[label]`` and its gradient ``softmax(z) - onehot`` (new array)."""
    xp = get_array_module(z)
    logp, p = _log_softmax(z)
    lab_e = lab[..., None].astype(np.int64)
    losses = -xp.take_along_axis(logp, lab_e, axis=-1)[..., 0]
    d = xp.ascontiguousarray(p)                       # softmax(z), a new C-ordered array (z may be a
    flat = d.reshape(-1, d.shape[-1])                 # transposed view), so this reshape is a view
    flat[xp.arange(flat.shape[0]), lab_e.reshape(-1)] -= 1
    return losses, d


def mean_squared_error(labels, predictions, weights=1.0, reduction=Reduction.SUM_BY_NONZERO_WEIGHTS):
    """``tf.losses.mean_squared_error``: returns ``(loss, d_predictions)``.

    Per element ``l = (predictions - labels)^2`` (same shapes), reduced with ``weights`` and
    ``reduction`` (the plain mean over all elements by default); gradient
    ``2 * (predictions - labels) * coeff``.
    """
    p = float_array(predictions, "predictions")
    xp = get_array_module(p)
    y = _on(labels, "labels", xp, "the predictions")
    if y.dtype.kind not in "fiu":
        raise TypeError("labels must be numeric, got dtype %s" % y.dtype)
    if tuple(y.shape) != tuple(p.shape):
        raise ValueError("labels must have the shape of predictions %s, got %s"
                         % (tuple(p.shape), tuple(y.shape)))
    _check_finite(p, "predictions")
    y = y.astype(p.dtype, copy=False)
    _check_finite(y, "labels")
    diff = p - y
    losses = diff * diff
    w = _weights(weights, losses.shape, p.dtype, xp, "the predictions")
    loss, coeff = _reduce(losses, w, reduction)
    return loss, 2 * diff * coeff


# ----------------------------------------------------------------------------- legacy_seq2seq
def _seq_inputs(logits, targets, weights, time_major):
    """Normalise sequence-loss inputs to time-major arrays ``z [T, B, V]``, ``t [T, B]``, ``w [T, B]``.

    Returns ``(z, t, w, as_list, time_major)``; ``as_list`` says the logits came as a list.
    """
    as_list = isinstance(logits, (list, tuple))
    if as_list:
        if not logits:
            raise ValueError("logits must be a non-empty list of [batch, num_classes] arrays")
        n = len(logits)
        for nm, seq in (("targets", targets), ("weights", weights)):
            if not isinstance(seq, (list, tuple)):
                raise TypeError("%s must be a list like logits (a list of %d arrays), got %s"
                                % (nm, n, type(seq).__name__))
        if len(targets) != n or len(weights) != n:
            raise ValueError("Lengths of logits, weights, and targets must be the same: %d, %d, %d"
                             % (n, len(weights), len(targets)))
        zs = [float_array(a, "logits[%d]" % t, ndim=2) for t, a in enumerate(logits)]
        for t, a in enumerate(zs[1:], 1):
            check_same_device(a, "logits[%d]" % t, [zs[0]], "logits[0]", plural=False)
            if a.shape != zs[0].shape or a.dtype != zs[0].dtype:
                raise ValueError("logits[%d] has shape %s dtype %s but logits[0] has %s %s"
                                 % (t, a.shape, a.dtype, zs[0].shape, zs[0].dtype))
        xp = get_array_module(*zs)
        z = xp.stack(zs)
        tg = xp.stack([_on(a, "targets[%d]" % k, xp, "the logits").reshape(-1)
                       for k, a in enumerate(targets)])
        wt = xp.stack([_on(a, "weights[%d]" % k, xp, "the logits").reshape(-1)
                       for k, a in enumerate(weights)])
    else:
        z = float_array(logits, "logits", ndim=3)
        xp = get_array_module(z)
        tg, wt = _on(targets, "targets", xp, "the logits"), _on(weights, "weights", xp, "the logits")
        layout = "[time, batch]" if time_major else "[batch, time]"
        for nm, a in (("targets", tg), ("weights", wt)):
            if tuple(a.shape) != tuple(z.shape[:2]):
                raise ValueError("%s must have shape %s = %s (the logits' first two axes), got %s"
                                 % (nm, layout, tuple(z.shape[:2]), tuple(a.shape)))
        if not time_major:
            z, tg, wt = z.transpose(1, 0, 2), tg.T, wt.T
    T, B, V = z.shape
    tg = _int_labels(tg, V, (T, B), xp, "targets")
    if wt.dtype.kind not in "fiub":
        raise TypeError("weights must be numeric, got dtype %s" % wt.dtype)
    if tuple(wt.shape) != (T, B):
        raise ValueError("weights must hold one value per target: shape %s, got %s"
                         % ((T, B), tuple(wt.shape)))
    wt = wt.astype(z.dtype, copy=False)
    _check_finite(z, "logits")
    _check_finite(wt, "weights")
    return z, tg, wt, as_list


def _seq_output(d, as_list, time_major):
    if as_list:
        return [d[t] for t in range(d.shape[0])]
    if time_major:
        return d
    return get_array_module(d).ascontiguousarray(d.transpose(1, 0, 2))


def _by_example(z, tg, wt, average_across_timesteps):
    """Per-example log-perplexities ``[B]`` and ``d log_perps[b] / d z[t, b]`` (unscaled by any
    cotangent), time-major.

        crossent[t, b] = logsumexp(z[t, b]) - z[t, b, target]
        log_perps[b]   = sum_t crossent[t, b] * w[t, b]  (/ (sum_t w[t, b] + 1e-12))
    """
    crossent, d = _sparse_xent(z, tg)                 # [T, B], [T, B, V]
    log_perps = (crossent * wt).sum(axis=0)           # [B]
    scale = wt
    if average_across_timesteps:
        total = wt.sum(axis=0) + z.dtype.type(1e-12)  # TF: add_n(weights) + 1e-12
        log_perps = log_perps / total
        scale = wt / total
    d *= scale[:, :, None]
    return log_perps, d


def sequence_loss_by_example(logits, targets, weights, average_across_timesteps=True,
                             softmax_loss_function=None, d_loss=None, time_major=True):
    """``tf.contrib.legacy_seq2seq.sequence_loss_by_example``: returns ``(log_perps, d_logits)``.

    (Not ``tf.contrib.seq2seq.sequence_loss``, which is :func:`npl.seq2seq.sequence_loss`.)

    logits: a list of T arrays [B, V] (as in TF) or one array [T, B, V] (``[B, T, V]`` with
    ``time_major=False``); targets: a list of T int arrays [B] or [T, B]; weights: likewise, float.

        log_perps[b] = sum_t w[t, b] * crossent(z[t, b], target[t, b])
        if average_across_timesteps:  log_perps[b] /= (sum_t w[t, b] + 1e-12)

    ``log_perps`` has shape [B].  ``d_logits`` (same form as ``logits``) is the gradient of
    ``sum_b d_loss[b] * log_perps[b]``; ``d_loss`` defaults to ones (the gradient of the sum).
    Only TF's default ``softmax_loss_function`` (sparse softmax cross entropy) is offered.
    """
    if softmax_loss_function is not None:
        raise ValueError("softmax_loss_function: only the default (sparse softmax cross entropy) is "
                         "supported, since npl needs the loss's gradient; got %r" % (softmax_loss_function,))
    z, tg, wt, as_list = _seq_inputs(logits, targets, weights, time_major)
    log_perps, d = _by_example(z, tg, wt, average_across_timesteps)
    if d_loss is not None:
        xp = get_array_module(z)
        g = float_array(d_loss, "d_loss", ndim=1) if not np.isscalar(d_loss) else \
            xp.full((z.shape[1],), d_loss, z.dtype)
        if g.shape != (z.shape[1],):
            raise ValueError("d_loss must have shape [batch] = (%d,), got %s" % (z.shape[1], tuple(g.shape)))
        check_on_device(g, "d_loss", xp, "the logits")
        d *= g.astype(z.dtype, copy=False)[None, :, None]
    return log_perps, _seq_output(d, as_list, time_major)


def sequence_loss(logits, targets, weights, average_across_timesteps=True, average_across_batch=True,
                  softmax_loss_function=None, time_major=True):
    """``tf.contrib.legacy_seq2seq.sequence_loss``: returns ``(loss, d_logits)``.

        loss = sum_b log_perps[b]            (sequence_loss_by_example)
        if average_across_batch:  loss /= B

    Inputs as in :func:`sequence_loss_by_example`; ``d_logits`` has the form of ``logits``; the
    loss is a Python float.

    This is *not* ``tf.contrib.seq2seq.sequence_loss`` (TensorFlow's PTB tutorial's loss): that
    one takes one batch-major ``[B, T, V]`` array, averages per target (by the weights' sum over
    the averaged axes) where this one averages per example (each row by its own weights' sum, then
    by B), and can return a ``[T]`` or ``[B]`` vector; it is :func:`npl.seq2seq.sequence_loss`.
    A ``[B, T, V]`` array passed here without ``time_major=False`` is read as ``[T, B, V]`` (the
    documented default): the PTB tutorial ported onto this function gets its cost scaled by B/T.
    """
    if softmax_loss_function is not None:
        raise ValueError("softmax_loss_function: only the default (sparse softmax cross entropy) is "
                         "supported, since npl needs the loss's gradient; got %r" % (softmax_loss_function,))
    z, tg, wt, as_list = _seq_inputs(logits, targets, weights, time_major)
    log_perps, d = _by_example(z, tg, wt, average_across_timesteps)
    cost = float(log_perps.sum())
    if average_across_batch:
        B = z.shape[1]
        cost /= B
        d *= z.dtype.type(1.0 / B)
    return cost, _seq_output(d, as_list, time_major)


_BY_NAME = {"softmax_cross_entropy": softmax_cross_entropy,
            "sparse_softmax_cross_entropy": sparse_softmax_cross_entropy,
            "mean_squared_error": mean_squared_error, "mse": mean_squared_error}


def get(loss):
    """Resolve a loss given by name (``"sparse_softmax_cross_entropy"``, ``"mse"``, ...) or a
    callable ``loss(labels, predictions) -> (value, d_predictions)``."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss.lower() in _BY_NAME:
        return _BY_NAME[loss.lower()]
    raise ValueError("loss must be a callable (labels, predictions) -> (loss, d_predictions) or one "
                     "of %s, got %r" % (sorted(_BY_NAME), loss))
