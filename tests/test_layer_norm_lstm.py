"""npl.rnn.LayerNormBasicLSTMCell (tf.contrib.rnn.LayerNormBasicLSTMCell, TF 1.15).

* Live TensorFlow 1 (``@pytest.mark.tf``): tf.contrib is gone from TF 2, so the test writes TF
  1.15's cell out of core ops as that release does (one matmul to 4H, ``tf.split`` into
  i, j, f, o, ``tf.contrib.layers.layer_norm`` = ``nn.moments`` + ``nn.batch_normalization``
  with variance epsilon 1e-12, variables ``kernel``, ``bias`` only without layer_norm,
  ``<input|transform|forget|output|state>/gamma|beta``), run by ``tf.compat.v1.nn.dynamic_rnn``
  / ``bidirectional_dynamic_rnn`` in a graph.  The dropout of g is TF's ``g * mask`` with the
  mask fed as extra input columns, so npl (``replay`` with the same masks) and TF see the same
  masks.  Compared: outputs, final states and ``tf.gradients`` with respect to the inputs, the
  initial states and every variable; every value random (kernel, bias, gamma, beta,
  forget_bias, initial states, cotangents); unsorted lengths with a 0, batch 1, T = 1, a
  MultiRNNCell stack, layer_norm True and False, dropout, float64 (1e-9) and float32 (1e-5).
  The live graph's variable names are checked against ``npl.convert.tf_variable_names``.
* Float64 central finite differences (``npl.gradcheck_cell``) with and without layer_norm,
  lengths, dropout masks replayed, in a stack, bidirectional.
* Closed form: keep_prob = 1 against a replayed all-ones mask; the masks' statistics.
"""

import numpy as np
import pytest

import npl
from npl import convert
from npl.gradcheck import gradcheck_cell
from helpers import flatten, unflatten, numpy_backend, rel_err, seeded_rng as _rng, assert_raises_naming  # noqa: F401
from helpers import run_on_cupy_stand_in

R, S = npl.rnn, npl.LSTMStateTuple
F32, F64 = np.float32, np.float64
MEASURED = {}


def tf_cell_class(tf):
    """TF 1.15's LayerNormBasicLSTMCell written out of core ops.  Its inputs carry the dropout
    mask of g as their last ``num_units`` columns (ones: no dropout)."""
    v1 = tf.compat.v1

    class LayerNormBasicLSTMCell(v1.nn.rnn_cell.RNNCell):
        def __init__(self, num_units, forget_bias=1.0, layer_norm=True, norm_gain=1.0,
                     norm_shift=0.0, dropout=False):
            super().__init__()
            self._num_units, self._forget_bias = num_units, forget_bias
            self._layer_norm, self._g, self._b, self._dropout = layer_norm, norm_gain, norm_shift, dropout

        @property
        def state_size(self):
            return v1.nn.rnn_cell.LSTMStateTuple(self._num_units, self._num_units)

        @property
        def output_size(self):
            return self._num_units

        def _norm(self, inp, scope):          # tf.contrib.layers.layer_norm, begin_norm_axis=1
            with v1.variable_scope(scope):
                gamma = v1.get_variable("gamma", shape=inp.shape[-1:], dtype=inp.dtype,
                                        initializer=v1.constant_initializer(self._g))
                beta = v1.get_variable("beta", shape=inp.shape[-1:], dtype=inp.dtype,
                                       initializer=v1.constant_initializer(self._b))
            mean, variance = tf.nn.moments(inp, [1], keepdims=True)
            return tf.nn.batch_normalization(inp, mean, variance, offset=beta, scale=gamma,
                                             variance_epsilon=1e-12)

        def call(self, inputs, state):
            H = self._num_units
            x, mask = inputs[:, :-H], inputs[:, -H:]
            c, h = state
            args = tf.concat([x, h], 1)
            kernel = v1.get_variable("kernel", [args.shape[-1], 4 * H], dtype=args.dtype)
            concat = tf.matmul(args, kernel)
            if not self._layer_norm:
                concat = tf.nn.bias_add(concat, v1.get_variable("bias", [4 * H], dtype=args.dtype))
            i, j, f, o = tf.split(concat, 4, axis=1)
            if self._layer_norm:
                i, j = self._norm(i, "input"), self._norm(j, "transform")
                f, o = self._norm(f, "forget"), self._norm(o, "output")
            g = tf.tanh(j)
            if self._dropout:
                g = g * mask                      # nn_ops.dropout with its mask fed
            new_c = c * tf.sigmoid(f + self._forget_bias) + tf.sigmoid(i) * g
            if self._layer_norm:
                new_c = self._norm(new_c, "state")
            new_h = tf.tanh(new_c) * tf.sigmoid(o)
            return new_h, v1.nn.rnn_cell.LSTMStateTuple(new_c, new_h)

    return LayerNormBasicLSTMCell


