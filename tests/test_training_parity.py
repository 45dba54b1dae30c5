"""Five Adam steps of two models, npl against TensorFlow 1 (graph mode), from the same weights and
batches, with tf.clip_by_global_norm active (small clip norm) and inactive (large clip norm):

(a) char model: embedding -> BasicLSTMCell -> dense, legacy_seq2seq.sequence_loss (weighted,
    with some zero weights), sparse embedding gradient (IndexedSlices) through the clip and Adam;
(b) sine model: MultiRNNCell(BasicLSTMCell(30), BasicLSTMCell(1)), MSE on the last output,
    batch 8, 10 steps.

Every step's loss and the final weights must agree to relative 1e-5 in float32.  The live test
runs when TensorFlow is installed; the stored TF results in tests/data/train_parity.npz are
replayed without it.  Regenerate that file with ``python tests/test_training_parity.py --write``.

(c) float64 optimizers: six steps of every tf.compat.v1.train optimizer on dense and IndexedSlices
    gradients, fed the same gradients: weights and slots to 1e-15 relative (live TF only).
"""
import os
import sys

import numpy as np
import pytest

import npl
from npl import layers as L, losses, train

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "train_parity.npz")
TOL = 1e-5
STEPS = 5
CLIPS = {"char": {"clipped": 0.05, "unclipped": 1000.0}, "sine": {"clipped": 0.02, "unclipped": 1000.0}}
LR = {"char": 0.01, "sine": 0.01}
CHAR = dict(V=12, D=8, H=16, B=4, T=6)
SINE = dict(B=8, T=10)


# ----------------------------------------------------------------------------- shared inputs
def _u(rng, shape, scale):
    return rng.uniform(-scale, scale, shape).astype(np.float32)


def make_inputs(model):
    """Initial weights (every one random, biases included) and STEPS batches, from a fixed seed."""
    if model == "char":
        V, D, H, B, T = (CHAR[k] for k in "VDHBT")
        rng = np.random.default_rng(2024)
        init = {"embedding/embeddings": _u(rng, (V, D), 0.5),
                "rnn/basic_lstm_cell/kernel": _u(rng, (D + H, 4 * H), 0.3),
                "rnn/basic_lstm_cell/bias": _u(rng, (4 * H,), 0.3),
                "dense/kernel": _u(rng, (H, V), 0.4),
                "dense/bias": _u(rng, (V,), 0.2)}
        x = rng.integers(0, V, (STEPS, B, T)).astype(np.int32)
        y = rng.integers(0, V, (STEPS, B, T)).astype(np.int32)
        w = (rng.random((STEPS, B, T)) > 0.2).astype(np.float32)      # some padding (zero weight)
        return init, {"x": x, "y": y, "w": w}
    B, T = SINE["B"], SINE["T"]
    rng = np.random.default_rng(7)
    init = {"rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel": _u(rng, (1 + 30, 120), 0.25),
            "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/bias": _u(rng, (120,), 0.25),
            "rnn/multi_rnn_cell/cell_1/basic_lstm_cell/kernel": _u(rng, (30 + 1, 4), 0.4),
            "rnn/multi_rnn_cell/cell_1/basic_lstm_cell/bias": _u(rng, (4,), 0.4)}
    start = rng.uniform(0, 2 * np.pi, (STEPS, B, 1))
    t = start + 0.3 * np.arange(T + 1)[None, None, :]
    wave = np.sin(t).astype(np.float32)                                 # [STEPS, B, T+1]
    return init, {"x": wave[:, :, :T, None], "y": wave[:, :, T:]}


# ----------------------------------------------------------------------------- npl
def npl_model(model):
    if model == "char":
        return L.Sequential([L.Embedding(CHAR["V"], CHAR["D"]), L.RNN(npl.rnn.BasicLSTMCell(CHAR["H"])),
                             L.Dense(CHAR["V"])])
    cell = npl.rnn.MultiRNNCell([npl.rnn.BasicLSTMCell(30), npl.rnn.BasicLSTMCell(1)])
    return L.Sequential([L.RNN(cell, output="last")], input_size=1)


