"""tf.contrib.rnn's OutputProjectionWrapper, InputProjectionWrapper and EmbeddingWrapper
(npl.rnn.*), TF 1.15 semantics.

* Against live TensorFlow 1 (``tf.compat.v1`` graph + Session, float64).  contrib does not exist
  in TF2, so the three wrappers are written out below from TF 1.15's core_rnn_cell.py on TF's
  core ops (an ``RNNCell`` whose ``call`` creates ``kernel``/``bias`` with ``get_variable``, as
  ``_Linear`` does, or ``embedding``, and looks it up after ``reshape(inputs, [-1])``).  Compared:
  the variable names the graph created (exactly npl's ``tf_variable_names``), outputs, final
  states and ``tf.gradients`` of a random linear loss w.r.t. the float inputs, every initial-state
  array and every variable (the embedding's IndexedSlices made dense), under dynamic_rnn with
  unsorted lengths including 0, static_rnn, batch 1, T = 1, inside a MultiRNNCell, one step.
* Float64 finite differences (npl.gradcheck) for every new backward.
* Errors: bad ids (out of range, float), widths, sizes, unbuilt set_params, stale traces.
"""
import math

import numpy as np
import pytest

import npl
from npl import convert
from helpers import flatten, assert_raises_naming, randomize_params
from test_wrappers import tf_state, rand_like, rand_state, compare

R = npl.rnn


# ------------------------------------------------------------------ TF 1.15's wrappers, written out
def tf_wrappers(tf):
    v1 = tf.compat.v1
    Base = v1.nn.rnn_cell.RNNCell

    def linear(x, n, bias):                # TF 1.15's _Linear: kernel [K, n], bias [n] (zeros)
        w = v1.get_variable("kernel", [x.shape[1], n], dtype=x.dtype)
        y = tf.matmul(x, w)
        if bias:
            y = tf.nn.bias_add(y, v1.get_variable("bias", [n], dtype=x.dtype,
                                                  initializer=v1.constant_initializer(0.0)))
        return y

    class OutputProjectionWrapper(Base):
        def __init__(self, cell, output_size, activation=None):
            super().__init__()
            self._cell, self._output_size, self._activation = cell, output_size, activation

        state_size = property(lambda self: self._cell.state_size)
        output_size = property(lambda self: self._output_size)

        def zero_state(self, batch_size, dtype):
            return self._cell.zero_state(batch_size, dtype)

        def call(self, inputs, state):
            output, res_state = self._cell(inputs, state)
            projected = linear(output, self._output_size, True)
            if self._activation:
                projected = self._activation(projected)
            return projected, res_state

    class InputProjectionWrapper(Base):
        def __init__(self, cell, num_proj, activation=None):
            super().__init__()
            self._cell, self._num_proj, self._activation = cell, num_proj, activation

        state_size = property(lambda self: self._cell.state_size)
        output_size = property(lambda self: self._cell.output_size)

        def call(self, inputs, state):
            projected = linear(inputs, self._num_proj, True)
            if self._activation:
                projected = self._activation(projected)
            return self._cell(projected, state)

    class EmbeddingWrapper(Base):
        def __init__(self, cell, embedding_classes, embedding_size):
            super().__init__()
            self._cell, self._classes, self._size = cell, embedding_classes, embedding_size

        state_size = property(lambda self: self._cell.state_size)
        output_size = property(lambda self: self._cell.output_size)

        def call(self, inputs, state):
            dt = state[0].dtype if isinstance(state, tuple) else state.dtype
            s3 = math.sqrt(3)
            emb = v1.get_variable("embedding", [self._classes, self._size], dtype=dt,
                                  initializer=v1.random_uniform_initializer(-s3, s3))
            return self._cell(tf.nn.embedding_lookup(emb, tf.reshape(inputs, [-1])), state)

    return OutputProjectionWrapper, InputProjectionWrapper, EmbeddingWrapper


