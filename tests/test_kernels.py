"""The CUDA executor (npl/kernels) against the array executor (npl/gates.py).

* Compile-only, no GPU needed: NVRTC, the compiler CuPy itself uses (tests/nvrtc.py; the pip
  wheel is part of npl[test] on Linux, so CI runs this), compiles the source with npl's options
  for several GPU generations: no warnings, every kernel present under its unmangled name, and
  SASS without spills.  nvcc, where it is installed, must compile it without warnings too.
* With CuPy and a CUDA device: each fused kernel equals the array code of npl.gates run on the same
  random inputs (float32 and float64), and whole sequence passes on CuPy (kernels on) equal the
  NumPy results (outputs, states, every gradient) for every cell, with sequence lengths.
"""
import re
import shutil
import subprocess

import numpy as np
import pytest

import npl
from npl import kernels, gates, activations
from npl.kernels import cpu
from helpers import randomize_params, random_state, random_like, flatten, rel_err, require_cupy


import nvrtc as nvrtc_lib

# GPU generations to compile for: Turing (T4), Ampere, Hopper (the H200 of gpu_check.sh),
# Blackwell; those this NVRTC does not support are skipped. (NVRTC 12.9 warns that targets before
# sm_75 are deprecated, and CUDA 13 drops them.)
ARCHS = (75, 80, 90, 100)
ENTRIES = sorted("npl_%s_%s" % (n, sfx) for n in kernels.NAMES for sfx in ("f32", "f64"))


@pytest.fixture(scope="module")
def nvrtc():
    try:
        return nvrtc_lib.load()
    except nvrtc_lib.Unavailable as e:
        pytest.skip(str(e))


def _arch(nvrtc, arch):
    if arch not in nvrtc.archs:
        pytest.skip("NVRTC %d.%d does not target sm_%d" % (nvrtc.version + (arch,)))
    return arch


@pytest.mark.parametrize("arch", ARCHS)
def test_kernel_source_compiles_to_ptx_with_nvrtc(nvrtc, arch):
    """CuPy's path: NVRTC with npl.kernels.OPTIONS. Every kernel is an entry under the name
    npl.kernels.get asks for (extern "C": unmangled), there are no others, and the log is empty
    (NVRTC writes its warnings there)."""
    arch = _arch(nvrtc, arch)
    ok, log, ptx = nvrtc.compile(kernels.source(), kernels.OPTIONS + ("-arch=compute_%d" % arch,))
    assert ok, log
    assert log.strip() == "", log
    entries = sorted(re.findall(r"\.entry\s+(\w+)\s*\(", ptx.decode()))
    assert entries == ENTRIES


@pytest.mark.parametrize("arch", ARCHS)
def test_kernel_source_assembles_without_spills(nvrtc, arch):
    """Down to SASS (cubin, as CuPy builds for the device it runs on), with ptxas's resource report:
    each kernel compiled for this architecture, with no stack frame and no register spills."""
    arch = _arch(nvrtc, arch)
    ok, log, cubin = nvrtc.compile(kernels.source(),
                                   kernels.OPTIONS + ("-arch=sm_%d" % arch, "-Xptxas=-v"))
    assert ok, log
    assert cubin[:4] == b"\x7fELF"
    assert "warning" not in log.lower(), log
    compiled = sorted(re.findall(r"Compiling entry function '(\w+)' for 'sm_%d'" % arch, log))
    assert compiled == ENTRIES, log
    usage = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                       log)
    assert len(usage) == len(ENTRIES), log
    assert all(u == ("0", "0", "0") for u in usage), log


def test_nvrtc_check_catches_errors_and_warnings(nvrtc):
    """The compile check can fail: a syntax error fails the compile with the file and line in the
    log, and a warning (an unused variable in a kernel) reaches the log the tests require empty."""
    src = kernels.source()
    broken = src.replace("extern \"C\" __global__ void npl_gru_backward_##SFX(",
                         "extern \"C\" __global__ void npl_gru_backward_##SFX(int", 1)
    assert broken != src
    ok, log, out = nvrtc.compile(broken, kernels.OPTIONS + ("-arch=compute_80",))
    assert not ok and out == b"" and "rnn_kernels.cu(" in log and "error" in log
    warned = src + '\nextern "C" __global__ void npl_probe(float* x) { int unused; x[0] = 1.0f; }\n'
    ok, log, _ = nvrtc.compile(warned, kernels.OPTIONS + ("-arch=compute_80",))
    assert ok and "warning" in log and "unused" in log


