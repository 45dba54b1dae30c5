"""Float64 central finite-difference checks of every gradient the engine returns or accumulates.

For each cell configuration (helpers.CELL_KINDS: BasicRNN (tanh, relu), BasicLSTM (tuple and flat
state), LSTM with peepholes / cell_clip / projection + proj_clip / all of them / softsign, GRU
(tanh, softsign) and a heterogeneous MultiRNNCell) and each sequence function (dynamic_rnn
batch-major and time-major, static_rnn, bidirectional_dynamic_rnn, stack_bidirectional_dynamic_rnn,
the single step ``cell(x, s, return_trace=True)``), the loss is a random linear function of every
output and final-state entry, and the gradients with respect to the inputs, every leaf of the
(random, nonzero) initial state and every parameter (random biases, peepholes and forget biases)
are compared with central differences (relative error <= 1e-6 per array, helpers.rel_err).

Also checked against independent routes: outputs past each length are exactly 0, the final state
is the state after step length-1 (single-step calls on each row's prefix), input gradients past
the length are exactly 0, either cotangent may be None, gradients accumulate over two traces and
zero_grad clears them, and the clip configurations really clip.
"""
import numpy as np
import pytest

import npl
from helpers import (CELL_KINDS, cell_spec, check_grads, flatten, linear_loss, make_cell,  # noqa: F401
                     numpy_backend, random_like, random_state, rel_err, state_rows, unroll_steps,
                     randomize_params, assert_close, numeric_grads, seeded_rng as _rng)

TOL = 1e-6
I = 3            # input width of every case (B <= 3, T <= 4, I <= 3, H <= 3 keep FD cheap)

# name: (batch, time, sequence_length)
LENGTHS = {
    "none": (3, 4, None),
    "zero_one_full": (3, 4, [0, 1, 4]),
    "unsorted": (3, 4, [2, 3, 1]),
    "full": (3, 4, [4, 4, 4]),
    "all_zero": (3, 4, [0, 0, 0]),
    "batch1": (1, 3, [2]),
    "T1": (2, 1, None),
    "T1_len": (2, 1, [1, 0]),
}


def _lengths(L):
    return None if L is None else np.array(L, np.int64)


def _param_leaves(cells):
    """Names, live parameter arrays and the matching accumulated gradients of distinct cells."""
    names, arrays, grads = [], [], []
    for k, c in enumerate(cells):
        g = c.grads
        for name, a in c.params.items():
            names.append("cell%d/%s" % (k, name))
            arrays.append(a)
            grads.append(g[name])
    return names, arrays, grads


def fd_check(cells, run, backward, inputs, init, rng, d_outputs=True, d_state=True, tol=TOL):
    """Check the trace's gradients against central differences.

    run(trace: bool) -> (outputs, final_state[, trace]) reading ``inputs`` / ``init`` (which the FD
    perturbs in place); backward(trace, d_out, d_state) -> (d_inputs, d_init).  The loss is
    <W_o, outputs> + <W_s, final_state> with random W (a term is dropped when its flag is False
    and its cotangent passed as None).  Returns (d_inputs, d_init, errors by name).
    """
    for c in cells:
        c.zero_grad()
    out, st = run(False)
    Wo = random_like(out, rng) if d_outputs else None
    Ws = random_like(st, rng) if d_state else None
    out, st, tr = run(True)
    d_in, d_init = backward(tr, Wo, Ws)

    def loss():
        o, s = run(False)
        return (linear_loss(o, Wo) if Wo is not None else 0.0) + \
            (linear_loss(s, Ws) if Ws is not None else 0.0)

    pnames, parrays, pgrads = _param_leaves(cells)
    x_leaves, s_leaves = flatten(inputs), flatten(init)
    names = ["inputs%d" % k for k in range(len(x_leaves))] + \
        ["init%d" % k for k in range(len(s_leaves))] + pnames
    analytic = flatten(d_in) + (flatten(d_init) if s_leaves else []) + pgrads
    errs = check_grads(loss, x_leaves + s_leaves + parrays, analytic, names, tol)
    return d_in, d_init, errs


def _dyn_run(cell, x, s0, L, time_major=False):
    def run(trace):
        return npl.nn.dynamic_rnn(cell, x, _lengths(L), s0, time_major=time_major,
                                  return_trace=trace)
    return run


