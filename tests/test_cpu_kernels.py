"""The fused CPU kernels (npl/kernels/cpu_kernels.c) against the NumPy array code of npl.gates.

The array code is itself checked against finite differences and TensorFlow elsewhere; here each
kernel must reproduce it on random inputs (float32 rounding apart), alone and inside whole
sequence passes, and the build must fall back cleanly where no compiler is found.
"""
import os

import numpy as np
import pytest

import npl
from npl import gates
from npl.activations import tanh
from npl.kernels import cpu
from helpers import flatten, randomize_params

pytestmark = pytest.mark.skipif(not cpu.available(), reason="CPU kernels not built: %s" % cpu.status())


@pytest.fixture
def kernels_off():
    old = cpu.enable(False)
    yield
    cpu.enable(old)


def _f32(rng, *shape, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(np.float32)


def _close(a, b, what, rtol=2e-6):
    err = float(np.max(np.abs(a.astype(np.float64) - b))) / max(1e-30, float(np.max(np.abs(b))))
    assert err <= rtol, (what, err)


def test_tanh_and_sigmoid_match_float64_references():
    x = np.concatenate([np.linspace(-30, 30, 600001), np.logspace(-38, 1.3, 20000),
                        -np.logspace(-38, 1.3, 20000),
                        [0.0, -0.0, 0.625, -0.625, 0.6249999, 88.0, -88.0, 1e30, -1e30]]
                       ).astype(np.float32)
    y = np.empty_like(x)
    cpu.tanh(x, y)
    ref = np.tanh(x.astype(np.float64))
    assert np.max(np.abs(y - ref)) <= 1.2e-7
    nz = np.abs(ref) > 1e-30
    ulp = np.abs(y - ref)[nz] / np.spacing(np.abs(ref[nz]).astype(np.float32))
    assert ulp.max() <= 2.0, ulp.max()                 # NumPy's own float32 tanh: ~1.4 ulp
    assert np.array_equal(np.signbit(y), np.signbit(x))
    cpu.sigmoid(x, y)
    ref = 0.5 * np.tanh(0.5 * x.astype(np.float64)) + 0.5
    assert np.max(np.abs(y - ref)) <= 1.2e-7


def test_nan_and_inf_inputs_give_numpy_results():
    """A NaN passes through tanh / sigmoid as NaN (the exp's 2^n is formed from a NaN-free n: a
    float-to-int conversion of NaN is undefined behaviour, which UBSan reported), +-inf saturate."""
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.5, np.nan], np.float32)
    for f, ref in ((cpu.tanh, np.tanh(x.astype(np.float64))),
                   (cpu.sigmoid, 0.5 * np.tanh(0.5 * x.astype(np.float64)) + 0.5)):
        y = np.empty_like(x)
        f(x, y)
        np.testing.assert_allclose(y, ref, rtol=2e-7, atol=0)     # NaN where NumPy gives NaN


def test_compile_timeout_kills_the_whole_compiler(tmp_path):
    """A compile that runs past its time is stopped with everything it started (the driver and
    its cc1 / as / ld children), and reported."""
    import subprocess
    import time
    pidfile = tmp_path / "child.pid"
    fake = tmp_path / "slowcc"
    fake.write_text("#!/bin/sh\nsleep 60 &\necho $! > %s\nwait\n" % pidfile)
    fake.chmod(0o755)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="took more than 1 s; killed"):
        cpu._compile(str(fake), cpu.SOURCE_PATH, str(tmp_path / "x.so"), [], timeout=1)
    assert time.monotonic() - t0 < 30
    child = int(pidfile.read_text())
    for _ in range(50):                                  # the grandchild is gone too
        if subprocess.run(["kill", "-0", str(child)], capture_output=True).returncode != 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the compiler's child process %d survived the timeout" % child)


@pytest.mark.parametrize("peep", [False, True])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("H, B", [(1, 1), (5, 3), (32, 17), (64, 128)])
def test_lstm_backward_matches_array_code(kernels_off, peep, clip, H, B):
    rng = np.random.default_rng(H * 1000 + B + 7 * peep + 11 * clip)
    T, t = 3, 1                                        # dg: a step of a gate-major slab (strided)
    g = np.empty((4 * H, B), np.float32)
    g[...] = 1 / (1 + np.exp(-_f32(rng, 4 * H, B, scale=2)))
    g[H:2 * H] = np.tanh(_f32(rng, H, B, scale=2))
    c_prev, c = _f32(rng, H, B, scale=2), _f32(rng, H, B, scale=2)
    dm, dc0 = _f32(rng, H, B), _f32(rng, H, B)
    pw = tuple(_f32(rng, H)[:, None] for _ in range(3)) if peep else None
    cm = (np.abs(c) <= 1.0) if clip else None
    out = {}
    for on in (False, True):
        cpu.enable(on)
        slab = np.full((4 * H, T * B), np.nan, np.float32)
        dg = slab.reshape(4 * H, T, B)[:, t]
        dc = dc0.copy()
        gates.lstm_backward_pointwise(g, c_prev, c, dm, dc, dg, tanh, tanh,
                                      np.empty((H, B), np.float32), pw, cm)
        out[on] = (slab, dc)
    cpu.enable(False)
    np.testing.assert_array_equal(np.isnan(out[True][0]), np.isnan(out[False][0]))  # only step t
    dg_on = out[True][0].reshape(4 * H, T, B)[:, t]
    dg_off = out[False][0].reshape(4 * H, T, B)[:, t]
    _close(dg_on, dg_off, "d_gates")
    _close(out[True][1], out[False][1], "dc_prev")


