"""npl.rnn.ResidualWrapper and npl.rnn.DeviceWrapper (tf.nn.rnn_cell's, TF 1.15 semantics).

* Against live TensorFlow 1 (``tf.compat.v1`` graph + Session, float64): outputs, final states
  and ``tf.gradients`` of a random linear loss w.r.t. the inputs, every initial-state array and
  every variable, for ResidualWrapper around LSTM, BasicLSTM and GRU cells, in a 3-layer
  MultiRNNCell with residual layers 1 and 2 (GNMT's stack), with unsorted sequence lengths
  including 0, batch 1, T = 1, no lengths, under dynamic_rnn, static_rnn,
  bidirectional_dynamic_rnn and one step ``cell(x, state)``, with DeviceWrapper (TF's graph on
  "/cpu:0"), and with a custom ``residual_fn`` (TF's autograd of the same function).  The TF
  variables are loaded from ``npl.convert.to_tf_variables``, after asserting that the names the
  live graph created are exactly npl's (``tf_variable_names``).
* Around and inside DropoutWrapper: TF's cell unrolled by hand in the graph with npl's masks.
* The trace-less passes (the C loops' ring, the 64-step chunks) against the same TF reference.
* Float64 finite differences (``npl.gradcheck.gradcheck_cell``) on the same structures.
* Errors: width mismatch, a non-cell, bad device strings, residual_fn contract violations.
"""
import os

import numpy as np
import pytest

import npl
from npl import convert
from helpers import flatten, unflatten, rel_err, assert_raises_naming, randomize_params, run_on_cupy_stand_in

R = npl.rnn
TOL = 1e-9        # float64 against TF: relative to the largest value


# ------------------------------------------------------------------------------ structures
# Specs: ("lstm", H, forget_bias), ("basic_lstm", H, forget_bias), ("gru", H),
# ("res", spec), ("res_fn", spec) (custom residual_fn), ("dev", spec, device), ("multi", [specs]).

def _res_fn(i, o):                     # the custom residual, NumPy (npl) side
    return i * np.tanh(o) + o


def _res_fn_backward(i, o, d):
    t = np.tanh(o)
    return d * t, d * (i * (1 - t * t) + 1)


def make_npl(spec):
    kind = spec[0]
    if kind == "lstm":
        return R.LSTMCell(spec[1], forget_bias=spec[2])
    if kind == "basic_lstm":
        return R.BasicLSTMCell(spec[1], forget_bias=spec[2])
    if kind == "gru":
        return R.GRUCell(spec[1])
    if kind == "res":
        return R.ResidualWrapper(make_npl(spec[1]))
    if kind == "res_fn":
        return R.ResidualWrapper(make_npl(spec[1]), residual_fn=(_res_fn, _res_fn_backward))
    if kind == "dev":
        return R.DeviceWrapper(make_npl(spec[1]), spec[2])
    if kind == "multi":
        return R.MultiRNNCell([make_npl(s) for s in spec[1]])
    raise AssertionError(spec)


def make_tf(tf, spec):
    rc = tf.compat.v1.nn.rnn_cell
    kind = spec[0]
    if kind == "lstm":
        return rc.LSTMCell(spec[1], forget_bias=spec[2])
    if kind == "basic_lstm":
        return rc.BasicLSTMCell(spec[1], forget_bias=spec[2])
    if kind == "gru":
        return rc.GRUCell(spec[1])
    if kind == "res":
        return rc.ResidualWrapper(make_tf(tf, spec[1]))
    if kind == "res_fn":
        return rc.ResidualWrapper(make_tf(tf, spec[1]), residual_fn=lambda i, o: i * tf.tanh(o) + o)
    if kind == "dev":
        return rc.DeviceWrapper(make_tf(tf, spec[1]), spec[2])
    if kind == "multi":
        return rc.MultiRNNCell([make_tf(tf, s) for s in spec[1]])
    raise AssertionError(spec)


def built_cell(spec, I, rng):
    cell = make_npl(spec)
    cell.build(I, np.float64)
    randomize_params(cell, rng)
    return cell


def tf_state(tf, s):
    if isinstance(s, npl.LSTMStateTuple):
        return tf.compat.v1.nn.rnn_cell.LSTMStateTuple(tf.constant(s.c), tf.constant(s.h))
    if isinstance(s, tuple):
        return tuple(tf_state(tf, v) for v in s)
    return tf.constant(s)


