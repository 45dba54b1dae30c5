"""npl.rnn.stack_bidirectional_rnn (tf.contrib.rnn.stack_bidirectional_rnn, the static form).

* Live TensorFlow 1 (``@pytest.mark.tf``): TF 1.15's ``stack_bidirectional_rnn`` is gone with
  tf.contrib, so the test builds it as TF 1.15 does, out of ``tf.compat.v1.nn.static_bidirectional_rnn``
  (one per layer, under ``stack_bidirectional_rnn/cell_<k>``, TF passing that scope itself as
  the layer's scope).  Compared: outputs, every final state and ``tf.gradients`` with respect to
  the input list, every initial state and every variable (random weights, biases, forget biases,
  initial states and cotangents), for 1 and 3 layers, LSTM / GRU / BasicRNN / MultiRNNCell mixes,
  unsorted lengths with a 0, batch 1, T = 1, float64 (1e-9) and float32 (1e-5).  The variable
  names of the live graph are checked against ``npl.convert.tf_variable_names`` with the scope
  ``stack_bidirectional_rnn/cell_<k>/fw`` (no ``bidirectional_rnn`` level, unlike the dynamic
  function's).
* Float64 central finite differences of every gradient (``test_gradients.fd_check``).
* It equals ``stack_bidirectional_dynamic_rnn`` on the stacked steps bit for bit.
* Bad arguments and cotangents raise ValueError / TypeError naming them.
"""

import numpy as np
import pytest

import npl
from npl import convert
from helpers import (flatten, unflatten, make_cell, random_state, rel_err,  # noqa: F401
                     numpy_backend, seeded_rng as _rng, assert_raises_naming, randomize_params)
from test_gradients import I, LENGTHS, _lengths, fd_check

R = npl.rnn
F32, F64 = np.float32, np.float64
MEASURED = {}


# layer specs: (kind, units, extra) for npl and TF alike
def _npl_cell(spec, fb):
    kind, H = spec[0], spec[1]
    if kind == "lstm":
        return R.LSTMCell(H, use_peepholes=True, num_proj=spec[2], forget_bias=fb)
    if kind == "basic_lstm":
        return R.BasicLSTMCell(H, forget_bias=fb)
    if kind == "gru":
        return R.GRUCell(H)
    if kind == "rnn":
        return R.BasicRNNCell(H)
    if kind == "multi":
        return R.MultiRNNCell([_npl_cell(s, fb) for s in spec[2]])
    raise AssertionError(spec)


def _tf_cell(tf, spec, fb):
    rc = tf.compat.v1.nn.rnn_cell
    kind, H = spec[0], spec[1]
    if kind == "lstm":
        return rc.LSTMCell(H, use_peepholes=True, num_proj=spec[2], forget_bias=fb)
    if kind == "basic_lstm":
        return rc.BasicLSTMCell(H, forget_bias=fb)
    if kind == "gru":
        return rc.GRUCell(H)
    if kind == "rnn":
        return rc.BasicRNNCell(H)
    if kind == "multi":
        return rc.MultiRNNCell([_tf_cell(tf, s, fb) for s in spec[2]])
    raise AssertionError(spec)


def tf_stack_bidirectional_rnn(tf, cells_fw, cells_bw, inputs, initial_states_fw=None,
                               initial_states_bw=None, dtype=None, sequence_length=None):
    """TF 1.15's tf.contrib.rnn.stack_bidirectional_rnn, as that release builds it."""
    v1 = tf.compat.v1
    states_fw, states_bw, prev = [], [], inputs
    with v1.variable_scope("stack_bidirectional_rnn"):
        for i, (cf, cb) in enumerate(zip(cells_fw, cells_bw)):
            s_fw = initial_states_fw[i] if initial_states_fw else None
            s_bw = initial_states_bw[i] if initial_states_bw else None
            with v1.variable_scope("cell_%d" % i) as cell_scope:
                prev, sf, sb = v1.nn.static_bidirectional_rnn(
                    cf, cb, prev, initial_state_fw=s_fw, initial_state_bw=s_bw,
                    sequence_length=sequence_length, dtype=dtype, scope=cell_scope)
            states_fw.append(sf)
            states_bw.append(sb)
    return prev, tuple(states_fw), tuple(states_bw)


