"""The C time loops (``npl_*_seq_f32`` in npl/kernels/cpu_kernels.c) against the Python loop.

The Python loop is itself checked against finite differences and TensorFlow elsewhere; here the C
loops must reproduce it (float32 rounding and the rational tanh apart) on random everything:
weights, biases, forget bias, initial states, output and final-state cotangents, at batch 1,
T = 1, one input feature, one unit, batch-major and time-major inputs, and in a stack; they must
stay out of the cases they do not implement, and npl must fall back cleanly without them.
"""
import numpy as np
import pytest

import npl
from npl.kernels import cpu
from helpers import flatten, randomize_params

pytestmark = pytest.mark.skipif(not cpu.sequence_loops(),
                                reason="C sequence loops unavailable: %s" % cpu.status())

SEQ_FUNCTIONS = ("lstm_forward_seq", "lstm_backward_seq", "gru_forward_seq", "gru_backward_seq")


@pytest.fixture
def calls(monkeypatch):
    """Counts the calls of each C loop wrapper (the cells call them through the module)."""
    counts = dict.fromkeys(SEQ_FUNCTIONS, 0)
    for name in SEQ_FUNCTIONS:
        def wrapped(*a, _f=getattr(cpu, name), _n=name, **k):
            counts[_n] += 1
            return _f(*a, **k)
        monkeypatch.setattr(cpu, name, wrapped)
    return counts


def _close(a, b, what, rtol=3e-5, scale=None):
    """max |a - b| within rtol of max |b| (or of ``scale``, for a sum that cancels to far below
    the size of its terms)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ref = float(np.max(np.abs(b))) if scale is None else scale
    err = float(np.max(np.abs(a - b))) / max(1e-30, ref)
    assert err <= rtol, (what, err)


def test_rational_tanh_matches_float64():
    x = np.concatenate([np.linspace(-12, 12, 1200001), np.logspace(-38, 1.1, 20000),
                        -np.logspace(-38, 1.1, 20000),
                        [0.0, -0.0, 4e-4, -4e-4, 7.905311, -7.905311, 1e30, -1e30, np.inf, -np.inf]]
                       ).astype(np.float32)
    y = np.empty_like(x)
    cpu.tanh_rational(x, y)
    ref = np.tanh(x.astype(np.float64))
    assert np.max(np.abs(y - ref)) <= 5e-7                    # measured 3.9e-7
    small = np.abs(x) < 1
    rel = np.abs(y - ref)[small & (x != 0)] / np.abs(ref[small & (x != 0)])
    assert rel.max() <= 1e-6                                  # relative accuracy near 0 too
    assert np.all(np.abs(y) <= 1)
    y_neg = np.empty_like(x)
    cpu.tanh_rational(-x, y_neg)
    np.testing.assert_array_equal(y_neg, -y)                  # odd, signed zeros included
    z = np.array([np.nan], np.float32)
    cpu.tanh_rational(z, z)
    assert np.isnan(z[0])
    # saturated: exactly +-1 wherever float32's tanh is (so the derivatives 1 - y^2 and
    # s (1 - s) are exactly 0 there, as on the NumPy path and in TensorFlow), never above
    one = np.tanh(x) == 1                                     # NumPy's float32 tanh
    assert one.sum() > 1000
    np.testing.assert_array_equal(y[one], 1)
    np.testing.assert_array_equal(y[np.tanh(x) == -1], -1)
    big = np.array([9.02, 20.0, 1e4, 3e38, np.inf], np.float32)
    out = np.empty_like(big)
    cpu.tanh_rational(big, out)
    np.testing.assert_array_equal(out, 1)


def _cell(kind, H):
    return {"lstm": lambda: npl.rnn.BasicLSTMCell(H, forget_bias=0.7),
            "lstm_cell": lambda: npl.rnn.LSTMCell(H, forget_bias=-0.4),
            "gru": lambda: npl.rnn.GRUCell(H),
            "stack": lambda: npl.rnn.MultiRNNCell([npl.rnn.GRUCell(H + 2), npl.rnn.BasicLSTMCell(H),
                                                   npl.rnn.GRUCell(1)])}[kind]()


def _random_state(cell, B, rng):
    def one(size):
        if isinstance(size, npl.rnn.LSTMStateTuple):
            return npl.rnn.LSTMStateTuple(*(rng.standard_normal((B, s)).astype(np.float32)
                                            for s in size))
        if isinstance(size, tuple):
            return tuple(one(s) for s in size)
        return rng.standard_normal((B, size)).astype(np.float32)
    return one(cell.state_size)


def _problem(kind, B, T, I, H, time_major, seed):
    """A cell with random parameters and random inputs, initial state and cotangents (at a scale
    where 30 steps do not amplify float32 rounding chaotically): (cell, _run's other arguments)."""
    rng = np.random.default_rng(seed)
    cell = _cell(kind, H)
    cell.build(I, np.float32)
    randomize_params(cell, rng, scale=min(0.5, 2.0 / np.sqrt(I + H + 2)))
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I)).astype(np.float32)
    state = _random_state(cell, B, rng)
    d_state = _random_state(cell, B, rng)
    P = cell.output_size
    d_out = rng.standard_normal((T, B, P) if time_major else (B, T, P)).astype(np.float32)
    return cell, (x, state, d_out, d_state, time_major)


