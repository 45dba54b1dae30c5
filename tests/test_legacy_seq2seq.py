"""npl.legacy_seq2seq (tf.contrib.legacy_seq2seq's rnn_decoder, basic_rnn_seq2seq, tied_rnn_seq2seq).

* Live TensorFlow (``@pytest.mark.tf``; skipped without TF): TF 2 has no ``tf.contrib``, so the
  three functions are written below from TF 1.15's source out of ``tf.compat.v1`` core ops
  (``nn.static_rnn``, ``nn.rnn_cell`` cells, ``variable_scope`` with reuse, ``copy.deepcopy`` of
  the cell for basic_rnn_seq2seq's encoder).  Every weight, initial state, input and cotangent is
  random; npl's weights are loaded into TF's variables by the names
  ``npl.convert.tf_variable_names`` gives, which must be exactly the variables the TF graph made.
  Compared: outputs, final states, and ``tf.gradients`` of a random linear loss w.r.t. every
  decoder and encoder input, the initial state and every variable, for BasicLSTM, LSTM with
  peepholes and projection, GRU and MultiRNNCell stacks, batch 1, one decoder step, float64 and
  float32, with and without a loop function: argmax + embedding (TF passes no gradient through
  the argmax; the gradient w.r.t. the embedding is compared too) and a differentiable one,
  ``tanh(prev @ W + i * c)``, whose gradients through ``prev`` and w.r.t. W and c npl gets from the
  loop function's trace contract.
* Float64 central finite differences of every trace's backward (inputs, initial state, every
  parameter of both cells, the loop function's parameters).
* The encoder copy of basic_rnn_seq2seq: separate weights, kept with the cell between calls.
* Bad input (empty lists, mismatched shapes, a non-callable loop function, a loop function
  without the trace contract) raises ValueError / TypeError naming the argument.
"""
import copy
import os

import numpy as np
import pytest

import npl
import tf_reference as ref
from helpers import (flatten, unflatten, make_cell, random_state, rel_err, numeric_grads,  # noqa: F401
                     linear_loss, random_like, numpy_backend, seeded_rng as _rng, assert_raises_naming)
from test_gradients import fd_check

L2 = npl.legacy_seq2seq
R, S = npl.rnn, npl.LSTMStateTuple
F32, F64 = np.float32, np.float64


# ============================================================================ loop functions
class _Trace:
    def __init__(self, backward):
        self.backward = backward


class ArgmaxEmbed:
    """``loop(prev, i) = E[argmax(prev, 1)]`` (greedy decoding) with the trace contract: the
    embedding's gradient accumulates in ``dE``; none reaches ``prev`` through the argmax."""

    def __init__(self, E):
        self.E, self.dE, self.calls = E, np.zeros_like(E), []

    def __call__(self, prev, i, return_trace=False):
        self.calls.append(i)
        ids = prev.argmax(1)
        nxt = self.E[ids]
        if not return_trace:
            return nxt

        def backward(d):
            np.add.at(self.dE, ids, d)
            return None
        return nxt, _Trace(backward)


class TanhProjection:
    """``loop(prev, i) = tanh(prev @ W + i * c)``: differentiable in prev, W and c."""

    def __init__(self, W, c):
        self.W, self.c, self.calls = W, c, []
        self.dW, self.dc = np.zeros_like(W), np.zeros_like(c)

    def __call__(self, prev, i, return_trace=False):
        self.calls.append(i)
        nxt = np.tanh(prev @ self.W + i * self.c)
        if not return_trace:
            return nxt

        def backward(d):
            da = d * (1 - nxt ** 2)
            self.dW += prev.T @ da
            self.dc += i * da.sum(0)
            return da @ self.W.T
        return nxt, _Trace(backward)


# ============================================================================ TF 1.15's functions
def tf_rnn_decoder(v1, decoder_inputs, initial_state, cell, loop_function=None, scope=None):
    """TF 1.15 legacy_seq2seq.rnn_decoder: in variable scope ``scope or "rnn_decoder"`` one call of
    the cell per step, its variables reused from step 1 on; with a loop function, step i >= 1 reads
    ``loop_function(output of step i-1, i)`` (made in a reusing "loop_function" scope)."""
    outputs, state, prev = [], initial_state, None
    with v1.variable_scope(scope or "rnn_decoder"):
        for i, x in enumerate(decoder_inputs):
            if loop_function is not None and prev is not None:
                with v1.variable_scope("loop_function", reuse=True):
                    x = loop_function(prev, i)
            if i > 0:
                v1.get_variable_scope().reuse_variables()
            y, state = cell(x, state)
            outputs.append(y)
            if loop_function is not None:
                prev = y
    return outputs, state


def tf_basic_rnn_seq2seq(v1, encoder_inputs, decoder_inputs, cell, dtype, scope=None):
    """TF 1.15: in scope ``scope or "basic_rnn_seq2seq"``, static_rnn of a deep copy of the cell
    (scope "rnn"), then rnn_decoder of the cell itself from the encoder's final state."""
    with v1.variable_scope(scope or "basic_rnn_seq2seq"):
        encoder = copy.deepcopy(cell)
        _, s = v1.nn.static_rnn(encoder, encoder_inputs, dtype=dtype)
        return tf_rnn_decoder(v1, decoder_inputs, s, cell)


def tf_tied_rnn_seq2seq(v1, encoder_inputs, decoder_inputs, cell, loop_function, dtype, scope=None):
    """TF 1.15: in scope "combined_tied_rnn_seq2seq", static_rnn of the cell under
    ``scope or "tied_rnn_seq2seq"``, then (reusing) rnn_decoder of the same cell under the same
    scope name."""
    with v1.variable_scope("combined_tied_rnn_seq2seq"):
        sc = scope or "tied_rnn_seq2seq"
        _, s = v1.nn.static_rnn(cell, encoder_inputs, dtype=dtype, scope=sc)
        v1.get_variable_scope().reuse_variables()
        return tf_rnn_decoder(v1, decoder_inputs, s, cell, loop_function=loop_function, scope=sc)


# ============================================================================ cases
_FB = [round(float(v), 4) for v in _rng("legacy-seq2seq-forget-bias").uniform(-1.0, 1.0, 6)]
_C = ref.cell
_MULTI = ref.multi(_C("LSTMCell", 3, use_peepholes=True, num_proj=2, forget_bias=_FB[0]),
                   _C("GRUCell", 3))
_MULTI2 = ref.multi(_C("GRUCell", 3), _C("BasicLSTMCell", 2, forget_bias=_FB[1]))


def case(name, fn, cell, B, Td, Id, Te=0, Ie=None, dtype="float64", loop=None, scope=None,
         none_steps=(), d_state=True):
    return dict(name=name, fn=fn, cell=cell, B=B, Td=Td, Id=Id, Te=Te, Ie=Ie, dtype=dtype,
                loop=loop, scope=scope, none_steps=tuple(none_steps), d_state=d_state)


