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
        gs = v1.train.get_or_create_global_step()          # counted like npl's iterations
        op = v1.train.AdamOptimizer(0.05).apply_gradients([(ph, w)], global_step=gs)
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


def _f32(x):
    """A Python float as TF1 hands it to a float64 kernel: rounded to float32 first."""
    return float(np.float32(x))


def test_optimizer_closed_forms_float64(rng):
    """Hand-evaluated rules in float64, including the sparse semantics (untouched rows); the
    Python-float hyperparameters enter rounded to float32, as in TF1."""
    v = rng.standard_normal((5, 2))
    g1, g2 = rng.standard_normal((2, 5, 2))
    lr, mu = rng.uniform(0.01, 0.2), rng.uniform(0.5, 0.95)
    # Momentum (nesterov): accum = g1; then accum = mu*g1 + g2; var -= lr*g + lr*mu*accum
    opt = train.MomentumOptimizer(lr, mu, use_nesterov=True)
    w = v.copy()
    opt.apply_gradients([(g1, w)])
    opt.apply_gradients([(g2, w)])
    L, M = _f32(lr), _f32(mu)
    a1, a2 = g1, M * g1 + g2
    assert_close(w, v - (L * g1 + L * M * a1) - (L * g2 + L * M * a2), 1e-14, "nesterov")
    assert list(opt.state_dict()) == ["Variable/Momentum", "global_step"]   # unnamed: TF's "Variable"
    assert opt.state_dict()["global_step"] == 2
    # RMSProp: rms starts at ONE (TF1)
    lr, rho, eps = rng.uniform(0.001, 0.05), rng.uniform(0.8, 0.95), rng.uniform(1e-10, 1e-8)
    opt = train.RMSPropOptimizer(lr, decay=rho, epsilon=eps)
    w = v.copy()
    opt.apply_gradients([(g1, w, "w")])
    ms = 1 + (g1 * g1 - 1) * (1 - _f32(rho))
    assert_close(w, v - _f32(lr) * g1 / np.sqrt(ms + _f32(eps)), 1e-14, "rmsprop first step")
    # sparse Momentum: only rows 1 and 3 move; duplicate rows are summed first
    lr = rng.uniform(0.1, 0.9)
    opt = train.MomentumOptimizer(lr, 0.9)
    w = v.copy()
    vals = rng.standard_normal((3, 2))
    opt.apply_gradients([(npl.IndexedSlices(vals, np.array([3, 1, 3]), (5, 2)), w, "e")])
    expect = v.copy()
    expect[3] -= _f32(lr) * (vals[0] + vals[2])
    expect[1] -= _f32(lr) * vals[1]
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
    lr0 = rng.uniform(0.05, 0.2)
    opt = train.GradientDescentOptimizer(lambda step: lr0 / (1 + step))
    params = {"w": v.copy()}
    step = np.zeros((), np.int64)
    expect = v.copy()
    for k in range(3):
        opt.update(params, {"w": g}, global_step=step)
        expect -= _f32(lr0 / (1 + k)) * g
    assert_close(params["w"], expect, 1e-15, "scheduled lr")
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
    assert np.isnan(out["inf"][0][0]).all()            # TF: NaN; npl refuses a non-finite use_norm
    with pytest.raises(ValueError, match="use_norm must be a non-negative finite number, got inf"):
        train.clip_by_global_norm([a], 1.0, use_norm=np.inf)
    with pytest.raises(ValueError, match="clip_norm must be a positive finite number"):
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
    with np.errstate(all="ignore"), pytest.raises(train.NonFiniteError, match=msg):     # a NumPy
        train.fit(model, "mse", train.GradientDescentOptimizer(np.float64(1e200)), x, y,  # float64:
                  batch_size=8, epochs=5, progress=False)                                 # not float32 inf
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


class _NanGradModel:
    """A Sequential whose backward leaves a NaN in one gradient at step ``nan_at`` (the loss stays
    finite): only the gradient check can catch it."""

    def __init__(self, nan_at):
        self.inner = L.Sequential([L.RNN(npl.rnn.BasicLSTMCell(4, seed=1), output="last"),
                                   L.Dense(1, seed=2)], input_size=2)
        self.nan_at, self.calls = nan_at, 0

    params = property(lambda self: self.inner.params)
    grads = property(lambda self: self.inner.grads)

    def zero_grad(self):
        self.inner.zero_grad()

    def forward(self, xb, **kw):
        out, tr = self.inner.forward(xb)
        self.calls += 1
        model = self

        class Trace:
            def backward(self, d):
                r = tr.backward(d)
                if model.calls == model.nan_at:
                    model.inner.grads["dense/bias"][...] = np.nan
                return r
        return out, Trace()


