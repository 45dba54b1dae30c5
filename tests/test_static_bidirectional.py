"""npl.nn.static_bidirectional_rnn (tf.compat.v1.nn.static_bidirectional_rnn) and its trace.

* Live TensorFlow (``@pytest.mark.tf``; skipped without TF): outputs, both final states and
  ``tf.gradients`` with respect to the inputs, both initial states and every weight, for LSTMs
  with peepholes / projection / clipping, GRU and BasicRNN cells, different fw and bw cells, a
  MultiRNNCell as fw, with and without sequence_length (zero and unsorted lengths), batch 1,
  T = 1, float64 and float32.  The cases are :mod:`tf_reference`'s bidirectional case specs and
  inputs (every weight, initial state and cotangent random), built into one graph by
  ``tf_reference.run_tf``, with the graph's ``bidirectional_dynamic_rnn`` call routed to TF's own
  ``static_bidirectional_rnn`` on the unstacked time-major inputs.
* Float64 central finite differences of every gradient (inputs, both initial states, every
  parameter of both cells, random forget_bias), through ``test_gradients.fd_check``.
* Independent routes: it equals ``bidirectional_dynamic_rnn`` on the stacked inputs bit for bit
  (outputs, states, every gradient); zeros past each length, in the outputs and in d_inputs.
* Bad input and bad cotangents raise ValueError / TypeError naming the argument, a rejected
  backward leaves the trace usable, backward twice and stale traces raise.
"""
import os

import numpy as np
import pytest

import npl
import tf_reference as ref
from helpers import (flatten, unflatten, make_cell, random_like, random_state, rel_err,  # noqa: F401
                     numpy_backend, seeded_rng as _rng, assert_raises_naming)
from test_gradients import I, LENGTHS, _lengths, fd_check
from test_errors import _lstm, _gru as _built_gru

nn, R, S = npl.nn, npl.rnn, npl.LSTMStateTuple
F32, F64 = np.float32, np.float64


def _steps(x):
    """A batch-major [B, T, I] array as static_rnn's list of T [B, I] arrays."""
    return [x[:, t] for t in range(x.shape[1])]


# ============================================================================ live TensorFlow
_FB = [round(float(v), 4) for v in _rng("static-bidir-forget-bias").uniform(-1.0, 1.0, 5)]
_MULTI_FW = ref.multi(ref.cell("LSTMCell", 3, use_peepholes=True, num_proj=2, forget_bias=_FB[0]),
                      ref.cell("GRUCell", 2), ref.cell("BasicRNNCell", 2))
_C = ref.cell

# tf_reference's bidirectional specs (its make_inputs draws every weight, initial state and
# cotangent at random); time-major, so that ``list(x)`` is the static list of steps.
TF_CASES = [
    # LSTM with every option (peepholes, projection, both clips) fw, GRU bw; a zero and unsorted
    # lengths
    ref.rnn_case("sbidir_lstm_all_options_gru_len", "bidirectional_dynamic_rnn",
                 {"fw": _C("LSTMCell", 4, use_peepholes=True, cell_clip=0.4, num_proj=3,
                           proj_clip=0.3, forget_bias=_FB[1]),
                  "bw": _C("GRUCell", 3)}, 4, 3, 3, time_major=True,
                 sequence_length=[2, 0, 3, 1], wscale=0.8),
    # heterogeneous MultiRNNCell fw, BasicRNNCell (relu) bw; no sequence_length, zero states
    ref.rnn_case("sbidir_multi_fw_basic_rnn_bw_no_len", "bidirectional_dynamic_rnn",
                 {"fw": _MULTI_FW, "bw": _C("BasicRNNCell", 3, activation="relu")}, 3, 3, 2,
                 time_major=True, initial_state=False),
    # batch 1; BasicLSTMCell fw, LSTMCell with peepholes bw; loss on the final states only
    ref.rnn_case("sbidir_batch1_state_loss_only", "bidirectional_dynamic_rnn",
                 {"fw": _C("BasicLSTMCell", 2, forget_bias=_FB[3]),
                  "bw": _C("LSTMCell", 3, use_peepholes=True, forget_bias=_FB[4])},
                 1, 3, 2, time_major=True, sequence_length=[2], d_outputs=False),
    # T = 1; BasicRNNCell fw, projected LSTM bw; loss on the outputs only
    ref.rnn_case("sbidir_time1_outputs_loss_only", "bidirectional_dynamic_rnn",
                 {"fw": _C("BasicRNNCell", 2), "bw": _C("LSTMCell", 2, num_proj=1, forget_bias=_FB[2])},
                 3, 1, 2, time_major=True, sequence_length=[1, 0, 1], d_state=False),
    # float32
    ref.rnn_case("sbidir_f32_lstm_proj_gru_len", "bidirectional_dynamic_rnn",
                 {"fw": _C("LSTMCell", 3, num_proj=2, use_peepholes=True, forget_bias=_FB[1]),
                  "bw": _C("GRUCell", 3)}, 3, 3, 2, dtype="float32", time_major=True,
                 sequence_length=[3, 0, 2]),
]
TF_CASES_BY_NAME = {c["name"]: c for c in TF_CASES}
assert not set(TF_CASES_BY_NAME) & set(ref.CASES_BY_NAME)