@pytest.mark.parametrize("H, B", [(1, 1), (7, 5), (64, 128)])
def test_gru_backward_matches_array_code(kernels_off, H, B):
    rng = np.random.default_rng(H + B)
    g = np.empty((3 * H, B), np.float32)
    g[:2 * H] = 1 / (1 + np.exp(-_f32(rng, 2 * H, B, scale=2)))
    g[2 * H:] = np.tanh(_f32(rng, H, B, scale=2))
    h_prev, dh, drh = _f32(rng, H, B), _f32(rng, H, B), _f32(rng, H, B)
    out = {}
    for on in (False, True):
        cpu.enable(on)
        slab = np.full((3 * H, 2 * B), np.nan, np.float32)
        dg = slab.reshape(3 * H, 2, B)[:, 1]
        dh_prev, tmp = np.empty((H, B), np.float32), np.empty((H, B), np.float32)
        gates.gru_backward_pointwise(g, h_prev, dh, dg, tanh, dh_prev, tmp)
        gates.gru_reset_backward(g, h_prev, drh, dh_prev, dg, tmp)
        out[on] = (dg.copy(), dh_prev)
    cpu.enable(False)
    _close(out[True][0], out[False][0], "d_gates")
    _close(out[True][1], out[False][1], "dh_prev")


def _cells():
    return {
        "lstm": lambda: npl.rnn.BasicLSTMCell(24, forget_bias=0.7),
        "lstm_peep_clip": lambda: npl.rnn.LSTMCell(24, use_peepholes=True, cell_clip=0.8,
                                                   num_proj=9, proj_clip=0.6),
        "gru": lambda: npl.rnn.GRUCell(24),
        "stack": lambda: npl.rnn.MultiRNNCell([npl.rnn.GRUCell(12), npl.rnn.BasicLSTMCell(24)]),
    }


@pytest.mark.parametrize("kind", list(_cells()))
def test_sequence_backward_with_kernels_equals_array_code(kind):
    """Whole fwd+bwd passes (unsorted lengths, one of them 0, random state) of the Python loop
    agree with the pointwise kernels on and off: outputs bit for bit (the forward is the array
    code), gradients to float32.  (The C time loops, which would take this batch too, are
    compared with the Python loop in test_cpu_loops.py.)"""
    rng = np.random.default_rng(5)
    cell = _cells()[kind]()
    cell.build(6, np.float32)
    randomize_params(cell, rng)
    x = _f32(rng, 5, 9, 6)
    L = np.array([9, 0, 4, 7, 1])
    res = {}
    for on in (False, True):
        old, old_loops = cpu.enable(on), cpu.enable_sequence_loops(False)
        try:
            cell.zero_grad()
            out, _, tr = npl.nn.dynamic_rnn(cell, x, L, return_trace=True)
            d = np.random.default_rng(9).standard_normal(out.shape).astype(np.float32)
            dx, _ = tr.backward(d, None)
            res[on] = (out, dx, {k: v.copy() for k, v in cell.grads.items()})
        finally:
            cpu.enable(old)
            cpu.enable_sequence_loops(old_loops)
    np.testing.assert_array_equal(res[True][0], res[False][0])
    _close(res[True][1], res[False][1], "d_inputs", 1e-5)
    for k in res[False][2]:
        _close(res[True][2][k], res[False][2][k], k, 1e-5)


def test_float64_and_other_activations_use_the_array_code():
    g64 = np.zeros((8, 3))
    assert gates._cpu(g64, tanh) is None
    assert gates._cpu(g64.astype(np.float32), npl.activations.relu) is None
    assert gates._cpu(g64.astype(np.float32), tanh) is cpu


def test_wrappers_reject_wrong_shapes_and_layouts():
    H, B = 4, 3
    z = lambda *s: np.zeros(s, np.float32)     # noqa: E731
    with pytest.raises(ValueError, match="dm must have shape"):
        cpu.lstm_backward(z(4 * H, B), z(H, B), z(H, B), z(H, B + 1), z(H, B), z(4 * H, B))
    with pytest.raises(ValueError, match="c_prev must be a C-contiguous float32"):
        cpu.lstm_backward(z(4 * H, B), z(B, H).T, z(H, B), z(H, B), z(H, B), z(4 * H, B))
    with pytest.raises(ValueError, match="dg must be a 2-D float32 array with contiguous rows"):
        cpu.gru_backward(z(3 * H, B), z(H, B), z(H, B), np.zeros((3 * H, B)), z(H, B))
    with pytest.raises(TypeError, match="True or False"):
        cpu.enable(1)