@pytest.mark.parametrize("clip", [None, 1.0])
def test_fit_stops_on_a_nan_gradient_before_applying_it(rng, clip):
    """With or without clip_norm (before, only with it) a non-finite gradient stops training at
    its step, names the gradient, and the weights and slots are those of the step before."""
    x = rng.standard_normal((8, 3, 2)).astype(np.float32)
    y = rng.standard_normal((8, 1)).astype(np.float32)
    model, opt, seen = _NanGradModel(nan_at=2), train.AdamOptimizer(0.01), {}
    cb = lambda info: seen.__setitem__(info["step"], {k: v.copy() for k, v in model.params.items()})  # noqa: E731
    with pytest.raises(train.NonFiniteError, match=r"gradient norm is nan at step 2 .*first non-finite "
                                                   r"gradient: 'dense/bias'"):
        train.fit(model, "mse", opt, x, y, batch_size=4, epochs=2, shuffle=False, clip_norm=clip,
                  progress=False, callbacks=[cb])
    assert all(np.array_equal(v, seen[1][k]) for k, v in model.params.items())
    assert all(np.isfinite(a).all() for sl in opt._slots.values() for a in sl.values())


def test_fit_numpy_true_stops_and_epoch_loss_is_weighted(rng):
    """A callback's numpy.True_ stops training (before, only the Python True did); the epoch loss
    weights each batch by its size, as evaluate does (23 samples: batches of 8, 8, 7)."""
    x, y = _regression(rng)
    x, y = x[:23], y[:23]
    model = L.Sequential([L.Dense(1, seed=3)], input_size=3, dtype=np.float64)
    h = train.fit(model, "mse", train.GradientDescentOptimizer(0.05), x, y, batch_size=8, epochs=3,
                  shuffle=False, progress=False, callbacks=[lambda info: np.bool_(info["step"] == 2)])
    assert h.step == [1, 2]
    h = train.fit(model, "mse", train.GradientDescentOptimizer(0.0), x, y, batch_size=8,
                  shuffle=False, progress=False)
    assert h.epoch_loss[0] == pytest.approx((8 * h.loss[0] + 8 * h.loss[1] + 7 * h.loss[2]) / 23, rel=1e-14)
    assert h.epoch_loss[0] == pytest.approx(train.evaluate(model, "mse", x, y, batch_size=8), rel=1e-12)
    assert len(h.grad_norm) == 3 and all(g > 0 for g in h.grad_norm)     # kept without clipping too


def test_evaluate_turns_off_dropout_of_an_rnn_layer(rng):
    x = rng.standard_normal((6, 5, 3)).astype(np.float32)
    y = rng.standard_normal((6, 4)).astype(np.float32)
    w = npl.rnn.DropoutWrapper(npl.rnn.GRUCell(4, seed=0), 0.5, 0.5, 0.5, seed=1)
    layer = L.RNN(w, output="last")
    a = train.evaluate(layer, "mse", x, y)
    b = train.evaluate(layer, "mse", x, y)
    w.training = False
    plain = train.evaluate(layer, "mse", x, y)
    w.training = True
    assert a == b == plain and w.training is True


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