# ------------------------------------------------------------------ structures
# ("basic_lstm", H), ("gru", H), ("out", spec, O, act), ("in", spec, P, act), ("emb", spec, V, D),
# ("multi", [specs])
def make_npl(spec):
    k = spec[0]
    if k == "basic_lstm":
        return R.BasicLSTMCell(spec[1], forget_bias=0.7)
    if k == "gru":
        return R.GRUCell(spec[1])
    if k == "out":
        return R.OutputProjectionWrapper(make_npl(spec[1]), spec[2], activation=spec[3])
    if k == "in":
        return R.InputProjectionWrapper(make_npl(spec[1]), spec[2], activation=spec[3])
    if k == "emb":
        return R.EmbeddingWrapper(make_npl(spec[1]), spec[2], spec[3])
    if k == "multi":
        return R.MultiRNNCell([make_npl(s) for s in spec[1]])
    raise AssertionError(spec)


def make_tf(tf, spec):
    OPW, IPW, EW = tf_wrappers(tf)
    rc = tf.compat.v1.nn.rnn_cell
    k = spec[0]
    act = {None: None, "tanh": tf.tanh, "sigmoid": tf.sigmoid}
    if k == "basic_lstm":
        return rc.BasicLSTMCell(spec[1], forget_bias=0.7)
    if k == "gru":
        return rc.GRUCell(spec[1])
    if k == "out":
        return OPW(make_tf(tf, spec[1]), spec[2], act[spec[3]])
    if k == "in":
        return IPW(make_tf(tf, spec[1]), spec[2], act[spec[3]])
    if k == "emb":
        return EW(make_tf(tf, spec[1]), spec[2], spec[3])
    if k == "multi":
        return rc.MultiRNNCell([make_tf(tf, s) for s in spec[1]])
    raise AssertionError(spec)


def _dense(tf, g):
    return tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g


def tf_run(tf, op, spec, cell, x, lengths, s0, dy, dst, ids):
    v1 = tf.compat.v1
    g = v1.Graph()
    with g.as_default(), v1.Session() as sess:
        tcell = make_tf(tf, spec)
        xt = tf.constant(x)
        st0 = tf_state(tf, s0)
        if op == "dynamic":
            out, fin = v1.nn.dynamic_rnn(tcell, xt, sequence_length=lengths, initial_state=st0)
        elif op == "static":
            ol, fin = v1.nn.static_rnn(tcell, [xt[:, t] for t in range(x.shape[1])],
                                       initial_state=st0, sequence_length=lengths)
            out = tf.stack(ol, axis=1)
        else:
            out, fin = tcell(xt, st0)
        variables = v1.global_variables()
        want = convert.to_tf_variables(cell, "" if op == "step" else "rnn")
        names = sorted(v.op.name for v in variables)
        assert names == sorted(want), "TF variable names %s, npl's %s" % (names, sorted(want))
        loss = tf.reduce_sum(out * dy) + tf.add_n([tf.reduce_sum(a * w) for a, w in
                                                   zip(flatten(fin), flatten(dst))])
        leaves = flatten(st0)
        grads = tf.gradients(loss, [xt] + leaves + variables)
        for v in variables:
            v.load(want[v.op.name], sess)
        dx = grads[0]
        assert (dx is None) == ids
        grads = [_dense(tf, a) for a in grads[1:]]
        r_out, r_fin, r_g = sess.run([out, flatten(fin), grads])
        if not ids:
            r_dx = sess.run(dx)
    return {"outs": [r_out], "fins": r_fin, "dx": None if ids else r_dx,
            "ds0": r_g[:len(leaves)], "dw": dict(zip([v.op.name for v in variables], r_g[len(leaves):]))}


