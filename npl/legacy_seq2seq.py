"""``npl.legacy_seq2seq``: ``tf.contrib.legacy_seq2seq``'s RNN decoder and RNN-RNN models.

``rnn_decoder``, ``basic_rnn_seq2seq`` and ``tied_rnn_seq2seq`` follow TensorFlow 1.15's
functions of these names (same arguments and defaults, same results, same variable names), and
``sequence_loss`` / ``sequence_loss_by_example`` are :mod:`npl.losses`'s, which already are
``legacy_seq2seq``'s, so that a TF1 program such as a char-rnn port::

    outputs, last_state = legacy_seq2seq.rnn_decoder(inputs, cell.zero_state(B, tf.float32), cell,
                                                     loop_function=loop if infer else None,
                                                     scope='rnnlm')
    loss = legacy_seq2seq.sequence_loss_by_example([logits], [targets], [weights])

ports by changing its imports (npl's losses return the loss and its gradient with respect to the
logits, ``(log_perps, d_logits)``, since npl has no autograd).  Every function takes
``return_trace=True`` (by keyword) and then also returns a trace whose ``backward`` is the
hand-written BPTT, with the conventions of :func:`npl.nn.static_rnn`'s trace: lists of
``[batch, depth]`` arrays, either cotangent may be None, parameter gradients are *added* to the
cells' ``grads``, one backward per trace.

The encoder and decoder are :func:`npl.nn.static_rnn` passes; a decoder with a
``loop_function`` runs one single-step :func:`npl.nn.static_rnn` per step, since each input is
made from the output before it.

Variable names (``npl.convert.tf_variable_names(cell, scope)`` gives them; ``scope`` is the
function's ``scope`` argument, whose default is shown; the scope names nothing in npl, where the
weights belong to the cell objects)::

    rnn_decoder         <"rnn_decoder">/<cell>/...         (rnn_decoder/basic_lstm_cell/kernel)
    basic_rnn_seq2seq   <"basic_rnn_seq2seq">/rnn/<cell>/...          the encoder, a copy of cell
                        <"basic_rnn_seq2seq">/rnn_decoder/<cell>/...  the decoder, cell itself
    tied_rnn_seq2seq    combined_tied_rnn_seq2seq/<"tied_rnn_seq2seq">/<cell>/...       both

Not here: the embedding and attention variants (``embedding_rnn_decoder``,
``embedding_rnn_seq2seq``, ``embedding_tied_rnn_seq2seq``, ``attention_decoder``,
``embedding_attention_decoder``, ``embedding_attention_seq2seq``, ``one2many_rnn_seq2seq``) and
``model_with_buckets``.  An embedding model is an :class:`npl.layers.Embedding` (or
:func:`npl.nn.embedding_lookup`) in front of these functions.
"""
import copy
import inspect
import weakref

import numpy as np

from .backend import get_array_module
from .cells import TraceBase, flat_records, _describe
from ._checks import float_array, check_shape, check_dtype, check_on_device, resolve_dtype
from .rnn_ops import static_rnn, _stack_steps, _check_cell, _ensure_fresh, _consume
from .losses import sequence_loss, sequence_loss_by_example
from . import activations as _act

__all__ = ["rnn_decoder", "basic_rnn_seq2seq", "tied_rnn_seq2seq", "encoder_cell_of",
           "sequence_loss", "sequence_loss_by_example", "RNNDecoderTrace", "Seq2SeqTrace"]


# ============================================================================ argument checks
def _check_scope(scope):
    if scope is not None and not isinstance(scope, str):
        raise TypeError("scope (TF1's variable scope name) must be a string or None, got %r" % (scope,))


