"""`import npl` and its core work with NumPy alone: every optional package is blocked in a fresh
interpreter, and the engine, the training toolkit and the data helpers still run."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys
    BLOCKED = ("tensorflow", "tf_keras", "keras", "torch", "matplotlib", "tqdm", "cupy", "cupyx",
               "scipy", "pandas", "hypothesis")

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError("blocked optional package: " + name)
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    import npl
    import npl.inspect, npl.gradcheck, npl.data, npl.convert, npl.train, npl.layers, npl.losses
    import npl.checkpoint, npl.kernels
    cell = npl.rnn.MultiRNNCell([npl.rnn.LSTMCell(4, use_peepholes=True), npl.rnn.GRUCell(3)])
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    out, state, trace = npl.nn.dynamic_rnn(cell, x, sequence_length=[5, 2], return_trace=True)
    trace.backward(np.ones_like(out), None)
    opt = npl.train.AdamOptimizer(0.01)
    names = sorted(cell.params)
    opt.apply_gradients([(cell.grads[k], cell.params[k], k) for k in names])
    assert out.dtype == np.float32
    try:
        npl.use("cupy")
    except npl.BackendError as e:
        assert "not installed" in str(e)
    else:
        raise AssertionError("npl.use('cupy') should fail without CuPy")
    print("OK", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
""")


def test_core_runs_with_numpy_only():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NPL_BACKEND", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "OK []"


def _source_copy(dest):
    """What a build reads, copied out of the checkout: a build in the checkout itself would reuse
    a stale build/ folder (a wheel could then hold files the package data no longer names)."""
    import shutil
    os.makedirs(dest)
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(os.path.join(ROOT, name), dest)
    shutil.copytree(os.path.join(ROOT, "npl"), os.path.join(dest, "npl"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    return dest


def test_wheel_ships_the_kernel_sources_and_the_license(tmp_path):
    """The CUDA and C kernel sources are package data: a built wheel contains them (the CPU kernels
    are compiled from the installed copy on first use), with the license, and nothing else."""
    import glob
    import zipfile
    src = _source_copy(str(tmp_path / "src"))
    out = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = glob.glob(str(out / "*.whl"))
    assert len(wheel) == 1, wheel
    names = zipfile.ZipFile(wheel[0]).namelist()
    for path in ("npl/kernels/cpu_kernels.c", "npl/kernels/rnn_kernels.cu", "npl/kernels/cpu.py"):
        assert path in names, (path, [n for n in names if "kernels" in n])
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE")
               for n in names), [n for n in names if "dist-info" in n]
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"npl"}
    meta = zipfile.ZipFile(wheel[0]).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    # the extras install prebuilt packages: CuPy's wheel for CUDA 12, one TensorFlow (tf-keras
    # needs "tensorflow" itself, so "tensorflow-cpu" beside it would install TensorFlow twice)
    assert 'Requires-Dist: cupy-cuda12x>=12; extra == "cuda"' in meta
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if "tensorflow-cpu" in r], requires
    assert 'Requires-Dist: tensorflow>=2.12; extra == "tf"' in requires