def _run(cell, x, state, d_out, d_state, time_major, lengths=None):
    cell.zero_grad()
    out, final, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state,
                                        time_major=time_major, return_trace=True)
    gates = [r.slabs["gates"].copy() for r in tr.records]
    dx, d_init = tr.backward(d_out, d_state)
    return ([out.copy()] + [a.copy() for a in flatten(final)] + gates + [dx.copy()]
            + [a.copy() for a in flatten(d_init)] + [v.copy() for v in cell.grads.values()])


@pytest.mark.parametrize("kind", ["lstm", "lstm_cell", "gru", "stack"])
@pytest.mark.parametrize("B, T, I, H", [(8, 1, 3, 4), (9, 9, 6, 24), (11, 30, 1, 16), (8, 4, 6, 1),
                                        (64, 12, 20, 40), (1, 3, 5, 6), (1, 20, 7, 37),
                                        (1, 8, 2, 70), (3, 9, 2, 70), (1, 30, 1, 1),
                                        (2, 8, 3, 16), (5, 12, 4, 33), (7, 10, 9, 20),
                                        (4, 7, 3, 12)])
@pytest.mark.parametrize("time_major", [True, False])
def test_c_loops_equal_the_python_loop(calls, kind, B, T, I, H, time_major):
    cell, args = _problem(kind, B, T, I, H, time_major,
                          seed=B * 100 + T * 10 + H + (7 if time_major else 0))
    old = cpu.enable_sequence_loops(True)
    try:
        with_loops = _run(cell, *args)
        # the C loops did run (from C_LOOPS_MIN_BATCH, and smaller batches from
        # NARROW_LOOPS_MIN_STEPS steps on the narrow form; elsewhere the Python loop is quicker)
        takes = B >= npl.cells.C_LOOPS_MIN_BATCH or (
            T >= npl.cells.NARROW_LOOPS_MIN_STEPS and npl.cells._narrow_batch(B))
        assert (sum(calls.values()) > 0) == takes
        cpu.enable_sequence_loops(False)
        n = sum(calls.values())
        python_loop = _run(cell, *args)
        assert sum(calls.values()) == n                         # and here they did not
    finally:
        cpu.enable_sequence_loops(old)
    assert len(with_loops) == len(python_loop)
    for k, (a, b) in enumerate(zip(with_loops, python_loop)):
        assert a.shape == b.shape
        _close(a, b, "array %d" % k)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("scale", [1e4, 1e10])
