"""npl.train: optimizers and clipping against TensorFlow 1 (graph mode) and closed forms; the fit
loop's batching, truncated BPTT, evaluation, progress, history, NaN detection and plotting."""
import io
import sys

import numpy as np
import pytest

import npl
from npl import train, losses, layers as L
from helpers import numpy_backend, rel_err, assert_close  # noqa: F401 (numpy_backend: autouse)



CONFIGS = [
    ("GradientDescent", dict(learning_rate=0.1)),
    ("Momentum", dict(learning_rate=0.1, momentum=0.9)),
    ("Momentum", dict(learning_rate=0.05, momentum=0.7, use_nesterov=True)),
    ("RMSProp", dict(learning_rate=0.01)),
    ("RMSProp", dict(learning_rate=0.02, decay=0.8, momentum=0.5, epsilon=1e-6, centered=True)),
    ("Adam", dict(learning_rate=0.01)),
    ("Adam", dict(learning_rate=0.1, beta1=0.8, beta2=0.9, epsilon=1e-3)),
]
_NPL = {"GradientDescent": train.GradientDescentOptimizer, "Momentum": train.MomentumOptimizer,
        "RMSProp": train.RMSPropOptimizer, "Adam": train.AdamOptimizer}


def _grad_stream(rng, steps=3):
    """Per step: a dense gradient [4, 3] and a sparse one (rows 1, 4, 1, 0: a duplicate) of [6, 3]."""
    out = []
    for _ in range(steps):
        out.append((rng.standard_normal((4, 3)).astype(np.float32),
                    rng.standard_normal((4, 3)).astype(np.float32),
                    np.array([1, 4, 1, 0] if len(out) != 1 else [5, 5, 2, 3])))
    return out


def test_optimizers_match_tensorflow(rng):
    """3 steps of every optimizer on a dense and a sparse (IndexedSlices with duplicate indices)
    variable: same variables and the same slots under the same checkpoint names as TF1."""
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    init_d = rng.standard_normal((4, 3)).astype(np.float32)
    init_s = rng.standard_normal((6, 3)).astype(np.float32)
    stream = _grad_stream(rng)
    g = tf.Graph()
    with g.as_default():
        gd = v1.placeholder(tf.float32, [4, 3])
        sv = v1.placeholder(tf.float32, [4, 3])
        si = v1.placeholder(tf.int32, [4])
        ops, tf_opts = [], []
        for c, (kind, kw) in enumerate(CONFIGS):
            vd = v1.get_variable("c%d/dense" % c, initializer=init_d)
            vs = v1.get_variable("c%d/sparse" % c, initializer=init_s)
            opt = getattr(v1.train, kind + "Optimizer")(**kw)
            ops.append(opt.apply_gradients([(gd, vd), (tf.IndexedSlices(sv, si, [6, 3]), vs)]))
            tf_opts.append(opt)
        with v1.Session(graph=g) as s:
            s.run(v1.global_variables_initializer())
            for dg, sg, idx in stream:
                s.run(ops, {gd: dg, sv: sg, si: idx})
            final = {v.op.name: s.run(v) for v in v1.global_variables()}
    worst = 0.0
    for c, (kind, kw) in enumerate(CONFIGS):
        opt = _NPL[kind](**kw)
        params = {"c%d/dense" % c: init_d.copy(), "c%d/sparse" % c: init_s.copy()}
        nd, ns = "c%d/dense" % c, "c%d/sparse" % c
        for dg, sg, idx in stream:
            opt.apply_gradients([(dg, params[nd], nd), (npl.IndexedSlices(sg, idx, (6, 3)), params[ns], ns)])
        for k, v in params.items():
            e = rel_err(v, final[k])
            worst = max(worst, e)
            assert e < 2e-6, "%s %s: %s relative error %.3g" % (kind, kw, k, e)
        state = opt.state_dict()
        tf_slots = sorted(n for n in final if n.startswith("c%d/" % c) and n not in params)
        assert sorted(k for k in state if "/" in k) == tf_slots, (kind, kw)   # TF's slot names
        for k in tf_slots:
            e = rel_err(state[k], final[k])
            worst = max(worst, e)
            assert e < 2e-6, "%s slot %s: relative error %.3g" % (kind, k, e)
    fresh = train.AdamOptimizer(**CONFIGS[5][1]).state_dict({"a": init_d})   # before any step
    assert fresh["beta1_power"] == np.float32(0.9) and fresh["beta1_power"].dtype == np.float32
    print("optimizers vs TF: max relative error %.2e" % worst)


