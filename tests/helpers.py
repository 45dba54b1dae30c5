"""One small helper set used by every reference test: random structures, a linear loss on any
output structure, and a central-difference gradient of that loss (float64)."""
import gc
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import npl
from npl.cells import LSTMStateTuple


def flatten(s):
    if s is None:
        return []
    if isinstance(s, (tuple, list)):
        out = []
        for v in s:
            out.extend(flatten(v))
        return out
    return [s]


def unflatten(like, leaves):
    it = iter(leaves)

    def build(s):
        if isinstance(s, (tuple, list)):
            vals = [build(v) for v in s]
            if hasattr(s, "_fields"):
                return type(s)(*vals)
            return type(s)(vals)
        return next(it)
    return build(like)


def seeded_rng(*parts):
    """A generator seeded from a test's parameters, stable across runs (no hash randomisation)."""
    seed = [sum(ord(ch) * (k + 1) for k, ch in enumerate(str(p))) for p in parts]
    return np.random.default_rng(seed)


def require_cupy():
    """The cupy module for the GPU tests, or a skip saying why (CI runs them on the CuPy stand-in
    instead: tests/test_fake_cupy.py)."""
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed: the GPU tests need npl[cuda] "
                                              "(tests/test_fake_cupy.py runs them on the CuPy stand-in)")
    if not npl.backend.cupy_available():
        pytest.skip("CuPy is installed but no CUDA device is present")
    return cupy


def random_like(s, rng, scale=1.0):
    return unflatten(s, [(rng.standard_normal(a.shape) * scale).astype(a.dtype) for a in flatten(s)])


def random_state(cell, batch, rng, dtype=np.float64, scale=0.5):
    z = cell.zero_state(batch, dtype)
    return random_like(z, rng, scale)


def randomize_params(cell, rng, scale=0.5):
    """Random values for every parameter (biases and peepholes too: layout bugs hide behind zeros)."""
    cell.set_params({k: (rng.standard_normal(v.shape) * scale).astype(v.dtype)
                     for k, v in cell.params.items()})


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def tf_rnn_reference(kind, p, x, h0, c0=None, forget_bias=1.0, lengths=None):
    """TensorFlow 1's BasicLSTMCell / GRUCell / BasicRNNCell under ``dynamic_rnn``, written out in
    float64 one step at a time (not npl's code): ``p`` the cell's parameters (TF's names), ``x``
    [T, B, I] time-major, ``lengths`` [B] or None (past a row's length its output is zero and its
    state carried unchanged).  Returns (outputs [T, B, H], final h, final c or None)."""
    x = np.asarray(x, np.float64)
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    h = np.asarray(h0, np.float64)
    c = None if c0 is None else np.asarray(c0, np.float64)
    T, B = x.shape[:2]
    valid = np.ones((T, B, 1), bool) if lengths is None else \
        (np.arange(T)[:, None] < np.asarray(lengths)[None, :])[:, :, None]
    outs = []
    for t in range(T):
        xh = np.concatenate([x[t], h], axis=1)
        c_new = c
        if kind == "lstm":                                     # gates i, j, f, o
            i, j, f, o = np.split(xh @ p["kernel"] + p["bias"], 4, axis=1)
            c_new = _sigmoid(f + forget_bias) * c + _sigmoid(i) * np.tanh(j)
            h_new = _sigmoid(o) * np.tanh(c_new)
        elif kind == "gru":
            r, u = np.split(_sigmoid(xh @ p["gates/kernel"] + p["gates/bias"]), 2, axis=1)
            rxh = np.concatenate([x[t], r * h], axis=1)
            cand = np.tanh(rxh @ p["candidate/kernel"] + p["candidate/bias"])
            h_new = u * h + (1 - u) * cand
        else:
            h_new = np.tanh(xh @ p["kernel"] + p["bias"])
        h = np.where(valid[t], h_new, h)
        if c is not None:
            c = np.where(valid[t], c_new, c)
        outs.append(np.where(valid[t], h_new, 0.0))
    return np.stack(outs), h, c


def linear_loss(outputs, weights):
    return sum(float((np.asarray(o, np.float64) * w).sum()) for o, w in zip(flatten(outputs), flatten(weights)))


def numeric_grads(f, arrays, eps=1e-6):
    """Central differences of the scalar f() with respect to each array (perturbed in place)."""
    grads = []
    for a in arrays:
        g = np.zeros(a.shape, np.float64)
        flat, gf = a.reshape(-1), g.reshape(-1)
        assert flat.base is a or flat is a or np.shares_memory(flat, a)
        for k in range(flat.size):
            old = flat[k]
            flat[k] = old + eps
            fp = f()
            flat[k] = old - eps
            fm = f()
            flat[k] = old
            gf[k] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1e-12)
    return float(np.abs(a - b).max(initial=0) / den)


