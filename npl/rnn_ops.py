"""Sequence functions with TensorFlow 1 semantics, and their traces (hand-written BPTT).

``dynamic_rnn``, ``static_rnn``, ``bidirectional_dynamic_rnn`` and
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
from .cells import RNNCell
from ._checks import float_array, check_shape, check_dtype, resolve_dtype, lengths_array

__all__ = ["dynamic_rnn", "static_rnn", "bidirectional_dynamic_rnn",
           "stack_bidirectional_dynamic_rnn", "RNNTrace", "BidirectionalTrace", "StaticRNNTrace",
           "StackBidirectionalTrace"]


def _consume(trace):
    if getattr(trace, "_done", False):
        raise BackwardTwiceError("backward was already called on this %s; its saved arrays are "
                                 "spent. Run the forward again with return_trace=True for a new trace"
                                 % type(trace).__name__)
    trace._done = True


def _check_cell(cell, name="cell"):
    if not isinstance(cell, RNNCell):
        raise TypeError("%s must be an npl RNN cell (npl.rnn.BasicLSTMCell, GRUCell, ...), got %s"
                        % (name, type(cell).__name__))


def _flat_records(recs):
    if isinstance(recs, list):
        out = []
        for r in recs:
            out.extend(_flat_records(r))
        return out
    return [] if recs is None else [recs]


class RNNTrace:
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
        return _flat_records(self._rec)

    @property
    def nbytes(self):
        """Bytes held by the saved arrays: O(T * B * (gates + state)) per layer."""
        return sum(r.nbytes for r in self.records)

    def record_state_grads(self, on=True):
        """Ask the backward to keep dL/dh_t (and dL/dc_t for LSTM) of every step in the records."""
        for r in self.records:
            r.record_state_grads = on
        return self

    def _to_time_major(self, a):
        return a if self.time_major else a.transpose(1, 0, 2)

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(d_inputs, d_initial_state)``; accumulates into ``cell.grads``.

        d_outputs: same shape as the forward's outputs (or None); d_final_state: same structure as
        the final state (or None).
        """
        _consume(self)
        cell, xp, dt = self.cell, self._xp, self.dtype
        T, B, Tl = self.max_time, self.batch_size, self.steps
        dout = None
        if d_outputs is not None:
            d = float_array(d_outputs, "d_outputs", ndim=3)
            shape = (T, B, cell.output_size) if self.time_major else (B, T, cell.output_size)
            check_shape(d, shape, "d_outputs")
            check_dtype(d, dt, "d_outputs")
            if get_array_module(d) is not xp:
                raise TypeError("d_outputs is on a different device than the forward's inputs")
            dout = xp.ascontiguousarray(self._to_time_major(d)[:Tl])
        dst = None
        if d_final_state is not None:
            dst = cell._to_internal(d_final_state, B, dt, xp, "d_final_state")
        if Tl == 0:
            dx_tm = xp.zeros((T, B, self._input_width), dt)
            d0 = dst if dst is not None else cell._zeros_internal(B, dt, xp)
            d0 = _copy_struct(d0)
        else:
            dx_run, d0 = cell._backward_seq(self._rec, dout, dst)
            if Tl < T:
                dx_tm = xp.zeros((T, B, self._input_width), dt)
                dx_tm[:Tl] = dx_run
            else:
                dx_tm = dx_run
        dx = dx_tm if self.time_major else xp.ascontiguousarray(dx_tm.transpose(1, 0, 2))
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
    _check_cell(cell)
    x = float_array(inputs, "inputs", ndim=3)
    want = resolve_dtype(dtype)
    if want is not None and x.dtype != want:
        raise TypeError("inputs have dtype %s but dtype=%s was given (no silent casting)" % (x.dtype, want))
    xp = get_array_module(x)
    x_tm = x if time_major else x.transpose(1, 0, 2)
    T, B, I = x_tm.shape
    if T == 0 or B == 0 or I == 0:
        raise ValueError("inputs must have at least one time step, batch row and feature, got shape %s"
                         % (tuple(x.shape),))
    cell._maybe_build(x_tm, "inputs")
    lengths = lengths_array(sequence_length, B, T, xp)
    if initial_state is None:
        state = cell._zeros_internal(B, x.dtype, xp)
    else:
        state = cell._to_internal(initial_state, B, x.dtype, xp, "initial_state")
    if lengths is None:
        Tl, mask = T, None
    else:
        Tl = int(lengths.max())
        mask = None if bool((lengths == Tl).all()) else \
            xp.asarray(np.arange(Tl)[:, None] < lengths[None, :])[:, :, None]   # [Tl, B, 1]
    P = cell.output_size
    rec = None
    if Tl == 0:
        out_tm = xp.zeros((T, B, P), x.dtype)
        final = _copy_struct(state)
    else:
        out_run, final, rec = cell._forward_seq(xp.ascontiguousarray(x_tm[:Tl]), state, mask)
        if Tl < T:
            out_tm = xp.zeros((T, B, P), x.dtype)
            out_tm[:Tl] = out_run
        else:
            out_tm = out_run
    outputs = out_tm if time_major else xp.ascontiguousarray(out_tm.transpose(1, 0, 2))
    final = cell._to_public(final)
    if return_trace:
        return outputs, final, RNNTrace(cell, rec, lengths, time_major, T, B, x.dtype, xp, I)
    return outputs, final