def test_adam_beta_powers_match_tensorflow_names_and_values(rng):
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    w0 = rng.standard_normal((3,)).astype(np.float32)
    grads = rng.standard_normal((4, 3)).astype(np.float32)
    g = tf.Graph()
    with g.as_default():
        w = v1.get_variable("w", initializer=w0)
        ph = v1.placeholder(tf.float32, [3])
        op = v1.train.AdamOptimizer(0.05).apply_gradients([(ph, w)])
        with v1.Session(graph=g) as s:
            s.run(v1.global_variables_initializer())
            for gr in grads:
                s.run(op, {ph: gr})
            final = {v.op.name: s.run(v) for v in v1.global_variables()}
    opt = train.AdamOptimizer(0.05)
    wn = w0.copy()
    for gr in grads:
        opt.apply_gradients([(gr, wn, "w")])
    st = opt.state_dict()
    assert sorted(st) == sorted(k for k in final if k != "w")
    for k in st:
        assert rel_err(st[k], final[k]) < 1e-6, k
        assert st[k].dtype == final[k].dtype, k
    assert rel_err(wn, final["w"]) < 1e-6


def test_optimizer_closed_forms_float64(rng):
    """Hand-evaluated rules in float64, including the sparse semantics (untouched rows)."""
    v = rng.standard_normal((5, 2))
    g1, g2 = rng.standard_normal((2, 5, 2))
    # Momentum (nesterov): accum = g1; then accum = mu*g1 + g2; var -= lr*g + lr*mu*accum
    opt = train.MomentumOptimizer(0.1, 0.9, use_nesterov=True)
    w = v.copy()
    opt.apply_gradients([(g1, w)])
    opt.apply_gradients([(g2, w)])
    a1, a2 = g1, 0.9 * g1 + g2
    assert_close(w, v - (0.1 * g1 + 0.1 * 0.9 * a1) - (0.1 * g2 + 0.1 * 0.9 * a2), 1e-14, "nesterov")
    assert list(opt.state_dict()) == ["Variable/Momentum"]            # unnamed: TF's "Variable"
    # RMSProp: rms starts at ONE (TF1)
    opt = train.RMSPropOptimizer(0.01, decay=0.9, epsilon=1e-10)
    w = v.copy()
    opt.apply_gradients([(g1, w, "w")])
    ms = 1 + (g1 * g1 - 1) * 0.1
    assert_close(w, v - 0.01 * g1 / np.sqrt(ms + 1e-10), 1e-14, "rmsprop first step")
    # sparse Momentum: only rows 1 and 3 move; duplicate rows are summed first
    opt = train.MomentumOptimizer(0.5, 0.9)
    w = v.copy()
    vals = rng.standard_normal((3, 2))
    opt.apply_gradients([(npl.IndexedSlices(vals, np.array([3, 1, 3]), (5, 2)), w, "e")])
    expect = v.copy()
    expect[3] -= 0.5 * (vals[0] + vals[2])
    expect[1] -= 0.5 * vals[1]
    assert_close(w, expect, 1e-14, "sparse momentum")
    # sparse Adam == dense Adam on the scatter-added gradient (TF1 decays m, v of every row)
    sp, de = train.AdamOptimizer(0.1), train.AdamOptimizer(0.1)
    ws, wd = v.copy(), v.copy()
    for _ in range(3):
        sl = npl.IndexedSlices(vals, np.array([3, 1, 3]), (5, 2))
        sp.apply_gradients([(sl, ws, "e")])
        de.apply_gradients([(sl.to_dense(), wd, "e")])
    assert_close(ws, wd, 1e-13, "sparse vs dense Adam")
    assert np.array_equal(ws[[0, 2, 4]], v[[0, 2, 4]])        # never-touched rows: m = 0, no move


