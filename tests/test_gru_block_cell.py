"""npl.rnn.GRUBlockCell and GRUBlockCellV2: tf.contrib.rnn's fused GRU, TensorFlow's GRUBlockCell op.

The TF1 reference is TF 1.15's contrib/rnn/python/ops/gru_ops.py written out for TF2's
``tf.compat.v1`` (tf.contrib is gone): a LayerRNNCell named "gru_cell" whose build creates the
variables as 1.15's does (names, shapes, the bias initialisers it gives, the layer default for the
kernels) and whose call runs TF's op, ``tf.raw_ops.GRUBlockCell``; its gradient is 1.15's
``_GRUBlockCellGrad``: ``tf.raw_ops.GRUBlockCellGrad`` plus the weight gradients that wrapper adds.

* Live TF1 ``dynamic_rnn`` over that cell (TF's op at every step, TF's sequence_length masking),
  float32, random weights, biases, initial states and unsorted lengths with a zero: outputs, final
  state and ``tf.gradients`` of inputs, initial state and every variable, on each of npl's passes
  (Python loop, the C loops' wide and narrow forms, the trace-less ring), both classes.
* One step against the raw ops themselves (GRUBlockCell's r, u, c and h; GRUBlockCellGrad).
* Float64 finite differences (npl.gradcheck): unsorted lengths with a zero, batch 1, T = 1, a
  MultiRNNCell, a DropoutWrapper.
* TF 1.15's signature, variable names, initialisers and the num_units / cell_size rule.
* Checkpoints: written by the live TF1 graph's Saver (its variables named by 1.15's build) and
  loaded into npl untouched, and back; npl.convert's TF dicts, Keras GRU(reset_after=False)
  (a live Keras layer is the reference), npl.checkpoint with an optimizer, npl.inspect, the
  bidirectional functions, the CuPy stand-in.
"""
import inspect
import json
import os

import numpy as np
import pytest

import npl
import npl.cells
from npl import convert
from npl.kernels import cpu
from helpers import assert_raises_naming, flatten, randomize_params, run_on_cupy_stand_in

R = npl.rnn
CLASSES = [R.GRUBlockCell, R.GRUBlockCellV2]
BLOCK_NAMES = ("w_ru", "b_ru", "w_c", "b_c")
V2_NAMES = ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias")
NAMES = {R.GRUBlockCell: BLOCK_NAMES, R.GRUBlockCellV2: V2_NAMES}


def _random(cell, rng, scale=0.6):
    cell.set_params({k: rng.uniform(-scale, scale, v.shape).astype(v.dtype) for k, v in cell.params.items()})
    return cell


# ------------------------------------------------------------------ TF 1.15's cells, for TF2
def _tf115(tf):
    """{npl class: TF1 class}: GRUBlockCell and GRUBlockCellV2 as TF 1.15 defines them, on TF2's
    tf.compat.v1 layers (1.15's build calls add_variable, the alias of add_weight used here),
    and 1.15's gradient for the op (TF2 registers none)."""
    cache = getattr(_tf115, "cache", None)
    if cache is not None:
        return cache
    v1 = tf.compat.v1
    from tensorflow.python.framework import ops
    try:
        ops._gradient_registry.lookup("GRUBlockCell")
    except LookupError:                           # TF 1.15's _GRUBlockCellGrad
        @tf.RegisterGradient("GRUBlockCell")
        def _grad(op, *grad):
            x, h_prev, w_ru, w_c, b_ru, b_c = op.inputs
            r, u, c, _ = op.outputs
            d_x, d_h_prev, d_c_bar, d_r_bar_u_bar = tf.raw_ops.GRUBlockCellGrad(
                x=x, h_prev=h_prev, w_ru=w_ru, w_c=w_c, b_ru=b_ru, b_c=b_c, r=r, u=u, c=c, d_h=grad[3])
            x_h_prev = tf.concat([x, h_prev], 1)
            x_h_prevr = tf.concat([x, h_prev * r], 1)
            return (d_x, d_h_prev, tf.matmul(x_h_prev, d_r_bar_u_bar, transpose_a=True),
                    tf.matmul(x_h_prevr, d_c_bar, transpose_a=True),
                    tf.reduce_sum(d_r_bar_u_bar, 0), tf.reduce_sum(d_c_bar, 0))
    layer_cell = v1.nn.rnn_cell.GRUCell.__mro__[1]          # LayerRNNCell

    class GRUBlockCell(layer_cell):
        names = BLOCK_NAMES

        def __init__(self, num_units=None, cell_size=None, reuse=None, name="gru_cell"):
            super().__init__(_reuse=reuse, name=name)
            if (cell_size is None) == (num_units is None):
                raise ValueError("Exactly one of num_units or cell_size must be provided.")
            self._cell_size = num_units if num_units is not None else cell_size

        @property
        def state_size(self):
            return self._cell_size

        @property
        def output_size(self):
            return self._cell_size

        def build(self, input_shape):
            I, H = int(input_shape[-1]), self._cell_size
            gk, gb, ck, cb = self.names
            self._w_ru = self.add_weight(gk, [I + H, 2 * H])
            self._b_ru = self.add_weight(gb, [2 * H], initializer=v1.constant_initializer(1.0))
            self._w_c = self.add_weight(ck, [I + H, H])
            self._b_c = self.add_weight(cb, [H], initializer=v1.constant_initializer(0.0))
            self.built = True

        def call(self, inputs, h_prev):
            new_h = tf.raw_ops.GRUBlockCell(x=inputs, h_prev=h_prev, w_ru=self._w_ru, w_c=self._w_c,
                                            b_ru=self._b_ru, b_c=self._b_c)[3]
            return new_h, new_h

    class GRUBlockCellV2(GRUBlockCell):
        names = V2_NAMES

    _tf115.cache = {R.GRUBlockCell: GRUBlockCell, R.GRUBlockCellV2: GRUBlockCellV2}
    return _tf115.cache


