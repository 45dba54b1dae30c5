"""npl.layers: Dense, Embedding, RNN, Sequential and DropoutWrapper against float64 central
differences and TensorFlow 1 (graph mode); every parameter random."""
import numpy as np
import pytest

import npl
from npl import layers as L
from helpers import (numeric_grads, rel_err, assert_close, random_like, randomize_params,
                     random_state, flatten, linear_loss)
from helpers import numpy_backend  # noqa: F401  (autouse: these tests run on NumPy)


def _randomize(layer_or_model, rng, scale=0.5):
    layer_or_model.set_params({k: (rng.standard_normal(v.shape) * scale).astype(v.dtype)
                               for k, v in layer_or_model.params.items()})


def _dense_grads(grads):
    return {k: (g.to_dense() if isinstance(g, npl.IndexedSlices) else g) for k, g in grads.items()}


# ============================================================================ Dense
@pytest.mark.parametrize("act", [None, "tanh", "sigmoid", "relu"])
def test_dense_fd(rng, act):
    layer = L.Dense(4, activation=act, dtype=np.float64, input_size=3, seed=0)
    _randomize(layer, rng)
    x = rng.standard_normal((2, 5, 3))                   # any leading shape
    W = rng.standard_normal((2, 5, 4))
    y, tr = layer.forward(x)
    assert y.shape == (2, 5, 4)
    dx = tr.backward(W)

    def f():
        return float((layer(x) * W).sum())
    num = numeric_grads(f, [x, layer.params["kernel"], layer.params["bias"]])
    assert_close(dx, num[0], 1e-7, "d inputs")
    assert_close(layer.grads["kernel"], num[1], 1e-7, "d kernel")
    assert_close(layer.grads["bias"], num[2], 1e-7, "d bias")
    with pytest.raises(npl.BackwardTwiceError):
        tr.backward(W)


def test_dense_builds_lazily_and_checks_input(rng):
    layer = L.Dense(3)
    assert not layer.built
    y, _ = layer.forward(rng.standard_normal((4, 2)).astype(np.float32))
    assert layer.params["kernel"].shape == (2, 3) and layer.params["bias"].shape == (3,)
    assert y.dtype == np.float32
    with pytest.raises(ValueError, match="last dimension 2"):
        layer.forward(np.zeros((4, 5), np.float32))
    with pytest.raises(TypeError, match="dtype float64"):
        layer.forward(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="units must be a positive integer"):
        L.Dense(0)
    nb = L.Dense(2, use_bias=False, input_size=3)
    assert list(nb.params) == ["kernel"]


def test_dense_against_tensorflow(rng):
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    x = rng.standard_normal((3, 2, 5)).astype(np.float32)
    W = rng.standard_normal((3, 2, 4)).astype(np.float32)
    layer = L.Dense(4, activation="tanh", input_size=5, seed=1)
    _randomize(layer, rng)
    y, tr = layer.forward(x)
    dx = tr.backward(W)
    g = tf.Graph()
    with g.as_default():
        xt = tf.constant(x)
        yt = v1.layers.dense(xt, 4, activation=tf.tanh,
                             kernel_initializer=tf.constant_initializer(layer.params["kernel"]),
                             bias_initializer=tf.constant_initializer(layer.params["bias"]))
        loss = tf.reduce_sum(yt * W)
        names = [v.name for v in v1.global_variables()]
        grads = tf.gradients(loss, [xt] + v1.global_variables())
        with v1.Session(graph=g) as s:
            s.run(v1.global_variables_initializer())
            ty, tg = s.run([yt, grads])
    assert names == ["dense/kernel:0", "dense/bias:0"]
    errs = [rel_err(y, ty), rel_err(dx, tg[0]), rel_err(layer.grads["kernel"], tg[1]),
            rel_err(layer.grads["bias"], tg[2])]
    assert max(errs) < 1e-6, errs