def _check_loop_function(loop_function, return_trace):
    """``loop_function``: None or a callable; with ``return_trace`` it must take the trace contract's
    ``return_trace`` keyword (checked before any step runs)."""
    if loop_function is None:
        return
    if not callable(loop_function):
        raise TypeError("loop_function must be None or a callable loop_function(prev, i) -> next "
                        "input [batch, input_size], got %s" % type(loop_function).__name__)
    if not return_trace:
        return
    try:
        sig = inspect.signature(loop_function)
    except (TypeError, ValueError):      # a callable without a signature: its call will tell
        return
    try:
        sig.bind(None, 1, return_trace=True)
    except TypeError:
        raise TypeError(
            "loop_function %r takes no return_trace keyword, so rnn_decoder(..., return_trace=True) "
            "cannot backpropagate through it: npl has no autograd to differentiate a Python "
            "function, and leaving out the gradient that TensorFlow propagates through "
            "loop_function(prev, i) would give wrong gradients silently.  Give it the trace "
            "contract: loop_function(prev, i, return_trace=False) that with return_trace=True "
            "returns (next_input, trace), trace.backward(d_next_input) returning d_prev "
            "[batch, output_size] (or None where no gradient reaches prev, as through an argmax); "
            "or run without return_trace (inference)"
            % getattr(loop_function, "__name__", loop_function)) from None


def _steps_check(inputs, name, loop_function, dtype=None):
    """Validate a list of steps; with a loop_function only the first entry is read (TF ignores the
    others, whose count alone sets the number of steps).  Returns (first step, number of steps)."""
    if loop_function is None:
        xs, _ = _stack_steps(inputs, empty_error=ValueError, dtype=dtype, name=name)
        return xs, len(xs)
    if not isinstance(inputs, (list, tuple)) or not inputs:
        _stack_steps(inputs, empty_error=ValueError, name=name)     # raises, naming the argument
    x0 = float_array(inputs[0], "%s[0]" % name, ndim=2, dtype=dtype)
    return [x0], len(inputs)


def _check_width(cell, x, name, what="the cell was built for it"):
    if cell.input_size is not None and x.shape[1] != cell.input_size:
        raise ValueError("%s must have feature width %d (%s), got shape %s"
                         % (name, cell.input_size, what, tuple(x.shape)))


def _step_input(value, i, like, xp):
    """The input ``loop_function`` made for step ``i``: [batch, input_size] as decoder_inputs[0]."""
    name = "loop_function(outputs[%d], %d)" % (i - 1, i)
    a = float_array(value, name, ndim=2)
    check_on_device(a, name, xp, "decoder_inputs[0]")
    if tuple(a.shape) != tuple(like.shape):
        raise ValueError("%s must return shape %s (that of decoder_inputs[0]: [batch, input_size]), "
                         "got %s" % (name, tuple(like.shape), tuple(a.shape)))
    check_dtype(a, like.dtype, name)
    return a


def _loop_result(res, i):
    """``(next_input, trace)`` from ``loop_function(prev, i, return_trace=True)``."""
    if not (isinstance(res, tuple) and len(res) == 2 and callable(getattr(res[1], "backward", None))):
        raise TypeError("loop_function(outputs[%d], %d, return_trace=True) must return a pair "
                        "(next_input, trace) whose trace has a backward(d_next_input) method, got %s"
                        % (i - 1, i, _describe(res) if isinstance(res, tuple) else type(res).__name__))
    return res