def _backward(tr, do, ds):
    return tr.backward(do, ds)


def _assert_clipping_happens(kind, cell, x, s0):
    """For the clip configurations: step a twin cell without the clip in lockstep from the same
    states; the clipped cell's value must be clip(twin's value) and clipping must occur."""
    if kind not in ("lstm_clip", "lstm_proj", "lstm_all"):
        return
    _, kw = cell_spec(kind, cell.forget_bias)
    for field, attr in (("cell_clip", "c"), ("proj_clip", "h")):
        clip = kw.get(field)
        if clip is None:
            continue
        twin = npl.rnn.LSTMCell(**dict(kw, **{field: None}))
        twin.build(x.shape[2], x.dtype)
        twin.set_params(cell.params)
        s, clipped = s0, 0
        for t in range(x.shape[1]):
            _, s_twin = twin(x[:, t], s)
            _, s = cell(x[:, t], s)
            pre, got = getattr(s_twin, attr), getattr(s, attr)
            np.testing.assert_allclose(got, np.clip(pre, -clip, clip), rtol=1e-12, atol=1e-14)
            clipped += int((np.abs(pre) > clip + 1e-3).sum())
        assert clipped > 0, "%s=%g never clipped: the case does not exercise it" % (field, clip)


# ----------------------------------------------------------------------------- dynamic_rnn
@pytest.mark.parametrize("case", sorted(LENGTHS))
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_dynamic_rnn_gradients(kind, case):
    rng = _rng(kind, case)
    B, T, L = LENGTHS[case]
    cell = make_cell(kind, rng, I)
    x = rng.standard_normal((B, T, I))
    s0 = random_state(cell, B, rng)
    if case == "none":
        _assert_clipping_happens(kind, cell, x, s0)
    d_in, d_init, _ = fd_check([cell], _dyn_run(cell, x, s0, L), _backward, x, s0, rng)
    if L is not None:
        for b, n in enumerate(L):
            assert not d_in[b, n:].any(), "input gradient past sequence_length must be exactly 0"


@pytest.mark.parametrize("case", ["none", "zero_one_full", "unsorted", "T1_len"])
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_dynamic_rnn_time_major_gradients(kind, case):
    rng = _rng(kind, case, "tm")
    B, T, L = LENGTHS[case]
    cell = make_cell(kind, rng, I)
    x = rng.standard_normal((T, B, I))
    s0 = random_state(cell, B, rng)
    d_in, _, _ = fd_check([cell], _dyn_run(cell, x, s0, L, time_major=True), _backward, x, s0, rng)
    if L is not None:
        for b, n in enumerate(L):
            assert not d_in[n:, b].any()


@pytest.mark.parametrize("which", ["outputs_only", "state_only"])
@pytest.mark.parametrize("kind", ["rnn", "basic_lstm_flat", "lstm_all", "gru", "multi"])
def test_dynamic_rnn_one_cotangent_none(kind, which):
    """backward(d_outputs, None) and backward(None, d_final_state) against FD of the matching loss."""
    rng = _rng(kind, which)
    B, T, L = LENGTHS["zero_one_full"]
    cell = make_cell(kind, rng, I)
    x = rng.standard_normal((B, T, I))
    s0 = random_state(cell, B, rng)
    fd_check([cell], _dyn_run(cell, x, s0, L), _backward, x, s0, rng,
             d_outputs=(which == "outputs_only"), d_state=(which == "state_only"))