def _tf_static_bidirectional_as_dynamic(tf, calls):
    """A stand-in for ``tf.compat.v1.nn.bidirectional_dynamic_rnn`` (time-major) that runs TF's
    ``static_bidirectional_rnn`` on ``tf.unstack(inputs)`` and splits its concatenated outputs
    back into the (fw, bw) parts, so that tf_reference's graph builder, weight loading and
    ``tf.gradients`` apply unchanged (d/d(concat) = (d/d fw part, d/d bw part))."""
    static = tf.compat.v1.nn.static_bidirectional_rnn

    def bidirectional(cell_fw, cell_bw, inputs, sequence_length=None, initial_state_fw=None,
                      initial_state_bw=None, dtype=None, time_major=False, **unused):
        assert time_major and not unused, (time_major, unused)
        outs, s_fw, s_bw = static(cell_fw, cell_bw, tf.unstack(inputs),
                                  initial_state_fw=initial_state_fw,
                                  initial_state_bw=initial_state_bw, dtype=dtype,
                                  sequence_length=sequence_length)
        assert isinstance(outs, list) and len(outs) == inputs.shape[0]
        y = tf.stack(outs)                                          # [T, B, fw + bw]
        wf = cell_fw.output_size
        assert y.shape[2] == wf + cell_bw.output_size
        calls.append(len(outs))
        return (y[:, :, :wf], y[:, :, wf:]), (s_fw, s_bw)
    return bidirectional