# ============================================================================ rnn_decoder
class RNNDecoderTrace(TraceBase):
    """Trace of :func:`rnn_decoder`: ``backward(d_outputs, d_final_state)`` ->
    ``(d_decoder_inputs, d_initial_state)``.

    ``d_outputs``: a list with one ``[batch, output_size]`` array (or None) per step, or None;
    ``d_final_state``: structured as the final state, or None.  ``d_decoder_inputs`` is a list with
    one ``[batch, input_size]`` array per step.  Without a loop function the trace is one
    :func:`npl.nn.static_rnn` trace (``steps[0]``); with one, ``steps`` holds a single-step trace
    per step and ``loop_traces[i]`` (i >= 1) the loop function's trace for input i (``loop_traces[0]``
    is None).  Parameter gradients are added to ``cell.grads``.
    """

    def __init__(self, cell, steps, loop_traces, n, batch, input_width, dtype, xp):
        self.cell, self.steps, self.loop_traces = cell, steps, loop_traces
        self._n, self._batch, self._width, self._dtype, self._xp = n, batch, input_width, dtype, xp
        self._done = False

    @property
    def records(self):
        return flat_records([r for s in self.steps for r in s.records])

    def _check_d_outputs(self, d_outputs):
        """Every entry checked before any is used: a list of n (arrays or None), or all None."""
        n = self._n
        if d_outputs is None:
            return [None] * n
        if not isinstance(d_outputs, (list, tuple)) or len(d_outputs) != n:
            raise ValueError("d_outputs must be a list of %d arrays (or None entries), one per step, "
                             "got %s" % (n, _describe(d_outputs) if not isinstance(d_outputs, (list, tuple))
                                         else "%d entries" % len(d_outputs)))
        out = []
        for t, g in enumerate(d_outputs):
            if g is not None:
                nm = "d_outputs[%d]" % t
                g = float_array(g, nm)
                check_shape(g, (self._batch, self.cell.output_size), nm)
                check_dtype(g, self._dtype, nm)
                check_on_device(g, nm, self._xp, "the forward's inputs")
            out.append(g)
        return out

    def _prepare(self, d_outputs, d_final_state):
        """Validate the cotangents without consuming anything."""
        _ensure_fresh(self, *self.steps)
        d = self._check_d_outputs(d_outputs)
        last = self.steps[-1].inner
        last._prepare(None, d_final_state)              # checks d_final_state (shape, dtype, device)
        return d, d_final_state

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(list of d_decoder_inputs, d_initial_state)``; bad cotangents raise before
        anything is consumed.

        Without a loop function this is :func:`npl.nn.static_rnn`'s backward.  With one, step
        ``i >= 1`` read ``x_i = loop_function(y_{i-1}, i)``, so the steps run backwards one at a
        time and ``dL/dy_{i-1}`` gets, besides ``d_outputs[i-1]``, the loop trace's
        ``backward(dL/dx_i)``; ``decoder_inputs[i]`` (i >= 1) were not read, and their gradient
        is zero.  A loop trace's ``d_prev`` of the wrong shape, dtype or device raises when it
        comes back, after the later steps' parameter gradients were added."""
        d, d_state = self._prepare(d_outputs, d_final_state)
        _consume(self)
        if self.loop_traces is None:
            return self.steps[0].backward(d_outputs, d_final_state)
        xp, B, P = self._xp, self._batch, self.cell.output_size
        d_inputs = [None] * self._n
        extra = None
        for i in range(self._n - 1, -1, -1):
            g = d[i]
            if extra is not None:
                g = extra if g is None else g + extra
            dxs, d_state = self.steps[i].backward([g], d_state)
            if i == 0:
                d_inputs[0] = dxs[0]
                break
            d_inputs[i] = xp.zeros((B, self._width), self._dtype)
            d_prev = self.loop_traces[i].backward(dxs[0])
            if d_prev is not None:
                nm = "the loop function's trace for step %d: backward(d_next_input) (d_prev)" % i
                d_prev = float_array(d_prev, nm)
                check_shape(d_prev, (B, P), nm)
                check_dtype(d_prev, self._dtype, nm)
                check_on_device(d_prev, nm, xp, "the forward's inputs")
            extra = d_prev
        return d_inputs, d_state