CASES = [
    case("dec_basic_lstm", "decoder", _C("BasicLSTMCell", 3, forget_bias=_FB[2]), 3, 4, 2),
    case("dec_gru_rnnlm_scope", "decoder", _C("GRUCell", 3), 2, 3, 3, scope="rnnlm",
         none_steps=[1]),
    case("dec_multi", "decoder", _MULTI, 2, 3, 2),
    case("dec_batch1_one_step", "decoder", _C("LSTMCell", 3, use_peepholes=True, forget_bias=_FB[3]),
         1, 1, 2),
    case("dec_outputs_loss_only", "decoder", _C("BasicRNNCell", 3), 3, 3, 2, d_state=False),
    case("dec_f32_basic_lstm", "decoder", _C("BasicLSTMCell", 3, forget_bias=_FB[2]), 3, 4, 2,
         dtype="float32"),
    case("dec_loop_argmax_lstm", "decoder", _C("BasicLSTMCell", 4, forget_bias=_FB[4]), 3, 4, 2,
         loop="argmax"),
    case("dec_loop_argmax_batch1", "decoder", _C("GRUCell", 3), 1, 3, 2, loop="argmax"),
    case("dec_loop_proj_multi", "decoder", _MULTI, 2, 4, 3, loop="proj"),
    case("dec_loop_proj_gru_f32", "decoder", _C("GRUCell", 3), 3, 3, 2, dtype="float32",
         loop="proj"),
    case("basic_lstm", "basic", _C("BasicLSTMCell", 3, forget_bias=_FB[5]), 3, 4, 2, Te=3, Ie=3),
    case("basic_multi_scope", "basic", _MULTI2, 2, 3, 3, Te=2, Ie=2, scope="my_seq2seq"),
    case("basic_f32_gru_batch1", "basic", _C("GRUCell", 3), 1, 2, 2, Te=3, Ie=4, dtype="float32"),
    case("tied_gru_one_step", "tied", _C("GRUCell", 3), 2, 1, 2, Te=3, Ie=2),
    case("tied_multi_loop_proj", "tied", _MULTI, 2, 3, 3, Te=2, Ie=3, loop="proj", scope="tied"),
    case("tied_lstm_loop_argmax", "tied", _C("LSTMCell", 4, num_proj=3, forget_bias=_FB[1]), 2, 3,
         2, Te=2, Ie=2, loop="argmax"),
    case("tied_f32_lstm", "tied", _C("BasicLSTMCell", 3, forget_bias=_FB[0]), 3, 3, 2, Te=2, Ie=2,
         dtype="float32"),
]
CASES_BY_NAME = {c["name"]: c for c in CASES}
assert len(CASES_BY_NAME) == len(CASES)
RTOL = ref.RTOL


def _scopes(c):
    """{role: TF variable scope of that cell}, as TF 1.15 names them."""
    if c["fn"] == "decoder":
        return {"dec": c["scope"] or "rnn_decoder"}
    if c["fn"] == "basic":
        top = c["scope"] or "basic_rnn_seq2seq"
        return {"enc": top + "/rnn", "dec": top + "/rnn_decoder"}
    return {"dec": "combined_tied_rnn_seq2seq/" + (c["scope"] or "tied_rnn_seq2seq")}


def _npl_cells(c, a=None):
    """The case's npl cells {role: cell}, built; with ``a``, their weights set from it.  For
    basic_rnn_seq2seq the encoder is the copy the function itself makes (on a first call)."""
    dt = np.dtype(c["dtype"])
    cell = ref.npl_cell(c["cell"], dt)
    cells = {"dec": cell}
    if c["fn"] == "basic":
        L2.basic_rnn_seq2seq(_draw_inputs(c)["enc"], _draw_inputs(c)["dec"], cell, dtype=dt)
        cells["enc"] = L2.encoder_cell_of(cell)
        assert cells["enc"] is not None and cells["enc"] is not cell
    else:
        cell.build(c["Id"], dt)
    if a is not None:
        for role, cl in cells.items():
            cl.set_params({k[len("w/%s/" % role):]: v for k, v in a.items()
                           if k.startswith("w/%s/" % role)})
            cl.zero_grad()
    return cells


def _draw_inputs(c):
    rng = _rng(c["name"], "inputs")
    dt = np.dtype(c["dtype"])
    a = {"dec": [rng.standard_normal((c["B"], c["Id"])).astype(dt) for _ in range(c["Td"])]}
    if c["fn"] != "decoder":
        a["enc"] = [rng.standard_normal((c["B"], c["Ie"])).astype(dt) for _ in range(c["Te"])]
    return a


def make_arrays(c):
    """Every random array of a case: inputs, weights (per role), initial state, loop parameters,
    cotangents; and the TF names of the weights."""
    rng = _rng(c["name"], "arrays")
    dt = np.dtype(c["dtype"])
    B = c["B"]

    def normal(shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dt)

    a = dict(("x/%s/%d" % (k, t), v) for k, lst in _draw_inputs(c).items() for t, v in enumerate(lst))
    cells = _npl_cells(c)
    names = {}
    for role, cl in cells.items():
        for n, tfn in npl.convert.tf_variable_names(cl, _scopes(c)[role]).items():
            a["w/%s/%s" % (role, n)] = normal(cl.params[n].shape, 0.6)
            names[tfn] = (role, n)
    dec = cells["dec"]
    P, Id = dec.output_size, c["Id"]
    if c["fn"] == "decoder":
        for k, z in enumerate(flatten(dec.zero_state(B, dt))):
            a["s0/%d" % k] = normal(z.shape, 0.5)
    if c["loop"] == "argmax":
        a["loop/E"] = normal((P, Id))
    elif c["loop"] == "proj":
        a["loop/W"], a["loop/c"] = normal((P, Id), 0.8), normal((Id,), 0.5)
    for t in range(c["Td"]):
        if t not in c["none_steps"]:
            a["dy/%d" % t] = normal((B, P))
    if c["d_state"]:
        for k, z in enumerate(flatten(dec.zero_state(B, dt))):
            a["dst/%d" % k] = normal(z.shape)
    return a, names


def _npl_loop(c, a):
    if c["loop"] == "argmax":
        return ArgmaxEmbed(a["loop/E"].copy())
    if c["loop"] == "proj":
        return TanhProjection(a["loop/W"].copy(), a["loop/c"].copy())
    return None


def run_npl(c, a):
    """One case through npl with a trace; results under the keys run_tf gives."""
    dt = np.dtype(c["dtype"])
    cells = _npl_cells(c, a)
    cell = cells["dec"]
    loop = _npl_loop(c, a)
    dec, enc = ref._leaves(a, "x/dec"), ref._leaves(a, "x/enc")
    if c["fn"] == "decoder":
        s0 = unflatten(cell.zero_state(c["B"], dt), ref._leaves(a, "s0"))
        outs, st, tr = L2.rnn_decoder(dec, s0, cell, loop_function=loop, scope=c["scope"],
                                      return_trace=True)
        assert isinstance(tr, L2.RNNDecoderTrace)
    elif c["fn"] == "basic":
        outs, st, tr = L2.basic_rnn_seq2seq(enc, dec, cell, dtype=dt, scope=c["scope"],
                                            return_trace=True)
        assert tr.encoder_cell is cells["enc"], "the copy made on the first call is reused"
    else:
        outs, st, tr = L2.tied_rnn_seq2seq(enc, dec, cell, loop_function=loop, dtype=dt,
                                           scope=c["scope"], return_trace=True)
    assert isinstance(outs, list) and len(outs) == c["Td"]
    assert all(o.dtype == dt and o.shape == (c["B"], cell.output_size) for o in outs)
    dys = [a.get("dy/%d" % t) for t in range(c["Td"])]
    dst = unflatten(st, ref._leaves(a, "dst")) if c["d_state"] else None
    res = {}
    if c["fn"] == "decoder":
        d_dec, d_s0 = tr.backward(dys, dst)
        for k, v in enumerate(flatten(d_s0)):
            res["ref/ds0/%d" % k] = v
    else:
        d_enc, d_dec = tr.backward(dys, dst)
        assert isinstance(d_enc, list) and len(d_enc) == c["Te"]
        for t, v in enumerate(d_enc):
            res["ref/dx/enc/%d" % t] = v
    assert isinstance(d_dec, list) and len(d_dec) == c["Td"]
    for t, v in enumerate(d_dec):
        res["ref/dx/dec/%d" % t] = v
    for t, v in enumerate(outs):
        res["ref/y/%d" % t] = v
    for k, v in enumerate(flatten(st)):
        res["ref/st/%d" % k] = v
    for role, cl in cells.items():
        for n, g in cl.grads.items():
            res["ref/dw/%s/%s" % (role, n)] = g.copy()
    if c["loop"] == "argmax":
        res["ref/dloop/E"] = loop.dE
    elif c["loop"] == "proj":
        res["ref/dloop/W"], res["ref/dloop/c"] = loop.dW, loop.dc
    if loop is not None:
        # TF calls loop_function(prev, i) for i = 1 .. T-1
        assert loop.calls == list(range(1, c["Td"])), loop.calls
    return res