def test_learning_rate_schedule_update_and_minimize(rng):
    v = rng.standard_normal(4)
    g = rng.standard_normal(4)
    opt = train.GradientDescentOptimizer(lambda step: 0.1 / (1 + step))
    params = {"w": v.copy()}
    step = np.zeros((), np.int64)
    for _ in range(3):
        opt.update(params, {"w": g}, global_step=step)
    assert_close(params["w"], v - g * (0.1 + 0.05 + 0.1 / 3), 1e-14, "scheduled lr")
    assert int(step) == 3 and opt.iterations == 3
    loss = opt.minimize(lambda: (1.5, {"w": g}), params)
    assert loss == 1.5


def test_optimizer_errors(rng):
    opt = train.AdamOptimizer()
    w = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"gradient of 'w' must have the variable's shape \(2, 3\), got \(3"):
        opt.apply_gradients([(np.zeros((3, 2), np.float32), w, "w")])
    with pytest.raises(TypeError, match="gradient of 'w' has dtype float64 but the variable has float32"):
        opt.apply_gradients([(np.zeros((2, 3)), w, "w")])
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        opt.apply_gradients([(None, w, "w")])
    with pytest.raises(ValueError, match=r"repeated: \['w'\]"):
        opt.apply_gradients([(w, w, "w"), (w, w.copy(), "w")])
    with pytest.raises(ValueError, match=r"dense_shape \(3, 3\) != variable shape \(2, 3\)"):
        opt.apply_gradients([(npl.IndexedSlices(w[:1], np.array([0]), (3, 3)), w, "w")])
    with pytest.raises(ValueError, match="learning_rate must be a non-negative finite number"):
        train.GradientDescentOptimizer(-1.0)
    with pytest.raises(ValueError, match=r"beta1 must be a number in \[0, 1\)"):
        train.AdamOptimizer(beta1=1.0)
    with pytest.raises(ValueError, match="grads has names that are not in params"):
        opt.update({"w": w}, {"v": w})
    opt.apply_gradients([(w, w, "w")])
    with pytest.raises(ValueError, match=r"variable 'w' was seen with shape \(2, 3\)"):
        opt.apply_gradients([(np.zeros(4, np.float32), np.zeros(4, np.float32), "w")])


# ============================================================================ clipping
def test_clip_by_global_norm_matches_tensorflow(rng):
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    a = rng.standard_normal((3, 4)).astype(np.float32)
    vals = rng.standard_normal((3, 2)).astype(np.float32)
    idx = np.array([0, 2, 0])                                     # duplicate index, not merged
    b = npl.IndexedSlices(vals, idx, (4, 2))
    g = tf.Graph()
    res = {}
    with g.as_default():
        tb = tf.IndexedSlices(tf.constant(vals), tf.constant(idx), tf.constant([4, 2]))
        for clip in (0.5, 100.0):
            (ca, _, cb), n = tf.clip_by_global_norm([tf.constant(a), None, tb], clip)
            res[clip] = (ca, cb.values, n)
        res["use"] = tf.clip_by_global_norm([tf.constant(a)], 1.0, use_norm=tf.constant(4.0))
        res["inf"] = tf.clip_by_global_norm([tf.constant(a)], 1.0, use_norm=tf.constant(np.inf))
        with v1.Session(graph=g) as s:
            out = s.run(res)
    for clip in (0.5, 100.0):
        (ca, cn, cb), n = train.clip_by_global_norm([a, None, b], clip)
        assert cn is None and isinstance(cb, npl.IndexedSlices) and cb.indices is idx
        assert rel_err(n, out[clip][2]) < 1e-6
        assert rel_err(ca, out[clip][0]) < 1e-6 and rel_err(cb.values, out[clip][1]) < 1e-6
    # the norm counts the IndexedSlices values as they are (duplicates not merged)
    assert abs(train.global_norm([b]) - np.sqrt((vals.astype(np.float64) ** 2).sum())) < 1e-6
    assert abs(train.global_norm([b]) - np.sqrt((b.to_dense().astype(np.float64) ** 2).sum())) > 1e-3
    (cu,), nu = train.clip_by_global_norm([a], 1.0, use_norm=4.0)
    assert rel_err(cu, out["use"][0][0]) < 1e-6 and nu == 4.0
    (ci,), ni = train.clip_by_global_norm([a], 1.0, use_norm=np.inf)
    assert np.isnan(ci).all() and np.isnan(out["inf"][0][0]).all()
    with pytest.raises(ValueError, match="clip_norm must be a positive number"):
        train.clip_by_global_norm([a], 0.0)
    with pytest.raises(TypeError, match="t_list must be a list or tuple"):
        train.clip_by_global_norm(a, 1.0)