def test_kernel_names_match_the_launchers():
    """npl.kernels.NAMES is what the wrappers launch, and get() refuses other names and dtypes."""
    launched = []

    class Recorder:
        def __call__(self, grid, block, args):
            pass

    def fake_get(name, dtype):
        launched.append(name)
        return Recorder()

    H, B = 3, 2
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    old = kernels.get
    kernels.get = fake_get
    try:
        kernels.lstm_forward(f(4 * H, B), f(H, B), f(H, B), f(H, B))
        kernels.lstm_backward(f(4 * H, B), f(H, B), f(H, B), f(H, B), f(H, B), f(4 * H, B))
        kernels.gru_gates_forward(f(3 * H, B), f(H, B), f(H, B))
        kernels.gru_state_forward(f(3 * H, B), f(H, B), f(H, B))
        kernels.gru_backward(f(3 * H, B), f(H, B), f(H, B), f(3 * H, B), f(H, B))
        kernels.gru_reset_backward(f(3 * H, B), f(H, B), f(H, B), f(H, B), f(3 * H, B))
    finally:
        kernels.get = old
    assert tuple(launched) == kernels.NAMES
    with pytest.raises(ValueError, match="no kernel 'lstm_fwd'"):
        kernels.get("lstm_fwd", np.float32)
    with pytest.raises(TypeError, match="float32 or float64, got float16"):
        kernels.get("lstm_forward", np.float16)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed on this machine")
def test_kernel_source_compiles(tmp_path):
    out = tmp_path / "rnn_kernels.ptx"
    r = subprocess.run(["nvcc", "--ptx", "-Werror", "all-warnings", "-o", str(out), kernels.SOURCE_PATH],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ptx = out.read_text()
    for entry in ENTRIES:
        assert ".entry %s" % entry in ptx


def test_kernel_source_is_packaged():
    import configparser
    import os
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(__file__), "..", "setup.cfg"))
    assert "*.cu" in cfg["options.package_data"]["npl.kernels"]
    assert os.path.exists(kernels.SOURCE_PATH)


@pytest.fixture
def cpu_kernels_off():
    """The NumPy side is the array code of npl.gates, not the fused CPU kernels (npl.kernels.cpu)."""
    old = cpu.enable(False)
    yield
    cpu.enable(old)




@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("peep", [False, True])
@pytest.mark.parametrize("clip", [None, 0.7])
def test_lstm_kernels_match_array_code(cpu_kernels_off, dtype, peep, clip):
    cp = require_cupy()
    rng = np.random.default_rng(0)
    H, B = 5, 7
    r = lambda *s: rng.standard_normal(s).astype(dtype)
    g, c_prev, dm, dc = r(4 * H, B), r(H, B), r(H, B), r(H, B)
    pw = (r(H, 1), r(H, 1), r(H, 1)) if peep else None
    tol = 1e-5 if dtype == np.float32 else 1e-12
    res = {}
    for name, xp in (("np", np), ("cp", cp)):
        kernels.enabled = name == "cp"
        try:
            gg = xp.asarray(g.copy())
            c, m = xp.empty((H, B), dtype), xp.empty((H, B), dtype)
            mask = xp.empty((H, B), bool) if clip else None
            p = None if pw is None else tuple(xp.asarray(w) for w in pw)
            gates.lstm_forward_pointwise(gg, xp.asarray(c_prev), c, m, activations.tanh,
                                         activations.tanh, p, clip, mask)
            dg, dcc = xp.empty((4 * H, B), dtype), xp.asarray(dc.copy())
            gates.lstm_backward_pointwise(gg, xp.asarray(c_prev), c, xp.asarray(dm), dcc, dg,
                                          activations.tanh, activations.tanh, xp.empty((H, B), dtype),
                                          p, mask)
            res[name] = [npl.to_numpy(a) for a in (gg, c, m, dg, dcc)]
        finally:
            kernels.enabled = True
    for a, b in zip(res["cp"], res["np"]):
        assert rel_err(a, b) <= tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gru_kernels_match_array_code(cpu_kernels_off, dtype):
    cp = require_cupy()
    rng = np.random.default_rng(1)
    H, B = 6, 3
    r = lambda *s: rng.standard_normal(s).astype(dtype)
    g, h_prev, dh, drh = r(3 * H, B), r(H, B), r(H, B), r(H, B)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    res = {}
    for name, xp in (("np", np), ("cp", cp)):
        kernels.enabled = name == "cp"
        try:
            gg, hp = xp.asarray(g.copy()), xp.asarray(h_prev)
            rh, h = xp.empty((H, B), dtype), xp.empty((H, B), dtype)
            gates.gru_gates_forward(gg, hp, rh)
            gates.gru_state_forward(gg, hp, h, activations.tanh)
            dg, dhp, tmp = xp.zeros((3 * H, B), dtype), xp.empty((H, B), dtype), xp.empty((H, B), dtype)
            gates.gru_backward_pointwise(gg, hp, xp.asarray(dh), dg, activations.tanh, dhp, tmp)
            gates.gru_reset_backward(gg, hp, xp.asarray(drh), dhp, dg, tmp)
            res[name] = [npl.to_numpy(a) for a in (gg, rh, h, dg, dhp)]
        finally:
            kernels.enabled = True
    for a, b in zip(res["cp"], res["np"]):
        assert rel_err(a, b) <= tol