def _tf_case(tf, c, a, names):
    """Build one case in the current graph under variable scope c["name"]; returns
    ({key: tensor}, [(variable, value)], [TF variable names relative to the case])."""
    v1 = tf.compat.v1
    dt = tf.as_dtype(c["dtype"])
    with v1.variable_scope(c["name"]):
        tcell = ref._tf_cell(tf, c["cell"])
        dec = [tf.constant(v) for v in ref._leaves(a, "x/dec")]
        enc = [tf.constant(v) for v in ref._leaves(a, "x/enc")]
        loop, lparams = None, {}
        if c["loop"] == "argmax":
            lparams["E"] = E = tf.constant(a["loop/E"])
            loop = lambda prev, i: tf.nn.embedding_lookup(E, tf.argmax(prev, 1))  # noqa: E731
        elif c["loop"] == "proj":
            lparams["W"], lparams["c"] = W, cc = tf.constant(a["loop/W"]), tf.constant(a["loop/c"])
            loop = lambda prev, i: tf.tanh(tf.matmul(prev, W) + float(i) * cc)  # noqa: E731
        s0 = []
        if c["fn"] == "decoder":
            s0 = [tf.constant(v) for v in ref._leaves(a, "s0")]
            init = tf.nest.pack_sequence_as(tcell.zero_state(c["B"], dt), s0)
            outs, st = tf_rnn_decoder(v1, dec, init, tcell, loop, c["scope"])
        elif c["fn"] == "basic":
            outs, st = tf_basic_rnn_seq2seq(v1, enc, dec, tcell, dt, c["scope"])
        else:
            outs, st = tf_tied_rnn_seq2seq(v1, enc, dec, tcell, loop, dt, c["scope"])
    st_flat = tf.nest.flatten(st)
    loss = tf.add_n([tf.reduce_sum(tf.constant(a["dy/%d" % t]) * y) for t, y in enumerate(outs)
                     if "dy/%d" % t in a] +
                    [tf.reduce_sum(tf.constant(a["dst/%d" % k]) * s) for k, s in enumerate(st_flat)
                     if "dst/%d" % k in a])
    prefix = c["name"] + "/"
    tvars = [v for v in v1.global_variables() if v.name.startswith(prefix)]
    rel = [v.name[len(prefix):].split(":")[0] for v in tvars]
    assigns = [(v, a["w/%s/%s" % names[n]]) for v, n in zip(tvars, rel) if n in names]
    fetch = {"ref/y/%d" % t: y for t, y in enumerate(outs)}
    fetch.update({"ref/st/%d" % k: s for k, s in enumerate(st_flat)})
    wrt = [("ref/dx/dec/%d" % t, x) for t, x in enumerate(dec)] + \
        [("ref/dx/enc/%d" % t, x) for t, x in enumerate(enc)] + \
        [("ref/ds0/%d" % k, x) for k, x in enumerate(s0)] + \
        [("ref/dloop/%s" % k, x) for k, x in lparams.items()] + \
        [("ref/dw/%s/%s" % names[n], v) for v, n in zip(tvars, rel) if n in names]
    grads = tf.gradients(loss, [x for _, x in wrt])
    for (key, x), g in zip(wrt, grads):
        if g is None:               # an input the outputs do not depend on (TF: None)
            g = tf.zeros_like(x)
        fetch[key] = tf.convert_to_tensor(g)
    return fetch, assigns, rel


@pytest.fixture(scope="module")
def live():
    """{case name: (arrays, TF's values, TF's variable names, npl's TF names)}: one graph, one run."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf_keras")
    tf = ref.import_tf()
    v1 = tf.compat.v1
    prepared = {c["name"]: make_arrays(c) for c in CASES}
    graph = tf.Graph()
    with graph.as_default():
        fetches, assigns, rels = {}, [], {}
        for c in CASES:
            a, names = prepared[c["name"]]
            f, asg, rels[c["name"]] = _tf_case(tf, c, a, names)
            fetches[c["name"]] = f
            assigns += asg
        with v1.Session(graph=graph) as sess:
            sess.run([v.assign(val) for v, val in assigns])
            values = sess.run(fetches)
    return {n: (prepared[n][0], values[n], rels[n], prepared[n][1]) for n in prepared}


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(CASES_BY_NAME))
def test_variable_names_are_tfs(live, name):
    """npl.convert.tf_variable_names(cell, <the function's scope>) (and the encoder copy's) are
    exactly the variables TF 1.15's function creates, no more, no fewer."""
    _, _, tf_names, npl_names = live[name]
    assert sorted(tf_names) == sorted(npl_names)
    c = CASES_BY_NAME[name]
    if c["fn"] == "basic":
        top = c["scope"] or "basic_rnn_seq2seq"
        assert any(n.startswith(top + "/rnn/") for n in tf_names)
        assert any(n.startswith(top + "/rnn_decoder/") for n in tf_names)


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(CASES_BY_NAME))
def test_matches_live_tf(live, name):
    """Outputs, final state, and the gradients w.r.t. every input, the initial state, every
    weight (both cells of basic_rnn_seq2seq; the tied cell summed over both passes) and the loop
    function's parameters."""
    c = CASES_BY_NAME[name]
    a, want, _, _ = live[name]
    got = run_npl(c, a)
    assert sorted(got) == sorted(want), set(got) ^ set(want)
    tol = RTOL[c["dtype"]]
    errs = {k: rel_err(got[k], want[k]) for k in want}
    bad = {k: e for k, e in errs.items() if not e <= tol}
    assert not bad, "relative errors above %g: %s" % (tol, bad)
    if c["loop"] is not None:        # decoder_inputs[1:] are not read: TF's gradient is None
        for t in range(1, c["Td"]):
            assert not want["ref/dx/dec/%d" % t].any() and not got["ref/dx/dec/%d" % t].any()
    if c["loop"] == "proj":          # the gradient through prev is there and matters
        assert np.abs(want["ref/dloop/W"]).max() > 1e-3


