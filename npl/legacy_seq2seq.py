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

    embedding_rnn_decoder   <"embedding_rnn_decoder">/embedding, .../rnn_decoder/<cell>/...
    embedding_rnn_seq2seq   <"embedding_rnn_seq2seq">/rnn/embedding_wrapper/{embedding, <cell>/...}
                            .../embedding_rnn_decoder/{embedding, rnn_decoder/output_projection_wrapper/...}

The embedding models keep the variables they make (the decoder's embedding, the encoder's
EmbeddingWrapper around a copy of the cell, the OutputProjectionWrapper) with the cell:
``embedding_model_of(cell)`` gives them, with ``params`` / ``grads`` under these names.

``attention_decoder`` (TF's ``<"attention_decoder">/AttnW_0``, ``.../Attention_0/kernel``,
``.../AttnOutputProjection/kernel``, ``.../kernel`` and ``.../<cell>/...``) keeps its variables
with the cell too: ``attention_model_of(cell)``.

Not here: ``embedding_tied_rnn_seq2seq``, ``embedding_attention_decoder``,
``embedding_attention_seq2seq``, ``one2many_rnn_seq2seq`` and ``model_with_buckets``;
``feed_previous`` as a tensor (TF's graph cond) is not supported.
"""
import contextlib
import copy
import inspect

import numpy as np

from .backend import get_array_module
from .cells import TraceBase, flat_records, watch_with, hold_with, _describe
from ._checks import float_array, check_shape, check_dtype, check_on_device, resolve_dtype
from .rnn_ops import static_rnn, _stack_steps, _check_cell, _ensure_fresh, _consume, _step_cotangents
from .losses import sequence_loss, sequence_loss_by_example
from . import activations as _act

__all__ = ["rnn_decoder", "basic_rnn_seq2seq", "tied_rnn_seq2seq", "encoder_cell_of",
           "embedding_rnn_decoder", "embedding_rnn_seq2seq", "embedding_model_of", "EmbeddingModel",
           "EmbeddingDecoderTrace", "attention_decoder", "attention_model_of", "AttentionModel",
           "AttentionDecoderTrace",
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
    a = float_array(value, name, ndim=2, dtype=like.dtype)     # a Python list takes the dtype
    check_on_device(a, name, xp, "decoder_inputs[0]")
    if tuple(a.shape) != tuple(like.shape):
        raise ValueError("%s must return shape %s (that of decoder_inputs[0]: [batch, input_size]), "
                         "got %s" % (name, tuple(like.shape), tuple(a.shape)))
    check_dtype(a, like.dtype, name)
    return a


@contextlib.contextmanager
def _one_variational_mask(cell):
    """A decoder with a loop function runs one single-step pass per step, and a DropoutWrapper
    draws its masks per pass; TF1's ``variational_recurrent`` keeps one mask over the whole
    decode, so after the first step (``first_step_done()``) the variational wrappers in training
    mode replay theirs, and their ``replay`` flags are put back afterwards.  (Other dropout draws
    a new mask at every step, in TF as here.)"""
    from .layers import DropoutWrapper, _walk_cells
    wrappers = [w for w in _walk_cells(cell) if isinstance(w, DropoutWrapper)
                and w.variational_recurrent and w.training and not w.replay]

    def first_step_done():
        for w in wrappers:
            w.replay = True
    try:
        yield first_step_done
    finally:
        for w in wrappers:
            w.replay = False


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

    def labelled_records(self, label):
        """(record, label) pairs for npl.inspect: the static_rnn trace's layers, or with a loop
        function ``"step i layer k"`` (one single-step pass per step)."""
        if self.loop_traces is None:
            return label(self.steps[0])
        return [(r, "step %d %s" % (i, lab)) for i, st in enumerate(self.steps) for r, lab in label(st)]

    def _check_d_outputs(self, d_outputs):
        """Every entry checked before any is used: a list of n (arrays or None), or all None."""
        out = [None] * self._n
        checked = _step_cotangents(d_outputs, self._n, (self._batch, self.cell.output_size),
                                   self._dtype, self._xp)
        for t, g in checked or ():
            out[t] = g
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
    from .layers import _state_dtype
    xs, n = _steps_check(decoder_inputs, "decoder_inputs", loop_function,
                         _state_dtype(initial_state))     # Python lists take the state's dtype
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
    with _one_variational_mask(cell) as first_step_done:
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
            if i == 0:
                first_step_done()
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

    def labelled_records(self, label):
        """(record, label) pairs for npl.inspect: ``"encoder layer k"``, then the decoder's."""
        return ([(r, "encoder " + lab) for r, lab in label(self.encoder)]
                + [(r, "decoder " + lab) for r, lab in label(self.decoder)])

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(list of d_encoder_inputs, list of d_decoder_inputs)``; parameter gradients
        are added to both cells' ``grads``.  Bad cotangents raise before anything is consumed."""
        _ensure_fresh(self, self.encoder, self.encoder.inner)
        self.decoder._prepare(d_outputs, d_final_state)
        _consume(self)
        d_dec, d_enc_state = self.decoder.backward(d_outputs, d_final_state)
        d_enc, _ = self.encoder.backward(None, d_enc_state)
        return d_enc, d_dec


# What the models make for a cell on its first call (basic_rnn_seq2seq's encoder, an embedding
# model) is kept in an attribute of the cell object itself, so that it lives and is copied
# (copy.deepcopy) with the cell, as a TF graph keeps one set of variables with the model.
_KEPT = "_legacy_seq2seq_kept"


def _kept(cell, key):
    return vars(cell).get(_KEPT, {}).get(key)


def _keep(cell, key, value):
    vars(cell).setdefault(_KEPT, {})[key] = value


def _copy_cell(cell):
    """A deep copy of ``cell`` with its own arrays and zero gradients (TF's ``copy.deepcopy``);
    the activation functions stay npl's own objects (the fused kernels recognise them), and what
    the models kept with ``cell`` is not copied."""
    memo = {id(a): a for a in _act._BY_NAME.values()}
    kept = vars(cell).pop(_KEPT, None)
    try:
        clone = copy.deepcopy(cell, memo)
    finally:
        if kept is not None:
            vars(cell)[_KEPT] = kept
    clone.zero_grad()
    return clone


def _refuse_built(cell, fn, what, remedy):
    """TF copies (and creates) a model's variables when the graph is built, before the cell has
    weights; a copy of a *built* npl cell would silently start ``what`` from the decoder's own
    (possibly trained) weights, so the first call must see an unbuilt cell."""
    if cell.built:
        raise ValueError(
            "%s: cell is built but has no %s kept with it (this is a first call with this cell "
            "object: e.g. a copy.deepcopy made before the first call, a new wrapper around a built "
            "cell, or a cell restored in a new process).  Making it now would copy the cell's own "
            "weights and silently lose any trained %s.  %s" % (fn, what, what, remedy))


def encoder_cell_of(cell):
    """The encoder :func:`basic_rnn_seq2seq` uses for the decoder ``cell``: the copy it made on
    its first call with ``cell``, or the latest ``encoder_cell=`` given; None before any call.
    It is kept in the cell object, so ``copy.deepcopy(cell)`` copies it too."""
    _check_cell(cell)
    return _kept(cell, "encoder")


def _check_encoder_cell(encoder_cell, cell):
    _check_cell(encoder_cell, "encoder_cell")
    if encoder_cell is cell or set(map(id, encoder_cell._leaves())) & set(map(id, cell._leaves())):
        raise ValueError("encoder_cell shares weights with cell, but basic_rnn_seq2seq's encoder "
                         "and decoder have separate weights; use tied_rnn_seq2seq to share them")
    if encoder_cell.state_size != cell.state_size:
        raise ValueError("encoder_cell's final state starts the decoder, so its state_size must be "
                         "cell's: encoder_cell.state_size is %r, cell.state_size is %r"
                         % (encoder_cell.state_size, cell.state_size))
    if encoder_cell.built and cell.built and encoder_cell.dtype != cell.dtype:
        raise TypeError("encoder_cell has dtype %s but cell has %s" % (encoder_cell.dtype, cell.dtype))


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

    The encoder: the first call with a given ``cell`` makes the copy and keeps it in the cell
    object (``encoder_cell_of(cell)`` returns it; ``copy.deepcopy(cell)`` copies it too), and
    every later call with that cell uses the same encoder, as a TF graph keeps one set of encoder
    variables.  As TF copies the cell before it has variables, the first call needs an unbuilt
    cell, which gives an unbuilt encoder, built from ``encoder_inputs`` with the cell's
    initialiser and seed (a cell with a fixed ``seed=`` gives the encoder the same draws, as TF's
    copy of a seeded initialiser does).  A built cell with no encoder kept (a deep copy made
    before the first call, a new wrapper around a built cell, a cell restored in a new process)
    is refused with a ValueError rather than silently given a copy of its own weights.  To
    restore a model, make one call with unbuilt cells and then restore both cells' weights, or
    pass ``encoder_cell=`` (an npl extension) to choose the encoder yourself (set its weights,
    train it): it must not share weights with ``cell``, its ``state_size`` must be ``cell``'s,
    and it is then the one kept.  The kept encoder follows the cell: after ``cell.to_device``
    the next call moves it too.  The optimizer needs both
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
        enc = _kept(cell, "encoder")
        _follow_cell(enc, _cell_xp(cell))
        if enc is None:
            _refuse_built(cell, "basic_rnn_seq2seq", "encoder",
                          "Pass the encoder as encoder_cell= (encoder_cell_of(the original cell), "
                          "or a cell with the restored encoder weights), or make the first call "
                          "with an unbuilt cell.")
            enc = _copy_cell(cell)
    what = "encoder_cell was built for it" if encoder_cell is not None else \
        "the encoder, a copy of cell, was built for it"
    res = _encode(encoder_inputs, decoder_inputs, enc, dtype, return_trace, None, what)
    _keep(cell, "encoder", enc)          # kept once the encoder has run
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


# ============================================================================ embedding models
class _KeptModel:
    """What a model function made for a cell and keeps with it: ``params`` / ``grads`` are every
    variable under its TF name (live arrays), from the subclass's ``_named("params" | "grads")``."""

    @property
    def params(self):
        return self._named("params")

    @property
    def grads(self):
        return self._named("grads")


class EmbeddingModel(_KeptModel):
    """What an embedding model made for a ``cell`` on its first call and keeps with it (one per
    cell, as a TF graph keeps one set of variables): ``embedding`` (an
    :class:`npl.layers.Embedding` with a dense gradient, the decoder's ``embedding`` variable),
    ``decoder_cell`` (``cell``, or the :class:`npl.rnn.OutputProjectionWrapper` around it that
    ``embedding_rnn_seq2seq`` adds without ``output_projection``) and ``encoder_cell`` (the
    seq2seq model's :class:`npl.rnn.EmbeddingWrapper` around a copy of ``cell``; None for the
    decoder alone).  ``params`` / ``grads``: every variable under its TF 1.15 name (for the
    ``scope`` of the latest call), live arrays, for an optimizer and for TF checkpoints;
    ``zero_grad()`` clears them all.  ``embedding_model_of(cell)`` returns it."""

    def __init__(self, kind, embedding, decoder_cell, encoder_cell, key):
        self.kind, self.embedding = kind, embedding
        self.decoder_cell, self.encoder_cell = decoder_cell, encoder_cell
        self._key, self.scope = key, kind

    def _named(self, which):
        from .convert import tf_variable_names
        s = self.scope
        dec = s if self.kind == "embedding_rnn_decoder" else s + "/embedding_rnn_decoder"
        out = {dec + "/embedding": getattr(self.embedding, which)["embeddings"]}
        parts = [(self.decoder_cell, dec + "/rnn_decoder")]
        if self.encoder_cell is not None:
            parts.append((self.encoder_cell, s + "/rnn"))
        for c, sc in parts:
            live = getattr(c, which)
            out.update({tf: live[k] for k, tf in tf_variable_names(c, sc).items()})
        return out

    def zero_grad(self):
        self.embedding.zero_grad()
        self.decoder_cell.zero_grad()
        if self.encoder_cell is not None:
            self.encoder_cell.zero_grad()


def embedding_model_of(cell):
    """The :class:`EmbeddingModel` that ``embedding_rnn_decoder`` / ``embedding_rnn_seq2seq``
    made for ``cell`` (on its first call with it), or None before.  It is kept in the cell
    object, so ``copy.deepcopy(cell)`` copies it too."""
    _check_cell(cell)
    return _kept(cell, "embedding model")


def _cell_xp(cell):
    """Where ``cell`` computes: its parameters' array module (its home backend while unbuilt)."""
    return get_array_module(*cell.params.values()) if cell.built else cell._home_xp()


def _follow_cell(obj, xp):
    """Move a kept part (a cell or layer: an encoder copy, an embedding) to ``xp`` when the
    decoder cell was moved since it was made (``cell.to_device``): the parts follow the cell."""
    from .layers import _VariableWrapper
    if obj is None or not obj.built:
        return
    if isinstance(obj, _VariableWrapper):          # the cell inside may have moved alone
        _follow_cell(obj.wrapped_cell, xp)
        _follow(obj._own, xp)
    elif get_array_module(*obj.params.values()) is not xp:
        obj.to_device("numpy" if xp is np else "cupy")


def _model(cell, kind, scope, key, dtype, make):
    m = _kept(cell, "embedding model")
    if m is not None:
        xp = _cell_xp(cell)
        for part in (m.embedding, m.decoder_cell, m.encoder_cell):
            _follow_cell(part, xp)
    if m is None:
        _refuse_built(cell, kind, "embedding model",
                      "Make the first call with an unbuilt cell (then restore the weights into "
                      "embedding_model_of(cell).params), or keep using the original cell object.")
        m = make()
        m._key = key
        _keep(cell, "embedding model", m)
    elif m.kind != kind or m._key != key:
        raise ValueError("%s: this cell was first used by %s with (symbols, embedding_size, "
                         "output projection) %s, now %s; its variables cannot change: use a new "
                         "cell" % (kind, m.kind, m._key, key))
    if m.embedding.dtype != dtype:
        raise TypeError("%s: the model's variables are %s but this call is %s (no silent casting)"
                        % (kind, m.embedding.dtype, dtype))
    m.scope = scope
    return m


def _symbol_ids(inputs, name, num):
    from .array_ops import _int_array
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise (ValueError if isinstance(inputs, (list, tuple)) else TypeError)(
            "%s must be a non-empty list of [batch] integer id arrays, one per step, got %s"
            % (name, "an empty list" if isinstance(inputs, (list, tuple)) else type(inputs).__name__))
    ids = []
    for t, a in enumerate(inputs):
        nm = "%s[%d]" % (name, t)
        a = _int_array(a, nm)
        if a.ndim != 1:
            raise ValueError("%s must have shape [batch] (one symbol id per row), got %s" % (nm, tuple(a.shape)))
        if ids and a.shape != ids[0].shape:
            raise ValueError("%s has shape %s but %s[0] has %s" % (nm, tuple(a.shape), name, tuple(ids[0].shape)))
        if a.size and (int(a.min()) < 0 or int(a.max()) >= num):
            raise ValueError("%s must be ids in [0, %d) (the symbols), got min %d max %d"
                             % (nm, num, int(a.min()), int(a.max())))
        ids.append(a)
    return get_array_module(ids[0]).stack(ids)                # [T, B]


def _check_projection(output_projection, num_symbols, width, dtype):
    if output_projection is None:
        return None
    if not isinstance(output_projection, (tuple, list)) or len(output_projection) != 2:
        raise TypeError("output_projection must be None or a pair (W, B), got %s"
                        % _describe(output_projection))
    W = float_array(output_projection[0], "output_projection[0] (W)", ndim=2)
    b = float_array(output_projection[1], "output_projection[1] (B)", ndim=1)
    check_shape(W, (width, num_symbols), "output_projection[0] (W: [cell.output_size, num_symbols])")
    check_shape(b, (num_symbols,), "output_projection[1] (B: [num_symbols])")
    check_dtype(W, dtype, "output_projection[0] (W)")
    check_dtype(b, dtype, "output_projection[1] (B)")
    return W, b


class _ArgmaxEmbedTrace:
    """The loop function's trace: no gradient reaches ``prev`` through the argmax (as in TF); the
    embedded rows get ``d_next`` unless ``update_embedding_for_previous`` is False (TF's
    stop_gradient)."""

    def __init__(self, layer, ids, update):
        self.layer, self.ids, self.update = layer, ids, update

    def backward(self, d_next):
        if self.update:
            from .array_ops import _scatter_add
            _scatter_add(self.layer._grads["embeddings"], self.ids, d_next)
        return None


def _extract_argmax_and_embed(layer, projection, update):
    """TF's ``_extract_argmax_and_embed``: ``embedding[argmax(prev @ W + B)]`` (``prev`` as it is
    without a projection), with the trace contract of :func:`rnn_decoder`."""
    def loop_function(prev, i, return_trace=False):
        logits = prev if projection is None else prev @ projection[0] + projection[1]
        ids = logits.argmax(1)
        E = layer.params["embeddings"]
        emb = get_array_module(E).take(E, ids, axis=0)
        return (emb, _ArgmaxEmbedTrace(layer, ids, update)) if return_trace else emb
    return loop_function


class EmbeddingDecoderTrace(TraceBase):
    """Trace of :func:`embedding_rnn_decoder`: ``backward(d_outputs, d_final_state)`` ->
    ``(None, d_initial_state)`` (ids have no gradient); the embedding's gradient (the looked-up
    rows, and with ``feed_previous`` the fed-back rows unless ``update_embedding_for_previous``
    is False) is added to ``embedding.grads``, the cell's to its ``grads``.  ``inner``: the
    :class:`RNNDecoderTrace`."""

    def __init__(self, inner, layer, ids):
        self.inner, self.layer, self._ids = inner, layer, ids
        self._done = False

    @property
    def records(self):
        return self.inner.records

    def labelled_records(self, label):
        return label(self.inner)

    def _prepare(self, d_outputs, d_final_state):
        _ensure_fresh(self)
        return self.inner._prepare(d_outputs, d_final_state)

    def backward(self, d_outputs=None, d_final_state=None):
        from .array_ops import _scatter_add
        self._prepare(d_outputs, d_final_state)
        _consume(self)
        d_in, d0 = self.inner.backward(d_outputs, d_final_state)
        g = self.layer._grads["embeddings"]
        xp = get_array_module(g)
        _scatter_add(g, self._ids.reshape(-1), xp.stack(d_in).reshape(-1, g.shape[1]))
        return None, d0


def _embedding_decode(layer, decoder_inputs, initial_state, cell, num_symbols, output_projection,
                      feed_previous, update, return_trace):
    if not isinstance(feed_previous, (bool, np.bool_)):
        raise TypeError("feed_previous must be a bool (TF's tensor form, a graph cond, is not "
                        "supported), got %r" % (feed_previous,))
    if not isinstance(update, (bool, np.bool_)):
        raise TypeError("update_embedding_for_previous must be a bool, got %r" % (update,))
    E = layer.params["embeddings"]
    proj = _check_projection(output_projection, num_symbols, cell.output_size, E.dtype)
    ids = _symbol_ids(decoder_inputs, "decoder_inputs", num_symbols)
    emb = get_array_module(E).take(E, ids, axis=0)            # one gather over [T, B]
    loop = _extract_argmax_and_embed(layer, proj, bool(update)) if feed_previous else None
    res = rnn_decoder([emb[t] for t in range(emb.shape[0])], initial_state, cell,
                      loop_function=loop, return_trace=return_trace)
    if return_trace:
        watch_with(res[2].records, layer)         # a replaced embedding: caught before any backward
        hold_with(res[2].records, emb)            # trace memory: the gathered inputs
        return res[0], res[1], EmbeddingDecoderTrace(res[2], layer, ids)
    return res


def _new_embedding(num_symbols, embedding_size, dtype):
    from .layers import Embedding
    from .initializers import glorot_uniform_initializer
    return Embedding(num_symbols, embedding_size, dtype=dtype, sparse_grad=False,
                     embeddings_initializer=glorot_uniform_initializer())


def embedding_rnn_decoder(decoder_inputs, initial_state, cell, num_symbols, embedding_size,
                          output_projection=None, feed_previous=False,
                          update_embedding_for_previous=True, scope=None, return_trace=False):
    """``tf.contrib.legacy_seq2seq.embedding_rnn_decoder``: symbol ids embedded, then
    :func:`rnn_decoder`::

        x_i = embedding[decoder_inputs[i]]              # embedding [num_symbols, embedding_size]
        y_i, s_i = cell(x_i, s_{i-1})                   # s_{-1} = initial_state
        with feed_previous, for i >= 1:
        x_i = embedding[argmax(y_{i-1} @ W + B)]        # (W, B) = output_projection, or y_{i-1}

    ``decoder_inputs``: a list of T int arrays ``[batch]`` in ``[0, num_symbols)``; returns
    ``(outputs, state)``, ``outputs`` T arrays ``[batch, cell.output_size]`` (unprojected, as TF),
    plus an :class:`EmbeddingDecoderTrace` with ``return_trace=True``.  The embedding (TF's
    ``<scope>/embedding``, glorot uniform, ``get_variable``'s default) is an
    :class:`npl.layers.Embedding` made on the first call with ``cell`` and kept with it:
    ``embedding_model_of(cell)`` gives it and every variable under TF's names (the cell's
    ``<scope>/rnn_decoder/<cell>/...``).  Its dtype is the initial state's (an npl extension:
    TF 1.15 creates it in the scope's dtype, float32 by default, so that a float64 state fails
    there).  No gradient passes the argmax; the fed-back rows get theirs unless
    ``update_embedding_for_previous`` is False (TF's ``stop_gradient``).  ``output_projection``: ``(W [cell.output_size, num_symbols],
    B [num_symbols])`` arrays, read by the argmax only (so they get no gradient, as in TF).

    >>> import numpy as np, npl
    >>> cell = npl.rnn.GRUCell(4, seed=0)
    >>> ids = [np.array([1, 2]), np.array([0, 3])]
    >>> h0 = np.zeros((2, 4), np.float32)
    >>> outs, h = npl.legacy_seq2seq.embedding_rnn_decoder(ids, h0, cell, 5, 3)
    >>> E = npl.legacy_seq2seq.embedding_model_of(cell).embedding.params["embeddings"]
    >>> ys, s = npl.nn.static_rnn(cell, [E[i] for i in ids], initial_state=h0)
    >>> np.allclose(outs[1], ys[1]), sorted(npl.legacy_seq2seq.embedding_model_of(cell).params)[0]
    (True, 'embedding_rnn_decoder/embedding')
    """
    _check_cell(cell)
    _check_scope(scope)
    if initial_state is None:
        raise TypeError("initial_state is required (TF's embedding_rnn_decoder has no default)")
    from .layers import _state_dtype, _check_count
    _check_count(num_symbols, "num_symbols", "embedding_rnn_decoder")
    _check_count(embedding_size, "embedding_size", "embedding_rnn_decoder")
    dt = resolve_dtype(_state_dtype(initial_state), "initial_state's dtype")
    key = (num_symbols, embedding_size, None)
    m = _model(cell, "embedding_rnn_decoder", scope or "embedding_rnn_decoder", key, dt,
               lambda: EmbeddingModel("embedding_rnn_decoder",
                                      _new_embedding(num_symbols, embedding_size, dt), cell, None, key))
    return _embedding_decode(m.embedding, decoder_inputs, initial_state, cell, num_symbols,
                             output_projection, feed_previous, update_embedding_for_previous,
                             return_trace)


def embedding_rnn_seq2seq(encoder_inputs, decoder_inputs, cell, num_encoder_symbols,
                          num_decoder_symbols, embedding_size, output_projection=None,
                          feed_previous=False, dtype=None, scope=None, return_trace=False):
    """``tf.contrib.legacy_seq2seq.embedding_rnn_seq2seq``::

        enc = EmbeddingWrapper(copy of cell, num_encoder_symbols, embedding_size)
        _, s = static_rnn(enc, encoder_inputs, dtype=dtype)              # from zeros
        dec = OutputProjectionWrapper(cell, num_decoder_symbols) if output_projection is None else cell
        outputs, state = embedding_rnn_decoder(decoder_inputs, s, dec, num_decoder_symbols,
                                               embedding_size, output_projection, feed_previous)

    Inputs are lists of int arrays ``[batch]``; ``dtype`` defaults to float32 (TF's scope dtype).
    Returns ``(outputs, state)`` (outputs ``[batch, num_decoder_symbols]`` logits without
    ``output_projection``), plus a :class:`Seq2SeqTrace` whose ``backward`` returns
    ``(None, None)`` (ids have no gradient) and adds every variable's gradient.  The encoder, the
    decoder cell and the decoder's embedding are made on the first call with ``cell`` and kept
    with it: ``embedding_model_of(cell)`` gives them and ``params`` / ``grads`` under TF's names
    (``<scope>/rnn/embedding_wrapper/embedding``, ``<scope>/rnn/embedding_wrapper/<cell>/...``,
    ``<scope>/embedding_rnn_decoder/embedding``,
    ``<scope>/embedding_rnn_decoder/rnn_decoder/output_projection_wrapper/<cell>/...`` and
    ``.../output_projection_wrapper/kernel``, ``bias``).  Later calls with the same cell must use
    the same sizes and the same choice of output projection.

    >>> import numpy as np, npl
    >>> cell = npl.rnn.BasicLSTMCell(4, seed=0)
    >>> enc = [np.array([1, 2]), np.array([0, 3])]; dec = [np.array([0, 0])] * 3
    >>> outs, st = npl.legacy_seq2seq.embedding_rnn_seq2seq(enc, dec, cell, 4, 6, 3)
    >>> m = npl.legacy_seq2seq.embedding_model_of(cell)
    >>> _, s = npl.nn.static_rnn(m.encoder_cell, enc, dtype=np.float32)
    >>> E = m.embedding.params["embeddings"]
    >>> ys, _ = npl.nn.static_rnn(m.decoder_cell, [E[i] for i in dec], initial_state=s)
    >>> np.allclose(outs[2], ys[2]), outs[0].shape
    (True, (2, 6))
    """
    from .layers import EmbeddingWrapper, OutputProjectionWrapper, _check_count
    _check_cell(cell)
    _check_scope(scope)
    for v, nm in ((num_encoder_symbols, "num_encoder_symbols"),
                  (num_decoder_symbols, "num_decoder_symbols"), (embedding_size, "embedding_size")):
        _check_count(v, nm, "embedding_rnn_seq2seq")
    if isinstance(encoder_inputs, (list, tuple)) and isinstance(decoder_inputs, (list, tuple)) \
            and encoder_inputs and decoder_inputs:
        be, bd = np.shape(encoder_inputs[0]), np.shape(decoder_inputs[0])
        if be[:1] != bd[:1]:
            raise ValueError("decoder_inputs[0] has batch size %s but encoder_inputs[0] has %s "
                             "(shapes %s and %s)" % (bd[:1], be[:1], bd, be))
    dt = resolve_dtype(dtype) or np.dtype(np.float32)
    key = (num_encoder_symbols, num_decoder_symbols, embedding_size, output_projection is None)

    def make():
        enc = EmbeddingWrapper(_copy_cell(cell), num_encoder_symbols, embedding_size)
        dec = OutputProjectionWrapper(cell, num_decoder_symbols) if output_projection is None else cell
        return EmbeddingModel("embedding_rnn_seq2seq",
                              _new_embedding(num_decoder_symbols, embedding_size, dt), dec, enc, key)
    m = _model(cell, "embedding_rnn_seq2seq", scope or "embedding_rnn_seq2seq", key, dt, make)
    res = static_rnn(m.encoder_cell, encoder_inputs, dtype=dt, return_trace=return_trace)
    dec = _embedding_decode(m.embedding, decoder_inputs, res[1], m.decoder_cell,
                            num_decoder_symbols, output_projection, feed_previous, True, return_trace)
    if return_trace:
        return dec[0], dec[1], Seq2SeqTrace(res[2], dec[2], m.encoder_cell, m.decoder_cell)
    return dec


# ============================================================================ attention decoder
def _state_leaves(s):
    """TF's ``nest.flatten`` of a state: the arrays of a (nested) tuple, in order (c before h)."""
    if isinstance(s, (tuple, list)):
        return [a for v in s for a in _state_leaves(v)]
    return [s]


def _state_like(like, leaves):
    """``nest.pack_sequence_as(like, leaves)``."""
    it = iter(leaves)

    def build(s):
        if isinstance(s, (tuple, list)):
            vals = [build(v) for v in s]
            return type(s)(*vals) if hasattr(s, "_fields") else type(s)(vals)
        return next(it)
    return build(like)


def _attention_names(num_heads):
    """TF 1.15's variable names of attention_decoder relative to its scope, with their roles."""
    names = []
    for a in range(num_heads):
        names += ["AttnW_%d" % a, "AttnV_%d" % a]
    names += ["kernel", "bias"]
    for a in range(num_heads):
        names += ["Attention_%d/kernel" % a, "Attention_%d/bias" % a]
    return names + ["AttnOutputProjection/kernel", "AttnOutputProjection/bias"]


class AttentionModel(_KeptModel):
    """The variables :func:`attention_decoder` makes for a ``cell`` on its first call and keeps
    with it (one set per cell, as a TF graph keeps one).  ``variables``: a parameter leaf holding
    TF 1.15's variables under their names relative to the scope (D = attn_size, H = num_heads,
    I = the decoder inputs' width, Q = the flattened state's width, P = cell.output_size,
    O = output_size)::

        AttnW_<a>                     [1, 1, D, D]    the 1x1 convolution of attention_states
        AttnV_<a>                     [D]
        kernel, bias                  [I + H*D, I], [I]      input linear on [x_i, attns]
        Attention_<a>/kernel, /bias   [Q, D], [D]            query linear on the flat state
        AttnOutputProjection/kernel   [P + H*D, O], bias [O]

    (kernels and ``AttnV`` glorot uniform, ``get_variable``'s default; biases zeros, TF's
    ``_linear``).  ``params`` / ``grads``: those and the cell's, under TF's full names for the
    ``scope`` of the latest call (``attention_decoder/AttnW_0``,
    ``attention_decoder/gru_cell/gates/kernel``), live arrays; ``zero_grad()`` clears them all.
    ``attention_model_of(cell)`` returns it."""

    kind = "attention_decoder"

    def __init__(self, cell, variables, key):
        self.cell, self.variables, self._key = cell, variables, key
        self.scope = "attention_decoder"
        self.num_heads = key[2]

    def _named(self, which):
        from .convert import tf_variable_names
        s = self.scope
        out = {s + "/" + k: v for k, v in getattr(self.variables, which).items()}
        live = getattr(self.cell, which)
        out.update({tf: live[k] for k, tf in tf_variable_names(self.cell, s).items()})
        return out

    def zero_grad(self):
        self.variables.zero_grad()
        self.cell.zero_grad()

    def set_params(self, values):
        """Copy ``{TF full name: array}`` into the variables in place (every name, as
        :attr:`params` lists them; unknown or missing names and wrong shapes raise ValueError
        before anything changes); traces of earlier forwards then raise StaleTraceError."""
        from .layers import _validate_values, _assign
        if not isinstance(values, dict):
            raise TypeError("set_params expects a dict name -> array, got %s" % type(values).__name__)
        _validate_values(self.params, values, True, "attention_decoder's model")
        pre = self.scope + "/"
        own = {k[len(pre):]: v for k, v in values.items() if k[len(pre):] in self.variables._params}
        for k, v in own.items():
            _assign(self.variables._params[k], v)
        self.variables._bump_version()
        from .convert import tf_variable_names
        self.cell.set_params({k: values[tf] for k, tf in tf_variable_names(self.cell, self.scope).items()})
        return self


def attention_model_of(cell):
    """The :class:`AttentionModel` that :func:`attention_decoder` made for ``cell`` (on its first
    call with it), or None before.  It is kept in the cell object (``copy.deepcopy(cell)`` copies
    it too)."""
    _check_cell(cell)
    return _kept(cell, "attention model")


def _follow(variables, xp):
    """Move a kept model's variables (a parameter leaf) to ``xp``, the cell's array module, when
    the cell was moved since they were made (``cell.to_device``): the model follows its cell."""
    from .backend import to_device
    p = variables._params
    if p and get_array_module(*p.values()) is not xp:
        name = "numpy" if xp is np else "cupy"
        variables._params = {k: to_device(v, name) for k, v in p.items()}
        variables._grads = {k: to_device(v, name) for k, v in variables._grads.items()}
        variables._bump_version()


def _new_attention_variables(I, D, H, Q, P, O, dtype, xp):
    from .layers import _WrapperVariables
    from .initializers import glorot_uniform_initializer
    from . import random as _random
    rng, glorot = _random.generator(None), glorot_uniform_initializer()
    shapes = {}
    for a in range(H):
        shapes["AttnW_%d" % a], shapes["AttnV_%d" % a] = (1, 1, D, D), (D,)
        shapes["Attention_%d/kernel" % a], shapes["Attention_%d/bias" % a] = (Q, D), (D,)
    shapes.update({"kernel": (I + H * D, I), "bias": (I,),
                   "AttnOutputProjection/kernel": (P + H * D, O), "AttnOutputProjection/bias": (O,)})
    values = {k: (np.zeros(shapes[k], dtype) if k.endswith("bias") else
                  np.asarray(glorot(shapes[k], dtype, rng=rng))) for k in _attention_names(H)}
    v = _WrapperVariables("attention_decoder")
    v._create(values, dtype, xp)
    return v


def _attention_arg_checks(num_heads, output_size, initial_state_attention):
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, np.integer)):
        raise TypeError("num_heads must be an integer >= 1, got %r" % (num_heads,))
    if num_heads < 1:
        raise ValueError("num_heads must be >= 1 (with less than 1 heads use a non-attention "
                         "decoder, as TF says), got %d" % num_heads)
    if output_size is not None and (isinstance(output_size, bool) or
                                    not isinstance(output_size, (int, np.integer)) or output_size < 1):
        raise ValueError("output_size must be None (cell.output_size) or a positive integer, got %r"
                         % (output_size,))
    if not isinstance(initial_state_attention, (bool, np.bool_)):
        raise TypeError("initial_state_attention must be a bool, got %r" % (initial_state_attention,))