def test_c_loops_saturated_gates_pass_no_gradient(calls, kind, scale):
    """Weights so large that every gate saturates: the gates are exactly 0 or 1, so (as on the
    Python loop and in TensorFlow) the sigmoid and tanh derivatives are exactly 0 and nothing
    leaks through them; the rational tanh once stopped at 0.99999976 and gave dx of 1e27 here."""
    cell, (x, state, d_out, d_state, tm) = _problem(kind, 16, 10, 5, 8, True, seed=int(np.log10(scale)))
    cell.set_params({k: v * np.float32(scale) for k, v in cell.params.items()})
    old = cpu.enable_sequence_loops(True)
    try:
        with_loops = _run(cell, x, state, d_out, d_state, tm)
        assert sum(calls.values()) > 0
        cpu.enable_sequence_loops(False)
        python_loop = _run(cell, x, state, d_out, d_state, tm)
    finally:
        cpu.enable_sequence_loops(old)
    for a, b in zip(with_loops, python_loop):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)   # rounding through 1e4 weights


def test_c_loops_without_output_cotangent(calls):
    """backward(None, d_state): only the final state's gradient flows."""
    rng = np.random.default_rng(3)
    for kind in ("lstm", "gru"):
        cell = _cell(kind, 8)
        cell.build(5, np.float32)
        randomize_params(cell, rng)
        x = rng.standard_normal((8, 6, 5)).astype(np.float32)
        d_state = _random_state(cell, 8, rng)
        res = []
        for on in (True, False):
            old = cpu.enable_sequence_loops(on)
            try:
                cell.zero_grad()
                out, _, tr = npl.nn.dynamic_rnn(cell, x, dtype=np.float32, return_trace=True)
                dx, d0 = tr.backward(None, d_state)
                res.append([dx.copy()] + [a.copy() for a in flatten(d0)]
                           + [v.copy() for v in cell.grads.values()])
            finally:
                cpu.enable_sequence_loops(old)
        for a, b in zip(*res):
            _close(a, b, kind)
    assert calls["lstm_backward_seq"] == 1 and calls["gru_backward_seq"] == 1


def test_c_loops_stay_out_of_other_cases(monkeypatch):
    """Peepholes, clipping, projection, state dropout, float64 and per-step recording run the
    Python loop (the C loops do not implement them)."""
    def refuse(*a):
        raise AssertionError("a C loop ran")
    for name in SEQ_FUNCTIONS:
        monkeypatch.setattr(cpu, name, refuse)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 5, 4)).astype(np.float32)
    for cell in (npl.rnn.LSTMCell(6, use_peepholes=True), npl.rnn.LSTMCell(6, cell_clip=1.0),
                 npl.rnn.LSTMCell(6, num_proj=3), npl.rnn.LSTMCell(6, num_proj=3, proj_clip=0.5),
                 npl.rnn.LSTMCell(6, activation=npl.activations.relu),
                 npl.rnn.DropoutWrapper(npl.rnn.GRUCell(6), state_keep_prob=0.5, seed=1),
                 npl.rnn.DropoutWrapper(npl.rnn.BasicLSTMCell(6), state_keep_prob=0.5, seed=1)):
        out, _, tr = npl.nn.dynamic_rnn(cell, x, dtype=np.float32, return_trace=True)
        tr.backward(np.ones_like(out), None)
    for cell in (npl.rnn.BasicLSTMCell(6), npl.rnn.GRUCell(6)):
        out, _, tr = npl.nn.dynamic_rnn(cell, x.astype(np.float64), dtype=np.float64,
                                        return_trace=True)
        tr.backward(np.ones_like(out), None)


# (B, T, I, H, lengths): zero, full and unsorted lengths; d inputs folded (I <= H/4) and not
LENGTH_CASES = [(9, 7, 3, 16, [7, 0, 3, 7, 1, 5, 2, 6, 4]),
                (12, 5, 10, 8, [0, 5, 5, 2, 1, 3, 4, 0, 5, 2, 3, 1]),
                (8, 1, 4, 6, [1, 0, 1, 1, 0, 0, 1, 1]),
                (10, 6, 5, 12, [0] * 10),
                (16, 9, 2, 20, [9] * 16),
                (4, 9, 3, 10, [9, 0, 4, 7]),
                (3, 8, 2, 24, [2, 8, 5])]