@pytest.mark.tf
def test_loop_function_forward_without_trace_matches_tf(live):
    """Inference (no trace): any plain loop_function(prev, i) runs, and gives TF's outputs."""
    for name in ("dec_loop_argmax_lstm", "dec_loop_proj_multi", "tied_lstm_loop_argmax"):
        c = CASES_BY_NAME[name]
        a, want, _, _ = live[name]
        cells = _npl_cells(c, a)
        full = _npl_loop(c, a)
        plain = lambda prev, i: full(prev, i)       # noqa: E731  (no return_trace keyword)
        dec, enc = ref._leaves(a, "x/dec"), ref._leaves(a, "x/enc")
        if c["fn"] == "decoder":
            s0 = unflatten(cells["dec"].zero_state(c["B"], np.dtype(c["dtype"])), ref._leaves(a, "s0"))
            outs, st = L2.rnn_decoder(dec, s0, cells["dec"], loop_function=plain)
        else:
            outs, st = L2.tied_rnn_seq2seq(enc, dec, cells["dec"], loop_function=plain,
                                           dtype=np.dtype(c["dtype"]))
        for t, y in enumerate(outs):
            assert rel_err(y, want["ref/y/%d" % t]) <= RTOL[c["dtype"]]
        for k, s in enumerate(flatten(st)):
            assert rel_err(s, want["ref/st/%d" % k]) <= RTOL[c["dtype"]]


# ============================================================================ finite differences
I = 3


def _decoder_run(cell, xs, s0, loop=None):
    def run(trace):
        return L2.rnn_decoder(xs, s0, cell, loop_function=loop, return_trace=trace)
    return run


def _backward(tr, d_out, d_state):
    return tr.backward(d_out, d_state)


@pytest.mark.parametrize("kind,B,T", [("basic_lstm", 3, 4), ("multi", 2, 3), ("lstm_all", 1, 1),
                                      ("gru", 2, 2)])
def test_decoder_gradients_match_finite_differences(kind, B, T):
    rng = _rng(kind, B, T, "decoder-fd")
    cell = make_cell(kind, rng, I)
    xs = [rng.standard_normal((B, I)) for _ in range(T)]
    s0 = random_state(cell, B, rng)
    d_in, d_init, errs = fd_check([cell], _decoder_run(cell, xs, s0), _backward, xs, s0, rng)
    assert isinstance(d_in, list) and len(d_in) == T


@pytest.mark.parametrize("kind", ["basic_lstm", "multi", "gru"])
def test_decoder_with_loop_function_gradients_match_finite_differences(kind):
    """Through the differentiable loop function's trace contract: the inputs (d of the unread
    decoder_inputs[1:] is zero, as is theirs numerically), the initial state, every cell
    parameter, and the loop function's own W and c."""
    rng = _rng(kind, "decoder-loop-fd")
    B, T = 2, 4
    cell = make_cell(kind, rng, I)
    P = cell.output_size
    loop = TanhProjection(rng.standard_normal((P, I)) * 0.8, rng.standard_normal(I) * 0.5)
    xs = [rng.standard_normal((B, I)) for _ in range(T)]
    s0 = random_state(cell, B, rng)
    d_in, _, _ = fd_check([cell], _decoder_run(cell, xs, s0, loop), _backward, xs, s0, rng)
    assert all(not d.any() for d in d_in[1:]) and d_in[0].any()
    # the loop function's parameters, with a loss of our own
    outs, st = L2.rnn_decoder(xs, s0, cell, loop)
    Wo, Ws = random_like(outs, rng), random_like(st, rng)
    loop.dW[...] = 0
    loop.dc[...] = 0
    _, _, tr = L2.rnn_decoder(xs, s0, cell, loop, return_trace=True)
    tr.backward(Wo, Ws)

    def loss():
        o, s = L2.rnn_decoder(xs, s0, cell, loop)
        return linear_loss(o, Wo) + linear_loss(s, Ws)
    nW, nc = numeric_grads(loss, [loop.W, loop.c])
    assert rel_err(loop.dW, nW) < 1e-6 and rel_err(loop.dc, nc) < 1e-6


def test_decoder_with_argmax_loop_gradients_match_finite_differences():
    """argmax + embedding: no gradient through the argmax (piecewise constant; the perturbations
    do not change it), the embedding's gradient from the loop trace."""
    rng = _rng("decoder-argmax-fd")
    B, T = 3, 4
    cell = make_cell("lstm_peep", rng, I)
    loop = ArgmaxEmbed(rng.standard_normal((cell.output_size, I)))
    xs = [rng.standard_normal((B, I)) for _ in range(T)]
    s0 = random_state(cell, B, rng)
    fd_check([cell], _decoder_run(cell, xs, s0, loop), _backward, xs, s0, rng)
    outs, st = L2.rnn_decoder(xs, s0, cell, loop)
    Wo, Ws = random_like(outs, rng), random_like(st, rng)
    loop.dE[...] = 0
    L2.rnn_decoder(xs, s0, cell, loop, return_trace=True)[2].backward(Wo, Ws)

    def loss():
        o, s = L2.rnn_decoder(xs, s0, cell, loop)
        return linear_loss(o, Wo) + linear_loss(s, Ws)
    (nE,) = numeric_grads(loss, [loop.E])
    assert np.abs(loop.dE).max() > 0 and rel_err(loop.dE, nE) < 1e-6


@pytest.mark.parametrize("kind,B", [("basic_lstm", 3), ("multi", 2), ("gru", 1)])
def test_basic_rnn_seq2seq_gradients_match_finite_differences(kind, B):
    """Gradients w.r.t. encoder and decoder inputs, and every parameter of both cells."""
    rng = _rng(kind, B, "basic-fd")
    cell = make_cell(kind, rng, 2)                   # decoder input width 2
    enc = make_cell(kind, rng, I)                    # encoder input width 3
    ex = [rng.standard_normal((B, I)) for _ in range(3)]
    dx = [rng.standard_normal((B, 2)) for _ in range(2)]

    def run(trace):
        return L2.basic_rnn_seq2seq(ex, dx, cell, dtype=F64, encoder_cell=enc, return_trace=trace)
    d_enc, d_dec, errs = fd_check([enc, cell], run, _backward, ex, dx, rng)
    assert len(d_enc) == 3 and len(d_dec) == 2 and all(d.any() for d in d_enc)
    assert any(k.startswith("cell0/") for k in errs) and any(k.startswith("cell1/") for k in errs)


@pytest.mark.parametrize("kind,loop", [("basic_lstm", None), ("multi", "proj"), ("gru", "argmax")])
def test_tied_rnn_seq2seq_gradients_match_finite_differences(kind, loop):
    """One cell for both passes: its gradients are the sum of both, as finite differences say."""
    rng = _rng(kind, loop, "tied-fd")
    B = 2
    cell = make_cell(kind, rng, I)
    P = cell.output_size
    fn = None if loop is None else (
        TanhProjection(rng.standard_normal((P, I)) * 0.8, rng.standard_normal(I) * 0.5)
        if loop == "proj" else ArgmaxEmbed(rng.standard_normal((P, I))))
    ex = [rng.standard_normal((B, I)) for _ in range(2)]
    dx = [rng.standard_normal((B, I)) for _ in range(3)]

    def run(trace):
        return L2.tied_rnn_seq2seq(ex, dx, cell, loop_function=fn, dtype=F64, return_trace=trace)
    d_enc, d_dec, _ = fd_check([cell], run, _backward, ex, dx, rng)
    assert all(d.any() for d in d_enc)
    if loop is not None:
        assert all(not d.any() for d in d_dec[1:])


