"""``npl.seq2seq``: ``tf.contrib.seq2seq``'s loss, named as in TensorFlow (``tf.contrib.X`` ->
``npl.X``, as ``tf.contrib.rnn`` -> ``npl.rnn``).

:func:`sequence_loss` is ``tf.contrib.seq2seq.sequence_loss`` (the later TF 1.x version, with the
``sum_over_*`` flags, which ``tensorflow_addons`` kept as ``tfa.seq2seq.sequence_loss``): one
batch-major array of logits ``[batch, time, classes]`` and a weighted average *per target* (by
the total weight), the loss TensorFlow's PTB tutorial (``ptb_word_lm.py``) uses.  It is a different
function from ``tf.contrib.legacy_seq2seq.sequence_loss`` (:func:`npl.losses.sequence_loss`:
lists of ``[batch, classes]``, or arrays that default to time-major ``[time, batch, classes]``,
averaged *per example*): ported onto that one, the PTB cost comes out scaled by batch/time.

The PTB tutorial's cost, ported line for line (``cost = tf.reduce_sum(loss)``)::

    >>> import numpy as np, npl
    >>> B, T, V = 2, 3, 4
    >>> logits = np.zeros((B, T, V))                  # uniform predictions: log(V) per target
    >>> targets = np.zeros((B, T), np.int64)
    >>> loss, d_logits = npl.seq2seq.sequence_loss(
    ...     logits, targets, np.ones((B, T)),
    ...     average_across_timesteps=False, average_across_batch=True)
    >>> loss.shape, d_logits.shape                     # one value per step; d_logits like logits
    ((3,), (2, 3, 4))
    >>> cost = loss.sum()                              # = T * log(V), d_logits its gradient
    >>> bool(np.isclose(cost, T * np.log(V)))
    True
"""
import numpy as np

from .backend import get_array_module
from ._checks import as_array, float_array, check_on_device, check_dtype, is_real
from .losses import _check_finite, _int_labels, _on, _sparse_xent, _weights

__all__ = ["sequence_loss"]


