"""Property tests: random shapes, cells, lengths, layouts and dtypes, valid and invalid.

Every call either matches an independent reference or raises ValueError/TypeError (as the
drawn input's validity says); no other outcome passes.  The reference below is a plain per-step
NumPy transcription of TensorFlow 1's documented cell equations (rnn_cell_impl.BasicRNNCell,
BasicLSTMCell, LSTMCell, GRUCell, MultiRNNCell) and of dynamic_rnn's sequence_length semantics
(outputs zeroed and state copied through past each length), in float64, written from those
formulas and not from npl's code.  Backward passes are checked with a dot product against central
finite differences of that reference along a random direction in (inputs, initial state, every
parameter).
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings, strategies as st  # noqa: E402

import npl  # noqa: E402
from helpers import flatten, numpy_backend, rel_err, unflatten  # noqa: E402,F401

R = npl.rnn
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# ============================================================================ the reference
def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


ACTIVATIONS = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0),
               "softsign": lambda v: v / (1.0 + np.abs(v))}


def _out_size(spec):
    if spec["kind"] == "multi":
        return _out_size(spec["cells"][-1])
    return spec.get("num_proj") or spec["H"]


def ref_zero_state(spec, B):
    if spec["kind"] == "multi":
        return tuple(ref_zero_state(s, B) for s in spec["cells"])
    H = spec["H"]
    if spec["kind"] in ("basic_lstm", "lstm"):
        P = _out_size(spec)
        if spec["tuple"]:
            return npl.LSTMStateTuple(np.zeros((B, H)), np.zeros((B, P)))
        return np.zeros((B, H + P))
    return np.zeros((B, H))


def ref_step(spec, p, x, state):
    """One step of TF's cell ``spec`` with parameters ``p`` (TF names): (output, new_state)."""
    kind = spec["kind"]
    if kind == "multi":
        new = []
        for k, (sub, s) in enumerate(zip(spec["cells"], state)):
            pre = "cell_%d/" % k
            x, s2 = ref_step(sub, {n[len(pre):]: v for n, v in p.items() if n.startswith(pre)}, x, s)
            new.append(s2)
        return x, tuple(new)
    act = ACTIVATIONS[spec["act"]]
    if kind == "rnn":           # output = new_state = act(W [x, h] + b)
        h = act(np.concatenate([x, state], 1) @ p["kernel"] + p["bias"])
        return h, h
    if kind == "gru":           # r, u = sigmoid(W_g [x, h] + b_g); c = act(W_c [x, r*h] + b_c)
        gates = _sigmoid(np.concatenate([x, state], 1) @ p["gates/kernel"] + p["gates/bias"])
        r, u = np.split(gates, 2, axis=1)
        c = act(np.concatenate([x, r * state], 1) @ p["candidate/kernel"] + p["candidate/bias"])
        h = u * state + (1 - u) * c
        return h, h
    # LSTM: i, j, f, o = split(W [x, m_prev] + b)
    H = spec["H"]
    if spec["tuple"]:
        c_prev, m_prev = state
    else:
        c_prev, m_prev = state[:, :H], state[:, H:]
    z = np.concatenate([x, m_prev], 1) @ p["kernel"] + p["bias"]
    i, j, f, o = np.split(z, 4, axis=1)
    fb = spec["forget_bias"]
    if spec.get("peep"):
        c = _sigmoid(f + fb + p["w_f_diag"] * c_prev) * c_prev + \
            _sigmoid(i + p["w_i_diag"] * c_prev) * act(j)
    else:
        c = _sigmoid(f + fb) * c_prev + _sigmoid(i) * act(j)
    if spec.get("cell_clip") is not None:
        c = np.clip(c, -spec["cell_clip"], spec["cell_clip"])
    if spec.get("peep"):
        m = _sigmoid(o + p["w_o_diag"] * c) * act(c)
    else:
        m = _sigmoid(o) * act(c)
    if spec.get("num_proj"):
        m = m @ p["projection/kernel"]
        if spec.get("proj_clip") is not None:
            m = np.clip(m, -spec["proj_clip"], spec["proj_clip"])
    new = npl.LSTMStateTuple(c, m) if spec["tuple"] else np.concatenate([c, m], 1)
    return m, new