# spec of one cell: (units, layer_norm, keep_prob)
# case: (op, [specs], B, T, I, lengths, dtype)
TF_CASES = {
    "ln_unsorted_lengths_with_zero": ("dynamic", [(4, True, 1.0)], 4, 5, 3, [3, 0, 5, 1], F64),
    "no_ln_unsorted_lengths": ("dynamic", [(3, False, 1.0)], 3, 4, 2, [2, 4, 0], F64),
    "ln_batch1": ("dynamic", [(3, True, 1.0)], 1, 4, 3, [3], F64),
    "ln_T1": ("dynamic", [(3, True, 1.0)], 3, 1, 2, [1, 0, 1], F64),
    "stacked_ln_and_plain": ("dynamic", [(3, True, 1.0), (2, False, 1.0), (4, True, 1.0)], 3, 4, 2,
                             [4, 1, 0], F64),
    "ln_dropout_masks_fed": ("dynamic", [(4, True, 0.6)], 3, 4, 3, [4, 2, 3], F64),
    "stacked_dropout_masks_fed": ("dynamic", [(3, True, 0.5), (3, False, 0.7)], 2, 3, 2, None, F64),
    "bidirectional_ln": ("bidi", [(3, True, 1.0), (4, True, 0.6)], 3, 4, 2, [4, 0, 2], F64),
    "float32_ln": ("dynamic", [(5, True, 1.0), (3, False, 1.0)], 4, 5, 3, [5, 2, 0, 3], F32),
    "float32_dropout": ("dynamic", [(4, True, 0.7)], 3, 4, 3, [4, 1, 3], F32),
}


def _npl_cell(spec, fb, rng, I, dt):
    H, ln, keep = spec
    c = R.LayerNormBasicLSTMCell(H, forget_bias=fb, layer_norm=ln, dropout_keep_prob=keep,
                                 dropout_prob_seed=int(rng.integers(1 << 30)))
    c.build(I, dt)
    c.set_params({k: rng.uniform(-1, 1, v.shape).astype(dt) for k, v in c.params.items()})
    return c


def _state(c, B, rng, dt):
    return S(rng.standard_normal((B, c.num_units)).astype(dt), rng.standard_normal((B, c.num_units)).astype(dt))


