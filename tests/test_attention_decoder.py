"""npl.legacy_seq2seq.attention_decoder (tf.contrib.legacy_seq2seq.attention_decoder).

* Live TensorFlow (``@pytest.mark.tf``): TF 2 has no ``tf.contrib``, so TF 1.15's
  attention_decoder is written out below from its source in ``tf.compat.v1`` core ops (the 1x1
  ``conv2d`` of the attention states with ``AttnW_<a>``, ``AttnV_<a>``, ``_linear`` as
  ``get_variable("kernel")`` / ``get_variable("bias", zeros)`` / ``bias_add`` under
  ``Attention_<a>``, the input linear in the decoder's scope, ``AttnOutputProjection``, the
  reuse rules and ``initial_state_attention``).  Every variable, input, initial state, attention
  state and cotangent is random; the names of the variables TF's graph made must equal the names
  ``attention_model_of(cell).params`` reports.  Compared: outputs, final state and
  ``tf.gradients`` of a random linear loss w.r.t. the decoder inputs, the initial state, the
  attention states, every variable, and a loop function's parameters.
* Float64 central finite differences of the trace's backward.
* Bad arguments raise ValueError / TypeError naming the argument.
"""
import os

import numpy as np
import pytest

import npl
import tf_reference as ref
from helpers import (flatten, unflatten, rel_err, seeded_rng as _rng, assert_raises_naming, held_bytes,
                     run_on_cupy_stand_in)
from test_gradients import fd_check
from test_legacy_seq2seq import ArgmaxEmbed, TanhProjection

L2 = npl.legacy_seq2seq
RTOL = ref.RTOL
_C = ref.cell


# ============================================================================ TF 1.15's function
def tf_attention_decoder(tf, decoder_inputs, initial_state, attention_states, cell,
                         output_size=None, num_heads=1, loop_function=None, dtype=None,
                         scope=None, initial_state_attention=False):
    """TF 1.15 legacy_seq2seq.attention_decoder on tf.compat.v1 core ops."""
    v1 = tf.compat.v1

    def linear(args, size):            # rnn_cell_impl._linear with bias=True
        args = list(args) if isinstance(args, (list, tuple)) else [args]
        total = sum(int(a.shape[1]) for a in args)
        dt = args[0].dtype
        W = v1.get_variable("kernel", [total, size], dtype=dt)
        res = tf.matmul(args[0] if len(args) == 1 else tf.concat(args, 1), W)
        b = v1.get_variable("bias", [size], dtype=dt,
                            initializer=v1.constant_initializer(0.0, dtype=dt))
        return tf.nn.bias_add(res, b)

    if output_size is None:
        output_size = cell.output_size
    with v1.variable_scope(scope or "attention_decoder", dtype=dtype) as sc:
        dtype = sc.dtype
        batch = tf.shape(decoder_inputs[0])[0]
        L, D = int(attention_states.shape[1]), int(attention_states.shape[2])
        hidden = tf.reshape(attention_states, [-1, L, 1, D])
        feats, vs = [], []
        for a in range(num_heads):
            k = v1.get_variable("AttnW_%d" % a, [1, 1, D, D])
            feats.append(tf.nn.conv2d(hidden, k, [1, 1, 1, 1], "SAME"))
            vs.append(v1.get_variable("AttnV_%d" % a, [D]))

        def attention(query):
            ds = []
            if tf.nest.is_nested(query):
                query = tf.concat(tf.nest.flatten(query), 1)
            for a in range(num_heads):
                with v1.variable_scope("Attention_%d" % a):
                    y = tf.reshape(linear(query, D), [-1, 1, 1, D])
                    s = tf.reduce_sum(vs[a] * tf.tanh(feats[a] + y), [2, 3])
                    p = tf.nn.softmax(s)
                    d = tf.reduce_sum(tf.reshape(p, [-1, L, 1, 1]) * hidden, [1, 2])
                    ds.append(tf.reshape(d, [-1, D]))
            return ds

        attns = [tf.zeros(tf.stack([batch, D]), dtype=dtype) for _ in range(num_heads)]
        for a in attns:
            a.set_shape([None, D])
        if initial_state_attention:
            attns = attention(initial_state)
        state, prev, outputs = initial_state, None, []
        for i, inp in enumerate(decoder_inputs):
            if i > 0:
                v1.get_variable_scope().reuse_variables()
            if loop_function is not None and prev is not None:
                with v1.variable_scope("loop_function", reuse=True):
                    inp = loop_function(prev, i)
            x = linear([inp] + attns, int(inp.shape[1]))
            cell_output, state = cell(x, state)
            if i == 0 and initial_state_attention:
                with v1.variable_scope(v1.get_variable_scope(), reuse=True):
                    attns = attention(state)
            else:
                attns = attention(state)
            with v1.variable_scope("AttnOutputProjection"):
                output = linear([cell_output] + attns, output_size)
            if loop_function is not None:
                prev = output
            outputs.append(output)
    return outputs, state


