"""Sequence functions with TensorFlow 1 semantics, and their traces (hand-written BPTT).

``dynamic_rnn``, ``static_rnn``, ``bidirectional_dynamic_rnn``, ``static_bidirectional_rnn`` and
``stack_bidirectional_dynamic_rnn`` take ``return_trace=True`` and then also return a trace whose
``backward(d_outputs, d_final_state)`` returns the gradients with respect to the inputs and the
initial state (structures mirror the forward's; either cotangent may be None) and accumulates
parameter gradients into ``cell.grads``.

sequence_length semantics (as TensorFlow): past each row's length the outputs are zero and the
state is carried through unchanged, so the final state is the state after step ``length - 1`` (the
initial state where the length is 0), and no gradient flows through the steps past the length.
Steps past ``max(sequence_length)`` are not computed at all.
"""
import numpy as np

from .array_ops import reverse_sequence, BackwardTwiceError
from .backend import get_array_module
from .cells import RNNCell, LSTMStateTuple, TraceBase, StaleTraceError, flat_records, _describe, _copy as _assign
from ._checks import float_array, check_shape, check_dtype, resolve_dtype, lengths_array, check_on_device
from . import workspace as _ws

__all__ = ["dynamic_rnn", "static_rnn", "bidirectional_dynamic_rnn", "static_bidirectional_rnn",
           "stack_bidirectional_dynamic_rnn", "stack_bidirectional_rnn", "RNNTrace",
           "BidirectionalTrace", "StaticRNNTrace", "StaticBidirectionalTrace",
           "StackBidirectionalTrace", "StaticStackBidirectionalTrace"]


def _ensure_fresh(*traces):
    """Raise BackwardTwiceError if any of ``traces`` was already consumed by a backward."""
    for trace in traces:
        if getattr(trace, "_done", False):
            raise BackwardTwiceError("backward was already called on this %s; its saved arrays are "
                                     "spent. Run the forward again with return_trace=True for a new "
                                     "trace" % type(trace).__name__)
        check_current(trace)


def check_current(trace):
    """Raise StaleTraceError if a cell of ``trace`` had its weights replaced since the forward."""
    for r in getattr(trace, "records", ()):
        owners = [(getattr(r, "cell", None), getattr(r, "version", 0))] + getattr(r, "watched", [])
        for cell, version in owners:
            if cell is not None and version != getattr(cell, "_version", 0):
                raise StaleTraceError(
                    "the weights of %s %r were replaced (set_params, build or to_device) after "
                    "this %s's forward; its saved values belong to the old weights. Run the "
                    "forward again" % (type(cell).__name__, getattr(cell, "name", ""),
                                       type(trace).__name__))


# A forward without a trace runs long sequences this many steps at a time (see _dynamic_rnn).
INFERENCE_CHUNK = 64


def _consume(*traces):
    """Mark ``traces`` as spent (after checking none is).  Call it once the cotangents are
    validated, so that a backward rejected for a bad argument leaves the trace usable."""
    _ensure_fresh(*traces)
    for trace in traces:
        trace._done = True


def _check_pair(value, name, what):
    """``value`` must be a 2-sequence (fw, bw); an LSTMStateTuple is a state, not such a pair."""
    if isinstance(value, LSTMStateTuple) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError("%s must be a pair %s, got %s" % (name, what, _describe(value)))
    return value


def _check_cell(cell, name="cell"):
    if not isinstance(cell, RNNCell):
        raise TypeError("%s must be an npl RNN cell (npl.rnn.BasicLSTMCell, GRUCell, ...), got %s"
                        % (name, type(cell).__name__))