# ============================================================================ Embedding
def test_embedding_sparse_gradient(rng):
    emb = L.Embedding(6, 3, dtype=np.float64, seed=0)
    _randomize(emb, rng)
    ids = np.array([[1, 4, 1], [0, 1, 5]])
    y, tr = emb.forward(ids)
    assert_close(y, emb.params["embeddings"][ids], 0, "lookup")
    W = rng.standard_normal(y.shape)
    assert tr.backward(W) is None
    g = emb.grads["embeddings"]
    assert isinstance(g, npl.IndexedSlices)
    assert g.values.shape == (6, 3) and list(np.asarray(g.indices)) == [1, 4, 1, 0, 1, 5]  # not merged
    num = numeric_grads(lambda: float((emb(ids) * W).sum()), [emb.params["embeddings"]])[0]
    assert_close(g.to_dense(), num, 1e-7, "d embeddings")
    # a second backward accumulates (rows concatenated); zero_grad clears
    y2, tr2 = emb.forward(ids[:1])
    tr2.backward(W[:1])
    assert emb.grads["embeddings"].values.shape == (9, 3)
    assert_close(emb.grads["embeddings"].to_dense(), num + numeric_grads(
        lambda: float((emb(ids[:1]) * W[:1]).sum()), [emb.params["embeddings"]])[0], 1e-7, "accumulated")
    emb.zero_grad()
    assert emb.grads["embeddings"].values.shape == (0, 3)
    dense = L.Embedding(6, 3, dtype=np.float64, sparse_grad=False, seed=0)
    dense.set_params(emb.params)
    _, trd = dense.forward(ids)
    trd.backward(W)
    assert_close(dense.grads["embeddings"], num, 1e-7, "dense embedding gradient")
    with pytest.raises(ValueError, match=r"ids must be in \[0, 6\)"):
        emb.forward(np.array([6]))


# ============================================================================ RNN layer
@pytest.mark.parametrize("output", ["sequences", "last"])
@pytest.mark.parametrize("time_major", [False, True])
def test_rnn_layer_fd(rng, output, time_major):
    cell = npl.rnn.BasicLSTMCell(3, dtype=np.float64, input_size=2, seed=0)
    randomize_params(cell, rng)
    layer = L.RNN(cell, output=output, time_major=time_major)
    B, T = 4, 5
    x = rng.standard_normal((T, B, 2) if time_major else (B, T, 2))
    lengths = np.array([5, 3, 0, 1])
    s0 = random_like(cell.zero_state(B, np.float64), rng)
    y, tr = layer.forward(x, initial_state=s0, sequence_length=lengths)
    W = rng.standard_normal(y.shape)
    dx = tr.backward(W)
    if output == "last":                # the h of the final state is the last valid output (or h0)
        expect = np.where(lengths[:, None] > 0, tr.final_state.h, 0)
        assert_close(y, expect, 1e-12, "last output")

    def f():
        return float((layer(x, s0, lengths) * W).sum())
    arrs = [x, s0.c, s0.h] + [cell.params[k] for k in ("kernel", "bias")]
    num = numeric_grads(f, arrs)
    assert_close(dx, num[0], 1e-7, "d x")
    assert_close(tr.d_initial_state.c, num[1], 1e-7, "d c0")
    assert_close(tr.d_initial_state.h, num[2], 1e-7, "d h0")
    assert_close(layer.grads["basic_lstm_cell/kernel"], num[3], 1e-7, "d kernel")
    assert_close(layer.grads["basic_lstm_cell/bias"], num[4], 1e-7, "d bias")


def test_rnn_layer_checks():
    with pytest.raises(TypeError, match="cell must be an npl RNN cell"):
        L.RNN("lstm")
    with pytest.raises(ValueError, match="output must be 'sequences' or 'last'"):
        L.RNN(npl.rnn.GRUCell(2), output="all")
    assert L.RNN(npl.rnn.GRUCell(2), return_sequences=False).output == "last"


# ============================================================================ Sequential
def _char_model(dtype, V=7, D=4, H=5, seed=0):
    cell = npl.rnn.MultiRNNCell([npl.rnn.BasicLSTMCell(H, seed=seed), npl.rnn.GRUCell(3, seed=seed + 1)])
    return L.Sequential([L.Embedding(V, D, dtype=dtype, seed=seed + 2), L.RNN(cell),
                         L.Dense(V, seed=seed + 3)])