def _tf_state(tf, s):
    if isinstance(s, npl.LSTMStateTuple):
        return tf.compat.v1.nn.rnn_cell.LSTMStateTuple(tf.constant(s.c), tf.constant(s.h))
    if isinstance(s, tuple):
        return tuple(_tf_state(tf, v) for v in s)
    return tf.constant(s)


# name: (fw specs, bw specs, B, T, lengths, initial states given, dtype)
TF_CASES = {
    "one_layer_lstm_gru_unsorted_zero": ([("lstm", 4, 3)], [("gru", 3)], 4, 3, [2, 0, 3, 1], True, F64),
    "three_layers_mixed_unsorted": ([("lstm", 3, 2), ("gru", 2), ("basic_lstm", 3)],
                                    [("gru", 3), ("basic_lstm", 2), ("rnn", 2)], 3, 4, [3, 1, 4],
                                    True, F64),
    "three_layers_multi_no_lengths_zero_states": (
        [("multi", 0, [("basic_lstm", 2), ("gru", 2)]), ("rnn", 3), ("gru", 2)],
        [("gru", 2), ("multi", 0, [("gru", 3), ("lstm", 3, 2)]), ("basic_lstm", 2)],
        2, 3, None, False, F64),
    "batch1": ([("basic_lstm", 3), ("gru", 2)], [("lstm", 2, 2), ("rnn", 3)], 1, 3, [2], True, F64),
    "T1_with_a_zero": ([("gru", 3), ("basic_lstm", 2)], [("basic_lstm", 2), ("gru", 2)], 3, 1,
                       [1, 0, 1], True, F64),
    "float32_two_layers": ([("basic_lstm", 4), ("gru", 3)], [("gru", 3), ("lstm", 3, 2)], 3, 4,
                           [4, 0, 2], True, F32),
}


def _build(case, rng):
    fws, bws, B, T, L, given, dt = TF_CASES[case]
    fbs = [round(float(v), 4) for v in rng.uniform(-1, 1, 2 * len(fws))]
    cells_fw = [_npl_cell(s, fbs[2 * k]) for k, s in enumerate(fws)]
    cells_bw = [_npl_cell(s, fbs[2 * k + 1]) for k, s in enumerate(bws)]
    width = I
    for cf, cb in zip(cells_fw, cells_bw):
        for c in (cf, cb):
            c.build(width, dt)
            randomize_params(c, rng)
        width = cf.output_size + cb.output_size
    xs = [rng.standard_normal((B, I)).astype(dt) for _ in range(T)]
    s0 = None
    if given:
        s0 = ([random_state(c, B, rng, dt) for c in cells_fw],
              [random_state(c, B, rng, dt) for c in cells_bw])
    dy = [rng.standard_normal((B, width)).astype(dt) for _ in range(T)]
    return fbs, cells_fw, cells_bw, xs, s0, dy