class RNNTrace(TraceBase):
    """What ``dynamic_rnn(..., return_trace=True)`` saved: call :meth:`backward` once.

    Attributes for inspection: ``cell``; ``records`` (one :class:`npl.cells.LayerRecord` per layer,
    bottom first, holding the gates, c and h of every computed step, time-major); ``sequence_length``
    (numpy int array or None); ``time_major``; ``max_time`` (T) and ``steps`` (the steps computed,
    max(sequence_length) or T).
    """

    def __init__(self, cell, rec, lengths, time_major, T, B, dtype, xp, input_width):
        self.cell, self._rec = cell, rec
        self.sequence_length = lengths
        self.time_major = time_major
        self.max_time, self.batch_size = T, B
        self.steps = 0 if rec is None else rec_steps(rec)
        self.dtype, self._xp, self._input_width = dtype, xp, input_width
        self._done = False

    @property
    def records(self):
        return flat_records(self._rec)

    def _to_time_major(self, a):
        return a if self.time_major else a.transpose(1, 0, 2)

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(d_inputs, d_initial_state)``; accumulates into ``cell.grads``.

        d_outputs: same shape as the forward's outputs (or None); d_final_state: same structure as
        the final state (or None).  Bad cotangents raise before anything is consumed.
        """
        _ensure_fresh(self)
        prepared = self._prepare(d_outputs, d_final_state)
        _consume(self)
        return self._run(*prepared)

    def _check_outputs(self, d_outputs, name="d_outputs"):
        """Validate an output cotangent in the forward's layout (shape, dtype, device)."""
        d = float_array(d_outputs, name, ndim=3)
        T, B, P = self.max_time, self.batch_size, self.cell.output_size
        check_shape(d, (T, B, P) if self.time_major else (B, T, P), name)
        check_dtype(d, self.dtype, name)
        check_on_device(d, name, self._xp, "the forward's inputs")
        return d

    def _prepare(self, d_outputs, d_final_state, out_name="d_outputs", state_name="d_final_state"):
        """Validate the cotangents without consuming the trace; returns the internal forms
        (time-major d_outputs of the computed steps, internal state) for :meth:`_run`."""
        dout = dst = None
        if d_outputs is not None:
            d = self._check_outputs(d_outputs, out_name)
            dout = self._xp.ascontiguousarray(self._to_time_major(d)[:self.steps])
        if d_final_state is not None:
            dst = self.cell._to_internal(d_final_state, self.batch_size, self.dtype, self._xp,
                                         state_name)
        return dout, dst

    def _run(self, dout, dst):
        """The backward proper, on cotangents already checked by :meth:`_prepare`."""
        cell, xp, dt = self.cell, self._xp, self.dtype
        T, B, Tl = self.max_time, self.batch_size, self.steps
        shape = (T, B, self._input_width) if self.time_major else (B, T, self._input_width)
        if Tl == 0:
            dx = _ws.zeros(xp, shape, dt)
            d0 = _copy_struct(dst if dst is not None else cell._zeros_internal(B, dt, xp))
        else:
            dx_run, d0 = cell._backward_seq(self._rec, dout, dst)     # [Tl, B, I] view
            # allocated only now: the backward's own workspaces are freed, so the peak is lower
            dx = (_ws.empty if Tl == T else _ws.zeros)(xp, shape, dt)
            _assign(self._to_time_major(dx)[:Tl], dx_run)
        return dx, cell._to_public(d0)


def rec_steps(rec):
    while isinstance(rec, list):
        rec = rec[0]
    return rec.x.shape[0]


def _copy_struct(s):
    if isinstance(s, tuple):
        vals = [_copy_struct(v) for v in s]
        return type(s)(*vals) if hasattr(s, "_fields") else tuple(vals)
    return s.copy()


def dynamic_rnn(cell, inputs, sequence_length=None, initial_state=None, dtype=None,
                parallel_iterations=None, swap_memory=False, time_major=False, scope=None,
                return_trace=False):
    """Run ``cell`` over ``inputs`` (tf.nn.dynamic_rnn).

    inputs: [batch, time, depth] (or [time, batch, depth] with ``time_major``), float32/float64.
    sequence_length: optional int [batch], each in [0, time].
    initial_state: optional, structured as ``cell.state_size``; zeros by default.
    Returns ``(outputs, final_state)`` (plus a :class:`RNNTrace` with ``return_trace``); outputs has
    the layout of the inputs with depth ``cell.output_size``.

    >>> import numpy as np, npl
    >>> cell = npl.rnn.BasicLSTMCell(4, seed=0)
    >>> x = np.ones((2, 3, 5), np.float32)
    >>> out, state = npl.nn.dynamic_rnn(cell, x, sequence_length=[3, 1])
    >>> out.shape, state.h.shape, float(abs(out[1, 1:]).max())
    ((2, 3, 4), (2, 4), 0.0)
    """
    return _dynamic_rnn(cell, inputs, sequence_length, initial_state, dtype, time_major, return_trace)