def test_sequential_names_and_fd(rng):
    model = _char_model(np.float64)
    assert list(model.params) == [
        "embedding/embeddings",
        "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel", "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/bias",
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel", "rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias",
        "dense/kernel", "dense/bias"]
    _randomize(model, rng)
    B, T = 3, 4
    ids = rng.integers(0, 7, (B, T))
    s0 = random_like(model.zero_state(B, np.float64), rng)
    lengths = np.array([4, 2, 3])
    y, tr = model.forward(ids, initial_state=s0, sequence_length=lengths)
    W = rng.standard_normal(y.shape)
    assert tr.backward(W) is None
    grads = _dense_grads(model.grads)
    params = model.params

    def f():
        return float((model(ids, s0, lengths) * W).sum())
    names = list(params)
    num = numeric_grads(f, [params[k] for k in names] + [s0[0][0].c, s0[0][1]])
    for k, n in zip(names, num):
        assert_close(grads[k], n, 1e-7, k)
    assert_close(tr.d_initial_state[0][0].c, num[-2], 1e-7, "d c0")
    assert_close(tr.d_initial_state[0][1], num[-1], 1e-7, "d h0 (GRU)")


def test_sequential_against_tensorflow(rng):
    """Same weights (set by TF variable name) and inputs: same logits and gradients as TF1's
    embedding_lookup -> dynamic_rnn(MultiRNNCell(LSTM, GRU)) -> layers.dense."""
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    V, B, T = 7, 3, 5
    model = _char_model(np.float32, V=V)
    _randomize(model, rng)
    ids = rng.integers(0, V, (B, T))
    lengths = np.array([5, 2, 4])
    W = rng.standard_normal((B, T, V)).astype(np.float32)
    y, tr = model.forward(ids, sequence_length=lengths)
    tr.backward(W)
    grads = _dense_grads(model.grads)
    g = tf.Graph()
    with g.as_default():
        emb = v1.get_variable("embedding/embeddings", [V, 4])
        cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.BasicLSTMCell(5), v1.nn.rnn_cell.GRUCell(3)])
        out, _ = v1.nn.dynamic_rnn(cell, tf.nn.embedding_lookup(emb, ids), sequence_length=lengths,
                                   dtype=tf.float32)
        logits = v1.layers.dense(out, V)
        loss = tf.reduce_sum(logits * W)
        tvars = v1.global_variables()
        tgrads = [tf.convert_to_tensor(gr) for gr in tf.gradients(loss, tvars)]
        with v1.Session(graph=g) as s:
            for v in tvars:
                v.load(model.params[v.op.name], s)
            ty, tg = s.run([logits, tgrads])
    assert sorted(v.op.name for v in tvars) == sorted(model.params)
    errs = {"logits": rel_err(y, ty)}
    errs.update({v.op.name: rel_err(grads[v.op.name], gv) for v, gv in zip(tvars, tg)})
    print("Sequential vs TF: max relative error %.2e" % max(errs.values()))
    assert max(errs.values()) < 1e-5, errs


