"""The gradient suite's configurations on CuPy against NumPy, with the same random values.

For every cell configuration of ``tests/test_gradients.py`` (helpers.CELL_KINDS) and each sequence
function (dynamic_rnn batch- and time-major, static_rnn, the single step, bidirectional and stacked
bidirectional), over the same length cases (none, zero/one/full, unsorted, all zero, batch 1,
T = 1), in float64 and float32: the outputs, final states, input and initial-state gradients and
every accumulated parameter gradient of a run on the GPU equal those of the NumPy run.  The
cotangents, initial states, biases, peepholes and forget biases are random.  test_gradients.py
checks the NumPy run against float64 central differences for these configurations, so this
carries the finite-difference check over to the GPU.  Every result must also come back as a CuPy
array (no silent fallback to the host) and the CUDA kernels must have been used.

Needs CuPy with a CUDA device (skipped otherwise).  Without a GPU, CI runs this file on the strict
CuPy stand-in of ``tests/fake_cupy`` (``tests/test_fake_cupy.py``).
"""
import numpy as np
import pytest

import npl
from npl import kernels as _kernels
from npl.backend import _is_cupy
from helpers import (CELL_KINDS, flatten, make_cell, numpy_backend, random_like,  # noqa: F401
                     random_state, rel_err, require_cupy, seeded_rng as _rng)

I = 3
LENGTHS = {                                      # name: (batch, time, sequence_length)
    "none": (3, 4, None),
    "zero_one_full": (3, 4, [0, 1, 4]),
    "unsorted": (3, 4, [2, 3, 1]),
    "all_zero": (3, 4, [0, 0, 0]),
    "batch1": (1, 3, [2]),
    "T1_len": (2, 1, [1, 0]),
}
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-5}
DTYPES = [np.float64, np.float32]
BIDI_PAIRS = [("lstm_all", "gru"), ("basic_lstm_flat", "rnn_relu"), ("multi", "lstm_peep"),
              ("gru_softsign", "lstm_softsign")]


@pytest.fixture(scope="module")
def cp():
    return require_cupy()


def _lengths(L):
    return None if L is None else np.array(L, np.int64)


# Configurations with no fused kernel: BasicRNN, and the LSTM with softsign (the LSTM kernels are
# tanh-only). The GRU with softsign still uses the reset-gate kernels.
NO_KERNEL = {"rnn", "rnn_relu", "lstm_softsign"}


def both(cells, run, inputs, init, rng, dtype, kernels_used, cotangents=None):
    """Run ``run(inputs, init) -> (outputs, final_state, trace)`` on NumPy, then with the cells,
    inputs, states and cotangents moved to the GPU; backward with random cotangents
    (``cotangents(d_out, d_state)`` may edit them); assert every result agrees within TOL, the
    GPU's results are CuPy arrays, and the GPU run launched CUDA kernels iff ``kernels_used``."""
    res = []
    for backend in ("numpy", "cupy"):
        for c in cells:
            c.to_device(backend)
            c.zero_grad()
        launches = []
        launch = _kernels._launch
        _kernels._launch = lambda name, *a: (launches.append(name), launch(name, *a))
        try:
            out, st, tr = run(npl.to_device(inputs, backend), npl.to_device(init, backend))
            if not res:
                d_out, d_st = random_like(npl.to_numpy(out), rng), random_like(npl.to_numpy(st), rng)
                if cotangents is not None:
                    d_out, d_st = cotangents(d_out, d_st)
            d_in, d0 = tr.backward(npl.to_device(d_out, backend), npl.to_device(d_st, backend))
        finally:
            _kernels._launch = launch
        assert bool(launches) == (backend == "cupy" and kernels_used), (backend, launches)
        leaves = (flatten(out) + flatten(st) + flatten(d_in) + flatten(d0)
                  + [g for c in cells for g in c.grads.values()])
        assert all(_is_cupy(a) == (backend == "cupy") for a in leaves), \
            "%s run returned arrays of another device: %s" % (backend, [type(a) for a in leaves])
        res.append([npl.to_numpy(a) for a in leaves])
    for c in cells:
        c.to_device("numpy")
    assert len(res[0]) == len(res[1])
    tol = TOL[np.dtype(dtype)]
    for k, (a, b) in enumerate(zip(*res)):
        assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype, b.dtype)
        assert rel_err(b, a) <= tol, "result %d: relative error %.3g" % (k, rel_err(b, a))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["dynamic", "dynamic_tm", "static"])
