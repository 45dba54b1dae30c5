"""The forward that keeps no trace (``dynamic_rnn`` without ``return_trace``) runs on the C loops
with a ring of a few steps of gates and states (``npl.cells.INFERENCE_RING_BYTES``) and writes its
outputs straight into the result.  Here it must give TensorFlow's formulas, written out in
float64 (``helpers.tf_rnn_reference``), with random weights, biases, forget biases and initial
states, over rings of several chunks with a remainder, sequence lengths (unsorted, one zero),
both layouts, stacks, evaluation-mode dropout and the bidirectional RNN; the same results as the
pass that keeps its trace; and working memory that does not grow with T."""
import tracemalloc

import numpy as np
import pytest

import npl
import npl.cells
import npl.rnn_ops
from npl.kernels import cpu
from helpers import randomize_params, tf_rnn_reference

pytestmark = pytest.mark.skipif(not cpu.sequence_loops(),
                                reason="the C sequence loops are not built here (no C compiler)")


def _cell(kind, H, rng):
    if kind == "lstm":
        return npl.rnn.BasicLSTMCell(H, forget_bias=float(rng.uniform(-0.5, 1.5)))
    return npl.rnn.GRUCell(H)


def _params64(cell):
    return {k: v.astype(np.float64) for k, v in cell.params.items()}


def _spy(monkeypatch):
    """Counts the trace-less passes that ran (LSTMCell and GRUCell ``_infer_seq``)."""
    calls = []
    for cls in (npl.cells.LSTMCell, npl.cells.GRUCell):
        real = cls._infer_seq
        monkeypatch.setattr(cls, "_infer_seq",
                            lambda self, *a, _real=real: (calls.append(self), _real(self, *a))[1])
    return calls


def _small_ring(monkeypatch, steps, nG, B):
    """A ring of ``steps`` steps for a layer of nG gate rows and batch B (float32)."""
    monkeypatch.setattr(npl.cells, "INFERENCE_RING_BYTES", steps * nG * B * 4)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("B, T, I, H", [(3, 40, 5, 16), (20, 23, 7, 32), (9, 30, 1, 8),
                                        (1, 50, 12, 24)])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("time_major", [True, False])