def _cells():
    R = npl.rnn
    return [R.BasicRNNCell(4), R.BasicLSTMCell(4, forget_bias=0.3),
            R.LSTMCell(4, use_peepholes=True, cell_clip=0.9, num_proj=3, proj_clip=0.6),
            R.GRUCell(4), R.MultiRNNCell([R.LSTMCell(4, num_proj=3), R.GRUCell(5)])]


@pytest.mark.parametrize("k", range(5))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequence_on_cupy_matches_numpy(k, dtype):
    require_cupy()
    rng = np.random.default_rng(k)
    cell = _cells()[k]
    B, T, I = 3, 5, 2
    cell.build(I, dtype)
    randomize_params(cell, rng)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    s0 = random_state(cell, B, rng, dtype)
    L = np.array([5, 0, 3])
    res = []
    for backend in ("numpy", "cupy"):
        cell.to_device(backend)
        cell.zero_grad()
        xs, ss = npl.to_device(x, backend), npl.to_device(s0, backend)
        out, st, tr = npl.nn.dynamic_rnn(cell, xs, L, ss, return_trace=True)
        if not res:
            wo, ws = random_like(npl.to_numpy(out), rng), random_like(npl.to_numpy(st), rng)
        dx, d0 = tr.backward(npl.to_device(wo, backend), npl.to_device(ws, backend))
        res.append([npl.to_numpy(a) for a in [out] + flatten(st) + [dx] + flatten(d0)
                    + list(cell.grads.values())])
    cell.to_device("numpy")
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for a, b in zip(*res):
        assert rel_err(a, b) <= tol


def _fit_models(stateful):
    L = npl.layers
    if stateful:                                  # a character model: ids in, logits out
        return L.Sequential([L.Embedding(6, 4, dtype=np.float64, seed=0),
                             L.RNN(npl.rnn.GRUCell(8, seed=1)), L.Dense(6, seed=2)], dtype=np.float64)
    return L.Sequential([L.RNN(npl.rnn.LSTMCell(5, use_peepholes=True, seed=0)), L.Dense(1, seed=1)],
                        input_size=2, dtype=np.float64)