class StaticRNNTrace:
    """Trace of ``static_rnn``: ``backward(d_outputs_list, d_final_state)`` -> (list, state)."""

    def __init__(self, inner, n):
        self.inner, self._n = inner, n
        self._done = False

    @property
    def records(self):
        return self.inner.records

    def record_state_grads(self, on=True):
        self.inner.record_state_grads(on)
        return self

    def backward(self, d_outputs=None, d_final_state=None):
        _consume(self)
        d = None
        if d_outputs is not None:
            if not isinstance(d_outputs, (list, tuple)) or len(d_outputs) != self._n:
                raise ValueError("d_outputs must be a list of %d arrays (or None entries), one per "
                                 "step, got %s" % (self._n, type(d_outputs).__name__ if not
                                                   isinstance(d_outputs, (list, tuple)) else len(d_outputs)))
            inner = self.inner
            xp, dt = inner._xp, inner.dtype
            shape = (inner.batch_size, inner.cell.output_size)
            d = xp.zeros((self._n,) + shape, dt)
            for t, g in enumerate(d_outputs):
                if g is not None:
                    g = float_array(g, "d_outputs[%d]" % t)
                    check_shape(g, shape, "d_outputs[%d]" % t)
                    check_dtype(g, dt, "d_outputs[%d]" % t)
                    d[t] = g
        dx, d0 = self.inner.backward(d, d_final_state)
        return [dx[t] for t in range(self._n)], d0


def static_rnn(cell, inputs, initial_state=None, dtype=None, sequence_length=None, scope=None,
               return_trace=False):
    """tf.nn.static_rnn: ``inputs`` is a list of [batch, depth] arrays, one per step.

    Returns ``(outputs_list, final_state)`` (plus a :class:`StaticRNNTrace`); the same
    sequence_length semantics as :func:`dynamic_rnn`.
    """
    _check_cell(cell)
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise TypeError("inputs must be a non-empty list of [batch, depth] arrays, got %s"
                        % type(inputs).__name__)
    xs = [float_array(a, "inputs[%d]" % t, ndim=2) for t, a in enumerate(inputs)]
    for t, a in enumerate(xs[1:], 1):
        if a.shape != xs[0].shape:
            raise ValueError("inputs[%d] has shape %s but inputs[0] has %s" % (t, a.shape, xs[0].shape))
        if a.dtype != xs[0].dtype:
            raise TypeError("inputs[%d] has dtype %s but inputs[0] has %s" % (t, a.dtype, xs[0].dtype))
    xp = get_array_module(*xs)
    x = xp.stack(xs)
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


class BidirectionalTrace:
    """Trace of ``bidirectional_dynamic_rnn``: ``backward((d_out_fw, d_out_bw), (d_state_fw,
    d_state_bw))`` -> ``(d_inputs, (d_initial_state_fw, d_initial_state_bw))``.  ``fw`` and ``bw``
    are the two :class:`RNNTrace` (the backward one in reversed time)."""

    def __init__(self, fw, bw, lengths, time_major):
        self.fw, self.bw, self._lengths, self._time_major = fw, bw, lengths, time_major
        self._done = False

    @property
    def records(self):
        return self.fw.records + self.bw.records

    def record_state_grads(self, on=True):
        self.fw.record_state_grads(on)
        self.bw.record_state_grads(on)
        return self

    def backward(self, d_outputs=None, d_final_state=None):
        _consume(self)
        d_fw = d_bw = s_fw = s_bw = None
        if d_outputs is not None:
            if not isinstance(d_outputs, (tuple, list)) or len(d_outputs) != 2:
                raise TypeError("d_outputs must be a pair (d_output_fw, d_output_bw), got %s"
                                % type(d_outputs).__name__)
            d_fw, d_bw = d_outputs
        if d_final_state is not None:
            if not isinstance(d_final_state, (tuple, list)) or len(d_final_state) != 2:
                raise TypeError("d_final_state must be a pair (d_state_fw, d_state_bw), got %s"
                                % type(d_final_state).__name__)
            s_fw, s_bw = d_final_state
        if d_bw is not None:
            d_bw = float_array(d_bw, "d_outputs[1]", ndim=3)
            exp = self.bw.max_time, self.bw.batch_size
            if self._time_major and d_bw.shape[:2] != exp or not self._time_major and d_bw.shape[:2] != exp[::-1]:
                raise ValueError("d_outputs[1] has shape %s, expected the backward output's shape"
                                 % (tuple(d_bw.shape),))
            d_bw = _reverse_time(d_bw, self._lengths, self._time_major)
        dx_fw, d0_fw = self.fw.backward(d_fw, s_fw)
        dx_bw, d0_bw = self.bw.backward(d_bw, s_bw)
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
    _check_cell(cell_fw, "cell_fw")
    _check_cell(cell_bw, "cell_bw")
    x = float_array(inputs, "inputs", ndim=3)
    xp = get_array_module(x)
    T, B = (x.shape[0], x.shape[1]) if time_major else (x.shape[1], x.shape[0])
    lengths = lengths_array(sequence_length, B, T, xp)
    out_fw, st_fw, tr_fw = dynamic_rnn(cell_fw, x, lengths, initial_state_fw, dtype,
                                       time_major=time_major, return_trace=True)
    x_rev = _reverse_time(x, lengths, time_major)
    out_bw_rev, st_bw, tr_bw = dynamic_rnn(cell_bw, x_rev, lengths, initial_state_bw, dtype,
                                           time_major=time_major, return_trace=True)
    out_bw = _reverse_time(out_bw_rev, lengths, time_major)
    res = ((out_fw, out_bw), (st_fw, st_bw))
    if return_trace:
        return res + (BidirectionalTrace(tr_fw, tr_bw, lengths, time_major),)
    return res