@pytest.mark.tf
@pytest.mark.parametrize("case", sorted(TF_CASES))
def test_matches_live_tf(tf, case):
    op, specs, B, T, I, L, dt = TF_CASES[case]
    rng = _rng("ln-lstm", case)
    fbs = [round(float(v), 4) for v in rng.uniform(-1, 1, len(specs))]
    # npl cells: a stack for "dynamic" with several specs, fw / bw for "bidi"
    leaves, width = [], I
    for k, s in enumerate(specs):
        leaves.append(_npl_cell(s, fbs[k], rng, width if op == "dynamic" else I, dt))
        width = s[0] if op == "dynamic" else I
    x = rng.standard_normal((B, T, I)).astype(dt)
    masks = []
    for c in leaves:                          # the masks both sides see ([T, B, H], scaled)
        keep = c.dropout_keep_prob
        m = ((rng.random((T, B, c.num_units)) < keep) / keep).astype(dt) if keep < 1 else None
        if m is not None:
            c.masks, c.replay = m, True
        masks.append(m)
    if op == "dynamic":
        cell = leaves[0] if len(leaves) == 1 else R.MultiRNNCell(leaves)
        s0 = _state(leaves[0], B, rng, dt) if len(leaves) == 1 else tuple(_state(c, B, rng, dt) for c in leaves)
        y, st, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=L, initial_state=s0, return_trace=True)
        outs = [y]
    else:
        s0 = (_state(leaves[0], B, rng, dt), _state(leaves[1], B, rng, dt))
        (yf, yb), st, tr = npl.nn.bidirectional_dynamic_rnn(leaves[0], leaves[1], x, sequence_length=L,
                                                            initial_state_fw=s0[0],
                                                            initial_state_bw=s0[1], return_trace=True)
        outs = [yf, yb]
    dy = [rng.standard_normal(o.shape).astype(dt) for o in outs]
    dst = unflatten(st, [rng.standard_normal(a.shape).astype(dt) for a in flatten(st)])
    for c in leaves:
        c.zero_grad()
    dx, ds0 = tr.backward(dy[0] if op == "dynamic" else tuple(dy), dst)

    v1 = tf.compat.v1
    Cell = tf_cell_class(tf)
    rc = v1.nn.rnn_cell
    with v1.Graph().as_default(), v1.Session() as sess:
        tcells = [Cell(s[0], forget_bias=fbs[k], layer_norm=s[1], dropout=s[2] < 1)
                  for k, s in enumerate(specs)]
        xt = tf.constant(x)
        tmasks = [tf.constant(np.ones((T, B, s[0]), dt) if m is None else m) for s, m in zip(specs, masks)]

        def tstate(s):
            return rc.LSTMStateTuple(tf.constant(s.c), tf.constant(s.h))
        if op == "dynamic":
            # all masks as extra input columns of the bottom layer, peeled off per layer
            widths = [s[0] for s in specs]

            class Stack(rc.RNNCell):
                @property
                def state_size(self):
                    return tuple(c.state_size for c in tcells) if len(tcells) > 1 else tcells[0].state_size

                @property
                def output_size(self):
                    return tcells[-1].output_size

                def __call__(self, inputs, state, scope=None):
                    ms = tf.split(inputs[:, I:], widths, axis=1)
                    h = inputs[:, :I]
                    if len(tcells) == 1:
                        return tcells[0](tf.concat([h, ms[0]], 1), state)
                    with v1.variable_scope("multi_rnn_cell"):
                        new = []
                        for k, c in enumerate(tcells):
                            with v1.variable_scope("cell_%d" % k):
                                h, s = c(tf.concat([h, ms[k]], 1), state[k])
                            new.append(s)
                        return h, tuple(new)

            xin = tf.concat([xt, tf.transpose(tf.concat(tmasks, 2), [1, 0, 2])], 2)
            st0 = tstate(s0) if len(tcells) == 1 else tuple(tstate(s) for s in s0)
            with v1.variable_scope("rnn"):
                out, fin = v1.nn.dynamic_rnn(Stack(), xin, sequence_length=L, initial_state=st0,
                                             scope=v1.get_variable_scope())
            touts = [out]
            scopes = ["rnn"]
            ncells = [cell]
        else:
            st0 = (tstate(s0[0]), tstate(s0[1]))
            # the bw pass reads the reversed prefix: its masks are indexed in its own time order,
            # as npl's (the mask of its step t)
            mf = tf.transpose(tmasks[0], [1, 0, 2])
            mb = tf.reverse_sequence(tf.transpose(tmasks[1], [1, 0, 2]), L, seq_axis=1, batch_axis=0)
            xf = tf.concat([xt, mf], 2)
            with v1.variable_scope("bidirectional_rnn"):
                with v1.variable_scope("fw") as fs:
                    of, sf = v1.nn.dynamic_rnn(tcells[0], xf, sequence_length=L, initial_state=st0[0],
                                               scope=fs)
                with v1.variable_scope("bw") as bs:
                    xr = tf.reverse_sequence(xt, L, seq_axis=1, batch_axis=0)
                    ob, sb = v1.nn.dynamic_rnn(tcells[1], tf.concat([xr, tf.reverse_sequence(mb, L, 1, 0)], 2),
                                               sequence_length=L, initial_state=st0[1], scope=bs)
                    ob = tf.reverse_sequence(ob, L, seq_axis=1, batch_axis=0)
            touts, fin = [of, ob], (sf, sb)
            scopes = ["bidirectional_rnn/fw", "bidirectional_rnn/bw"]
            ncells = leaves
        variables = v1.global_variables()
        want = {}
        for c, sc in zip(ncells, scopes):
            names = convert.tf_variable_names(c, sc)
            want.update({tfn: (c, n) for n, tfn in names.items()})
        assert sorted(v.op.name for v in variables) == sorted(want)
        loss = tf.add_n([tf.reduce_sum(o * w) for o, w in zip(touts, dy)] +
                        [tf.reduce_sum(a * w) for a, w in zip(flatten(fin), flatten(dst))])
        s_leaves = flatten(st0)
        grads = tf.gradients(loss, [xt] + s_leaves + variables)
        for v in variables:
            c, n = want[v.op.name]
            v.load(c.params[n], sess)
        r_o, r_s, r_g = sess.run([touts, flatten(fin), grads])
    errs = {"outputs": max(rel_err(a, b) for a, b in zip(outs, r_o)),
            "states": max(rel_err(a, b) for a, b in zip(flatten(st), r_s)),
            "d_inputs": rel_err(dx, r_g[0]),
            "d_initial_states": max(rel_err(a, b) for a, b in zip(flatten(ds0), r_g[1:1 + len(s_leaves)]))}
    pg = {}
    for v, g in zip(variables, r_g[1 + len(s_leaves):]):
        c, n = want[v.op.name]
        pg[v.op.name] = rel_err(c.grads[n], g)
    errs["d_variables"] = max(pg.values())
    MEASURED[case] = errs
    tol = 1e-9 if dt == F64 else 2e-5
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, "%s: %s (per variable: %s)" % (case, errs, pg)