def _dynamic_rnn(cell, inputs, sequence_length, initial_state, dtype, time_major, return_trace,
                 cell_name="cell", inputs_name="inputs", state_name="initial_state"):
    """:func:`dynamic_rnn` with the argument names its error messages use (so that the
    bidirectional functions can say ``initial_state_bw`` or ``cells_fw[1]``)."""
    _check_cell(cell, cell_name)
    if getattr(cell, "_takes_ids", False):       # EmbeddingWrapper: integer ids, embedded first
        return cell._dynamic_rnn(inputs, sequence_length, initial_state, dtype, time_major,
                                 return_trace, inputs_name, state_name)
    want = resolve_dtype(dtype)
    x = float_array(inputs, inputs_name, ndim=3, dtype=want)    # a Python list takes dtype
    if want is not None and x.dtype != want:
        raise TypeError("%s have dtype %s but dtype=%s was given (no silent casting)"
                        % (inputs_name, x.dtype, want))
    xp = get_array_module(x)
    x_tm = x if time_major else x.transpose(1, 0, 2)
    T, B, I = x_tm.shape
    if I == 0:
        raise ValueError("%s must have at least one feature (the kernel's input rows), got shape %s"
                         % (inputs_name, tuple(x.shape)))
    lengths = lengths_array(sequence_length, B, T, xp)
    if cell.input_size is not None and I != cell.input_size:   # report the caller's layout
        raise ValueError("%s must have feature width %d (the cell was built for it), got shape %s"
                         % (inputs_name, cell.input_size, tuple(x.shape)))
    cell._maybe_build(x_tm, inputs_name)
    if initial_state is None:
        state = cell._zeros_internal(B, x.dtype, xp)
    else:
        state = cell._to_internal(initial_state, B, x.dtype, xp, state_name)
    if lengths is None or B == 0:             # no rows (or no steps): nothing to compute, as TF
        Tl, mask = (T if B else 0), None
    else:
        Tl = int(lengths.max())
        mask = None if bool((lengths == Tl).all()) else \
            xp.asarray(np.arange(Tl)[:, None] < lengths[None, :])[:, :, None]   # [Tl, B, 1]
    P = cell.output_size
    rec = None
    shape = (T, B, P) if time_major else (B, T, P)
    outputs = (_ws.empty if Tl == T else _ws.zeros)(xp, shape, x.dtype)
    out_tm = outputs if time_major else outputs.transpose(1, 0, 2)
    if Tl == 0:
        final = _copy_struct(state)
    elif not return_trace and cell._infers(x_tm[:Tl], mask):
        # no trace: the C loops hold a few steps of gates and states at a time (O(chunk) memory)
        # and write the outputs straight into the result
        final = cell._infer_seq(x_tm[:Tl], state, mask, out_tm[:Tl])
    elif return_trace or Tl <= INFERENCE_CHUNK or not cell._chunkable:
        out_run, final, rec = cell._forward_seq(x_tm[:Tl], state, mask)   # [Tl, B, P] view
        _assign(out_tm[:Tl], out_run)
    else:
        # No trace is kept, so nothing needs the slabs of every step at once: run the sequence in
        # chunks of steps, carrying the state, and the working memory stays O(chunk) instead of
        # O(T) (the outputs themselves are the only O(T) array).
        final = state
        for t0 in range(0, Tl, INFERENCE_CHUNK):
            t1 = min(t0 + INFERENCE_CHUNK, Tl)
            m = None if mask is None else mask[t0:t1]
            out_run, final, _ = cell._forward_seq(x_tm[t0:t1], final, m)
            _assign(out_tm[t0:t1], out_run)
    if mask is not None:
        # zero past each row's length: a select, as TF's, so a non-finite carried state
        # (or a negative one: -0.0) does not show through (NaN * 0 is NaN)
        xp.copyto(out_tm[:Tl], 0, where=~mask)
    final = cell._to_public(final)
    if return_trace:
        return outputs, final, RNNTrace(cell, rec, lengths, time_major, T, B, x.dtype, xp, I)
    return outputs, final


def _step_cotangents(d_outputs, n, shape, dtype, xp):
    """Validate a static trace's per-step output cotangents: ``d_outputs`` is None or a list of
    ``n`` entries, each None or a ``shape`` array of ``dtype`` on ``xp``.  Every entry is checked
    before any is used; returns the ``[(t, array)]`` of the given ones (None for ``d_outputs =
    None``)."""
    if d_outputs is None:
        return None
    if not isinstance(d_outputs, (list, tuple)) or len(d_outputs) != n:
        raise ValueError("d_outputs must be a list of %d arrays (or None entries), one per step, "
                         "got %s" % (n, _describe(d_outputs) if not isinstance(d_outputs, (list, tuple))
                                     else "%d entries" % len(d_outputs)))
    checked = []
    for t, g in enumerate(d_outputs):
        if g is not None:
            nm = "d_outputs[%d]" % t
            g = float_array(g, nm)
            check_shape(g, shape, nm)
            check_dtype(g, dtype, nm)
            check_on_device(g, nm, xp, "the forward's inputs")
            checked.append((t, g))
    return checked