# ============================================================================ cases
def case(name, cell, B=3, T=3, I=2, L=4, D=5, heads=1, out=None, isa=False, dtype="float64",
         loop=None, scope=None, d_state=True):
    return dict(name=name, cell=cell, B=B, T=T, I=I, L=L, D=D, heads=heads, out=out, isa=isa,
                dtype=dtype, loop=loop, scope=scope, d_state=d_state)


_MULTI = ref.multi(_C("BasicLSTMCell", 3, forget_bias=0.7), _C("GRUCell", 4))
CASES = [
    case("gru", _C("GRUCell", 4)),
    case("gru_heads2_out_isa", _C("GRUCell", 3), heads=2, out=5, isa=True),
    case("lstm_tuple", _C("BasicLSTMCell", 4, forget_bias=0.3), out=3, scope="my_attention"),
    case("lstm_heads2_isa", _C("BasicLSTMCell", 3, forget_bias=-0.4), heads=2, isa=True),
    case("multi_heads2_out", _MULTI, heads=2, out=6, I=3),
    case("multi_isa", _MULTI, isa=True, D=3),
    case("batch1_one_step_len1", _C("GRUCell", 3), B=1, T=1, L=1, isa=True, heads=2),
    case("len1_lstm", _C("BasicLSTMCell", 3, forget_bias=0.2), L=1, d_state=False),
    case("f32_lstm_heads2", _C("BasicLSTMCell", 4, forget_bias=0.5), heads=2, out=3, isa=True,
         dtype="float32"),
    case("f32_gru", _C("GRUCell", 3), dtype="float32"),
    case("loop_proj_multi", _MULTI, T=4, heads=2, out=4, isa=True, loop="proj"),
    case("loop_proj_gru_f32", _C("GRUCell", 3), T=3, out=5, loop="proj", dtype="float32"),
    case("loop_argmax_lstm", _C("BasicLSTMCell", 3, forget_bias=0.1), T=4, out=6, loop="argmax"),
]
CASES_BY_NAME = {c["name"]: c for c in CASES}


def _setup(c):
    """npl's model for a case with every variable random, and every random array."""
    rng = _rng(c["name"], "attention")
    dt = np.dtype(c["dtype"])
    B, T, I, L, D = c["B"], c["T"], c["I"], c["L"], c["D"]
    cell = ref.npl_cell(c["cell"], dt)

    def normal(shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dt)
    xs = [normal((B, I)) for _ in range(T)]
    hs = normal((B, L, D))
    s0 = unflatten(cell.zero_state(B, dt), [normal(z.shape, 0.7) for z in flatten(cell.zero_state(B, dt))])
    L2.attention_decoder(xs, s0, hs, cell, output_size=c["out"], num_heads=c["heads"],
                         dtype=dt, scope=c["scope"], initial_state_attention=c["isa"])
    m = L2.attention_model_of(cell)
    for k, v in m.params.items():
        v[...] = normal(v.shape, 0.6)
    m.zero_grad()
    O = c["out"] or cell.output_size
    loop = None
    if c["loop"] == "proj":
        loop = TanhProjection(normal((O, I), 0.8), normal((I,), 0.5))
    elif c["loop"] == "argmax":
        loop = ArgmaxEmbed(normal((O, I)))
    dys = [normal((B, O)) for _ in range(T)]
    dst = [normal(z.shape) for z in flatten(s0)] if c["d_state"] else None
    return cell, m, xs, hs, s0, loop, dys, dst