def rnn_decoder(decoder_inputs, initial_state, cell, loop_function=None, scope=None,
                return_trace=False):
    """``tf.contrib.legacy_seq2seq.rnn_decoder``: run ``cell`` over a list of steps from
    ``initial_state``.

    With ``x_i = decoder_inputs[i]`` (T arrays ``[batch, input_size]``) and ``s_{-1} =
    initial_state``, step ``i`` is one call of the cell::

        y_i, s_i = cell(x_i, s_{i-1})                   # i = 0 .. T-1
        x_i = loop_function(y_{i-1}, i)                 # for i >= 1, when loop_function is given

    so with a loop function only ``decoder_inputs[0]`` (the "GO" input) is read, and the other
    entries, whatever they are, only give the number of steps (TF ignores them too).  Returns
    ``(outputs, state)``: ``outputs`` the list of the T ``y_i`` ``[batch, cell.output_size]``,
    ``state`` = ``s_{T-1}``, structured as ``cell.state_size`` (plus an :class:`RNNDecoderTrace`
    with ``return_trace=True``).  Without a loop function it is
    ``npl.nn.static_rnn(cell, decoder_inputs, initial_state)``.  ``initial_state`` is required, as
    in TF (``cell.zero_state(batch, dtype)`` for zeros); ``scope`` (default ``"rnn_decoder"``)
    is TF's variable scope, which names the cell's variables in TF
    (``npl.convert.tf_variable_names(cell, "rnn_decoder")``) and nothing in npl.

    Gradients through the loop function.  TensorFlow differentiates ``loop_function``; npl has no
    autograd, so a trace through it needs the loop function's backward, given by this contract:
    with ``return_trace=True`` the decoder calls ``loop_function(prev, i, return_trace=True)``,
    which must return ``(next_input, trace)`` whose ``trace.backward(d_next_input)`` returns
    ``d_prev`` ``[batch, output_size]``, or None where no gradient reaches ``prev`` (an argmax
    passes none, as in TF), and accumulates the gradients of what the function reads (an
    embedding).  A loop function without the ``return_trace`` keyword is refused with a
    TypeError when a trace is asked for; without a trace (inference: argmax and embed) any
    ``loop_function(prev, i)`` works.

    >>> import numpy as np, npl
    >>> rng = np.random.default_rng(0)
    >>> E = rng.standard_normal((3, 2))                     # embedding of the 3 symbols, I = 2
    >>> def loop(prev, i):                                  # greedy: embed the argmax
    ...     return E[prev.argmax(1)]
    >>> cell = npl.rnn.BasicRNNCell(3, seed=0, input_size=2, dtype=np.float64)
    >>> go, h0 = E[[0, 0]], rng.standard_normal((2, 3))     # batch 2
    >>> ys, h = npl.legacy_seq2seq.rnn_decoder([go] * 4, h0, cell, loop_function=loop)
    >>> K, b = cell.params["kernel"], cell.params["bias"]
    >>> y0 = np.tanh(np.concatenate([go, h0], 1) @ K + b)                  # step 0 reads "GO"
    >>> y1 = np.tanh(np.concatenate([E[y0.argmax(1)], y0], 1) @ K + b)    # step 1 reads loop(y0, 1)
    >>> np.allclose(ys[0], y0), np.allclose(ys[1], y1), np.allclose(h, ys[3])
    (True, True, True)

    The trace contract, for the same loop function with the embedding ``E`` trained (no gradient
    reaches ``prev`` through the argmax; ``d_next_input`` goes to the embedded rows)::

    >>> dE = np.zeros_like(E)
    >>> class EmbedTrace:
    ...     def __init__(self, ids): self.ids = ids
    ...     def backward(self, d_next):
    ...         np.add.at(dE, self.ids, d_next)             # dL/dE, accumulated
    ...         return None                                 # dL/dprev: none through an argmax
    >>> def loop(prev, i, return_trace=False):
    ...     ids = prev.argmax(1)
    ...     return (E[ids], EmbedTrace(ids)) if return_trace else E[ids]
    >>> ys, h, tr = npl.legacy_seq2seq.rnn_decoder([go] * 4, h0, cell, loop, return_trace=True)
    >>> d_inputs, d_h0 = tr.backward([np.ones((2, 3))] * 4, None)
    >>> bool(np.abs(dE).sum() > 0), bool(np.abs(d_inputs[1]).sum() == 0)   # x_1 came from loop
    (True, True)
    """
    _check_cell(cell)
    _check_scope(scope)
    _check_loop_function(loop_function, return_trace)
    if initial_state is None:
        raise TypeError("initial_state is required (TF's rnn_decoder has no default): pass "
                        "cell.zero_state(batch_size, dtype) for zeros")
    xs, n = _steps_check(decoder_inputs, "decoder_inputs", loop_function)
    x0 = xs[0]
    _check_width(cell, x0, "decoder_inputs[0]")
    xp, B, dt = get_array_module(x0), x0.shape[0], x0.dtype
    if loop_function is None:
        res = static_rnn(cell, xs, initial_state=initial_state, return_trace=return_trace)
        if return_trace:
            return res[0], res[1], RNNDecoderTrace(cell, [res[2]], None, n, B, x0.shape[1], dt, xp)
        return res
    outputs, steps, loops = [], [], [None]
    state, x = initial_state, x0
    for i in range(n):
        if i > 0:
            if return_trace:
                x, ltr = _loop_result(loop_function(outputs[-1], i, return_trace=True), i)
                loops.append(ltr)
            else:
                x = loop_function(outputs[-1], i)
            x = _step_input(x, i, x0, xp)
        res = static_rnn(cell, [x], initial_state=state, return_trace=return_trace)
        outputs.append(res[0][0])
        state = res[1]
        if return_trace:
            steps.append(res[2])
    if return_trace:
        return outputs, state, RNNDecoderTrace(cell, steps, loops, n, B, x0.shape[1], dt, xp)
    return outputs, state


