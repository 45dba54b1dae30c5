"""npl's CuPy code paths in CI, with no GPU: the GPU test files run on the strict CuPy stand-in.

``tests/fake_cupy`` is a test double named ``cupy`` (never installed; put on PYTHONPATH in a
subprocess only, so this process keeps seeing the real situation).  Its device arrays refuse what
CuPy refuses (an implicit copy to NumPy, mixing with NumPy arrays, ``.ctypes``, assigning a NumPy
array into one) and its ``RawModule`` runs npl's CUDA source by host emulation
(``tests/cuda_host.py``).  So a CuPy run of npl that converts to NumPy behind the user's back, mixes
devices, takes a CPU-only path or launches a kernel wrongly fails here, before a GPU ever sees it.
A function, method or keyword that CuPy 14.2 lacks is refused too (the names and signatures of
real CuPy are in tests/fake_cupy/cupy_api.json, written by make_api.py).  What it cannot find:
device numerics, races, speed, and behaviour of CuPy functions that differs from NumPy's.

1. The stand-in itself refuses what CuPy refuses (it is not a plain NumPy alias), including
   names, methods and keywords that CuPy 14.2 lacks (tests/fake_cupy/cupy_api.json).
2. A planted host conversion inside npl's gate math is caught.
3. benchmarks/gpu_check.sh, the one command a lent GPU runs, passes on it: the GPU tests
   (tests/test_kernels.py, tests/test_device_parity.py) and the stored TensorFlow cases under
   NPL_BACKEND=cupy, none skipped, every CUDA kernel launched, and the benchmark's cuda path.
4. tests/test_backend_mixing.py (NumPy and CuPy arrays meeting in one call, models and
   optimizers moved between devices) passes on it, none skipped.
"""
import json
import math
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAKE = os.path.join(HERE, "fake_cupy")


def _env(extra=None):
    """This environment with the stand-in first on PYTHONPATH and no backend chosen."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([FAKE, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.pop("NPL_BACKEND", None)
    env.update(extra or {})
    return env


def _run(args, extra_env=None, timeout=900):
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=_env(extra_env), capture_output=True,
                          text=True, timeout=timeout)


def _script(code, **env):
    r = _run(["-c", code], env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def gxx():
    import shutil
    if shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("g++") is None:
        pytest.skip("g++ is not installed: the stand-in's kernels need the host emulation")


def test_stand_in_refuses_what_cupy_refuses():
    out = _script(r'''
import numpy as np, cupy
assert getattr(cupy, "fake", False) and type(cupy.zeros(1)).__module__ == "cupy"
d = cupy.asarray(np.arange(6.0).reshape(2, 3))
h = np.ones((2, 3))

def refuses(f, exc=TypeError):
    try:
        f()
    except exc:
        return
    raise AssertionError("accepted: %s" % f)

refuses(lambda: np.asarray(d))                       # implicit device -> host copy
refuses(lambda: np.array(d))
refuses(lambda: d + h); refuses(lambda: h + d); refuses(lambda: np.add(d, h))
refuses(lambda: np.concatenate([d, h])); refuses(lambda: cupy.matmul(h, d.T))
refuses(lambda: d.ctypes, AttributeError)
refuses(lambda: d.__setitem__(0, h[0]), ValueError)   # d[...] = numpy array
refuses(lambda: d.__setitem__(0, [1.0, 2.0, 3.0]))    # d[...] = list
refuses(lambda: h.__setitem__(0, d[0]))               # numpy[...] = device array
refuses(lambda: np.multiply(d, 2, out=h))
e = cupy.asarray(h); h[0, 0] = 5.0                    # asarray(host) copies
assert float(e[0, 0]) == 1.0
s = d.sum()
assert type(s) is cupy.ndarray and s.shape == () and float(s) == 15.0   # 0-d device arrays
assert type(d.get()) is np.ndarray and np.array_equal(d.get(), np.arange(6.0).reshape(2, 3))
assert type(np.tanh(d)) is cupy.ndarray and type(d[:, 1:]) is cupy.ndarray
# only what CuPy 14 has: names, methods, NumPy functions dispatched to it, keywords, positionals
refuses(lambda: cupy.insert, AttributeError); refuses(lambda: cupy.errstate, AttributeError)
refuses(lambda: d.resize, AttributeError)
refuses(lambda: np.insert(d, 0, 1.0))
refuses(lambda: cupy.zeros_like(d, fill=1.0))
refuses(lambda: cupy.concatenate([d, d], 0, None, np.float64))
refuses(lambda: cupy.tanh(d, where=True))
assert cupy.concatenate([d, d], axis=0, dtype=np.float32).dtype == np.float32
print("ok")
''')
    assert out.strip() == "ok"


def test_stand_in_catches_a_host_conversion_in_npl(gxx):
    """Plant the bug class the stand-in exists for (np.asarray on a device array inside the
    sequence loop): the CuPy run fails with CuPy's own message, the NumPy run does not."""
    out = _script(r'''
import numpy as np, npl
real = npl.activations.tanh
def leaky(x, out=None):
    np.asarray(x)                                     # the planted bug
    return real(x, out=out) if out is not None else real(x)
cell = npl.rnn.BasicRNNCell(3)                        # its activation: the patched tanh
cell._activation = leaky
x = np.random.default_rng(0).standard_normal((2, 4, 3))
npl.nn.dynamic_rnn(cell, x, dtype=np.float64)         # NumPy: fine
cell.to_device("cupy")
try:
    npl.nn.dynamic_rnn(cell, npl.to_device(x, "cupy"), dtype=np.float64)
except TypeError as e:
    assert "Implicit conversion to a NumPy array is not allowed" in str(e), e
    print("caught")
''')
    assert out.strip() == "caught"