def _npl(c, cell, xs, hs, s0, loop, dys, dst):
    outs, st, tr = L2.attention_decoder(xs, s0, hs, cell, output_size=c["out"],
                                        num_heads=c["heads"], loop_function=loop,
                                        dtype=np.dtype(c["dtype"]), scope=c["scope"],
                                        initial_state_attention=c["isa"], return_trace=True)
    assert isinstance(tr, L2.AttentionDecoderTrace)
    d_x, d_s0, d_h = tr.backward(dys, None if dst is None else unflatten(st, dst))
    return outs, st, d_x, d_s0, d_h


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf_keras")
    return ref.import_tf()


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(CASES_BY_NAME))
def test_matches_live_tf(tf, name):
    c = CASES_BY_NAME[name]
    cell, m, xs, hs, s0, loop, dys, dst = _setup(c)
    outs, st, d_x, d_s0, d_h = _npl(c, cell, xs, hs, s0, loop, dys, dst)
    v1 = tf.compat.v1
    tdt = tf.as_dtype(c["dtype"])
    g = v1.Graph()
    with g.as_default(), v1.Session() as sess:
        t_xs = [tf.constant(x) for x in xs]
        t_s0l = [tf.constant(a) for a in flatten(s0)]
        t_hs = tf.constant(hs)
        tcell = ref._tf_cell(tf, c["cell"])
        t_s0 = tf.nest.pack_sequence_as(tcell.zero_state(c["B"], tdt), t_s0l)
        lp, tloop = [], None
        if c["loop"] == "proj":
            W, cc = tf.constant(loop.W), tf.constant(loop.c)
            lp = [W, cc]
            tloop = lambda prev, i: tf.tanh(tf.matmul(prev, W) + float(i) * cc)  # noqa: E731
        elif c["loop"] == "argmax":
            E = tf.constant(loop.E)
            lp = [E]
            tloop = lambda prev, i: tf.nn.embedding_lookup(E, tf.argmax(prev, 1))  # noqa: E731
        t_outs, t_st = tf_attention_decoder(tf, t_xs, t_s0, t_hs, tcell, output_size=c["out"],
                                            num_heads=c["heads"], loop_function=tloop, dtype=tdt,
                                            scope=c["scope"], initial_state_attention=c["isa"])
        variables = v1.global_variables()
        names = sorted(v.op.name for v in variables)
        assert names == sorted(m.params), "TF made %s, npl names %s" % (names, sorted(m.params))
        loss = tf.add_n([tf.reduce_sum(o * d) for o, d in zip(t_outs, dys)] +
                        ([tf.reduce_sum(a * d) for a, d in zip(tf.nest.flatten(t_st), dst)]
                         if dst is not None else []))
        wrt = t_xs + t_s0l + [t_hs] + lp + variables
        grads = [tf.zeros_like(x) if gr is None else tf.convert_to_tensor(gr)
                 for x, gr in zip(wrt, tf.gradients(loss, wrt))]
        for v in variables:
            v.load(m.params[v.op.name], sess)
        r_outs, r_st, r_g = sess.run([t_outs, tf.nest.flatten(t_st), grads])
    T, K = c["T"], len(t_s0l)
    got = {"y%d" % t: o for t, o in enumerate(outs)}
    want = {"y%d" % t: o for t, o in enumerate(r_outs)}
    got.update({"st%d" % k: a for k, a in enumerate(flatten(st))})
    want.update({"st%d" % k: a for k, a in enumerate(r_st)})
    got.update({"dx%d" % t: a for t, a in enumerate(d_x)})
    want.update({"dx%d" % t: a for t, a in enumerate(r_g[:T])})
    got.update({"ds0_%d" % k: a for k, a in enumerate(flatten(d_s0))})
    want.update({"ds0_%d" % k: a for k, a in enumerate(r_g[T:T + K])})
    got["dh"], want["dh"] = d_h, r_g[T + K]
    rest = r_g[T + K + 1:]
    if c["loop"] == "proj":
        got["dW"], got["dc"] = loop.dW, loop.dc
        want["dW"], want["dc"] = rest[0], rest[1]
    elif c["loop"] == "argmax":
        got["dE"], want["dE"] = loop.dE, rest[0]
    npl_g = m.grads
    for v, gr in zip(variables, rest[len(lp):]):
        got[v.op.name], want[v.op.name] = npl_g[v.op.name], gr
    errs = {k: rel_err(got[k], want[k]) for k in want}
    worst = max(errs.values())
    abs_worst = max(float(np.abs(np.asarray(got[k], np.float64) - want[k]).max()) for k in want)
    if os.environ.get("NPL_ATT_LOG"):           # optional: the agreement figures, per case
        with open(os.environ["NPL_ATT_LOG"], "a") as f:
            f.write("%s rel %.3g abs %.3g\n" % (name, worst, abs_worst))
    bad = {k: e for k, e in errs.items() if not e <= RTOL[c["dtype"]]}
    assert not bad, bad
    if c["isa"]:        # with initial_state_attention the initial state feeds the first input
        assert np.abs(want["ds0_0"]).max() > 0
    if c["loop"] is not None:
        for t in range(1, T):
            assert not want["dx%d" % t].any() and not got["dx%d" % t].any()