def test_no_compiler_falls_back_to_array_code(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu, "_state", dict(cpu._state, lib=None, why=None, tried=False))
    monkeypatch.setattr(cpu, "_compiler", lambda: None)
    assert cpu.library() is None and not cpu.available()
    assert "no C compiler" in cpu.status()
    assert gates._cpu(np.zeros((8, 3), np.float32), tanh) is None
    cell = npl.rnn.GRUCell(4, input_size=3, seed=0)
    out, _, tr = npl.nn.dynamic_rnn(cell, np.ones((2, 3, 3), np.float32), return_trace=True)
    tr.backward(np.ones_like(out), None)              # runs on the array code


def test_build_caches_the_library(monkeypatch, tmp_path):
    monkeypatch.setenv("NPL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu, "_state", dict(cpu._state, lib=None, why=None, tried=False))
    assert cpu.library() is not None
    built = sorted(os.listdir(tmp_path / "kernels"))
    assert len(built) == 1 and built[0].startswith("cpu_kernels-") and built[0].endswith(".so")
    mtime = os.path.getmtime(tmp_path / "kernels" / built[0])
    monkeypatch.setattr(cpu, "_state", dict(cpu._state, lib=None, why=None, tried=False))
    monkeypatch.setattr(cpu, "_compile", lambda *a: pytest.fail("recompiled a cached library"))
    assert cpu.library() is not None
    assert os.path.getmtime(tmp_path / "kernels" / built[0]) == mtime


def test_cc_with_arguments_and_an_unwritable_cache(monkeypatch, tmp_path):
    """$CC may carry arguments (they are part of the cache key); where the cache cannot be
    written the library is built in a temporary folder that is removed once it is loaded."""
    import tempfile
    gcc = cpu._compiler()[0]          # the module is skipped unless the kernels built, so one exists
    monkeypatch.setenv("CC", "%s -DNPL_TEST_FLAG=1" % gcc)
    assert cpu._compiler() == [gcc, "-DNPL_TEST_FLAG=1"]
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NPL_CACHE_DIR", str(blocker))         # $NPL_CACHE_DIR/kernels: unwritable
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(cpu, "_state", dict(cpu._state, lib=None, why=None, tried=False))
    lib = cpu.library()
    assert lib is not None, cpu.status()
    x = np.linspace(-3, 3, 64).astype(np.float32)
    y = np.empty_like(x)
    cpu.tanh(x, y)                                            # the loaded library still runs
    np.testing.assert_allclose(y, np.tanh(x), atol=2e-7)
    assert list(scratch.iterdir()) == []                      # no npl-kernels-* left behind


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["lstm", "gru", "stack"])
@pytest.mark.parametrize("kernels", [False, True])
def test_prescaled_forward_is_bit_for_bit_the_plain_one(monkeypatch, dtype, kind, kernels):
    """Halving the sigmoid gates' weights is exact, so the prescaled forward (one tanh for all
    gates, and the fused combine step) gives exactly the plain forward's outputs and states."""
    rng = np.random.default_rng(11)
    cell = _cells()[kind]()
    cell.build(6, dtype)
    randomize_params(cell, rng)
    x = rng.standard_normal((5, 9, 6)).astype(dtype)
    L = np.array([9, 0, 4, 7, 1])
    old = cpu.enable(kernels)
    try:
        res = []
        for ratio in (0, 10 ** 9):
            monkeypatch.setattr(npl.cells, "PRESCALE_MIN_RATIO", ratio)
            out, st, tr = npl.nn.dynamic_rnn(cell, x, L, return_trace=True)
            res.append((out, st, [r.slabs["gates"].copy() for r in tr.records]))
    finally:
        cpu.enable(old)
    np.testing.assert_array_equal(res[0][0], res[1][0])
    for a, b in zip(flatten(res[0][1]), flatten(res[1][1])):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(res[0][2], res[1][2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_split_kernel_gradient_equals_stacked(monkeypatch, kind, time_major):
    """The kernel gradient with x's rows used in place (large contiguous inputs) equals the stacked
    single-GEMM form (float64, so any layout slip would show far above rounding)."""
    rng = np.random.default_rng(4)
    cell = _cells()[kind]()
    cell.build(6, np.float64)
    randomize_params(cell, rng)
    x = rng.standard_normal((9, 5, 6) if time_major else (5, 9, 6))
    d = rng.standard_normal((9, 5, 24) if time_major else (5, 9, 24))
    grads = []
    for limit in (0, 1 << 40):
        monkeypatch.setattr(npl.cells, "SPLIT_KERNEL_GRAD_BYTES", limit)
        cell.zero_grad()
        out, _, tr = npl.nn.dynamic_rnn(cell, x, time_major=time_major, return_trace=True)
        dx, _ = tr.backward(d, None)
        grads.append(({k: v.copy() for k, v in cell.grads.items()}, dx))
    for k in grads[0][0]:
        np.testing.assert_allclose(grads[0][0][k], grads[1][0][k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-12, atol=1e-12)