@pytest.mark.parametrize("output", ["sequences", "last"])
def test_calls_keep_no_trace_and_match_tensorflow(rng, monkeypatch, output):
    """``model(x)`` runs every RNN layer without a trace (the C loops' ring, several chunks here)
    and gives TF1's logits: dynamic_rnn(LSTM) -> [last valid output] -> layers.dense."""
    tf = pytest.importorskip("tensorflow")
    import npl.cells
    from npl.kernels import cpu
    if not cpu.sequence_loops():
        pytest.skip("the C sequence loops are not built here")
    v1 = tf.compat.v1
    B, T, I, H, V = 12, 30, 6, 16, 5
    monkeypatch.setattr(npl.cells, "INFERENCE_RING_BYTES", 7 * 4 * H * B * 4)    # 7 steps
    model = L.Sequential([L.RNN(npl.rnn.BasicLSTMCell(H, forget_bias=0.7), output=output),
                          L.Dense(V, activation="tanh")], input_size=I, dtype=np.float32)
    _randomize(model, rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B)
    lengths[3] = 0
    calls = []
    real = npl.cells.LSTMCell._infer_seq
    monkeypatch.setattr(npl.cells.LSTMCell, "_infer_seq",
                        lambda self, *a: (calls.append(1), real(self, *a))[1])
    y = model(x, sequence_length=lengths)
    assert calls == [1]
    y_fwd, _ = model.forward(x, sequence_length=lengths)
    assert calls == [1]                                      # forward keeps its trace
    np.testing.assert_allclose(y, y_fwd, rtol=1e-6, atol=1e-6)
    g = tf.Graph()
    with g.as_default():
        cell = v1.nn.rnn_cell.BasicLSTMCell(H, forget_bias=0.7)
        out, _ = v1.nn.dynamic_rnn(cell, x, sequence_length=lengths, dtype=tf.float32)
        if output == "last":                                 # zeros where a length is 0
            idx = np.stack([np.arange(B), np.maximum(lengths - 1, 0)], axis=1)
            out = tf.gather_nd(out, idx) * (lengths > 0)[:, None].astype(np.float32)
        logits = v1.layers.dense(out, V, activation=tf.tanh)
        with v1.Session(graph=g) as s:
            for v in v1.global_variables():
                v.load(model.params[v.op.name], s)
            ty = s.run(logits)
    np.testing.assert_allclose(y, ty, rtol=2e-5, atol=2e-5)


def test_sequential_dense_chain_and_checks(rng):
    model = L.Sequential([L.Dense(4, "tanh"), L.Dense(3), L.Dense(2, name="out")], input_size=5,
                         dtype=np.float64)
    assert list(model.params) == ["dense/kernel", "dense/bias", "dense_1/kernel", "dense_1/bias",
                                  "out/kernel", "out/bias"]
    _randomize(model, rng)
    x = rng.standard_normal((6, 5))
    W = rng.standard_normal((6, 2))
    y, tr = model.forward(x)
    dx = tr.backward(W)
    num = numeric_grads(lambda: float((model(x) * W).sum()), [x])[0]
    assert_close(dx, num, 1e-7, "d x through the chain")
    with pytest.raises(ValueError, match="unknown parameter name 'nope/kernel'"):
        model.set_params({"nope/kernel": np.zeros((5, 4))})
    with pytest.raises(ValueError, match=r"'kernel' must have shape \(5, 4\)"):
        model.set_params({"dense/kernel": np.zeros((4, 4))}, strict=False)
    with pytest.raises(ValueError, match="an Embedding can only be the first layer"):
        L.Sequential([L.Dense(3), L.Embedding(3, 2)])
    with pytest.raises(TypeError, match=r"layers\[0\] must be a Dense, Embedding or RNN layer"):
        L.Sequential([np.tanh])
    rnn_model = L.Sequential([L.RNN(npl.rnn.GRUCell(2))], input_size=3)
    with pytest.raises(TypeError, match="initial_state must be None or a tuple of 1 states"):
        rnn_model.forward(np.zeros((1, 2, 3), np.float32), initial_state=np.zeros((1, 2), np.float32))


# ============================================================================ DropoutWrapper
def test_dropout_wrapper_matches_tensorflow_given_the_masks(rng):
    """With its masks replayed in TensorFlow (x * m_in through the same LSTM, outputs * m_out), the
    wrapper gives TF's outputs, input gradient and weight gradients."""
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    B, T, I, H = 3, 4, 5, 6
    inner = npl.rnn.BasicLSTMCell(H, input_size=I, seed=0)
    randomize_params(inner, rng)
    cell = L.DropoutWrapper(inner, input_keep_prob=0.6, output_keep_prob=0.7, seed=5)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    W = rng.standard_normal((B, T, H)).astype(np.float32)
    out, st, tr = npl.nn.dynamic_rnn(cell, x, return_trace=True)
    dx, _ = tr.backward(W)
    m_in, m_out = cell.masks["input"], cell.masks["output"]      # time-major [T, B, .]
    assert set(np.unique(m_in)) <= {0.0, np.float32(1 / 0.6)}
    assert set(np.unique(m_out)) <= {0.0, np.float32(1 / 0.7)}
    g = tf.Graph()
    with g.as_default():
        xt = tf.constant(x)
        tcell = v1.nn.rnn_cell.BasicLSTMCell(H)
        o, _ = v1.nn.dynamic_rnn(tcell, xt * m_in.transpose(1, 0, 2), dtype=tf.float32)
        o = o * m_out.transpose(1, 0, 2)
        loss = tf.reduce_sum(o * W)
        tv = v1.global_variables()
        grads = tf.gradients(loss, [xt] + tv)
        with v1.Session(graph=g) as s:
            for v in tv:
                v.load(inner.params[v.op.name.split("/")[-1]], s)
            to, tg = s.run([o, grads])
    errs = [rel_err(out, to), rel_err(dx, tg[0]), rel_err(inner.grads["kernel"], tg[1]),
            rel_err(inner.grads["bias"], tg[2])]
    assert max(errs) < 1e-5, errs