# ============================================================================ finite differences
class _Model:
    """fd_check's 'cell': the attention model's variables and the cell's, under TF's names."""

    def __init__(self, m):
        self.m = m
        self.params, self.grads = m.params, m.grads

    def zero_grad(self):
        self.m.zero_grad()


@pytest.mark.parametrize("name", ["gru_heads2_out_isa", "lstm_heads2_isa", "multi_isa",
                                  "batch1_one_step_len1", "loop_proj_multi", "len1_lstm"])
def test_backward_matches_finite_differences(name):
    c = dict(CASES_BY_NAME[name], dtype="float64", T=min(CASES_BY_NAME[name]["T"], 3))
    cell, m, xs, hs, s0, loop, _, _ = _setup(c)
    rng = _rng(name, "fd")

    def run(trace):
        res = L2.attention_decoder(xs, s0, hs, cell, output_size=c["out"], num_heads=c["heads"],
                                   loop_function=loop, dtype=np.float64,
                                   initial_state_attention=c["isa"], return_trace=trace)
        return res

    def backward(tr, d_out, d_state):
        d_x, d_s0, d_h = tr.backward(d_out, d_state)
        return d_x + [d_h], d_s0
    model = _Model(m)
    d_in, d_init, errs = fd_check([model], run, backward, xs + [hs], s0, rng,
                                  d_state=c["d_state"])
    assert len(d_in) == c["T"] + 1 and d_in[-1].shape == hs.shape
    if c["L"] > 1:      # (over one attention position the softmax is 1: no gradient to AttnW/V)
        assert all(np.abs(g).max() > 0 for g in model.grads.values())


# ============================================================================ errors
def _args():
    rng = np.random.default_rng(5)
    return dict(decoder_inputs=[rng.standard_normal((2, 3)) for _ in range(2)],
                initial_state=np.zeros((2, 4)), attention_states=rng.standard_normal((2, 5, 6)),
                cell=npl.rnn.GRUCell(4))


def _call(**over):
    kw = _args()
    kw.update(over)
    return L2.attention_decoder(**kw)