class _AttentionWeights:
    """One forward's view of the attention variables: the heads' matrices side by side, so that
    each linear is one GEMM per step for all heads."""

    def __init__(self, v, H, D, xp):
        p = v._params
        self.Wf = xp.concatenate([p["AttnW_%d" % a].reshape(D, D) for a in range(H)], 1)  # [D, H*D]
        self.V = xp.stack([p["AttnV_%d" % a] for a in range(H)])                         # [H, D]
        self.Wq = xp.concatenate([p["Attention_%d/kernel" % a] for a in range(H)], 1)    # [Q, H*D]
        self.bq = xp.concatenate([p["Attention_%d/bias" % a] for a in range(H)])        # [H*D]
        self.Win, self.bin = p["kernel"], p["bias"]
        self.Wout, self.bout = p["AttnOutputProjection/kernel"], p["AttnOutputProjection/bias"]


def _attend(w, F, hid, state, xp):
    """TF's ``attention(query)`` for all heads: returns reads [B, H, D] and what the backward
    needs (q, tanh, softmax)."""
    B, L, H, D = F.shape
    q = xp.concatenate(_state_leaves(state), 1) if isinstance(state, (tuple, list)) else state
    u = (q @ w.Wq + w.bq).reshape(B, 1, H, D)                  # one GEMM for the heads
    th = xp.tanh(F + u)                                          # [B, L, H, D]
    e = (th * w.V).sum(-1)                                       # [B, L, H]
    e = e - e.max(1, keepdims=True)
    p = xp.exp(e)
    p /= p.sum(1, keepdims=True)                                 # softmax over the length
    reads = xp.matmul(p.transpose(0, 2, 1), hid)                 # [B, H, L] @ [B, L, D]
    return reads, (q, th, p)