def rand_like(s, rng):
    return unflatten(s, [rng.standard_normal(a.shape) for a in flatten(s)])


def rand_state(cell, B, rng):
    return rand_like(cell.zero_state(B, np.float64), rng)


# ------------------------------------------------------------------------------ the TF side
def tf_reference(tf, op, specs, cells, x, lengths, s0, dy, dst, scopes):
    """Build ``specs`` in a fresh TF1 graph, run ``op``, load npl's weights (after checking that
    the variable names are npl's) and return outputs, final states and tf.gradients of
    ``sum(dy * outputs) + sum(dst * final states)``."""
    v1 = tf.compat.v1
    g = v1.Graph()
    with g.as_default(), v1.Session() as sess:
        tcells = [make_tf(tf, s) for s in specs]
        xt = tf.constant(x)
        st0 = [tf_state(tf, s) for s in s0]
        if op == "dynamic":
            out, fin = v1.nn.dynamic_rnn(tcells[0], xt, sequence_length=lengths,
                                         initial_state=st0[0])
            outs, fins = [out], [fin]
        elif op == "static":
            ol, fin = v1.nn.static_rnn(tcells[0], tf.unstack(xt, axis=1), initial_state=st0[0],
                                       sequence_length=lengths)
            outs, fins = [tf.stack(ol, axis=1)], [fin]
        elif op == "bidi":
            (of, ob), (sf, sb) = v1.nn.bidirectional_dynamic_rnn(
                tcells[0], tcells[1], xt, sequence_length=lengths, initial_state_fw=st0[0],
                initial_state_bw=st0[1])
            outs, fins = [of, ob], [sf, sb]
        elif op == "step":
            out, fin = tcells[0](xt, st0[0])
            outs, fins = [out], [fin]
        else:
            raise AssertionError(op)
        variables = v1.global_variables()
        want = {}
        for c, sc in zip(cells, scopes):
            want.update(convert.to_tf_variables(c, sc))
        names = sorted(v.op.name for v in variables)
        assert names == sorted(want), "TF variable names %s, npl's %s" % (names, sorted(want))
        loss = tf.add_n([tf.reduce_sum(o * w) for o, w in zip(outs, dy)] +
                        [tf.reduce_sum(a * w) for a, w in zip(flatten(fins), flatten(dst))])
        s_leaves = flatten(st0)
        grads = tf.gradients(loss, [xt] + s_leaves + variables)
        for v in variables:
            v.load(want[v.op.name], sess)
        r_out, r_fin, r_g = sess.run([outs, flatten(fins), grads])
    return {"outs": r_out, "fins": r_fin, "dx": r_g[0], "ds0": r_g[1:1 + len(s_leaves)],
            "dw": dict(zip([v.op.name for v in variables], r_g[1 + len(s_leaves):]))}


def npl_run(op, cells, x, lengths, s0, dy, dst, scopes):
    for c in cells:
        c.zero_grad()
    if op == "dynamic":
        out, fin, tr = npl.nn.dynamic_rnn(cells[0], x, sequence_length=lengths,
                                          initial_state=s0[0], return_trace=True)
        dx, ds0 = tr.backward(dy[0], dst[0])
        outs, fins, ds0 = [out], [fin], [ds0]
    elif op == "static":
        T = x.shape[1]
        ol, fin, tr = npl.nn.static_rnn(cells[0], [x[:, t] for t in range(T)], initial_state=s0[0],
                                        sequence_length=lengths, return_trace=True)
        dxl, ds0 = tr.backward([dy[0][:, t] for t in range(T)], dst[0])
        outs, fins, dx, ds0 = [np.stack(ol, 1)], [fin], np.stack(dxl, 1), [ds0]
    elif op == "bidi":
        (of, ob), (sf, sb), tr = npl.nn.bidirectional_dynamic_rnn(
            cells[0], cells[1], x, sequence_length=lengths, initial_state_fw=s0[0],
            initial_state_bw=s0[1], return_trace=True)
        dx, (d_fw, d_bw) = tr.backward((dy[0], dy[1]), (dst[0], dst[1]))
        outs, fins, ds0 = [of, ob], [sf, sb], [d_fw, d_bw]
    elif op == "step":
        out, fin, tr = cells[0](x, s0[0], return_trace=True)
        dx, ds0 = tr.backward(dy[0], dst[0])
        outs, fins, ds0 = [out], [fin], [ds0]
    dw = {}
    for c, sc in zip(cells, scopes):
        names = convert.tf_variable_names(c, sc)
        for k, g in c.grads.items():       # a cell used in both directions: gradients add up
            dw[names[k]] = dw.get(names[k], 0) + g
    return {"outs": outs, "fins": flatten(fins), "dx": dx, "ds0": flatten(ds0), "dw": dw}