ERRORS = [
    ("rank2", dict(attention_states=np.zeros((2, 5))), ValueError, ["attention_states", "rank 3", "(2, 5)"]),
    ("rank4", dict(attention_states=np.zeros((2, 5, 6, 1))), ValueError, ["attention_states", "rank 3"]),
    ("batch", dict(attention_states=np.zeros((3, 5, 6))), ValueError,
     ["attention_states", "batch size 3", "decoder_inputs[0]", "2"]),
    ("dtype_vs_inputs", dict(attention_states=np.zeros((2, 5, 6), np.float32)), TypeError,
     ["decoder_inputs[0]", "float64", "float32"]),
    ("dtype_arg", dict(dtype=np.float32), TypeError, ["attention_states", "float64", "float32"]),
    ("int_states", dict(attention_states=np.zeros((2, 5, 6), np.int64)), TypeError,
     ["attention_states", "int64"]),
    ("empty_length", dict(attention_states=np.zeros((2, 0, 6))), ValueError,
     ["attention_states", "attn_length"]),
    ("heads0", dict(num_heads=0), ValueError, ["num_heads", ">= 1", "0"]),
    ("heads_float", dict(num_heads=1.5), TypeError, ["num_heads", "1.5"]),
    ("out0", dict(output_size=0), ValueError, ["output_size", "positive", "0"]),
    ("out_str", dict(output_size="4"), ValueError, ["output_size", "'4'"]),
    ("isa", dict(initial_state_attention=1), TypeError, ["initial_state_attention", "bool"]),
    ("no_state", dict(initial_state=None), TypeError, ["initial_state", "required"]),
    ("state_shape", dict(initial_state=np.zeros((2, 3))), ValueError, ["initial_state", "(2, 4)", "(2, 3)"]),
    ("empty_inputs", dict(decoder_inputs=[]), ValueError, ["decoder_inputs", "non-empty"]),
    ("scope", dict(scope=3), TypeError, ["scope"]),
]


@pytest.mark.parametrize("name,over,exc,words", ERRORS, ids=[e[0] for e in ERRORS])
def test_bad_arguments_raise_naming_them(name, over, exc, words):
    kw = _args()
    assert_raises_naming(exc, words, _call, **dict(over, cell=kw["cell"]))
    assert L2.attention_model_of(kw["cell"]) is None and not kw["cell"].built


def test_model_kept_with_the_cell_and_checked():
    kw = _args()
    cell = kw["cell"]
    L2.attention_decoder(**kw)
    m = L2.attention_model_of(cell)
    assert isinstance(m, L2.AttentionModel)
    before = {k: v.copy() for k, v in m.params.items()}
    L2.attention_decoder(**kw)                      # a second call reuses the same variables
    assert L2.attention_model_of(cell) is m
    assert all(np.array_equal(before[k], v) for k, v in m.params.items())
    assert_raises_naming(ValueError, ["attention_decoder", "num_heads", "new cell"],
                         L2.attention_decoder, **dict(kw, num_heads=2))
    built = npl.rnn.GRUCell(4)
    built.build(3, np.float64)
    assert_raises_naming(ValueError, ["built", "attention model"], L2.attention_decoder,
                         **dict(kw, cell=built))


def test_stale_and_twice():
    kw = _args()
    outs, st, tr = L2.attention_decoder(**kw, return_trace=True)
    d = [np.ones_like(o) for o in outs]
    tr.backward(d, None)
    with pytest.raises(npl.BackwardTwiceError):
        tr.backward(d, None)
    m = L2.attention_model_of(kw["cell"])
    outs, st, tr = L2.attention_decoder(**kw, return_trace=True)
    m.set_params({k: v + 0.1 for k, v in m.params.items()})
    with pytest.raises(npl.StaleTraceError):
        tr.backward(d, None)
    outs, st, tr = L2.attention_decoder(**kw, return_trace=True)
    assert_raises_naming(ValueError, ["d_outputs[0]", "(2, 4)", "(2, 3)"], tr.backward,
                         [np.ones((2, 3)), None], None)
    tr.backward(d, None)                            # the bad cotangent consumed nothing