@pytest.fixture(scope="module")
def live():
    """{case name: inputs + TF's values}: every case in ONE graph and ONE Session.run."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf_keras")
    tf = ref.import_tf()
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tf.compat.v1.nn, "bidirectional_dynamic_rnn",
                   _tf_static_bidirectional_as_dynamic(tf, calls))
        values = ref.run_tf(TF_CASES)
    assert len(calls) == len(TF_CASES), "every case must have gone through static_bidirectional_rnn"
    return values


def _npl_case(spec, a):
    """One case through npl's static_bidirectional_rnn and its trace, under tf_reference's keys."""
    dt = np.dtype(spec["dtype"])
    B = spec["batch"]
    cells = {}
    for slot, cs in ref.cell_slots(spec):
        c = ref.npl_cell(cs, dt)
        c.set_params(ref._weights(a, slot), strict=True)
        cells[slot] = c
    cf, cb = cells["fw"], cells["bw"]

    def leaves(prefix, slot):
        lv = ref._leaves(a, "%s/%s" % (prefix, slot))
        return unflatten(cells[slot].zero_state(B, dt), lv) if lv else None

    xs = list(a["x"])                                            # T arrays [B, I]
    outs, st_fw, st_bw, tr = nn.static_bidirectional_rnn(
        cf, cb, xs, leaves("s0", "fw"), leaves("s0", "bw"), sequence_length=a.get("sequence_length"),
        return_trace=True)
    assert isinstance(outs, list) and len(outs) == len(xs)
    assert all(o.shape == (B, cf.output_size + cb.output_size) and o.dtype == dt for o in outs)
    d_outs = None
    if spec["d_outputs"]:
        d_outs = list(np.concatenate([a["dy/0"], a["dy/1"]], axis=2))
    d_states = (leaves("dst", "fw"), leaves("dst", "bw")) if spec["d_state"] else None
    dxs, (d0f, d0b) = tr.backward(d_outs, d_states)
    assert isinstance(dxs, list) and len(dxs) == len(xs)
    y = np.stack(outs)
    wf = cf.output_size
    res = {"ref/y/0": y[:, :, :wf], "ref/y/1": y[:, :, wf:], "ref/dx": np.stack(dxs)}
    for slot, st, d0 in (("fw", st_fw, d0f), ("bw", st_bw, d0b)):
        for k, v in enumerate(flatten(st)):
            res["ref/st/%s/%d" % (slot, k)] = v
        if "s0/%s/0" % slot in a:
            for k, v in enumerate(flatten(d0)):
                res["ref/ds0/%s/%d" % (slot, k)] = v
        for name, g in cells[slot].grads.items():
            res["ref/dw/%s/%s" % (slot, name)] = g.copy()
    return res


@pytest.mark.tf
@pytest.mark.parametrize("name", sorted(TF_CASES_BY_NAME))
def test_matches_live_tf(live, name):
    """Outputs, final states and the gradients w.r.t. inputs, initial states and every weight
    (ref.compare insists on the same keys: no weight without a TF gradient, and vice versa)."""
    spec = TF_CASES_BY_NAME[name]
    errs = ref.compare(spec, _npl_case(spec, live[name]), live[name])
    tol = ref.RTOL[spec["dtype"]]
    bad = {k: e for k, e in errs.items() if not e <= tol}
    assert not bad, "relative errors above %g: %s" % (tol, bad)
    assert any(k.startswith("ref/dw/fw/") for k in errs) and any(k.startswith("ref/dw/bw/") for k in errs)


@pytest.mark.tf
def test_live_tf_zeros_past_lengths(live):
    """TF's own outputs are zero past each length (so the comparison above covers that rule)."""
    a = live["sbidir_lstm_all_options_gru_len"]
    for b, n in enumerate(a["sequence_length"]):
        assert not a["ref/y/0"][n:, b].any() and not a["ref/y/1"][n:, b].any()
        assert not a["ref/dx"][n:, b].any()


# ============================================================================ finite differences
PAIRS = [("lstm_all", "gru"), ("multi", "rnn_relu"), ("basic_lstm_flat", "lstm_proj"),
         ("gru_softsign", "lstm_peep")]


def _run(cf, cb, xs, s0, L):
    def run(trace):
        res = nn.static_bidirectional_rnn(cf, cb, xs, s0[0], s0[1], sequence_length=_lengths(L),
                                          return_trace=trace)
        return (res[0], res[1:3]) + res[3:]
    return run


def _backward(tr, d_out, d_state):
    return tr.backward(d_out, d_state)


# every pair with several length cases, every length case (test_gradients.LENGTHS) with two pairs
FD_CASES = [(PAIRS[0], "none"), (PAIRS[0], "zero_one_full"), (PAIRS[0], "batch1"),
            (PAIRS[1], "unsorted"), (PAIRS[1], "all_zero"), (PAIRS[1], "T1_len"),
            (PAIRS[2], "zero_one_full"), (PAIRS[2], "T1_len"), (PAIRS[2], "all_zero"),
            (PAIRS[3], "unsorted"), (PAIRS[3], "batch1"), (PAIRS[3], "none")]


@pytest.mark.parametrize("pair,case", FD_CASES, ids=["-".join(p) + "-" + c for p, c in FD_CASES])
def test_gradients_match_finite_differences(pair, case):
    rng = _rng(pair, case, "static-bidir")
    B, T, L = LENGTHS[case]
    cf, cb = make_cell(pair[0], rng, I), make_cell(pair[1], rng, I)
    xs = [rng.standard_normal((B, I)) for _ in range(T)]
    s0 = (random_state(cf, B, rng), random_state(cb, B, rng))
    d_in, d_init, errs = fd_check([cf, cb], _run(cf, cb, xs, s0, L), _backward, xs, s0, rng)
    assert isinstance(d_in, list) and len(d_in) == T and all(d.shape == (B, I) for d in d_in)
    assert any(k.startswith("cell0/") for k in errs) and any(k.startswith("cell1/") for k in errs)
    if L is not None:
        for b, n in enumerate(L):
            assert all(not d_in[t][b].any() for t in range(n, T)), "d_inputs past the length"