def compare(got, want, tol=TOL):
    errs = {}
    for k in ("outs", "fins", "ds0"):
        assert len(got[k]) == len(want[k]), k
        for j, (a, b) in enumerate(zip(got[k], want[k])):
            assert np.shape(a) == np.shape(b), (k, j)
            errs["%s[%d]" % (k, j)] = rel_err(a, b)
    errs["dx"] = rel_err(got["dx"], want["dx"])
    assert sorted(got["dw"]) == sorted(want["dw"])
    for k in want["dw"]:
        errs["dw " + k] = rel_err(got["dw"][k], want["dw"][k])
    bad = {k: e for k, e in errs.items() if not e <= tol}
    assert not bad, "relative errors above %g: %s" % (tol, bad)
    return max(errs.values())


RES_LSTM = ("res", ("lstm", 4, 0.7))
RES_GRU = ("res", ("gru", 4))
GNMT = ("multi", [("lstm", 4, -0.4), ("res", ("gru", 4)), ("res", ("basic_lstm", 4, 1.3))])

# name: (op, specs, scopes, B, T, I, lengths)
CASES = {
    "res_lstm": ("dynamic", [RES_LSTM], ["rnn"], 4, 5, 4, [3, 5, 0, 2]),
    "res_gru": ("dynamic", [RES_GRU], ["rnn"], 4, 5, 4, [2, 0, 5, 4]),
    "res_lstm_no_lengths": ("dynamic", [RES_LSTM], ["rnn"], 3, 4, 4, None),
    "res_gru_batch1": ("dynamic", [RES_GRU], ["rnn"], 1, 4, 4, [3]),
    "gnmt_stack": ("dynamic", [GNMT], ["rnn"], 4, 6, 3, [6, 0, 2, 5]),
    "gnmt_stack_T1": ("dynamic", [GNMT], ["rnn"], 3, 1, 3, [1, 0, 1]),
    "gnmt_stack_batch1": ("dynamic", [GNMT], ["rnn"], 1, 5, 3, [4]),
    "gnmt_static": ("static", [GNMT], ["rnn"], 3, 4, 3, [2, 4, 0]),
    "bidirectional": ("bidi", [("multi", [("gru", 4), RES_LSTM]), RES_GRU],
                      ["bidirectional_rnn/fw", "bidirectional_rnn/bw"], 4, 5, 4, [5, 1, 0, 3]),
    "device_stack": ("dynamic", [("dev", GNMT, "/cpu:0")], ["rnn"], 3, 4, 3, [4, 0, 2]),
    "device_inside": ("dynamic", [("multi", [("dev", ("gru", 4), "/cpu:0"),
                                             ("res", ("dev", ("lstm", 4, 0.2), "/cpu:0")),
                                             ("dev", RES_GRU, "/device:CPU:0")])],
                      ["rnn"], 3, 4, 5, [1, 4, 0]),
    "custom_residual_fn": ("dynamic", [("multi", [("gru", 4), ("res_fn", ("lstm", 4, 0.5))])],
                           ["rnn"], 3, 5, 2, [5, 0, 3]),
    "step_res_lstm": ("step", [RES_LSTM], [""], 3, 1, 4, None),
    "step_gnmt": ("step", [GNMT], [""], 2, 1, 3, None),
    "step_custom": ("step", [("res_fn", ("gru", 3))], [""], 2, 1, 3, None),
}