# ============================================================================ argument checks, precision
def test_callable_learning_rate_no_argument_or_step(rng):
    """TF1 calls a learning-rate callable with no argument; npl also passes the step count to a
    callable with one required positional argument.  Either is called once per step."""
    v, g = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    lrs = rng.uniform(0.01, 0.2, 3)
    calls = []

    def no_arg():
        calls.append(None)
        return float(lrs[len(calls) - 1])

    def with_step(step, scale=1.0):
        calls.append(step)
        return float(lrs[step]) * scale

    class Schedule:
        def __call__(self, *args):          # no required argument: called with none
            calls.append(args)
            return float(lrs[0])

    for fn, expect_calls in ((no_arg, [None] * 3), (with_step, [0, 1, 2]), (Schedule(), [()] * 3)):
        calls.clear()
        opt = train.GradientDescentOptimizer(fn)
        w1, w2 = v.copy(), v.copy()
        for _ in range(3):
            opt.apply_gradients([(g, w1, "a"), (g, w2, "b")])    # two variables, one call per step
        assert calls == expect_calls, fn
        used = [float(lrs[0])] * 3 if isinstance(fn, Schedule) else [float(x) for x in lrs]
        expect = v - sum(float(np.float32(x)) * g for x in used)
        assert_close(w1, expect, 1e-15, "callable lr")
        assert np.array_equal(w1, w2)
    with pytest.raises(TypeError, match=r"take no required argument \(as in TensorFlow 1\) or one"):
        train.GradientDescentOptimizer(lambda step, other: 0.1)
    opt = train.AdamOptimizer(lambda: "fast")
    w = v.copy()
    with pytest.raises(TypeError, match="the learning_rate callable must return a number, got 'fast'"):
        opt.apply_gradients([(g, w, "w")])
    assert np.array_equal(w, v) and opt.iterations == 0


def test_float64_hyperparameters_are_float32_rounded_as_in_tf1(rng):
    """Closed form of one float64 Adam step: TF1 rounds Python-float hyperparameters to float32
    and keeps beta1_power / beta2_power as float32; a NumPy float64 hyperparameter is exact."""
    v, g = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    lr, b1 = rng.uniform(0.01, 0.1), rng.uniform(0.5, 0.9)
    b2, eps = rng.uniform(0.9, 0.999), rng.uniform(1e-8, 1e-3)
    f = lambda x: np.float64(np.float32(x))      # noqa: E731
    for exact in (False, True):
        cast = np.float64 if exact else f
        hp = [np.float64(x) if exact else float(x) for x in (lr, b1, b2, eps)]
        opt = train.AdamOptimizer(*hp)
        w = v.copy()
        opt.apply_gradients([(g, w, "w")])
        opt.apply_gradients([(g, w, "w")])
        m1, v1 = g * (1 - cast(b1)), g * g * (1 - cast(b2))
        a1 = cast(lr) * np.sqrt(1 - cast(b2)) / (1 - cast(b1))
        w1 = v - m1 * a1 / (np.sqrt(v1) + cast(eps))
        m2, v2 = m1 + (g - m1) * (1 - cast(b1)), v1 + (g * g - v1) * (1 - cast(b2))
        p1 = np.float32(b1) * np.float32(b1) if not exact else cast(b1) * cast(b1)
        p2 = np.float32(b2) * np.float32(b2) if not exact else cast(b2) * cast(b2)
        a2 = cast(lr) * np.sqrt(1 - np.float64(p2)) / (1 - np.float64(p1))
        assert_close(w, w1 - m2 * a2 / (np.sqrt(v2) + cast(eps)), 1e-15, "adam exact=%s" % exact)
        st = opt.state_dict()
        want = np.float64 if exact else np.float32
        assert st["beta1_power"].dtype == want
        assert st["beta1_power"] == p1 * (cast(b1) if exact else np.float32(b1))
        spec = opt.state_spec({"w": v})
        assert spec["beta1_power"] == ((), np.dtype(want)) and spec["w/Adam"] == ((3, 2), np.dtype(np.float64))
    fresh = train.AdamOptimizer().state_dict({"w": v})            # before any step, float64 variable
    assert fresh["beta2_power"].dtype == np.float32 and fresh["beta2_power"] == np.float32(0.999)