# ============================================================================ seq2seq models
class Seq2SeqTrace(TraceBase):
    """Trace of :func:`basic_rnn_seq2seq` / :func:`tied_rnn_seq2seq`:
    ``backward(d_outputs, d_final_state)`` -> ``(d_encoder_inputs, d_decoder_inputs)``.

    ``d_outputs`` / ``d_final_state`` are the decoder's cotangents as in
    :class:`RNNDecoderTrace`; the gradient of the encoder's final state (the decoder's initial
    state) flows on into the encoder.  The encoder starts from zeros, a constant (TF's
    ``zero_state``), so nothing is returned for it.  Both lists hold one ``[batch, depth]`` array
    per step.  ``encoder`` (a :func:`npl.nn.static_rnn` trace), ``decoder`` (an
    :class:`RNNDecoderTrace`); ``encoder_cell`` and ``decoder_cell`` (one cell for the tied model,
    whose gradients from both add up in its ``grads``).
    """

    def __init__(self, encoder, decoder, encoder_cell, decoder_cell):
        self.encoder, self.decoder = encoder, decoder
        self.encoder_cell, self.decoder_cell = encoder_cell, decoder_cell
        self._done = False

    @property
    def records(self):
        return self.encoder.records + self.decoder.records

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(list of d_encoder_inputs, list of d_decoder_inputs)``; parameter gradients
        are added to both cells' ``grads``.  Bad cotangents raise before anything is consumed."""
        _ensure_fresh(self, self.encoder, self.encoder.inner)
        self.decoder._prepare(d_outputs, d_final_state)
        _consume(self)
        d_dec, d_enc_state = self.decoder.backward(d_outputs, d_final_state)
        d_enc, _ = self.encoder.backward(None, d_enc_state)
        return d_enc, d_dec


# the encoder copies that basic_rnn_seq2seq made, one per decoder cell (kept while the cell lives)
_ENCODERS = weakref.WeakKeyDictionary()


def _copy_cell(cell):
    """A deep copy of ``cell`` with its own arrays and zero gradients (TF's ``copy.deepcopy``);
    the activation functions stay npl's own objects (the fused kernels recognise them)."""
    memo = {id(a): a for a in _act._BY_NAME.values()}
    clone = copy.deepcopy(cell, memo)
    clone.zero_grad()
    return clone


def encoder_cell_of(cell):
    """The encoder :func:`basic_rnn_seq2seq` made for the decoder ``cell`` (a copy, on its first
    call with ``cell``), or None before that call."""
    _check_cell(cell)
    return _ENCODERS.get(cell)