def run_npl(model, init, batches, clip_norm):
    """STEPS Adam steps with clip_by_global_norm on the backend in force (NPL_BACKEND=cupy runs
    them on the GPU); returns (losses, global norms, final weights as numpy arrays)."""
    m = npl_model(model)
    m.set_params(init)
    opt = train.AdamOptimizer(LR[model])
    batches = npl.to_device(batches)
    out_losses, norms = [], []
    for k in range(STEPS):
        m.zero_grad()
        pred, tr = m.forward(batches["x"][k])
        if model == "char":
            loss, d = losses.sequence_loss(pred, batches["y"][k], batches["w"][k], time_major=False)
        else:
            loss, d = losses.mean_squared_error(batches["y"][k], pred)
        tr.backward(d)
        params, grads = m.params, m.grads
        names = list(params)
        clipped, norm = train.clip_by_global_norm([grads[n] for n in names], clip_norm)
        opt.apply_gradients([(g, params[n], n) for n, g in zip(names, clipped)])
        out_losses.append(loss)
        norms.append(norm)
    return np.array(out_losses), np.array(norms), npl.to_numpy(m.params)


# ----------------------------------------------------------------------------- TensorFlow 1
def run_tf(model, init, batches, clip_norms):
    """The same training in a TF1 graph: one graph per model, the clip norm fed per run, every
    variable (Adam's slots included) re-initialised between runs.  Returns {clip: (losses, norms,
    final weights)}."""
    import tensorflow as tf
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        clip_ph = v1.placeholder(tf.float32, [])
        if model == "char":
            V, D, H, B, T = (CHAR[k] for k in "VDHBT")
            x_ph = v1.placeholder(tf.int32, [B, T])
            y_ph = v1.placeholder(tf.int32, [B, T])
            w_ph = v1.placeholder(tf.float32, [B, T])
            emb = v1.get_variable("embedding/embeddings", [V, D])
            out, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.BasicLSTMCell(H), tf.nn.embedding_lookup(emb, x_ph),
                                       dtype=tf.float32)
            logits = v1.layers.dense(out, V)
            loss = _legacy_sequence_loss(tf, tf.unstack(logits, axis=1), tf.unstack(y_ph, axis=1),
                                         tf.unstack(w_ph, axis=1))
            feeds = lambda k: {x_ph: batches["x"][k], y_ph: batches["y"][k], w_ph: batches["w"][k]}  # noqa
        else:
            x_ph = v1.placeholder(tf.float32, [SINE["B"], SINE["T"], 1])
            y_ph = v1.placeholder(tf.float32, [SINE["B"], 1])
            cell = v1.nn.rnn_cell.MultiRNNCell([v1.nn.rnn_cell.BasicLSTMCell(30),
                                                v1.nn.rnn_cell.BasicLSTMCell(1)])
            out, _ = v1.nn.dynamic_rnn(cell, x_ph, dtype=tf.float32)
            loss = v1.losses.mean_squared_error(y_ph, out[:, -1, :])
            feeds = lambda k: {x_ph: batches["x"][k], y_ph: batches["y"][k]}  # noqa
        tvars = v1.trainable_variables()
        grads = tf.gradients(loss, tvars)
        clipped, norm = tf.clip_by_global_norm(grads, clip_ph)
        step = v1.train.AdamOptimizer(LR[model]).apply_gradients(list(zip(clipped, tvars)))
        assert sorted(v.op.name for v in tvars) == sorted(init)
        results = {}
        with v1.Session(graph=g) as s:
            for clip in clip_norms:
                s.run(v1.global_variables_initializer())
                for v in tvars:
                    v.load(init[v.op.name], s)
                ls, ns = [], []
                for k in range(STEPS):
                    fd = feeds(k)
                    fd[clip_ph] = clip
                    lv, nv, _ = s.run([loss, norm, step], fd)
                    ls.append(lv)
                    ns.append(nv)
                results[clip] = (np.array(ls), np.array(ns), {v.op.name: s.run(v) for v in tvars})
    return results