def test_float64_adam_checkpoint_round_trip(rng, tmp_path):
    """A float64 model's Adam state: float32 beta powers in the file (as TF1 writes them), and
    training resumes bit-identically after restore."""
    from npl import checkpoint
    params = {"w": rng.standard_normal((3, 2)), "e": rng.standard_normal((5, 2))}
    grads = [(rng.standard_normal((3, 2)), npl.IndexedSlices(rng.standard_normal((2, 2)),
                                                             rng.integers(0, 5, 2), (5, 2))) for _ in range(5)]
    opt = train.AdamOptimizer(rng.uniform(0.01, 0.1))

    def step(o, p, k):
        o.apply_gradients([(grads[k][0], p["w"], "w"), (grads[k][1], p["e"], "e")])

    for k in range(3):
        step(opt, params, k)
    path = str(tmp_path / "f64.npz")
    checkpoint.save(path, params, opt)
    with np.load(path) as z:
        assert z["beta1_power"].dtype == np.float32 and z["w/Adam"].dtype == np.float64
    other = {k: np.zeros_like(v) for k, v in params.items()}
    opt2 = train.AdamOptimizer(opt.learning_rate)
    checkpoint.restore(path, other, opt2)
    for k in (3, 4):
        step(opt, params, k)
        step(opt2, other, k)
    for k in params:
        assert np.array_equal(params[k], other[k]), k
    assert opt2.state_dict()["beta2_power"] == opt.state_dict()["beta2_power"]
    # a file from before (powers in the variables' float64) is still read, the powers cast
    with np.load(path) as z:
        old = {k: z[k] for k in z.files}
    old["beta1_power"], old["beta2_power"] = old["beta1_power"].astype(np.float64), \
        old["beta2_power"].astype(np.float64)
    np.savez(str(tmp_path / "old.npz"), **old)
    opt3 = train.AdamOptimizer(opt.learning_rate)
    checkpoint.restore(str(tmp_path / "old.npz"), {k: np.zeros_like(v) for k, v in params.items()}, opt3)
    assert opt3.state_dict()["beta1_power"].dtype == np.float32


def test_sparse_gradient_indices_are_checked(rng):
    """Negative indices (NumPy would update the last row), indices past the rows and float
    indices are refused, naming the variable, and nothing is updated."""
    w = rng.standard_normal((4, 3))
    before = w.copy()
    vals = rng.standard_normal((1, 3))
    for kind, kw in CONFIGS:
        opt = _NPL[kind](**kw)
        for bad in (np.array([-1]), np.array([4])):
            with pytest.raises(ValueError, match=r"gradient of 'v': IndexedSlices indices must be in "
                                                 r"\[0, 4\) \(the rows of the variable\), got min %d" % bad[0]):
                opt.apply_gradients([(npl.IndexedSlices(vals, bad, (4, 3)), w, "v")])
        assert np.array_equal(w, before) and opt.iterations == 0
    s = npl.IndexedSlices(vals, np.array([1]), (4, 3))
    s.indices = np.array([1.0])                      # changed after construction: checked again
    with pytest.raises(TypeError, match="gradient of 'v': indices must be an integer array, got float64"):
        train.GradientDescentOptimizer(0.1).apply_gradients([(s, w, "v")])
    s.indices, s.values = np.array([1, 2]), vals
    with pytest.raises(ValueError, match=r"gradient of 'v': 2 indices need values of shape \(2, 3\)"):
        train.GradientDescentOptimizer(0.1).apply_gradients([(s, w, "v")])
    # no rows at all (an Embedding that saw no ids) is a valid, empty update
    empty = npl.IndexedSlices(np.zeros((0, 3)), np.zeros((0,), np.int64), (4, 3))
    train.AdamOptimizer(0.1).apply_gradients([(empty, w, "v")])
    assert np.array_equal(w, before)


def test_sparse_gradient_descent_does_not_merge_duplicates(rng):
    """TF1's GradientDescent applies a sparse gradient with scatter_sub: each (index, row) in
    turn, so var - lr*a - lr*b, not var - lr*(a + b) (they differ in the last bits)."""
    w0 = rng.standard_normal((3, 4))
    vals = rng.standard_normal((6, 4))
    idx = np.array([2, 0, 2, 2, 1, 2])
    lr = rng.uniform(0.05, 0.5)
    w = w0.copy()
    train.GradientDescentOptimizer(lr).apply_gradients([(npl.IndexedSlices(vals, idx, (3, 4)), w, "w")])
    expect = w0.copy()
    for k, r in enumerate(idx):
        expect[r] = expect[r] - vals[k] * np.float64(np.float32(lr))
    assert np.array_equal(w, expect)
    merged = w0.copy()
    for r in range(3):
        merged[r] -= vals[idx == r].sum(axis=0) * np.float64(np.float32(lr))
    assert not np.array_equal(merged, expect)          # the data tells the two rules apart


