"""The input projection of few columns (``npl.cells.DIRECT_PROJECTION_MAX_RATIO``: batch-1
sampling, short small-batch passes with wide inputs) is computed straight from the kernels'
input rows, x @ W, instead of from a stacked copy [W^T | b].  Here it must give TensorFlow's
formulas, written out in float64 (``helpers.tf_rnn_reference``, not npl's code), with random
weights, biases, forget bias and initial states, and the same results as the stacked projection
(ratio 0)."""
import numpy as np
import pytest

import npl
from helpers import randomize_params, tf_rnn_reference


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, T, I, H", [(1, 1, 65, 16), (2, 3, 40, 7), (1, 2, 9, 5), (3, 1, 31, 1)])
@pytest.mark.parametrize("time_major", [True, False])
def test_direct_projection_matches_the_formulas(monkeypatch, kind, dtype, B, T, I, H, time_major):
    assert T * B <= npl.cells.DIRECT_PROJECTION_MAX_RATIO * (I + 1)    # the direct path's case
    rng = np.random.default_rng(B * 1000 + T * 100 + I + H)
    fb = float(rng.uniform(-1, 1.5))
    cell = {"lstm": lambda: npl.rnn.BasicLSTMCell(H, forget_bias=fb),
            "gru": lambda: npl.rnn.GRUCell(H),
            "rnn": lambda: npl.rnn.BasicRNNCell(H)}[kind]()
    cell.build(I, dtype)
    randomize_params(cell, rng, scale=0.4)
    p = {k: v.astype(np.float64) for k, v in cell.params.items()}
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = (rng.standard_normal((B, H)) * 0.5).astype(dtype)
    c0 = (rng.standard_normal((B, H)) * 0.5).astype(dtype) if kind == "lstm" else None
    state = npl.rnn.LSTMStateTuple(c0, h0) if kind == "lstm" else h0
    ref_out, ref_h, ref_c = tf_rnn_reference(kind, p, x, h0, c0, fb)

    spied = []
    real = npl.cells._projection
    monkeypatch.setattr(npl.cells, "_projection",
                        lambda W, xx, b, mm=None: (spied.append(W), real(W, xx, b, mm))[1])
    runs = []
    for ratio in (npl.cells.DIRECT_PROJECTION_MAX_RATIO, 0.0):     # direct, then stacked
        monkeypatch.setattr(npl.cells, "DIRECT_PROJECTION_MAX_RATIO", ratio)
        xin = x if time_major else np.ascontiguousarray(x.transpose(1, 0, 2))
        out, final = npl.nn.dynamic_rnn(cell, xin, initial_state=state, time_major=time_major)
        out = out if time_major else out.transpose(1, 0, 2)
        runs.append((out, final))
        # batch-1 sampling's path: one call of the cell per step
        s = state
        steps = []
        for t in range(T):
            o, s = cell(x[t], s)
            steps.append(o)
        runs.append((np.stack(steps), s))
    assert len(spied) == 2 * (1 + T) and (kind != "gru" or isinstance(spied[0], tuple))
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for out, final in runs:
        np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
        h = final.h if kind == "lstm" else final
        np.testing.assert_allclose(h, ref_h, rtol=tol, atol=tol)
        if kind == "lstm":
            np.testing.assert_allclose(final.c, ref_c, rtol=tol, atol=tol)
