"""npl's packed recurrent-GEMM kernel (``npl_pack`` / ``packed_gemm`` in npl/kernels/cpu_kernels.c).

1. ``npl_packed_matmul_f32`` against float64 products: row counts that are not multiples of the
   6-row panel, column tails of every width around the 16-float vectors and 64-column tiles, K = 1,
   beta 0 and 1, a transposed A, a batch with padded strides; what lies outside the output is never
   written and beta = 0 never reads the output (NaN there).  Bit for bit the same on 1, 2 and 3
   threads.
2. The C loops with the packed kernel against the C loops with the BLAS's sgemm and the Python
   loop (which the gradient and TensorFlow tests check), with sequence lengths, d inputs folded or
   not, threaded or not.
3. The other builds: the AVX2 kernel (the library compiled here with -march=haswell where the CPU
   has AVX2 and FMA) through the same checks and the whole loops, and the baseline build, which has
   no kernel and must leave every product to sgemm.
4. The switch: ``enable_packed_gemm``, ``NPL_PACKED_GEMM`` and what ``status()`` says.
5. The kernel gradient and the blocked transposing copy.
6. Weights packed once for several calls (``pack_weight``, ``PackedWeight``): the layout against
   one built here with NumPy, from contiguous, transposed and row-strided matrices; the products
   on a packed A; the forward loops given one, bit for bit as given the matrix; a pass whose steps
   run in several chunks packs each weight once and equals the sgemm and Python loops.
7. The backward's streaming stores into the gradient slab (``npl_set_stream_min_bytes``): the
   same bits as plain stores, for slices that start anywhere in a vector.
"""
import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

import npl
from npl.kernels import cpu
from test_cpu_loops import _close, _problem, _run
from test_cpu_loops import calls   # noqa: F401 - the fixture that counts the C loops' calls

pytestmark = pytest.mark.skipif(not cpu.sequence_loops(),
                                reason="C sequence loops unavailable: %s" % cpu.status())
needs_packed = pytest.mark.skipif(not cpu.packed_gemm(),
                                  reason="the packed kernel is not built for this CPU")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _build(tmp_dir, name, flags):
    """The kernel library compiled with ``flags`` into tmp_dir, loaded with cpu.py's signatures."""
    cc = cpu._compiler()
    if cc is None:
        pytest.skip("no C compiler")
    path = os.path.join(str(tmp_dir), name)
    cpu._compile(cc, cpu.SOURCE_PATH, path, flags)
    lib = ctypes.CDLL(path)
    for fn, argtypes in cpu._SIGNATURES.items():
        f = getattr(lib, fn)
        f.argtypes = argtypes
        f.restype = ctypes.c_int64 if fn in cpu._RETURNS_INT else None
    return lib


@pytest.fixture(scope="module")
def avx2_lib(tmp_path_factory):
    if not {"avx2", "fma"} <= _cpu_flags():
        pytest.skip("this CPU has no AVX2 with FMA")
    lib = _build(tmp_path_factory.mktemp("avx2"), "k_avx2.so",
                 cpu.FLAGS + ("-march=haswell", "-mtune=generic"))
    assert lib.npl_packed_gemm_width() == 8
    return lib


@pytest.fixture(scope="module")
def baseline_lib(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("base"), "k_base.so", cpu.FLAGS)


@pytest.fixture
def native_lib():
    if not cpu.packed_gemm():
        pytest.skip("the packed kernel is not built for this CPU")
    return cpu.library()