def _tf_run(tf, tf_cell, x, h0, lengths, w_out, w_state, values=None, ckpt=None, save=None):
    """Live TF1: dynamic_rnn(tf_cell) on float32 inputs; the variables set to ``values`` (npl name
    -> array, relative to the cell) or restored from ``ckpt``; returns outputs, final state, the
    gradients of <w_out, outputs> + <w_state, state> (x, h0, {TF variable name: grad}) and the
    variables' values, and with ``save`` the checkpoint written there."""
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        xt, ht = tf.constant(x), tf.constant(h0)
        out, st = v1.nn.dynamic_rnn(tf_cell, xt, sequence_length=tf.constant(lengths),
                                    initial_state=ht)
        loss = tf.reduce_sum(out * w_out) + tf.reduce_sum(st * w_state)
        tvars = v1.trainable_variables()
        grads = tf.gradients(loss, [xt, ht] + tvars)
        saver = v1.train.Saver()
        if ckpt is not None:
            saver.restore(sess, ckpt)
        else:
            sess.run(v1.global_variables_initializer())
        if values is not None:
            for v in tvars:
                key = next(k for k in values if v.op.name.endswith("/" + k))
                sess.run(v.assign(values[key]))
        res = sess.run([out, st] + grads + tvars)
        path = saver.save(sess, save, write_meta_graph=False) if save else None
    names = [v.op.name for v in tvars]
    n = len(tvars)
    return (res[0], res[1], res[2], res[3], dict(zip(names, res[4:4 + n])),
            dict(zip(names, res[4 + n:])), path)


def _spy(monkeypatch):
    """Counts the C loops' GRU calls and the trace-less passes that ran."""
    calls = {"forward": 0, "backward": 0, "ring": 0}
    for name, key in (("gru_forward_seq", "forward"), ("gru_backward_seq", "backward")):
        real = getattr(cpu, name)

        def counted(*a, _real=real, _key=key, **k):
            calls[_key] += 1
            return _real(*a, **k)
        monkeypatch.setattr(cpu, name, counted)
    real_infer = npl.cells.GRUCell._infer_seq

    def infer(self, *a):
        out = real_infer(self, *a)
        calls["ring"] += out is not None
        return out
    monkeypatch.setattr(npl.cells.GRUCell, "_infer_seq", infer)
    return calls


PATHS = {  # name: (B, T, C loops used); lengths are unsorted with a zero
    "python": (4, 6, False),
    "batch1": (1, 5, False),
    "c_wide": (16, 7, True),
    "c_narrow": (3, 12, True),
}