# ============================================================================ finite differences
def _cell(rng, H=3, I=2, ln=True, keep=1.0, fb=None):
    c = R.LayerNormBasicLSTMCell(H, forget_bias=float(rng.uniform(-1, 1)) if fb is None else fb,
                                 layer_norm=ln, dropout_keep_prob=keep, input_size=I, dtype=F64)
    c.set_params({k: rng.uniform(-1, 1, v.shape) for k, v in c.params.items()})
    return c


@pytest.mark.parametrize("ln", [True, False])
@pytest.mark.parametrize("lengths", [None, [3, 0, 1], [1, 4, 2]])
def test_gradcheck(ln, lengths):
    rng = _rng("ln-fd", ln, lengths)
    cell = _cell(rng, ln=ln)
    rep = gradcheck_cell(cell, rng.standard_normal((3, 4, 2)), sequence_length=lengths)
    assert rep.passed, rep


@pytest.mark.parametrize("case", ["batch1_T1", "dropout_replayed", "stack", "stack_with_dropout_wrapper"])
def test_gradcheck_more(case):
    rng = _rng("ln-fd-more", case)
    if case == "batch1_T1":
        cell, x, L = _cell(rng), rng.standard_normal((1, 1, 2)), None
    elif case == "dropout_replayed":
        cell = _cell(rng, keep=0.6)
        cell.masks = ((rng.random((4, 3, 3)) < 0.6) / 0.6)
        cell.replay = True
        x, L = rng.standard_normal((3, 4, 2)), [4, 0, 2]
    elif case == "stack":
        cell = R.MultiRNNCell([_cell(rng), _cell(rng, I=3, ln=False), _cell(rng, H=4, I=3)])
        x, L = rng.standard_normal((2, 3, 2)), [3, 1]
    else:
        inner = _cell(rng, keep=0.5)
        inner.masks, inner.replay = ((rng.random((3, 2, 3)) < 0.5) / 0.5), True
        cell = R.DropoutWrapper(inner, input_keep_prob=0.7, state_keep_prob=0.6, seed=3)
        x, L = rng.standard_normal((2, 3, 2)), [2, 3]
    rep = gradcheck_cell(cell, x, sequence_length=L)
    assert rep.passed, rep