def _summary(log):
    """The last line of a pytest -q log: '653 passed in 5.47s'."""
    lines = [l for l in log.read_text().splitlines() if l.strip()]
    return lines[-1]


def test_gpu_check_script_passes_on_the_stand_in(gxx, tmp_path):
    """benchmarks/gpu_check.sh, the one command a lent GPU runs, end to end on the stand-in: the
    GPU tests (tests/test_kernels.py, tests/test_device_parity.py) all pass and none is skipped,
    the stored TensorFlow cases pass under NPL_BACKEND=cupy, every CUDA kernel was launched, and
    the benchmark's cuda path gives npl rows for both cells and modes, with the ceiling labelled
    cuBLAS and the warning that these are not GPU figures (their timings are not looked at)."""
    out, log = tmp_path / "gpu", tmp_path / "launches.json"
    r = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh")], cwd=ROOT,
                       env=dict(_env(), OUT=str(out), PYTHON=sys.executable, STAGE_S="600",
                                BENCH_ARGS="--quick --configs C4 --no-memory",
                                NPL_FAKE_CUPY_LAUNCHES=str(log)),
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
    assert "fake CuPy" in (out / "gpu_env.txt").read_text()
    for name, least in (("gpu_kernels.log", 600), ("gpu_parity.log", 100)):
        summary = _summary(out / name)
        assert summary.split()[1] == "passed" and int(summary.split()[0]) >= least, (name, summary)
        assert "skipped" not in summary and "failed" not in summary, (name, summary)
    from npl import kernels
    launched = json.loads(log.read_text())
    missing = ["npl_%s_%s" % (n, s) for n in kernels.NAMES for s in ("f32", "f64")
               if not launched.get("npl_%s_%s" % (n, s))]
    assert not missing, "kernels never launched: %s" % missing
    bench = (out / "gpu_bench.log").read_text()
    assert "cupy.matmul (cuBLAS)" in bench and "WARNING: CuPy here is the test stand-in" in bench
    d = json.loads((out / "bench.json").read_text())
    assert d["device"] == "cuda" and d["frameworks"]["npl"]["load"]["backend"] == "cupy"
    rows = {(x["cell"], x["mode"]) for x in d["results"] if x["framework"] == "npl" and x["median_ms"] > 0}
    assert rows == {("lstm", "fwd"), ("lstm", "fwdbwd"), ("gru", "fwd"), ("gru", "fwdbwd")}


def test_backend_mixing_passes_on_the_stand_in(gxx):
    """tests/test_backend_mixing.py with CuPy present: its device-mixing errors, to_device on
    cells and layers, and optimizer slots that follow a moved model, every test run (in this
    process, without CuPy, the ones that need it are skipped)."""
    r = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider",
              os.path.join(HERE, "test_backend_mixing.py")])
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-6000:]
    summary = [l for l in r.stdout.splitlines() if l.strip()][-1]
    assert summary.split()[1] == "passed" and int(summary.split()[0]) >= 100, summary
    assert "skipped" not in summary and "failed" not in summary, summary


EXAMPLES = {   # example, its quick arguments, the metric its summary prints
    "sine_prediction": (["--quick"], r"\(b\) two-layer 30\+1: ([0-9.e+-]+)"),
    "mnist_rnn": (["--quick", "--model", "lstm2"], r"test accuracy ([0-9.]+)%"),
    "sin_to_cos_stateful": (["--quick"], r"test MSE ([0-9.e+-]+) with the state carried"),
    "shakespeare_char": (["--quick"], r"validation loss ([0-9.]+)"),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_training_examples_run_on_the_gpu_backend(gxx, tmp_path, name):
    """The training examples under NPL_BACKEND=cupy (parameters on the "GPU", host data moved a
    batch at a time by npl.train.fit, predictions brought back): they run, launch the CUDA
    kernels, and report the metric of the NumPy run (within 2 %: float32 on two code paths)."""
    import re
    args, pattern = EXAMPLES[name]
    cmd = [os.path.join(ROOT, "examples", name + ".py")] + args + ["--no-progress"]
    log = tmp_path / "launches.json"
    values = {}
    for backend in ("numpy", "cupy"):
        r = _run(cmd + ["--out", str(tmp_path / backend)],
                 {"NPL_BACKEND": backend, "NPL_FAKE_CUPY_LAUNCHES": str(log)}, timeout=600)
        assert r.returncode == 0, (backend, (r.stdout + r.stderr)[-4000:])
        m = re.search(pattern, r.stdout)
        assert m, (backend, r.stdout[-2000:])
        values[backend] = float(m.group(1))
        assert log.exists() == (backend == "cupy"), backend     # kernels launched on "cupy" only
    assert math.isfinite(values["numpy"])
    assert abs(values["cupy"] - values["numpy"]) <= 0.02 * abs(values["numpy"]), values