class StaticRNNTrace(TraceBase):
    """Trace of ``static_rnn``: ``backward(d_outputs_list, d_final_state)`` -> (list, state)."""

    def __init__(self, inner, n):
        self.inner, self._n = inner, n
        self._done = False

    @property
    def records(self):
        return self.inner.records

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(list of d_inputs, d_initial_state)``; ``d_outputs`` is a list with one
        [batch, output_size] array (or None) per step.  Bad cotangents raise before anything is
        consumed."""
        _ensure_fresh(self, self.inner)
        inner, d = self.inner, None
        xp, dt = inner._xp, inner.dtype
        shape = (inner.batch_size, inner.cell.output_size)
        checked = _step_cotangents(d_outputs, self._n, shape, dt, xp)
        if checked is not None:
            d = xp.zeros((self._n,) + shape, dt)
            for t, g in checked:
                d[t] = g
        prepared = self.inner._prepare(d, d_final_state)
        _consume(self, self.inner)
        dx, d0 = self.inner._run(*prepared)
        return [dx[t] for t in range(self._n)], d0


def _stack_steps(inputs, empty_error=TypeError, dtype=None, name="inputs"):
    """Validate a list of per-step [batch, depth] arrays (same shape and dtype, one device) and
    stack it time-major: returns ``(list of arrays, [time, batch, depth] array)``.  A non-list is
    a TypeError; an empty list raises ``empty_error``.  A step given as a Python list takes
    ``dtype`` (the function's resolved ``dtype=``).  ``name``: the argument the messages name."""
    if not isinstance(inputs, (list, tuple)) or not inputs:
        exc = empty_error if isinstance(inputs, (list, tuple)) else TypeError
        raise exc("%s must be a non-empty list of [batch, depth] arrays, got %s"
                  % (name, "an empty %s" % type(inputs).__name__ if isinstance(inputs, (list, tuple))
                     else type(inputs).__name__))
    xs = [float_array(a, "%s[%d]" % (name, t), ndim=2, dtype=dtype) for t, a in enumerate(inputs)]
    for t, a in enumerate(xs[1:], 1):
        if a.shape != xs[0].shape:
            raise ValueError("%s[%d] has shape %s but %s[0] has %s"
                             % (name, t, a.shape, name, xs[0].shape))
        if a.dtype != xs[0].dtype:
            raise TypeError("%s[%d] has dtype %s but %s[0] has %s"
                            % (name, t, a.dtype, name, xs[0].dtype))
    xp = get_array_module(*xs)
    return xs, xp.stack(xs)


def static_rnn(cell, inputs, initial_state=None, dtype=None, sequence_length=None, scope=None,
               return_trace=False):
    """tf.nn.static_rnn: ``inputs`` is a list of [batch, depth] arrays, one per step.

    Returns ``(outputs_list, final_state)`` (plus a :class:`StaticRNNTrace`); the same
    sequence_length semantics as :func:`dynamic_rnn`.
    """
    _check_cell(cell)
    if getattr(cell, "_takes_ids", False):       # EmbeddingWrapper: lists of integer ids
        return cell._static_rnn(inputs, initial_state, dtype, sequence_length, return_trace)
    xs, x = _stack_steps(inputs, dtype=resolve_dtype(dtype))
    res = dynamic_rnn(cell, x, sequence_length, initial_state, dtype, time_major=True,
                      return_trace=return_trace)
    outs = [res[0][t] for t in range(len(xs))]
    if return_trace:
        return outs, res[1], StaticRNNTrace(res[2], len(xs))
    return outs, res[1]


def _reverse_time(x, lengths, time_major):
    seq_axis, batch_axis = (0, 1) if time_major else (1, 0)
    if lengths is None:
        xp = get_array_module(x)
        return xp.ascontiguousarray(xp.flip(x, axis=seq_axis))
    return reverse_sequence(x, lengths, seq_axis=seq_axis, batch_axis=batch_axis)


class BidirectionalTrace(TraceBase):
    """Trace of ``bidirectional_dynamic_rnn``: ``backward((d_out_fw, d_out_bw), (d_state_fw,
    d_state_bw))`` -> ``(d_inputs, (d_initial_state_fw, d_initial_state_bw))``.  ``fw`` and ``bw``
    are the two :class:`RNNTrace` (the backward one in reversed time)."""

    def __init__(self, fw, bw, lengths, time_major):
        self.fw, self.bw, self._lengths, self._time_major = fw, bw, lengths, time_major
        self._done = False

    @property
    def records(self):
        return self.fw.records + self.bw.records

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(d_inputs, (d_initial_state_fw, d_initial_state_bw))``.  Either argument, or
        either entry of a pair, may be None.  Bad cotangents raise before anything is consumed."""
        _ensure_fresh(self, self.fw, self.bw)
        prepared = self._prepare(d_outputs, d_final_state)
        _consume(self, self.fw, self.bw)
        return self._run(prepared)

    def _prepare(self, d_outputs, d_final_state, out_names=("d_outputs[0]", "d_outputs[1]"),
                 state_names=("d_final_state[0]", "d_final_state[1]")):
        """Validate both directions' cotangents (nothing consumed); the bw output cotangent is
        reversed into the bw pass's time order."""
        d_fw = d_bw = s_fw = s_bw = None
        if d_outputs is not None:
            d_fw, d_bw = _check_pair(d_outputs, "d_outputs", "(d_output_fw, d_output_bw)")
        if d_final_state is not None:
            s_fw, s_bw = _check_pair(d_final_state, "d_final_state", "(d_state_fw, d_state_bw)")
        if d_bw is not None:
            d_bw = _reverse_time(self.bw._check_outputs(d_bw, out_names[1]), self._lengths,
                                 self._time_major)
        return (self.fw._prepare(d_fw, s_fw, out_names[0], state_names[0]),
                self.bw._prepare(d_bw, s_bw, out_names[1], state_names[1]))

    def _run(self, prepared):
        (dout_fw, dst_fw), (dout_bw, dst_bw) = prepared
        dx_fw, d0_fw = self.fw._run(dout_fw, dst_fw)
        dx_bw, d0_bw = self.bw._run(dout_bw, dst_bw)
        dx_fw += _reverse_time(dx_bw, self._lengths, self._time_major)
        return dx_fw, (d0_fw, d0_bw)


def bidirectional_dynamic_rnn(cell_fw, cell_bw, inputs, sequence_length=None, initial_state_fw=None,
                              initial_state_bw=None, dtype=None, parallel_iterations=None,
                              swap_memory=False, time_major=False, scope=None, return_trace=False):
    """tf.nn.bidirectional_dynamic_rnn: ``((output_fw, output_bw), (state_fw, state_bw))``.

    The backward direction runs over each row's valid prefix reversed (``reverse_sequence``; the
    whole time axis when ``sequence_length`` is None), and its outputs are reversed back into input
    order.  The two directions are two :func:`dynamic_rnn` passes composed with that reversal.
    """
    return _bidirectional(cell_fw, cell_bw, inputs, sequence_length, initial_state_fw,
                          initial_state_bw, dtype, time_major, return_trace)


def _bidirectional(cell_fw, cell_bw, inputs, sequence_length, initial_state_fw, initial_state_bw,
                   dtype, time_major, return_trace, names=("cell_fw", "cell_bw", "inputs",
                                                           "initial_state_fw", "initial_state_bw")):
    """:func:`bidirectional_dynamic_rnn` with the argument names its error messages use."""
    n_cfw, n_cbw, n_in, n_sfw, n_sbw = names
    _check_cell(cell_fw, n_cfw)
    _check_cell(cell_bw, n_cbw)
    x = float_array(inputs, n_in, ndim=3, dtype=resolve_dtype(dtype))   # a Python list takes dtype
    xp = get_array_module(x)
    T, B = (x.shape[0], x.shape[1]) if time_major else (x.shape[1], x.shape[0])
    lengths = lengths_array(sequence_length, B, T, xp)
    fw = _dynamic_rnn(cell_fw, x, lengths, initial_state_fw, dtype, time_major, return_trace,
                      n_cfw, n_in, n_sfw)
    x_rev = _reverse_time(x, lengths, time_major)
    bw = _dynamic_rnn(cell_bw, x_rev, lengths, initial_state_bw, dtype, time_major, return_trace,
                      n_cbw, n_in, n_sbw)
    out_bw = _reverse_time(bw[0], lengths, time_major)
    res = ((fw[0], out_bw), (fw[1], bw[1]))
    if return_trace:        # without one, neither direction keeps its slabs
        return res + (BidirectionalTrace(fw[2], bw[2], lengths, time_major),)
    return res


class StaticBidirectionalTrace(TraceBase):
    """Trace of ``static_bidirectional_rnn``: ``backward(d_outputs, (d_state_fw, d_state_bw))`` ->
    ``(d_inputs, (d_initial_state_fw, d_initial_state_bw))``.

    ``d_outputs`` is a list with one [batch, fw_size + bw_size] array (or None) per step, or None;
    ``d_inputs`` is a list with one [batch, depth] array per step.  ``inner`` is the
    :class:`BidirectionalTrace` of the time-major pass; ``fw`` / ``bw`` its two :class:`RNNTrace`.
    """

    def __init__(self, inner, n, fw_size, bw_size):
        self.inner, self._n = inner, n
        self._fw_size, self._bw_size = fw_size, bw_size
        self._done = False

    @property
    def records(self):
        return self.inner.records

    @property
    def fw(self):
        return self.inner.fw

    @property
    def bw(self):
        return self.inner.bw

    def _traces(self):
        return (self, self.inner, self.inner.fw, self.inner.bw)

    def _split_outputs(self, d_outputs):
        """Validate the per-step cotangents (every entry before any is used) and split them into
        the time-major (d_out_fw, d_out_bw) pair; None where every entry is None."""
        n, fw = self._n, self.inner.fw
        xp, dt, B = fw._xp, fw.dtype, fw.batch_size
        wf, wb = self._fw_size, self._bw_size
        checked = _step_cotangents(d_outputs, n, (B, wf + wb), dt, xp)
        if not checked:
            return None
        d_fw, d_bw = xp.zeros((n, B, wf), dt), xp.zeros((n, B, wb), dt)
        for t, g in checked:
            d_fw[t] = g[:, :wf]
            d_bw[t] = g[:, wf:]
        return d_fw, d_bw

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(list of d_inputs, (d_initial_state_fw, d_initial_state_bw))``; accumulates
        into both cells' ``grads``.  ``d_final_state`` is the pair ``(d_state_fw, d_state_bw)``
        (either entry may be None).  Bad cotangents raise before anything is consumed."""
        _ensure_fresh(*self._traces())
        pair = self._split_outputs(d_outputs)
        prepared = self.inner._prepare(pair, d_final_state)
        _consume(*self._traces())
        dx, d0 = self.inner._run(prepared)
        return [dx[t] for t in range(self._n)], d0


def static_bidirectional_rnn(cell_fw, cell_bw, inputs, initial_state_fw=None,
                             initial_state_bw=None, dtype=None, sequence_length=None, scope=None,
                             return_trace=False):
    """tf.nn.static_bidirectional_rnn: a forward and a backward RNN over a list of steps, their
    outputs concatenated on the feature axis.

    With ``x = inputs`` (T arrays ``[batch, depth]``), ``RNN_fw`` / ``RNN_bw`` the
    :func:`static_rnn` of ``cell_fw`` / ``cell_bw`` (from ``initial_state_fw`` / ``_bw``, zeros by
    default) and ``R`` the reversal of each row's valid prefix, its first ``sequence_length[b]``
    steps (``reverse_sequence``; the whole list when ``sequence_length`` is None)::

        y_fw = RNN_fw(x)
        y_bw = R(RNN_bw(R(x)))
        outputs[t] = concat([y_fw[t], y_bw[t]], axis=1)   # [batch, fw.output_size + bw.output_size]

    Returns ``(outputs, output_state_fw, output_state_bw)`` (plus a
    :class:`StaticBidirectionalTrace` with ``return_trace``): ``outputs`` a list of T arrays
    ``[batch, cell_fw.output_size + cell_bw.output_size]``, zero past each row's length;
    ``output_state_fw`` the forward state after step ``length - 1``, ``output_state_bw`` the
    backward state after it has read the row's first step (either is the initial state where the
    length is 0).  It is :func:`bidirectional_dynamic_rnn` on the stacked, time-major inputs.

    >>> import numpy as np, npl
    >>> fw, bw = npl.rnn.LSTMCell(4, num_proj=2, seed=0), npl.rnn.GRUCell(3, seed=1)
    >>> xs = [np.ones((2, 5), np.float32) for _ in range(3)]
    >>> outs, st_fw, st_bw = npl.nn.static_bidirectional_rnn(fw, bw, xs, sequence_length=[3, 1])
    >>> len(outs), outs[0].shape, st_fw.h.shape, st_bw.shape, float(abs(outs[2][1]).max())
    (3, (2, 5), (2, 2), (2, 3), 0.0)
    """
    _check_cell(cell_fw, "cell_fw")
    _check_cell(cell_bw, "cell_bw")
    xs, x = _stack_steps(inputs, empty_error=ValueError, dtype=resolve_dtype(dtype))
    B, I = xs[0].shape
    if I == 0:
        raise ValueError("inputs[0] must have at least one feature, got shape %s"
                         % (tuple(xs[0].shape),))
    for nm, c in (("cell_fw", cell_fw), ("cell_bw", cell_bw)):
        if c.input_size is not None and I != c.input_size:
            raise ValueError("inputs[0] must have feature width %d (%s was built for it), got "
                             "shape %s" % (c.input_size, nm, tuple(xs[0].shape)))
    res = _bidirectional(cell_fw, cell_bw, x, sequence_length, initial_state_fw,
                         initial_state_bw, dtype, True, return_trace)
    (o_fw, o_bw), (s_fw, s_bw) = res[:2]
    out = get_array_module(o_fw).concatenate([o_fw, o_bw], axis=2)       # [T, B, fw + bw]
    outs = [out[t] for t in range(len(xs))]
    if return_trace:
        tr = StaticBidirectionalTrace(res[2], len(xs), cell_fw.output_size, cell_bw.output_size)
        return outs, s_fw, s_bw, tr
    return outs, s_fw, s_bw


class StackBidirectionalTrace(TraceBase):
    """Trace of ``stack_bidirectional_dynamic_rnn``: ``backward(d_outputs, (d_states_fw,
    d_states_bw))`` -> ``(d_inputs, (d_initial_states_fw, d_initial_states_bw))``; state cotangents
    are tuples with one entry (or None) per layer."""

    def __init__(self, layers, widths, widths_bw=None):
        self.layers, self._widths = layers, widths
        self._widths_bw = widths_bw
        self._done = False

    @property
    def records(self):
        return [r for tr in self.layers for r in tr.records]

    def _all_traces(self):
        return [self] + [t for tr in self.layers for t in (tr, tr.fw, tr.bw)]

    def _check_top_outputs(self, d_outputs):
        """d_outputs: the last layer's concatenated (fw, bw) outputs' cotangent."""
        top = self.layers[-1].fw
        d = float_array(d_outputs, "d_outputs", ndim=3)
        W = self._widths[-1] + self._widths_bw[-1]
        T, B = top.max_time, top.batch_size
        check_shape(d, (T, B, W) if top.time_major else (B, T, W), "d_outputs")
        check_dtype(d, top.dtype, "d_outputs")
        check_on_device(d, "d_outputs", top._xp, "the forward's inputs")
        return d

    def _state_cotangents(self, d_final_state):
        n = len(self.layers)
        if d_final_state is None:
            return (None,) * n, (None,) * n
        pair = _check_pair(d_final_state, "d_final_state", "(d_states_fw, d_states_bw)")
        out = []
        for j, (side, v) in enumerate(zip(("fw", "bw"), pair)):
            if v is None:
                out.append((None,) * n)
                continue
            if isinstance(v, LSTMStateTuple) or not isinstance(v, (tuple, list)) or len(v) != n:
                raise ValueError("d_final_state[%d] (d_states_%s) must be a tuple of %d states (one "
                                 "per layer, entries may be None), got %s"
                                 % (j, side, n, _describe(v)))
            out.append(tuple(v))
        return out[0], out[1]

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(d_inputs, (d_initial_states_fw, d_initial_states_bw))``.  Bad cotangents
        raise before anything is consumed."""
        traces = self._all_traces()
        _ensure_fresh(*traces)
        n = len(self.layers)
        s_fw, s_bw = self._state_cotangents(d_final_state)
        d = None if d_outputs is None else self._check_top_outputs(d_outputs)

        def names(k):
            return ("d_final_state[0][%d]" % k, "d_final_state[1][%d]" % k)

        for k, tr in enumerate(self.layers):     # validate every layer's state cotangents first
            tr._prepare(None, (s_fw[k], s_bw[k]), state_names=names(k))
        _consume(*traces)
        d0_fw, d0_bw = [None] * n, [None] * n
        for k in range(n - 1, -1, -1):
            pair = None
            if d is not None:
                wf = self._widths[k]
                pair = (d[:, :, :wf], d[:, :, wf:])
            prepared = self.layers[k]._prepare(pair, (s_fw[k], s_bw[k]), state_names=names(k))
            d, (d0_fw[k], d0_bw[k]) = self.layers[k]._run(prepared)
        return d, (tuple(d0_fw), tuple(d0_bw))