def test_bidirectional_and_static_gradients_against_finite_differences():
    from test_gradients import fd_check
    rng = _rng("ln-fd-bidi")
    fw, bw = _cell(rng), _cell(rng, H=2, ln=False)
    x = rng.standard_normal((3, 4, 2))
    s0 = (S(*rng.standard_normal((2, 3, 3))), S(*rng.standard_normal((2, 3, 2))))

    def run(trace):
        r = npl.nn.bidirectional_dynamic_rnn(fw, bw, x, [4, 0, 2], s0[0], s0[1], return_trace=trace)
        return r
    fd_check([fw, bw], run, lambda tr, d, s: tr.backward(d, s), x, s0, rng)
    xs = [rng.standard_normal((3, 2)) for _ in range(3)]

    def run_static(trace):
        return npl.nn.static_rnn(fw, xs, s0[0], sequence_length=[3, 1, 0], return_trace=trace)
    fd_check([fw], run_static, lambda tr, d, s: tr.backward(d, s), xs, s0[0], rng)


# ============================================================================ dropout
def test_keep_prob_one_equals_an_all_ones_mask_and_training_false_turns_dropout_off():
    rng = _rng("ln-drop")
    a = _cell(rng, keep=1.0, fb=0.4)
    b = R.LayerNormBasicLSTMCell(3, forget_bias=0.4, dropout_keep_prob=0.5, input_size=2, dtype=F64)
    b.set_params(a.params)
    x = rng.standard_normal((3, 4, 2))
    b.masks, b.replay = np.ones((4, 3, 3)), True
    ya, sa = npl.nn.dynamic_rnn(a, x)
    yb, sb = npl.nn.dynamic_rnn(b, x)
    assert np.array_equal(ya, yb) and np.array_equal(sa.c, sb.c)
    b.replay = False
    yd, _ = npl.nn.dynamic_rnn(b, x)
    assert not np.allclose(yd, ya)
    m = b.masks
    assert m.shape == (4, 3, 3) and set(np.unique(m)) <= {0.0, 2.0}
    b.training = False
    assert np.array_equal(npl.nn.dynamic_rnn(b, x)[0], ya)


def test_masks_are_bernoulli_scaled_and_seeded():
    c1 = R.LayerNormBasicLSTMCell(64, dropout_keep_prob=0.7, dropout_prob_seed=5, input_size=2)
    c2 = R.LayerNormBasicLSTMCell(64, dropout_keep_prob=0.7, dropout_prob_seed=5, input_size=2)
    x = np.ones((50, 40, 2), F32)
    npl.nn.dynamic_rnn(c1, x)
    npl.nn.dynamic_rnn(c2, x)
    m = c1.masks
    assert m.dtype == F32 and np.array_equal(m, c2.masks)
    kept = (m > 0).mean()
    assert abs(kept - 0.7) < 0.01 and np.allclose(m[m > 0], 1 / 0.7)


def test_replay_checks_the_masks():
    c = R.LayerNormBasicLSTMCell(3, dropout_keep_prob=0.5, input_size=2, dtype=F64)
    c.replay = True
    assert_raises_naming(ValueError, ["replay", "masks"], npl.nn.dynamic_rnn, c, np.ones((2, 4, 2)))
    c.masks = np.ones((4, 2, 2))
    assert_raises_naming(ValueError, ["masks", "shape"], npl.nn.dynamic_rnn, c, np.ones((2, 4, 2)))
    c.masks = np.ones((4, 2, 3), F32)
    assert_raises_naming(TypeError, ["masks"], npl.nn.dynamic_rnn, c, np.ones((2, 4, 2)))


