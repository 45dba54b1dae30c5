"""npl.rnn.LSTMBlockCell: tf.contrib.rnn.LSTMBlockCell, TensorFlow's fused LSTM op.

* Forward against TF's own op, ``tf.raw_ops.LSTMBlockCell`` (the kernel tf.contrib's cell ran),
  step by step over a sequence: random weights, biases, peepholes, states and forget_bias, with
  and without peepholes, with and without an active cell clip, TF's "no clip" values.
* Gradients against float64 finite differences (npl.gradcheck; TF2 registers no gradient for
  the raw op), with lengths.
* The constructor's parameters and the variable names are TF 1.15's ``lstm_ops.LSTMBlockCell``.
"""
import inspect

import numpy as np
import pytest

import npl
from npl import convert

R = npl.rnn


def _random_cell(rng, H, I, **kw):
    cell = R.LSTMBlockCell(H, forget_bias=float(rng.uniform(-1, 1)), input_size=I, **kw)
    cell.set_params({k: rng.uniform(-0.8, 0.8, v.shape).astype(v.dtype) for k, v in cell.params.items()})
    return cell


@pytest.mark.tf
@pytest.mark.parametrize("peephole", [False, True])
@pytest.mark.parametrize("cell_clip", [None, -1.0, 0.3])
def test_forward_equals_tensorflows_op(tf, peephole, cell_clip):
    rng = np.random.default_rng([int(peephole), 0 if cell_clip is None else int(cell_clip * 10) + 20])
    B, T, I, H = 5, 6, 3, 4
    cell = _random_cell(rng, H, I, use_peephole=peephole, cell_clip=cell_clip)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    c0, h0 = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
    out, (c, h) = npl.nn.dynamic_rnn(cell, x, initial_state=npl.LSTMStateTuple(c0, h0))
    p = cell.params
    zeros = np.zeros(H, np.float32)
    cs, hs, want = tf.constant(c0), tf.constant(h0), []
    for t in range(T):
        r = tf.raw_ops.LSTMBlockCell(
            x=tf.constant(x[:, t]), cs_prev=cs, h_prev=hs, w=tf.constant(p["kernel"]),
            wci=tf.constant(p.get("w_i_diag", zeros)), wcf=tf.constant(p.get("w_f_diag", zeros)),
            wco=tf.constant(p.get("w_o_diag", zeros)), b=tf.constant(p["bias"]),
            forget_bias=cell._forget_bias, cell_clip=-1.0 if cell_clip is None else cell_clip,
            use_peephole=peephole)
        cs, hs = r[1], r[6]
        want.append(hs.numpy())
    np.testing.assert_allclose(out, np.stack(want, axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, cs.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, hs.numpy(), rtol=1e-5, atol=1e-6)
    if cell_clip == 0.3:                                  # the clip was active
        assert np.abs(c).max() == pytest.approx(0.3)


@pytest.mark.parametrize("peephole", [False, True])
def test_gradients_equal_finite_differences(peephole):
    rng = np.random.default_rng(3 + peephole)
    cell = _random_cell(rng, 3, 2, use_peephole=peephole, cell_clip=0.6, dtype=np.float64)
    x = rng.standard_normal((4, 5, 2))
    report = npl.gradcheck.gradcheck_cell(cell, x, sequence_length=np.array([5, 0, 2, 3]))
    assert report.passed, report


def test_tf_1_15_signature_and_names():
    """TF 1.15's contrib/rnn/python/ops/lstm_ops.py: LSTMBlockCell(num_units, forget_bias=1.0,
    cell_clip=None, use_peephole=False, dtype=None, reuse=None, name="lstm_cell"), variables
    kernel, bias, w_i_diag, w_f_diag, w_o_diag under lstm_cell/."""
    params = list(inspect.signature(R.LSTMBlockCell.__init__).parameters)[1:]
    assert params[:7] == ["num_units", "forget_bias", "cell_clip", "use_peephole", "dtype", "reuse", "name"]
    cell = R.LSTMBlockCell(4, use_peephole=True)
    assert sorted(convert.tf_variable_names(cell).values()) == [
        "rnn/lstm_cell/bias", "rnn/lstm_cell/kernel", "rnn/lstm_cell/w_f_diag",
        "rnn/lstm_cell/w_i_diag", "rnn/lstm_cell/w_o_diag"]
    assert R.LSTMBlockCell(4, cell_clip=0.0)._cell_clip is None     # TF's op: no clip unless > 0
    with pytest.raises(TypeError, match="cell_clip must be None or a positive real number"):
        R.LSTMBlockCell(4, cell_clip="1")
