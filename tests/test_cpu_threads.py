"""The batch split of the C time loops over npl's thread pool, and ``npl.kernels.cpu.matmul``.

With ``MIN_SLICE`` and ``MIN_SLICE_PACKED`` at 16 and ``_others_busy`` forced False (so the split is taken however
busy the machine is), small problems run their C loops on 2-3 batch slices, uneven ones included;
they must give what the single-thread C loops and the Python loop give.  ``cpu.matmul`` is
checked against a float64 product for every operand layout it accepts.  Then the settings
(``set_threads``, ``NPL_CPU_THREADS``, ``loop_threads``), the busy-thread probe, a pass in a forked
child of a process whose pool is running, and two Python threads sharing the pool.
"""
import os
import signal
import sys
import threading
import time
import traceback

import numpy as np
import pytest

from npl.kernels import cpu
from test_cpu_loops import SEQ_FUNCTIONS, _close, _problem, _run

pytestmark = pytest.mark.skipif(
    not cpu.sequence_loops() or cpu._state["blas_threads"] is None,
    reason="C sequence loops or the BLAS thread controls unavailable: %s" % cpu.status())


@pytest.fixture
def settings(monkeypatch):
    """Every global this file changes is restored afterwards (set_threads, the loops switch)."""
    monkeypatch.setitem(cpu._state, "threads", cpu._state["threads"])
    monkeypatch.setitem(cpu._state, "loops", True)
    return monkeypatch


@pytest.fixture
def threaded(settings):
    """The threaded path, deterministically: slices of 16 columns up, never 'others busy'."""
    settings.setattr(cpu, "MIN_SLICE", 16)
    settings.setattr(cpu, "MIN_SLICE_PACKED", 16)
    settings.setattr(cpu, "_others_busy", lambda: False)
    return settings


@pytest.fixture
def returns(monkeypatch):
    """What each C loop wrapper and cpu.matmul returned (the number of slices / threads run),
    as (name, value) pairs in call order (the cells call them through the module)."""
    got = []
    for name in SEQ_FUNCTIONS + ("matmul",):
        def wrapped(*a, _f=getattr(cpu, name), _n=name, **k):
            r = _f(*a, **k)
            got.append((_n, r))
            return r
        monkeypatch.setattr(cpu, name, wrapped)
    return got