# ============================================================================ the rest
def test_parameters_names_initial_values_and_errors():
    c = R.LayerNormBasicLSTMCell(4, norm_gain=0.7, norm_shift=-0.2, input_size=3, seed=1)
    p = c.params
    assert sorted(p) == sorted(["kernel"] + ["%s/%s" % (s, v) for s in
                                             ("input", "transform", "forget", "output", "state")
                                             for v in ("gamma", "beta")])
    assert p["kernel"].shape == (7, 16) and np.all(p["state/gamma"] == F32(0.7))
    assert np.all(p["output/beta"] == F32(-0.2))
    c2 = R.LayerNormBasicLSTMCell(4, layer_norm=False, input_size=3, seed=1)
    assert sorted(c2.params) == ["bias", "kernel"]
    lim = np.sqrt(6 / 32)                 # get_variable's default: glorot uniform for the bias too
    assert 0 < np.abs(c2.params["bias"]).max() <= lim
    assert c.state_size == S(4, 4) and c.output_size == 4
    assert_raises_naming(ValueError, ["dropout_keep_prob"], R.LayerNormBasicLSTMCell, 3, 1.0, None,
                         None, True, 1.0, 0.0, 1.5)
    assert_raises_naming(TypeError, ["dropout_keep_prob"], R.LayerNormBasicLSTMCell, 3, 1.0, None,
                         None, True, 1.0, 0.0, "x")
    assert_raises_naming(TypeError, ["forget_bias"], R.LayerNormBasicLSTMCell, 3, "a")
    assert_raises_naming(TypeError, ["state", "LSTMStateTuple"], npl.nn.dynamic_rnn, c,
                         np.ones((2, 3, 3), F32), None, np.ones((2, 4), F32))
    with pytest.raises(TypeError, match="no Keras or PyTorch"):
        convert.to_keras(c)


def test_checkpoint_round_trip_and_traceless_long_pass(tmp_path):
    rng = _rng("ln-ckpt")
    a = _cell(rng)
    path = str(tmp_path / "ln.npz")
    npl.checkpoint.save(path, a.params)
    b = R.LayerNormBasicLSTMCell(3, forget_bias=a.forget_bias, input_size=2, dtype=F64)
    npl.checkpoint.restore(path, b.params)
    x = rng.standard_normal((2, 150, 2))                 # > INFERENCE_CHUNK: run in chunks
    ya, sa = npl.nn.dynamic_rnn(a, x, sequence_length=[150, 70])
    yb, sb, _ = npl.nn.dynamic_rnn(b, x, sequence_length=[150, 70], return_trace=True)
    assert np.array_equal(ya, yb) and np.array_equal(sa.h, sb.h)
    tfv = convert.to_tf_variables(a)
    assert convert.from_tf_variables(tfv, R.LayerNormBasicLSTMCell(3)).keys() == a.params.keys()


_STAND_IN_SCRIPT = r"""
import numpy as np, npl
R = npl.rnn
rng = np.random.default_rng(0)
def make():
    return R.MultiRNNCell([R.LayerNormBasicLSTMCell(4, forget_bias=0.3),
                           R.LayerNormBasicLSTMCell(3, layer_norm=False, dropout_keep_prob=0.6)]).build(3, np.float64)
host = make()
vals = {k: rng.uniform(-1, 1, v.shape) for k, v in host.params.items()}
host.set_params(vals)
mask = (rng.random((5, 3, 3)) < 0.6) / 0.6
host.cells[1].masks, host.cells[1].replay = mask, True
x, dy = rng.standard_normal((3, 5, 3)), rng.standard_normal((3, 5, 3))
o, s, tr = npl.nn.dynamic_rnn(host, x, sequence_length=[5, 0, 2], return_trace=True)
dx = tr.backward(dy, None)[0]
dev = make().to_device("cupy")
dev.set_params(vals)
dev.cells[1].masks, dev.cells[1].replay = npl.to_device(mask, "cupy"), True
o2, s2, tr2 = npl.nn.dynamic_rnn(dev, npl.to_device(x, "cupy"), sequence_length=[5, 0, 2],
                                 return_trace=True)
dx2 = tr2.backward(npl.to_device(dy, "cupy"), None)[0]
assert type(o2).__module__.startswith("cupy") and type(dx2).__module__.startswith("cupy")
errs = [abs(npl.to_numpy(o2) - o).max(), abs(npl.to_numpy(dx2) - dx).max()]
errs += [abs(npl.to_numpy(dev.grads[k]) - g).max() for k, g in host.grads.items()]
assert max(errs) < 1e-12, errs
print("ok", max(errs))
"""


def test_on_the_cupy_stand_in():
    """The cell's array code on CuPy arrays (tests/fake_cupy, which refuses hidden host copies
    and device mixing): the NumPy run's numbers (float64), a stack with replayed dropout."""
    run_on_cupy_stand_in(_STAND_IN_SCRIPT)