# ============================================================================ behaviour
def test_rnn_decoder_without_loop_is_static_rnn():
    rng = _rng("decoder-is-static")
    cell = make_cell("lstm_proj", rng, I)
    xs = [rng.standard_normal((2, I)) for _ in range(3)]
    s0 = random_state(cell, 2, rng)
    a = L2.rnn_decoder(xs, s0, cell)
    b = npl.nn.static_rnn(cell, xs, initial_state=s0)
    assert all(np.array_equal(p, q) for p, q in zip(a[0], b[0]))
    assert all(np.array_equal(p, q) for p, q in zip(flatten(a[1]), flatten(b[1])))


def test_decoder_inputs_after_the_first_are_ignored_with_a_loop_function():
    """As in TF, only decoder_inputs[0] is read; the others may be anything (here None)."""
    rng = _rng("ignored-inputs")
    cell = make_cell("gru", rng, I)
    loop = TanhProjection(rng.standard_normal((3, I)), rng.standard_normal(I))
    x0, s0 = rng.standard_normal((2, I)), random_state(cell, 2, rng)
    a = L2.rnn_decoder([x0, rng.standard_normal((2, I)), x0], s0, cell, loop)
    outs, st, tr = L2.rnn_decoder([x0, None, None], s0, cell, loop, return_trace=True)
    assert all(np.array_equal(p, q) for p, q in zip(a[0], outs)) and np.array_equal(a[1], st)
    d_in, _ = tr.backward(None, np.ones_like(st))
    assert [d.shape for d in d_in] == [(2, I)] * 3 and not d_in[1].any() and not d_in[2].any()


def test_basic_rnn_seq2seq_keeps_one_encoder_copy_per_cell():
    """The first call deep-copies the cell (separate arrays, zero gradients); later calls use the
    same encoder, whose weights they do not touch; the decoder is the cell itself."""
    rng = _rng("encoder-copy")
    cell = R.BasicLSTMCell(3)
    assert L2.encoder_cell_of(cell) is None
    ex = [rng.standard_normal((2, 4)) for _ in range(3)]
    dx = [rng.standard_normal((2, 2)) for _ in range(2)]
    out1, _ = L2.basic_rnn_seq2seq(ex, dx, cell, dtype=F64)
    enc = L2.encoder_cell_of(cell)
    assert enc is not cell and enc.input_size == 4 and cell.input_size == 2
    assert not set(map(id, enc.params.values())) & set(map(id, cell.params.values()))
    before = {k: v.copy() for k, v in enc.params.items()}
    out2, _, tr = L2.basic_rnn_seq2seq(ex, dx, cell, dtype=F64, return_trace=True)
    assert tr.encoder_cell is enc and tr.decoder_cell is cell
    assert all(np.array_equal(a, b) for a, b in zip(out1, out2))
    tr.backward([np.ones_like(o) for o in out2], None)
    assert all(g.any() for g in enc.grads.values()) and all(g.any() for g in cell.grads.values())
    assert all(np.array_equal(before[k], v) for k, v in enc.params.items())
    # the encoder lives in the cell object: a deep copy of the model carries the trained encoder
    for v in enc.params.values():
        v += 0.25                                                   # "training" moves it
    twin = copy.deepcopy(cell)
    assert L2.encoder_cell_of(twin) is not None and L2.encoder_cell_of(twin) is not enc
    o_twin, s_twin = L2.basic_rnn_seq2seq(ex, dx, twin, dtype=F64)
    o_cell, s_cell = L2.basic_rnn_seq2seq(ex, dx, cell, dtype=F64)
    assert all(np.array_equal(a, b) for a, b in zip(o_twin, o_cell))
    assert not np.allclose(o_cell[0], out1[0])                      # the moved encoder was used
    # a built cell with no encoder kept would be a copy of its own weights: refused, not guessed
    built = make_cell("gru", rng, 2)
    ex1, dx1 = [rng.standard_normal((1, 2))], [rng.standard_normal((1, 2))]
    assert_raises_naming(ValueError, ["cell is built", "encoder_cell="], L2.basic_rnn_seq2seq,
                         ex1, dx1, built, dtype=F64)
    assert_raises_naming(ValueError, ["cell is built"], L2.basic_rnn_seq2seq, ex1, dx1,
                         R.DropoutWrapper(cell), dtype=F64)            # a new wrapper, built cell
    mine = make_cell("gru", rng, 2)
    L2.basic_rnn_seq2seq(ex1, dx1, built, dtype=F64, encoder_cell=mine)
    assert L2.encoder_cell_of(built) is mine                         # the one given is kept
    o_kept, _ = L2.basic_rnn_seq2seq(ex1, dx1, built, dtype=F64)
    o_mine, _ = L2.basic_rnn_seq2seq(ex1, dx1, built, dtype=F64, encoder_cell=mine)
    assert np.array_equal(o_kept[0], o_mine[0])


def test_basic_rnn_seq2seq_encoder_cell_must_match_the_decoder_state():
    rng = _rng("encoder-state")
    ex, dx = [rng.standard_normal((2, 3))], [rng.standard_normal((2, 3))]
    assert_raises_naming(ValueError, ["encoder_cell", "state_size", "LSTMStateTuple(c=3, h=3)", "3"],
                         L2.basic_rnn_seq2seq, ex, dx, R.GRUCell(3), dtype=F64,
                         encoder_cell=R.BasicLSTMCell(3))
    assert_raises_naming(ValueError, ["encoder_cell", "state_size", "5", "3"],
                         L2.basic_rnn_seq2seq, ex, dx, R.GRUCell(3), dtype=F64,
                         encoder_cell=R.GRUCell(5))


def test_loop_decoder_keeps_one_variational_mask_as_tf():
    """TF1's variational_recurrent dropout keeps one mask over the whole decode; the loop decoder
    runs one pass per step, so it must not draw a new mask at each: with a loop function that
    feeds back the first input, the decode equals the loop-free decode over the same inputs
    (one pass, one mask) under the same seed."""
    rng = _rng("variational-loop")
    x0, h0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    outs = {}
    for loop in (False, True):
        inner = R.GRUCell(4, seed=3, dtype=F64)
        cell = R.DropoutWrapper(inner, output_keep_prob=0.5, state_keep_prob=0.6,
                                variational_recurrent=True, seed=7, dtype=F64)
        fn = (lambda prev, i: x0) if loop else None
        outs[loop] = L2.rnn_decoder([x0] * 5, h0, cell, loop_function=fn)
        assert cell.replay is False                                   # put back afterwards
    for a, b in zip(outs[False][0], outs[True][0]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outs[False][1], outs[True][1], rtol=1e-12, atol=1e-12)


def test_python_lists_take_the_computation_dtype():
    """A Python list has no dtype: as a TF feed, it takes the computation's (float32 here), for
    decoder_inputs and for what a loop function returns; real float64 arrays stay refused."""
    rng = _rng("lists")
    cell = R.GRUCell(3, seed=1)
    h0 = cell.zero_state(2, np.float32)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    want, _ = L2.rnn_decoder([x, x], h0, cell, loop_function=lambda prev, i: x)
    got, _ = L2.rnn_decoder([x.tolist()] * 2, h0, cell, loop_function=lambda prev, i: x.tolist())
    assert got[1].dtype == np.float32 and np.array_equal(got[1], want[1])
    assert_raises_naming(TypeError, ["loop_function(outputs[0], 1)", "float64"], L2.rnn_decoder,
                         [x, x], h0, cell, loop_function=lambda prev, i: x.astype(np.float64))