def stack_bidirectional_dynamic_rnn(cells_fw, cells_bw, inputs, initial_states_fw=None,
                                    initial_states_bw=None, dtype=None, sequence_length=None,
                                    parallel_iterations=None, time_major=False, scope=None,
                                    swap_memory=False, return_trace=False):
    """tf.contrib.rnn.stack_bidirectional_dynamic_rnn: layers of bidirectional RNNs whose
    concatenated (fw, bw) outputs feed the next layer.

    Returns ``(outputs, output_states_fw, output_states_bw)``: outputs of the last layer, depth
    ``fw.output_size + bw.output_size``, and tuples of final states, one per layer.
    """
    if not isinstance(cells_fw, (list, tuple)) or not cells_fw:
        raise ValueError("cells_fw must be a non-empty list of cells, got %s" % _describe(cells_fw))
    if not isinstance(cells_bw, (list, tuple)) or len(cells_bw) != len(cells_fw):
        raise ValueError("cells_bw must be a list of the same length as cells_fw (%d), got %s"
                         % (len(cells_fw), _describe(cells_bw)))
    n = len(cells_fw)
    for nm, cells in (("cells_fw", cells_fw), ("cells_bw", cells_bw)):
        for k, c in enumerate(cells):
            _check_cell(c, "%s[%d]" % (nm, k))
    for nm, sts in (("initial_states_fw", initial_states_fw), ("initial_states_bw", initial_states_bw)):
        if sts is not None and (isinstance(sts, LSTMStateTuple) or not isinstance(sts, (list, tuple))
                                or len(sts) != n):
            raise ValueError("%s must be a list of %d states (one per layer), got %s"
                             % (nm, n, _describe(sts)))
    x = inputs
    states_fw, states_bw, traces = [], [], []
    for k in range(n):
        n_in = "inputs" if k == 0 else \
            "the inputs of layer %d (the concatenated outputs of layer %d)" % (k, k - 1)
        layer = _bidirectional(
            cells_fw[k], cells_bw[k], x, sequence_length,
            None if initial_states_fw is None else initial_states_fw[k],
            None if initial_states_bw is None else initial_states_bw[k],
            dtype, time_major, return_trace,
            ("cells_fw[%d]" % k, "cells_bw[%d]" % k, n_in,
             "initial_states_fw[%d]" % k, "initial_states_bw[%d]" % k))
        (o_fw, o_bw), (s_fw, s_bw) = layer[:2]
        tr = layer[2] if return_trace else None
        xp = get_array_module(o_fw)
        x = xp.concatenate([o_fw, o_bw], axis=2)
        states_fw.append(s_fw)
        states_bw.append(s_bw)
        traces.append(tr)
    res = (x, tuple(states_fw), tuple(states_bw))
    if return_trace:
        tr = StackBidirectionalTrace(traces, [c.output_size for c in cells_fw],
                                     [c.output_size for c in cells_bw])
        return res + (tr,)
    return res