# ============================================================================ fit
class _Recorder:
    """A model following fit's protocol (a Dense layer) that records the batches it sees."""

    def __init__(self, layer):
        self.layer, self.seen = layer, []

    def forward(self, x):
        self.seen.append(np.array(x))
        return self.layer.forward(x)

    params = property(lambda self: self.layer.params)
    grads = property(lambda self: self.layer.grads)

    def zero_grad(self):
        self.layer.zero_grad()


def _regression(rng, n=40):
    x = rng.standard_normal((n, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    return x, y


def test_fit_seeded_shuffling_and_learning(rng):
    x, y = _regression(rng)
    x[:, 0] = np.arange(len(x))                 # column 0 identifies each example
    runs = []
    for seed in (7, 7, 8):
        m = _Recorder(L.Dense(1, dtype=np.float64, input_size=3, seed=0))
        h = train.fit(m, "mse", train.GradientDescentOptimizer(0.0), x, y, batch_size=16, epochs=2,
                      seed=seed, progress=False)
        runs.append((m.seen, h))
    order = np.random.default_rng(7)
    for epoch in range(2):
        perm = order.permutation(40)
        seen = np.concatenate([b[:, 0] for b in runs[0][0][3 * epoch:3 * epoch + 3]])
        assert np.array_equal(seen, perm)                          # default_rng(seed) permutations
    assert [len(b) for b in runs[0][0][:3]] == [16, 16, 8]          # the last batch is smaller
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0][0], runs[2][0]))
    # unshuffled: in order
    m = _Recorder(L.Dense(1, dtype=np.float64, input_size=3, seed=0))
    train.fit(m, "mse", train.GradientDescentOptimizer(0.0), x, y, batch_size=16, shuffle=False,
              progress=False)
    assert np.array_equal(np.concatenate([b[:, 0] for b in m.seen]), np.arange(40))
    # and it learns: Adam on a linear regression drives the loss down
    x, y = _regression(rng)
    model = L.Sequential([L.Dense(1)], input_size=3, dtype=np.float64)
    h = train.fit(model, losses.mean_squared_error, train.AdamOptimizer(0.1), x, y, batch_size=8,
                  epochs=30, seed=0, progress=False)
    assert h.epoch_loss[-1] < 0.01 * h.epoch_loss[0]
    assert len(h.loss) == len(h.step) == 150 and h.step[-1] == 150


def test_fit_stateful_truncated_bptt_carries_state(rng):
    """With a zero learning rate the per-window losses of stateful training equal the losses of one
    pass over the whole streams (the state really is carried); without carrying they differ."""
    B, Lt, F, k = 3, 12, 2, 4
    x = rng.standard_normal((B, Lt, F))
    y = rng.standard_normal((B, Lt, 1))
    model = L.Sequential([L.RNN(npl.rnn.BasicLSTMCell(5, seed=0)), L.Dense(1, seed=1)],
                         input_size=F, dtype=np.float64)
    h = train.fit(model, "mse", train.GradientDescentOptimizer(0.0), x, y, stateful=True,
                  num_steps=k, progress=False)
    full = model(x)
    expect = [float(((full[:, s:s + k] - y[:, s:s + k]) ** 2).mean()) for s in range(0, Lt, k)]
    assert np.allclose(h.loss, expect, rtol=1e-12, atol=0)
    fresh = [float(((model(x[:, s:s + k]) - y[:, s:s + k]) ** 2).mean()) for s in range(0, Lt, k)]
    assert not np.allclose(fresh[1:], expect[1:], rtol=1e-6)
    # windows: the last may be shorter; shuffling is refused
    h2 = train.fit(model, "mse", train.GradientDescentOptimizer(0.0), x, y, stateful=True,
                   num_steps=5, progress=False)
    assert len(h2.loss) == 3
    with pytest.raises(ValueError, match="shuffle=True cannot be used with stateful=True"):
        train.fit(model, "mse", train.GradientDescentOptimizer(0.1), x, y, stateful=True,
                  num_steps=4, shuffle=True)
    with pytest.raises(ValueError, match="stateful=True needs num_steps"):
        train.fit(model, "mse", train.GradientDescentOptimizer(0.1), x, y, stateful=True)