@pytest.mark.tf
@pytest.mark.parametrize("case", sorted(TF_CASES))
def test_matches_live_tf(tf, case):
    fws, bws, B, T, L, given, dt = TF_CASES[case]
    rng = _rng("static-stack", case)
    fbs, cells_fw, cells_bw, xs, s0, dy = _build(case, rng)
    # npl
    outs, sfw, sbw, tr = R.stack_bidirectional_rnn(
        cells_fw, cells_bw, xs, None if s0 is None else s0[0], None if s0 is None else s0[1],
        dtype=dt, sequence_length=L, return_trace=True)
    dst = (tuple(unflatten(s, [rng.standard_normal(a.shape).astype(dt) for a in flatten(s)])
                 for s in sfw),
           tuple(unflatten(s, [rng.standard_normal(a.shape).astype(dt) for a in flatten(s)])
                 for s in sbw))
    for c in cells_fw + cells_bw:
        c.zero_grad()
    dxs, (d0f, d0b) = tr.backward(dy, dst)
    # TF
    v1 = tf.compat.v1
    with v1.Graph().as_default(), v1.Session() as sess:
        tfw = [_tf_cell(tf, s, fbs[2 * k]) for k, s in enumerate(fws)]
        tbw = [_tf_cell(tf, s, fbs[2 * k + 1]) for k, s in enumerate(bws)]
        xt = [tf.constant(a) for a in xs]
        st0 = None if s0 is None else ([_tf_state(tf, s) for s in s0[0]],
                                       [_tf_state(tf, s) for s in s0[1]])
        y, tsf, tsb = tf_stack_bidirectional_rnn(
            tf, tfw, tbw, xt, None if st0 is None else st0[0], None if st0 is None else st0[1],
            dtype=tf.as_dtype(dt), sequence_length=None if L is None else tf.constant(L, tf.int32))
        variables = v1.global_variables()
        want = {}
        for k, (cf, cb) in enumerate(zip(cells_fw, cells_bw)):
            for side, c in (("fw", cf), ("bw", cb)):
                scope = "stack_bidirectional_rnn/cell_%d/%s" % (k, side)
                names = convert.tf_variable_names(c, scope)
                assert all(n.startswith(scope + "/") for n in names.values())
                want.update({names[n]: (c, n) for n in names})
        assert sorted(v.op.name for v in variables) == sorted(want)
        loss = tf.add_n([tf.reduce_sum(a * w) for a, w in zip(y, dy)] +
                        [tf.reduce_sum(a * w) for a, w in zip(flatten((tsf, tsb)), flatten(dst))])
        s_leaves = flatten(st0) if st0 is not None else []
        grads = tf.gradients(loss, xt + s_leaves + variables)
        for v in variables:
            c, n = want[v.op.name]
            v.load(c.params[n], sess)
        r_y, r_st, r_g = sess.run([y, flatten((tsf, tsb)), grads])
    tol = 1e-9 if dt == F64 else 1e-5
    errs = {"outputs": max(rel_err(a, b) for a, b in zip(outs, r_y)),
            "states": max(rel_err(a, b) for a, b in zip(flatten((sfw, sbw)), r_st)),
            "d_inputs": max(rel_err(a, b) for a, b in zip(dxs, r_g[:T]))}
    if s0 is not None:
        errs["d_initial_states"] = max(rel_err(a, b) for a, b in
                                       zip(flatten((list(d0f), list(d0b))), r_g[T:T + len(s_leaves)]))
    r_w = r_g[T + len(s_leaves):]
    errs["d_variables"] = max(rel_err(want[v.op.name][0].grads[want[v.op.name][1]], g)
                              for v, g in zip(variables, r_w))
    MEASURED[case] = errs
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, "%s: %s" % (case, errs)
    if L is not None:           # zero past each length, in the outputs and in d_inputs
        for b, n in enumerate(L):
            assert all(not outs[t][b].any() and not dxs[t][b].any() for t in range(n, T))


# ============================================================================ finite differences
@pytest.mark.parametrize("layers", [1, 3])
@pytest.mark.parametrize("case", ["none", "zero_one_full", "unsorted", "batch1", "T1"])
def test_gradients_match_finite_differences(case, layers):
    rng = _rng("static-stack-fd", case, layers)
    B, T, L = LENGTHS[case]
    kinds = [("lstm_proj", "gru"), ("basic_lstm", "rnn"), ("gru", "lstm_peep")][:layers]
    cells_fw, cells_bw, width = [], [], I
    for kf, kb in kinds:
        cf, cb = make_cell(kf, rng, width), make_cell(kb, rng, width)
        cells_fw.append(cf)
        cells_bw.append(cb)
        width = cf.output_size + cb.output_size
    xs = [rng.standard_normal((B, I)) for _ in range(T)]
    s0 = ([random_state(c, B, rng) for c in cells_fw], [random_state(c, B, rng) for c in cells_bw])

    def run(trace):
        res = R.stack_bidirectional_rnn(cells_fw, cells_bw, xs, s0[0], s0[1],
                                        sequence_length=_lengths(L), return_trace=trace)
        return (res[0], (res[1], res[2])) + res[3:]

    def backward(tr, d_out, d_state):
        dx, (d0f, d0b) = tr.backward(d_out, d_state)
        return dx, (list(d0f), list(d0b))

    fd_check(cells_fw + cells_bw, run, backward, xs, s0, rng)