def test_the_dropout_switches_reach_the_cell():
    """The cell's dropout is switched as a DropoutWrapper's: Sequential(training=False) and
    npl.train.evaluate turn it off (the result equals the cell with training = False, a closed
    form: no mask), and gradcheck_cell replays masks it draws itself, so finite differences of
    a dropout cell pass without setting replay by hand."""
    rng = np.random.default_rng(11)
    cell = R.LayerNormBasicLSTMCell(3, dropout_keep_prob=0.5, dropout_prob_seed=1, dtype=np.float64)
    inner = R.GRUCell(3, dtype=np.float64)
    stack = R.DropoutWrapper(R.MultiRNNCell([cell, inner]), output_keep_prob=0.5, seed=2)
    assert npl.layers.dropout_cells(stack) == [stack, cell]
    model = npl.layers.Sequential([npl.layers.RNN(stack, output="last"), npl.layers.Dense(2)])
    x = rng.standard_normal((4, 5, 2))
    off = model(x, training=False)
    assert cell.training and stack.training                      # restored
    cell.training = stack.training = False
    want = model(x)
    cell.training = stack.training = True
    np.testing.assert_array_equal(off, want)
    assert not np.allclose(model(x), want)                       # dropout is on in training
    lone = npl.layers.RNN(cell, output="last")
    y3 = rng.standard_normal((4, 3))
    loss = npl.train.evaluate(lone, "mse", x, y3)
    cell.training = False
    np.testing.assert_allclose(loss, np.mean((lone(x) - y3) ** 2), rtol=1e-12)
    cell.training = True
    rep = npl.gradcheck.gradcheck_cell(cell, x, sequence_length=[5, 0, 2, 3])
    assert rep.passed, rep
    assert cell.replay is False                                  # the original is untouched


def test_inspect_names_the_gates():
    """npl.inspect opens the cell's trace: the gates, c and h of every step against the
    equations (N1)-(N8) written out in NumPy, and d_gates sums to the kernel's gradient."""
    rng = np.random.default_rng(12)
    cell = R.LayerNormBasicLSTMCell(3, forget_bias=0.7, input_size=2, dtype=np.float64)
    p = cell.set_params({k: rng.standard_normal(v.shape) for k, v in cell.params.items()}).params
    x = rng.standard_normal((2, 3, 2))
    c, h = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    out, st, tr = npl.nn.dynamic_rnn(cell, x, initial_state=npl.LSTMStateTuple(c, h),
                                     return_trace=True)
    insp = npl.inspect.inspect_trace(tr).layer(0)
    assert insp.gate_names == ("i", "j", "f", "o") and insp.has_cell_state

    def ln(v, s):
        return p[s + "/gamma"] * (v - v.mean(1, keepdims=True)) / np.sqrt(v.var(1, keepdims=True) + 1e-12) \
            + p[s + "/beta"]
    sig = lambda v: 1 / (1 + np.exp(-v))                                 # noqa: E731
    for t in range(3):
        a = np.split(np.concatenate([x[:, t], h], 1) @ p["kernel"], 4, axis=1)
        n = [ln(v, s) for v, s in zip(a, ["input", "transform", "forget", "output"])]
        g = {"i": sig(n[0]), "j": np.tanh(n[1]), "f": sig(n[2] + 0.7), "o": sig(n[3])}
        for k in g:
            np.testing.assert_allclose(insp.gates()[k][t], g[k], rtol=1e-12, atol=1e-12)
        c = ln(g["f"] * c + g["i"] * g["j"], "state")
        h = np.tanh(c) * g["o"]
        np.testing.assert_allclose(insp.c[t], c, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(insp.h[t], h, rtol=1e-12, atol=1e-12)
    tr.backward(np.ones_like(out), None)
    dG = np.concatenate([insp.d_gates()[k] for k in ("i", "j", "f", "o")], axis=2)   # [T, B, 4H]
    XH = np.concatenate([insp.x, np.concatenate([insp.h0[None], insp.h[:-1]])], axis=2)
    np.testing.assert_allclose(np.einsum("tbi,tbg->ig", XH, dG), cell.grads["kernel"], rtol=1e-12,
                               atol=1e-12)


def test_layer_norm_must_be_a_bool():
    assert_raises_naming(TypeError, ["layer_norm", "'no'"], R.LayerNormBasicLSTMCell, 3, 1.0, None,
                         None, "no")