def test_fit_char_model_with_clipping_eval_and_callbacks(rng):
    ids = rng.integers(0, 6, 300)
    x, y = train.make_streams(ids, 4)
    assert x.shape == (4, 74) and np.array_equal(x[:, 1:], y[:, :-1])
    model = L.Sequential([L.Embedding(6, 4, seed=0), L.RNN(npl.rnn.GRUCell(8, seed=1)), L.Dense(6, seed=2)])
    calls = []

    def eval_fn(m):
        calls.append(1)
        return {"ppl": 3.0, "acc": 0.5}

    def seq_loss(labels, logits):
        return losses.sequence_loss(logits, labels, np.ones(labels.shape, np.float32), time_major=False)
    infos = []
    h = train.fit(model, seq_loss, train.AdamOptimizer(0.01), x, y, stateful=True, num_steps=10,
                  epochs=3, clip_norm=0.1, eval_fn=eval_fn, eval_every=4, progress=False,
                  callbacks=[infos.append])
    assert len(h.loss) == 24 and len(h.epoch_loss) == 3
    assert len(h.grad_norm) == 24 and all(n > 0 for n in h.grad_norm)
    assert [s for s, _ in h.eval["ppl"]] == [4, 8, 12, 16, 20, 24]      # every 4 steps (and epoch ends)
    assert len(calls) == 6 and infos[-1]["step"] == 24 and infos[0]["grad_norm"] == h.grad_norm[0]
    h2 = train.fit(model, seq_loss, train.AdamOptimizer(0.01), x, y, stateful=True, num_steps=10,
                   epochs=3, progress=False, callbacks=[lambda info: info["step"] == 5])
    assert len(h2.loss) == 5
    h3 = train.fit(model, seq_loss, train.AdamOptimizer(0.01), x, y, stateful=True, num_steps=10,
                   epochs=3, progress=False, max_steps=11)
    assert len(h3.loss) == 11 and len(h3.epoch_loss) == 2


def test_evaluate_matches_direct_computation(rng):
    x, y = _regression(rng, 10)
    model = L.Sequential([L.Dense(1, seed=0)], input_size=3, dtype=np.float64)
    whole = float(((model(x) - y) ** 2).mean())
    assert train.evaluate(model, "mse", x, y) == pytest.approx(whole, rel=1e-14)
    assert train.evaluate(model, "mse", x, y, batch_size=4) == pytest.approx(whole, rel=1e-14)
    # stateful, with dropout in the model: evaluation runs with dropout off and the state carried
    cell = L.DropoutWrapper(npl.rnn.GRUCell(4, seed=1), output_keep_prob=0.5, seed=2)
    rnn = L.Sequential([L.RNN(cell), L.Dense(1, seed=3)], input_size=2, dtype=np.float64)
    xs, ys = rng.standard_normal((3, 9, 2)), rng.standard_normal((3, 9, 1))
    full = float(((rnn(xs, training=False) - ys) ** 2).mean())
    assert train.evaluate(rnn, "mse", xs, ys, stateful=True, num_steps=3) == pytest.approx(full, rel=1e-12)
    assert cell.training is True