def test_backward_with_no_cotangent_gives_zeros():
    rng = _rng("nothing")
    cell = make_cell("lstm_all", rng, I)
    x = rng.standard_normal((2, 3, I))
    s0 = random_state(cell, 2, rng)
    cell.zero_grad()
    _, _, tr = npl.nn.dynamic_rnn(cell, x, [3, 1], s0, return_trace=True)
    dx, ds = tr.backward(None, None)
    assert dx.shape == x.shape and not dx.any()
    assert all(not a.any() for a in flatten(ds))
    assert all(not g.any() for g in cell.grads.values())


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_zero_initial_state_default(kind):
    """initial_state=None is the zero state: same outputs, same gradients, and the returned
    d_initial_state equals the one for an explicit zero state (itself checked against FD)."""
    rng = _rng(kind, "zero-init")
    cell = make_cell(kind, rng, I)
    x = rng.standard_normal((2, 3, I))
    z = cell.zero_state(2, np.float64)
    assert all(not a.any() for a in flatten(z))
    _, _, errs = fd_check([cell], _dyn_run(cell, x, z, [3, 2]), _backward, x, z, rng)
    o1, s1 = npl.nn.dynamic_rnn(cell, x, [3, 2])
    Wo, Ws = random_like(o1, rng), random_like(s1, rng)
    results = []
    for init in (None, z):
        cell.zero_grad()
        out, st, tr = npl.nn.dynamic_rnn(cell, x, [3, 2], init, return_trace=True)
        dx, ds = tr.backward(Wo, Ws)
        results.append(flatten((out, st, dx, ds)) + [g.copy() for g in cell.grads.values()])
    for a, b in zip(*results):
        assert np.array_equal(a, b)


# ----------------------------------------------------------------------------- static_rnn
@pytest.mark.parametrize("case", ["none", "zero_one_full", "unsorted"])
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_static_rnn_gradients(kind, case):
    rng = _rng(kind, case, "static")
    B, T, L = LENGTHS[case]
    cell = make_cell(kind, rng, I)
    xs = [rng.standard_normal((B, I)) for _ in range(T)]
    s0 = random_state(cell, B, rng)

    def run(trace):
        return npl.nn.static_rnn(cell, xs, s0, sequence_length=_lengths(L), return_trace=trace)

    def backward(tr, do, ds):
        do = list(do)
        do[1] = None             # a None entry: no loss on that step's output
        return tr.backward(do, ds)

    def run_loss(trace):       # the loss must drop step 1's output like the cotangent does
        res = run(trace)
        outs = list(res[0])
        outs[1] = np.zeros_like(outs[1])
        return (outs,) + tuple(res[1:])

    d_in, _, _ = fd_check([cell], run_loss, backward, xs, s0, rng)
    assert isinstance(d_in, list) and len(d_in) == T


# ----------------------------------------------------------------------------- bidirectional
BIDI_PAIRS = [("lstm_all", "gru"), ("basic_lstm_flat", "rnn_relu"), ("multi", "lstm_peep"),
              ("gru_softsign", "lstm_softsign")]


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("case", ["none", "zero_one_full", "unsorted", "all_zero", "batch1"])
@pytest.mark.parametrize("pair", BIDI_PAIRS, ids=["-".join(p) for p in BIDI_PAIRS])
def test_bidirectional_gradients(pair, case, time_major):
    rng = _rng(pair, case, time_major)
    B, T, L = LENGTHS[case]
    cf, cb = make_cell(pair[0], rng, I), make_cell(pair[1], rng, I)
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I))
    s0 = (random_state(cf, B, rng), random_state(cb, B, rng))

    def run(trace):
        res = npl.nn.bidirectional_dynamic_rnn(cf, cb, x, _lengths(L), s0[0], s0[1],
                                               time_major=time_major, return_trace=trace)
        return res

    d_in, d_init, _ = fd_check([cf, cb], run, _backward, x, s0, rng)
    if L is not None:
        for b, n in enumerate(L):
            past = d_in[n:, b] if time_major else d_in[b, n:]
            assert not past.any()


def test_bidirectional_only_backward_direction_cotangent():
    """(None, d_out_bw) and (d_state_fw, None) entries are accepted and match FD."""
    rng = _rng("bidi-none")
    cf, cb = make_cell("lstm_proj", rng, I), make_cell("gru", rng, I)
    x = rng.standard_normal((3, 4, I))
    s0 = (random_state(cf, 3, rng), random_state(cb, 3, rng))

    def run(trace):
        res = npl.nn.bidirectional_dynamic_rnn(cf, cb, x, [4, 0, 2], s0[0], s0[1], return_trace=trace)
        (o_fw, o_bw), (st_fw, st_bw) = res[:2]
        # the loss sees only the bw outputs and the fw final state
        return ((np.zeros_like(o_fw), o_bw), (st_fw, cb.zero_state(3, np.float64))) + res[2:]

    def backward(tr, do, ds):
        return tr.backward((None, do[1]), (ds[0], None))

    fd_check([cf, cb], run, backward, x, s0, rng)