@pytest.mark.tf
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_dynamic_rnn_and_gradients_equal_tf1_with_tfs_op(tf, monkeypatch, cls, path):
    B, T, c_loops = PATHS[path]
    if c_loops and not cpu.sequence_loops():
        pytest.skip("the C sequence loops are not built here (no C compiler)")
    rng = np.random.default_rng([len(path), T, B, len(cls.__name__)])
    I, H = 3, 5
    cell = _random(cls(H, input_size=I), rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    lengths = rng.integers(0, T + 1, B)
    lengths[0] = 0 if B > 1 else T - 2
    if B > 2:
        lengths[1] = T
    w_out = rng.standard_normal((B, T, H)).astype(np.float32)
    w_st = rng.standard_normal((B, H)).astype(np.float32)
    out_t, st_t, dx_t, dh0_t, dvars_t, vars_t, _ = _tf_run(tf, _tf115(tf)[cls](H), x, h0, lengths,
                                                           w_out, w_st, values=cell.params)
    assert sorted(vars_t) == sorted("rnn/gru_cell/" + n for n in NAMES[cls])
    calls = _spy(monkeypatch)
    out, st, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=h0,
                                     return_trace=True)
    dx, dh0 = tr.backward(w_out, w_st)
    assert (calls["forward"] > 0, calls["backward"] > 0) == (c_loops, c_loops), calls
    tol = dict(rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(out, out_t, **tol)
    np.testing.assert_allclose(st, st_t, **tol)
    np.testing.assert_allclose(dx, dx_t, **tol)
    np.testing.assert_allclose(dh0, dh0_t, **tol)
    for name, g in cell.grads.items():
        np.testing.assert_allclose(g, dvars_t["rnn/gru_cell/" + name], rtol=2e-5, atol=2e-5, err_msg=name)
    out2, st2 = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=h0)   # no trace
    np.testing.assert_allclose(out2, out_t, **tol)
    np.testing.assert_allclose(st2, st_t, **tol)