def npl_run(op, cell, x, lengths, s0, dy, dst):
    cell.zero_grad()
    if op == "dynamic":
        out, fin, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=s0,
                                          return_trace=True)
        dx, ds0 = tr.backward(dy, dst)
    elif op == "static":
        T = x.shape[1]
        ol, fin, tr = npl.nn.static_rnn(cell, [x[:, t] for t in range(T)], initial_state=s0,
                                        sequence_length=lengths, return_trace=True)
        dxl, ds0 = tr.backward([dy[:, t] for t in range(T)], dst)
        out, dx = np.stack(ol, 1), (None if dxl is None else np.stack(dxl, 1))
    else:
        out, fin, tr = cell(x, s0, return_trace=True)
        dx, ds0 = tr.backward(dy, dst)
    names = convert.tf_variable_names(cell, "" if op == "step" else "rnn")
    return {"outs": [out], "fins": flatten(fin), "dx": dx, "ds0": flatten(ds0),
            "dw": {names[k]: g for k, g in cell.grads.items()}}


OUT_LSTM = ("out", ("basic_lstm", 4), 3, None)
CASES = {
    "out_lstm": OUT_LSTM,
    "out_gru_tanh": ("out", ("gru", 3), 5, "tanh"),
    "in_lstm": ("in", ("basic_lstm", 4), 2, None),
    "in_gru_sigmoid": ("in", ("gru", 3), 4, "sigmoid"),
    "multi_in_out": ("multi", [("in", ("gru", 3), 4, "tanh"), ("basic_lstm", 3), OUT_LSTM]),
    "out_multi": ("out", ("multi", [("gru", 3), ("basic_lstm", 2)]), 4, None),
    "emb_lstm": ("emb", ("basic_lstm", 4), 7, 3),
    "emb_multi_out": ("emb", ("multi", [("gru", 3), OUT_LSTM]), 6, 2),
}
RUNS = {   # (op, B, T, lengths)
    "dynamic_lengths": ("dynamic", 4, 5, [3, 0, 5, 1]),
    "dynamic_full": ("dynamic", 3, 4, None),
    "static_lengths": ("static", 4, 3, [2, 3, 0, 1]),
    "batch1": ("dynamic", 1, 4, [3]),
    "T1": ("dynamic", 3, 1, [1, 0, 1]),
    "step": ("step", 3, 1, None),
}


def _setup(name, run, I=5):
    spec = CASES[name]
    op, B, T, lengths = RUNS[run]
    rng = np.random.default_rng([len(name), len(run), B, T])
    cell = make_npl(spec)
    ids = spec[0] == "emb"
    cell.build(1 if ids else I, np.float64)
    randomize_params(cell, rng)
    if ids:
        x = rng.integers(0, spec[2], (B, 1) if op == "step" else (B, T, 1))
        if op == "static":
            x = x[..., 0]
    else:
        x = rng.standard_normal((B, I) if op == "step" else (B, T, I))
    s0 = rand_state(cell, B, rng)
    P = cell.output_size
    dy = rng.standard_normal((B, P) if op == "step" else (B, T, P))
    dst = rand_like(s0, rng)
    L = None if lengths is None else np.array(lengths)
    return spec, cell, op, x, L, s0, dy, dst, ids


@pytest.mark.tf
@pytest.mark.parametrize("run", sorted(RUNS))
@pytest.mark.parametrize("name", sorted(CASES))
def test_against_tf(tf, name, run):
    spec, cell, op, x, L, s0, dy, dst, ids = _setup(name, run)
    want = tf_run(tf, op, spec, cell, x, L, s0, dy, dst, ids)
    got = npl_run(op, cell, x, L, s0, dy, dst)
    if ids:
        assert got["dx"] is None
        got["dx"] = want["dx"] = np.zeros(1)
    compare(got, want)


# ------------------------------------------------------------------ finite differences (float64)
@pytest.mark.parametrize("name", ["out_lstm", "out_gru_tanh", "in_lstm", "in_gru_sigmoid",
                                  "multi_in_out", "out_multi"])
@pytest.mark.parametrize("lengths", [None, [3, 0, 4]])
def test_projection_gradients_match_finite_differences(name, lengths):
    cell = make_npl(CASES[name])
    cell.build(4, np.float64)
    randomize_params(cell, np.random.default_rng(len(name)))
    x = np.random.default_rng(1).standard_normal((3, 4, 4))
    npl.gradcheck.gradcheck_cell(cell, x, sequence_length=lengths).raise_if_failed()


