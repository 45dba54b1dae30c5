"""The CUDA kernels, run on the CPU by host emulation (tests/cuda_host.py), against npl.gates.

No GPU is needed: g++ compiles ``npl/kernels/rnn_kernels.cu`` unchanged as C++, and the real launch
wrappers of :mod:`npl.kernels` run on NumPy arrays with :func:`npl.kernels.get` replaced by the
emulated kernels, so both the kernels' arithmetic and the wrappers' argument marshalling (layout,
scalar types, placeholders) are checked.  The reference is the NumPy array code of
:mod:`npl.gates` with the fused CPU kernels switched off.  Every input is random (gates, states,
peephole weights, clip, cotangents, and the outputs' previous contents); H != B, and one shape
needs two blocks of 256 threads.  Every kernel also runs with its threads in reverse order and
must give the same bits.  Finally whole LSTM and GRU sequence passes with sequence lengths run with
the kernels taking the place of the array code, as they do on CuPy.
"""
import math

import numpy as np
import pytest

import npl
from npl import gates, kernels
from npl.activations import tanh
from npl.kernels import cpu
import cuda_host
from helpers import flatten, random_like, random_state, randomize_params, rel_err

SHAPES = [(5, 7), (3, 100)]                           # (H, B): H*B = 35 and 300 (two blocks)
DTYPES = [np.float32, np.float64]


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    try:
        return cuda_host.build(tmp_path_factory.mktemp("cuda_host"))
    except cuda_host.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def emulated(host, monkeypatch):
    """npl.kernels.get -> the emulated kernels; the fused CPU kernels off (the reference is the
    array code)."""
    monkeypatch.setattr(kernels, "get", host.get)
    host.calls.clear()
    host.reverse = False
    old = cpu.enable(False)
    yield host
    cpu.enable(old)
    host.reverse = False


def _tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