def _legacy_sequence_loss(tf, logits, targets, weights):
    """tf.contrib.legacy_seq2seq.sequence_loss (TF 1.x; TF 2 no longer ships contrib), transcribed
    onto tf ops: add_n of weighted sparse cross entropies / (add_n(weights) + 1e-12), summed over the
    batch and divided by the batch size."""
    log_perp_list = [tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.reshape(t, [-1]), logits=z) * w
                     for z, t, w in zip(logits, targets, weights)]
    log_perps = tf.add_n(log_perp_list) / (tf.add_n(weights) + 1e-12)
    cost = tf.reduce_sum(log_perps)
    return cost / tf.cast(tf.shape(targets[0])[0], cost.dtype)


# ----------------------------------------------------------------------------- comparison
def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def _compare(model, regime, npl_res, tf_res, clip):
    (nl, nn, nw), (tl, tn, tw) = npl_res, tf_res
    if regime == "clipped":
        assert np.all(tn > clip), "the clip must be active at every step: norms %s, clip %g" % (tn, clip)
    else:
        assert np.all(tn < clip), "the clip must be inactive: norms %s, clip %g" % (tn, clip)
    errs = {"loss[%d]" % k: abs(nl[k] - tl[k]) / abs(tl[k]) for k in range(STEPS)}
    errs.update({"norm[%d]" % k: abs(nn[k] - tn[k]) / abs(tn[k]) for k in range(STEPS)})
    errs.update({name: _rel(nw[name], tw[name]) for name in tw})
    moved = max(_rel(tw[n], INIT[model][n]) for n in tw)
    assert moved > 1e-3, "the weights must move measurably (moved %.2g)" % moved
    worst = max(errs, key=errs.get)
    print("%s/%s: max relative error %.2e (%s)" % (model, regime, errs[worst], worst))
    assert errs[worst] < TOL, "%s/%s: %s relative error %.3g > %g" % (model, regime, worst, errs[worst], TOL)
    return errs[worst]


INIT = {m: make_inputs(m)[0] for m in ("char", "sine")}


@pytest.mark.parametrize("model", ["char", "sine"])
def test_live_parity_with_tensorflow(model):
    pytest.importorskip("tensorflow")
    init, batches = make_inputs(model)
    tf_res = run_tf(model, init, batches, list(CLIPS[model].values()))
    for regime, clip in CLIPS[model].items():
        _compare(model, regime, run_npl(model, init, batches, clip), tf_res[clip], clip)