@pytest.mark.parametrize("stateful", [False, True])
def test_fit_on_cupy_takes_host_data_and_matches_numpy(stateful):
    """npl.train.fit with a model on the GPU and NumPy data: each batch goes to the GPU, the model
    stays there, and losses, gradient norms and the trained weights equal the NumPy run's."""
    require_cupy()
    from npl import train
    rng = np.random.default_rng(7)
    if stateful:
        x, y = train.make_streams(rng.integers(0, 6, 120), 3)
        loss, kw = "sparse_softmax_cross_entropy", dict(stateful=True, num_steps=8, epochs=2)
    else:
        x, y = rng.standard_normal((20, 6, 2)), rng.standard_normal((20, 6, 1))
        loss, kw = "mse", dict(batch_size=8, epochs=2, seed=3)
    res = {}
    before = npl.backend_name()
    for backend in ("numpy", "cupy"):
        npl.use(backend)
        try:
            model = _fit_models(stateful)
            h = train.fit(model, loss, train.AdamOptimizer(0.01), x, y, clip_norm=1.0,
                          progress=False, **kw)
            on_gpu = [npl.backend._is_cupy(v) for v in model.params.values()]
            assert all(on_gpu) if backend == "cupy" else not any(on_gpu)
            res[backend] = (h.loss, h.grad_norm, npl.to_numpy(model.params))
        finally:
            npl.use(before)
    (l0, g0, p0), (l1, g1, p1) = res["numpy"], res["cupy"]
    assert len(l0) == len(l1) > 2
    assert np.allclose(l1, l0, rtol=1e-9, atol=0) and np.allclose(g1, g0, rtol=1e-9, atol=0)
    for k in p0:
        assert rel_err(p1[k], p0[k]) <= 1e-9, k


def test_fit_refuses_gpu_data_for_a_host_model():
    cp = require_cupy()
    from npl import train
    before = npl.backend_name()
    npl.use("numpy")
    try:
        model = _fit_models(False)                # built at construction, on the host
    finally:
        npl.use(before)
    x = cp.asarray(np.zeros((4, 3, 2)))
    y = cp.asarray(np.zeros((4, 3, 1)))
    with pytest.raises(TypeError, match="x is a cupy array but the model's parameters are numpy arrays"):
        train.fit(model, "mse", train.AdamOptimizer(0.01), x, y, progress=False)
    with pytest.raises(TypeError, match="y is a numpy array but x is a cupy array"):
        train.fit(model, "mse", train.AdamOptimizer(0.01), x, np.zeros((4, 3, 1)), progress=False)


@pytest.mark.parametrize("multi", [False, True])
def test_host_inputs_to_a_gpu_cell_are_refused_by_name(multi):
    """Inputs on the host for a cell whose parameters are on the GPU (built before, or built by
    this very call under NPL_BACKEND=cupy): a TypeError naming the argument and both devices,
    from dynamic_rnn and from a single step, never an error deep inside CuPy."""
    require_cupy()
    R = npl.rnn

    def make():
        return R.MultiRNNCell([R.LSTMCell(3), R.GRUCell(2)]) if multi else R.GRUCell(3)
    x = np.zeros((2, 4, 5), np.float32)
    msg = r"inputs is a numpy array but (MultiRNNCell|GRUCell)'s parameters are cupy arrays"
    built = make().build(5, np.float32).to_device("cupy")
    with pytest.raises(TypeError, match=msg):
        npl.nn.dynamic_rnn(built, x, dtype=np.float32)
    with pytest.raises(TypeError, match=msg):
        built(x[:, 0], built.zero_state(2, np.float32))
    before = npl.backend_name()
    npl.use("cupy")
    try:
        with pytest.raises(TypeError, match=msg):
            npl.nn.dynamic_rnn(make(), x, dtype=np.float32)       # unbuilt: built on the GPU
    finally:
        npl.use(before)
    dev = make().build(5, np.float32).to_device("numpy")          # and the other way round
    with pytest.raises(TypeError, match=r"inputs is a cupy array but .* parameters are numpy"):
        npl.nn.dynamic_rnn(dev, npl.to_device(x, "cupy"), dtype=np.float32)


def test_host_arrays_for_gpu_layers_and_ops_are_refused_by_name():
    """The same rule for layers (Dense, Embedding) and the array ops that take two arrays."""
    cp = require_cupy()
    L = npl.layers
    before = npl.backend_name()
    npl.use("cupy")
    try:
        dense = L.Sequential([L.Dense(2)], input_size=4)
        emb = L.Embedding(5, 3)
    finally:
        npl.use(before)
    with pytest.raises(TypeError, match=r"inputs is a numpy array but the parameters of layer "
                                         r"'dense' are cupy arrays"):
        dense(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="ids is a numpy array but params is a cupy array"):
        emb.forward(np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="mask is a numpy array but tensor is a cupy array"):
        npl.boolean_mask(cp.asarray(np.zeros(3)), np.array([True, False, True]))
    with pytest.raises(TypeError, match="ids is a cupy array but params is a numpy array"):
        npl.nn.embedding_lookup(np.zeros((5, 3)), cp.asarray(np.array([0, 1])))