class StaticStackBidirectionalTrace(TraceBase):
    """Trace of ``stack_bidirectional_rnn``: ``backward(d_outputs, (d_states_fw, d_states_bw))``
    -> ``(d_inputs, (d_initial_states_fw, d_initial_states_bw))``.

    ``d_outputs`` is a list with one [batch, fw_size + bw_size] array (or None) per step (the last
    layer's concatenated outputs), or None; the state cotangents are tuples with one entry (or
    None) per layer, as for :class:`StackBidirectionalTrace`, which ``inner`` is (of the
    time-major pass on the stacked steps); ``d_inputs`` is a list with one [batch, depth] array
    per step."""

    def __init__(self, inner, n):
        self.inner, self._n = inner, n
        self._done = False

    @property
    def records(self):
        return self.inner.records

    @property
    def layers(self):
        return self.inner.layers

    def _stacked_outputs(self, d_outputs):
        """The per-step cotangents (every entry checked before any is used) as one time-major
        [T, B, W] array; None where ``d_outputs`` or every entry is None."""
        n, top = self._n, self.inner.layers[-1].fw
        xp, dt, B = top._xp, top.dtype, top.batch_size
        W = self.inner._widths[-1] + self.inner._widths_bw[-1]
        checked = _step_cotangents(d_outputs, n, (B, W), dt, xp)
        if not checked:
            return None
        d = xp.zeros((n, B, W), dt)
        for t, g in checked:
            d[t] = g
        return d

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(list of d_inputs, (d_initial_states_fw, d_initial_states_bw))``; accumulates
        into every cell's ``grads``.  Bad cotangents raise before anything is consumed."""
        _ensure_fresh(self, *self.inner._all_traces())
        d = self._stacked_outputs(d_outputs)
        dx, d0 = self.inner.backward(d, d_final_state)   # validates the states before consuming
        self._done = True
        return [dx[t] for t in range(self._n)], d0