@pytest.mark.tf
@pytest.mark.skipif(not cpu.sequence_loops(), reason="the C sequence loops are not built here")
def test_traceless_ring_equals_tf1(tf, monkeypatch):
    """The forward that keeps no trace runs on the C loops in a ring of a few steps
    (npl.cells.INFERENCE_RING_BYTES, here 7 steps of a 40-step sequence)."""
    rng = np.random.default_rng(40)
    B, T, I, H = 16, 40, 3, 4
    cell = _random(R.GRUBlockCell(H, input_size=I), rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    lengths = rng.integers(0, T + 1, B)
    lengths[:2] = 0, T
    zeros = np.zeros((B, T, H), np.float32)
    out_t, st_t = _tf_run(tf, _tf115(tf)[R.GRUBlockCell](H), x, h0, lengths, zeros, zeros[:, 0],
                          values=cell.params)[:2]
    monkeypatch.setattr(npl.cells, "INFERENCE_RING_BYTES", 7 * 3 * H * B * 4)
    calls = _spy(monkeypatch)
    out, st = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=h0)
    assert calls["ring"] == 1 and calls["forward"] == -(-T // 7), calls
    np.testing.assert_allclose(out, out_t, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(st, st_t, rtol=2e-5, atol=2e-6)


@pytest.mark.tf
@pytest.mark.parametrize("B", [1, 5])
def test_one_step_equals_the_raw_ops(tf, B):
    """One step: npl's r, u, candidate (the trace's gates) and h against tf.raw_ops.GRUBlockCell;
    its backward against tf.raw_ops.GRUBlockCellGrad fed the op's own r, u, c (d_x, d_h_prev, and
    the weight gradients as TF 1.15's gradient function forms them from d_r_bar_u_bar, d_c_bar)."""
    rng = np.random.default_rng(B)
    I, H = 4, 3
    cell = _random(R.GRUBlockCell(H, input_size=I), rng, 0.9)
    p = cell.params
    x = rng.standard_normal((B, I)).astype(np.float32)
    h = rng.standard_normal((B, H)).astype(np.float32)
    d_out, d_state = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
    w = dict(w_ru=p["w_ru"], w_c=p["w_c"], b_ru=p["b_ru"], b_c=p["b_c"])
    r, u, c, h_new = (a.numpy() for a in tf.raw_ops.GRUBlockCell(x=x, h_prev=h, **w))
    y, h1, tr = cell(x, h, return_trace=True)
    gates = npl.inspect.inspect_trace(tr).layer(0)
    np.testing.assert_allclose(h1, h_new, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(y, h1)
    for name, want in (("r", r), ("u", u), ("candidate", c)):
        np.testing.assert_allclose(gates.gate(name)[0], want, rtol=1e-6, atol=1e-6, err_msg=name)
    dx, dh = tr.backward(d_out, d_state)
    d_x, d_h_prev, d_c_bar, d_rbub = (a.numpy() for a in tf.raw_ops.GRUBlockCellGrad(
        x=x, h_prev=h, r=r, u=u, c=c, d_h=d_out + d_state, **w))
    np.testing.assert_allclose(dx, d_x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dh, d_h_prev, rtol=1e-5, atol=1e-6)
    want = {"w_ru": np.concatenate([x, h], 1).T @ d_rbub, "b_ru": d_rbub.sum(0),
            "w_c": np.concatenate([x, h * r], 1).T @ d_c_bar, "b_c": d_c_bar.sum(0)}
    for name, g in want.items():
        np.testing.assert_allclose(cell.grads[name], g, rtol=1e-5, atol=1e-6, err_msg=name)


# ------------------------------------------------------------------ finite differences
GRADCHECK = {  # name: (make cell, B, T, lengths)
    "lengths": (lambda: R.GRUBlockCell(3), 4, 5, [5, 0, 2, 3]),
    "batch1": (lambda: R.GRUBlockCellV2(3), 1, 4, None),
    "T1": (lambda: R.GRUBlockCell(cell_size=2), 3, 1, [1, 0, 1]),
    "stack": (lambda: R.MultiRNNCell([R.GRUBlockCell(3), R.GRUBlockCellV2(2), R.BasicLSTMCell(2)]),
              4, 5, [5, 0, 2, 3]),
    "dropout": (lambda: R.DropoutWrapper(R.GRUBlockCell(3), input_keep_prob=0.7,
                                         state_keep_prob=0.6, seed=1), 3, 4, [4, 1, 3]),
}


@pytest.mark.parametrize("case", sorted(GRADCHECK))
def test_gradients_equal_finite_differences(case):
    make, B, T, lengths = GRADCHECK[case]
    rng = np.random.default_rng(len(case))
    cell = make()
    cell.build(2, np.float64)
    randomize_params(cell, rng)
    x = rng.standard_normal((B, T, 2))
    report = npl.gradcheck.gradcheck_cell(cell, x, sequence_length=None if lengths is None
                                          else np.array(lengths))
    assert report.passed, report
    checked = {c.name for c in report}
    assert set(cell.params) <= checked, (sorted(cell.params), sorted(checked))


# ------------------------------------------------------------------ TF 1.15's API
def test_tf_1_15_signature_names_and_initialisers():
    """TF 1.15's contrib/rnn/python/ops/gru_ops.py: GRUBlockCell(num_units=None, cell_size=None,
    reuse=None, name="gru_cell"); build: w_ru [I+H, 2H], b_ru [2H] constant 1.0, w_c [I+H, H],
    b_c [H] constant 0.0, the kernels with the layer default (glorot uniform); GRUBlockCellV2:
    the same under gates/kernel, gates/bias, candidate/kernel, candidate/bias."""
    for cls in CLASSES:
        params = list(inspect.signature(cls.__init__).parameters)[1:]
        assert params[:4] == ["num_units", "cell_size", "reuse", "name"], params
        cell = cls(96)
        assert cell.name == "gru_cell"
        assert convert.tf_variable_names(cell) == {n: "rnn/gru_cell/" + n for n in NAMES[cls]}
        npl.set_random_seed(5)
        cell.build(64, np.float64)
        gk, gb, ck, cb = NAMES[cls]
        assert {k: v.shape for k, v in cell.params.items()} == {
            gk: (160, 192), gb: (192,), ck: (160, 96), cb: (96,)}
        assert np.array_equal(cell.params[gb], np.ones(192))
        assert np.array_equal(cell.params[cb], np.zeros(96))
        for k in (gk, ck):                      # U(-l, l), l = sqrt(6 / (fan_in + fan_out))
            w = cell.params[k]
            lim = np.sqrt(6.0 / sum(w.shape))
            assert np.abs(w).max() <= lim and np.abs(w).max() > lim * (1 - 20.0 / w.size)
            assert abs(w.var() / (lim ** 2 / 3) - 1) < 5 * np.sqrt(0.8 / w.size)
    stack = R.MultiRNNCell([R.GRUBlockCell(3), R.GRUBlockCellV2(2)])
    assert sorted(convert.tf_variable_names(stack).values()) == sorted(
        ["rnn/multi_rnn_cell/cell_0/gru_cell/" + n for n in BLOCK_NAMES]
        + ["rnn/multi_rnn_cell/cell_1/gru_cell/" + n for n in V2_NAMES])


@pytest.mark.tf
def test_the_tf1_reference_creates_what_npl_creates(tf):
    """The TF1 reference cell's own variables (names, shapes, the initial biases, glorot-uniform
    kernels within their limit) are npl's: read from the live graph."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 64)).astype(np.float32)
    for cls in CLASSES:
        H = 96
        vars_t = _tf_run(tf, _tf115(tf)[cls](H), x, np.zeros((2, H), np.float32), np.array([3, 1]),
                         np.zeros((2, 3, H), np.float32), np.zeros((2, H), np.float32))[5]
        cell = cls(H, input_size=64)
        assert {k: v.shape for k, v in vars_t.items()} == {
            "rnn/gru_cell/" + k: v.shape for k, v in cell.params.items()}
        gk, gb, ck, cb = NAMES[cls]
        np.testing.assert_array_equal(vars_t["rnn/gru_cell/" + gb], cell.params[gb])
        np.testing.assert_array_equal(vars_t["rnn/gru_cell/" + cb], cell.params[cb])
        for k in (gk, ck):
            w = vars_t["rnn/gru_cell/" + k]
            lim = np.sqrt(6.0 / sum(w.shape))
            assert np.abs(w).max() <= lim and np.abs(w).max() > 0.99 * lim
            assert abs(w.var() / (lim ** 2 / 3) - 1) < 5 * np.sqrt(0.8 / w.size)


def test_num_units_or_cell_size_exactly_one():
    for cls in CLASSES:
        assert cls(cell_size=4).num_units == 4 and cls(num_units=4).num_units == 4
        assert cls(4).state_size == cls(4).output_size == 4
        for kw in ({}, {"num_units": 3, "cell_size": 3}):
            assert_raises_naming(ValueError, ["exactly one of num_units and cell_size",
                                              "num_units=%r" % kw.get("num_units"),
                                              "cell_size=%r" % kw.get("cell_size")], lambda: cls(**kw))
        assert_raises_naming(ValueError, ["cell_size must be a positive integer", "0"],
                             lambda: cls(cell_size=0))
        assert_raises_naming(ValueError, ["num_units must be a positive integer", "2.5"],
                             lambda: cls(2.5))


def test_set_params_errors_name_the_parameter():
    cell = R.GRUBlockCell(3, input_size=2)
    good = {k: np.zeros(v.shape, np.float32) for k, v in cell.params.items()}
    before = {k: v.copy() for k, v in cell.params.items()}
    assert_raises_naming(ValueError, ["unknown parameter names", "'gates/kernel'", "'w_ru'", "GRUBlockCell"],
                         cell.set_params, dict(good, **{"gates/kernel": good.pop("w_ru")}))
    good = {k: np.zeros(v.shape, np.float32) for k, v in cell.params.items()}
    assert_raises_naming(ValueError, ["'w_c' must have shape (5, 3)", "(5, 6)"],
                         cell.set_params, dict(good, w_c=np.zeros((5, 6))))
    assert_raises_naming(ValueError, ["missing parameters", "'b_c'"], cell.set_params,
                         {k: v for k, v in good.items() if k != "b_c"})
    assert_raises_naming(ValueError, ["needs 'w_ru' to infer the input size"],
                         R.GRUBlockCell(3).set_params, {"b_ru": np.ones(6)})
    assert_raises_naming(ValueError, ["'b_ru' must have shape (6,)", "(3,)"],
                         R.GRUBlockCell(3).set_params, dict(good, b_ru=np.ones(3)))
    assert_raises_naming(ValueError, ["unknown parameter names", "'w_ru'", "GRUBlockCellV2"],
                         R.GRUBlockCellV2(3, input_size=2).set_params, good)
    for k, v in cell.params.items():
        np.testing.assert_array_equal(v, before[k])
    unbuilt = R.GRUBlockCell(3).set_params(dict(good, w_ru=np.ones((7, 6)), w_c=np.ones((7, 3))))
    assert unbuilt.input_size == 4


# ------------------------------------------------------------------ checkpoints and converters
@pytest.mark.tf
@pytest.mark.parametrize("stacked", [False, True])
def test_tf1_checkpoint_loads_untouched_and_back(tf, tmp_path, stacked):
    """A checkpoint that live TF1's Saver writes for TF 1.15's cells (variables named by their
    build, with random values) loads into npl's cells with load_tf_checkpoint, unbuilt, and npl's
    outputs are TF's; npl's save_tf_checkpoint is restored by TF's Saver with the same outputs."""
    rng = np.random.default_rng(int(stacked))
    B, T, I = 4, 6, 3
    tf_cls = _tf115(tf)
    if stacked:
        make_tf = lambda: tf.compat.v1.nn.rnn_cell.MultiRNNCell(                 # noqa: E731
            [tf_cls[R.GRUBlockCell](4), tf_cls[R.GRUBlockCellV2](cell_size=3)])
        cell = R.MultiRNNCell([R.GRUBlockCell(4), R.GRUBlockCellV2(cell_size=3)])
    else:
        make_tf, cell = (lambda: tf_cls[R.GRUBlockCell](4)), R.GRUBlockCell(4)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = np.array([6, 0, 3, 5])

    def run_tf(**kw):
        v1 = tf.compat.v1
        g = tf.Graph()
        with g.as_default(), v1.Session(graph=g) as sess:
            c = make_tf()
            out, st = v1.nn.dynamic_rnn(c, tf.constant(x), sequence_length=tf.constant(lengths),
                                        dtype=tf.float32)
            tvars = v1.trainable_variables()
            saver = v1.train.Saver()
            if "restore" in kw:
                saver.restore(sess, kw["restore"])
            else:
                sess.run(v1.global_variables_initializer())
                for v in tvars:
                    sess.run(v.assign(rng.uniform(-0.7, 0.7, v.shape.as_list()).astype(np.float32)))
            res = sess.run([out, tf.nest.flatten(st)])
            path = saver.save(sess, str(tmp_path / "tf")) if "restore" not in kw else None
            return res, path, sorted(v.op.name for v in tvars)
    (out_t, st_t), ckpt, names = run_tf()
    assert names == sorted(convert.tf_variable_names(cell).values())
    values = convert.load_tf_checkpoint(ckpt, cell)
    assert sorted(values) == sorted(cell.params)
    out, st = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, dtype=np.float32)
    np.testing.assert_allclose(out, out_t, rtol=2e-5, atol=2e-6)
    for a, b in zip(st if stacked else [st], st_t):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    randomize_params(cell, rng)                              # other weights, written by npl
    out, _ = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, dtype=np.float32)
    back = convert.save_tf_checkpoint(cell, str(tmp_path / "npl"))
    (out_b, _), _, _ = run_tf(restore=back)
    np.testing.assert_allclose(out, out_b, rtol=2e-5, atol=2e-6)
    assert not np.allclose(out_b, out_t)
    with pytest.raises(ValueError, match="found no GRUCell variables"):
        convert.from_tf_variables(convert.read_tf_checkpoint(ckpt), R.GRUCell(4))


def test_tf_variable_dicts_round_trip():
    rng = np.random.default_rng(2)
    for make in (lambda: R.GRUBlockCell(3), lambda: R.GRUBlockCellV2(3),
                 lambda: R.MultiRNNCell([R.GRUBlockCell(3), R.DropoutWrapper(R.GRUBlockCellV2(2))])):
        src = make()
        src.build(4, np.float64)
        randomize_params(src, rng)
        tf_vars = convert.to_tf_variables(src, scope="bidirectional_rnn/fw")
        dst = make()
        dst.set_params(convert.from_tf_variables(dict(tf_vars, global_step=np.float64(3)), dst))
        assert dst.params.keys() == src.params.keys()
        for k, v in src.params.items():
            np.testing.assert_array_equal(dst.params[k], v)
    # GRUBlockCell's names are not GRUCell's: neither set loads into the other cell
    with pytest.raises(ValueError, match="found no GRUBlockCell variables"):
        convert.from_tf_variables(convert.to_tf_variables(R.GRUCell(3, input_size=2)), R.GRUBlockCell(3))


@pytest.mark.tf
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_keras_gru_reset_after_false_is_the_same_function(tf, cls):
    """to_keras sets a live Keras GRU(reset_after=False) whose outputs are npl's; from_keras gives
    the weights back; torch.nn.GRU is refused with its reason."""
    rng = np.random.default_rng(7)
    B, T, I, H = 3, 5, 4, 6
    cell = _random(cls(H, input_size=I), rng)
    layer = tf.keras.layers.GRU(H, reset_after=False, return_sequences=True, return_state=True)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    xt, h0t = tf.constant(x), tf.constant(h0)
    layer(xt, initial_state=[h0t])
    convert.to_keras(cell, layer=layer)
    out_k, st_k = (a.numpy() for a in layer(xt, initial_state=[h0t]))
    out, st = npl.nn.dynamic_rnn(cell, x, initial_state=h0)
    np.testing.assert_allclose(out, out_k, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(st, st_k, rtol=2e-5, atol=2e-6)
    back = convert.from_keras(layer, cls(H))
    assert list(back) == list(NAMES[cls])
    for k, v in back.items():
        np.testing.assert_allclose(v, cell.params[k], rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="torch.nn.GRU is not equivalent"):
        convert.to_torch(cell)


def test_npl_checkpoint_with_an_optimizer_round_trips(tmp_path):
    """npl.checkpoint keys are the TF names (``.../w_ru``, ``.../w_ru/Adam``) and restore gives
    the same next training step."""
    rng = np.random.default_rng(3)
    model = R.MultiRNNCell([R.GRUBlockCell(3), R.GRUBlockCellV2(2)])
    model.build(2, np.float64)
    randomize_params(model, rng)
    x = rng.standard_normal((2, 4, 2))
    opt = npl.train.AdamOptimizer(0.01)

    def step():
        model.zero_grad()
        out, _, tr = npl.nn.dynamic_rnn(model, x, return_trace=True)
        tr.backward(out, None)
        opt.update(model.params, model.grads)
    step()
    path = npl.checkpoint.save(str(tmp_path / "m.npz"), model.params, opt)
    assert "cell_0/w_ru/Adam" in dict(npl.checkpoint.list_variables(path))
    saved = {k: v.copy() for k, v in model.params.items()}
    step()
    after = {k: v.copy() for k, v in model.params.items()}
    randomize_params(model, rng)
    npl.checkpoint.restore(path, model.params, opt)
    for k, v in saved.items():
        np.testing.assert_array_equal(model.params[k], v)
    step()
    for k, v in after.items():
        np.testing.assert_array_equal(model.params[k], v)


# ------------------------------------------------------------------ around the cell
def test_inspect_gates_equal_the_equations_and_contributions_sum_to_grads():
    rng = np.random.default_rng(4)
    B, T, I, H = 3, 5, 2, 4
    cell = _random(R.GRUBlockCell(H, input_size=I, dtype=np.float64), rng)
    p = cell.params
    x, h = rng.standard_normal((B, T, I)), rng.standard_normal((B, H))
    lengths = np.array([5, 0, 3])
    out, _, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=h, return_trace=True)
    tr.record_state_grads()
    tr.backward(rng.standard_normal(out.shape), rng.standard_normal((B, H)))
    L = npl.inspect.inspect_trace(tr).layer(0)
    assert L.kind == "gru"
    sig = lambda a: 1 / (1 + np.exp(-a))                                      # noqa: E731
    for t in range(T):
        r, u = np.split(sig(np.concatenate([x[:, t], h], 1) @ p["w_ru"] + p["b_ru"]), 2, 1)  # (G1)
        c = np.tanh(np.concatenate([x[:, t], r * h], 1) @ p["w_c"] + p["b_c"])               # (G2)
        valid = (t < lengths)[:, None]
        for name, want in (("r", r), ("u", u), ("candidate", c)):
            np.testing.assert_allclose(L.gate(name)[t][valid[:, 0]], want[valid[:, 0]], rtol=1e-12)
        h = np.where(valid, u * h + (1 - u) * c, h)                                         # (G3)
    contrib = L.weight_grad_contributions()
    assert list(contrib) == list(BLOCK_NAMES)
    for k, g in cell.grads.items():
        np.testing.assert_allclose(contrib[k].sum(0), g, rtol=1e-10, atol=1e-12, err_msg=k)
    flows = npl.inspect.compare_gradient_flow(cells={"block": R.GRUBlockCell(4, seed=0)}, steps=6,
                                              weight_scale=3.0)
    assert flows["block"].gate_name == "u"


@pytest.mark.parametrize("fn", ["bidirectional_dynamic_rnn", "static_bidirectional_rnn",
                                "stack_bidirectional_dynamic_rnn"])
def test_bidirectional_functions_equal_gru_cell_with_the_same_weights(fn):
    """The same weights under GRUCell's names (GRUCell is checked against TF elsewhere) give the
    same outputs, states and gradients in every bidirectional function."""
    rng = np.random.default_rng(len(fn))
    B, T, I = 4, 5, 3
    x = rng.standard_normal((B, T, I))
    lengths = np.array([5, 0, 2, 3])
    results = []
    for classes in ((R.GRUBlockCell, R.GRUBlockCellV2), (R.GRUCell, R.GRUCell)):
        fw, bw = classes[0](3, input_size=I, dtype=np.float64), classes[1](2, input_size=I, dtype=np.float64)
        r2 = np.random.default_rng(9)
        for c in (fw, bw):
            c.set_params({k: r2.standard_normal(v.shape) for k, v in c.params.items()})
        if fn == "bidirectional_dynamic_rnn":
            outs, states, tr = npl.nn.bidirectional_dynamic_rnn(fw, bw, x, sequence_length=lengths,
                                                                dtype=np.float64, return_trace=True)
            tr.backward(tuple(np.ones_like(o) for o in outs), None)
        elif fn == "static_bidirectional_rnn":
            outs, s_fw, s_bw, tr = npl.nn.static_bidirectional_rnn(
                fw, bw, list(x.transpose(1, 0, 2)), sequence_length=lengths, return_trace=True)
            states = (s_fw, s_bw)
            tr.backward([np.ones_like(o) for o in outs], None)
        else:
            outs, s_fw, s_bw, tr = npl.rnn.stack_bidirectional_dynamic_rnn(
                [fw], [bw], x, sequence_length=lengths, dtype=np.float64, return_trace=True)
            states = (s_fw, s_bw)
            tr.backward(np.ones_like(outs), None)
        grads = [g for c in (fw, bw) for g in c.grads.values()]
        results.append(flatten(outs) + flatten(states) + grads)
    assert len(results[0]) == len(results[1]) > 4
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_cupy_stand_in_runs_the_gpu_kernels():
    """On the CuPy stand-in (tests/fake_cupy: CuPy's refusals, npl's CUDA source run by host
    emulation) a GRUBlockCell and a stack with a V2 run forward and backward on the "device", launch
    the GRU kernels and give the NumPy run's outputs, input gradients and weight gradients."""
    import shutil
    if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the stand-in's kernels need the host emulation")
    code = r'''
import numpy as np, npl, cupy
assert getattr(cupy, "fake", False)
rng = np.random.default_rng(0)
for make in (lambda: npl.rnn.GRUBlockCell(4), lambda: npl.rnn.MultiRNNCell(
        [npl.rnn.GRUBlockCellV2(3), npl.rnn.GRUBlockCell(cell_size=4)])):
    for dt in (np.float32, np.float64):
        cell = make()
        cell.build(3, dt)
        cell.set_params({k: rng.standard_normal(v.shape).astype(dt) for k, v in cell.params.items()})
        x = rng.standard_normal((5, 6, 3)).astype(dt)
        L = np.array([6, 0, 2, 5, 3])
        d = rng.standard_normal((5, 6, 4)).astype(dt)
        o, s, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=L, return_trace=True)
        dx, _ = tr.backward(d, None)
        g = {k: v.copy() for k, v in cell.grads.items()}
        cell.zero_grad()
        cell.to_device("cupy")
        oc, sc, trc = npl.nn.dynamic_rnn(cell, npl.to_device(x, "cupy"), sequence_length=L,
                                         return_trace=True)
        dxc, _ = trc.backward(npl.to_device(d, "cupy"), None)
        assert type(oc) is cupy.ndarray and type(dxc) is cupy.ndarray
        tol = 1e-5 if dt == np.float32 else 1e-12
        assert np.allclose(oc.get(), o, rtol=tol, atol=tol) and np.allclose(dxc.get(), dx, rtol=tol, atol=tol)
        for k in g:
            assert np.allclose(cell.grads[k].get(), g[k], rtol=tol, atol=tol), k
print("ok")
'''
    log = os.path.join(os.environ.get("TMPDIR", "/tmp"), "npl_gru_block_launches_%d.json" % os.getpid())
    if os.path.exists(log):
        os.unlink(log)
    out = run_on_cupy_stand_in(code, timeout=600, NPL_FAKE_CUPY_LAUNCHES=log)
    assert out.strip() == "ok", out[-2000:]
    with open(log) as f:
        launched = json.load(f)
    os.unlink(log)
    for name in ("gru_gates_forward", "gru_state_forward", "gru_backward", "gru_reset_backward"):
        for s in ("f32", "f64"):
            assert launched.get("npl_%s_%s" % (name, s)), (name, s, launched)
