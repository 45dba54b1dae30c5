"""npl.inspect: gates, states and per-step BPTT gradients of a trace, gradient flow, plots, CLI.

References: gate values, c and h are recomputed here step by step from TensorFlow 1's equations
(LSTMCell with peepholes / clipping / projection, GRUCell, BasicRNNCell, dynamic_rnn's masking);
dL/dh_t, dL/dc_t and each step's weight-gradient contribution are checked against float64 central
finite differences of suffix / piecewise forward runs (the backward is never used as reference).
"""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest

import npl
import npl.inspect as ni
from npl.cells import LSTMStateTuple
from helpers import numpy_backend, flatten, numeric_grads, randomize_params, rel_err  # noqa: F401 (numpy_backend: autouse)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, T, I = 3, 5, 4
LENGTHS = np.array([5, 3, 1])




# ---------------------------------------------------------------------------- TF1 reference math
def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def tf_reference(cell, x, state, lengths):
    """Run TF1's cell equations + dynamic_rnn masking in plain numpy (batch-major x [B, T, I]).

    Returns gates (TF names -> [T, B, H], computed at every step), c [T, B, H] (LSTM), h [T, B, P]
    (carried past each length) and outputs [B, T, P] (zero past each length)."""
    p = {k: np.array(v, np.float64) for k, v in cell.params.items()}
    Bn, Tn, _ = x.shape
    valid = np.arange(Tn)[:, None] < np.asarray(lengths)[None, :]          # [T, B]
    if isinstance(cell, npl.rnn.LSTMCell):
        c, h = np.array(state.c, np.float64), np.array(state.h, np.float64)
    else:
        c, h = None, np.array(state, np.float64)
    names = {"lstm": "ijfo", "gru": ("r", "u", "candidate"), "rnn": ("h",)}
    kind = "lstm" if c is not None else ("gru" if isinstance(cell, npl.rnn.GRUCell) else "rnn")
    gates = {n: [] for n in names[kind]}
    cs, hs, pre_o = [], [], []
    for t in range(Tn):
        xt = x[:, t]
        if kind == "lstm":
            z = np.concatenate([xt, h], 1) @ p["kernel"] + p["bias"]
            zi, zj, zf, zo = np.split(z, 4, axis=1)
            peep = "w_i_diag" in p
            i = sigmoid(zi + (p["w_i_diag"] * c if peep else 0))
            f = sigmoid(zf + cell.forget_bias + (p["w_f_diag"] * c if peep else 0))
            j = np.tanh(zj)
            c_new = f * c + i * j
            if cell._cell_clip is not None:
                c_new = np.clip(c_new, -cell._cell_clip, cell._cell_clip)
            o = sigmoid(zo + (p["w_o_diag"] * c_new if peep else 0))
            h_new = o * np.tanh(c_new)
            if "projection/kernel" in p:
                h_new = h_new @ p["projection/kernel"]
                if cell._proj_clip is not None:
                    h_new = np.clip(h_new, -cell._proj_clip, cell._proj_clip)
            for n, v in zip("ijfo", (i, j, f, o)):
                gates[n].append(v)
            pre_o.append(zo)
            v = valid[t][:, None]
            c = np.where(v, c_new, c)
            h = np.where(v, h_new, h)
            cs.append(c)
        elif kind == "gru":
            ru = sigmoid(np.concatenate([xt, h], 1) @ p["gates/kernel"] + p["gates/bias"])
            r, u = np.split(ru, 2, axis=1)
            cand = np.tanh(np.concatenate([xt, r * h], 1) @ p["candidate/kernel"] + p["candidate/bias"])
            h_new = u * h + (1 - u) * cand
            for n, v in zip(("r", "u", "candidate"), (r, u, cand)):
                gates[n].append(v)
            h = np.where(valid[t][:, None], h_new, h)
        else:
            h_new = np.tanh(np.concatenate([xt, h], 1) @ p["kernel"] + p["bias"])
            gates["h"].append(h_new)
            h = np.where(valid[t][:, None], h_new, h)
        hs.append(h)
    out = {"gates": {n: np.stack(v) for n, v in gates.items()}, "h": np.stack(hs), "valid": valid}
    out["outputs"] = (out["h"] * valid[:, :, None]).transpose(1, 0, 2)
    if c is not None:
        out["c"], out["zo"] = np.stack(cs), np.stack(pre_o)
    return out