def test_trace_nbytes_counts_the_attention_arrays(no_workspace_pool):
    """trace.nbytes counts what the trace keeps for the attention's backward (each step's tanh
    [B, L, heads, D] and softmax, the linears' inputs), against tracemalloc: within 10 % (the
    Python objects of every step around the arrays)."""
    rng = np.random.default_rng(5)
    B, T, Lh, D = 16, 20, 30, 8
    cell = npl.rnn.GRUCell(8, dtype=np.float64)
    att = rng.standard_normal((B, Lh, D))
    dec = [rng.standard_normal((B, 5)) for _ in range(T)]
    h0 = rng.standard_normal((B, 8))
    held, tr = held_bytes(lambda: npl.legacy_seq2seq.attention_decoder(
        dec, h0, att, cell, num_heads=2, return_trace=True)[2])
    assert abs(held - tr.nbytes) <= 0.1 * tr.nbytes, (held, tr.nbytes)


def test_replacing_only_the_attention_variables_makes_the_trace_stale():
    """The attention variables' own version is checked before the backward consumes anything:
    replacing them alone (the cell untouched, its version unchanged) raises StaleTraceError,
    adds no gradient, and leaves the cell's trace usable."""
    rng = np.random.default_rng(6)
    cell = npl.rnn.GRUCell(4, dtype=np.float64)
    att = rng.standard_normal((2, 3, 5))
    dec = [rng.standard_normal((2, 3)) for _ in range(2)]
    outs, st, tr = npl.legacy_seq2seq.attention_decoder(dec, rng.standard_normal((2, 4)), att, cell,
                                                        return_trace=True)
    m = npl.legacy_seq2seq.attention_model_of(cell)
    m.zero_grad()
    cell_version = cell._version
    v = m.variables
    v._params["AttnV_0"][...] += 1
    v._bump_version()
    assert cell._version == cell_version
    with pytest.raises(npl.StaleTraceError):
        tr.backward([np.ones_like(o) for o in outs], None)
    assert not any(np.any(g) for g in m.grads.values())


def test_cotangents_and_states_given_as_python_lists():
    """Lists have no dtype or structure of their own: converted by the cell, as dynamic_rnn's and
    rnn_decoder's traces do, they give the arrays' results (a list d_final_state used to be
    walked as a structure, silently wrong)."""
    rng = np.random.default_rng(7)
    for cell_fn in (lambda: npl.rnn.GRUCell(4, dtype=np.float64),
                    lambda: npl.rnn.BasicLSTMCell(4, dtype=np.float64)):
        cell = cell_fn()
        att = rng.standard_normal((2, 3, 5))
        dec = [rng.standard_normal((2, 3)) for _ in range(3)]
        h0 = npl.nn.dynamic_rnn(cell, rng.standard_normal((2, 1, 3)), dtype=np.float64)[1]
        cell = cell_fn()                                            # unbuilt again
        got = []
        for as_list in (False, True):
            if as_list:
                s0 = type(h0)(*[a.tolist() for a in h0]) if isinstance(h0, tuple) else h0.tolist()
            else:
                s0 = h0
            outs, st, tr = npl.legacy_seq2seq.attention_decoder(
                dec, s0, att, cell, num_heads=2, initial_state_attention=True, return_trace=True)
            dy = [np.full_like(o, 0.5) for o in outs]
            dst = type(st)(*[np.full_like(a, 0.25) for a in st]) if isinstance(st, tuple) else np.full_like(st, 0.25)
            if as_list:
                dst = type(dst)(*[a.tolist() for a in dst]) if isinstance(dst, tuple) else dst.tolist()
            got.append(tr.backward(dy, dst))
        (di_a, ds_a, dh_a), (di_b, ds_b, dh_b) = got
        np.testing.assert_array_equal(dh_a, dh_b)
        for a, b in zip(flatten(ds_a), flatten(ds_b)):
            np.testing.assert_array_equal(a, b)