def _check_encoder_cell(encoder_cell, cell):
    _check_cell(encoder_cell, "encoder_cell")
    if encoder_cell is cell or set(map(id, encoder_cell._leaves())) & set(map(id, cell._leaves())):
        raise ValueError("encoder_cell shares weights with cell, but basic_rnn_seq2seq's encoder "
                         "and decoder have separate weights; use tied_rnn_seq2seq to share them")


def _encode(encoder_inputs, decoder_inputs, enc_cell, dtype, return_trace, loop_function,
            enc_what="the cell was built for it"):
    """The encoder's static_rnn from zeros, after the checks that name both input lists."""
    want = resolve_dtype(dtype)
    xs, _ = _stack_steps(encoder_inputs, empty_error=ValueError, dtype=want, name="encoder_inputs")
    x0 = xs[0]
    if want is not None and x0.dtype != want:
        raise TypeError("encoder_inputs have dtype %s but dtype=%s was given (the initial state's "
                        "dtype; TF's default is float32: pass dtype=np.%s)" % (x0.dtype, want, x0.dtype))
    _check_width(enc_cell, x0, "encoder_inputs[0]", enc_what)
    if isinstance(decoder_inputs, (list, tuple)) and decoder_inputs:
        d0 = float_array(decoder_inputs[0], "decoder_inputs[0]", ndim=2, dtype=x0.dtype)
        if d0.shape[0] != x0.shape[0]:
            raise ValueError("decoder_inputs[0] has batch size %d but encoder_inputs[0] has %d "
                             "(shape %s vs %s)" % (d0.shape[0], x0.shape[0], tuple(d0.shape),
                                                   tuple(x0.shape)))
        if d0.dtype != x0.dtype:
            raise TypeError("decoder_inputs[0] has dtype %s but encoder_inputs have %s"
                            % (d0.dtype, x0.dtype))
    else:
        _steps_check(decoder_inputs, "decoder_inputs", loop_function)      # raises
    return static_rnn(enc_cell, xs, dtype=x0.dtype, return_trace=return_trace)


def basic_rnn_seq2seq(encoder_inputs, decoder_inputs, cell, dtype=np.float32, scope=None,
                      encoder_cell=None, return_trace=False):
    """``tf.contrib.legacy_seq2seq.basic_rnn_seq2seq``: an encoder RNN, then a decoder RNN from
    the encoder's final state; the two have the same structure and separate weights.

    With ``enc`` a copy of ``cell`` (TF's ``copy.deepcopy``)::

        _, s = static_rnn(enc, encoder_inputs, dtype=dtype)      # from zeros of dtype
        outputs, state = rnn_decoder(decoder_inputs, s, cell)

    Returns ``(outputs, state)`` (plus a :class:`Seq2SeqTrace` with ``return_trace=True``, whose
    backward gives the gradients w.r.t. ``encoder_inputs`` and ``decoder_inputs``).  ``dtype``
    must be the inputs' (TF's default float32; None takes the inputs').

    The encoder: the first call with a given ``cell`` makes the copy and keeps it with the cell
    (``encoder_cell_of(cell)`` returns it), and every later call with that cell uses the same
    encoder, as a TF graph keeps one set of encoder variables.  The copy is of the cell as it is
    then: an unbuilt cell gives an unbuilt encoder, built from ``encoder_inputs`` with the cell's
    initialiser and seed (a cell with a fixed ``seed=`` gives the encoder the same draws, as TF's
    copy of a seeded initialiser does); a built one gives copies of its weights.  Pass
    ``encoder_cell=`` (an npl extension) to choose the encoder yourself (set its weights, train
    it): it must not share weights with ``cell``.  The encoder is a cell of its own: move it with
    ``encoder_cell_of(cell).to_device(...)`` when the cell moves.  The optimizer needs both
    cells' parameters; TF's names are ``tf_variable_names(encoder, "basic_rnn_seq2seq/rnn")`` and
    ``tf_variable_names(cell, "basic_rnn_seq2seq/rnn_decoder")`` (with ``scope``: ``<scope>/rnn``,
    ``<scope>/rnn_decoder``).

    >>> import numpy as np, npl
    >>> cell = npl.rnn.GRUCell(3, seed=1)
    >>> enc_x = [np.ones((2, 4), np.float32)] * 5          # 5 encoder steps, input width 4
    >>> dec_x = [np.ones((2, 2), np.float32)] * 3          # 3 decoder steps, input width 2
    >>> outs, state = npl.legacy_seq2seq.basic_rnn_seq2seq(enc_x, dec_x, cell)
    >>> enc = npl.legacy_seq2seq.encoder_cell_of(cell)
    >>> enc.input_size, cell.input_size, len(outs), outs[0].shape
    (4, 2, 3, (2, 3))
    >>> _, s = npl.nn.static_rnn(enc, enc_x, dtype=np.float32)       # the encoder's final state
    >>> ys, h = npl.nn.static_rnn(cell, dec_x, initial_state=s)      # ... starts the decoder
    >>> all(np.array_equal(a, b) for a, b in zip(ys, outs)), np.array_equal(h, state)
    (True, True)
    """
    _check_cell(cell)
    _check_scope(scope)
    if encoder_cell is not None:
        _check_encoder_cell(encoder_cell, cell)
        enc = encoder_cell
    else:
        enc = _ENCODERS.get(cell)
        if enc is None:
            enc = _copy_cell(cell)
    what = "encoder_cell was built for it" if encoder_cell is not None else \
        "the encoder, a copy of cell, was built for it"
    res = _encode(encoder_inputs, decoder_inputs, enc, dtype, return_trace, None, what)
    if encoder_cell is None:
        _ENCODERS[cell] = enc            # kept once the encoder has run
    dec = rnn_decoder(decoder_inputs, res[1], cell, return_trace=return_trace)
    if return_trace:
        return dec[0], dec[1], Seq2SeqTrace(res[2], dec[2], enc, cell)
    return dec