def lstm_h_of_c(cell, ref, t, c):
    """h_t as a function of c_t (TF's equations, from o's saved pre-activation): what the total
    dL/dc_t includes besides the path into step t+1.  Rows past their length carry h."""
    p = cell.params
    a_o = ref["zo"][t] + (p["w_o_diag"] * c if "w_o_diag" in p else 0)
    h = sigmoid(a_o) * np.tanh(c)
    if "projection/kernel" in p:
        h = h @ p["projection/kernel"]
        if cell._proj_clip is not None:
            h = np.clip(h, -cell._proj_clip, cell._proj_clip)
    return np.where(ref["valid"][t][:, None], h, ref["h"][t])


def make(kind, rng, input_size=I):
    cells = {
        "lstm": lambda: npl.rnn.LSTMCell(3, use_peepholes=True, cell_clip=0.9, num_proj=2,
                                         proj_clip=0.5, forget_bias=float(rng.uniform(-1, 1))),
        "basic_lstm": lambda: npl.rnn.BasicLSTMCell(3, forget_bias=float(rng.uniform(-1, 1))),
        "gru": lambda: npl.rnn.GRUCell(3),
        "rnn": lambda: npl.rnn.BasicRNNCell(3),
    }
    cell = cells[kind]()
    cell.build(input_size, np.float64)
    randomize_params(cell, rng, 0.7)
    return cell


def rand_state(cell, rng, batch=B):
    z = cell.zero_state(batch, np.float64)
    if isinstance(z, LSTMStateTuple):
        return LSTMStateTuple(*(rng.standard_normal(a.shape) * 0.5 for a in z))
    return rng.standard_normal(z.shape) * 0.5


def run(cell, x, state, lengths, rng, record=True):
    """dynamic_rnn + backward of L = <w_out, outputs> + <w_final, final_state>."""
    out, final, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state,
                                        return_trace=True)
    w_out = rng.standard_normal(out.shape)
    w_fin = type(final)(*(rng.standard_normal(a.shape) for a in final)) \
        if isinstance(final, LSTMStateTuple) else rng.standard_normal(final.shape)
    if record:
        tr.record_state_grads()
    cell.zero_grad()
    tr.backward(w_out, w_fin)
    return tr, w_out, w_fin


def dot(a, w):
    return float(sum((np.asarray(u) * v).sum() for u, v in zip(flatten(a), flatten(w))))


def suffix_loss(cell, x, lengths, w_out, w_fin, t, state):
    """L restricted to what depends on the state after step t (0-based): <w_out[:, t], y_t> plus
    everything computed by a fresh dynamic_rnn over steps t+1.. started from ``state``."""
    h = state.h if isinstance(state, LSTMStateTuple) else state
    valid_t = (np.asarray(lengths) > t)[:, None]
    total = float((w_out[:, t] * h * valid_t).sum())
    if t + 1 < x.shape[1]:
        lens = np.clip(np.asarray(lengths) - t - 1, 0, None)
        out, fin = npl.nn.dynamic_rnn(cell, x[:, t + 1:], sequence_length=lens, initial_state=state)
        return total + dot(out, w_out[:, t + 1:]) + dot(fin, w_fin)
    return total + dot(state, w_fin)