@pytest.mark.parametrize("kind", ["lstm", "lstm_cell", "gru", "stack"])
@pytest.mark.parametrize("B, T, I, H, lengths", LENGTH_CASES)
@pytest.mark.parametrize("time_major", [True, False])
def test_c_loops_with_sequence_length_equal_the_python_loop(calls, kind, B, T, I, H, lengths,
                                                             time_major):
    """sequence_length (TensorFlow's semantics: past its length a row carries its state, outputs
    zero, and no gradient flows through those steps) in the C loops against the Python loop,
    which the gradient and TensorFlow tests check."""
    cell, args = _problem(kind, B, T, I, H, time_major, seed=B * 31 + T * 7 + H)
    lengths = np.array(lengths)
    old = cpu.enable_sequence_loops(True)
    try:
        with_loops = _run(cell, *args, lengths=lengths)
        n = sum(calls.values())
        if lengths.max() > 0:                                  # (all zero: no step runs at all)
            assert calls["lstm_forward_seq" if kind != "gru" else "gru_forward_seq"] > 0
            assert calls["lstm_backward_seq" if kind != "gru" else "gru_backward_seq"] > 0
        cpu.enable_sequence_loops(False)
        python_loop = _run(cell, *args, lengths=lengths)
        assert sum(calls.values()) == n
    finally:
        cpu.enable_sequence_loops(old)
    for k, (a, b) in enumerate(zip(with_loops, python_loop)):
        assert a.shape == b.shape
        _close(a, b, "array %d" % k)
    out = with_loops[0] if time_major else with_loops[0].transpose(1, 0, 2)
    past = np.arange(T)[:, None] >= lengths[None, :]           # [T, B]
    assert not out[past].any()                                 # zero past each row's length


def test_a_mask_that_is_not_a_prefix_keeps_the_python_loop():
    mask = np.ones((4, 8, 1), bool)
    assert np.array_equal(npl.cells._loop_lengths(mask), np.full(8, 4, np.float32))
    mask[1, 3, 0] = False                                      # a hole, not a suffix
    assert npl.cells._loop_lengths(mask) is False
    assert npl.cells._loop_lengths(None) is None


def test_recording_state_grads_uses_the_python_backward(calls):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 5, 4)).astype(np.float32)
    for cell in (npl.rnn.BasicLSTMCell(6), npl.rnn.GRUCell(6)):
        out, _, tr = npl.nn.dynamic_rnn(cell, x, dtype=np.float32, return_trace=True)
        tr.record_state_grads()
        tr.backward(np.ones_like(out), None)
        assert tr.records[0].d_h.shape == (5, 8, 6)
    assert calls["lstm_forward_seq"] and calls["gru_forward_seq"]
    assert calls["lstm_backward_seq"] == 0 and calls["gru_backward_seq"] == 0


def test_without_a_blas_sgemm_the_python_loop_runs(monkeypatch, calls):
    monkeypatch.setattr(cpu, "_state", dict(cpu._state, sgemm=None, sgemm_tried=True,
                                            sgemm_why="no cblas_sgemm (test)"))
    assert not cpu.sequence_loops()
    assert "sequence loops in Python: no cblas_sgemm (test)" in cpu.status()
    cell = npl.rnn.BasicLSTMCell(5, input_size=3, seed=0)
    out, _, tr = npl.nn.dynamic_rnn(cell, np.ones((8, 4, 3), np.float32), return_trace=True)
    tr.backward(np.ones_like(out), None)
    assert sum(calls.values()) == 0