@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("case", ["none", "zero_one_full", "unsorted"])
def test_stack_bidirectional_gradients(case, time_major):
    rng = _rng("stack", case, time_major)
    B, T, L = LENGTHS[case]
    cells_fw = [make_cell("lstm_proj", rng, I), None]
    cells_bw = [make_cell("rnn", rng, I), None]
    width = cells_fw[0].output_size + cells_bw[0].output_size
    cells_fw[1] = make_cell("gru", rng, width)
    cells_bw[1] = make_cell("basic_lstm", rng, width)
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I))
    s0 = (tuple(random_state(c, B, rng) for c in cells_fw),
          tuple(random_state(c, B, rng) for c in cells_bw))

    def run(trace):
        res = npl.rnn.stack_bidirectional_dynamic_rnn(
            cells_fw, cells_bw, x, s0[0], s0[1], sequence_length=_lengths(L),
            time_major=time_major, return_trace=trace)
        return (res[0], (res[1], res[2])) + res[3:]

    d_in, _, _ = fd_check(cells_fw + cells_bw, run, _backward, x, s0, rng)
    if L is not None:
        for b, n in enumerate(L):
            assert not (d_in[n:, b] if time_major else d_in[b, n:]).any()


# ----------------------------------------------------------------------------- one step
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_single_step_gradients(kind, batch):
    rng = _rng(kind, batch, "step")
    cell = make_cell(kind, rng, I)
    x = rng.standard_normal((batch, I))
    s0 = random_state(cell, batch, rng)

    def run(trace):
        return cell(x, s0, return_trace=trace)

    fd_check([cell], run, _backward, x, s0, rng)