def _inputs(name, case):
    op, specs, scopes, B, T, I, lengths = case
    rng = np.random.default_rng([sum(map(ord, name)), B, T])
    cells = [built_cell(s, I, rng) for s in specs]
    x = rng.standard_normal((B, I) if op == "step" else (B, T, I))
    s0 = [rand_state(c, B, rng) for c in cells]
    if op == "step":
        dy = [rng.standard_normal((B, cells[0].output_size))]
    else:
        dy = [rng.standard_normal((B, T, c.output_size)) for c in cells]
    dst = [rand_state(c, B, rng) for c in cells]
    return cells, x, s0, dy, dst


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(CASES))
def test_against_tensorflow(tf, name):
    case = CASES[name]
    op, specs, scopes, B, T, I, lengths = case
    cells, x, s0, dy, dst = _inputs(name, case)
    got = npl_run(op, cells, x, lengths, s0, dy, dst, scopes)
    want = tf_reference(tf, op, specs, cells, x, lengths, s0, dy, dst, scopes)
    compare(got, want)
    if lengths is not None and op != "step":        # TF zeroes the wrapper's output past a length
        for o in got["outs"]:
            for b, L in enumerate(lengths):
                assert not o[b, L:].any()


@pytest.mark.tf
def test_variable_names_are_the_live_graphs(tf):
    """The names TF1 gives (no scope for either wrapper) are what tf_variable_names returns, for
    the wrapped structures and the same structures unwrapped."""
    v1 = tf.compat.v1
    for spec, plain in ((GNMT, ("multi", [("lstm", 4, 0), ("gru", 4), ("basic_lstm", 4, 0)])),
                        (("dev", RES_LSTM, "/cpu:0"), ("lstm", 4, 0))):
        g = v1.Graph()
        with g.as_default():
            v1.nn.dynamic_rnn(make_tf(tf, spec), tf.zeros((2, 3, 4), tf.float64), dtype=tf.float64)
            names = sorted(v.op.name for v in v1.global_variables())
        cell = make_npl(spec)
        assert sorted(convert.tf_variable_names(cell).values()) == names
        assert convert.tf_variable_names(cell) == convert.tf_variable_names(make_npl(plain))


@pytest.mark.tf
@pytest.mark.parametrize("order", ["residual_outside", "dropout_outside"])
def test_with_dropout_against_tensorflow(tf, order):
    """ResidualWrapper(DropoutWrapper(cell)) and DropoutWrapper(ResidualWrapper(cell)) (state
    dropout too): TF's plain cell unrolled in the graph with npl's masks, out_t =
    x_t + m_out * cell(m_in * x_t) and out_t = m_out * (x'_t + cell(x'_t)), x'_t = m_in * x_t."""
    v1 = tf.compat.v1
    rng = np.random.default_rng([len(order), 5])
    B, T, H = 3, 4, 4
    inner = R.LSTMCell(H, forget_bias=0.4)
    if order == "residual_outside":
        drop = R.DropoutWrapper(inner, input_keep_prob=0.7, output_keep_prob=0.8, seed=3)
        cell = R.ResidualWrapper(drop)
    else:
        drop = R.DropoutWrapper(R.ResidualWrapper(inner), input_keep_prob=0.7,
                                output_keep_prob=0.6, state_keep_prob=0.75, seed=3)
        cell = drop
    cell.build(H, np.float64)
    randomize_params(cell, rng)
    x = rng.standard_normal((B, T, H))
    s0 = rand_state(cell, B, rng)
    dy, dst = rng.standard_normal((B, T, H)), rand_state(cell, B, rng)
    out, fin, tr = npl.nn.dynamic_rnn(cell, x, initial_state=s0, return_trace=True)
    dx, ds0 = tr.backward(dy, dst)
    m = drop.masks
    ones = np.ones((T, B, H))
    m_in, m_out = m["input"], m["output"]
    m_st = ones if m["state"] is None else m["state"]
    g = v1.Graph()
    with g.as_default(), v1.Session() as sess:
        tcell = v1.nn.rnn_cell.LSTMCell(H, forget_bias=0.4)
        xt = tf.constant(x)
        c0, h0 = tf.constant(s0.c), tf.constant(s0.h)
        c, h, outs = c0, h0, []
        with v1.variable_scope("rnn"):
            for t in range(T):
                xd = xt[:, t] * m_in[t]
                y, (c, h) = tcell(xd, v1.nn.rnn_cell.LSTMStateTuple(c, h))
                if order == "residual_outside":
                    outs.append(xt[:, t] + m_out[t] * y)
                else:
                    outs.append(m_out[t] * (xd + y))
                h = h * m_st[t]
        o = tf.stack(outs, axis=1)
        variables = v1.global_variables()
        want = convert.to_tf_variables(cell)
        assert sorted(v.op.name for v in variables) == sorted(want)
        loss = tf.reduce_sum(o * dy) + tf.reduce_sum(c * dst.c) + tf.reduce_sum(h * dst.h)
        grads = tf.gradients(loss, [xt, c0, h0] + variables)
        for v in variables:
            v.load(want[v.op.name], sess)
        r_o, r_c, r_h, r_g = sess.run([o, c, h, grads])
    names = convert.tf_variable_names(cell)
    errs = [rel_err(out, r_o), rel_err(fin.c, r_c), rel_err(fin.h, r_h), rel_err(dx, r_g[0]),
            rel_err(ds0.c, r_g[1]), rel_err(ds0.h, r_g[2])]
    errs += [rel_err(cell.grads[k], r_g[3 + [v.op.name for v in variables].index(names[k])])
             for k in cell.grads]
    assert max(errs) <= TOL, errs