def test_apply_gradients_argument_errors(rng):
    w = rng.standard_normal(3).astype(np.float32)
    opt = train.GradientDescentOptimizer(0.5)
    with pytest.raises(TypeError, match=r"grads_and_vars must be a list of \(grad, var\).*got int"):
        opt.apply_gradients(5)
    with pytest.raises(TypeError, match=r"gradient of 'v' must be a numpy or cupy array, got str"):
        opt.apply_gradients([("abc", w, "v")])
    with pytest.raises(ValueError, match=r"gradient of 'v' must have the variable's shape \(3,\), got \(2,\)"):
        opt.apply_gradients([([1.0, 2.0], w, "v")])
    g = rng.standard_normal(3)
    expect = w - np.float32(0.5) * g.astype(np.float32)
    opt.apply_gradients([(g.tolist(), w, "v")])            # a Python list: the variable's dtype
    assert w.dtype == np.float32 and np.array_equal(w, expect)
    x, y = _regression(rng, 10)
    model = L.Sequential([L.Dense(1)], input_size=3, dtype=np.float64)
    with pytest.raises(ValueError, match="x and y must have the same number of examples .* got 10 and 3"):
        train.evaluate(model, "mse", x, y[:3])
    with pytest.raises(ValueError, match="same first two dimensions"):
        train.evaluate(model, "mse", x[None], y[None, :3], stateful=True, num_steps=2)


def test_clip_by_global_norm_argument_errors_and_huge_gradients(rng):
    a = rng.standard_normal((3, 4))
    for bad in (np.inf, -1.0, 0, np.nan):
        with pytest.raises(ValueError, match="clip_norm must be a positive finite number"):
            train.clip_by_global_norm([a], bad)
    for bad in (-1, -1e-9, np.nan, np.inf):
        with pytest.raises(ValueError, match="use_norm must be a non-negative finite number"):
            train.clip_by_global_norm([a], 1.0, use_norm=bad)
    for name, kw in (("use_norm", dict(clip_norm=1.0, use_norm="x")), ("clip_norm", dict(clip_norm="x")),
                     ("use_norm", dict(clip_norm=1.0, use_norm=True)),
                     ("use_norm", dict(clip_norm=1.0, use_norm=a))):
        with pytest.raises(TypeError, match="%s must be a number" % name):
            train.clip_by_global_norm([a], **kw)
    # use_norm: a 0-d array is a number; 0 leaves everything as it is
    (c0,), n0 = train.clip_by_global_norm([a], 1.0, use_norm=np.array(0.0))
    assert np.array_equal(c0, a) and n0 == 0.0
    # finite float32 gradients ~1e20 (and ~1e38): the float64 sum of squares does not overflow
    clip = rng.uniform(0.5, 2.0)
    for scale, dtype in ((1e20, np.float32), (3e37, np.float32), (1e300, np.float64)):
        big = [(rng.standard_normal((5, 3)) * scale).astype(dtype), None,
               npl.IndexedSlices((rng.standard_normal((2, 3)) * scale).astype(dtype), np.array([0, 0]), (4, 3))]
        vals = [big[0], big[2].values]
        exact = np.sqrt(sum(((v.astype(np.float64) / scale) ** 2).sum() for v in vals)) * scale
        (c1, c2, c3), n = train.clip_by_global_norm(big, clip)
        assert c2 is None and isinstance(c3, npl.IndexedSlices) and c1.dtype == c3.values.dtype == dtype
        assert type(n) is np.dtype(dtype).type
        if exact < np.finfo(dtype).max:
            assert rel_err(n, exact) < 1e-6 and rel_err(train.global_norm(big), exact) < 1e-6
        for got, orig in ((c1, big[0]), (c3.values, big[2].values)):
            assert np.isfinite(got).all()
            assert rel_err(got, orig.astype(np.float64) / exact * clip) < 1e-6
        got_norm = np.sqrt(sum((v.astype(np.float64) ** 2).sum() for v in (c1, c3.values)))
        assert abs(got_norm - clip) < 1e-5 * clip
    # a non-finite gradient still gives NaN (TF's rule; fit stops on the norm)
    bad = a.copy()
    bad[0, 0] = np.inf
    (cb,), nb = train.clip_by_global_norm([bad], 1.0)
    assert np.isnan(cb).all() and nb == np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_by_global_norm_random_cases_match_tensorflow(rng, dtype):
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    ts = [(rng.standard_normal((3, 4)) * rng.uniform(0.1, 3)).astype(dtype),
          (rng.standard_normal(5) * rng.uniform(0.1, 3)).astype(dtype)]
    sv, si = (rng.standard_normal((3, 2)) * rng.uniform(0.1, 3)).astype(dtype), rng.integers(0, 4, 3)
    total = np.sqrt(sum((t.astype(np.float64) ** 2).sum() for t in ts + [sv]))
    clips = [rng.uniform(0.1, 0.9) * total, rng.uniform(1.1, 3) * total]       # active, inactive
    use = rng.uniform(0.1, 2) * total
    g = tf.Graph()
    with g.as_default():
        tl = [tf.constant(t) for t in ts]
        tl.append(tf.IndexedSlices(tf.constant(sv), tf.constant(si), tf.constant([4, 2])))
        res = {c: tf.clip_by_global_norm(tl, c) for c in clips}
        res["use"] = tf.clip_by_global_norm(tl, clips[0], use_norm=tf.constant(use, dtype))
        res["norm"] = tf.linalg.global_norm(tl)
        with v1.Session(graph=g) as s:
            out = s.run({k: (v[0][0], v[0][1], v[0][2].values, v[1]) if k != "norm" else v
                         for k, v in res.items()})
    npl_list = ts + [npl.IndexedSlices(sv, si, (4, 2))]
    tol = 1e-6 if dtype == np.float32 else 1e-14
    n = train.global_norm(npl_list)
    assert n.dtype == out["norm"].dtype == dtype and rel_err(n, out["norm"]) < tol
    for key, kw in [(clips[0], {}), (clips[1], {}), ("use", {"use_norm": use})]:
        (c1, c2, c3), nn = train.clip_by_global_norm(npl_list, clips[0] if key == "use" else key, **kw)
        for got, want in zip((c1, c2, c3.values), out[key][:3]):
            assert got.dtype == dtype and rel_err(got, want) < tol, key
        assert rel_err(nn, out[key][3]) < tol
    assert rel_err(train.clip_by_global_norm(npl_list, clips[1])[0][0], ts[0]) == 0      # inactive: unchanged