def _stored():
    with np.load(DATA, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("model", ["char", "sine"])
def test_stored_parity_without_tensorflow(model):
    """Replays the stored TF results (no TensorFlow needed); also checks that the stored inputs are
    the ones the generator makes, so the file and this module agree."""
    st = _stored()
    init, batches = make_inputs(model)
    for k, v in init.items():
        assert np.array_equal(st["%s/init/%s" % (model, k)], v), k
    for k, v in batches.items():
        assert np.array_equal(st["%s/batch/%s" % (model, k)], v), k
    for regime, clip in CLIPS[model].items():
        pre = "%s/%s/" % (model, regime)
        assert float(st[pre + "clip_norm"]) == clip
        tf_res = (st[pre + "losses"], st[pre + "norms"],
                  {k[len(pre + "final/"):]: v for k, v in st.items() if k.startswith(pre + "final/")})
        assert set(tf_res[2]) == set(init)
        _compare(model, regime, run_npl(model, init, batches, clip), tf_res, clip)


# ----------------------------------------------------------------------------- float64 optimizers
F64_STEPS = 6
F64_TOL = 1e-15          # measured: 0 (bit-identical) except one rounding in sparse Adam's v


def _f64_configs(rng):
    """Every optimizer and option, random hyperparameters (Python floats: TF1 rounds them to
    float32 before casting to float64), TF's defaults for Adam's betas/epsilon in one config, and
    a no-argument callable learning rate (TF1 calls it with no argument)."""
    u = lambda lo, hi: float(rng.uniform(lo, hi))      # noqa: E731
    lr_gd = u(0.02, 0.2)
    return [("GradientDescent", dict(learning_rate=u(0.02, 0.2))),
            ("GradientDescent", dict(learning_rate=lambda: lr_gd)),
            ("Momentum", dict(learning_rate=u(0.01, 0.1), momentum=u(0.5, 0.95))),
            ("Momentum", dict(learning_rate=u(0.01, 0.1), momentum=u(0.5, 0.95), use_nesterov=True)),
            ("RMSProp", dict(learning_rate=u(0.001, 0.05), decay=u(0.8, 0.95))),
            ("RMSProp", dict(learning_rate=u(0.001, 0.05), decay=u(0.8, 0.95), momentum=u(0.1, 0.9),
                             epsilon=u(1e-8, 1e-4))),
            ("RMSProp", dict(learning_rate=u(0.001, 0.05), decay=u(0.8, 0.95), momentum=u(0.1, 0.9),
                             epsilon=u(1e-8, 1e-4), centered=True)),
            ("Adam", dict(learning_rate=u(1e-3, 1e-2))),
            ("Adam", dict(learning_rate=u(0.01, 0.1), beta1=u(0.6, 0.9), beta2=u(0.9, 0.999),
                          epsilon=u(1e-8, 1e-3)))]


def _f64_inputs():
    """Initial float64 weights (dense kernel W, embedding E, bias b) and per-step feeds: W's dense
    gradient, ids with repeats (E's gradient is an IndexedSlices with duplicate indices), the
    cotangent of the lookup, b's gradient.  Step 3 gives only W a gradient."""
    rng = np.random.default_rng(64)
    init = {"W": rng.standard_normal((4, 3)), "E": rng.standard_normal((7, 3)),
            "b": rng.standard_normal(3)}
    feeds = [{"gW": rng.standard_normal((4, 3)), "ids": rng.integers(0, 7, (2, 3)),
              "dy": rng.standard_normal((2, 3, 3)), "gb": rng.standard_normal(3) * 5}
             for _ in range(F64_STEPS)]
    return init, feeds, _f64_configs(rng)


def _run_tf_f64(init, feeds, configs):
    import tensorflow as tf
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        gW = v1.placeholder(tf.float64, (4, 3))
        gb = v1.placeholder(tf.float64, (3,))
        ids = v1.placeholder(tf.int64, (2, 3))
        dy = v1.placeholder(tf.float64, (2, 3, 3))
        full_ops, partial_ops, powers = [], [], {}
        for c, (kind, kw) in enumerate(configs):
            with v1.variable_scope("c%d" % c):
                W, E, b = (v1.get_variable(n, initializer=init[n]) for n in ("W", "E", "b"))
            gE = tf.gradients(tf.nn.embedding_lookup(E, ids), E, grad_ys=dy)[0]
            assert isinstance(gE, tf.IndexedSlices)
            opt = getattr(v1.train, kind + "Optimizer")(**kw)
            full_ops.append(opt.apply_gradients([(gW, W), (gE, E), (gb, b)]))
            partial_ops.append(opt.apply_gradients([(gW, W)]))
            if kind == "Adam":
                powers[c] = opt._get_beta_accumulators()
        with v1.Session(graph=g) as s:
            s.run(v1.global_variables_initializer())
            for k, f in enumerate(feeds):
                fd = {gW: f["gW"], gb: f["gb"], ids: f["ids"], dy: f["dy"]}
                s.run(partial_ops if k == 3 else full_ops, fd)
            final = {v.op.name: s.run(v) for v in v1.global_variables() if "power" not in v.op.name}
            pw = {c: dict(zip(("beta1_power", "beta2_power"), s.run(list(p)))) for c, p in powers.items()}
    return final, pw


def _run_npl_f64(init, feeds, c, kind, kw):
    opt = getattr(train, kind + "Optimizer")(**kw)
    pre = "c%d/" % c
    params = {pre + n: init[n].copy() for n in ("W", "E", "b")}
    for k, f in enumerate(feeds):
        _, tr = npl.nn.embedding_lookup(params[pre + "E"], f["ids"], return_trace=True)
        gE = tr.backward(f["dy"])
        assert isinstance(gE, npl.IndexedSlices)
        if k == 3:
            grads = {pre + "W": f["gW"], pre + "E": None, pre + "b": None}
        else:
            grads = {pre + "W": f["gW"], pre + "E": gE, pre + "b": f["gb"]}
        opt.apply_gradients([(grads[n], params[n], n) for n in params])
    return opt, params


def test_live_float64_optimizers_match_tensorflow_bit_for_bit():
    """Six float64 steps of every TF1 optimizer (dense kernel, sparse embedding gradient with
    duplicate indices, a bias, one step with only the kernel's gradient): weights and every slot
    agree with tf.compat.v1.train to 1e-15 relative; Adam's beta powers are float32 variables in
    TF1 and npl alike, with equal values, and npl's state_spec has TF1's dtypes (so a TF1 float64
    checkpoint is accepted)."""
    tf = pytest.importorskip("tensorflow")
    init, feeds, configs = _f64_inputs()
    final, powers = _run_tf_f64(init, feeds, configs)
    worst = (0.0, "")
    for c, (kind, kw) in enumerate(configs):
        opt, params = _run_npl_f64(init, feeds, c, kind, kw)
        state = opt.state_dict()
        names = sorted(k for k in final if k.startswith("c%d/" % c))
        assert sorted(list(params) + [k for k in state if "/" in k]) == names, (kind, kw)
        for n in names:
            got = params[n] if n in params else state[n]
            assert got.dtype == final[n].dtype == np.float64, n
            e = _rel(got, final[n])
            worst = max(worst, (e, "%s %s" % (kind, n)))
            assert e <= F64_TOL, "%s %s: %s relative error %.3g > %g" % (kind, kw, n, e, F64_TOL)
        for n in params:
            assert _rel(final[n], init[n.split("/")[1]]) > 1e-3, n     # the weights really moved
        spec = opt.state_spec(params)
        if kind == "Adam":
            for k in ("beta1_power", "beta2_power"):
                tf_val = powers[c][k]
                assert tf_val.dtype == np.float32
                assert state[k].dtype == spec[k][1] == np.float32, k
                assert state[k] == tf_val, (k, state[k], tf_val)
        for k, (shape, dt) in spec.items():
            if "/" in k:
                assert (shape, dt) == (final[k].shape, final[k].dtype), k
    print("float64 optimizers vs TF1: max relative error %.2e (%s)" % worst)
    del tf


def write_stored_cases(path=DATA):
    """Run TensorFlow on both models and store inputs + results (float32) in ``path``."""
    out = {}
    for model in ("char", "sine"):
        init, batches = make_inputs(model)
        res = run_tf(model, init, batches, list(CLIPS[model].values()))
        out.update({"%s/init/%s" % (model, k): v for k, v in init.items()})
        out.update({"%s/batch/%s" % (model, k): v for k, v in batches.items()})
        for regime, clip in CLIPS[model].items():
            ls, ns, fw = res[clip]
            pre = "%s/%s/" % (model, regime)
            out[pre + "clip_norm"] = np.float64(clip)
            out[pre + "losses"], out[pre + "norms"] = ls.astype(np.float32), ns.astype(np.float32)
            out.update({pre + "final/" + k: v for k, v in fw.items()})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **out)
    return path


if __name__ == "__main__":
    if "--write" in sys.argv:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        print("wrote", write_stored_cases())
    else:
        print(__doc__)