def _parts(D, threads):
    """The slices run_pass / npl_sgemm_threads_f32 cut D columns into for ``threads`` threads:
    width ceil(ceil(D / n) / 16) * 16, the last slice the rest; 1 below 32 columns."""
    n = min(threads, D // cpu._min_slice())
    if n <= 1 or D < 32:
        return 1
    w = -(-(-(-D // n)) // 16) * 16
    return -(-D // w)


# ----------------------------------------------------------------- 1. threaded C loops
# (B, T, I, H, threads): slices 16+16; 32+8 (d inputs folded: I <= 0.25 H); 48+48+4;
# 32+32 with a wide input (not folded); 32+16 (folded)
CASES = [(32, 5, 6, 8, 2), (40, 7, 3, 12, 2), (100, 4, 9, 20, 3), (64, 3, 40, 16, 2),
         (48, 6, 2, 24, 2)]


@pytest.mark.parametrize("kind", ["lstm", "lstm_cell", "gru", "stack"])
@pytest.mark.parametrize("B, T, I, H, n", CASES)
@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_threaded_loops_equal_one_thread_and_the_python_loop(threaded, returns, kind, B, T, I, H,
                                                             n, time_major, with_lengths):
    cell, args = _problem(kind, B, T, I, H, time_major, seed=B * 1000 + T * 100 + I + H)
    lengths = None
    if with_lengths:                        # random, unsorted, zeros among them, one full row
        lengths = np.random.default_rng(B + T).integers(0, T + 1, size=B)
        lengths[B // 2] = T
    cpu.set_threads(n)
    par = _run(cell, *args, lengths=lengths)
    seq_calls = [r for name, r in returns if name != "matmul"]
    assert seq_calls and all(r == _parts(B, n) > 1 for r in seq_calls), returns
    # the pass's all-steps GEMMs (projection, kernel gradients, d inputs) ran on the pool too
    assert any(name == "matmul" and r > 1 for name, r in returns), returns
    del returns[:]
    cpu.set_threads(1)
    one = _run(cell, *args, lengths=lengths)
    assert [r for name, r in returns if name != "matmul"] == [1] * len(seq_calls), returns
    assert all(r == 1 for _, r in returns), returns     # cpu.matmul (when called) on one thread
    cpu.enable_sequence_loops(False)
    python_loop = _run(cell, *args, lengths=lengths)
    assert len(par) == len(one) == len(python_loop)
    n_grads = len(cell.grads)               # _run's last arrays: the parameter gradients
    for k, (a, b, c) in enumerate(zip(par, one, python_loop)):
        assert a.shape == b.shape == c.shape
        # Outputs, states, gates, d inputs and d initial state come from the time loops, where a
        # slice's columns see the same arithmetic as in the whole batch's sgemm (measured: bit for
        # bit equal; 1e-6 leaves room for a BLAS whose kernel for a narrow slice sums in another
        # order).  The parameter gradients are sums over all T*B columns, by cpu.matmul's
        # row / column pieces in the threaded pass but one numpy.matmul otherwise; OpenBLAS
        # picks its kernels by shape (small-matrix and edge kernels), so the sum runs in another
        # order: measured up to 2.1e-6 relative on the one-unit GRU's bias gradient (a 288-term
        # sum that cancels), ~5e-7 elsewhere.
        # With sequence lengths, many columns add nothing, and a one-unit layer's bias gradient
        # can cancel to a small fraction of its terms (measured: 0.024 where the layer's other
        # gradients reach 5; one thread against the Python loop differed there by 3.9e-5 of it):
        # the parameter gradients are compared at the scale of the cell's gradients.
        grad = k >= len(par) - n_grads
        scale = (max(float(np.abs(g).max()) for g in python_loop[-n_grads:])
                 if grad and with_lengths else None)
        _close(a, b, "array %d, threaded vs one thread" % k, rtol=1e-5 if grad else 1e-6,
               scale=scale)
        _close(a, c, "array %d, threaded vs the Python loop" % k, scale=scale)


# ----------------------------------------------------------------- 2. cpu.matmul
def _operands(rng, M, N, K, ta, tb, batch=None):
    """a [M, K] and b [K, N] (or [batch, K, N]), as transposed views when ta / tb."""
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    a = a.T if ta else a
    if batch is None:
        b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
        b = b.T if tb else b
    else:
        b = rng.standard_normal((batch, N, K) if tb else (batch, K, N)).astype(np.float32)
        b = b.transpose(0, 2, 1) if tb else b
    return a, b


def _ref(a, b):
    return np.matmul(a.astype(np.float64), b.astype(np.float64))


# (M, N, K): split on M (M > N), split on N, sizes that are not multiples of 16, too small to split
SHAPES = [(50, 37, 13), (20, 70, 9), (64, 64, 5), (33, 17, 40), (5, 3, 7)]


@pytest.fixture(params=["packed", "sgemm"])
def kernel(request, settings):
    """cpu.matmul's two executors: the packed kernel (where built) and the BLAS's sgemm."""
    if request.param == "packed" and not cpu.packed_gemm():
        pytest.skip("the packed kernel is not built for this CPU (%s)" % cpu.status())
    old = cpu.enable_packed_gemm(request.param == "packed")
    yield request.param
    cpu.enable_packed_gemm(old)


def _matmul_parts(M, N, threads, kernel, tb):
    """The pieces cpu.matmul runs: the packed kernel splits the columns of b (not transposed);
    the sgemm path the output's larger side."""
    return _parts(N, threads) if kernel == "packed" and not tb else _parts(max(M, N), threads)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("M, N, K", SHAPES)
@pytest.mark.parametrize("ta, tb", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_equals_numpy(threaded, kernel, threads, M, N, K, ta, tb):
    cpu.set_threads(threads)
    rng = np.random.default_rng(M * 100 + N + K)
    a, b = _operands(rng, M, N, K, ta, tb)
    want = _matmul_parts(M, N, threads, kernel, tb)
    out = np.full((M, N), np.nan, np.float32)              # beta = 0: out is not read
    assert cpu.matmul(a, b, out) == want
    _close(out, _ref(a, b), "plain", rtol=1e-5)
    # beta = 1 accumulates, into an out whose rows are padded (ldc > N)
    big = rng.standard_normal((M, N + 5)).astype(np.float32)
    pad = big[:, N:].copy()
    out, before = big[:, :N], big[:, :N].astype(np.float64)
    assert cpu.matmul(a, b, out, beta=1.0) == want
    _close(out, _ref(a, b) + before, "beta=1", rtol=1e-5)
    np.testing.assert_array_equal(big[:, N:], pad)          # the padding is not written
    if threads > 1 and (N if kernel == "packed" and not tb else max(M, N)) >= 32:
        assert want > 1                                     # these shapes really split


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("tb", [False, True])
def test_matmul_batched(threaded, kernel, threads, tb):
    """a [M, K] for every b[i] [K, N] -> out[i] [M, N], out's steps and rows padded."""
    cpu.set_threads(threads)
    rng = np.random.default_rng(7)
    M, N, K, n = 21, 45, 11, 4
    a, b = _operands(rng, M, N, K, False, tb, batch=n)
    big = np.full((n + 1, M + 2, N + 3), 5.0, np.float32)
    out = big[1:, 1:M + 1, :N]
    assert cpu.matmul(a, b, out) == _parts(N, threads)
    _close(out, _ref(a, b), "batched", rtol=1e-5)
    untouched = np.ones(big.shape, bool)
    untouched[1:, 1:M + 1, :N] = False
    assert np.all(big[untouched] == 5.0)
    before = out.astype(np.float64)
    cpu.matmul(a, b, out, beta=1.0)
    _close(out, _ref(a, b) + before, "batched beta=1", rtol=1e-5)
    empty = np.zeros((0, M, N), np.float32)
    assert cpu.matmul(a, b[:0], empty) == 0


def test_matmul_rejects_what_it_cannot_do(threaded):
    cpu.set_threads(2)
    f = np.float32
    a, b = np.ones((40, 6), f), np.ones((6, 50), f)
    with pytest.raises(ValueError, match="out needs contiguous rows"):
        cpu.matmul(a, b, np.empty((50, 40), f).T)                 # column-major out
    with pytest.raises(ValueError, match="contiguous rows or columns"):
        cpu.matmul(a, b, np.empty((80, 100), f)[::2, ::2])        # neither
    with pytest.raises(ValueError, match="2-D float32"):
        cpu.matmul(a, b, np.empty((40, 50), np.float64))
    with pytest.raises(ValueError, match=r"\(40, 6\) @ \(7, 50\) -> \(40, 50\) do not match"):
        cpu.matmul(a, np.ones((7, 50), f), np.empty((40, 50), f))
    with pytest.raises(ValueError, match=r"\(40, 6\) @ \(6, 50\) -> \(40, 49\) do not match"):
        cpu.matmul(a, b, np.empty((40, 49), f))
    with pytest.raises(ValueError, match=r"got b \(3, 6, 50\), out \(40, 50\)"):
        cpu.matmul(a, np.ones((3, 6, 50), f), np.empty((40, 50), f))
    with pytest.raises(ValueError, match=r"got b \(3, 6, 50\), out \(2, 40, 50\)"):
        cpu.matmul(a, np.ones((3, 6, 50), f), np.empty((2, 40, 50), f))


def test_matmul_one_row_out_with_strided_columns(threaded):
    # (it once passed the 'contiguous rows' check and wrote N contiguous floats)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1, 5)).astype(np.float32), rng.standard_normal((5, 4)).astype(np.float32)
    buf = np.zeros((1, 32), np.float32)
    out = buf[:, ::8]                                      # [1, 4], columns 8 floats apart
    with pytest.raises(ValueError, match="out needs contiguous rows"):
        cpu.matmul(a, b, out)
    assert not buf.any()                                   # nothing written


def test_matmul_empty_inner_dimension_overwrites_out(threaded):
    # (it once computed out *= beta, which keeps NaN for beta = 0; numpy.matmul gives zeros)
    a = np.ones((2, 1), np.float32)[:, :0]
    b = np.ones((1, 3), np.float32)[:0]
    out = np.full((2, 3), np.nan, np.float32)
    cpu.matmul(a, b, out)
    np.testing.assert_array_equal(out, np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="a must be a 2-D NumPy array"):
        cpu.matmul(np.ones(3, np.float32), np.ones((3, 2), np.float32), np.empty((1, 2), np.float32))


# ----------------------------------------------------------------- 3. the settings
def test_set_threads_validates_and_returns_the_previous_value(settings):
    cpu.set_threads(None)
    for bad in (0, -1, 2.5, True, "2"):
        with pytest.raises(ValueError, match="positive integer or None"):
            cpu.set_threads(bad)
    assert cpu.set_threads(3) is None
    assert cpu.threads() == 3
    assert cpu.set_threads(np.int64(2)) == 3
    assert cpu.set_threads(None) == 2
    assert cpu.threads() == max(1, cpu._state["blas_threads"][0]())   # follows the BLAS again


def test_env_threads(monkeypatch):
    monkeypatch.delenv("NPL_CPU_THREADS", raising=False)
    assert cpu._env_threads() is None
    for value, want in (("", None), ("  ", None), ("3", 3), (" 4 ", 4)):
        monkeypatch.setenv("NPL_CPU_THREADS", value)
        assert cpu._env_threads() == want
    for bad in ("0", "-2", "x", "2.5"):
        monkeypatch.setenv("NPL_CPU_THREADS", bad)
        with pytest.raises(ValueError, match="NPL_CPU_THREADS must be a positive integer"):
            cpu._env_threads()


@pytest.mark.parametrize("packed", [True, False])
def test_loop_threads(settings, packed):
    if packed and not cpu.packed_gemm():
        pytest.skip("the packed kernel is not built for this CPU")
    old = cpu.enable_packed_gemm(packed)
    settings.setattr(cpu, "_others_busy", lambda: False)
    cpu.set_threads(4)
    m = cpu.MIN_SLICE_PACKED if packed else cpu.MIN_SLICE
    assert cpu._min_slice() == m
    try:
        _check_loop_threads(settings, m)
    finally:
        cpu.enable_packed_gemm(old)


def _check_loop_threads(settings, m):
    assert cpu.loop_threads(2 * m - 1) == 1
    assert cpu.loop_threads(2 * m) == 2
    assert cpu.loop_threads(10 * m) == 4
    cpu.set_threads(1)
    assert cpu.loop_threads(100 * m) == 1
    cpu.set_threads(4)
    settings.setattr(cpu, "_others_busy", lambda: True)
    assert cpu.loop_threads(10 * m) == 1


def _poll(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.002)
    return predicate()


def test_loop_threads_is_1_while_another_thread_is_busy(settings):
    cpu.set_threads(2)
    lib = cpu.library()
    x = np.linspace(-3, 3, 1 << 18, dtype=np.float32)
    y = np.empty_like(x)
    stop = threading.Event()

    def spin():                 # ctypes releases the GIL: this thread is runnable, in C
        deadline = time.monotonic() + 2.0
        while not stop.is_set() and time.monotonic() < deadline:
            lib.npl_tanh_f32(x.ctypes.data, y.ctypes.data, x.size)

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    try:
        busy = _poll(cpu._others_busy, 1.5)
        threads_then = cpu.loop_threads(256)
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()
    assert busy
    assert threads_then == 1
    # and idle again once it stopped (the probe reads /proc at most once a millisecond).  Only
    # this process's other runnable threads count; pytest runs none, the pool's own are excluded.
    assert _poll(lambda: not cpu._others_busy(), 1.0)
    assert cpu.loop_threads(256) == 2


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_weight_gradients_do_not_depend_on_whether_another_thread_is_busy(settings, kind):
    """The same call twice, once with npl's threads free and once while another thread is busy
    (loop_threads drops to 1): bit-identical weight gradients.  The kernel gradient's partial
    sums follow npl's thread setting, not the threads free at the moment (they once followed
    loop_threads, so the bits changed with whatever had run just before)."""
    if not cpu.packed_gemm():
        pytest.skip("the packed kernel is not built for this CPU (%s)" % cpu.status())
    cpu.set_threads(2)
    settings.setattr(cpu, "MIN_SLICE", 16)
    settings.setattr(cpu, "MIN_SLICE_PACKED", 16)
    cell, args = _problem(kind, 64, 12, 6, 16, True, seed=11)
    got = []
    for busy in (False, True, False):
        settings.setattr(cpu, "_others_busy", lambda b=busy: b)
        assert cpu.loop_threads(64) == (1 if busy else 2)
        got.append(_run(cell, *args))
    for run in got[1:]:
        for a, b in zip(got[0], run):
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- 5. fork
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="os.fork and pthread_atfork")
def test_threaded_pass_in_a_forked_child(threaded, returns):
    cpu.set_threads(2)
    cell, args = _problem("lstm", 64, 4, 5, 16, False, seed=5)
    gru, gargs = _problem("gru", 64, 4, 5, 16, True, seed=6)
    want = _run(cell, *args), _run(gru, *gargs)           # the pool started, its workers polling
    assert any(r > 1 for _, r in returns)
    del returns[:]
    pid = os.fork()                                        # while the workers still poll
    if pid == 0:
        code = 1
        try:
            got = _run(cell, *args), _run(gru, *gargs)
            threads_ran = all(r == 2 for name, r in returns if name != "matmul")
            same = all(np.array_equal(a, b) for w, g in zip(want, got) for a, b in zip(w, g))
            code = 0 if threads_ran and same else (2 if threads_ran else 3)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's threaded pass hung (killed after 20 s)")
        time.sleep(0.01)
    assert os.WIFEXITED(status), status
    assert os.WEXITSTATUS(status) == 0, \
        {1: "exception (see stderr)", 2: "results differ from the parent's",
         3: "the loops did not run on 2 threads"}.get(os.WEXITSTATUS(status))


# ----------------------------------------------------------------- 6. two callers
def test_two_python_threads_share_the_pool(threaded, returns):
    """The pool runs one job at a time; a pass that finds it taken runs its slices on its own
    thread.  Either way the same numbers."""
    cpu.set_threads(2)
    problems = [_problem(kind, 64, 5, 4, 16, False, seed=9) for kind in ("lstm", "gru")]
    want = [_run(cell, *args) for cell, args in problems]
    # each thread gets its own cells (gradients accumulate on a cell), with the same parameters
    copies = [[_problem(kind, 64, 5, 4, 16, False, seed=9) for kind in ("lstm", "gru")]
              for _ in range(2)]
    results, errors = [[], []], []

    def work(j):
        try:
            for _ in range(5):
                results[j].append([_run(cell, *args) for cell, args in copies[j]])
        except BaseException as e:          # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=work, args=(j,), daemon=True) for j in range(2)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not any(t.is_alive() for t in workers), "a thread did not finish: pool deadlock?"
    assert not errors, errors
    assert all(r in (1, 2) for name, r in returns if name != "matmul")
    for j in range(2):
        assert len(results[j]) == 5
        for passes in results[j]:
            for w, g in zip(want, passes):
                for k, (a, b) in enumerate(zip(w, g)):
                    np.testing.assert_array_equal(a, b, "array %d" % k)


def test_blas_thread_count_is_restored_by_the_last_pass_to_leave(monkeypatch):
    """Passes in two Python threads at once share one saved OpenBLAS thread count: the first to
    enter sets 1, the last to leave restores it (a fake BLAS records what it is told)."""
    count = {"n": 4}
    told = []

    def put(n):
        told.append(n)
        count["n"] = n
    monkeypatch.setitem(cpu._state, "blas_threads", (lambda: count["n"], put))
    a, b = cpu._OneBlasThread(2), cpu._OneBlasThread(2)
    a.__enter__()
    assert count["n"] == 1
    b.__enter__()
    a.__exit__(None, None, None)
    assert count["n"] == 1                  # b's pass is still running: not restored yet
    b.__exit__(None, None, None)
    assert count["n"] == 4 and told == [1, 4]
    with cpu._OneBlasThread(1):             # one thread: the BLAS is left alone
        assert count["n"] == 4
    assert told == [1, 4]