@pytest.mark.tf
@pytest.mark.parametrize("path", ["c_loop_ring", "chunks_of_64"])
def test_passes_without_a_trace(tf, path):
    """dynamic_rnn without return_trace: the stack's trace-less pass (the C loops' ring of steps,
    float32) and the 64-step chunks (float64, Python loop) add the residual too."""
    v1 = tf.compat.v1
    rng = np.random.default_rng([len(path)])
    if path == "c_loop_ring":
        B, T, I, dtype, tol = 16, 2200, 8, np.float32, 2e-5
    else:
        B, T, I, dtype, tol = 3, 150, 3, np.float64, TOL
    spec = ("multi", [("lstm", 8, 0.3), ("res", ("gru", 8)), ("res", ("lstm", 8, -0.2)),
                      ("res_fn", ("gru", 8))])
    cell = make_npl(spec)
    cell.build(I, dtype)
    randomize_params(cell, rng)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    lengths = rng.integers(0, T + 1, size=B)
    lengths[0] = T
    mask = (np.arange(T)[:, None] < lengths[None, :])[:, :, None]
    x_tm = x.transpose(1, 0, 2)
    if path == "c_loop_ring":
        if not cell._infers(x_tm, mask):
            pytest.skip("the C loops are not in use here (npl.kernels.cpu.status())")
    else:
        assert not cell._infers(x_tm, mask) and T > npl.rnn_ops.INFERENCE_CHUNK
    out, fin = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths)
    g = v1.Graph()
    with g.as_default(), v1.Session() as sess:
        o, f = v1.nn.dynamic_rnn(make_tf(tf, spec), tf.constant(x.astype(np.float64)),
                                 sequence_length=lengths, dtype=tf.float64)
        want = convert.to_tf_variables(cell)
        for v in v1.global_variables():
            v.load(want[v.op.name].astype(np.float64), sess)
        r_o, r_f = sess.run([o, flatten(f)])
    assert rel_err(out, r_o) <= tol
    for a, b in zip(flatten(fin), r_f):
        assert rel_err(a, b) <= tol


# ------------------------------------------------------------------------------ finite differences
GC_CASES = {
    "res_lstm": (RES_LSTM, 4, [3, 5, 0, 2]),
    "gnmt_stack": (GNMT, 3, [4, 0, 5, 1]),
    "device_stack": (("dev", ("multi", [("gru", 3), ("res", ("gru", 3))]), "/gpu:0"), 2, [5, 2, 0, 3]),
    "custom_residual_fn": (("multi", [("gru", 4), ("res_fn", ("lstm", 4, 0.5))]), 2, [5, 0, 3, 1]),
}


@pytest.mark.parametrize("name", sorted(GC_CASES))
def test_gradcheck(name):
    spec, I, lengths = GC_CASES[name]
    rng = np.random.default_rng([sum(map(ord, name))])
    cell = built_cell(spec, I, rng)
    x = rng.standard_normal((4, 5, I))
    rep = npl.gradcheck.gradcheck_cell(cell, x, sequence_length=lengths)
    assert rep.passed, rep