def test_sgemm_search_refuses_what_it_cannot_check(monkeypatch):
    monkeypatch.setattr(cpu, "_blas_libraries", lambda: [])
    assert cpu._find_sgemm() == (None, "no cblas_sgemm found in the BLAS NumPy loaded")
    monkeypatch.setattr(cpu.platform, "machine", lambda: "aarch64")
    addr, why = cpu._find_sgemm()
    assert addr is None and "x86-64 Linux" in why


def test_found_sgemm_computes_numpys_product():
    try:                     # another OpenBLAS in the process (SciPy's) must not be preferred
        import scipy.linalg  # noqa: F401
    except ImportError:
        pass
    addr, where = cpu._find_sgemm()
    assert addr == cpu.sgemm() and "sgemm" in where
    assert where in cpu.status()


def test_loop_wrappers_check_their_arguments():
    z = lambda *s: np.zeros(s, np.float32)     # noqa: E731
    T, H, B = 3, 4, 2
    with pytest.raises(ValueError, match="UT must have shape"):
        cpu.lstm_forward_seq(z(H, 4 * H), z(T, 4 * H, B), z(T + 1, H, B), z(T + 1, H, B), 0, T)
    with pytest.raises(ValueError, match="G must be a C-contiguous float32"):
        cpu.lstm_forward_seq(z(4 * H, H), z(T, B, 4 * H).transpose(0, 2, 1), z(T + 1, H, B),
                             z(T + 1, H, B), 0, T)
    with pytest.raises(ValueError, match="dout must have shape"):
        cpu.gru_backward_seq(z(H, 2 * H), z(H, H), z(T, 3 * H, B), z(T + 1, H, B), z(T, B, H + 1),
                             z(H, B), z(H, B), z(H, B), z(3 * H, T * B), z(3 * H, B))
    with pytest.raises(ValueError, match="dG2 must have shape"):
        cpu.lstm_backward_seq(z(H, 4 * H), z(T, 4 * H, B), z(T + 1, H, B), None, z(H, B), z(H, B),
                              z(4 * H, T * B + 1), z(4 * H, B))
    with pytest.raises(TypeError, match="True or False"):
        cpu.enable_sequence_loops("yes")


@pytest.mark.parametrize("kind", ["lstm", "gru", "stack"])
def test_d_inputs_folded_into_the_step_gemm_equal_the_separate_gemm(monkeypatch, kind):
    """FOLD_D_INPUTS_MAX_RATIO: [dx_t; dh] from the whole kernel per step, or dx by one GEMM at the
    end: the same gradients (float32 rounding apart), with the fold really taken."""
    rng = np.random.default_rng(21)
    cell = _cell(kind, 16)
    cell.build(3, np.float32)
    randomize_params(cell, rng, scale=0.4)
    x = rng.standard_normal((9, 7, 3)).astype(np.float32)
    d_state = _random_state(cell, 9, rng)
    res, folded = [], []
    real = {n: getattr(cpu, n) for n in ("lstm_backward_seq", "gru_backward_seq")}
    for n, f in real.items():
        monkeypatch.setattr(cpu, n, lambda *a, _f=f, **k: (folded.append(a[-1] is not None
                                                                         and a[-1].ndim == 3),
                                                            _f(*a, **k))[1])
    for ratio in (1.0, 0.0):
        monkeypatch.setattr(npl.cells, "FOLD_D_INPUTS_MAX_RATIO", ratio)
        out, _, tr = npl.nn.dynamic_rnn(cell, x, dtype=np.float32, return_trace=True)
        cell.zero_grad()
        d = rng.standard_normal(out.shape).astype(np.float32) if not res else res[0][0]
        dx, d0 = tr.backward(d, d_state)
        res.append([d, dx.copy()] + [a.copy() for a in flatten(d0)]
                   + [v.copy() for v in cell.grads.values()])
    assert True in folded and False in folded
    for k, (a, b) in enumerate(zip(res[0][1:], res[1][1:])):
        _close(a, b, "array %d" % k)