def test_dropout_wrapper_fd_with_replayed_masks(rng):
    inner = npl.rnn.GRUCell(3, dtype=np.float64, input_size=2, seed=0)
    randomize_params(inner, rng)
    cell = L.DropoutWrapper(inner, input_keep_prob=0.5, output_keep_prob=0.8, seed=1)
    x = rng.standard_normal((2, 4, 2))
    W = rng.standard_normal((2, 4, 3))
    out, _, tr = npl.nn.dynamic_rnn(cell, x, return_trace=True)
    dx, _ = tr.backward(W)
    cell.replay = True                    # the finite differences rerun with the same masks

    def f():
        return float((npl.nn.dynamic_rnn(cell, x)[0] * W).sum())
    assert f() == pytest.approx(float((out * W).sum()), rel=1e-14)
    num = numeric_grads(f, [x, inner.params["gates/kernel"], inner.params["candidate/bias"]])
    assert_close(dx, num[0], 1e-7, "d x")
    assert_close(cell.grads["gates/kernel"], num[1], 1e-7, "d gates/kernel")
    assert_close(cell.grads["candidate/bias"], num[2], 1e-7, "d candidate/bias")
    # the input mask really zeroes inputs: d x is zero exactly where the mask is
    m_in = cell.masks["input"].transpose(1, 0, 2)
    assert np.all(dx[m_in == 0] == 0) and (m_in == 0).any()


def test_dropout_wrapper_statistics_training_flag_and_seed(rng):
    inner = npl.rnn.BasicLSTMCell(50, input_size=40, seed=0)
    cell = L.DropoutWrapper(inner, input_keep_prob=0.7, output_keep_prob=0.4, seed=3)
    x = rng.standard_normal((20, 30, 40)).astype(np.float32)
    out, _ = npl.nn.dynamic_rnn(cell, x)
    keep_in = (cell.masks["input"] > 0).mean()
    keep_out = (cell.masks["output"] > 0).mean()
    assert abs(keep_in - 0.7) < 0.01 and abs(keep_out - 0.4) < 0.01     # 24000 / 30000 draws
    assert np.all(out[cell.masks["output"].transpose(1, 0, 2) == 0] == 0)
    plain, _ = npl.nn.dynamic_rnn(inner, x)
    cell.training = False
    evald, _ = npl.nn.dynamic_rnn(cell, x)
    assert np.array_equal(evald, plain)
    twin = L.DropoutWrapper(npl.rnn.BasicLSTMCell(50, input_size=40, seed=0), 0.7, 0.4, seed=3)
    cell2 = L.DropoutWrapper(npl.rnn.BasicLSTMCell(50, input_size=40, seed=0), 0.7, 0.4, seed=3)
    a, _ = npl.nn.dynamic_rnn(twin, x)
    b, _ = npl.nn.dynamic_rnn(cell2, x)
    assert np.array_equal(a, b)                                       # same seed, same masks
    c, _ = npl.nn.dynamic_rnn(twin, x)
    assert not np.array_equal(a, c)                                   # fresh masks each call
    var = L.DropoutWrapper(npl.rnn.GRUCell(4, input_size=40, seed=0), 0.5, variational_recurrent=True, seed=0)
    npl.nn.dynamic_rnn(var, x)
    assert var.masks["input"].shape == (1, 20, 40)                    # one mask for every step
    assert np.array_equal(var.masks["input"], np.broadcast_to(var.masks["input"][:, :1], (1, 20, 40)))