def tied_rnn_seq2seq(encoder_inputs, decoder_inputs, cell, loop_function=None, dtype=np.float32,
                     scope=None, return_trace=False):
    """``tf.contrib.legacy_seq2seq.tied_rnn_seq2seq``: :func:`basic_rnn_seq2seq` with one set
    of weights for the encoder and the decoder::

        _, s = static_rnn(cell, encoder_inputs, dtype=dtype)     # from zeros of dtype
        outputs, state = rnn_decoder(decoder_inputs, s, cell, loop_function)

    so ``encoder_inputs`` and ``decoder_inputs`` have the same width.  Returns ``(outputs,
    state)`` (plus a :class:`Seq2SeqTrace` with ``return_trace=True``; both passes' parameter
    gradients add up in ``cell.grads``).  ``loop_function`` as in :func:`rnn_decoder`, with its
    trace contract.  TF's variable names:
    ``tf_variable_names(cell, "combined_tied_rnn_seq2seq/tied_rnn_seq2seq")`` (with ``scope``:
    ``combined_tied_rnn_seq2seq/<scope>``).

    >>> import numpy as np, npl
    >>> cell = npl.rnn.BasicLSTMCell(3, seed=2)
    >>> xs = [np.full((1, 2), 0.5, np.float32)] * 4
    >>> outs, state = npl.legacy_seq2seq.tied_rnn_seq2seq(xs[:3], xs, cell)
    >>> ys, st = npl.nn.static_rnn(cell, xs[:3] + xs, dtype=np.float32)    # one RNN over both
    >>> np.allclose(outs[-1], ys[-1]), np.allclose(state.c, st.c)
    (True, True)
    """
    _check_cell(cell)
    _check_scope(scope)
    _check_loop_function(loop_function, return_trace)
    res = _encode(encoder_inputs, decoder_inputs, cell, dtype, return_trace, loop_function)
    dec = rnn_decoder(decoder_inputs, res[1], cell, loop_function=loop_function,
                      return_trace=return_trace)
    if return_trace:
        return dec[0], dec[1], Seq2SeqTrace(res[2], dec[2], cell, cell)
    return dec