def test_fit_validates_every_argument_before_training(rng):
    x, y = _regression(rng, 12)
    model = L.Sequential([L.Dense(1, seed=0)], input_size=3, dtype=np.float64)
    before = {k: v.copy() for k, v in model.params.items()}
    opt = train.GradientDescentOptimizer(0.1)
    cases = [(ValueError, "max_steps must be a positive integer, got 0", dict(max_steps=0)),
             (ValueError, "max_steps must be a positive integer, got -1", dict(max_steps=-1)),
             (ValueError, "max_steps must be a positive integer, got 2.0", dict(max_steps=2.0)),
             (ValueError, "max_steps must be a positive integer, got True", dict(max_steps=True)),
             (TypeError, "seed must be None or a non-negative integer, got 'a'", dict(seed="a")),
             (TypeError, "seed must be None or a non-negative integer, got 1.5", dict(seed=1.5)),
             (ValueError, "seed must be None or a non-negative integer, got -3", dict(seed=-3)),
             (TypeError, r"callbacks\[1\] must be callable cb\(info\), got 1", dict(callbacks=[print, 1])),
             (TypeError, "callbacks must be a list of callables", dict(callbacks=5)),
             (TypeError, "eval_fn must be None or a callable", dict(eval_fn=0.5))]
    for exc, msg, kw in cases:
        with pytest.raises(exc, match=msg):
            train.fit(model, "mse", opt, x, y, batch_size=4, progress=False, **kw)
    assert opt.iterations == 0 and all(np.array_equal(v, before[k]) for k, v in model.params.items())
    for bad, shown in (("x", "'x'"), ({"acc": [1.0]}, r"\[1.0\] for key 'acc'"), (None, "None")):
        msg = "eval_fn must return a number or a dict name -> number, got %s" % shown
        with pytest.raises(TypeError, match=msg):
            train.fit(model, "mse", opt, x, y, batch_size=4, progress=False, eval_fn=lambda m, b=bad: b)
    # the accepted forms: max_steps=1 is one step; a single callable as callbacks; 0-d results
    seen = []
    h = train.fit(model, "mse", train.GradientDescentOptimizer(0.1), x, y, batch_size=4, epochs=3,
                  progress=False, max_steps=1, callbacks=seen.append, seed=np.uint8(3),
                  eval_fn=lambda m: {"a": np.float32(0.5), "b": np.array(2.0)})
    assert len(h.loss) == 1 and len(seen) == 1 and h.eval == {"a": [(1, 0.5)], "b": [(1, 2.0)]}