class AttentionDecoderTrace(TraceBase):
    """Trace of :func:`attention_decoder`: ``backward(d_outputs, d_final_state)`` ->
    ``(d_decoder_inputs, d_initial_state, d_attention_states)``.

    ``d_outputs``: a list of one ``[batch, output_size]`` array (or None) per step, or None;
    ``d_final_state`` structured as the final state, or None.  Every gradient of the model's
    variables is added to ``attention_model_of(cell).grads`` (the cell's to ``cell.grads``).
    ``steps``: the cell's single-step :func:`npl.nn.static_rnn` traces; ``loop_traces[i]`` the
    loop function's trace for input i (None without one, or for i = 0)."""

    def __init__(self, model, steps, loop_traces, saved, n, B, I, dtype, xp):
        self.model, self.cell, self.steps, self.loop_traces = model, model.cell, steps, loop_traces
        self._saved, self._n, self._batch, self._width = saved, n, B, I
        self._dtype, self._xp = dtype, xp
        self._version = model.variables._version
        self._done = False
        atts = ([saved["att0"]] if saved["att0"] is not None else []) + saved["att"]
        states = [a for st in saved["states"] for a in _state_leaves(st)
                  if getattr(a, "base", 0) is None]           # each step's state, where a copy
        hold_with(self.records, *[a for q, th, p in atts for a in (q, th, p)],   # trace memory
                  *saved["cat_in"], *saved["cat_out"], *states)

    @property
    def records(self):
        return flat_records([r for s in self.steps for r in s.records])

    def labelled_records(self, label):
        return [(r, "step %d %s" % (i, lab)) for i, st in enumerate(self.steps) for r, lab in label(st)]

    def _prepare(self, d_outputs, d_final_state):
        from .cells import StaleTraceError
        _ensure_fresh(self, *self.steps)
        if self._version != self.model.variables._version:
            raise StaleTraceError("the attention_decoder variables were replaced after this "
                                  "trace's forward; run the forward again")
        d = [None] * self._n
        for t, g in _step_cotangents(d_outputs, self._n, (self._batch, self._saved["O"]),
                                     self._dtype, self._xp) or ():
            d[t] = g
        _, dst = self.steps[-1].inner._prepare(None, d_final_state)   # checks, converts lists
        return d, (None if dst is None else self.cell._to_public(dst))

    def _attend_backward(self, dA, rec, acc):
        """Backward of one ``attention(query)``: adds dL/dF, dL/dhidden, dV, dWq, dbq into
        ``acc``; returns dL/dquery [B, Q]."""
        xp, w, hid = self._xp, self._w, self._saved["hid"]
        q, th, p = rec
        B, L, H, D = th.shape
        dp = xp.matmul(hid, dA.transpose(0, 2, 1))               # [B, L, H]
        acc["hid"] += xp.matmul(p, dA)                           # [B, L, D]
        de = p * (dp - (p * dp).sum(1, keepdims=True))           # softmax
        acc["V"] += (de[..., None] * th).sum((0, 1))
        dpre = de[..., None] * w.V * (1 - th * th)               # [B, L, H, D]
        acc["F"] += dpre
        du = dpre.sum(1).reshape(B, H * D)
        acc["Wq"] += q.T @ du
        acc["bq"] += du.sum(0)
        return du @ w.Wq.T                                       # [B, Q]

    def _add_query_grad(self, d_state, dq, like):
        out, k = [], 0
        leaves = _state_leaves(like)
        d_leaves = _state_leaves(d_state) if d_state is not None else [None] * len(leaves)
        for s, g in zip(leaves, d_leaves):
            part = dq[:, k:k + s.shape[1]]
            k += s.shape[1]
            out.append(part.copy() if g is None else g + part)
        return _state_like(like, out) if isinstance(like, (tuple, list)) else out[0]

    def backward(self, d_outputs=None, d_final_state=None):
        """Return ``(list of d_decoder_inputs, d_initial_state, d_attention_states)``; bad
        cotangents raise before anything is consumed.  Step i backwards: the output projection
        (one GEMM for its kernel, one for its input), the attention read of the new state
        (softmax, tanh, the query GEMM), the cell's step, the input linear (its input's gradient
        splits into dL/dx_i and dL/d(the previous reads)); the loop function's trace turns
        dL/dx_i into more dL/d(output_{i-1}).  Then the 1x1 convolution's kernel and input
        gradients, one GEMM each for all steps and heads."""
        d, d_final_state = self._prepare(d_outputs, d_final_state)
        _consume(self)
        xp, sv, dt = self._xp, self._saved, self._dtype
        # the heads' matrices side by side again (not kept by the trace: the version check says
        # the variables are the forward's)
        w = self._w = _AttentionWeights(self.model.variables, sv["H"], sv["D"], xp)
        hid, B, I = sv["hid"], self._batch, self._width
        H, D, P = sv["H"], sv["D"], self.cell.output_size
        L = hid.shape[1]
        v = self.model.variables._grads
        acc = {"hid": xp.zeros_like(hid), "F": xp.zeros((B, L, H, D), dt), "V": xp.zeros((H, D), dt),
               "Wq": xp.zeros_like(w.Wq), "bq": xp.zeros_like(w.bq)}
        d_inputs = [None] * self._n
        d_state, dA_next, extra = d_final_state, None, None
        for i in range(self._n - 1, -1, -1):
            g = d[i]
            if extra is not None:
                g = extra if g is None else g + extra
            dy, dA = None, dA_next
            if g is not None:
                v["AttnOutputProjection/kernel"] += sv["cat_out"][i].T @ g
                v["AttnOutputProjection/bias"] += g.sum(0)
                dc = g @ w.Wout.T
                dy = dc[:, :P]
                r = dc[:, P:].reshape(B, H, D)
                dA = r if dA is None else dA + r
            if dA is not None:
                dq = self._attend_backward(dA, sv["att"][i], acc)
                d_state = self._add_query_grad(d_state, dq, sv["states"][i])
            dzs, d_state = self.steps[i].backward([dy], d_state)
            dz = dzs[0]
            v["kernel"] += sv["cat_in"][i].T @ dz
            v["bias"] += dz.sum(0)
            dcin = dz @ w.Win.T
            dA_next = dcin[:, I:].reshape(B, H, D)
            extra = None
            if self.loop_traces is not None and i > 0:
                d_inputs[i] = xp.zeros((B, I), dt)
                d_prev = self.loop_traces[i].backward(xp.ascontiguousarray(dcin[:, :I]))
                if d_prev is not None:
                    nm = "the loop function's trace for step %d: backward(d_next_input) (d_prev)" % i
                    d_prev = float_array(d_prev, nm)
                    check_shape(d_prev, (B, sv["O"]), nm)
                    check_dtype(d_prev, dt, nm)
                    check_on_device(d_prev, nm, xp, "the forward's inputs")
                extra = d_prev
            else:
                d_inputs[i] = xp.ascontiguousarray(dcin[:, :I])
        if sv["att0"] is not None:                      # initial_state_attention
            dq = self._attend_backward(dA_next, sv["att0"], acc)
            d_state = self._add_query_grad(d_state, dq, sv["state0"])
        dF = acc["F"].reshape(B * L, H * D)
        dWf = hid.reshape(B * L, D).T @ dF                                   # [D, H*D]
        d_hid = acc["hid"] + (dF @ w.Wf.T).reshape(B, L, D)
        for a in range(H):
            v["AttnW_%d" % a] += dWf[:, a * D:(a + 1) * D].reshape(1, 1, D, D)
            v["AttnV_%d" % a] += acc["V"][a]
            v["Attention_%d/kernel" % a] += acc["Wq"][:, a * D:(a + 1) * D]
            v["Attention_%d/bias" % a] += acc["bq"][a * D:(a + 1) * D]
        return d_inputs, d_state, d_hid