@pytest.mark.parametrize("name", ["emb_lstm", "emb_multi_out"])
@pytest.mark.parametrize("op", ["dynamic", "static", "step"])
def test_embedding_gradients_match_finite_differences(name, op):
    spec, cell, op_, x, L, s0, dy, dst, _ = _setup(name, {"dynamic": "dynamic_lengths",
                                                           "static": "static_lengths",
                                                           "step": "step"}[op])
    leaves = flatten(s0)

    def fn(inp):
        from helpers import unflatten
        st = unflatten(s0, [inp["s%d" % k] for k in range(len(leaves))])
        if op == "dynamic":
            out, fin, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=L, initial_state=st, return_trace=True)
        elif op == "static":
            ol, fin, tr = npl.nn.static_rnn(cell, [x[:, t] for t in range(x.shape[1])], initial_state=st,
                                            sequence_length=L, return_trace=True)
            out = np.stack(ol, 1)
        else:
            out, fin, tr = cell(x, st, return_trace=True)

        def vjp(d):
            cell.zero_grad()
            dd = d[0] if op != "static" else [d[0][:, t] for t in range(x.shape[1])]
            dx, ds = tr.backward(dd, d[1])
            assert dx is None                       # integer ids: no gradient, as TF
            g = {k: v.copy() for k, v in cell.grads.items()}
            g.update({"s%d" % k: a for k, a in enumerate(flatten(ds))})
            return g
        return (out, fin), vjp
    npl.gradcheck.gradcheck(fn, {"s%d" % k: a for k, a in enumerate(leaves)}, cell.params,
                            ).raise_if_failed()


@pytest.mark.parametrize("proj,fp", [(False, False), (True, True), (False, True)])
def test_embedding_seq2seq_gradients_match_finite_differences(proj, fp):
    import test_legacy_seq2seq as T
    rng, cell, enc, dec, pr, sizes = T._emb_model("multi", proj, 2, [5, proj, fp])
    m, *_ = T._npl_seq2seq(rng, cell, enc, dec, pr, sizes, fp)
    L = npl.legacy_seq2seq

    def fn(inp):
        outs, st, tr = L.embedding_rnn_seq2seq(enc, dec, cell, *sizes, output_projection=pr,
                                               feed_previous=fp, dtype=np.float64,
                                               return_trace=True)

        def vjp(d):
            m.zero_grad()
            tr.backward(list(d[0]), d[1])
            return {k: v.copy() for k, v in m.grads.items()}
        return (outs, st), vjp
    npl.gradcheck.gradcheck(fn, {}, m.params, rtol=1e-4).raise_if_failed()   # deep, large weights