def ref_dynamic(spec, p, x, s0, L):
    """tf.nn.dynamic_rnn on batch-major x [B, T, I]: past L[b], output 0 and state carried."""
    B, T = x.shape[:2]
    s, outs = s0, []
    for t in range(T):
        o, s_new = ref_step(spec, p, x[:, t], s)
        if L is not None:
            keep = (t < np.asarray(L))[:, None]
            o = np.where(keep, o, 0.0)
            s_new = unflatten(s, [np.where(keep, a, b) for a, b in zip(flatten(s_new), flatten(s))])
        outs.append(o)
        s = s_new
    return np.stack(outs, 1), s


def _reverse_rows(x, L):
    """tf.reverse_sequence on batch-major x: reverse each row's first L[b] steps (all if None)."""
    y = x.copy()
    for b in range(x.shape[0]):
        n = x.shape[1] if L is None else int(L[b])
        y[b, :n] = x[b, :n][::-1]
    return y


def ref_bidirectional(spec, p_fw, p_bw, x, s_fw, s_bw, L):
    o_fw, st_fw = ref_dynamic(spec, p_fw, x, s_fw, L)
    o_bw_rev, st_bw = ref_dynamic(spec, p_bw, _reverse_rows(x, L), s_bw, L)
    return (o_fw, _reverse_rows(o_bw_rev, L)), (st_fw, st_bw)


# ============================================================================ strategies
@st.composite
def leaf_specs(draw):
    kind = draw(st.sampled_from(["rnn", "basic_lstm", "lstm", "gru"]))
    spec = {"kind": kind, "H": draw(st.integers(1, 3)),
            "act": draw(st.sampled_from(["tanh", "tanh", "softsign", "relu"]))}
    if kind in ("basic_lstm", "lstm"):
        spec["forget_bias"] = draw(st.sampled_from([1.0, 0.0, -0.7, 0.35]))
        spec["tuple"] = draw(st.booleans())
    if kind == "lstm":
        spec["peep"] = draw(st.booleans())
        spec["cell_clip"] = draw(st.sampled_from([None, None, 0.25, 1.5]))
        spec["num_proj"] = draw(st.sampled_from([None, 1, 2, 3]))
        spec["proj_clip"] = draw(st.sampled_from([None, 0.2, 1.0])) if spec["num_proj"] else None
    return spec


@st.composite
def cell_specs(draw):
    if draw(st.integers(0, 4)) == 0:
        return {"kind": "multi", "cells": [draw(leaf_specs()), draw(leaf_specs())]}
    return draw(leaf_specs())


def make_npl_cell(spec):
    """The npl cell for a spec (constructor arguments only; the math is not shared)."""
    k = spec["kind"]
    if k == "multi":
        return R.MultiRNNCell([make_npl_cell(s) for s in spec["cells"]])
    if k == "rnn":
        return R.BasicRNNCell(spec["H"], activation=spec["act"])
    if k == "gru":
        return R.GRUCell(spec["H"], activation=spec["act"])
    if k == "basic_lstm":
        return R.BasicLSTMCell(spec["H"], forget_bias=spec["forget_bias"],
                               state_is_tuple=spec["tuple"], activation=spec["act"])
    return R.LSTMCell(spec["H"], use_peepholes=spec["peep"], cell_clip=spec["cell_clip"],
                      num_proj=spec["num_proj"], proj_clip=spec["proj_clip"],
                      forget_bias=spec["forget_bias"], state_is_tuple=spec["tuple"],
                      activation=spec["act"])


def _random_cell(spec, I, dtype, rng):
    cell = make_npl_cell(spec)
    cell.build(I, dtype)
    cell.set_params({k: (rng.standard_normal(v.shape) * 0.7).astype(dtype)
                     for k, v in cell.params.items()})
    return cell