def test_trace_nbytes_with_wide_attention_and_a_tuple_state(no_workspace_pool):
    """Wide attention (the arrays the backward needs dominate): nbytes within 10 % of what
    tracemalloc sees held, for a GRU with D = 256 and four heads, and a stack of two LSTMs (the
    queries are concatenated copies of the tuple states)."""
    for cell, D, H in ((npl.rnn.GRUCell(8, dtype=np.float64), 256, 4),
                       (npl.rnn.MultiRNNCell([npl.rnn.BasicLSTMCell(64, dtype=np.float64),
                                              npl.rnn.BasicLSTMCell(64, dtype=np.float64)]), 128, 2)):
        rng = np.random.default_rng(8)
        att = rng.standard_normal((16, 4, D))
        dec = [rng.standard_normal((16, 3)) for _ in range(3)]
        h0 = cell.zero_state(16, np.float64)
        held, tr = held_bytes(lambda: npl.legacy_seq2seq.attention_decoder(
            dec, h0, att, cell, num_heads=H, return_trace=True)[2])
        assert abs(held - tr.nbytes) <= 0.1 * tr.nbytes, (type(cell).__name__, held, tr.nbytes)


_STAND_IN = r"""
import numpy as np, npl
L = npl.legacy_seq2seq
rng = np.random.default_rng(9)
att = rng.standard_normal((2, 3, 5)).astype(np.float32)
dec = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(2)]
h0 = rng.standard_normal((2, 4)).astype(np.float32)
dev = lambda a: npl.to_device(a, "cupy")
# host initial state, device inputs: npl's message, before any model is made
cell = npl.rnn.GRUCell(4).to_device("cupy")
try:
    L.attention_decoder([dev(d) for d in dec], h0, dev(att), cell, initial_state_attention=True)
    raise SystemExit("no error")
except TypeError as e:
    assert "initial_state" in str(e) and "cupy" in str(e), e
assert L.attention_model_of(cell) is None
# device inputs with a host cell: refused before a model is kept; to_device, then it runs
cell = npl.rnn.GRUCell(4)
try:
    L.attention_decoder([dev(d) for d in dec], dev(h0), dev(att), cell)
    raise SystemExit("no error")
except TypeError as e:
    assert "attention_states" in str(e), e
assert L.attention_model_of(cell) is None and not cell.built
# a model made on the host follows its cell to the device: the same numbers
ref, _ = L.attention_decoder(dec, h0, att, cell, num_heads=2)
cell.to_device("cupy")
got, _ = L.attention_decoder([dev(d) for d in dec], dev(h0), dev(att), cell, num_heads=2)
err = max(float(abs(npl.to_numpy(g) - r).max()) for g, r in zip(got, ref))
assert err < 1e-6, err
# the embedding models' and basic_rnn_seq2seq's kept parts follow the cell too
ids = [np.array([1, 2]), np.array([0, 3])]
for fn in ("embedding_rnn_seq2seq", "basic_rnn_seq2seq"):
    cell = npl.rnn.GRUCell(4)
    if fn == "embedding_rnn_seq2seq":
        run = lambda c, d: L.embedding_rnn_seq2seq([d(i) for i in ids], [d(i) for i in ids], c, 4, 6, 3)
    else:
        run = lambda c, d: L.basic_rnn_seq2seq([d(x) for x in dec], [d(x) for x in dec], c)
    ref, _ = run(cell, lambda a: a)
    cell.to_device("cupy")
    got, _ = run(cell, dev)
    e = max(float(abs(npl.to_numpy(g) - r).max()) for g, r in zip(got, ref))
    assert e < 1e-6, (fn, e)
print("ok", err)
"""


def test_devices_on_the_cupy_stand_in():
    """On the CuPy stand-in (tests/fake_cupy): a host initial state with device inputs gets npl's
    message, a refused first call keeps no model, and a model follows its cell's to_device (as
    do the embedding models' parts and basic_rnn_seq2seq's encoder): the host's numbers."""
    run_on_cupy_stand_in(_STAND_IN)