def attention_decoder(decoder_inputs, initial_state, attention_states, cell, output_size=None,
                      num_heads=1, loop_function=None, dtype=None, scope=None,
                      initial_state_attention=False, return_trace=False):
    """``tf.contrib.legacy_seq2seq.attention_decoder``: an RNN decoder that reads
    ``attention_states`` with ``num_heads`` attention heads (Vinyals et al. 2015's attention,
    arXiv:1412.7449, as TF 1.15 computes it).

    Shapes: ``decoder_inputs`` T arrays [B, I]; ``attention_states`` (the encoder's outputs)
    ``h`` [B, L, D]; ``initial_state`` structured as ``cell.state_size``.  With ``q(s)`` the
    state's arrays concatenated (TF's ``nest.flatten`` + concat: [c, h] for an LSTM), and for
    each head a (``AttnW_a`` [D, D] the 1x1 convolution, ``v_a = AttnV_a`` [D])::

        F_a[b, l] = h[b, l] @ AttnW_a                            # once, for all steps
        attn_a(s) = sum_l p[b, l] h[b, l],   p = softmax_l(sum_k v_a[k] tanh(F_a + q(s) @ Wq_a + bq_a)[b, l, k])
        A_{-1} = 0 (or attn(initial_state) with initial_state_attention)
        z_i = [x_i, A_{i-1}^0, .., A_{i-1}^{H-1}] @ kernel + bias   # [B, I]
        y_i, s_i = cell(z_i, s_{i-1})
        A_i^a = attn_a(s_i)
        out_i = [y_i, A_i^0, .., A_i^{H-1}] @ AttnOutputProjection/kernel + bias   # [B, O]
        x_i = loop_function(out_{i-1}, i)     (i >= 1, with a loop function)

    ``O = output_size`` (None: ``cell.output_size``; the projection is there either way).
    Returns ``(outputs, state)``: T arrays [B, O] and ``s_{T-1}`` (plus an
    :class:`AttentionDecoderTrace` with ``return_trace=True``; ``loop_function`` follows
    :func:`rnn_decoder`'s trace contract).  ``dtype``: TF's scope dtype; None takes the
    attention states' (TF's float32 default needs float32 arrays); it must match every array
    (no silent casting).  The variables (see :class:`AttentionModel`) are made on the first call
    with an unbuilt ``cell`` and kept with it: ``attention_model_of(cell).params`` / ``.grads``
    under TF's names, ``<scope>/AttnW_0``, ``<scope>/Attention_0/kernel``,
    ``<scope>/AttnOutputProjection/kernel``, ``<scope>/kernel`` (the input linear) and the
    cell's ``<scope>/<cell>/...`` (``scope`` default ``"attention_decoder"``); later calls must
    keep the sizes.

    >>> import numpy as np, npl
    >>> rng = np.random.default_rng(0)
    >>> cell = npl.rnn.GRUCell(3)
    >>> hs = rng.standard_normal((2, 5, 4))                     # B = 2, L = 5, D = 4
    >>> xs, s0 = [rng.standard_normal((2, 2))], np.zeros((2, 3))
    >>> outs, s = npl.legacy_seq2seq.attention_decoder(xs, s0, hs, cell, output_size=6)
    >>> p = npl.legacy_seq2seq.attention_model_of(cell).params
    >>> z = np.concatenate([xs[0], np.zeros((2, 4))], 1) @ p["attention_decoder/kernel"]
    >>> y, h = cell(z, s0)                                      # zero initial attention; bias 0
    >>> u = h @ p["attention_decoder/Attention_0/kernel"]
    >>> F = hs @ p["attention_decoder/AttnW_0"][0, 0]
    >>> e = (np.tanh(F + u[:, None]) * p["attention_decoder/AttnV_0"]).sum(-1)
    >>> a = np.exp(e) / np.exp(e).sum(1, keepdims=True)
    >>> read = (a[..., None] * hs).sum(1)
    >>> out = np.concatenate([y, read], 1) @ p["attention_decoder/AttnOutputProjection/kernel"]
    >>> np.allclose(outs[0], out), np.allclose(s, h), outs[0].shape
    (True, True, (2, 6))
    """
    _check_cell(cell)
    _check_scope(scope)
    _check_loop_function(loop_function, return_trace)
    _attention_arg_checks(num_heads, output_size, initial_state_attention)
    if initial_state is None:
        raise TypeError("initial_state is required (TF's attention_decoder has no default): pass "
                        "cell.zero_state(batch_size, dtype) for zeros")
    want = resolve_dtype(dtype)
    hs = float_array(attention_states, "attention_states", dtype=want)
    if hs.ndim != 3:
        raise ValueError("attention_states must have rank 3, [batch, attn_length, attn_size], got "
                         "shape %s" % (tuple(hs.shape),))
    if want is not None:
        check_dtype(hs, want, "attention_states (dtype=%s was given)" % want)
    dt = hs.dtype
    xs, n = _steps_check(decoder_inputs, "decoder_inputs", loop_function, dt)
    x0 = xs[0]
    xp, B, I = get_array_module(x0), x0.shape[0], x0.shape[1]
    if hs.shape[0] != B:
        raise ValueError("attention_states has batch size %d but decoder_inputs[0] has %d (shapes "
                         "%s vs %s)" % (hs.shape[0], B, tuple(hs.shape), tuple(x0.shape)))
    if hs.shape[1] < 1 or hs.shape[2] < 1:
        raise ValueError("attention_states must have attn_length >= 1 and attn_size >= 1, got "
                         "shape %s" % (tuple(hs.shape),))
    check_dtype(x0, dt, "decoder_inputs[0] (attention_states are %s)" % dt)
    check_on_device(hs, "attention_states", xp, "decoder_inputs")
    like = cell.zero_state(B, dt)
    # structure, shapes, dtype and device as dynamic_rnn checks them; Python lists converted
    initial_state = cell._to_public(cell._to_internal(initial_state, B, dt, xp, "initial_state"))
    L, D, H = hs.shape[1], hs.shape[2], int(num_heads)
    P = cell.output_size
    O = P if output_size is None else int(output_size)
    Q = sum(int(z.shape[1]) for z in _state_leaves(like))
    key = (I, D, H, O, Q)
    home = _cell_xp(cell)
    check_on_device(hs, "attention_states", home, "the cell (cell.to_device moves it)")
    m = _kept(cell, "attention model")
    if m is not None:
        _follow(m.variables, home)
    if m is None:
        _refuse_built(cell, "attention_decoder", "attention model",
                      "Make the first call with an unbuilt cell (then restore the weights into "
                      "attention_model_of(cell).params), or keep using the original cell object.")
        m = AttentionModel(cell, _new_attention_variables(I, D, H, Q, P, O, dt, cell._home_xp()), key)
        _keep(cell, "attention model", m)
    elif m._key != key:
        raise ValueError("attention_decoder: this cell was first used with (input width, "
                         "attn_size, num_heads, output_size, state width) %s, now %s; its "
                         "variables cannot change: use a new cell" % (m._key, key))
    if m.variables.dtype != dt:
        raise TypeError("attention_decoder: the model's variables are %s but this call is %s (no "
                        "silent casting)" % (m.variables.dtype, dt))
    check_on_device(hs, "attention_states", get_array_module(m.variables._params["kernel"]),
                    "the attention variables")
    m.scope = scope or "attention_decoder"

    w = _AttentionWeights(m.variables, H, D, xp)
    F = (hs.reshape(B * L, D) @ w.Wf).reshape(B, L, H, D)        # the 1x1 conv, all heads, once
    saved = {"hid": hs, "H": H, "D": D, "O": O, "cat_in": [], "cat_out": [], "att": [],
             "states": [], "att0": None, "state0": initial_state}
    if initial_state_attention:
        A, saved["att0"] = _attend(w, F, hs, initial_state, xp)
    else:
        A = xp.zeros((B, H, D), dt)
    outputs, steps, loops = [], [], ([None] if loop_function is not None else None)
    state, x = initial_state, x0
    with _one_variational_mask(cell) as first_step_done:
        for i in range(n):
            if i > 0:
                if loop_function is None:
                    x = xs[i]
                elif return_trace:
                    x, ltr = _loop_result(loop_function(outputs[-1], i, return_trace=True), i)
                    loops.append(ltr)
                    x = _step_input(x, i, x0, xp)
                else:
                    x = _step_input(loop_function(outputs[-1], i), i, x0, xp)
            cat_in = xp.concatenate([x, A.reshape(B, H * D)], 1)
            z = cat_in @ w.Win + w.bin
            res = static_rnn(cell, [z], initial_state=state, return_trace=return_trace)
            y, state = res[0][0], res[1]
            A, att = _attend(w, F, hs, state, xp)
            cat_out = xp.concatenate([y, A.reshape(B, H * D)], 1)
            outputs.append(cat_out @ w.Wout + w.bout)
            if return_trace:
                steps.append(res[2])
                saved["cat_in"].append(cat_in)
                saved["cat_out"].append(cat_out)
                saved["att"].append(att)
                saved["states"].append(state)
            if i == 0:
                first_step_done()
    if return_trace:
        return outputs, state, AttentionDecoderTrace(m, steps, loops, saved, n, B, I, dt, xp)
    return outputs, state