def test_matches_the_formulas(monkeypatch, kind, B, T, I, H, lengths, time_major):
    rng = np.random.default_rng(B * 1000 + T * 10 + I + H + lengths)
    cell = _cell(kind, H, rng)
    cell.build(I, np.float32)
    randomize_params(cell, rng, scale=0.4)
    nG = (4 if kind == "lstm" else 3) * H
    _small_ring(monkeypatch, 7, nG, B)                     # 7 steps a chunk, T not a multiple
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    h0 = (rng.standard_normal((B, H)) * 0.5).astype(np.float32)
    c0 = (rng.standard_normal((B, H)) * 0.5).astype(np.float32) if kind == "lstm" else None
    state = npl.rnn.LSTMStateTuple(c0, h0) if kind == "lstm" else h0
    L = None
    if lengths:
        L = rng.integers(1, T + 1, B)
        if B > 1:
            L[0], L[B // 2] = T - 3, 0                     # unsorted, and a row with no steps
    fb = cell.forget_bias if kind == "lstm" else 1.0
    ref_out, ref_h, ref_c = tf_rnn_reference(kind, _params64(cell), x, h0, c0, fb, L)
    calls = _spy(monkeypatch)
    xin = x if time_major else np.ascontiguousarray(x.transpose(1, 0, 2))
    out, final = npl.nn.dynamic_rnn(cell, xin, L, state, time_major=time_major)
    assert len(calls) == 1, "the trace-less pass did not run"
    out_t, final_t, _ = npl.nn.dynamic_rnn(cell, xin, L, state, time_major=time_major,
                                           return_trace=True)
    assert len(calls) == 1
    out = out if time_major else out.transpose(1, 0, 2)
    out_t = out_t if time_major else out_t.transpose(1, 0, 2)
    tol = 3e-5
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(out, out_t, rtol=1e-6, atol=1e-6)
    h = final.h if kind == "lstm" else final
    np.testing.assert_allclose(h, ref_h, rtol=tol, atol=tol)
    if kind == "lstm":
        np.testing.assert_allclose(final.c, ref_c, rtol=tol, atol=tol)


@pytest.mark.parametrize("wrap", ["stack", "one_layer_stack", "dropout_eval", "bidirectional"])
def test_stacks_wrappers_and_bidirectional(monkeypatch, wrap):
    rng = np.random.default_rng(11)
    B, T, I = 6, 45, 4
    monkeypatch.setattr(npl.cells, "INFERENCE_RING_BYTES", 5 * 4 * 16 * B * 4)
    monkeypatch.setattr(npl.cells, "INFERENCE_STACK_MIN_STEPS", 10)   # the stack in chunks too
    monkeypatch.setattr(npl.cells, "INFERENCE_STACK_BYTES", 1)
    a, b = npl.rnn.BasicLSTMCell(16, forget_bias=0.3), npl.rnn.GRUCell(8)
    a.build(I, np.float32)
    b.build(16 if wrap == "stack" else I, np.float32)
    for c in (a, b):
        randomize_params(c, rng, scale=0.4)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    L = np.array([45, 0, 17, 44, 3, 30])
    h0a = npl.rnn.LSTMStateTuple(*(rng.standard_normal((2, B, 16)) * 0.5).astype(np.float32))
    h0b = (rng.standard_normal((B, 8)) * 0.5).astype(np.float32)
    calls = _spy(monkeypatch)
    ra_out, ra_h, ra_c = tf_rnn_reference("lstm", _params64(a), x, h0a.h, h0a.c, 0.3, L)
    if wrap == "stack":
        cell = npl.rnn.MultiRNNCell([a, b])
        out, (fa, fb) = npl.nn.dynamic_rnn(cell, x, L, (h0a, h0b), time_major=True)
        ref_out, ref_h, _ = tf_rnn_reference("gru", _params64(b), ra_out, h0b, None, 1.0, L)
        assert len(calls) == 2 * 5      # 2 layers x 5 chunks of 10 steps (the last, of 5,
        #                                 too short for the C loops at batch 6: the plain pass)
    elif wrap == "one_layer_stack":
        out, (fa,) = npl.nn.dynamic_rnn(npl.rnn.MultiRNNCell([a]), x, L, (h0a,), time_major=True)
        ref_out, fb = ra_out, None
        assert len(calls) == 1
    elif wrap == "dropout_eval":
        cell = npl.rnn.DropoutWrapper(a, input_keep_prob=0.5, output_keep_prob=0.5, seed=1)
        cell.training = False
        out, fa = npl.nn.dynamic_rnn(cell, x, L, h0a, time_major=True)
        ref_out, fb = ra_out, None
        assert len(calls) == 1
        cell.training = True                                # training keeps the masked pass
        npl.nn.dynamic_rnn(cell, x, L, h0a, time_major=True)
        assert len(calls) == 1
    else:
        (out, out_bw), (fa, fb) = npl.nn.bidirectional_dynamic_rnn(
            a, b, x, L, h0a, h0b, time_major=True)
        ref_out = ra_out
        x_rev = np.zeros_like(x)
        for r in range(B):
            x_rev[:L[r], r] = x[:L[r], r][::-1]
        bw_rev, ref_h, _ = tf_rnn_reference("gru", _params64(b), x_rev, h0b, None, 1.0, L)
        ref_bw = np.zeros_like(bw_rev)
        for r in range(B):
            ref_bw[:L[r], r] = bw_rev[:L[r], r][::-1]
        np.testing.assert_allclose(out_bw, ref_bw, rtol=3e-5, atol=3e-5)
        assert len(calls) == 2
    tol = 3e-5
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    np.testing.assert_allclose(fa.h, ra_h, rtol=tol, atol=tol)
    np.testing.assert_allclose(fa.c, ra_c, rtol=tol, atol=tol)
    if fb is not None:
        np.testing.assert_allclose(fb, ref_h, rtol=tol, atol=tol)


def _peak_bytes(cell, x):
    """tracemalloc's peak over one trace-less forward, the workspace pool emptied first."""
    npl.workspace.clear()
    tracemalloc.start()
    try:
        npl.nn.dynamic_rnn(cell, x, time_major=True)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_working_memory_does_not_grow_with_T(monkeypatch, kind):
    """Beyond the outputs (and the final state), the pass holds one ring: the same few hundred KB
    at T = 200 and T = 1600, where the gates of every step are 2-10 MB."""
    rng = np.random.default_rng(3)
    B, I, H = 16, 8, 32
    nG = (4 if kind == "lstm" else 3) * H
    cell = _cell(kind, H, rng)
    cell.build(I, np.float32)
    _small_ring(monkeypatch, 8, nG, B)                     # 8 steps: 64 KB of LSTM gates
    calls = _spy(monkeypatch)
    extra = {}
    for T in (200, 1600):
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        _peak_bytes(cell, x)                               # warm-up: the C library, caches
        extra[T] = _peak_bytes(cell, x) - T * B * H * 4    # minus the outputs
    assert len(calls) == 4
    ring = 9 * nG * B * 4                                  # gates + x + states of 8 steps, bound
    assert extra[200] < 3 * ring and extra[1600] < 3 * ring, extra
    assert abs(extra[1600] - extra[200]) < 16 * 1024, extra
    # the pass that keeps every step's slabs grows with T (so this measurement can tell them apart)
    monkeypatch.setattr(type(cell), "_infers", lambda self, x, mask: False)
    monkeypatch.setattr(npl.rnn_ops, "INFERENCE_CHUNK", 10 ** 6)
    x = rng.standard_normal((1600, B, I)).astype(np.float32)
    assert _peak_bytes(cell, x) - 1600 * B * H * 4 > 10 * ring


@pytest.mark.parametrize("seed", range(40))
def test_random_stacks_agree_with_the_traced_pass(monkeypatch, seed):
    """Random mixes (LSTM, GRU, an LSTMCell with peepholes that the C loops do not take, a
    DropoutWrapper in evaluation), batches 1-39, T 1-119, lengths, both layouts and ring sizes
    down to one step: the trace-less pass gives the traced pass's outputs and final states."""
    rng = np.random.default_rng(1000 + seed)
    B, T, I = int(rng.integers(1, 40)), int(rng.integers(1, 120)), int(rng.integers(1, 20))
    cells = []
    for kind in rng.choice(["lstm", "gru", "peephole", "dropout"], size=int(rng.integers(1, 4))):
        H = int(rng.integers(1, 24))
        if kind == "lstm":
            cells.append(npl.rnn.BasicLSTMCell(H, forget_bias=float(rng.uniform(-0.5, 1.5))))
        elif kind == "gru":
            cells.append(npl.rnn.GRUCell(H))
        elif kind == "peephole":
            cells.append(npl.rnn.LSTMCell(H, use_peepholes=True))
        else:
            d = npl.rnn.DropoutWrapper(npl.rnn.GRUCell(H), output_keep_prob=0.5, seed=seed)
            d.training = False
            cells.append(d)
    cell = cells[0] if len(cells) == 1 and seed % 2 else npl.rnn.MultiRNNCell(cells)
    monkeypatch.setattr(npl.cells, "INFERENCE_RING_BYTES", int(rng.choice([4, 4096, 65536, 2 << 20])))
    monkeypatch.setattr(npl.cells, "INFERENCE_STACK_BYTES", int(rng.choice([1, 8 << 20])))
    monkeypatch.setattr(npl.cells, "INFERENCE_STACK_MIN_STEPS", int(rng.choice([3, 64])))
    tm = bool(seed % 3)
    x = rng.standard_normal((T, B, I) if tm else (B, T, I)).astype(np.float32)
    L = rng.integers(0, T + 1, B) if seed % 4 < 2 else None
    cell.build(I, np.float32)
    for c in cells:
        randomize_params(c, rng, scale=0.5)
    o1, s1 = npl.nn.dynamic_rnn(cell, x, sequence_length=L, time_major=tm)
    o2, s2, _ = npl.nn.dynamic_rnn(cell, x, sequence_length=L, time_major=tm, return_trace=True)
    np.testing.assert_allclose(o1, o2, rtol=2e-6, atol=2e-6)
    leaves = lambda s: [s] if isinstance(s, np.ndarray) else [a for v in s for a in leaves(v)]
    l1, l2 = leaves(s1), leaves(s2)
    assert len(l1) == len(l2)                      # (zip's strict= is Python 3.10+)
    for a, b in zip(l1, l2):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)