def _p64(cell):
    return {k: np.asarray(v, np.float64) for k, v in cell.params.items()}


def _tol(dtype):
    return 1e-10 if dtype == np.float64 else 2e-4


def _bad_lengths(mode, B, T, rng):
    if mode == "negative":
        L = rng.integers(0, T + 1, size=B)
        L[rng.integers(B)] = -int(rng.integers(1, 3))
        return L
    if mode == "too_long":
        L = rng.integers(0, T + 1, size=B)
        L[rng.integers(B)] = T + int(rng.integers(1, 3))
        return L
    if mode == "wrong_size":
        return rng.integers(0, T + 1, size=B + 1 if B == 1 or rng.random() < 0.5 else B - 1)
    if mode == "float":
        return rng.integers(0, T + 1, size=B).astype(np.float64)
    raise AssertionError(mode)


def _bad_state(mode, spec, B, dtype, rng):
    good = ref_zero_state(spec, B)
    leaves = [rng.standard_normal(a.shape).astype(dtype) for a in flatten(good)]
    if mode == "wrong_shape":
        k = int(rng.integers(len(leaves)))
        a = leaves[k]
        leaves[k] = rng.standard_normal((a.shape[0] + 1, a.shape[1]) if rng.random() < 0.5
                                        else (a.shape[0], a.shape[1] + 1)).astype(dtype)
        return unflatten(good, leaves)
    if mode == "wrong_dtype":
        other = np.float32 if dtype == np.float64 else np.float64
        return unflatten(good, [a.astype(other) for a in leaves])
    if mode == "wrong_structure":
        if isinstance(good, tuple) and not isinstance(good, npl.LSTMStateTuple):   # multi
            return unflatten(good, leaves)[:-1]
        if isinstance(good, npl.LSTMStateTuple):
            return np.concatenate(leaves, axis=1)
        return npl.LSTMStateTuple(leaves[0], leaves[0].copy())
    raise AssertionError(mode)


# ============================================================================ checks
def _dot_check(loss_ref, primal, direction, analytic, dtype, eps=1e-6):
    """d/de loss_ref(primal + e * direction) by central differences == <analytic, direction>."""
    plus = [a + eps * v for a, v in zip(primal, direction)]
    minus = [a - eps * v for a, v in zip(primal, direction)]
    fd = (loss_ref(plus) - loss_ref(minus)) / (2 * eps)
    terms = [np.asarray(g, np.float64) * v for g, v in zip(analytic, direction)]
    ana = sum(float(t.sum()) for t in terms)
    scale = max(sum(float(np.abs(t).sum()) for t in terms), 1e-8)
    tol = 1e-7 if dtype == np.float64 else 1e-3
    assert abs(fd - ana) <= tol * scale, "directional derivative: FD %.10g vs analytic %.10g" % (fd, ana)


def _weights(struct, rng):
    return [rng.standard_normal(np.shape(a)) for a in flatten(struct)]


def _lin(struct, W):
    return sum(float((np.asarray(a, np.float64) * w).sum()) for a, w in zip(flatten(struct), W))