def test_variational_dropout_shares_one_mask_over_steps_and_batch_as_tf1(rng):
    """TF1's variational_recurrent draws its noise with shape [1, depth]: the pattern of dropped
    outputs is the same at every step AND in every batch row (measured in TF below, live), and so
    it is in npl; the kept values are scaled by 1 / keep_prob."""
    B, T, H, keep = 16, 6, 40, 0.5
    x = rng.standard_normal((B, T, 3)).astype(np.float32) + 3.0
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        cell = v1.nn.rnn_cell.DropoutWrapper(v1.nn.rnn_cell.BasicRNNCell(H, activation=tf.nn.sigmoid),
                                             output_keep_prob=keep, variational_recurrent=True,
                                             dtype=tf.float32, seed=1)
        o, _ = v1.nn.dynamic_rnn(cell, tf.constant(x), dtype=tf.float32)
        with v1.Session(graph=g) as s:
            s.run(v1.global_variables_initializer())
            tf_out = s.run(o)
    npl_cell = L.DropoutWrapper(npl.rnn.BasicRNNCell(H, activation="sigmoid", seed=0),
                                output_keep_prob=keep, variational_recurrent=True, seed=1)
    npl_out, _ = npl.nn.dynamic_rnn(npl_cell, x)
    for name, out in (("TF1", tf_out), ("npl", npl_out)):
        dropped = out == 0                                              # sigmoid outputs are > 0
        assert dropped.any() and not dropped.all(), name
        assert np.array_equal(dropped, np.broadcast_to(dropped[:1, :1], dropped.shape)), name
    plain, _ = npl.nn.dynamic_rnn(npl_cell.wrapped_cell, x)
    kept = npl_out != 0
    np.testing.assert_allclose(npl_out[kept], plain[kept] / keep, rtol=1e-6)


def test_dropout_wrapper_in_multi_rnn_cell_and_sequential(rng):
    """Names are the wrapped cell's (as TF's); Sequential(training=False) switches dropout off."""
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    c0 = npl.rnn.BasicLSTMCell(4, seed=0)
    stack = npl.rnn.MultiRNNCell([L.DropoutWrapper(c0, output_keep_prob=0.5, seed=0),
                                  npl.rnn.GRUCell(3, seed=1)])
    model = L.Sequential([L.RNN(stack, output="last"), L.Dense(2)], input_size=3)
    g = tf.Graph()
    with g.as_default():
        tstack = v1.nn.rnn_cell.MultiRNNCell([
            v1.nn.rnn_cell.DropoutWrapper(v1.nn.rnn_cell.BasicLSTMCell(4), output_keep_prob=0.5),
            v1.nn.rnn_cell.GRUCell(3)])
        o, _ = v1.nn.dynamic_rnn(tstack, tf.zeros((2, 3, 3)), dtype=tf.float32)
        v1.layers.dense(o[:, -1], 2)
        tf_names = sorted(v.op.name for v in v1.global_variables())
    assert sorted(model.params) == tf_names
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    y_eval = model(x, training=False)
    wrapper = model.dropout_wrappers()[0]
    assert wrapper.training is True                                   # restored after the call
    plain = L.Sequential([L.RNN(npl.rnn.MultiRNNCell([c0, stack.cells[1]]), output="last"),
                          model.layers[1]])
    assert np.array_equal(y_eval, plain(x))


_STATE_DROP_CELLS = {
    "lstm_proj": lambda: npl.rnn.LSTMCell(3, use_peepholes=True, num_proj=2, forget_bias=0.4),
    "gru": lambda: npl.rnn.GRUCell(3),
    "rnn": lambda: npl.rnn.BasicRNNCell(3),
    "multi": lambda: npl.rnn.MultiRNNCell([npl.rnn.BasicLSTMCell(3, forget_bias=0.7), npl.rnn.GRUCell(2)]),
}