def test_gradcheck_with_dropout_in_a_stack():
    """Residual layers around and inside DropoutWrappers (input, output and state dropout) in a
    MultiRNNCell, with lengths: one fixed set of masks, float64 finite differences."""
    rng = np.random.default_rng(77)
    D = R.DropoutWrapper
    cell = R.MultiRNNCell([
        R.LSTMCell(4, forget_bias=0.3),
        R.ResidualWrapper(D(R.GRUCell(4), input_keep_prob=0.8, state_keep_prob=0.7, seed=1)),
        D(R.ResidualWrapper(R.BasicLSTMCell(4, forget_bias=-0.5)), output_keep_prob=0.6,
          state_keep_prob=0.8, seed=2)])
    cell.build(3, np.float64)
    randomize_params(cell, rng)
    rep = npl.gradcheck.gradcheck_cell(cell, rng.standard_normal((3, 5, 3)), sequence_length=[5, 0, 3])
    assert rep.passed, rep


# ------------------------------------------------------------------------------ transparency
def test_device_wrapper_is_transparent(tmp_path):
    """Same numbers bit for bit, same records, same parameter names (RNN layer and checkpoint)."""
    rng = np.random.default_rng(3)
    inner = built_cell(("lstm", 4, 0.2), 3, rng)
    cell = R.DeviceWrapper(inner, "/job:localhost/replica:0/task:0/device:GPU:*")
    assert (cell.device_type, cell.device_index) == ("GPU", None)
    x = rng.standard_normal((2, 4, 3))
    a = npl.nn.dynamic_rnn(cell, x, sequence_length=[4, 1], return_trace=True)
    b = npl.nn.dynamic_rnn(inner, x, sequence_length=[4, 1], return_trace=True)
    assert np.array_equal(a[0], b[0])
    assert [type(r) for r in a[2].records] == [type(r) for r in b[2].records]
    assert a[2].records[0].cell is inner and a[2].nbytes == b[2].nbytes
    wrapped = npl.layers.RNN(cell)
    assert sorted(wrapped.params) == sorted(npl.layers.RNN(inner).params)
    path = str(tmp_path / "ckpt.npz")
    npl.checkpoint.save(path, wrapped.params)
    before = {k: v.copy() for k, v in inner.params.items()}
    randomize_params(inner, rng)
    npl.checkpoint.restore(path, wrapped.params)
    assert all(np.array_equal(inner.params[k], v) for k, v in before.items())


def test_residual_wrapper_names_and_records():
    rng = np.random.default_rng(4)
    stack = built_cell(GNMT, 3, rng)
    assert sorted(npl.layers.RNN(stack).params) == sorted(
        npl.layers.RNN(built_cell(("multi", [("lstm", 4, 0), ("gru", 4), ("basic_lstm", 4, 0)]),
                                  3, rng)).params)
    _, _, tr = npl.nn.dynamic_rnn(stack, rng.standard_normal((2, 3, 3)), return_trace=True)
    assert [r.cell for r in tr.records] == [c for c in stack._leaves()]


# ------------------------------------------------------------------------------ errors
def test_width_mismatch_names_both_widths():
    x = np.zeros((2, 3, 5))
    cell = R.ResidualWrapper(R.GRUCell(4))
    assert_raises_naming(ValueError, ["ResidualWrapper", "5", "output_size 4"],
                         npl.nn.dynamic_rnn, cell, x)
    assert not cell.built                                  # refused before building anything
    assert_raises_naming(ValueError, ["input_size 5", "output_size 4"], R.ResidualWrapper,
                         R.GRUCell(4, input_size=5))
    assert_raises_naming(ValueError, ["input_size 3", "output_size 4"], cell.build, 3)
    stack = R.MultiRNNCell([R.GRUCell(3), R.ResidualWrapper(R.GRUCell(4))])
    assert_raises_naming(ValueError, ["3", "output_size 4"], npl.nn.dynamic_rnn, stack, x)
    inner = R.GRUCell(4)
    late = R.ResidualWrapper(inner)
    inner.build(5)                                         # built behind the wrapper's back
    assert_raises_naming(ValueError, ["5", "output_size 4"], late, np.zeros((2, 5), np.float32),
                         inner.zero_state(2))


def test_non_cell_arguments():
    assert_raises_naming(TypeError, ["cell", "int"], R.ResidualWrapper, 3)
    assert_raises_naming(TypeError, ["cell", "str"], R.DeviceWrapper, "/cpu:0", "/cpu:0")