def test_partial_cotangents_match_finite_differences():
    """None entries in d_outputs and (d_state_fw, None): the gradient of the matching loss."""
    rng = _rng("static-bidir-partial")
    B, T, L = 3, 4, [4, 0, 2]
    cf, cb = make_cell("lstm_proj", rng, I), make_cell("gru", rng, I)
    xs = [rng.standard_normal((B, I)) for _ in range(T)]
    s0 = (random_state(cf, B, rng), random_state(cb, B, rng))
    run = _run(cf, cb, xs, s0, L)

    def run_loss(trace):            # the loss ignores step 1's outputs and the bw final state
        res = run(trace)
        outs = list(res[0])
        outs[1] = np.zeros_like(outs[1])
        return (outs, (res[1][0], cb.zero_state(B, F64))) + res[2:]

    def backward(tr, d_out, d_state):
        d_out = list(d_out)
        d_out[1] = None
        return tr.backward(d_out, (d_state[0], None))

    fd_check([cf, cb], run_loss, backward, xs, s0, rng)


def test_one_cell_in_both_directions_shares_its_weights_as_tf_does():
    """TF builds one variable set for a cell object used as cell_fw and cell_bw (and as in
    bidirectional_dynamic_rnn, both directions' gradients add up in it): the static form equals
    the dynamic one bit for bit, and its kernel gradient equals finite differences."""
    rng = _rng("shared", "cell")
    B, T = 3, 4
    cell = make_cell("gru", rng, I)
    x = rng.standard_normal((T, B, I))
    L = np.array([4, 0, 2])
    d_out = rng.standard_normal((T, B, 2 * cell.output_size))
    w = cell.output_size
    got = []
    for static in (True, False):
        cell.zero_grad()
        if static:
            outs, _, _, tr = nn.static_bidirectional_rnn(cell, cell, list(x), sequence_length=L,
                                                         dtype=F64, return_trace=True)
            dx = np.stack(tr.backward(list(d_out), None)[0])
            y = np.stack(outs)
        else:
            (of, ob), _, tr = nn.bidirectional_dynamic_rnn(cell, cell, x, L, dtype=F64,
                                                           time_major=True, return_trace=True)
            dx = tr.backward((d_out[:, :, :w], d_out[:, :, w:]), None)[0]
            y = np.concatenate([of, ob], axis=2)
        got.append([y, dx] + [g.copy() for g in cell.grads.values()])
    for a, b in zip(*got):
        assert np.array_equal(a, b)
    K = cell.params["candidate/kernel"]
    num = np.zeros_like(K)
    for idx in np.ndindex(K.shape):
        old = K[idx]
        vals = []
        for v in (old + 1e-6, old - 1e-6):
            K[idx] = v
            outs, _, _ = nn.static_bidirectional_rnn(cell, cell, list(x), sequence_length=L, dtype=F64)
            vals.append(float((np.stack(outs) * d_out).sum()))
        K[idx] = old
        num[idx] = (vals[0] - vals[1]) / 2e-6
    assert np.abs(num - got[0][2 + list(cell.grads).index("candidate/kernel")]).max() < 1e-7