def _rand(rng, dtype, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


def _sig(rng, dtype, *shape):
    return (1 / (1 + np.exp(-2 * rng.standard_normal(shape)))).astype(dtype)


def _run(host, step, inputs):
    """``step(*copies of inputs)`` through the wrappers with the threads in increasing and then in
    decreasing order; the two must agree bit for bit.  Returns the arrays after the first run."""
    out = []
    for reverse in (False, True):
        host.reverse = reverse
        arrays = [None if a is None else a.copy() for a in inputs]
        step(*arrays)
        out.append(arrays)
    host.reverse = False
    for a, b in zip(*out):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    return out[0]


def _compare(got, want, dtype, names):
    for name, a, b in zip(names, got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        if a.dtype == bool:
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            assert not np.isnan(a).any(), name
            assert rel_err(a, b) <= _tol(dtype), (name, rel_err(a, b))


@pytest.mark.parametrize("H, B", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("peep", [False, True])
@pytest.mark.parametrize("clip", [False, True])
def test_lstm_forward(emulated, H, B, dtype, peep, clip):
    rng = np.random.default_rng([H, B, peep, clip, dtype == np.float64])
    g, c_prev = _rand(rng, dtype, 4 * H, B, scale=2), _rand(rng, dtype, H, B, scale=2)
    c, m = _rand(rng, dtype, H, B), _rand(rng, dtype, H, B)
    pw = tuple(_rand(rng, dtype, H, 1) for _ in range(3)) if peep else None
    cell_clip = float(rng.uniform(0.4, 1.2)) if clip else None
    mask = rng.random((H, B)) < 0.5 if clip else None
    inputs = [g, c_prev, c, m, mask] + list(pw or [])

    def step(g, c_prev, c, m, mask, *pw):
        kernels.lstm_forward(g, c_prev, c, m, pw or None, cell_clip, mask)
    got = _run(emulated, step, inputs)
    want = [None if a is None else a.copy() for a in inputs]
    gates.lstm_forward_pointwise(*want[:4], tanh, tanh, pw, cell_clip, want[4])
    assert emulated.calls == {"npl_lstm_forward_%s" % ("f32" if dtype == np.float32 else "f64"): 2}
    names = ["gates", "c_prev", "c", "m"] + (["clip_mask"] if clip else []) + ["w_i", "w_f", "w_o"]
    _compare([a for a in got if a is not None], [a for a in want if a is not None], dtype, names)
    if clip:
        assert 0 < want[4].sum() < H * B                 # the clip cuts some cells and not others


@pytest.mark.parametrize("H, B", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("peep", [False, True])
@pytest.mark.parametrize("clip", [False, True])
def test_lstm_backward(emulated, H, B, dtype, peep, clip):
    rng = np.random.default_rng([H, B, peep, clip, dtype == np.float64, 1])
    g = _sig(rng, dtype, 4 * H, B)
    g[H:2 * H] = np.tanh(_rand(rng, dtype, H, B, scale=2))
    c_prev, c = _rand(rng, dtype, H, B, scale=2), _rand(rng, dtype, H, B, scale=2)
    dm, dc, dg = _rand(rng, dtype, H, B), _rand(rng, dtype, H, B), _rand(rng, dtype, 4 * H, B)
    pw = tuple(_rand(rng, dtype, H, 1) for _ in range(3)) if peep else None
    mask = rng.random((H, B)) < 0.6 if clip else None
    inputs = [g, c_prev, c, dm, dc, dg, mask] + list(pw or [])

    def step(g, c_prev, c, dm, dc, dg, mask, *pw):
        kernels.lstm_backward(g, c_prev, c, dm, dc, dg, pw or None, mask)
    got = _run(emulated, step, inputs)
    want = [None if a is None else a.copy() for a in inputs]
    gates.lstm_backward_pointwise(*want[:6], tanh, tanh, np.empty((H, B), dtype), pw, want[6])
    assert emulated.calls == {"npl_lstm_backward_%s" % ("f32" if dtype == np.float32 else "f64"): 2}
    names = ["gates", "c_prev", "c", "dm", "dc", "dg"] + (["clip_mask"] if clip else []) + \
        ["w_i", "w_f", "w_o"]
    _compare([a for a in got if a is not None], [a for a in want if a is not None], dtype, names)


@pytest.mark.parametrize("H, B", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_gates_and_state_forward(emulated, H, B, dtype):
    rng = np.random.default_rng([H, B, dtype == np.float64, 2])
    g, h_prev = _rand(rng, dtype, 3 * H, B, scale=2), _rand(rng, dtype, H, B)
    rh, h = _rand(rng, dtype, H, B), _rand(rng, dtype, H, B)
    got = _run(emulated, kernels.gru_gates_forward, [g, h_prev, rh])
    want = [g.copy(), h_prev.copy(), rh.copy()]
    gates.gru_gates_forward(*want)
    _compare(got, want, dtype, ["gates", "h_prev", "rh"])

    g = want[0]                                       # r, u from the reference; a_c random
    got = _run(emulated, kernels.gru_state_forward, [g, h_prev, h])
    want = [g.copy(), h_prev.copy(), h.copy()]
    gates.gru_state_forward(*want, tanh)
    _compare(got, want, dtype, ["gates", "h_prev", "h"])
    assert sum(emulated.calls.values()) == 4 and len(emulated.calls) == 2


@pytest.mark.parametrize("H, B", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_gru_backward_and_reset_backward(emulated, H, B, dtype):
    rng = np.random.default_rng([H, B, dtype == np.float64, 3])
    g = _sig(rng, dtype, 3 * H, B)
    g[2 * H:] = np.tanh(_rand(rng, dtype, H, B, scale=2))
    h_prev, dh, drh = _rand(rng, dtype, H, B), _rand(rng, dtype, H, B), _rand(rng, dtype, H, B)
    dg, dh_prev = _rand(rng, dtype, 3 * H, B), _rand(rng, dtype, H, B)
    tmp = np.empty((H, B), dtype)
    names = ["gates", "h_prev", "dh", "dg", "dh_prev"]
    got = _run(emulated, kernels.gru_backward, [g, h_prev, dh, dg, dh_prev])
    want = [g.copy(), h_prev.copy(), dh.copy(), dg.copy(), dh_prev.copy()]
    gates.gru_backward_pointwise(*want[:4], tanh, want[4], tmp)
    _compare(got, want, dtype, names)

    dg, dh_prev = want[3], want[4]                    # dg[:H] random, dh_prev accumulated into
    got = _run(emulated, kernels.gru_reset_backward, [g, h_prev, drh, dh_prev, dg])
    want = [g.copy(), h_prev.copy(), drh.copy(), dh_prev.copy(), dg.copy()]
    gates.gru_reset_backward(*want, tmp)
    _compare(got, want, dtype, ["gates", "h_prev", "drh", "dh_prev", "dg"])
    assert sum(emulated.calls.values()) == 4 and len(emulated.calls) == 2


def test_wrappers_reject_what_the_kernels_would_misread(emulated):
    H, B = 5, 7
    z = lambda *s, dt=np.float32: np.zeros(s, dt)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.gru_backward(z(3 * H, B), z(H, B), z(H, B), z(3 * H, 2 * B)[:, ::2], z(H, B))
    with pytest.raises(ValueError, match="dtype"):
        kernels.gru_state_forward(z(3 * H, B), z(H, B, dt=np.float64), z(H, B))
    with pytest.raises(ValueError, match="shape"):
        kernels.gru_gates_forward(z(3 * H, B), z(H, B), z(B, H + 1))
    with pytest.raises(ValueError, match="shape"):
        kernels.lstm_forward(z(4 * H, B), z(H, B), z(H, B), z(H, B), (z(H, 1), z(H, 1), z(B, 1)))
    with pytest.raises(ValueError, match="clip_mask"):
        kernels.lstm_forward(z(4 * H, B), z(H, B), z(H, B), z(H, B), None, 0.5, None)
    with pytest.raises(ValueError, match="positive"):
        kernels.lstm_forward(z(4 * H, B), z(H, B), z(H, B), z(H, B), None, 0.0, z(H, B, dt=bool))
    with pytest.raises(ValueError, match="clip_mask"):
        kernels.lstm_backward(z(4 * H, B), z(H, B), z(H, B), z(H, B), z(H, B), z(4 * H, B), None,
                              z(H, B))
    assert not emulated.calls


def test_emulation_checks_the_launch(host):
    """The harness itself: scalar types, dtypes and out-of-bounds writes are caught."""
    k = host.get("gru_state_forward", np.float64)
    H, B = 3, 4
    g, h_prev, h = np.zeros((3 * H, B)), np.zeros((H, B)), np.zeros((H, B))
    with pytest.raises(TypeError, match="'B' must be a int32"):
        k((1,), (256,), (g, h_prev, h, np.int64(B), np.int32(H)))
    with pytest.raises(TypeError, match="'h' has dtype float32"):
        k((1,), (256,), (g, h_prev, h.astype(np.float32), np.int32(B), np.int32(H)))
    with pytest.raises(AssertionError, match="wrote outside"):       # H + 1 rows of h: out of bounds
        k((1,), (256,), (np.zeros((3 * H + 3, B)), h_prev, h, np.int32(B), np.int32(H + 1)))
    with pytest.raises(ValueError, match="threads per block"):
        k((1,), (2048,), (g, h_prev, h, np.int32(B), np.int32(H)))


def _step_major_gate_grad_slab(G):
    """cells._gate_grad_slab's CuPy layout (contiguous steps, what the kernels take) on NumPy."""
    return None, npl.workspace.empty(np, G.shape, G.dtype)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sequence_pass_through_the_emulated_kernels(emulated, monkeypatch, kind, dtype):
    """dynamic_rnn + trace.backward with the kernels taking the array code's place, as on CuPy,
    against the plain NumPy run: outputs, final state, d inputs, d initial state, every gradient."""
    rng = np.random.default_rng([kind == "gru", dtype == np.float64, 4])
    R = npl.rnn
    cell = (R.LSTMCell(5, use_peepholes=True, cell_clip=0.3, forget_bias=0.7) if kind == "lstm"
            else R.GRUCell(5))
    B, T, I = 7, 6, 3
    cell.build(I, dtype)
    randomize_params(cell, rng)
    x = _rand(rng, dtype, B, T, I)
    s0 = random_state(cell, B, rng, dtype)
    L = np.array([6, 0, 3, 1, 6, 2, 5])
    res = []
    for emulate in (False, True):
        with monkeypatch.context() as mp:
            if emulate:
                mp.setattr(gates, "_cuda", lambda a, *acts: (kernels if all(f is tanh for f in acts)
                                                             else None))
                mp.setattr(npl.cells, "_gate_grad_slab", _step_major_gate_grad_slab)
                mp.setattr(npl.cells, "PRESCALE_MIN_RATIO", math.inf)   # GRU gates by the kernel
            cell.zero_grad()
            out, st, tr = npl.nn.dynamic_rnn(cell, x, L, s0, return_trace=True)
            if not res:
                wo, ws = random_like(out, rng), random_like(st, rng)
            dx, d0 = tr.backward(wo, ws)
            res.append([np.array(a) for a in [out] + flatten(st) + [dx] + flatten(d0)
                        + list(cell.grads.values())])
    if kind == "lstm":                                # the cell clip was in effect
        assert (np.abs(res[0][1]) == dtype(0.3)).any()
    sfx = "f32" if dtype == np.float32 else "f64"
    names = (["lstm_forward", "lstm_backward"] if kind == "lstm" else
             ["gru_gates_forward", "gru_state_forward", "gru_backward", "gru_reset_backward"])
    assert emulated.calls == {"npl_%s_%s" % (n, sfx): T for n in names}
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for i, (a, b) in enumerate(zip(*res)):
        assert rel_err(a, b) <= tol, (i, rel_err(a, b))