DEVICE_STRINGS = [
    "/cpu:0", "GPU:2", "/device:gpu:1", "/device:GPU:0", "/device:XLA_CPU:0", "/device:xla_cpu:0",
    "/device:Foo:2", "/task: 1", "/cpu:+1", "/job:worker/task:1/cpu:0",
    "/job:localhost/replica:0/task:0/device:GPU:*", "/task:0/job:w/cpu:0", "cpu", "/gpu", "gpu:*",
    "/job:w/gpu", "/job:ps", "/job:ps/task:0", "/tpu:0", "/cpu:-1", "//cpu:0", "/Cpu:1", "",
    # refused by TF too
    "banana", "/cpu:x", "/gpu:0/cpu:0", "/JOB:x/cpu:0", "/Device:GPU:0", "/task:x/cpu:0",
    "/replica:one", "/replica:1.0", "/device:GPU", "/cpu:0:1", "/epu:0"]


@pytest.mark.tf
def test_device_strings_are_parsed_as_tf_does():
    """Every string against live TF's DeviceSpec.from_string: accepted with TF's device type and
    index, or refused (ValueError naming the argument) exactly where TF refuses it.  ("/epu:0":
    TF 2 added the EPU type; TF 1.15, whose rules npl follows, did not have it.)"""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf = pytest.importorskip("tensorflow")
    for d in DEVICE_STRINGS:
        try:
            spec = tf.DeviceSpec.from_string(d)
            want = (spec.device_type, spec.device_index)
        except ValueError:
            want = None
        if d == "/epu:0":
            assert want == ("EPU", 0)
            want = None
        if want is None:
            assert_raises_naming(ValueError, ["device", repr(d)], R.DeviceWrapper, R.GRUCell(3), d)
        else:
            c = R.DeviceWrapper(R.GRUCell(3), d)
            assert (c.device, c.device_type, c.device_index) == (d,) + want, d


def test_device_strings_and_non_strings():
    for d, want in (("/cpu:0", ("CPU", 0)), ("GPU:2", ("GPU", 2)), ("/device:GPU:1", ("GPU", 1)),
                    ("/job:worker/task:1/cpu:0", ("CPU", 0)), ("/job:ps", (None, None)),
                    (None, (None, None)), ("", (None, None))):
        c = R.DeviceWrapper(R.GRUCell(3), d)
        assert (c.device, c.device_type, c.device_index) == (d, ) + want
    for bad in ("banana", "/cpu:x", "/gpu:0/cpu:0"):
        assert_raises_naming(ValueError, ["device", repr(bad), "/gpu:<n>"], R.DeviceWrapper,
                             R.GRUCell(3), bad)
    assert_raises_naming(TypeError, ["device", "function"], R.DeviceWrapper, R.GRUCell(3),
                         lambda op: "/cpu:0")


def test_residual_fn_contract():
    cell = R.GRUCell(3)
    assert_raises_naming(TypeError, ["residual_fn", "no autograd", "(fn, fn_backward)"],
                         R.ResidualWrapper, cell, lambda i, o: i + o)
    assert_raises_naming(TypeError, ["residual_fn", "pair", "int"], R.ResidualWrapper, cell, 3)
    assert_raises_naming(TypeError, ["residual_fn"], R.ResidualWrapper, cell, (len,))
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    bad_shape = R.ResidualWrapper(R.GRUCell(3), residual_fn=(lambda i, o: o[..., :2],
                                                             _res_fn_backward))
    assert_raises_naming(ValueError, ["residual_fn's result", "(4, 2, 3)", "(4, 2, 2)"],
                         npl.nn.dynamic_rnn, bad_shape, x)
    bad_dtype = R.ResidualWrapper(R.GRUCell(3), residual_fn=(lambda i, o: (i + o).astype(np.float32),
                                                             _res_fn_backward))
    assert_raises_naming(TypeError, ["residual_fn's result", "float32"], npl.nn.dynamic_rnn,
                         bad_dtype, x)
    for back, exc, words in ((lambda i, o, d: d, TypeError, ["pair (d_inputs, d_outputs)"]),
                             (lambda i, o, d: (d[..., :1], d), ValueError, ["d_inputs", "(4, 2, 1)"]),
                             (lambda i, o, d: (d, d[:1]), ValueError, ["d_outputs", "(1, 2, 3)"])):
        w = R.ResidualWrapper(R.GRUCell(3), residual_fn=(_res_fn, back))
        _, _, tr = npl.nn.dynamic_rnn(w, x, return_trace=True)
        assert_raises_naming(exc, words, tr.backward, np.ones((2, 4, 3)), None)
    # a custom residual of another width: no width check, the function decides
    proj = np.random.default_rng(1).standard_normal((3, 2))
    wide = R.ResidualWrapper(R.GRUCell(2), residual_fn=(lambda i, o: i @ proj + o,
                                                        lambda i, o, d: (d @ proj.T, d)))
    out, _ = npl.nn.dynamic_rnn(wide, x)
    y, _ = npl.nn.dynamic_rnn(wide.wrapped_cell, x)
    assert np.allclose(out, x @ proj + y)
    assert npl.gradcheck.gradcheck_cell(wide, x).passed