# ============================================================================ independent routes
@pytest.mark.parametrize("case", ["none", "zero_one_full", "unsorted", "all_zero", "batch1", "T1"])
@pytest.mark.parametrize("pair", PAIRS[:2], ids=["-".join(p) for p in PAIRS[:2]])
def test_equals_bidirectional_dynamic_rnn_on_stacked_inputs(pair, case):
    """outputs[t] = concat(out_fw[t], out_bw[t]); states, d_inputs, d_initial_states and every
    parameter gradient equal the time-major bidirectional_dynamic_rnn's, bit for bit."""
    rng = _rng(pair, case, "static-vs-dynamic")
    B, T, L = LENGTHS[case]
    cf, cb = make_cell(pair[0], rng, I), make_cell(pair[1], rng, I)
    x = rng.standard_normal((T, B, I))
    s0 = (random_state(cf, B, rng), random_state(cb, B, rng))
    wf, wb = cf.output_size, cb.output_size
    d_out = rng.standard_normal((T, B, wf + wb))
    outs, sf, sb = nn.static_bidirectional_rnn(cf, cb, list(x), s0[0], s0[1], sequence_length=L)
    d_st = (random_like(sf, rng), random_like(sb, rng))

    results = []
    for static in (True, False):
        cf.zero_grad()
        cb.zero_grad()
        if static:
            outs, sf, sb, tr = nn.static_bidirectional_rnn(cf, cb, list(x), s0[0], s0[1],
                                                           sequence_length=L, return_trace=True)
            dxs, d0 = tr.backward(list(d_out), d_st)
            y, dx = np.stack(outs), np.stack(dxs)
        else:
            (of, ob), (sf, sb), tr = nn.bidirectional_dynamic_rnn(
                cf, cb, x, L, s0[0], s0[1], time_major=True, return_trace=True)
            dx, d0 = tr.backward((d_out[:, :, :wf], d_out[:, :, wf:]), d_st)
            y = np.concatenate([of, ob], axis=2)
        results.append([y, dx] + flatten((sf, sb, d0)) +
                       [g.copy() for c in (cf, cb) for g in c.grads.values()])
    for a, b in zip(*results):
        assert a.shape == b.shape and np.array_equal(a, b)
    if L is not None:
        for b, n in enumerate(L):
            assert not results[0][0][n:, b].any(), "outputs past the length must be exactly 0"
            if n == 0:
                for a, a0 in zip(flatten((sf, sb)), flatten(s0)):
                    assert np.array_equal(a[b], a0[b]), "length 0: final states are the initial ones"