def test_equals_the_dynamic_stack_on_stacked_steps():
    rng = _rng("static-stack-eq")
    B, T, L = 3, 4, [2, 0, 4]
    fw = [make_cell("lstm_all", rng, I), None]
    bw = [make_cell("gru", rng, I), None]
    fw[1] = make_cell("basic_lstm", rng, fw[0].output_size + bw[0].output_size)
    bw[1] = make_cell("rnn", rng, fw[0].output_size + bw[0].output_size)
    xs = [rng.standard_normal((B, I)) for _ in range(T)]
    dy = [rng.standard_normal((B, fw[1].output_size + bw[1].output_size)) for _ in range(T)]
    outs, sf, sb, tr = R.stack_bidirectional_rnn(fw, bw, xs, sequence_length=L, return_trace=True)
    for c in fw + bw:
        c.zero_grad()
    dx, d0 = tr.backward(dy, None)
    g1 = [dict(c.grads) for c in fw + bw]
    g1 = [{k: v.copy() for k, v in g.items()} for g in g1]
    y, sf2, sb2, tr2 = R.stack_bidirectional_dynamic_rnn(fw, bw, np.stack(xs), sequence_length=L,
                                                         time_major=True, return_trace=True)
    for c in fw + bw:
        c.zero_grad()
    dx2, d02 = tr2.backward(np.stack(dy), None)
    assert all(np.array_equal(outs[t], y[t]) and np.array_equal(dx[t], dx2[t]) for t in range(T))
    assert all(np.array_equal(a, b) for a, b in zip(flatten((sf, sb, d0)), flatten((sf2, sb2, d02))))
    for g, c in zip(g1, fw + bw):
        assert all(np.array_equal(g[k], v) for k, v in c.grads.items())
    assert len(tr.records) == 4 and tr.nbytes == tr2.nbytes


# ============================================================================ errors
def _cells(n=2):
    return [R.GRUCell(2, seed=k) for k in range(n)], [R.BasicLSTMCell(2, seed=9 + k) for k in range(n)]


def _xs(T=3, B=2, width=I):
    return [np.ones((B, width)) for _ in range(T)]


def test_bad_arguments_raise_naming_them():
    fw, bw = _cells()
    assert_raises_naming(ValueError, ["cells_bw", "same length", "(2)"],
                         R.stack_bidirectional_rnn, fw, bw[:1], _xs())
    assert_raises_naming(ValueError, ["cells_fw", "non-empty"], R.stack_bidirectional_rnn, [], [], _xs())
    assert_raises_naming(TypeError, ["cells_bw[1]", "npl RNN cell"],
                         R.stack_bidirectional_rnn, fw, [bw[0], "gru"], _xs())
    assert_raises_naming(ValueError, ["inputs", "non-empty"], R.stack_bidirectional_rnn, fw, bw, [])
    assert_raises_naming(TypeError, ["inputs", "list"], R.stack_bidirectional_rnn, fw, bw,
                         np.ones((3, 2, I)))
    assert_raises_naming(ValueError, ["inputs[1]", "shape"], R.stack_bidirectional_rnn, fw, bw,
                         [np.ones((2, I)), np.ones((3, I))])
    assert_raises_naming(ValueError, ["initial_states_fw", "2 states"],
                         R.stack_bidirectional_rnn, fw, bw, _xs(), [fw[0].zero_state(2, F64)])
    assert_raises_naming(ValueError, ["sequence_length"], R.stack_bidirectional_rnn, fw, bw, _xs(),
                         None, None, None, [1, 4])
    fw2, bw2 = _cells()
    R.stack_bidirectional_rnn(fw2, bw2, _xs())                   # builds layer 1 for width 4
    assert_raises_naming(ValueError, ["initial_states_bw[1]"], R.stack_bidirectional_rnn, fw2, bw2,
                         _xs(), None, [bw2[0].zero_state(2, F64), bw2[1].zero_state(3, F64)])


def test_bad_cotangents_raise_naming_them_and_leave_the_trace_usable():
    fw, bw = _cells()
    outs, sf, sb, tr = R.stack_bidirectional_rnn(fw, bw, _xs(), return_trace=True)
    W = outs[0].shape[1]
    assert_raises_naming(ValueError, ["d_outputs", "3"], tr.backward, [np.ones((2, W))] * 2)
    assert_raises_naming(ValueError, ["d_outputs[1]", "shape"], tr.backward,
                         [np.ones((2, W)), np.ones((2, W + 1)), None])
    assert_raises_naming(ValueError, ["d_final_state[1]", "2 states"], tr.backward, None,
                         (None, (None,)))
    dx, d0 = tr.backward([None, np.ones((2, W)), None], None)
    assert len(dx) == 3 and dx[0].shape == (2, I) and len(d0[0]) == 2
    with pytest.raises(npl.BackwardTwiceError):
        tr.backward(None, None)