def test_fit_nonfinite_loss_names_step_and_parameter(rng):
    x, y = _regression(rng)
    model = L.Sequential([L.Dense(4, "tanh"), L.Dense(1)], input_size=3, dtype=np.float64)
    lr = lambda step: 0.01 if step < 2 else np.inf              # noqa: E731  (step 3 blows up)
    msg = r"output is non-finite at step 4 \(epoch 1\); first non-finite parameter: 'dense/kernel'"
    with np.errstate(all="ignore"), pytest.raises(train.NonFiniteError, match=msg):
        train.fit(model, "mse", train.GradientDescentOptimizer(lr), x, y, batch_size=8, epochs=5,
                  progress=False)
    model = L.Sequential([L.Dense(1)], input_size=3, dtype=np.float64)
    msg = r"loss is inf at step \d+ .*every parameter is finite"
    with np.errstate(all="ignore"), pytest.raises(train.NonFiniteError, match=msg):
        train.fit(model, "mse", train.GradientDescentOptimizer(1e200), x, y, batch_size=8, epochs=5,
                  progress=False)
    model = L.Sequential([L.Dense(4, "tanh"), L.Dense(1)], input_size=3, dtype=np.float64)
    model.params["dense_1/bias"][0] = np.inf
    msg = r"at step 1 \(epoch 1\); first non-finite parameter: 'dense_1/bias'"
    with pytest.raises(train.NonFiniteError, match=msg):
        train.fit(model, "mse", train.AdamOptimizer(), x, y, progress=False)
    model = L.Sequential([L.Dense(1)], input_size=3, dtype=np.float64)
    bad_y = y.copy()
    bad_y[5] = np.nan
    with pytest.raises(ValueError, match="labels must be finite"):
        train.fit(model, "mse", train.AdamOptimizer(), x, bad_y, batch_size=40, progress=False)


def test_fit_progress_tqdm_and_plain(rng, monkeypatch):
    x, y = _regression(rng, 20)
    model = L.Sequential([L.Dense(1)], input_size=3, dtype=np.float64)
    buf = io.StringIO()
    train.fit(model, "mse", train.AdamOptimizer(), x, y, batch_size=10, epochs=2, file=buf,
              eval_fn=lambda m: 0.25)
    text = buf.getvalue()
    pytest.importorskip("tqdm")
    assert "epoch 2/2" in text and "2/2 [" in text                       # a tqdm bar
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    buf = io.StringIO()
    train.fit(model, "mse", train.AdamOptimizer(), x, y, batch_size=10, epochs=2, file=buf,
              eval_fn=lambda m: 0.25)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  step 4  loss ") and "eval 0.2500" in lines[1]
    buf = io.StringIO()
    train.fit(model, "mse", train.AdamOptimizer(), x, y, batch_size=10, progress=False, file=buf)
    assert buf.getvalue() == ""


def test_plot_history(rng, tmp_path, monkeypatch):
    x, y = _regression(rng, 20)
    model = L.Sequential([L.Dense(1)], input_size=3, dtype=np.float64)
    h = train.fit(model, "mse", train.AdamOptimizer(), x, y, batch_size=5, epochs=2, progress=False,
                  eval_fn=lambda m: {"val": 1.0})
    pytest.importorskip("matplotlib")
    p = train.plot_history(h, str(tmp_path / "h.png"))
    with open(p, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    train.plot_history(h.as_dict(), str(tmp_path / "d.png"))
    with pytest.raises(TypeError, match="history must be an npl.train.History"):
        train.plot_history([1, 2], str(tmp_path / "x.png"))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="plot_history needs matplotlib"):
        train.plot_history(h, str(tmp_path / "y.png"))


def test_fit_argument_errors(rng):
    x, y = _regression(rng, 10)
    model = L.Sequential([L.Dense(1)], input_size=3, dtype=np.float64)
    with pytest.raises(TypeError, match="optimizer must be an npl.train optimizer"):
        train.fit(model, "mse", object(), x, y)
    with pytest.raises(ValueError, match="x and y must have the same number of examples"):
        train.fit(model, "mse", train.AdamOptimizer(), x, y[:5])
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        train.fit(model, "mse", train.AdamOptimizer(), x, y, batch_size=0)
    with pytest.raises(ValueError, match="loss must be a callable"):
        train.fit(model, "l1", train.AdamOptimizer(), x, y)
    with pytest.raises(ValueError, match="too short for batch_size 8"):
        train.make_streams(np.arange(10), 8)