def sequence_loss(logits, targets, weights, average_across_timesteps=True, average_across_batch=True,
                  sum_over_timesteps=False, sum_over_batch=False, softmax_loss_function=None,
                  name=None, *, d_loss=None):
    """``tf.contrib.seq2seq.sequence_loss``: returns ``(loss, d_logits)``.

    Not ``tf.contrib.legacy_seq2seq.sequence_loss`` (that is :func:`npl.losses.sequence_loss`,
    whose arrays default to time-major and which averages per example).

    logits: ``[batch_size, sequence_length, num_classes]`` float32/float64 (batch-major, one array;
    a list of per-step logits is the legacy form and is refused); targets:
    ``[batch_size, sequence_length]`` int, each in ``[0, num_classes)``; weights:
    ``[batch_size, sequence_length]`` (exactly: TensorFlow does not broadcast them), cast to the
    logits' dtype.  With ``crossent[b, t] = logsumexp(logits[b, t]) - logits[b, t, targets[b, t]]``
    and ``e = weights * crossent``:

    =============================================  ==========  ===================================
    flags set (others False)                       shape       loss
    =============================================  ==========  ===================================
    ``average_across_timesteps``, ``_batch``       scalar      ``sum(e) / sum(w)`` (the default)
    ``sum_over_timesteps``, ``sum_over_batch``     scalar      ``sum(e) / count_nonzero(w)``
    ``average_across_timesteps``                   ``[B]``     ``sum_t e / sum_t w``
    ``average_across_batch``                       ``[T]``     ``sum_b e / sum_b w`` (PTB)
    ``sum_over_timesteps``                         ``[B]``     ``sum_t e / count_nonzero_t(w)``
    ``sum_over_batch``                             ``[T]``     ``sum_b e / count_nonzero_b(w)``
    none                                           ``[B, T]``  ``e``
    =============================================  ==========  ===================================

    Every division is TF's ``div_no_nan``: a zero denominator (an all-zero weight row, or weights
    of both signs summing to 0) gives 0 and a zero gradient.  (TensorFlow before the
    ``sum_over_*`` flags added ``1e-12`` to the denominators instead: a relative difference of
    ``1e-12 / denominator``.)  ``average_across_timesteps``
    with ``sum_over_timesteps``, or ``average_across_batch`` with ``sum_over_batch``, is a
    ValueError, as in TF.  An ``average_*`` flag with the *other* axis's ``sum_over_*`` flag
    reduces the averaged axis only, as TF does (``average_across_timesteps=True,
    sum_over_batch=True`` gives ``[B]``, ``sum_over_batch`` is ignored).

    Returns ``(loss, d_logits)``, the convention of :func:`npl.losses.sequence_loss` and
    :func:`npl.losses.sequence_loss_by_example`: a scalar loss is a Python float, a vector or
    matrix loss an array in the logits' dtype; ``d_logits`` (``[B, T, V]``, the logits' dtype) is
    the gradient of ``sum(d_loss * loss)``, with the keyword-only ``d_loss`` (npl's addition: the
    cotangent, of the loss's shape or a number) defaulting to ones, so the default is the gradient
    of ``loss`` itself, or of ``loss.sum()`` for a vector (the PTB tutorial's
    ``cost = tf.reduce_sum(loss)``).

    softmax_loss_function: None (sparse softmax cross entropy), or a custom per-target loss with
    its gradient, called with keywords as in TF: ``softmax_loss_function(labels=[N] int,
    logits=[N, V])`` (``N = B * T``, rows in batch-major order; read-only views on NumPy) must
    return ``(losses, d_logits)``: ``losses`` ``[N]``, one unreduced loss per row, and
    ``d_logits`` ``[N, V]`` with ``d_logits[n] = d losses[n] / d logits[n]``; both arrays in the
    logits' dtype and on their device, finite.  Each row's loss must depend on its own row of
    logits only.  (A TF function returning the losses alone, or one with parameters of its own such
    as ``tf.nn.sampled_softmax_loss``, has no npl counterpart.)

    name: accepted for TF's signature (None or a string) and unused.
    """
    avg_t, avg_b = bool(average_across_timesteps), bool(average_across_batch)
    sum_t, sum_b = bool(sum_over_timesteps), bool(sum_over_batch)
    if name is not None and not isinstance(name, str):
        raise TypeError("name must be None or a string (it is unused: there is no graph), got %r"
                        % (name,))
    if isinstance(logits, (list, tuple)):
        raise TypeError("logits must be one [batch_size, sequence_length, num_classes] array, got a "
                        "%s of %d items (the list form is tf.contrib.legacy_seq2seq's: use "
                        "npl.losses.sequence_loss, or stack the steps on axis 1)"
                        % (type(logits).__name__, len(logits)))
    z = float_array(logits, "logits")
    if z.ndim != 3:
        raise ValueError("logits must be a [batch_size, sequence_length, num_classes] array (rank 3), "
                         "got shape %s" % (tuple(z.shape),))
    xp = get_array_module(z)
    B, T, V = z.shape
    if V == 0:
        raise ValueError("logits must have at least one class, got shape %s" % (tuple(z.shape),))
    tg = _on(targets, "targets", xp, "the logits")
    wa = as_array(weights, "weights", xp)
    for nm, a in (("targets", tg), ("weights", wa)):
        if a.ndim != 2:
            raise ValueError("%s must be a [batch_size, sequence_length] array (rank 2), got shape %s"
                             % (nm, tuple(a.shape)))
        if tuple(a.shape) != (B, T):
            raise ValueError("%s must have shape [batch_size, sequence_length] = %s (the logits' first "
                             "two axes; batch-major, as TF), got %s" % (nm, (B, T), tuple(a.shape)))
    if avg_t and sum_t:
        raise ValueError("average_across_timesteps and sum_over_timesteps cannot both be True")
    if avg_b and sum_b:
        raise ValueError("average_across_batch and sum_over_batch cannot both be True")
    tg = _int_labels(tg, V, (B, T), xp, "targets")
    w = _weights(wa, (B, T), z.dtype, xp)
    _check_finite(z, "logits")

    if softmax_loss_function is None:
        crossent, d = _sparse_xent(z, tg)                # [B, T], [B, T, V] (a new array)
    else:
        crossent, d = _custom_crossent(softmax_loss_function, z, tg)
    e = crossent * w

    if (avg_t and avg_b) or (sum_t and sum_b):          # scalar
        den = float(w.sum()) if avg_t else float(xp.count_nonzero(w))
        g = _cotangent(d_loss, (), z.dtype, xp)
        if den == 0:
            loss, c = 0.0, 0.0
        else:
            loss, c = float(e.sum()) / den, g / den
        d *= (w * z.dtype.type(c))[:, :, None]
        return loss, d
    if avg_t or avg_b or sum_t or sum_b:                # one axis: [T] (axis 0) or [B] (axis 1)
        if avg_t or avg_b:                              # an average: by the weights' sum
            axis = 0 if avg_b else 1                     # (a sum_over_* flag of the other axis
            den = w.sum(axis=axis)                       # is ignored, as in TF)
        else:                                            # a sum: by the count of nonzero weights
            axis = 0 if sum_b else 1
            den = xp.count_nonzero(w, axis=axis).astype(z.dtype)
        nz = den != 0
        safe = xp.where(nz, den, xp.ones_like(den))
        loss = e.sum(axis=axis) / safe
        loss[~nz] = 0
        inv = 1 / safe
        inv[~nz] = 0
        g = _cotangent(d_loss, loss.shape, z.dtype, xp)
        c = inv if g is None else g * inv
        d *= (w * xp.expand_dims(c, axis))[:, :, None]
        return loss, d
    loss = e                                             # [B, T]
    g = _cotangent(d_loss, loss.shape, z.dtype, xp)
    d *= (w if g is None else w * g)[:, :, None]
    return loss, d