# ---------------------------------------------------------------------------- forward values
@pytest.mark.parametrize("kind", ["lstm", "basic_lstm", "gru", "rnn"])
def test_gates_and_states_match_tf_equations(kind, rng):
    cell = make(kind, rng)
    x = rng.standard_normal((B, T, I))
    state = rand_state(cell, rng)
    out, _, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=LENGTHS, initial_state=state,
                                    return_trace=True)
    ref = tf_reference(cell, x, state, LENGTHS)
    np.testing.assert_allclose(out, ref["outputs"], atol=1e-12)      # the reference is the right one
    L = ni.inspect_trace(tr).layer(0)
    assert L.gate_names == tuple(ref["gates"])                         # TF's names, TF's order
    assert ni.AXES == ("time", "batch", "unit")
    valid = ref["valid"]
    np.testing.assert_array_equal(L.valid, valid)
    gates = L.gates()
    for name, v in ref["gates"].items():
        assert gates[name].shape == (T, B, cell.num_units)
        np.testing.assert_allclose(gates[name][valid], v[valid], rtol=1e-12, atol=1e-13, err_msg=name)
        np.testing.assert_allclose(L.gate(name)[valid], v[valid], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(L.h, ref["h"], atol=1e-12)
    np.testing.assert_allclose(L.h0, flatten(state)[-1], atol=0)
    if "c" in ref:
        np.testing.assert_allclose(L.c, ref["c"], atol=1e-12)
        np.testing.assert_allclose(L.c0, state.c, atol=0)
    # one step's view and the tidy summary, against the reference values
    s = L.step(2)
    for name, v in ref["gates"].items():
        np.testing.assert_allclose(s["gates"][name], v[2], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(s["h"], ref["h"][2], atol=1e-12)
    np.testing.assert_allclose(s["h_prev"], ref["h"][1], atol=1e-12)
    rows = L.summary(threshold=0.1)
    assert [r["t"] for r in rows] == list(range(1, T + 1))
    for t, r in enumerate(rows):
        assert r["valid"] == int(valid[t].sum())
        for name, v in ref["gates"].items():
            sel = v[t][valid[t]]
            assert r["mean_" + name] == pytest.approx(sel.mean(), rel=1e-12)
            if name in ("i", "f", "o", "r", "u"):
                expect = ((sel < 0.1) | (sel > 0.9)).mean()
            else:                                                      # tanh: |v| > 0.8
                expect = (np.abs(sel) > 0.8).mean()
            assert r["sat_" + name] == pytest.approx(expect)
        assert "|dL/dh|" not in r                                      # forward only
    text = L.format_summary()
    assert "mean_" + L.gate_names[0] in text and str(T - 1) in text


def test_multilayer_labels_and_upper_layer_gates(rng):
    cells = [make("basic_lstm", rng), make("gru", rng, input_size=3)]
    multi = npl.rnn.MultiRNNCell(cells)
    x = rng.standard_normal((B, T, I))
    st = (rand_state(cells[0], rng), rand_state(cells[1], rng))
    _, _, tr = npl.nn.dynamic_rnn(multi, x, initial_state=st, return_trace=True)
    insp = ni.inspect_trace(tr)
    assert insp.num_layers == 2 and insp.labels == ["layer 0", "layer 1"]
    assert insp.layer(-1) is insp.layer(1) is insp["layer 1"]
    # layer 1 sees layer 0's h as its input: recompute its GRU gates from that
    ref = tf_reference(cells[1], insp.layer(0).h.transpose(1, 0, 2), st[1], [T] * B)
    for name, v in ref["gates"].items():
        np.testing.assert_allclose(insp.layer(1).gate(name), v, rtol=1e-12, atol=1e-13)
    assert len(insp.summary()) == 2 * T


# ---------------------------------------------------------------------------- gradients vs FD
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_state_gradients_match_finite_differences(kind, rng):
    cell = make(kind, rng)
    x = rng.standard_normal((B, T, I))
    state = rand_state(cell, rng)
    tr, w_out, w_fin = run(cell, x, state, LENGTHS, rng)
    L = ni.inspect_trace(tr).layer(0)
    ref = tf_reference(cell, x, state, LENGTHS)
    d_h = L.d_h
    assert d_h.shape == (T, B, cell.output_size)
    for t in range(T):
        # dL/dh_t: perturb h_t with c_t fixed (h_t feeds the output at t and step t+1)
        h = ref["h"][t].copy()
        st = LSTMStateTuple(ref["c"][t], h) if kind == "lstm" else h
        num, = numeric_grads(lambda: suffix_loss(cell, x, LENGTHS, w_out, w_fin, t, st), [h])
        assert rel_err(d_h[t], num) < 1e-6, "dL/dh_%d" % t
        if kind == "lstm":
            # dL/dc_t, total: c_t feeds step t+1 and, through h_t = o_t * tanh(c_t), the output
            c = ref["c"][t].copy()
            num, = numeric_grads(lambda: suffix_loss(
                cell, x, LENGTHS, w_out, w_fin, t, LSTMStateTuple(c, lstm_h_of_c(cell, ref, t, c))), [c])
            assert rel_err(L.d_c[t], num) < 1e-6, "dL/dc_%d" % t
    np.testing.assert_allclose(L.d_h_norm, np.linalg.norm(d_h, axis=2))
    rows = L.summary()
    for t, r in enumerate(rows):
        assert r["|dL/dh|"] == pytest.approx(np.linalg.norm(d_h[t]))
        if kind == "lstm":
            assert r["|dL/dc|"] == pytest.approx(np.linalg.norm(L.d_c[t]))


def piecewise_loss(cell, cell_t, t, x, state, lengths, w_out, w_fin):
    """L with step t computed by ``cell_t`` (a copy whose weights are perturbed) and every other
    step by ``cell``: three dynamic_rnn pieces chained through their states."""
    outs, Tn = [], x.shape[1]
    for a, b, c in ((0, t, cell), (t, t + 1, cell_t), (t + 1, Tn, cell)):
        if b <= a:
            continue
        lens = np.clip(np.asarray(lengths) - a, 0, b - a)
        o, state = npl.nn.dynamic_rnn(c, x[:, a:b], sequence_length=lens, initial_state=state)
        outs.append(o)
    return dot(np.concatenate(outs, axis=1), w_out) + dot(state, w_fin)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_weight_contributions_per_step_match_fd_and_sum_to_grads(kind, rng):
    cell = make(kind, rng)
    x = rng.standard_normal((B, T, I))
    state = rand_state(cell, rng)
    tr, w_out, w_fin = run(cell, x, state, LENGTHS, rng)
    L = ni.inspect_trace(tr).layer(0)
    contrib = L.weight_grad_contributions()
    assert set(contrib) == set(cell.params)
    for name, g in cell.grads.items():
        assert contrib[name].shape == (T,) + g.shape
        np.testing.assert_allclose(contrib[name].sum(axis=0), g, rtol=1e-10, atol=1e-12, err_msg=name)
    for t in (0, 2):                       # step 2 is past row 2's length: its rows contribute 0
        cell_t = copy.deepcopy(cell)
        names = list(cell_t.params)
        num = numeric_grads(lambda: piecewise_loss(cell, cell_t, t, x, state, LENGTHS, w_out, w_fin),
                            [cell_t.params[n] for n in names])
        for n, v in zip(names, num):
            assert rel_err(contrib[n][t], v) < 1e-6, "%s at step %d" % (n, t)
        step = L.step(t)
        for n in names:
            np.testing.assert_array_equal(step["weight_grads"][n], contrib[n][t])


def test_weight_contributions_of_stacks_and_bidirectional(rng):
    cells = [make("lstm", rng), make("gru", rng, input_size=2)]
    multi = npl.rnn.MultiRNNCell(cells)
    x = rng.standard_normal((B, T, I))
    _, _, tr = npl.nn.dynamic_rnn(multi, x, sequence_length=LENGTHS, return_trace=True)
    tr.record_state_grads()                     # the projection's contribution is built from dL/dh_t
    tr.backward(rng.standard_normal((B, T, 3)), None)
    for L, c in zip(ni.inspect_trace(tr), cells):
        for name, v in L.weight_grad_contributions().items():
            np.testing.assert_allclose(v.sum(axis=0), c.grads[name], rtol=1e-10, atol=1e-12)
    fw, bw = make("basic_lstm", rng), make("rnn", rng)
    (o_fw, o_bw), _, tr = npl.nn.bidirectional_dynamic_rnn(fw, bw, x, sequence_length=LENGTHS,
                                                           return_trace=True)
    tr.record_state_grads()
    tr.backward((rng.standard_normal(o_fw.shape), rng.standard_normal(o_bw.shape)), None)
    insp = ni.inspect_trace(tr)
    assert insp.labels == ["fw layer 0", "bw layer 0"]
    for L, c in zip(insp, (fw, bw)):
        assert L.cell is c
        for name, v in L.weight_grad_contributions().items():
            np.testing.assert_allclose(v.sum(axis=0), c.grads[name], rtol=1e-10, atol=1e-12)
    assert insp.layer("bw layer 0").d_h.shape == (T, B, 3)


def test_other_trace_kinds(rng):
    cell = make("gru", rng)
    x = rng.standard_normal((B, I))
    h = rand_state(cell, rng)
    _, _, st = cell(x, h, return_trace=True)
    L = ni.inspect_trace(st).layer(0)
    ref = tf_reference(cell, x[:, None], h, [1] * B)
    np.testing.assert_allclose(L.gate("u")[0], ref["gates"]["u"][0], rtol=1e-12)
    outs, _, tr = npl.nn.static_rnn(cell, [x, x], initial_state=h, return_trace=True)
    assert ni.inspect_trace(tr).layer(0).steps == 2
    _, _, _, tr = npl.rnn.stack_bidirectional_dynamic_rnn([make("rnn", rng)], [make("rnn", rng)],
                                                          rng.standard_normal((B, T, I)), return_trace=True)
    assert ni.inspect_trace(tr).labels == ["stack 0 fw layer 0", "stack 0 bw layer 0"]


# ---------------------------------------------------------------------------- bad input
def test_clear_errors(rng):
    cell = make("gru", rng)
    x = rng.standard_normal((B, T, I))
    _, _, tr = npl.nn.dynamic_rnn(cell, x, return_trace=True)
    insp = ni.inspect_trace(tr)
    L = insp.layer(0)
    assert not L.backpropagated and "forward only" in repr(L)
    for what in (lambda: L.d_h, L.d_gates, L.weight_grad_contributions):
        with pytest.raises(ValueError, match="not been backpropagated.*record_state_grads"):
            what()
    with pytest.raises(ValueError, match=r"layer must be in range \[0, 1\).*got 3"):
        insp.layer(3)
    with pytest.raises(ValueError, match=r"labels \['layer 0'\]"):
        insp.layer("layer 7")
    with pytest.raises(ValueError, match=r"step must be in range \[0, 5\).*got 5"):
        L.step(5)
    with pytest.raises(TypeError, match="step must be an integer"):
        L.step(1.5)
    with pytest.raises(ValueError, match="GRUCell has no cell state c"):
        L.c
    with pytest.raises(ValueError, match=r"gate must be one of \['r', 'u', 'candidate'\].*'f'"):
        L.gate("f")
    with pytest.raises(TypeError, match="trace must be an npl trace"):
        ni.inspect_trace(object())
    # backward without record_state_grads: the gate gradients exist, the state gradients do not
    tr.backward(rng.standard_normal((B, T, 3)), None)
    assert L.backpropagated and L.d_gates()["u"].shape == (T, B, 3)
    with pytest.raises(ValueError, match="without trace.record_state_grads"):
        L.d_h
    assert "|dL/dh|" not in L.summary()[0] and "|dW_t|" in L.summary()[0]


# ---------------------------------------------------------------------------- gradient flow
@pytest.mark.parametrize("kind", ["basic_lstm", "gru", "rnn"])
def test_gradient_flow_matches_fd_and_restores_grads(kind, rng):
    cell = make(kind, rng)
    x = rng.standard_normal((B, T, I))
    before = {k: rng.standard_normal(v.shape) for k, v in cell.grads.items()}
    for k, v in cell.grads.items():
        v[...] = before[k]
    d_last = rng.standard_normal((B, cell.output_size))
    flow = ni.gradient_flow(cell, x, d_last=d_last)
    for k, v in cell.grads.items():
        np.testing.assert_array_equal(v, before[k])
    state = cell.zero_state(B, np.float64)
    ref = tf_reference(cell, x, state, [T] * B)
    w_out = np.zeros((B, T, cell.output_size))
    w_out[:, -1] = d_last
    w_fin = (type(state)(*(np.zeros_like(a) for a in state)) if isinstance(state, tuple)
             else np.zeros_like(state))
    assert flow.loss == pytest.approx(float((ref["outputs"][:, -1] * d_last).sum()))
    for t in range(T):
        h = ref["h"][t].copy()
        st = LSTMStateTuple(ref["c"][t], h) if "c" in ref else h
        num, = numeric_grads(lambda: suffix_loss(cell, x, [T] * B, w_out, w_fin, t, st), [h])
        assert flow.dh_norm[t] == pytest.approx(np.linalg.norm(num), rel=1e-6)
        if "c" in ref:
            c = ref["c"][t].copy()
            num, = numeric_grads(lambda: suffix_loss(
                cell, x, [T] * B, w_out, w_fin, t, LSTMStateTuple(c, lstm_h_of_c(cell, ref, t, c))), [c])
            assert flow.dc_norm[t] == pytest.approx(np.linalg.norm(num), rel=1e-6)
    gate = {"basic_lstm": "f", "gru": "u", "rnn": None}[kind]
    assert flow.gate_name == gate
    if gate is None:
        assert flow.gate_product is None and flow.dc_norm is None
    else:
        g = ref["gates"][gate]
        for t in range(T):
            expect = np.prod(g[t + 1:], axis=0)                        # f_{t+2} ... f_T (1-based)
            np.testing.assert_allclose(flow.gate_product_full[t], expect, rtol=1e-12)
            assert flow.gate_product[t] == pytest.approx(expect.mean())
    assert flow.ratio == pytest.approx(flow.dh_norm[0] / flow.dh_norm[-1])
    rows = flow.table()
    assert [r["t"] for r in rows] == list(range(T, 0, -1))
    assert "||dL/dh_1|| / ||dL/dh_T||" in str(flow)
    with pytest.raises(ValueError, match=r"d_last must have shape \[batch, output_size\]"):
        ni.gradient_flow(cell, x, d_last=np.ones((B + 1, 2)))


def test_gradient_flow_of_a_stack_and_bad_arguments(rng):
    cells = [make("basic_lstm", rng), make("gru", rng, input_size=3)]
    multi = npl.rnn.MultiRNNCell(cells)
    x = rng.standard_normal((B, T, I))
    top, bottom = ni.gradient_flow(multi, x), ni.gradient_flow(multi, x, layer=0)
    _, _, tr = npl.nn.dynamic_rnn(multi, x, return_trace=True)
    tr.record_state_grads()
    d = np.zeros((B, T, 3))
    d[:, -1] = 1.0
    tr.backward(d, None)
    for k, fl in ((1, top), (0, bottom)):
        L = ni.inspect_trace(tr).layer(k)
        np.testing.assert_allclose(fl.dh_norm, np.linalg.norm(L.d_h.reshape(T, -1), axis=1), rtol=1e-12)
    assert top.gate_name == "u" and bottom.gate_name == "f"
    with pytest.raises(ValueError, match=r"layer must be in range \[0, 2\)"):
        ni.gradient_flow(multi, x, layer=2)
    with pytest.raises(ValueError, match="units must be a positive integer, got 0"):
        ni.train_tiny_model(units=0)
    with pytest.raises(ValueError, match="cell kind must be one of"):
        ni.train_tiny_model(cell="transformer", steps=1)


def test_vanishing_and_exploding_regimes():
    small = ni.compare_gradient_flow(steps=30, seed=1)
    assert set(small) == {"BasicRNNCell", "BasicLSTMCell", "GRUCell"}
    assert all(fl.ratio < 0.05 for fl in small.values())              # default init: all vanish
    lstm = small["BasicLSTMCell"]                                      # ... the LSTM's c-path with
    assert lstm.gate_product[0] < 1e-2                                 # its forget-gate product
    large = ni.compare_gradient_flow(steps=30, seed=1, weight_scale=4.0)
    assert large["BasicRNNCell"].ratio > 10                           # the RNN explodes
    assert large["BasicLSTMCell"].ratio < large["BasicRNNCell"].ratio
    open_gate = {"fb5": npl.rnn.BasicLSTMCell(16, forget_bias=5.0, seed=1, dtype=np.float64)}
    assert ni.compare_gradient_flow(steps=30, seed=1, cells=open_gate)["fb5"].ratio > 0.05


# ---------------------------------------------------------------------------- plots and CLI
def assert_png(path):
    assert os.path.isfile(path) and os.path.getsize(path) > 100, path
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert w > 50 and h > 50, (path, w, h)


def test_plots_write_pngs(tmp_path, rng):
    pytest.importorskip("matplotlib")
    cell = make("lstm", rng)
    tr, _, _ = run(cell, rng.standard_normal((B, T, I)), rand_state(cell, rng), LENGTHS, rng)
    insp = ni.inspect_trace(tr)
    paths = [ni.plot_gate_saturation(insp, str(tmp_path / "sat.png")),
             ni.plot_gate_histogram(insp.layer(0), str(tmp_path / "hist.png")),
             ni.plot_state_trajectories(tr, str(tmp_path / "sub" / "traj.png"), units=[0, 1], batch_index=1),
             ni.plot_step_gradients(insp, tmp_path / "grads.png"),
             ni.plot_gradient_flow([ni.compare_gradient_flow(steps=8, units=4)],
                                   str(tmp_path / "flow.png"), titles=["T=8"]),
             ni.plot_loss_curve([3.0, 2.0, 1.5], str(tmp_path / "loss.png"))]
    for p in paths:
        assert_png(str(p))
    with pytest.raises(ValueError, match=r"batch_index must be in range \[0, 3\)"):
        ni.plot_state_trajectories(insp, str(tmp_path / "x.png"), batch_index=3)
    with pytest.raises(ValueError, match=r"units entry must be in range \[0, 2\)"):
        ni.plot_state_trajectories(insp, str(tmp_path / "x.png"), units=[2])


def test_cli_report_trains_and_writes_folder(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "npl.inspect", "report", "--out", str(out),
                        "--steps", "200", "--flow-steps", "20"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("loss_curve", "gate_saturation", "gate_histogram", "state_trajectories",
                 "step_gradients", "gradient_flow"):
        assert_png(str(out / (name + ".png")))
    md = (out / "summary.md").read_text()
    first = float(md.split("training loss, first 10% of steps | ")[1].split(" ")[0])
    last = float(md.split("training loss, last 10% of steps | ")[1].split(" ")[0])
    assert last < 0.5 * first                                          # plain SGD did learn
    assert "|dL/dh|" in md and "![gradient_flow](gradient_flow.png)" in md
    assert "training loss" in r.stdout
    bad = subprocess.run([sys.executable, "-m", "npl.inspect", "report"], capture_output=True,
                         text=True, cwd=ROOT)
    assert bad.returncode != 0 and "--out" in bad.stderr


@pytest.mark.parametrize("flag,value,words", [("--flow-steps", "0", "--flow-steps must be a positive integer"),
                                              ("--clip", "0", "--clip must be a positive finite number"),
                                              ("--noise", "-1", "--noise must be a non-negative"),
                                              ("--lr", "nan", "--lr must be a positive finite")])
def test_cli_report_refuses_bad_values_before_training(tmp_path, flag, value, words):
    """Before: --flow-steps 0 trained and then crashed (IndexError), --clip 0 meant no clipping,
    --noise -1 was written into the summary as N(0, -1^2)."""
    out = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "npl.inspect", "report", "--out", str(out), flag, value],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and words in r.stderr, r.stderr
    assert not out.exists()


def test_report_without_clipping_says_so(tmp_path):
    pytest.importorskip("matplotlib")
    from npl.inspect.report import write_report
    res = write_report(str(tmp_path / "r"), steps=5, flow_steps=4, clip=None)
    assert res["model"] is not None
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "lr 1, no clipping)" in md


def test_vanishing_gradients_example(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import vanishing_gradients
    finally:
        sys.path.pop(0)
    res = vanishing_gradients.main(out=str(tmp_path / "vanishing.png"), steps=30)
    assert_png(str(tmp_path / "vanishing.png"))
    printed = capsys.readouterr().out
    assert res["default"]["BasicRNNCell"].ratio < 0.05
    assert res["open forget gate"]["LSTM forget_bias=5"].ratio > 0.05
    assert res["large weights"]["BasicRNNCell"].ratio > 10
    assert "%.3g" % res["default"]["BasicRNNCell"].ratio in printed


def test_docstring_examples():
    import doctest
    import npl.inspect.core
    res = doctest.testmod(npl.inspect.core, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0