# ------------------------------------------------------------------ errors
def test_errors_name_the_argument():
    cell = R.EmbeddingWrapper(R.GRUCell(3), 5, 2)
    dyn = lambda c, x: npl.nn.dynamic_rnn(c, x, dtype=np.float32)          # noqa: E731
    assert_raises_naming(TypeError, ["inputs", "integer"], dyn, cell, np.zeros((2, 3, 1)))
    assert_raises_naming(ValueError, ["inputs", "[0, 5)"], dyn, cell, np.full((2, 3, 1), 5))
    assert_raises_naming(ValueError, ["inputs", "[batch, time, 1]"], dyn, cell, np.zeros((2, 3), int))
    assert_raises_naming(ValueError, ["dtype"], npl.nn.dynamic_rnn, cell, np.zeros((2, 3, 1), int))
    assert_raises_naming(ValueError, ["inputs[1]", "[0, 5)"], lambda c, x: npl.nn.static_rnn(
        c, x, dtype=np.float32), cell, [np.zeros(2, int), np.array([0, -1])])
    assert_raises_naming(TypeError, ["MultiRNNCell"], npl.nn.dynamic_rnn,
                         R.MultiRNNCell([R.EmbeddingWrapper(R.GRUCell(3), 5, 2), R.GRUCell(2)]),
                         np.zeros((2, 3, 1)))
    for bad in (0, -1, 2.5, True):
        assert_raises_naming(ValueError, ["embedding_classes"], R.EmbeddingWrapper, R.GRUCell(3), bad, 2)
        assert_raises_naming(ValueError, ["embedding_size"], R.EmbeddingWrapper, R.GRUCell(3), 4, bad)
        assert_raises_naming(ValueError, ["output_size"], R.OutputProjectionWrapper, R.GRUCell(3), bad)
        assert_raises_naming(ValueError, ["num_proj"], R.InputProjectionWrapper, R.GRUCell(3), bad)
    op = R.OutputProjectionWrapper(R.GRUCell(3), 2)
    npl.nn.dynamic_rnn(op, np.zeros((2, 3, 4)))
    assert_raises_naming(ValueError, ["inputs", "width 4"], npl.nn.dynamic_rnn, op, np.zeros((2, 3, 5)))
    ip = R.InputProjectionWrapper(R.GRUCell(3, input_size=4), 2)
    assert_raises_naming(ValueError, ["width 2", "width 4"], npl.nn.dynamic_rnn, ip, np.zeros((2, 3, 4), np.float32))
    assert_raises_naming(ValueError, ["unbuilt"], R.OutputProjectionWrapper(R.GRUCell(3), 2).set_params, {})
    assert_raises_naming(ValueError, ["'kernel'", "(3, 2)"], lambda v: op.set_params(v, strict=False),
                         {"kernel": np.zeros((2, 2))})
    assert_raises_naming(ValueError, ["unknown", "nope"], lambda v: op.set_params(v, strict=False),
                         {"nope": np.zeros(2)})
    # a stale trace: the projection replaced after the forward
    out, _, tr = npl.nn.dynamic_rnn(op, np.ones((2, 3, 4)), return_trace=True)
    op.set_params({"bias": np.ones(2)}, strict=False)
    with pytest.raises(npl.StaleTraceError):
        tr.backward(np.ones_like(out))


def test_seq2seq_errors_name_the_argument():
    L = npl.legacy_seq2seq
    enc, dec = [np.array([1, 2])] * 2, [np.array([0, 1])] * 3
    proj = (np.zeros((4, 6)), np.zeros(6))
    def with_proj(p):
        return L.embedding_rnn_seq2seq(enc, dec, R.GRUCell(4), 3, 6, 2, output_projection=p,
                                       dtype=np.float64)
    assert_raises_naming(ValueError, ["output_projection[0]", "(4, 6)"], with_proj,
                         (np.zeros((4, 5)), np.zeros(6)))
    assert_raises_naming(ValueError, ["output_projection[1]"], with_proj, (proj[0], np.zeros(5)))
    c = R.GRUCell(4)
    assert_raises_naming(ValueError, ["decoder_inputs[2]", "[0, 6)"], L.embedding_rnn_seq2seq,
                         enc, dec[:2] + [np.array([0, 6])], c, 3, 6, 2)
    c = R.GRUCell(4)
    assert_raises_naming(TypeError, ["decoder_inputs[0]", "integer"], L.embedding_rnn_seq2seq,
                         enc, [np.zeros(2)] * 3, c, 3, 6, 2)
    c = R.GRUCell(4)
    assert_raises_naming(ValueError, ["inputs[0]", "[0, 3)"], L.embedding_rnn_seq2seq,
                         [np.array([3, 0])], dec, c, 3, 6, 2)
    c = R.GRUCell(4)
    assert_raises_naming(TypeError, ["feed_previous"], lambda f: L.embedding_rnn_seq2seq(
        enc, dec, c, 3, 6, 2, feed_previous=f), "yes")
    c = R.GRUCell(4)
    L.embedding_rnn_seq2seq(enc, dec, c, 3, 6, 2)
    assert_raises_naming(ValueError, ["first used"], L.embedding_rnn_seq2seq, enc, dec, c, 3, 7, 2)