_STAND_IN_SCRIPT = r'''
import numpy as np, npl
R = npl.rnn
rng = np.random.default_rng(0)
def make():
    c = R.MultiRNNCell([R.LSTMCell(4), R.ResidualWrapper(R.GRUCell(4)),
                        R.DeviceWrapper(R.ResidualWrapper(R.BasicLSTMCell(4)), "/gpu:0")])
    return c.build(3, np.float32)
host = make()
vals = {k: (0.5 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in host.params.items()}
host.set_params(vals)
x = rng.standard_normal((3, 5, 3)).astype(np.float32)
dy = rng.standard_normal((3, 5, 4)).astype(np.float32)
o, s, tr = npl.nn.dynamic_rnn(host, x, sequence_length=[5, 0, 2], return_trace=True)
dx = tr.backward(dy, None)[0]
dev = make().to_device("cupy")
dev.set_params(vals)
o2, s2, tr2 = npl.nn.dynamic_rnn(dev, npl.to_device(x, "cupy"), sequence_length=[5, 0, 2],
                                 return_trace=True)
dx2 = tr2.backward(npl.to_device(dy, "cupy"), None)[0]
assert type(o2).__module__.startswith("cupy") and type(dx2).__module__.startswith("cupy")
errs = [abs(npl.to_numpy(o2) - o).max(), abs(npl.to_numpy(dx2) - dx).max()]
errs += [abs(npl.to_numpy(dev.grads[k]) - g).max() for k, g in host.grads.items()]
assert max(errs) < 2e-6, errs
print("ok", max(errs))
'''


def test_on_the_cupy_stand_in():
    """The residual add, its masked backward and DeviceWrapper on CuPy arrays (tests/fake_cupy,
    which refuses hidden host copies and device mixing): the NumPy run's numbers, float32."""
    run_on_cupy_stand_in(_STAND_IN_SCRIPT)


def test_dropout_inside_a_residual_wrapper_is_found_and_switched():
    """Sequential(training=False) and npl.train's evaluation switch every DropoutWrapper, also one
    inside a ResidualWrapper or DeviceWrapper: in evaluation the output is input + the cell's."""
    rng = np.random.default_rng(8)
    inner = built_cell(("gru", 3), 3, rng)
    drop = R.DropoutWrapper(inner, output_keep_prob=0.5, seed=0)
    model = npl.layers.Sequential([npl.layers.RNN(R.DeviceWrapper(R.ResidualWrapper(drop), "/cpu:0"))])
    assert model.dropout_wrappers() == [drop]
    x = rng.standard_normal((2, 4, 3))
    y_eval = model(x, training=False)
    assert drop.training
    y_plain, _ = npl.nn.dynamic_rnn(inner, x)
    assert rel_err(y_eval, x + y_plain) < 1e-15


def test_nested_state_dropout_is_refused_at_construction():
    """Two state dropouts in one stack are refused when the outer wrapper is made, also when
    another wrapper or a MultiRNNCell sits between them (not only at the first forward)."""
    inner = R.DropoutWrapper(R.GRUCell(3), state_keep_prob=0.5)
    for between in (inner, R.ResidualWrapper(inner), R.DeviceWrapper(inner, "/cpu:0"),
                    R.MultiRNNCell([inner, R.GRUCell(3)])):
        assert_raises_naming(ValueError, ["state_keep_prob", "drops the state too"],
                             R.DropoutWrapper, between, 1.0, 1.0, 0.5)
    R.DropoutWrapper(R.ResidualWrapper(inner), output_keep_prob=0.5)     # other dropout: fine