@pytest.mark.parametrize("kind", sorted(_STATE_DROP_CELLS))
@pytest.mark.parametrize("lengths", [None, [4, 0, 2]])
@pytest.mark.parametrize("variational", [False, True])
def test_state_dropout_fd_with_replayed_masks(rng, kind, lengths, variational):
    """state_keep_prob: every input, initial-state and weight gradient against float64 finite
    differences (masks replayed), through sequence_length (zero and unsorted rows)."""
    inner = _STATE_DROP_CELLS[kind]()
    inner.build(2, np.float64)
    randomize_params(inner, rng)
    B, T = 3, 4
    x = rng.standard_normal((B, T, 2))
    s0 = random_state(inner, B, rng)
    L_ = None if lengths is None else np.array(lengths)
    for seed in range(3, 40):       # a variational mask is one row of a few units: pick a seed
        cell = L.DropoutWrapper(inner, input_keep_prob=0.8, output_keep_prob=0.9, state_keep_prob=0.6,
                                variational_recurrent=variational, seed=seed)
        out, st, tr = npl.nn.dynamic_rnn(cell, x, L_, s0, return_trace=True)
        sm = cell.masks["state"]
        if all((m == 0).any() and (m > 0).any() for m in (sm if isinstance(sm, list) else [sm])):
            break                                         # the state mask really drops something
    else:
        raise AssertionError("no seed gave a state mask that drops something")
    Wo, Ws = random_like(out, rng), random_like(st, rng)
    inner.zero_grad()
    dx, d0 = tr.backward(Wo, Ws)
    cell.replay = True

    def f():
        return linear_loss(npl.nn.dynamic_rnn(cell, x, L_, s0), (Wo, Ws))
    assert f() == pytest.approx(linear_loss((out, st), (Wo, Ws)), rel=1e-13)
    params = inner.params
    num = numeric_grads(f, [x] + flatten(s0) + list(params.values()))
    ana = [dx] + flatten(d0) + [inner.grads[k] for k in params]
    names = ["x"] + ["s0[%d]" % k for k in range(len(flatten(s0)))] + list(params)
    for a, n, nm in zip(ana, num, names):
        assert_close(a, n, 1e-6, nm)


def test_state_dropout_matches_tensorflow_given_the_masks(rng):
    """TF1's DropoutWrapper(state_keep_prob) drops h (never an LSTM's c) of the new state at every
    step; rebuilt in TF with npl's masks (an unrolled loop of TF cells, sequence_length applied as
    dynamic_rnn does), outputs, final state and all gradients agree."""
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    B, T, I, H = 3, 5, 2, 4
    inner = npl.rnn.BasicLSTMCell(H, forget_bias=0.3, input_size=I, seed=0)
    randomize_params(inner, rng)
    cell = L.DropoutWrapper(inner, state_keep_prob=0.7, seed=2)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([5, 2, 0])
    s0 = random_state(inner, B, rng, np.float32)
    out, st, tr = npl.nn.dynamic_rnn(cell, x, lengths, s0, return_trace=True)
    Wo, Ws = random_like(out, rng), random_like(st, rng)
    dx, d0 = tr.backward(Wo, Ws)
    m = cell.masks["state"]                                        # [T, B, H]
    g = tf.Graph()
    with g.as_default():
        xt = tf.constant(x)
        c0, h0 = tf.constant(s0.c), tf.constant(s0.h)
        tcell = v1.nn.rnn_cell.BasicLSTMCell(H, forget_bias=0.3)
        c, h, outs = c0, h0, []
        with v1.variable_scope("rnn"):
            for t in range(T):
                o, (cn, hn) = tcell(xt[:, t], v1.nn.rnn_cell.LSTMStateTuple(c, h))
                hn = hn * m[t]                                     # state dropout: h only
                valid = tf.constant((t < lengths)[:, None])
                outs.append(tf.where(tf.broadcast_to(valid, o.shape), o, tf.zeros_like(o)))
                c = tf.where(tf.broadcast_to(valid, cn.shape), cn, c)
                h = tf.where(tf.broadcast_to(valid, hn.shape), hn, h)
        o = tf.stack(outs, axis=1)
        loss = tf.reduce_sum(o * Wo) + tf.reduce_sum(c * Ws.c) + tf.reduce_sum(h * Ws.h)
        tv = v1.global_variables()
        grads = tf.gradients(loss, [xt, c0, h0] + tv)
        with v1.Session(graph=g) as s:
            for v in tv:
                v.load(inner.params[v.op.name.split("/")[-1]], s)
            to, tc, th, tg = s.run([o, c, h, grads])
    errs = [rel_err(out, to), rel_err(st.c, tc), rel_err(st.h, th), rel_err(dx, tg[0]),
            rel_err(d0.c, tg[1]), rel_err(d0.h, tg[2]), rel_err(inner.grads["kernel"], tg[3]),
            rel_err(inner.grads["bias"], tg[4])]
    assert max(errs) < 1e-5, errs


