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