def test_replaced_wrapper_variables_are_caught_before_any_gradient():
    """A trace whose wrapper variables were replaced after the forward raises StaleTraceError
    before it adds any gradient or is used up (the other layers' grads stay zero, and the trace
    works again once the variables are put back), as for a cell's own weights."""
    rng = np.random.default_rng(21)
    opw = R.OutputProjectionWrapper(R.GRUCell(3), 2)
    top = R.GRUCell(4)
    cell = R.MultiRNNCell([opw, top]).build(3, np.float64)
    x = rng.standard_normal((2, 4, 3))
    y, s, tr = npl.nn.dynamic_rnn(cell, x, return_trace=True)
    cell.zero_grad()
    K = opw.params["kernel"].copy()
    opw.set_params({"kernel": K * 2}, strict=False)
    with pytest.raises(npl.StaleTraceError, match="OutputProjectionWrapper|_WrapperVariables|weights"):
        tr.backward(np.ones_like(y))
    assert not any(g.any() for g in cell.grads.values())
    emb = R.EmbeddingWrapper(R.GRUCell(3), 5, 2)
    ids = rng.integers(0, 5, (2, 4, 1))
    y, s, tr = npl.nn.dynamic_rnn(emb, ids, dtype=np.float64, return_trace=True)
    emb.zero_grad()
    emb.set_params({"embedding": emb.params["embedding"] + 1}, strict=False)
    with pytest.raises(npl.StaleTraceError):
        tr.backward(np.ones_like(y))
    assert not any(g.any() for g in emb.grads.values())


@pytest.mark.tf
def test_tf_checkpoints_round_trip_through_the_wrappers(tmp_path):
    """save_tf_checkpoint writes a wrapped cell's variables under TF's names; load_tf_checkpoint
    reads them back into a fresh built model (also inside a MultiRNNCell), and a checkpoint
    without them is refused naming what is missing."""
    pytest.importorskip("tensorflow")
    rng = np.random.default_rng(22)

    def model():
        return R.MultiRNNCell([R.InputProjectionWrapper(R.GRUCell(3), 4, activation="tanh"),
                               R.OutputProjectionWrapper(R.BasicLSTMCell(3), 2)]).build(5, np.float64)
    a, b = model(), model()
    randomize_params(a, rng)
    path = convert.save_tf_checkpoint(a, str(tmp_path / "ck"))
    got = convert.load_tf_checkpoint(path, b)
    assert sorted(got) == sorted(a.params)
    for k, v in a.params.items():
        np.testing.assert_array_equal(b.params[k], v)
    x = rng.standard_normal((2, 3, 5))
    np.testing.assert_array_equal(npl.nn.dynamic_rnn(a, x)[0], npl.nn.dynamic_rnn(b, x)[0])
    assert_raises_naming(ValueError, ["missing", "rnn/multi_rnn_cell/cell_1/output_projection_wrapper/kernel"],
                         convert.from_tf_variables, {"rnn/other": np.zeros(3)}, b)


def test_embedding_model_sizes_are_checked_by_name():
    L = npl.legacy_seq2seq
    ids, h0 = [np.array([0, 1])], np.zeros((2, 3), np.float32)
    for bad in (0, -1, 2.5):
        assert_raises_naming(ValueError, ["num_symbols", repr(bad)], L.embedding_rnn_decoder, ids, h0,
                             R.GRUCell(3), bad, 2)
        assert_raises_naming(ValueError, ["embedding_size", repr(bad)], L.embedding_rnn_decoder, ids,
                             h0, R.GRUCell(3), 4, bad)
        for k, nm in enumerate(["num_encoder_symbols", "num_decoder_symbols", "embedding_size"]):
            sizes = [4, 4, 2]
            sizes[k] = bad
            assert_raises_naming(ValueError, [nm, repr(bad)], L.embedding_rnn_seq2seq, ids, ids,
                                 R.GRUCell(3), *sizes)
    assert_raises_naming(ValueError, ["decoder_inputs[0]", "batch size", "encoder_inputs[0]"],
                         L.embedding_rnn_seq2seq, [np.array([0, 1])], [np.array([0, 1, 2])],
                         R.GRUCell(3), 4, 4, 2)