def stack_bidirectional_rnn(cells_fw, cells_bw, inputs, initial_states_fw=None,
                            initial_states_bw=None, dtype=None, sequence_length=None, scope=None,
                            return_trace=False):
    """tf.contrib.rnn.stack_bidirectional_rnn: layers of :func:`static_bidirectional_rnn` whose
    concatenated (fw, bw) outputs feed the next layer, over a list of steps.

    With ``x^0 = inputs`` (T arrays ``[batch, depth]``) and, for layer k, ``R`` the reversal of
    each row's valid prefix (``reverse_sequence``; the whole list without ``sequence_length``)::

        y_fw^k = RNN(cells_fw[k], x^k)                 from initial_states_fw[k] (zeros by default)
        y_bw^k = R(RNN(cells_bw[k], R(x^k)))           from initial_states_bw[k]
        x^{k+1}[t] = concat([y_fw^k[t], y_bw^k[t]], axis=1)

    Returns ``(outputs, output_states_fw, output_states_bw)`` (plus a
    :class:`StaticStackBidirectionalTrace` with ``return_trace``): ``outputs`` the list of T
    arrays ``x^n[t]`` ``[batch, cells_fw[-1].output_size + cells_bw[-1].output_size]`` of the last
    layer (zero past each row's length), and tuples of final states, one per layer.  TF's variable
    names: ``stack_bidirectional_rnn/cell_<k>/fw/<cell name>/...`` and ``.../cell_<k>/bw/...``
    (TF passes each layer's ``cell_<k>`` scope itself to ``static_bidirectional_rnn``, so there is
    no ``bidirectional_rnn`` level, unlike :func:`stack_bidirectional_dynamic_rnn`'s names).  It is
    :func:`stack_bidirectional_dynamic_rnn` on the stacked, time-major steps.

    >>> import numpy as np, npl
    >>> fw = [npl.rnn.LSTMCell(3, seed=0), npl.rnn.GRUCell(2, seed=1)]
    >>> bw = [npl.rnn.GRUCell(4, seed=2), npl.rnn.BasicLSTMCell(2, seed=3)]
    >>> xs = [np.ones((2, 5), np.float32) for _ in range(3)]                  # T = 3, B = 2
    >>> outs, sfw, sbw = npl.rnn.stack_bidirectional_rnn(fw, bw, xs, sequence_length=[3, 1])
    >>> len(outs), outs[0].shape, len(sfw), sfw[0].h.shape, sbw[0].shape, float(abs(outs[2][1]).max())
    (3, (2, 4), 2, (2, 3), (2, 4), 0.0)
    >>> y, _, _ = npl.rnn.stack_bidirectional_dynamic_rnn(fw, bw, np.stack(xs), time_major=True,
    ...                                                   sequence_length=[3, 1])
    >>> all(np.array_equal(y[t], outs[t]) for t in range(3))
    True
    """
    _xs_list, x = _stack_steps(inputs, empty_error=ValueError, dtype=resolve_dtype(dtype))
    res = stack_bidirectional_dynamic_rnn(cells_fw, cells_bw, x, initial_states_fw,
                                          initial_states_bw, dtype, sequence_length,
                                          time_major=True, return_trace=return_trace)
    outs = [res[0][t] for t in range(len(_xs_list))]
    if return_trace:
        return outs, res[1], res[2], StaticStackBidirectionalTrace(res[3], len(_xs_list))
    return outs, res[1], res[2]