@pytest.mark.parametrize("case", sorted(LENGTHS))
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_sequence_functions_on_gpu_match_numpy(cp, kind, case, op, dtype):
    rng = _rng(kind, case, op, dtype)
    B, T, L = LENGTHS[case]
    cell = make_cell(kind, rng, I, dtype)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    s0 = random_state(cell, B, rng, dtype)
    if op == "static":
        def run(xs, s):
            return npl.nn.static_rnn(cell, list(xs.swapaxes(0, 1)), s, sequence_length=_lengths(L),
                                     return_trace=True)
    else:
        tm = op == "dynamic_tm"
        x = x.swapaxes(0, 1).copy() if tm else x

        def run(xs, s):
            return npl.nn.dynamic_rnn(cell, xs, _lengths(L), s, time_major=tm, return_trace=True)
    both([cell], run, x, s0, rng, dtype, kind not in NO_KERNEL and case != "all_zero")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_single_step_on_gpu_matches_numpy(cp, kind, batch, dtype):
    rng = _rng(kind, batch, "step", dtype)
    cell = make_cell(kind, rng, I, dtype)
    x = rng.standard_normal((batch, I)).astype(dtype)
    s0 = random_state(cell, batch, rng, dtype)
    both([cell], lambda xs, s: cell(xs, s, return_trace=True), x, s0, rng, dtype,
         kind not in NO_KERNEL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("case", ["none", "zero_one_full", "unsorted", "all_zero", "batch1"])
@pytest.mark.parametrize("pair", BIDI_PAIRS, ids=["-".join(p) for p in BIDI_PAIRS])
def test_bidirectional_on_gpu_matches_numpy(cp, pair, case, time_major, dtype):
    rng = _rng(pair, case, time_major, dtype)
    B, T, L = LENGTHS[case]
    cf, cb = make_cell(pair[0], rng, I, dtype), make_cell(pair[1], rng, I, dtype)
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I)).astype(dtype)
    s0 = (random_state(cf, B, rng, dtype), random_state(cb, B, rng, dtype))

    def run(xs, s):
        return npl.nn.bidirectional_dynamic_rnn(cf, cb, xs, _lengths(L), s[0], s[1],
                                                time_major=time_major, return_trace=True)

    def one_sided(d_out, d_st):                  # (None, d_bw) outputs, (d_fw, None) states
        return (None, d_out[1]), (d_st[0], None)
    used = not set(pair) <= NO_KERNEL and case != "all_zero"   # no step runs at all zero
    both([cf, cb], run, x, s0, rng, dtype, used)
    if case == "unsorted":
        both([cf, cb], run, x, s0, rng, dtype, used, cotangents=one_sided)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("time_major", [False, True])
@pytest.mark.parametrize("case", ["none", "zero_one_full", "unsorted"])
def test_stack_bidirectional_on_gpu_matches_numpy(cp, case, time_major, dtype):
    rng = _rng("stack", case, time_major, dtype)
    B, T, L = LENGTHS[case]
    fw0, bw0 = make_cell("lstm_proj", rng, I, dtype), make_cell("rnn", rng, I, dtype)
    width = fw0.output_size + bw0.output_size
    cells_fw = [fw0, make_cell("gru", rng, width, dtype)]
    cells_bw = [bw0, make_cell("basic_lstm", rng, width, dtype)]
    x = rng.standard_normal((T, B, I) if time_major else (B, T, I)).astype(dtype)
    s0 = (tuple(random_state(c, B, rng, dtype) for c in cells_fw),
          tuple(random_state(c, B, rng, dtype) for c in cells_bw))

    def run(xs, s):
        y, sf, sb, tr = npl.rnn.stack_bidirectional_dynamic_rnn(
            cells_fw, cells_bw, xs, s[0], s[1], sequence_length=_lengths(L),
            time_major=time_major, return_trace=True)
        return y, (sf, sb), tr
    both(cells_fw + cells_bw, run, x, s0, rng, dtype, True)