def test_dropout_wrapper_errors():
    c = npl.rnn.BasicLSTMCell(2)
    with pytest.raises(ValueError, match="dropout_state_filter_visitor"):
        L.DropoutWrapper(c, state_keep_prob=0.5, dropout_state_filter_visitor=lambda s: True)
    with pytest.raises(ValueError, match=r"state_keep_prob must be a number in \(0, 1\], got 0"):
        L.DropoutWrapper(c, state_keep_prob=0)
    with pytest.raises(ValueError, match=r"input_keep_prob must be a number in \(0, 1\], got 0"):
        L.DropoutWrapper(c, input_keep_prob=0)
    with pytest.raises(ValueError, match=r"output_keep_prob must be a number in \(0, 1\], got 1.5"):
        L.DropoutWrapper(c, output_keep_prob=1.5)
    with pytest.raises(TypeError, match="cell must be an npl RNN cell"):
        L.DropoutWrapper(object())
    # TF's filter drops a concatenated LSTM state whole (c too); npl would drop only h: refused,
    # also inside a stack, while the other keep probabilities stay available for that form
    flat = npl.rnn.BasicLSTMCell(2, state_is_tuple=False)
    for cell in (flat, npl.rnn.MultiRNNCell([npl.rnn.GRUCell(2), flat])):
        with pytest.raises(ValueError, match=r"state_keep_prob < 1 around an LSTM cell with "
                                             r"state_is_tuple=False \(BasicLSTMCell\)"):
            L.DropoutWrapper(cell, state_keep_prob=0.9)
        L.DropoutWrapper(cell, input_keep_prob=0.5, output_keep_prob=0.5)
    w = L.DropoutWrapper(npl.rnn.BasicLSTMCell(2, input_size=3), input_keep_prob=0.5)
    w.replay = True
    with pytest.raises(ValueError, match=r"replay=True but masks\['input'\] is None"):
        npl.nn.dynamic_rnn(w, np.zeros((1, 2, 3), np.float32))
    w.replay = False
    npl.nn.dynamic_rnn(w, np.zeros((1, 2, 3), np.float32))
    w.replay = True
    with pytest.raises(ValueError, match=r"masks\['input'\] must have shape \(4, 1, 3\)"):
        npl.nn.dynamic_rnn(w, np.zeros((1, 4, 3), np.float32))


def test_sequential_dtype_must_agree_with_its_embedding():
    """A Sequential's dtype is never silently dropped: an Embedding built with another dtype is a
    ValueError naming both; the same dtype on both builds every layer in it."""
    with pytest.raises(ValueError, match=r"dtype=float64, but layers\[0\] \(an Embedding\) was created "
                                         r"with dtype float32"):
        L.Sequential([L.Embedding(6, 4), L.RNN(npl.rnn.GRUCell(3)), L.Dense(2)], dtype=np.float64)
    m = L.Sequential([L.Embedding(6, 4, dtype=np.float64), L.RNN(npl.rnn.GRUCell(3)), L.Dense(2)],
                     dtype=np.float64)
    assert {v.dtype for v in m.params.values()} == {np.dtype(np.float64)}
    m32 = L.Sequential([L.Embedding(6, 4), L.RNN(npl.rnn.GRUCell(3)), L.Dense(2)])
    assert {v.dtype for v in m32.params.values()} == {np.dtype(np.float32)}