# ----------------------------------------------------------------------------- independent routes
@pytest.mark.parametrize("case", ["none", "zero_one_full", "unsorted", "all_zero", "batch1", "T1_len"])
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_outputs_and_final_state_match_single_steps(kind, case):
    """Outputs before each row's length equal single-step calls on that row's prefix, outputs past
    it are exactly 0, and the final state is the state after step length-1 (the initial state
    where the length is 0)."""
    rng = _rng(kind, case, "steps")
    B, T, L = LENGTHS[case]
    cell = make_cell(kind, rng, I)
    x = rng.standard_normal((B, T, I))
    s0 = random_state(cell, B, rng)
    out, st = npl.nn.dynamic_rnn(cell, x, _lengths(L), s0)
    ref_out, ref_st = unroll_steps(cell, x, s0, L)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    for a, b in zip(flatten(st), flatten(ref_st)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    if L is not None:
        for b, n in enumerate(L):
            assert not out[b, n:].any(), "outputs past sequence_length must be exactly 0"
            if n == 0:
                for a, a0 in zip(flatten(state_rows(st, slice(b, b + 1))),
                                 flatten(state_rows(s0, slice(b, b + 1)))):
                    assert np.array_equal(a, a0), "length 0: final state must be the initial one"


@pytest.mark.parametrize("kind", ["basic_lstm", "lstm_all", "gru", "multi"])
def test_bidirectional_matches_two_manual_passes(kind):
    """bw outputs = each row's valid prefix run reversed (single steps), reversed back."""
    rng = _rng(kind, "bidi-manual")
    B, T, L = 3, 4, [2, 4, 0]
    cf, cb = make_cell(kind, rng, I), make_cell(kind, rng, I)
    x = rng.standard_normal((B, T, I))
    s_fw, s_bw = random_state(cf, B, rng), random_state(cb, B, rng)
    (o_fw, o_bw), (st_fw, st_bw) = npl.nn.bidirectional_dynamic_rnn(cf, cb, x, L, s_fw, s_bw)
    ref_fw, ref_sfw = unroll_steps(cf, x, s_fw, L)
    x_rev = x.copy()
    for b, n in enumerate(L):
        x_rev[b, :n] = x[b, :n][::-1]
    ref_bw_rev, ref_sbw = unroll_steps(cb, x_rev, s_bw, L)
    ref_bw = ref_bw_rev.copy()
    for b, n in enumerate(L):
        ref_bw[b, :n] = ref_bw_rev[b, :n][::-1]
    np.testing.assert_allclose(o_fw, ref_fw, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(o_bw, ref_bw, rtol=1e-12, atol=1e-13)
    for a, b in zip(flatten((st_fw, st_bw)), flatten((ref_sfw, ref_sbw))):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- accumulation
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_grads_accumulate_over_two_traces_and_zero_grad_clears(kind):
    rng = _rng(kind, "accumulate")
    cell = make_cell(kind, rng, I)
    xa, xb = rng.standard_normal((2, 3, I)), rng.standard_normal((2, 3, I))
    sa, sb = random_state(cell, 2, rng), random_state(cell, 2, rng)
    La, Lb = [3, 1], [2, 3]

    def one(x, s, L, W=None):
        out, st, tr = npl.nn.dynamic_rnn(cell, x, L, s, return_trace=True)
        W = W or (random_like(out, rng), random_like(st, rng))
        return tr, W

    cell.zero_grad()
    tra, Wa = one(xa, sa, La)
    tra.backward(*Wa)
    ga = {k: v.copy() for k, v in cell.grads.items()}
    cell.zero_grad()
    trb, Wb = one(xb, sb, Lb)
    trb.backward(*Wb)
    gb = {k: v.copy() for k, v in cell.grads.items()}
    assert all(np.abs(v).max() > 0 for v in ga.values()), "every parameter gets a gradient"
    # two traces alive at once, backward on both: the sum
    cell.zero_grad()
    tr1, _ = one(xa, sa, La, Wa)
    tr2, _ = one(xb, sb, Lb, Wb)
    tr2.backward(*Wb)
    tr1.backward(*Wa)
    for k, g in cell.grads.items():
        np.testing.assert_allclose(g, ga[k] + gb[k], rtol=1e-12, atol=1e-14, err_msg=k)
    cell.zero_grad()
    assert all(not g.any() for g in cell.grads.values())
    # zero_grad clears in place: the arrays returned before are the live ones
    live = cell.grads
    tr3, _ = one(xa, sa, La, Wa)
    tr3.backward(*Wa)
    assert any(g.any() for g in live.values())
    cell.zero_grad()
    assert all(not g.any() for g in live.values())


@pytest.mark.parametrize("kind", ["lstm_all", "gru", "rnn", "multi"])
def test_chunked_input_projection(monkeypatch, kind):
    """The input projection computed a few steps at a time (as on large batches) gives the same
    outputs and gradients as one GEMM for all steps, and the gradients still match finite
    differences."""
    import npl.cells
    rng = np.random.default_rng(7)
    cell = {"lstm_all": lambda: npl.rnn.LSTMCell(3, use_peepholes=True, cell_clip=0.8, num_proj=2,
                                                 forget_bias=0.4),
            "gru": lambda: npl.rnn.GRUCell(3), "rnn": lambda: npl.rnn.BasicRNNCell(3),
            "multi": lambda: npl.rnn.MultiRNNCell([npl.rnn.BasicLSTMCell(3), npl.rnn.GRUCell(2)])}[kind]()
    cell.build(2, np.float64)
    randomize_params(cell, rng)
    x = rng.standard_normal((2, 5, 2))
    s0 = random_state(cell, 2, rng)
    L = np.array([5, 3])

    def run():
        cell.zero_grad()
        out, st, tr = npl.nn.dynamic_rnn(cell, x, L, s0, return_trace=True)
        dx, d0 = tr.backward(Wo, Ws)
        return [out] + flatten(st) + [dx] + flatten(d0) + [g.copy() for g in cell.grads.values()]

    out, st = npl.nn.dynamic_rnn(cell, x, L, s0)
    Wo, Ws = random_like(out, rng), random_like(st, rng)
    whole = run()
    monkeypatch.setattr(npl.cells, "PROJECTION_CHUNK_BYTES", 1)     # one step per chunk
    chunked = run()
    for a, b in zip(whole, chunked):
        assert_close(a, b, 1e-13, "chunked vs whole")
    f = lambda: linear_loss(npl.nn.dynamic_rnn(cell, x, L, s0), (Wo, Ws))
    params = cell.params
    num = numeric_grads(f, [x] + list(params.values()))
    assert_close(chunked[1 + len(flatten(st))], num[0], 1e-6, "d x")
    for k, (name, n) in enumerate(zip(params, num[1:])):
        assert_close(cell.grads[name], n, 1e-6, name)