@settings(SETTINGS, max_examples=250)
@given(data=st.data())
def test_sequence_functions_match_reference_or_raise(data):
    draw = data.draw
    api = draw(st.sampled_from(["dynamic", "dynamic", "static", "bidirectional", "step"]), label="api")
    spec = draw(cell_specs(), label="spec")
    B, T, I = draw(st.integers(1, 4), label="B"), draw(st.integers(1, 5), label="T"), draw(st.integers(1, 3), label="I")
    dtype = draw(st.sampled_from([np.float32, np.float64]), label="dtype")
    time_major = draw(st.booleans(), label="time_major") if api in ("dynamic", "bidirectional") else False
    if api == "step":
        T = 1
    # at most one fault per example, in about a third of them
    faults = ["negative", "too_long", "wrong_size", "float"] if api != "step" else []
    faults += ["width", "wrong_shape", "wrong_structure", "wrong_dtype"]
    fault = draw(st.sampled_from([None] * len(faults) * 2 + faults), label="fault")
    if fault in ("negative", "too_long", "wrong_size", "float"):
        len_mode = fault
    else:
        len_mode = "none" if api == "step" else draw(st.sampled_from(["none", "valid", "valid"]),
                                                     label="lengths")
    width_bad = fault == "width"
    if fault in ("wrong_shape", "wrong_structure", "wrong_dtype"):
        state_mode = fault
    else:
        state_mode = draw(st.sampled_from(["zero", "random", "random"]), label="state")
    seed = draw(st.integers(0, 2 ** 31 - 1), label="seed")
    rng = np.random.default_rng(seed)

    cells = [_random_cell(spec, I, dtype, rng) for _ in range(2 if api == "bidirectional" else 1)]
    L = None
    if len_mode == "valid":
        L = np.array(draw(st.lists(st.integers(0, T), min_size=B, max_size=B), label="L"))
    elif len_mode != "none":
        L = _bad_lengths(len_mode, B, T, rng)
    width = I + 1 if width_bad else I
    x = rng.standard_normal((B, T, width)).astype(dtype)
    if state_mode == "zero":
        s0 = [None] * len(cells)
    elif state_mode == "random":
        s0 = [unflatten(ref_zero_state(spec, B), [rng.standard_normal(a.shape).astype(dtype)
                                                  for a in flatten(ref_zero_state(spec, B))])
              for _ in cells]
    else:
        s0 = [_bad_state(state_mode, spec, B, dtype, rng)] + \
            [None] * (len(cells) - 1)
        if len(cells) == 2 and rng.random() < 0.5:
            s0 = s0[::-1]
    invalid = width_bad or len_mode in ("negative", "too_long", "wrong_size", "float") or \
        state_mode.startswith("wrong")

    x_in = x.transpose(1, 0, 2).copy() if time_major else x

    def call(trace):
        if api == "dynamic":
            return npl.nn.dynamic_rnn(cells[0], x_in, L, s0[0], time_major=time_major, return_trace=trace)
        if api == "static":
            return npl.nn.static_rnn(cells[0], [x[:, t] for t in range(T)], s0[0], sequence_length=L,
                                     return_trace=trace)
        if api == "bidirectional":
            return npl.nn.bidirectional_dynamic_rnn(cells[0], cells[1], x_in, L, s0[0], s0[1],
                                                    time_major=time_major, return_trace=trace)
        return cells[0](x[:, 0], s0[0] if s0[0] is not None else cells[0].zero_state(B, dtype),
                        return_trace=trace)

    event("%s %s" % (api, "invalid" if invalid else "valid"))
    if invalid:
        with pytest.raises((ValueError, TypeError)):
            call(False)
        return

    # ---- forward against the reference (float64 on the same values)
    x64 = x.astype(np.float64)
    s64 = [ref_zero_state(spec, B) if s is None else
           unflatten(s, [np.asarray(a, np.float64) for a in flatten(s)]) for s in s0]

    def reference(xr, ss, ps):
        """The reference's (outputs, final state) in the layout npl returns them."""
        tm = (lambda o: o.transpose(1, 0, 2)) if time_major else (lambda o: o)
        if api in ("dynamic", "static"):
            o, s = ref_dynamic(spec, ps[0], xr, ss[0], L)
            return ([o[:, t] for t in range(T)] if api == "static" else tm(o)), s
        if api == "bidirectional":
            (o_fw, o_bw), s = ref_bidirectional(spec, ps[0], ps[1], xr, ss[0], ss[1], L)
            return (tm(o_fw), tm(o_bw)), s
        return ref_step(spec, ps[0], xr[:, 0], ss[0])

    ps = [_p64(c) for c in cells]
    ref_out, ref_state = reference(x64, s64, ps)
    for c in cells:
        c.zero_grad()
    res = call(True)
    out, state, tr = res
    got, want = flatten((out, state)), flatten((ref_out, ref_state))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == dtype and g.shape == w.shape
        assert rel_err(g, w) <= _tol(dtype), "forward differs from the TF reference"

    # ---- backward: dot product against FD of the reference along a random direction
    mode = draw(st.sampled_from(["both", "both", "outputs", "state"]), label="cotangents")
    Wo = _weights(out, rng) if mode != "state" else None
    Ws = _weights(state, rng) if mode != "outputs" else None
    d_out = None if Wo is None else unflatten(out, [w.astype(dtype) for w in Wo])
    d_st = None if Ws is None else unflatten(state, [w.astype(dtype) for w in Ws])
    if api == "bidirectional" and Wo is not None and draw(st.booleans(), label="bw_only"):
        d_out = (None, d_out[1])
        Wo = [np.zeros_like(Wo[0]) if k < len(flatten(out[0])) else w for k, w in enumerate(Wo)]
    dx, d_init = tr.backward(d_out, d_st)
    if api == "static":
        dx = np.stack(dx, axis=1)
    elif api == "step":
        dx = dx[:, None]
    elif time_major:
        dx = dx.transpose(1, 0, 2)
    assert dx.shape == x.shape and dx.dtype == dtype
    if L is not None and api != "step":
        for b, n in enumerate(L):
            assert not dx[b, n:].any()
    d_init_leaves = flatten(d_init)
    grads = [g for c in cells for g in c.grads.values()]

    s_leaves = [a for s in s64 for a in flatten(s)]
    p_leaves = [v for p in ps for v in p.values()]
    primal = [x64] + s_leaves + p_leaves
    direction = [rng.standard_normal(np.shape(a)) for a in primal]
    n_s = len(s_leaves)
    assert len(d_init_leaves) == n_s

    def loss_ref(vals):
        xr, sl, pl = vals[0], vals[1:1 + n_s], vals[1 + n_s:]
        ss, k = [], 0
        for s in s64:
            m = len(flatten(s))
            ss.append(unflatten(s, sl[k:k + m]))
            k += m
        pr, k = [], 0
        for p in ps:
            pr.append(dict(zip(p.keys(), pl[k:k + len(p)])))
            k += len(p)
        o, s = reference(xr, ss, pr)
        total = 0.0
        if Wo is not None:
            total += _lin(o, Wo)
        if Ws is not None:
            total += _lin(s, Ws)
        return total

    _dot_check(loss_ref, primal, direction, [dx] + d_init_leaves + grads, dtype)