def test_inspect_labels_the_decoder_and_seq2seq_layers():
    rng = _rng("inspect-labels")
    cell = R.MultiRNNCell([R.BasicLSTMCell(3, seed=0), R.GRUCell(3, seed=1)])
    ex = [rng.standard_normal((2, 3)) for _ in range(4)]
    dx = [rng.standard_normal((2, 3)) for _ in range(3)]
    *_, tr = L2.basic_rnn_seq2seq(ex, dx, cell, dtype=F64, return_trace=True)
    insp = npl.inspect.inspect_trace(tr)
    assert insp.labels == ["encoder layer 0", "encoder layer 1", "decoder layer 0", "decoder layer 1"]
    assert insp.layer(2).gates()["f"].shape == (3, 2, 3)              # decoder's LSTM: T = 3
    h0 = cell.zero_state(2, F64)
    *_, tr = L2.rnn_decoder(dx, h0, cell, loop_function=ArgmaxEmbed(rng.standard_normal((3, 3))),
                            return_trace=True)
    assert npl.inspect.inspect_trace(tr).labels == [
        "step %d layer %d" % (i, k) for i in range(3) for k in range(2)]


# TF 1.15's parameters (tensorflow/contrib/legacy_seq2seq/python/ops/seq2seq.py; no tf.contrib in
# TF 2 to read them from live): npl's begin with them, in order, with the same defaults
TF115_SIGNATURES = {
    "rnn_decoder": [("decoder_inputs", None), ("initial_state", None), ("cell", None),
                    ("loop_function", None), ("scope", None)],
    "basic_rnn_seq2seq": [("encoder_inputs", None), ("decoder_inputs", None), ("cell", None),
                          ("dtype", np.float32), ("scope", None)],
    "tied_rnn_seq2seq": [("encoder_inputs", None), ("decoder_inputs", None), ("cell", None),
                         ("loop_function", None), ("dtype", np.float32), ("scope", None)],
}


@pytest.mark.parametrize("name", sorted(TF115_SIGNATURES))
def test_tf1_parameters_come_first_in_tf1s_order(name):
    import inspect
    params = list(inspect.signature(getattr(L2, name)).parameters.values())
    theirs = TF115_SIGNATURES[name]
    assert [p.name for p in params[:len(theirs)]] == [n for n, _ in theirs]
    for p, (_, default) in zip(params, theirs):
        if p.default is not inspect.Parameter.empty or default is not None:
            assert p.default == default, (p.name, p.default, default)
    assert all(p.default is not inspect.Parameter.empty for p in params[len(theirs):])


def test_legacy_losses_are_npl_losses():
    assert L2.sequence_loss_by_example is npl.losses.sequence_loss_by_example
    assert L2.sequence_loss is npl.losses.sequence_loss
    assert npl.legacy_seq2seq is L2 and "legacy_seq2seq" in npl.__all__


# ============================================================================ errors
def _cell(width=4):
    c = R.BasicLSTMCell(3)
    c.build(width, F64)
    return c


def _xs(n=3, B=2, width=4, dtype=F64):
    rng = _rng("xs", n, B, width)
    return [rng.standard_normal((B, width)).astype(dtype) for _ in range(n)]


def _s0(B=2):
    return S(np.zeros((B, 3)), np.zeros((B, 3)))


def _loop(prev, i):
    return np.zeros((prev.shape[0], 4))


def _traced_loop(prev, i, return_trace=False):
    nxt = np.zeros((prev.shape[0], 4))
    return (nxt, _Trace(lambda d: None)) if return_trace else nxt


