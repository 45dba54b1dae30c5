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


def test_wheel_ships_the_kernel_sources(tmp_path):
    """The CUDA and C kernel sources are package data: a built wheel contains them (the CPU kernels
    are compiled from the installed copy on first use)."""
    import glob
    import zipfile
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = glob.glob(str(tmp_path / "*.whl"))
    assert len(wheel) == 1, wheel
    names = zipfile.ZipFile(wheel[0]).namelist()
    for path in ("npl/kernels/cpu_kernels.c", "npl/kernels/rnn_kernels.cu", "npl/kernels/cpu.py"):
        assert path in names, (path, [n for n in names if "kernels" in n])