def test_backward_direction_reads_each_rows_prefix_reversed():
    """The bw half of outputs[t] for row b is cell_bw run over x[L-1], ..., x[t] of that row
    (single steps from its initial state), independent of what lies past the length."""
    rng = _rng("static-bidir-manual")
    B, T, L = 3, 4, [2, 4, 0]
    cf, cb = make_cell("gru", rng, I), make_cell("lstm_peep", rng, I)
    xs = [rng.standard_normal((B, I)) for _ in range(T)]
    s_bw = random_state(cb, B, rng)
    outs, _, st_bw = nn.static_bidirectional_rnn(cf, cb, xs, initial_state_bw=s_bw, sequence_length=L)
    wf = cf.output_size
    for b, n in enumerate(L):
        s = S(s_bw.c[b:b + 1], s_bw.h[b:b + 1])
        for t in range(n - 1, -1, -1):
            o, s = cb(xs[t][b:b + 1], s)
            np.testing.assert_allclose(outs[t][b, wf:], o[0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(st_bw.h[b], s.h[0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(st_bw.c[b], s.c[0], rtol=1e-12, atol=1e-13)


def test_float32_and_trace_size():
    rng = _rng("static-bidir-f32")
    cf, cb = R.GRUCell(3, dtype=F32, seed=1), R.BasicLSTMCell(2, dtype=F32, seed=2)
    xs = [rng.standard_normal((2, 4)).astype(F32) for _ in range(3)]
    outs, sf, sb, tr = nn.static_bidirectional_rnn(cf, cb, xs, dtype=F32, sequence_length=[3, 2],
                                                   return_trace=True)
    assert all(o.dtype == F32 and o.shape == (2, 5) for o in outs)
    assert sf.dtype == F32 and sb.h.dtype == F32
    assert len(tr.records) == 2 and tr.records == tr.fw.records + tr.bw.records
    assert tr.nbytes == tr.inner.nbytes > 0
    dxs, (d0f, d0b) = tr.backward(None, None)
    assert len(dxs) == 3 and all(d.dtype == F32 and not d.any() for d in dxs)
    assert not d0f.any() and not d0b.h.any()


def test_exported_like_the_other_sequence_functions():
    f = npl.rnn_ops.static_bidirectional_rnn
    assert nn.static_bidirectional_rnn is f and R.static_bidirectional_rnn is f
    assert nn.rnn_cell.static_bidirectional_rnn is f
    assert "static_bidirectional_rnn" in nn.__all__ and "static_bidirectional_rnn" in R.__all__
    assert {"static_bidirectional_rnn", "StaticBidirectionalTrace"} <= set(npl.rnn_ops.__all__)
    assert "y_bw = R(RNN_bw(R(x)))" in " ".join(f.__doc__.split())


# ============================================================================ errors
def _x(shape=(2, 4), dtype=F64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _gru(dtype=F64, units=2, width=4):
    return _built_gru(dtype, units, width)


def _xs(T=3, shape=(2, 4), dtype=F64):
    return [_x(shape, dtype, t) for t in range(T)]


sbr = nn.static_bidirectional_rnn
# (id, thunk, exception, substrings the message must contain)
FORWARD_CASES = [
    ("inputs_empty", lambda: sbr(_lstm(), _gru(), []), ValueError, ["inputs", "empty"]),
    ("inputs_array", lambda: sbr(_lstm(), _gru(), _x((3, 2, 4))), TypeError, ["inputs", "list", "ndarray"]),
    ("inputs_none", lambda: sbr(_lstm(), _gru(), None), TypeError, ["inputs", "NoneType"]),
    ("inputs_rank3_step", lambda: sbr(_lstm(), _gru(), [_x((2, 3, 4))]), ValueError,
     ["inputs[0]", "rank 2", "(2, 3, 4)"]),
    ("inputs_ragged_width", lambda: sbr(_lstm(), _gru(), [_x(), _x((2, 3))]), ValueError,
     ["inputs[1]", "(2, 3)", "(2, 4)"]),
    ("inputs_ragged_batch", lambda: sbr(_lstm(), _gru(), [_x(), _x(), _x((3, 4))]), ValueError,
     ["inputs[2]", "(3, 4)", "(2, 4)"]),
    ("inputs_mixed_dtype", lambda: sbr(_lstm(), _gru(), [_x(), _x(dtype=F32)]), TypeError,
     ["inputs[1]", "float32", "float64"]),
    ("inputs_int", lambda: sbr(_lstm(), _gru(), [np.ones((2, 4), np.int64)]), TypeError,
     ["inputs[0]", "int64"]),
    ("inputs_no_features", lambda: sbr(_lstm(), _gru(), [_x((2, 0))]), ValueError, ["inputs[0]", "(2, 0)"]),
    ("width_vs_cell_fw", lambda: sbr(_lstm(), _gru(width=5), _xs(shape=(2, 5))), ValueError,
     ["inputs[0]", "cell_fw", "4", "(2, 5)"]),
    ("width_vs_cell_bw", lambda: sbr(_lstm(), _gru(width=5), _xs()), ValueError,
     ["inputs[0]", "cell_bw", "5", "(2, 4)"]),
    ("f32_inputs_f64_cells", lambda: sbr(_lstm(), _gru(), _xs(dtype=F32)), TypeError,
     ["inputs", "float32", "float64"]),
    ("dtype_arg_disagrees", lambda: sbr(_lstm(), _gru(), _xs(), dtype=F32), TypeError,
     ["dtype", "float32", "float64"]),
    ("dtype_arg_int", lambda: sbr(_lstm(), _gru(), _xs(), dtype=np.int32), TypeError, ["dtype", "int32"]),
    ("not_a_cell_fw", lambda: sbr("lstm", _gru(), _xs()), TypeError, ["cell_fw", "str"]),
    ("not_a_cell_bw", lambda: sbr(_lstm(), None, _xs()), TypeError, ["cell_bw", "NoneType"]),
    ("len_gt_T", lambda: sbr(_lstm(), _gru(), _xs(2), sequence_length=[3, 1]), ValueError,
     ["sequence_length", "2", "3"]),
    ("len_negative", lambda: sbr(_lstm(), _gru(), _xs(), sequence_length=[-1, 1]), ValueError,
     ["sequence_length", "-1"]),
    ("len_float", lambda: sbr(_lstm(), _gru(), _xs(), sequence_length=[1.0, 2.0]), TypeError,
     ["sequence_length", "float64"]),
    ("len_wrong_batch", lambda: sbr(_lstm(), _gru(), _xs(), sequence_length=[1, 2, 3]), ValueError,
     ["sequence_length", "(2,)", "(3,)"]),
    ("state_fw_structure", lambda: sbr(_lstm(), _gru(), _xs(), initial_state_fw=np.zeros((2, 3))),
     TypeError, ["initial_state_fw", "LSTMStateTuple"]),
    ("state_fw_h_shape", lambda: sbr(_lstm(), _gru(), _xs(),
                                     initial_state_fw=S(np.zeros((2, 3)), np.zeros((2, 4)))),
     ValueError, ["initial_state_fw.h", "(2, 3)", "(2, 4)"]),
    ("state_bw_shape", lambda: sbr(_lstm(), _gru(), _xs(), initial_state_bw=np.zeros((2, 3))),
     ValueError, ["initial_state_bw", "(2, 2)", "(2, 3)"]),
    ("state_bw_dtype", lambda: sbr(_lstm(), _gru(), _xs(), initial_state_bw=np.zeros((2, 2), F32)),
     TypeError, ["initial_state_bw", "float32", "float64"]),
]


@pytest.mark.parametrize("case", FORWARD_CASES, ids=[c[0] for c in FORWARD_CASES])
def test_bad_input_raises_naming_the_argument(case):
    _, thunk, exc, words = case
    assert_raises_naming(exc, words, thunk)


def _trace():
    """(trace, good (d_outputs, d_final_state), cells, [(bad args, exception, words)])."""
    cf, cb = _lstm(), _gru()
    outs, sf, sb, tr = sbr(cf, cb, _xs(), sequence_length=[3, 1], return_trace=True)
    good = ([o + 1.0 for o in outs], (S(sf.c + 1, sf.h + 1), sb + 1))
    bad = [((outs[:2], None), ValueError, ["d_outputs", "3", "2 entries"]),
           ((np.stack(outs), None), ValueError, ["d_outputs", "list", "3"]),
           (([outs[0], np.zeros((2, 3)), None], None), ValueError, ["d_outputs[1]", "(2, 5)", "(2, 3)"]),
           (([None, outs[1][:, :, None], None], None), ValueError, ["d_outputs[1]", "(2, 5)", "(2, 5, 1)"]),
           (([None, None, outs[2].astype(F32)], None), TypeError, ["d_outputs[2]", "float32", "float64"]),
           (([None, None, outs[2].astype(int)], None), TypeError, ["d_outputs[2]", "int64"]),
           ((None, sf), TypeError, ["d_final_state", "pair", "LSTMStateTuple"]),
           ((None, (sb, sf)), TypeError, ["d_final_state[0]", "LSTMStateTuple"]),
           ((None, (sf, np.zeros((2, 3)))), ValueError, ["d_final_state[1]", "(2, 2)", "(2, 3)"]),
           ((None, (S(sf.c, np.zeros((2, 1))), None)), ValueError,
            ["d_final_state[0].h", "(2, 3)", "(2, 1)"]),
           ((outs, (sf, sb.astype(F32))), TypeError, ["d_final_state[1]", "float32"])]
    return tr, good, (cf, cb), bad


def _bad_ids():
    return ["%d-%s" % (k, words[0]) for k, (_, _, words) in enumerate(_trace()[3])]


@pytest.mark.parametrize("k", range(len(_bad_ids())), ids=_bad_ids())
def test_bad_cotangent_raises_naming_it(k):
    tr, _, _, bad = _trace()
    args, exc, words = bad[k]
    assert_raises_naming(exc, words, tr.backward, *args)


def test_rejected_backward_leaves_trace_usable_and_accumulates_nothing():
    tr, good, cells, bad = _trace()
    for args, exc, _ in bad:
        with pytest.raises(exc):
            tr.backward(*args)
    assert all(not g.any() for c in cells for g in c.grads.values())
    tr.backward(*good)
    assert all(g.any() for c in cells for g in c.grads.values())


def test_backward_twice_raises():
    tr, good, _, _ = _trace()
    tr.backward(*good)
    for args in (good, (None, None)):
        with pytest.raises(npl.BackwardTwiceError, match="already called on this StaticBidirectionalTrace"):
            tr.backward(*args)


@pytest.mark.parametrize("which", [0, 1])
def test_stale_trace_raises_before_accumulating(which):
    tr, good, cells, _ = _trace()
    cell = cells[which]
    cell.set_params({k: v + 0.5 for k, v in cell.params.items()})
    with pytest.raises(npl.StaleTraceError, match="weights of .* were replaced.*forward again"):
        tr.backward(*good)
    assert all(not g.any() for c in cells for g in c.grads.values())