@SETTINGS
@given(data=st.data())
def test_array_ops_match_reference_or_raise(data):
    """reverse_sequence and sequence_mask against per-element loops, with bad lengths raising."""
    draw = data.draw
    B, T, D = draw(st.integers(1, 4)), draw(st.integers(1, 5)), draw(st.integers(1, 3))
    mode = draw(st.sampled_from(["valid", "valid", "negative", "too_long", "wrong_size", "float"]))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    batch_first = draw(st.booleans())
    x = rng.standard_normal((B, T, D) if batch_first else (T, B, D))
    seq_axis, batch_axis = (1, 0) if batch_first else (0, 1)
    L = rng.integers(0, T + 1, size=B) if mode == "valid" else _bad_lengths(mode, B, T, rng)
    if mode != "valid":
        with pytest.raises((ValueError, TypeError)):
            npl.reverse_sequence(x, L, seq_axis=seq_axis, batch_axis=batch_axis)
        return
    y = npl.reverse_sequence(x, L, seq_axis=seq_axis, batch_axis=batch_axis)
    xb = x if batch_first else x.transpose(1, 0, 2)
    want = _reverse_rows(xb, L)
    assert np.array_equal(y if batch_first else y.transpose(1, 0, 2), want)
    maxlen = draw(st.one_of(st.none(), st.integers(0, 6)))
    m = npl.sequence_mask(L, maxlen)
    n = int(L.max()) if maxlen is None else maxlen
    assert m.shape == (B, n)
    for b in range(B):
        for j in range(n):
            assert m[b, j] == (j < L[b])