def assert_raises_naming(exc, words, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` raises ``exc`` and its message contains every one of ``words``."""
    with pytest.raises(exc) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    for w in words:
        assert w in msg, "message %r does not mention %r" % (msg, w)


def assert_close(actual, expected, rtol, what=""):
    e = rel_err(actual, expected)
    assert e <= rtol, "%s: relative error %.3g > %.3g" % (what, e, rtol)


# ----------------------------------------------------------------------------- engine-test helpers
#: Cell configurations shared by the engine tests (names understood by :func:`make_cell`).
CELL_KINDS = ("rnn", "rnn_relu", "basic_lstm", "basic_lstm_flat", "lstm_peep", "lstm_clip",
              "lstm_proj", "lstm_all", "lstm_softsign", "gru", "gru_softsign", "multi")


def cell_spec(kind, forget_bias=1.0, units=3, proj=2):
    """(class name, kwargs) of one leaf configuration in :data:`CELL_KINDS` (not ``multi``).

    The clip values are small on purpose so that clipping happens with random states of scale
    ~0.5 (the tests assert that it does)."""
    H, P, fb = units, proj, forget_bias
    return {
        "rnn": ("BasicRNNCell", dict(num_units=H)),
        "rnn_relu": ("BasicRNNCell", dict(num_units=H, activation="relu")),
        "basic_lstm": ("BasicLSTMCell", dict(num_units=H, forget_bias=fb)),
        "basic_lstm_flat": ("BasicLSTMCell", dict(num_units=H, forget_bias=fb, state_is_tuple=False)),
        "lstm_peep": ("LSTMCell", dict(num_units=H, use_peepholes=True, forget_bias=fb)),
        "lstm_clip": ("LSTMCell", dict(num_units=H, cell_clip=0.3, forget_bias=fb)),
        "lstm_proj": ("LSTMCell", dict(num_units=H, num_proj=P, proj_clip=0.2, forget_bias=fb)),
        "lstm_all": ("LSTMCell", dict(num_units=H, use_peepholes=True, cell_clip=0.3, num_proj=P,
                                      proj_clip=0.2, forget_bias=fb)),
        "lstm_softsign": ("LSTMCell", dict(num_units=H, use_peepholes=True, forget_bias=fb,
                                           activation="softsign")),
        "gru": ("GRUCell", dict(num_units=H)),
        "gru_softsign": ("GRUCell", dict(num_units=H, activation="softsign")),
    }[kind]


def make_cell(kind, rng, input_size=None, dtype=np.float64, units=3, scale=0.8):
    """A cell of configuration ``kind`` with a random forget_bias.  With ``input_size`` it is built
    and EVERY parameter (biases, peepholes, projection too) gets random values."""
    fb = float(rng.uniform(-1.0, 1.0))
    if kind == "multi":   # heterogeneous stack: LSTM with peepholes + projection / GRU / BasicRNN
        cell = npl.rnn.MultiRNNCell([
            npl.rnn.LSTMCell(units, use_peepholes=True, num_proj=2, forget_bias=fb),
            npl.rnn.GRUCell(2), npl.rnn.BasicRNNCell(2)])
    else:
        cls, kw = cell_spec(kind, fb, units)
        cell = getattr(npl.rnn, cls)(**kw)
    if input_size is not None:
        cell.build(input_size, dtype)
        randomize_params(cell, rng, scale)
    return cell


def state_rows(state, rows):
    """Rows ``rows`` (a slice) of every array of a state structure."""
    return unflatten(state, [a[rows] for a in flatten(state)])


def unroll_steps(cell, x, state, lengths=None):
    """Independent route to dynamic_rnn's results: for each batch row b, call the single-step
    ``cell(x[b:b+1, t], s)`` for t < lengths[b] only.  x: [B, T, I] (batch-major).

    Returns (outputs [B, T, P] with zeros past each length, final state with the structure of
    ``state``)."""
    B, T = x.shape[0], x.shape[1]
    L = [T] * B if lengths is None else [int(v) for v in lengths]
    outs = np.zeros((B, T, cell.output_size), x.dtype)
    finals = []
    for b in range(B):
        s = state_rows(state, slice(b, b + 1))
        for t in range(L[b]):
            o, s = cell(x[b:b + 1, t], s)
            outs[b, t] = o[0]
        finals.append(s)
    leaves = [np.concatenate(parts, axis=0) for parts in zip(*[flatten(s) for s in finals])]
    return outs, unflatten(state, leaves)


def check_grads(loss, arrays, analytic, names, tol=1e-6, eps=1e-6):
    """Central differences of ``loss()`` w.r.t. each array (perturbed in place) against the
    analytic gradients; asserts ``rel_err <= tol`` per array and returns the errors by name."""
    assert len(arrays) == len(analytic) == len(names)
    numeric = numeric_grads(loss, arrays, eps)
    errs = {}
    for name, a, n in zip(names, analytic, numeric):
        a = np.asarray(a)
        assert a.shape == n.shape, "%s: analytic shape %s, numeric %s" % (name, a.shape, n.shape)
        errs[name] = rel_err(a, n)
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, "gradients off (rel err > %g): %s" % (tol, bad)
    return errs


@pytest.fixture(autouse=True)
def numpy_backend():
    """Autouse fixture for test modules that import it: run on npl's NumPy backend (their
    references and finite differences work on host arrays, also when NPL_BACKEND=cupy), and put
    the backend setting back afterwards."""
    from npl.backend import _state
    old = _state["name"]
    npl.use("numpy")
    yield
    _state["name"] = old


def held_bytes(make):
    """``(bytes, kept)``: the memory that ``kept = make()`` keeps alive (tracemalloc: NumPy
    reports its buffers), after one warm-up call (lazily cached weights are not counted)."""
    make()
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = make()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - base, kept
    finally:
        tracemalloc.stop()


def run_on_cupy_stand_in(code, timeout=300, **env):
    """Run ``code`` in a fresh interpreter whose ``cupy`` is the stand-in (tests/fake_cupy, which
    refuses hidden host copies and device mixing) and the backend unset; ``env`` adds variables.
    The run must succeed and print a line starting with "ok"; returns its stdout."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    full = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(here, "fake_cupy"), root]), **env)
    full.pop("NPL_BACKEND", None)
    r = subprocess.run([sys.executable, "-c", code], cwd=root, env=full, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0 and r.stdout.startswith("ok"), (r.stdout[-2000:], r.stderr[-3000:])
    return r.stdout