dec, basic, tied = L2.rnn_decoder, L2.basic_rnn_seq2seq, L2.tied_rnn_seq2seq
ERROR_CASES = [
    ("empty_decoder_inputs", lambda: dec([], _s0(), _cell()), ValueError,
     ["decoder_inputs", "non-empty", "empty list"]),
    ("empty_decoder_inputs_with_loop", lambda: dec([], _s0(), _cell(), _loop), ValueError,
     ["decoder_inputs", "empty list"]),
    ("decoder_inputs_not_a_list", lambda: dec(np.zeros((3, 2, 4)), _s0(), _cell()), TypeError,
     ["decoder_inputs", "ndarray"]),
    ("decoder_inputs_shapes_differ", lambda: dec(_xs()[:2] + [np.zeros((2, 5))], _s0(), _cell()),
     ValueError, ["decoder_inputs[2]", "(2, 5)", "(2, 4)"]),
    ("decoder_inputs_dtypes_differ", lambda: dec(_xs()[:2] + _xs(1, dtype=F32), _s0(), _cell()),
     TypeError, ["decoder_inputs[2]", "float32", "float64"]),
    ("decoder_inputs_rank", lambda: dec([np.zeros(4)], _s0(), _cell()), ValueError,
     ["decoder_inputs[0]", "rank 2"]),
    ("decoder_width_vs_cell", lambda: dec(_xs(width=5), _s0(), _cell()), ValueError,
     ["decoder_inputs[0]", "4", "(2, 5)"]),
    ("initial_state_none", lambda: dec(_xs(), None, _cell()), TypeError,
     ["initial_state", "required", "zero_state"]),
    ("initial_state_shape", lambda: dec(_xs(), S(np.zeros((2, 3)), np.zeros((3, 3))), _cell()),
     ValueError, ["initial_state.h", "(2, 3)", "(3, 3)"]),
    ("initial_state_structure", lambda: dec(_xs(), np.zeros((2, 3)), _cell()), TypeError,
     ["initial_state", "LSTMStateTuple"]),
    ("not_a_cell", lambda: dec(_xs(), _s0(), "lstm"), TypeError, ["cell", "str"]),
    ("loop_not_callable", lambda: dec(_xs(), _s0(), _cell(), loop_function=3), TypeError,
     ["loop_function", "callable", "int"]),
    ("loop_not_callable_tied", lambda: tied(_xs(), _xs(), _cell(), loop_function="argmax",
                                            dtype=F64), TypeError, ["loop_function", "str"]),
    ("scope_not_a_string", lambda: dec(_xs(), _s0(), _cell(), None, 7), TypeError, ["scope", "7"]),
    ("loop_wrong_shape", lambda: dec(_xs(), _s0(), _cell(), lambda p, i: np.zeros((2, 5))),
     ValueError, ["loop_function(outputs[0], 1)", "(2, 4)", "(2, 5)"]),
    ("loop_wrong_dtype", lambda: dec(_xs(), _s0(), _cell(), lambda p, i: np.zeros((2, 4), F32)),
     TypeError, ["loop_function(outputs[0], 1)", "float32"]),
    ("loop_without_trace_contract", lambda: dec(_xs(), _s0(), _cell(), _loop, return_trace=True),
     TypeError, ["loop_function", "return_trace", "autograd", "backward(d_next_input)", "d_prev"]),
    ("loop_trace_not_a_pair", lambda: dec(_xs(), _s0(), _cell(),
                                          lambda p, i, return_trace=False: np.zeros((2, 4)),
                                          return_trace=True),
     TypeError, ["loop_function(outputs[0], 1, return_trace=True)", "(next_input, trace)"]),
    ("empty_encoder_inputs", lambda: basic([], _xs(), R.GRUCell(3), dtype=F64), ValueError,
     ["encoder_inputs", "empty list"]),
    ("empty_decoder_inputs_basic", lambda: basic(_xs(), [], R.GRUCell(3), dtype=F64), ValueError,
     ["decoder_inputs", "empty list"]),
    ("encoder_shapes_differ", lambda: basic(_xs(2) + [np.zeros((2, 3))], _xs(), R.GRUCell(3),
                                            dtype=F64), ValueError, ["encoder_inputs[2]", "(2, 3)"]),
    ("batch_differs", lambda: basic(_xs(B=3), _xs(B=2), R.GRUCell(3), dtype=F64), ValueError,
     ["decoder_inputs[0]", "batch size 2", "encoder_inputs[0]", "3"]),
    ("dtype_default_float32", lambda: basic(_xs(), _xs(), R.GRUCell(3)), TypeError,
     ["encoder_inputs", "float64", "dtype=float32"]),
    ("decoder_dtype_differs", lambda: basic(_xs(), _xs(dtype=F32), R.GRUCell(3), dtype=F64),
     TypeError, ["decoder_inputs[0]", "float32", "float64"]),
    ("encoder_cell_is_cell", lambda: (lambda c: basic(_xs(), _xs(), c, dtype=F64, encoder_cell=c))(
        _cell()), ValueError, ["encoder_cell", "tied_rnn_seq2seq"]),
    ("encoder_cell_not_a_cell", lambda: basic(_xs(), _xs(), _cell(), dtype=F64, encoder_cell=1),
     TypeError, ["encoder_cell", "int"]),
    ("encoder_width_vs_encoder_cell", lambda: basic(_xs(width=5), _xs(), _cell(), dtype=F64,
                                                    encoder_cell=_cell()),
     ValueError, ["encoder_inputs[0]", "4", "(2, 5)", "encoder_cell"]),
    ("tied_widths_differ", lambda: tied(_xs(), _xs(width=2), R.GRUCell(3), dtype=F64), ValueError,
     ["decoder_inputs[0]", "4", "(2, 2)"]),
    ("tied_loop_without_contract", lambda: tied(_xs(), _xs(), R.GRUCell(3), _loop, dtype=F64,
                                                return_trace=True), TypeError,
     ["loop_function", "return_trace", "autograd"]),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_bad_input_raises_naming_the_argument(case):
    _, thunk, exc, words = case
    assert_raises_naming(exc, words, thunk)


def test_loop_contract_is_checked_before_any_step_runs():
    cell = R.GRUCell(3)
    with pytest.raises(TypeError, match="autograd"):
        dec(_xs(), np.zeros((2, 3)), cell, _loop, return_trace=True)
    assert not cell.built


def test_bad_loop_trace_gradient_raises_naming_it():
    cell = _cell()
    fn = lambda p, i, return_trace=False: (np.zeros((2, 4)), _Trace(lambda d: np.zeros((2, 2))))  # noqa: E731
    outs, st, tr = dec(_xs(), _s0(), cell, fn, return_trace=True)
    assert_raises_naming(ValueError, ["loop function's trace for step 2", "d_prev", "(2, 3)", "(2, 2)"],
                         tr.backward, [np.ones((2, 3))] * 3, None)


def _trace(loop=None):
    cell = _cell()
    outs, st, tr = dec(_xs(), _s0(), cell, loop, return_trace=True)
    return cell, outs, st, tr


BAD_COTANGENTS = [
    (lambda o, s: (o[:2], None), ValueError, ["d_outputs", "3", "2 entries"]),
    (lambda o, s: (np.stack(o), None), ValueError, ["d_outputs", "list"]),
    (lambda o, s: ([o[0], np.zeros((2, 4)), None], None), ValueError, ["d_outputs[1]", "(2, 3)", "(2, 4)"]),
    (lambda o, s: ([None, None, o[2].astype(F32)], None), TypeError, ["d_outputs[2]", "float32"]),
    (lambda o, s: (None, s.h), TypeError, ["d_final_state", "LSTMStateTuple"]),
    (lambda o, s: (None, S(s.c, np.zeros((2, 1)))), ValueError, ["d_final_state.h", "(2, 3)", "(2, 1)"]),
]


@pytest.mark.parametrize("loop", [None, _traced_loop], ids=["no_loop", "loop"])
@pytest.mark.parametrize("k", range(len(BAD_COTANGENTS)))
def test_bad_cotangent_raises_and_leaves_the_trace_usable(loop, k):
    make, exc, words = BAD_COTANGENTS[k]
    cell, outs, st, tr = _trace(loop)
    assert_raises_naming(exc, words, tr.backward, *make(outs, st))
    assert all(not g.any() for g in cell.grads.values())
    tr.backward([np.ones_like(o) for o in outs], None)
    assert all(g.any() for g in cell.grads.values())


@pytest.mark.parametrize("fn", ["decoder", "decoder_loop", "basic", "tied"])
def test_backward_twice_and_stale_trace_raise(fn):
    def make():
        cell = _cell()
        if fn.startswith("decoder"):
            outs, _, tr = dec(_xs(), _s0(), cell, _traced_loop if fn == "decoder_loop" else None,
                              return_trace=True)
            return cell, cell, outs, tr
        if fn == "basic":
            enc = _cell()
            outs, _, tr = basic(_xs(), _xs(), cell, dtype=F64, encoder_cell=enc, return_trace=True)
            return enc, cell, outs, tr
        outs, _, tr = tied(_xs(), _xs(), cell, dtype=F64, return_trace=True)
        return cell, cell, outs, tr
    enc, cell, outs, tr = make()
    d = [np.ones_like(o) for o in outs]
    tr.backward(d, None)
    with pytest.raises(npl.BackwardTwiceError):
        tr.backward(d, None)
    for which in ("encoder", "decoder"):      # a stale encoder is caught before the decoder runs
        enc, cell, outs, tr = make()
        target = enc if which == "encoder" else cell
        target.set_params({k: v + 0.5 for k, v in target.params.items()})
        with pytest.raises(npl.StaleTraceError):
            tr.backward(d, None)
        assert all(not g.any() for c in (enc, cell) for g in c.grads.values())


# ============================================================================ embedding models
# TF 1.15's embedding_rnn_decoder / embedding_rnn_seq2seq / _extract_argmax_and_embed written out on
# core ops (contrib is gone from TF2); the wrappers are test_projection_wrappers' TF 1.15 copies.
def tf_extract_argmax_and_embed(tf, embedding, output_projection, update_embedding):
    def loop_function(prev, _):
        if output_projection is not None:
            prev = tf.compat.v1.nn.xw_plus_b(prev, output_projection[0], output_projection[1])
        emb_prev = tf.nn.embedding_lookup(embedding, tf.argmax(prev, 1))
        return emb_prev if update_embedding else tf.stop_gradient(emb_prev)
    return loop_function


def tf_embedding_rnn_decoder(tf, decoder_inputs, initial_state, cell, num_symbols, embedding_size,
                             output_projection=None, feed_previous=False, update=True):
    v1 = tf.compat.v1
    with v1.variable_scope("embedding_rnn_decoder"):
        embedding = v1.get_variable("embedding", [num_symbols, embedding_size],
                                    dtype=initial_state[0].dtype if isinstance(initial_state, tuple)
                                    else initial_state.dtype)
        loop = tf_extract_argmax_and_embed(tf, embedding, output_projection, update) \
            if feed_previous else None
        emb = [tf.nn.embedding_lookup(embedding, i) for i in decoder_inputs]
        return tf_rnn_decoder(v1, emb, initial_state, cell, loop_function=loop)


def tf_embedding_rnn_seq2seq(tf, encoder_inputs, decoder_inputs, cell_fn, n_enc, n_dec, emb_size,
                             output_projection, feed_previous, dtype):
    from test_projection_wrappers import tf_wrappers
    OPW, _, EW = tf_wrappers(tf)
    v1 = tf.compat.v1
    with v1.variable_scope("embedding_rnn_seq2seq", dtype=dtype):
        enc = EW(cell_fn(), n_enc, emb_size)                 # TF deep-copies the unbuilt cell
        _, enc_state = v1.nn.static_rnn(enc, encoder_inputs, dtype=dtype)
        cell = cell_fn()
        if output_projection is None:
            cell = OPW(cell, n_dec)
        return tf_embedding_rnn_decoder(tf, decoder_inputs, enc_state, cell, n_dec, emb_size,
                                        output_projection, feed_previous)


def _emb_model(kind, projection, B, seed):
    rng = np.random.default_rng(seed)
    H, E, Ve, Vd, Te, Td = 4, 3, 6, 5, 3, 4
    cell = npl.rnn.BasicLSTMCell(H, forget_bias=0.6) if kind == "basic_lstm" else \
        npl.rnn.MultiRNNCell([npl.rnn.GRUCell(3), npl.rnn.BasicLSTMCell(H)])
    enc = [rng.integers(0, Ve, B) for _ in range(Te)]
    dec = [rng.integers(0, Vd, B) for _ in range(Td)]
    proj = (rng.standard_normal((H, Vd)), rng.standard_normal(Vd)) if projection else None
    return rng, cell, enc, dec, proj, (Ve, Vd, E)


def _npl_seq2seq(rng, cell, enc, dec, proj, sizes, feed_previous):
    Ve, Vd, E = sizes
    L = npl.legacy_seq2seq
    L.embedding_rnn_seq2seq(enc, dec, cell, Ve, Vd, E, output_projection=proj,
                            feed_previous=feed_previous, dtype=np.float64)     # makes the model
    m = L.embedding_model_of(cell)
    for k, v in m.params.items():
        v[...] = rng.standard_normal(v.shape) * (1.5 if "embedding" in k else 0.6)
    m.zero_grad()
    outs, st, tr = L.embedding_rnn_seq2seq(enc, dec, cell, Ve, Vd, E, output_projection=proj,
                                           feed_previous=feed_previous, dtype=np.float64,
                                           return_trace=True)
    d_out = [rng.standard_normal(o.shape) for o in outs]
    d_st = [rng.standard_normal(a.shape) for a in flatten(st)]
    assert tr.backward(d_out, unflatten(st, d_st)) == (None, None)
    return m, outs, st, d_out, d_st


@pytest.mark.tf
@pytest.mark.parametrize("kind", ["basic_lstm", "multi"])
@pytest.mark.parametrize("projection", [False, True])
@pytest.mark.parametrize("feed_previous", [False, True])
def test_embedding_rnn_seq2seq_matches_live_tf(kind, projection, feed_previous):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf = pytest.importorskip("tensorflow")
    from test_wrappers import tf_state  # noqa: F401
    v1 = tf.compat.v1
    B = 1 if kind == "multi" and projection else 3
    rng, cell, enc, dec, proj, sizes = _emb_model(kind, projection, B, [len(kind), projection, feed_previous])
    m, outs, st, d_out, d_st = _npl_seq2seq(rng, cell, enc, dec, proj, sizes, feed_previous)
    rc = v1.nn.rnn_cell

    def cell_fn():
        return rc.BasicLSTMCell(4, forget_bias=0.6) if kind == "basic_lstm" else \
            rc.MultiRNNCell([rc.GRUCell(3), rc.BasicLSTMCell(4)])
    g = v1.Graph()
    with g.as_default(), v1.Session() as sess:
        tproj = None if proj is None else (tf.constant(proj[0]), tf.constant(proj[1]))
        t_outs, t_st = tf_embedding_rnn_seq2seq(
            tf, [tf.constant(i.astype(np.int32)) for i in enc],
            [tf.constant(i.astype(np.int32)) for i in dec], cell_fn, *sizes, tproj,
            feed_previous, tf.float64)
        variables = v1.global_variables()
        names = sorted(v.op.name for v in variables)
        assert names == sorted(m.params), "TF created %s, npl names %s" % (names, sorted(m.params))
        loss = tf.add_n([tf.reduce_sum(o * d) for o, d in zip(t_outs, d_out)] +
                        [tf.reduce_sum(a * d) for a, d in zip(flatten(t_st), d_st)])
        grads = [tf.convert_to_tensor(gr) if isinstance(gr, tf.IndexedSlices) else gr
                 for gr in tf.gradients(loss, variables)]
        for v in variables:
            v.load(m.params[v.op.name], sess)
        r_outs, r_st, r_g = sess.run([t_outs, flatten(t_st), grads])
    errs = [rel_err(a, b) for a, b in zip(outs, r_outs)] + \
        [rel_err(a, b) for a, b in zip(flatten(st), r_st)]
    npl_g = m.grads
    errs += [rel_err(npl_g[v.op.name], gr) for v, gr in zip(variables, r_g)]
    assert max(errs) < 1e-9, max(errs)


@pytest.mark.tf
@pytest.mark.parametrize("update", [True, False])
def test_embedding_rnn_decoder_feed_previous_matches_live_tf(update):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    rng = np.random.default_rng([7, update])
    cell = npl.rnn.GRUCell(5)
    dec = [rng.integers(0, 5, 3) for _ in range(4)]
    h0 = rng.standard_normal((3, 5))
    L = npl.legacy_seq2seq
    L.embedding_rnn_decoder(dec, h0, cell, 5, 2)
    m = L.embedding_model_of(cell)
    for v in m.params.values():
        v[...] = rng.standard_normal(v.shape)
    m.zero_grad()
    outs, h, tr = L.embedding_rnn_decoder(dec, h0, cell, 5, 2, feed_previous=True,
                                          update_embedding_for_previous=update, return_trace=True)
    d_out, d_h = [rng.standard_normal(o.shape) for o in outs], rng.standard_normal(h.shape)
    _, dh0 = tr.backward(d_out, d_h)
    g = v1.Graph()
    with g.as_default(), v1.Session() as sess:
        th0 = tf.constant(h0)
        t_outs, t_h = tf_embedding_rnn_decoder(tf, [tf.constant(i.astype(np.int32)) for i in dec], th0,
                                               v1.nn.rnn_cell.GRUCell(5), 5, 2, None, True, update)
        variables = v1.global_variables()
        assert sorted(v.op.name for v in variables) == sorted(m.params)
        loss = tf.add_n([tf.reduce_sum(o * d) for o, d in zip(t_outs, d_out)]) + tf.reduce_sum(t_h * d_h)
        grads = [tf.convert_to_tensor(gr) if isinstance(gr, tf.IndexedSlices) else gr
                 for gr in tf.gradients(loss, [th0] + variables)]
        for v in variables:
            v.load(m.params[v.op.name], sess)
        r_outs, r_h, r_g = sess.run([t_outs, t_h, grads])
    errs = [rel_err(a, b) for a, b in zip(outs, r_outs)] + [rel_err(h, r_h), rel_err(dh0, r_g[0])]
    errs += [rel_err(m.grads[v.op.name], gr) for v, gr in zip(variables, r_g[1:])]
    assert max(errs) < 1e-9, max(errs)