class StackBidirectionalTrace:
    """Trace of ``stack_bidirectional_dynamic_rnn``: ``backward(d_outputs, (d_states_fw,
    d_states_bw))`` -> ``(d_inputs, (d_initial_states_fw, d_initial_states_bw))``; state cotangents
    are tuples with one entry (or None) per layer."""

    def __init__(self, layers, widths):
        self.layers, self._widths = layers, widths
        self._done = False

    @property
    def records(self):
        return [r for tr in self.layers for r in tr.records]

    def record_state_grads(self, on=True):
        for tr in self.layers:
            tr.record_state_grads(on)
        return self

    def backward(self, d_outputs=None, d_final_state=None):
        _consume(self)
        n = len(self.layers)
        s_fw = s_bw = (None,) * n
        if d_final_state is not None:
            if not isinstance(d_final_state, (tuple, list)) or len(d_final_state) != 2:
                raise TypeError("d_final_state must be a pair (d_states_fw, d_states_bw)")
            s_fw = (None,) * n if d_final_state[0] is None else tuple(d_final_state[0])
            s_bw = (None,) * n if d_final_state[1] is None else tuple(d_final_state[1])
            if len(s_fw) != n or len(s_bw) != n:
                raise ValueError("d_final_state must hold one state per layer (%d)" % n)
        d = d_outputs
        d0_fw, d0_bw = [None] * n, [None] * n
        for k in range(n - 1, -1, -1):
            pair = None
            if d is not None:
                d = float_array(d, "d_outputs", ndim=3)
                wf = self._widths[k]
                if d.shape[2] != wf + self._widths_bw[k]:
                    raise ValueError("d_outputs must have depth %d, got shape %s"
                                     % (wf + self._widths_bw[k], tuple(d.shape)))
                pair = (d[:, :, :wf], d[:, :, wf:])
            d, (d0_fw[k], d0_bw[k]) = self.layers[k].backward(pair, (s_fw[k], s_bw[k]))
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
        raise ValueError("cells_fw must be a non-empty list of cells")
    if not isinstance(cells_bw, (list, tuple)) or len(cells_bw) != len(cells_fw):
        raise ValueError("cells_bw must be a list of the same length as cells_fw (%d)" % len(cells_fw))
    n = len(cells_fw)
    for nm, sts in (("initial_states_fw", initial_states_fw), ("initial_states_bw", initial_states_bw)):
        if sts is not None and (not isinstance(sts, (list, tuple)) or len(sts) != n):
            raise ValueError("%s must be a list of %d states (one per layer)" % (nm, n))
    x = inputs
    states_fw, states_bw, traces = [], [], []
    for k in range(n):
        (o_fw, o_bw), (s_fw, s_bw), tr = bidirectional_dynamic_rnn(
            cells_fw[k], cells_bw[k], x, sequence_length,
            None if initial_states_fw is None else initial_states_fw[k],
            None if initial_states_bw is None else initial_states_bw[k],
            dtype, time_major=time_major, return_trace=True)
        xp = get_array_module(o_fw)
        x = xp.concatenate([o_fw, o_bw], axis=2)
        states_fw.append(s_fw)
        states_bw.append(s_bw)
        traces.append(tr)
    res = (x, tuple(states_fw), tuple(states_bw))
    if return_trace:
        tr = StackBidirectionalTrace(traces, [c.output_size for c in cells_fw])
        tr._widths_bw = [c.output_size for c in cells_bw]
        return res + (tr,)
    return res