def _cotangent(d_loss, shape, dtype, xp):
    """The cotangent ``d_loss`` of a loss of ``shape``: a float for a scalar loss (1.0 for None);
    for an array loss None (ones) or an array of ``shape`` in ``dtype`` on the device of ``xp``."""
    if d_loss is None:
        return 1.0 if shape == () else None
    if is_real(d_loss):
        if not np.isfinite(float(d_loss)):
            raise ValueError("d_loss must be finite, got %r" % (d_loss,))
        return float(d_loss) if shape == () else xp.full(shape, d_loss, dtype)
    g = float_array(d_loss, "d_loss")
    if tuple(g.shape) != tuple(shape):
        raise ValueError("d_loss must have the loss's shape %s (or be a number), got %s"
                         % (tuple(shape), tuple(g.shape)))
    check_on_device(g, "d_loss", xp, "the logits")
    _check_finite(g, "d_loss")
    if shape == ():
        return float(g)
    return g.astype(dtype, copy=False)


def _custom_crossent(fn, z, tg):
    """Per-target losses ``[B, T]`` and their gradients ``[B, T, V]`` (a new array) from a custom
    ``softmax_loss_function(labels=[N], logits=[N, V]) -> (losses [N], d_logits [N, V])``."""
    if not callable(fn):
        raise TypeError("softmax_loss_function must be None or a callable (labels=, logits=) -> "
                        "(losses, d_logits), got %r" % (fn,))
    xp = get_array_module(z)
    B, T, V = z.shape
    N = B * T
    labels, logits = tg.reshape(-1), z.reshape(N, V)
    if isinstance(logits, np.ndarray):              # the caller's arrays: read-only to fn
        labels, logits = labels.view(), logits.view()
        labels.flags.writeable = logits.flags.writeable = False
    out = fn(labels=labels, logits=logits)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError("softmax_loss_function must return a pair (losses [N], d_logits [N, V]): npl "
                        "has no autograd, so the function returns its gradient too; got %s"
                        % (type(out).__name__ if not isinstance(out, tuple) else "a tuple of %d" % len(out)))
    res = []
    for what, a, shape in (("losses", out[0], (N,)), ("d_logits", out[1], (N, V))):
        label = "softmax_loss_function's %s" % what
        a = as_array(a, label)
        check_on_device(a, label, xp, "the logits")
        if tuple(a.shape) != shape:
            raise ValueError("%s must have shape %s (%s), got %s"
                             % (label, shape, "one unreduced loss per row of logits [N, V], N = batch"
                                " * time" if what == "losses" else "the rows' gradients, the shape "
                                "of the logits it was given", tuple(a.shape)))
        check_dtype(a, z.dtype, label)
        _check_finite(a, label)
        res.append(a)
    return res[0].reshape(B, T), res[1].reshape(B, T, V).copy()