def _call(lib, a, x, out, beta, threads=1):
    """npl_packed_matmul_f32 on NumPy arrays: a [M, K] (any strides), x [K, N] or [n, K, N] and
    out [M, N] or [n, M, N] with contiguous rows."""
    M, K = a.shape
    batched = x.ndim == 3
    n = x.shape[0] if batched else 1
    N = x.shape[-1]
    assert x.strides[-1] == 4 and out.strides[-1] == 4
    return lib.npl_packed_matmul_f32(
        a.ctypes.data, a.strides[0] // 4, a.strides[1] // 4, M, K,
        x.ctypes.data, x.strides[-2] // 4, x.strides[0] // 4 if batched else 0, N, beta,
        out.ctypes.data, out.strides[-2] // 4, out.strides[0] // 4 if batched else 0, n, threads)


def _ref(a, x):
    return np.matmul(a.astype(np.float64), x.astype(np.float64))


def _check_products(lib, M, N, K, transposed, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((K, M) if transposed else (M, K)).astype(np.float32)
    a = a.T if transposed else a
    x = rng.standard_normal((K, N + 3)).astype(np.float32)[:, :N]       # row stride N + 3
    big = np.full((M + 2, N + 5), np.nan, np.float32)                   # beta = 0: not read
    out = big[1:M + 1, 2:N + 2]
    assert _call(lib, a, x, out, 0.0) == 1
    _close(out, _ref(a, x), "beta=0 (M, N, K) = %s" % ((M, N, K),), rtol=1e-5)
    outside = np.ones(big.shape, bool)
    outside[1:M + 1, 2:N + 2] = False
    assert np.isnan(big[outside]).all()                                 # nothing else written
    before = rng.standard_normal((M, N)).astype(np.float32)
    out[...] = before
    assert _call(lib, a, x, out, 1.0) == 1
    _close(out, _ref(a, x) + before, "beta=1 (M, N, K) = %s" % ((M, N, K),), rtol=1e-5)
    assert np.isnan(big[outside]).all()


# M: under, at and over the 6-row panel; N: every tail around 16-float vectors and 64-column tiles
PRODUCT_M = [1, 5, 6, 7, 25]
PRODUCT_N = [1, 15, 16, 17, 48, 63, 64, 65, 129]
PRODUCT_K = [1, 7, 130]


@pytest.mark.parametrize("M", PRODUCT_M)
@pytest.mark.parametrize("N", PRODUCT_N)
@pytest.mark.parametrize("K", PRODUCT_K)
def test_packed_products_equal_float64(native_lib, M, N, K):
    _check_products(native_lib, M, N, K, transposed=(M + N + K) % 2 == 0, seed=M * 1000 + N * 10 + K)


@pytest.mark.parametrize("M, N, K", [(M, N, K) for M in PRODUCT_M for N in (1, 17, 64, 129)
                                     for K in (1, 130)])
def test_avx2_products_equal_float64(avx2_lib, M, N, K):
    _check_products(avx2_lib, M, N, K, transposed=(M + K) % 2 == 1, seed=M * 1000 + N * 10 + K)


@pytest.mark.parametrize("which", ["native", "avx2"])
def test_packed_batch_with_padded_strides_and_threads(request, which):
    lib = request.getfixturevalue(which + "_lib")
    rng = np.random.default_rng(3)
    M, K, N, n = 29, 19, 100, 4
    a = rng.standard_normal((M, K + 2)).astype(np.float32)[:, 1:K + 1]   # row stride K + 2
    x = rng.standard_normal((n + 1, K + 1, N + 7)).astype(np.float32)[1:, :K, 3:N + 3]
    want = _ref(a, x)
    results = []
    for threads in (1, 2, 3):
        big = np.full((n, M + 1, N + 4), np.nan, np.float32)
        out = big[:, :M, 1:N + 1]
        used = _call(lib, a, x, out, 0.0, threads)
        assert used == (1 if threads == 1 else -(-N // (-(-(-(-N // threads)) // 16) * 16)))
        _close(out, want, "batch, %d threads" % threads, rtol=1e-5)
        assert np.isnan(big[:, M]).all() and np.isnan(big[:, :, 0]).all()
        assert np.isnan(big[:, :, N + 1:]).all()
        results.append(out.copy())
    # every output element is one k-ordered sum, whatever slice it falls in: bit for bit
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_baseline_build_has_no_kernel(baseline_lib):
    assert baseline_lib.npl_packed_gemm_width() == 0
    a, x = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    out = np.full((4, 5), 7.0, np.float32)
    assert _call(baseline_lib, a, x, out, 0.0) == 0                     # nothing done
    assert (out == 7.0).all()


def test_switched_off_kernel_does_nothing(native_lib):
    old = cpu.enable_packed_gemm(False)
    try:
        assert cpu.packed_gemm() == 0
        a, x = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
        out = np.full((4, 5), 7.0, np.float32)
        assert _call(native_lib, a, x, out, 0.0) == 0
        assert (out == 7.0).all()
        assert "packed" not in cpu.status()
    finally:
        cpu.enable_packed_gemm(old)
    assert cpu.packed_gemm() in (8, 16) and "packed" in cpu.status()


def test_enable_packed_gemm_validates():
    for bad in (1, 0, "yes", None):
        with pytest.raises(TypeError, match=r"enable_packed_gemm\(on\): on must be True or False"):
            cpu.enable_packed_gemm(bad)


def test_env_switch_turns_the_kernel_off():
    code = ("import npl.kernels.cpu as c, numpy as np; print(c.packed_gemm(), "
            "'packed' in c.status())")
    env = dict(os.environ, NPL_PACKED_GEMM="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=300).stdout.decode()
    assert out.split()[-2:] == ["0", "False"], out


# ----------------------------------------------------------------- 2. the loops
# (B, T, I, H): d inputs folded (I <= H/4) and not; batch tails around 16 and 64 columns; batch 8
LOOP_CASES = [(9, 6, 3, 16), (17, 5, 10, 8), (70, 4, 6, 30), (8, 3, 40, 13), (33, 7, 2, 9)]


def _three_ways(cell, args, lengths, threads, monkeypatch):
    """(packed C loops, sgemm C loops, Python loop) results of one problem."""
    monkeypatch.setitem(cpu._state, "threads", threads)
    monkeypatch.setattr(cpu, "MIN_SLICE", 16)
    monkeypatch.setattr(cpu, "MIN_SLICE_PACKED", 16)
    monkeypatch.setattr(cpu, "_others_busy", lambda: False)
    old_loops, old_packed = cpu.enable_sequence_loops(True), cpu.enable_packed_gemm(True)
    try:
        packed = _run(cell, *args, lengths=lengths)
        cpu.enable_packed_gemm(False)
        sgemm = _run(cell, *args, lengths=lengths)
        cpu.enable_sequence_loops(False)
        python_loop = _run(cell, *args, lengths=lengths)
    finally:
        cpu.enable_sequence_loops(old_loops)
        cpu.enable_packed_gemm(old_packed)
    return packed, sgemm, python_loop


def _check_loops(cell, args, lengths, threads, monkeypatch, calls):
    packed, sgemm, python_loop = _three_ways(cell, args, lengths, threads, monkeypatch)
    assert calls["lstm_forward_seq"] + calls["gru_forward_seq"] >= 2     # C loops ran, twice
    n_grads = len(cell.grads)
    for k, (a, b, c) in enumerate(zip(packed, sgemm, python_loop)):
        assert a.shape == b.shape == c.shape
        grad = k >= len(packed) - n_grads
        # with lengths a one-unit layer's bias gradient can cancel far below its terms: compare
        # the parameter gradients at the scale of the cell's gradients (as test_cpu_threads does)
        scale = (max(float(np.abs(g).max()) for g in python_loop[-n_grads:])
                 if grad and lengths is not None else None)
        _close(a, b, "array %d, packed vs sgemm" % k, rtol=2e-5, scale=scale)
        _close(a, c, "array %d, packed vs the Python loop" % k, scale=scale)


@needs_packed
@pytest.mark.parametrize("kind", ["lstm", "lstm_cell", "gru", "stack"])
@pytest.mark.parametrize("B, T, I, H", LOOP_CASES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_loops_on_the_packed_kernel(monkeypatch, calls, kind, B, T, I, H, threads,
                                    with_lengths):
    cell, args = _problem(kind, B, T, I, H, time_major=(B % 2 == 0), seed=B * 97 + T * 13 + H)
    lengths = None
    if with_lengths:                               # random, unsorted, zeros among them, one full
        lengths = np.random.default_rng(B * T).integers(0, T + 1, size=B)
        lengths[B // 3] = T
    _check_loops(cell, args, lengths, threads, monkeypatch, calls)


@pytest.mark.parametrize("which", ["avx2", "baseline"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "stack"])
def test_loops_on_the_other_builds(request, monkeypatch, calls, which, kind):
    """The whole loops with the AVX2 kernel and with no kernel (the baseline build) in place of
    the native library."""
    lib = request.getfixturevalue(which + "_lib")
    monkeypatch.setitem(cpu._state, "lib", lib)
    assert cpu.packed_gemm() == (8 if which == "avx2" else 0)
    cell, args = _problem(kind, 33, 5, 4, 20, time_major=True, seed=5)
    lengths = np.random.default_rng(1).integers(0, 6, size=33)
    _check_loops(cell, args, lengths, 2, monkeypatch, calls)
    _check_loops(cell, args, None, 1, monkeypatch, calls)


@needs_packed
def test_threaded_and_one_thread_packed_loops_agree_bit_for_bit(monkeypatch):
    """Every output of the time loops is computed column by column in the same order however
    the batch is sliced (the weight gradients, sums over all columns, are not compared)."""
    cell, args = _problem("stack", 48, 6, 5, 24, time_major=True, seed=11)
    monkeypatch.setattr(cpu, "MIN_SLICE_PACKED", 16)
    monkeypatch.setattr(cpu, "_others_busy", lambda: False)
    runs = []
    for threads in (1, 3):
        monkeypatch.setitem(cpu._state, "threads", threads)
        runs.append(_run(cell, *args))
    n_grads = len(cell.grads)
    for k, (a, b) in enumerate(zip(runs[0][:-n_grads], runs[1][:-n_grads])):
        np.testing.assert_array_equal(a, b, err_msg="array %d" % k)


# ----------------------------------------------------------------- 5. the kernel gradient
def _kgrad_ref(x, h, dG2, scale=None):
    T, B, I = x.shape
    hh = h if scale is None else h * scale
    Z = np.concatenate([x.transpose(2, 0, 1).reshape(I, T * B).astype(np.float64),
                        hh.transpose(1, 0, 2).reshape(h.shape[1], T * B).astype(np.float64),
                        np.ones((1, T * B))])
    return Z @ dG2.astype(np.float64).T                    # [I+P+1, T*B] @ [T*B, nG]


@needs_packed
@pytest.mark.parametrize("T, B, I, P, nG", [(1, 1, 1, 1, 3), (5, 17, 3, 8, 32), (3, 64, 28, 20, 80),
                                            (7, 9, 1, 1, 4), (4, 33, 70, 65, 196)])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("layout", ["time_major", "batch_major", "slab_rows"])
def test_kernel_grad_equals_float64(monkeypatch, T, B, I, P, nG, threads, layout):
    """The per-step kernel-gradient sum against one float64 product: inputs time-major or a
    batch-major view, the states and the reset-gate scale as strided views of larger slabs, and
    the gate gradients a block of rows of a larger slab (the GRU's two kernels)."""
    monkeypatch.setitem(cpu._state, "threads", threads)
    monkeypatch.setattr(cpu, "MIN_SLICE_PACKED", 1)
    monkeypatch.setattr(cpu, "_others_busy", lambda: False)
    rng = np.random.default_rng(T * 1000 + B * 10 + I)
    f = np.float32
    if layout == "batch_major":
        x = rng.standard_normal((B, T, I)).astype(f).transpose(1, 0, 2)
    else:
        x = rng.standard_normal((T, B, I)).astype(f)
    h = rng.standard_normal((T + 1, P + 2, B)).astype(f)[1:, 1:P + 1]     # step / row strides
    scale = rng.uniform(0, 1, (T, 3 * P, B)).astype(f)[:, :P]
    slab = rng.standard_normal((nG + 5, T * B)).astype(f)
    dG2 = slab[2:nG + 2] if layout == "slab_rows" else slab[:nG].copy()
    for s in (None, scale):
        out = np.full((I + P + 1, nG), np.nan, f)
        used = cpu.kernel_grad(x, h, dG2, out, s)
        assert used == min(threads, T)
        _close(out, _kgrad_ref(x, h, dG2, s), "kernel grad, scale %s" % (s is not None), rtol=1e-5)


@needs_packed
def test_kernel_grad_declines_what_it_does_not_take():
    f = np.float32
    x, h = np.ones((2, 3, 4), f), np.ones((2, 5, 3), f)
    dG2, out = np.ones((6, 6), f), np.empty((10, 6), f)
    assert cpu.kernel_grad(x, h, dG2, out) > 0
    assert cpu.kernel_grad(np.ones((2, 3, 8), f)[:, :, ::2], h, dG2, out) == 0   # strided features
    assert cpu.kernel_grad(x.astype(np.float64), h, dG2, out) == 0
    assert cpu.kernel_grad(x, h, dG2, np.empty((6, 10), f).T) == 0              # out not C-order
    with pytest.raises(ValueError, match=r"shapes x \(2, 3, 4\), h \(2, 5, 3\), dG2 \(6, 7\)"):
        cpu.kernel_grad(x, h, np.ones((6, 7), f), out)
    with pytest.raises(ValueError, match=r"scale \(2, 5, 2\)"):
        cpu.kernel_grad(x, h, dG2, out, np.ones((2, 5, 2), f))
    old = cpu.enable_packed_gemm(False)
    try:
        assert cpu.kernel_grad(x, h, dG2, out) == 0
    finally:
        cpu.enable_packed_gemm(old)


@needs_packed
def test_kernel_grad_leaves_large_accumulators_to_the_blas(monkeypatch):
    f = np.float32
    x, h = np.ones((2, 3, 4), f), np.ones((2, 5, 3), f)
    dG2, out = np.ones((6, 6), f), np.empty((10, 6), f)
    monkeypatch.setattr(cpu, "KERNEL_GRAD_MAX_ACC_BYTES", 6 * 16 * 4)      # [6, 16] floats: fits
    assert cpu.kernel_grad(x, h, dG2, out) > 0
    monkeypatch.setattr(cpu, "KERNEL_GRAD_MAX_ACC_BYTES", 6 * 16 * 4 - 1)
    assert cpu.kernel_grad(x, h, dG2, out) == 0


# ----------------------------------------------------------------- 6. the transposing copy
@pytest.mark.parametrize("n, a, b", [(1, 1, 1), (3, 17, 5), (2, 16, 16), (4, 33, 130), (2, 128, 40)])
def test_copy_transposed_equals_numpy(n, a, b):
    rng = np.random.default_rng(n * 100 + a + b)
    slab = rng.standard_normal((n + 1, b + 3, a + 2)).astype(np.float32)     # [n, b, a] storage
    src = slab[1:, 1:b + 1, :a].transpose(0, 2, 1)                            # [n, a, b] view
    big = np.full((n, a + 1, b + 4), np.nan, np.float32)
    dst = big[:, :a, 2:b + 2]
    assert cpu.copy_transposed(src, dst)
    np.testing.assert_array_equal(dst, src)
    assert np.isnan(big[:, a]).all() and np.isnan(big[:, :, :2]).all()
    assert np.isnan(big[:, :, b + 2:]).all()                                  # nothing else written
    bm = np.full((a, n, b), np.nan, np.float32).transpose(1, 0, 2)            # a batch-major output
    assert cpu.copy_transposed(src, bm)
    np.testing.assert_array_equal(bm, src)


def test_copy_transposed_declines_what_it_does_not_take():
    f = np.float32
    src = np.ones((2, 4, 3), f).transpose(0, 2, 1)
    assert not cpu.copy_transposed(src.astype(np.float64), np.empty((2, 3, 4)))
    assert not cpu.copy_transposed(np.ones((2, 3, 4), f), np.empty((2, 3, 4), f))   # not transposed
    assert not cpu.copy_transposed(src, np.empty((2, 4, 3), f).transpose(0, 2, 1))  # dst strided
    assert not cpu.copy_transposed(src, np.empty((2, 3, 5), f))                     # shape
    assert not cpu.copy_transposed(src, src.base.reshape(2, 3, 4))                  # overlapping


# ----------------------------------------------------------------- 6. weights packed once
def _layout(a):
    """The packed kernel's layout built with NumPy: rows padded with zeros to whole panels of 6,
    each panel stored k by k ([panel, k, row])."""
    M, K = a.shape
    panels = -(-M // 6)
    padded = np.zeros((panels * 6, K), np.float32)
    padded[:M] = a
    return padded.reshape(panels, 6, K).transpose(0, 2, 1).ravel()


@pytest.mark.parametrize("M, K", [(1, 1), (5, 3), (6, 7), (7, 130), (512, 128), (25, 29)])
@pytest.mark.parametrize("form", ["contiguous", "transposed", "row_strided"])
@pytest.mark.parametrize("which", ["native", "avx2"])
def test_pack_weight_layout(request, monkeypatch, M, K, form, which):
    monkeypatch.setitem(cpu._state, "lib", request.getfixturevalue(which + "_lib"))
    rng = np.random.default_rng(M * 31 + K)
    if form == "contiguous":
        a = rng.standard_normal((M, K)).astype(np.float32)
    elif form == "transposed":                          # U.T of a kernel's rows, read in place
        a = rng.standard_normal((K, M)).astype(np.float32).T
    else:
        a = rng.standard_normal((M, K + 5)).astype(np.float32)[:, 2:K + 2]
    n = cpu.packed_floats(M, K)
    assert n == -(-M // 6) * 6 * K
    out = np.full(n + 3, np.nan, np.float32)
    w = cpu.pack_weight(a, out)
    assert isinstance(w, cpu.PackedWeight) and w.shape == (M, K) and w.buffer is out
    np.testing.assert_array_equal(out[:n], _layout(a))
    assert np.isnan(out[n:]).all()                      # nothing written past the packed copy
    np.testing.assert_array_equal(cpu.pack_weight(a).buffer, _layout(a))   # its own buffer


def test_pack_weight_declines_without_the_kernel(native_lib, baseline_lib, monkeypatch):
    a = np.ones((4, 3), np.float32)
    old = cpu.enable_packed_gemm(False)
    try:
        assert cpu.packed_floats(4, 3) == 0 and cpu.pack_weight(a) is None
    finally:
        cpu.enable_packed_gemm(old)
    monkeypatch.setitem(cpu._state, "lib", baseline_lib)
    assert cpu.packed_floats(4, 3) == 0 and cpu.pack_weight(a) is None
    out = np.full(24, 7.0, np.float32)
    assert baseline_lib.npl_pack_f32(a.ctypes.data, 3, 1, 4, 3, out.ctypes.data, 24) == 0
    assert (out == 7.0).all()


def test_pack_weight_rejects_bad_input(native_lib):
    a = np.ones((4, 3), np.float32)
    for bad, match in ((a.astype(np.float64), "2-D float32"), (np.ones(3, np.float32), "2-D float32"),
                       ([[1.0]], "2-D float32")):
        with pytest.raises(ValueError, match=match):
            cpu.pack_weight(bad)
    n = cpu.packed_floats(4, 3)
    for out in (np.empty(n - 1, np.float32), np.empty(n, np.float64), np.empty((1, n), np.float32),
                np.empty(2 * n, np.float32)[::2]):
        with pytest.raises(ValueError, match="at least %d elements" % n):
            cpu.pack_weight(a, out)
    assert native_lib.npl_pack_f32(a.ctypes.data, 3, 1, 4, 3, np.empty(n).ctypes.data, n - 1) == -1
    assert native_lib.npl_pack_f32(a.ctypes.data, 3, 1, 0, 3, np.empty(n).ctypes.data, n) == -1


@pytest.mark.parametrize("which", ["native", "avx2"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_products_on_a_packed_a(request, monkeypatch, which, threads):
    monkeypatch.setitem(cpu._state, "lib", request.getfixturevalue(which + "_lib"))
    monkeypatch.setitem(cpu._state, "threads", threads)
    monkeypatch.setattr(cpu, "_others_busy", lambda: False)
    rng = np.random.default_rng(threads)
    M, K, N, n = 31, 29, 100, 3
    a = rng.standard_normal((K, M)).astype(np.float32).T                 # a transposed view
    w = cpu.pack_weight(a)
    x = rng.standard_normal((n, K, N + 4)).astype(np.float32)[:, :, 2:N + 2]
    want = _ref(a, x)
    out = np.full((n, M, N), np.nan, np.float32)
    cpu.matmul(w, x, out)
    _close(out, want, "packed a, beta 0", rtol=1e-5)
    plain = np.empty_like(out)
    cpu.matmul(a, x, plain)                              # packed inside the call: the same sums
    np.testing.assert_array_equal(out, plain)
    before = rng.standard_normal((M, N)).astype(np.float32)
    out2 = before.copy()
    cpu.matmul(w, x[1], out2, beta=1.0)
    _close(out2, _ref(a, x[1]) + before, "packed a, beta 1", rtol=1e-5)
    for bad_b, beta in ((x[0].T.copy().T, 0.0), (x[0], 0.5)):         # columns contiguous; beta
        with pytest.raises(ValueError, match="with a packed a"):
            cpu.matmul(w, bad_b, np.empty((M, N), np.float32), beta=beta)
    with pytest.raises(ValueError, match="do not match"):
        cpu.matmul(w, x[0][:K - 1], np.empty((M, N), np.float32))


def _forward_args(kind, T, H, B, seed):
    rng = np.random.default_rng(seed)
    nG = (4 if kind == "lstm" else 3) * H
    G = rng.standard_normal((T, nG, B)).astype(np.float32)
    h0 = (0.5 * rng.standard_normal((H, B))).astype(np.float32)
    c0 = (0.5 * rng.standard_normal((H, B))).astype(np.float32)
    U = (rng.standard_normal((H, nG)) / np.sqrt(H)).astype(np.float32)   # the kernel's rows
    return G, h0, c0, U


def _forward_loops(kind, U, weights, G, h0, c0, lengths, chunk):
    """The C forward loops over all steps, ``chunk`` steps a call; ``weights(U^T)`` gives what
    they take (a contiguous copy or a PackedWeight); returns the gates and states."""
    T, _, B = G.shape
    H = h0.shape[0]
    G = G.copy()
    Hs = np.empty((T + 1, H, B), np.float32)
    Hs[0] = h0
    if kind == "lstm":
        C = np.empty((T + 1, H, B), np.float32)
        C[0] = c0
        UT = weights(U.T)
        for t0 in range(0, T, chunk):
            cpu.lstm_forward_seq(UT, G, C, Hs, t0, min(t0 + chunk, T), lengths=lengths)
        return G, C, Hs
    rh = np.empty((H, B), np.float32)
    UgT, UcT = weights(U[:, :2 * H].T), weights(U[:, 2 * H:].T)
    for t0 in range(0, T, chunk):
        cpu.gru_forward_seq(UgT, UcT, G, Hs, rh, t0, min(t0 + chunk, T), lengths=lengths)
    return G, Hs


@needs_packed
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("T, H, B, chunk", [(1, 5, 8, 1), (7, 13, 33, 3), (9, 32, 70, 9)])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_forward_loops_take_a_packed_weight(monkeypatch, kind, T, H, B, chunk, threads,
                                            with_lengths):
    """Given the weight packed once, the loops compute what they compute packing it themselves
    from the contiguous U^T, bit for bit; and that is within float32 rounding of the sgemm's."""
    monkeypatch.setitem(cpu._state, "threads", threads)
    monkeypatch.setattr(cpu, "MIN_SLICE_PACKED", 16)
    monkeypatch.setattr(cpu, "_others_busy", lambda: False)
    G, h0, c0, U = _forward_args(kind, T, H, B, seed=T * 7 + H + B)
    lengths = None
    if with_lengths:
        lengths = np.random.default_rng(B).integers(0, T + 1, size=B).astype(np.float32)
    packed = _forward_loops(kind, U, cpu.pack_weight, G, h0, c0, lengths, chunk)
    copied = _forward_loops(kind, U, np.ascontiguousarray, G, h0, c0, lengths, chunk)
    for a, b in zip(packed, copied):
        np.testing.assert_array_equal(a, b)
    old = cpu.enable_packed_gemm(False)
    try:
        on_sgemm = _forward_loops(kind, U, np.ascontiguousarray, G, h0, c0, lengths, chunk)
    finally:
        cpu.enable_packed_gemm(old)
    for a, b in zip(packed, on_sgemm):
        _close(a, b, "packed weight against sgemm", rtol=1e-5)


@needs_packed
def test_forward_loops_check_a_packed_weight():
    G, h0, c0, U = _forward_args("lstm", 3, 4, 8, seed=0)
    C = np.empty((4, 4, 8), np.float32)
    Hs = np.empty((4, 4, 8), np.float32)
    with pytest.raises(ValueError, match=r"UT has shape \(4, 16\), expected \(16, 4\)"):
        cpu.lstm_forward_seq(cpu.pack_weight(U), G, C, Hs, 0, 3)
    rh = np.empty((4, 8), np.float32)
    Gg = np.empty((3, 12, 8), np.float32)
    with pytest.raises(ValueError, match=r"UcT has shape \(8, 4\), expected \(4, 4\)"):
        cpu.gru_forward_seq(cpu.pack_weight(U[:, :8].T), cpu.pack_weight(U[:, :8].T), Gg, Hs, rh,
                            0, 3)
    # the C entry point refuses a weight given in neither form (no matrix, no packed copy)
    lib = cpu.library()
    assert lib.npl_lstm_forward_seq_f32(cpu.sgemm(), None, 4, None, G.ctypes.data, C.ctypes.data,
                                        Hs.ctypes.data, 0, 3, 4, 8, None, 1) == -1
    with pytest.raises(ValueError, match="no recurrent weight"):
        cpu._slices(-1, "lstm_forward_seq")


@needs_packed
@pytest.mark.parametrize("kind", ["lstm", "gru", "stack"])
@pytest.mark.parametrize("threads", [1, 2])
def test_chunked_pass_packs_each_weight_once(monkeypatch, kind, threads):
    """With the input projection one step at a time (PROJECTION_CHUNK_BYTES = 1), the loops run
    once a step: each layer packs [W^T | b] and each U^T once, every call of the loops gets the
    packed U^T and every projection the packed [W^T | b]; the results equal the loops on sgemm and
    the Python loop.  (_problem's stack: GRU, LSTM, GRU.)"""
    monkeypatch.setattr(npl.cells, "PROJECTION_CHUNK_BYTES", 1)
    packs, loop_weights, packed_products = [], [], []
    real_pack, real_mm = cpu.pack_weight, cpu.matmul
    monkeypatch.setattr(cpu, "pack_weight",
                        lambda a, out=None: (packs.append(a.shape), real_pack(a, out))[1])
    monkeypatch.setattr(cpu, "matmul", lambda a, b, out, beta=0.0: (
        packed_products.append(isinstance(a, cpu.PackedWeight)), real_mm(a, b, out, beta))[1])
    for name, n_weights in (("lstm_forward_seq", 1), ("gru_forward_seq", 2)):
        monkeypatch.setattr(cpu, name, lambda *a, _f=getattr(cpu, name), _n=n_weights, **k: (
            loop_weights.append({type(w) for w in a[:_n]}), _f(*a, **k))[1])
    T, B, I, H = 5, 30, 6, 12                            # 30: on the tile (not narrow)
    cell, args = _problem(kind, B, T, I, H, time_major=True, seed=77)
    packed, sgemm, python_loop = _three_ways(cell, args, None, threads, monkeypatch)
    kinds = {"lstm": ["lstm"], "gru": ["gru"], "stack": ["gru", "lstm", "gru"]}[kind]
    calls = len(kinds) * T                               # one call of the loops a step and layer
    assert len(packs) == sum(2 if k == "lstm" else 3 for k in kinds)   # the packed run alone
    assert loop_weights == [{cpu.PackedWeight}] * calls + [{np.ndarray}] * calls
    assert sum(packed_products) == calls                 # each step's projection, packed [W^T | b]
    for k, (a, b, c) in enumerate(zip(packed, sgemm, python_loop)):
        _close(a, b, "array %d, packed vs sgemm" % k, rtol=2e-5)
        _close(a, c, "array %d, packed vs the Python loop" % k)


# ----------------------------------------------------------------- 7. streaming stores
@pytest.mark.parametrize("which", ["native", "avx2"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "stack"])
@pytest.mark.parametrize("B, threads", [(9, 1), (37, 2), (70, 2)])
def test_streamed_gradient_slab_equals_plain_stores(request, monkeypatch, which, kind, B, threads):
    """The gate gradients stored into the slab with streaming stores (threshold 0: always) and
    with plain ones (threshold above any slab): the same gate gradients, d inputs and weight
    gradients, bit for bit.  B = 37 and 70 put slice starts and row ends off the vector
    boundaries (the scalar head and tail of each row)."""
    lib = request.getfixturevalue(which + "_lib")
    monkeypatch.setitem(cpu._state, "lib", lib)
    monkeypatch.setitem(cpu._state, "threads", threads)
    monkeypatch.setattr(cpu, "MIN_SLICE_PACKED", 16)
    monkeypatch.setattr(cpu, "_others_busy", lambda: False)
    cell, args = _problem(kind, B, 6, 5, 19, time_major=True, seed=B + threads)
    lengths = np.random.default_rng(B).integers(0, 7, size=B)
    runs = []
    old = lib.npl_set_stream_min_bytes(0)
    try:
        for threshold in (0, 1 << 62):
            lib.npl_set_stream_min_bytes(threshold)
            for lens in (None, lengths):
                runs.append(_run(cell, *args, lengths=lens))
    finally:
        lib.npl_set_stream_min_bytes(old)
    assert old == 2 << 20                                # the default: slabs of 2 MB and more
    for streamed, plain in ((runs[0], runs[2]), (runs[1], runs[3])):
        for k, (a, b) in enumerate(zip(streamed, plain)):
            np.testing.assert_array_equal(a, b, err_msg="array %d" % k)


@needs_packed
@pytest.mark.parametrize("prepack_min, expect", [(64 * 1024, np.ndarray), (0, cpu.PackedWeight)])
def test_one_call_pass_packs_a_small_weight_inside_the_call(monkeypatch, prepack_min, expect):
    """A forward whose steps run in one call of the loops hands a small U^T (below
    PREPACK_MIN_BYTES) over as a contiguous copy, which the call packs; above it, packed first.
    Both give the Python loop's results."""
    monkeypatch.setattr(npl.cells, "PREPACK_MIN_BYTES", prepack_min)
    seen = []
    real = cpu.lstm_forward_seq
    monkeypatch.setattr(cpu, "lstm_forward_seq",
                        lambda UT, *a, **k: (seen.append(type(UT)), real(UT, *a, **k))[1])
    cell, args = _problem("lstm", 30, 5, 6, 12, time_major=True, seed=3)   # 30: not narrow
    packed, _, python_loop = _three_ways(cell, args, None, 1, monkeypatch)
    assert seen[0] is expect                             # the first run: the packed kernel on
    for k, (a, c) in enumerate(zip(packed, python_loop)):
        _close(a, c, "array %d against the Python loop" % k)


# ----------------------------------------------------------------- 8. the narrow form
# A slice of under 32 columns, at most npl_narrow_max past whole vectors, multiplies on A^T with
# vectors along A's rows; the same k-ordered fused multiply-adds as the register tile, so the two
# must agree bit for bit.
NARROW_M = [1, 5, 6, 17, 64, 65, 70, 129]
NARROW_N = [1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 16, 17, 20, 24, 28, 29, 31]
# The batches that take the narrow form by default: at most 3/4 of a vector past whole vectors,
# under 32 columns (written out, not computed by the rule under test).
NARROW_BY_DEFAULT = {16: set(range(1, 13)) | set(range(17, 29)),
                     8: set(range(1, 7)) | set(range(9, 15)) | set(range(17, 23)) | set(range(25, 31))}


def _narrow(lib, n):
    """Sets the library's narrow maximum (n >= 0) and returns the previous one (n = -1: only
    reads it); npl_set_narrow_max itself returns the value in force after the call."""
    old = int(lib.npl_set_narrow_max(-1))
    lib.npl_set_narrow_max(n)
    return old


@pytest.mark.parametrize("which", ["native", "avx2"])
def test_narrow_products_equal_the_tile_bit_for_bit(request, which):
    lib = request.getfixturevalue(which + "_lib")
    VL = int(lib.npl_packed_gemm_width())
    default = _narrow(lib, -1)
    assert default == 3 * VL // 4                      # up to 3/4 of a vector: the narrow form
    rng = np.random.default_rng(VL)
    try:
        for M in NARROW_M:
            for K in (1, 7, 130):
                for N in NARROW_N:
                    for transposed in (False, True):
                        a = rng.standard_normal((K, M) if transposed else (M, K)).astype(np.float32)
                        a = a.T if transposed else a
                        x = rng.standard_normal((3, K, N + 2)).astype(np.float32)[:, :, :N]
                        c0 = rng.standard_normal((3, M, N)).astype(np.float32)
                        outs = []
                        for n in (VL, 0):                 # narrow form (but at N % VL == 0), then the tile
                            _narrow(lib, n)
                            for beta in (0.0, 1.0):
                                big = np.full((3, M + 2, N + 3), np.nan, np.float32)
                                out = big[:, 1:M + 1, 1:N + 1]
                                if beta:
                                    out[...] = c0
                                assert _call(lib, a, x, out, beta) == 1
                                inside = np.zeros(big.shape, bool)
                                inside[:, 1:M + 1, 1:N + 1] = True
                                assert np.isnan(big[~inside]).all()     # nothing else written
                                outs.append(out.copy())
                        np.testing.assert_array_equal(outs[0], outs[2], err_msg=str((M, K, N)))
                        np.testing.assert_array_equal(outs[1], outs[3], err_msg=str((M, K, N)))
                        _close(outs[0], _ref(a, x), "narrow beta=0 %s" % ((M, K, N),), rtol=1e-5)
                        _close(outs[1], _ref(a, x) + c0, "narrow beta=1 %s" % ((M, K, N),), rtol=1e-5)
    finally:
        _narrow(lib, default)


@needs_packed
@pytest.mark.parametrize("kind", ["lstm", "gru", "stack"])
@pytest.mark.parametrize("B, T, I, H", [(1, 9, 3, 16), (1, 5, 40, 13), (2, 7, 40, 13), (5, 4, 6, 70),
                                        (7, 6, 1, 24), (8, 3, 5, 9), (13, 5, 2, 33), (16, 4, 7, 20),
                                        (20, 5, 3, 17), (27, 3, 6, 40)])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_loops_on_the_narrow_form_equal_the_tile_and_the_python_loop(monkeypatch, calls, kind, B, T,
                                                                    I, H, with_lengths):
    """Narrow batches in the C loops (every batch let in, C_LOOPS_MIN_BATCH = 1): bit for bit
    as on the register tile (narrow form off), and as the Python loop to rounding; batch 1 with
    its gate math along the units."""
    cell, args = _problem(kind, B, T, I, H, time_major=(B % 2 == 1), seed=B * 31 + T * 7 + H)
    lengths = None
    if with_lengths:
        lengths = np.random.default_rng(B + T).integers(0, T + 1, size=B)
        lengths[0] = T
    lib = cpu.library()
    monkeypatch.setattr(npl.cells, "C_LOOPS_MIN_BATCH", 1)
    assert npl.cells._narrow_batch(B) == (B in NARROW_BY_DEFAULT[cpu.packed_gemm()])
    narrow = _run(cell, *args, lengths=lengths)
    ran = sum(calls.values())
    assert ran > 0                                         # the C loops took the batch
    old = _narrow(lib, 0)
    monkeypatch.setitem(cpu._state, "narrow", 0)
    try:
        assert not npl.cells._narrow_batch(B)
        tile = _run(cell, *args, lengths=lengths)
        assert sum(calls.values()) > ran
        old_loops = cpu.enable_sequence_loops(False)
        try:
            python_loop = _run(cell, *args, lengths=lengths)
        finally:
            cpu.enable_sequence_loops(old_loops)
    finally:
        _narrow(lib, old)
    for k, (a, b, c) in enumerate(zip(narrow, tile, python_loop)):
        np.testing.assert_array_equal(a, b, err_msg="array %d, narrow vs tile" % k)
        n_grads = len(cell.grads)
        scale = (max(float(np.abs(g).max()) for g in python_loop[-n_grads:])
                 if k >= len(narrow) - n_grads and lengths is not None else None)
        _close(a, c, "array %d, narrow vs the Python loop" % k, scale=scale)


def test_set_narrow_max_validates_and_steers_the_loops(monkeypatch):
    for bad in (-1, 2.0, True, "8"):
        with pytest.raises(ValueError, match="set_narrow_max"):
            cpu.set_narrow_max(bad)
    x1 = np.zeros((npl.cells.NARROW_LOOPS_MIN_STEPS, 1, 3), np.float32)
    if not cpu.packed_gemm():
        assert not npl.cells._loops_may_take(x1, 1)
        return
    old = cpu.set_narrow_max(0)
    try:
        assert cpu.narrow_max() == 0
        assert not npl.cells._loops_may_take(x1, 1)        # batch 1: the Python loop
        cpu.set_narrow_max(old)
        assert cpu.narrow_max() == old == 3 * cpu.packed_gemm() // 4
        assert [b for b in range(40) if npl.cells._narrow_batch(b)] == sorted(
            NARROW_BY_DEFAULT[cpu.packed_gemm()])
        assert npl.cells._loops_may_take(x1, 1)            # batch 1 from 8 steps in C
        assert not npl.cells._loops_may_take(x1[:-1], 1)
        x4 = np.zeros((npl.cells.NARROW_LOOPS_MIN_STEPS, 4, 3), np.float32)
        assert npl.cells._loops_may_take(x4, 4)            # and batches 2-7 too
        assert not npl.cells._loops_may_take(x4[:-1], 4)
        assert not npl.cells._loops_may_take(np.zeros((50, 0, 3), np.float32), 0)
        cpu.set_narrow_max(3)
        assert not npl.cells._loops_may_take(x4, 4)        # wider than the narrow form
        cpu.set_narrow_max(old)
        assert not npl.cells._loops_may_take(x1.astype(np.float64), 1)
        cpu.enable_packed_gemm(False)                      # the sgemm loops: from batch 8
        assert not npl.cells._loops_may_take(x1, 1)
        assert npl.cells._loops_may_take(np.zeros((2, 8, 3), np.float32), 8)
    finally:
        cpu.enable_packed_gemm(True)
        cpu.set_narrow_max(old)


@needs_packed
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("B", [1, 5, 20, 40])
def test_forward_weight_given_transposed_in_place(monkeypatch, calls, kind, B):
    """The forward hands the loops U^T as a view of the kernel's rows (a negative row stride) for
    narrow batches; a pass that then runs on the tile (narrow form off, or a wide batch) makes A
    from it: the same bits as given a packed or contiguous U^T."""
    cell, args = _problem(kind, B, 9, 4, 21, time_major=True, seed=B + 17)
    monkeypatch.setattr(npl.cells, "C_LOOPS_MIN_BATCH", 1)
    lib = cpu.library()
    old = _narrow(lib, 0)
    monkeypatch.setitem(cpu._state, "narrow", 0)
    try:
        plain = _run(cell, *args)                                    # packed U^T, the tile
        monkeypatch.setattr(npl.cells, "_narrow_batch", lambda b: True)   # U^T as a view
        viewed = _run(cell, *args)
    finally:
        _narrow(lib, old)
    assert sum(calls.values()) >= 4
    for k, (a, b) in enumerate(zip(plain, viewed)):
        np.testing.assert_array_equal(a, b, err_msg="array %d" % k)
