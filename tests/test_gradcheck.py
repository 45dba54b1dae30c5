"""npl.gradcheck: finite-difference gradient checks of any npl computation, and the custom-cell
recipe (examples/custom_cell.py) written, run and gradient-checked as a learner would.

The checker itself is tested on functions with closed-form gradients (so its error measure and
the index it reports are known exactly) and on deliberately broken backward passes.
"""
import doctest
import importlib.util
import os
import warnings

import numpy as np
import pytest

import npl
import npl.gradcheck as gc
from npl.cells import LSTMStateTuple
from npl.gradcheck import GradcheckWarning, gradcheck, gradcheck_cell, float64_copy
from helpers import numpy_backend, randomize_params  # noqa: F401 (numpy_backend: autouse)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def load_example(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "examples", name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def closed_form_fn(error_at=None, error=0.0):
    """y = a * b + sin(a) (elementwise) and z = sum(b^2); the vjp is exact, except that
    ``error_at`` (an index into a) gets its gradient multiplied by (1 + error)."""
    def fn(inp):
        a, b = inp["a"], inp["pair"][1]
        outputs = (a * b + np.sin(a), np.array([np.sum(b ** 2)]))

        def vjp(d):
            da = d[0] * (b + np.cos(a))
            if error_at is not None:
                da[error_at] *= 1 + error
            db = d[0] * a + d[1][0] * 2 * b
            return {"a": da, "pair": (np.zeros_like(inp["pair"][0]), db)}
        return outputs, vjp
    return fn


def test_closed_form_passes_and_reports_exact_error_location(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    inputs = {"a": a, "pair": (rng.standard_normal(2), b)}
    rep = gradcheck(closed_form_fn(), inputs)
    assert rep.passed and bool(rep)
    assert rep.names == ["a", "pair[0]", "pair[1]"]
    assert all(c.checked == int(np.prod(c.shape)) for c in rep)
    assert rep.worst.max_rel_err < 1e-8
    delta = 1e-3
    bad = gradcheck(closed_form_fn(error_at=(2, 1), error=delta), inputs)
    assert not bad.passed
    assert bad["a"].index == (2, 1) and not bad["a"].passed
    # err = |g (1 + d) - g| / max(|g (1 + d)|, |g|) = d / (1 + d), up to FD error ~1e-10
    assert bad["a"].max_rel_err == pytest.approx(delta / (1 + delta), rel=1e-5)
    assert bad["pair[1]"].passed and bad.worst is bad["a"]
    assert bad["a"].analytic == pytest.approx(bad["a"].numeric * (1 + delta), rel=1e-8)
    text = str(bad)
    assert "FAILED" in text and "(2, 1)" in text and "pair[1]" in text
    with pytest.raises(AssertionError, match="FAILED"):
        bad.raise_if_failed()
    # the caller's arrays are never perturbed (the check works on copies of the inputs)
    np.testing.assert_array_equal(inputs["a"], a)


def test_integer_inputs_pass_through_and_sampling(rng):
    table = rng.standard_normal((6, 3))
    ids = np.array([[0, 2, 2], [5, 1, 0]])

    def fn(inp):
        y, tr = npl.nn.embedding_lookup(inp["table"], inp["ids"], return_trace=True)
        return y, lambda d: {"table": tr.backward(d).to_dense()}
    rep = gradcheck(fn, {"table": table, "ids": ids})
    assert rep.passed and rep.names == ["table"]
    assert rep["table"].checked == 18
    rep = gradcheck(fn, {"table": table, "ids": ids}, max_checks=5)
    assert rep["table"].checked == 5 and rep.passed


def test_sequence_functions_with_params(rng):
    """bidirectional_dynamic_rnn: inputs, both initial states and both cells' parameters."""
    fw = npl.rnn.LSTMCell(3, use_peepholes=True, forget_bias=0.3, input_size=2, dtype=np.float64)
    bw = npl.rnn.GRUCell(2, input_size=2, dtype=np.float64)
    randomize_params(fw, rng)
    randomize_params(bw, rng)
    lengths = np.array([4, 2])

    def fn(inp):
        outs, states, tr = npl.nn.bidirectional_dynamic_rnn(
            fw, bw, inp["x"], sequence_length=lengths, initial_state_fw=inp["s_fw"],
            initial_state_bw=inp["s_bw"], return_trace=True)

        def vjp(d):
            fw.zero_grad()
            bw.zero_grad()
            dx, (d_fw, d_bw) = tr.backward(d[0], d[1])
            g = {"fw/" + k: v.copy() for k, v in fw.grads.items()}
            g.update({"bw/" + k: v.copy() for k, v in bw.grads.items()})
            g.update(x=dx, s_fw=d_fw, s_bw=d_bw)
            return g
        return (outs, states), vjp
    params = {"fw/" + k: v for k, v in fw.params.items()}
    params.update({"bw/" + k: v for k, v in bw.params.items()})
    inputs = {"x": rng.standard_normal((2, 4, 2)),
              "s_fw": LSTMStateTuple(rng.standard_normal((2, 3)), rng.standard_normal((2, 3))),
              "s_bw": rng.standard_normal((2, 2))}
    before = {k: v.copy() for k, v in params.items()}
    rep = gradcheck(fn, inputs, params)
    assert rep.passed, str(rep)
    assert rep.names[:4] == ["x", "s_fw.c", "s_fw.h", "s_bw"]
    assert set(rep.names[4:]) == set(params)
    for k, v in params.items():                 # the live parameters were perturbed, then restored
        assert v is fw.params.get(k[3:], bw.params.get(k[3:]))
        np.testing.assert_array_equal(v, before[k])


CELL_MAKERS = {
    "lstm_all": lambda: npl.rnn.LSTMCell(3, use_peepholes=True, cell_clip=1.5, num_proj=2,
                                         proj_clip=0.9, forget_bias=0.4),
    "basic_lstm_flat": lambda: npl.rnn.BasicLSTMCell(3, forget_bias=-0.3, state_is_tuple=False),
    "gru": lambda: npl.rnn.GRUCell(3),
    "rnn_relu": lambda: npl.rnn.BasicRNNCell(3, activation="relu"),
    "multi": lambda: npl.rnn.MultiRNNCell([npl.rnn.LSTMCell(3, num_proj=2), npl.rnn.GRUCell(2)]),
}


@pytest.mark.parametrize("kind", sorted(CELL_MAKERS))
def test_gradcheck_cell_every_builtin_cell(kind, rng):
    cell = CELL_MAKERS[kind]()
    cell.build(4, np.float64)
    randomize_params(cell, rng, 0.7)
    x = rng.standard_normal((3, 5, 4))
    before = {k: v.copy() for k, v in cell.params.items()}
    rep = gradcheck_cell(cell, x, sequence_length=[5, 3, 0])
    assert rep.passed, str(rep)
    state_names = [n for n in rep.names if n.startswith("initial_state")]
    assert rep.names[0] == "inputs" and state_names
    assert set(rep.names) - {"inputs"} - set(state_names) == set(cell.params)
    for k, v in cell.params.items():                      # the cell checked was a copy
        np.testing.assert_array_equal(v, before[k])
        assert not cell.grads[k].any()


def test_gradcheck_cell_time_major_and_given_state(rng):
    cell = npl.rnn.BasicLSTMCell(2, input_size=3, dtype=np.float64)
    randomize_params(cell, rng)
    st = LSTMStateTuple(rng.standard_normal((2, 2)), rng.standard_normal((2, 2)))
    rep = gradcheck_cell(cell, rng.standard_normal((4, 2, 3)), st, time_major=True)
    assert rep.passed and rep.names[:3] == ["inputs", "initial_state.c", "initial_state.h"]


def test_detects_a_broken_backward(rng):
    class LeakyGRU(npl.rnn.GRUCell):
        """A GRU whose backward gets one entry of one gradient slightly wrong."""
        def _backward_seq(self, rec, dout, dh):
            res = super()._backward_seq(rec, dout, dh)
            self._grads["gates/bias"][4] *= 1.01
            return res
    cell = LeakyGRU(3, input_size=2, dtype=np.float64)
    randomize_params(cell, rng)
    rep = gradcheck_cell(cell, rng.standard_normal((2, 4, 2)))
    assert not rep.passed
    assert [c.name for c in rep if not c.passed] == ["gates/bias"]
    assert rep["gates/bias"].index == (4,)
    assert rep["gates/bias"].max_rel_err == pytest.approx(0.01 / 1.01, rel=1e-4)


@pytest.mark.parametrize("replay", [False, True])
def test_gradcheck_cell_through_dropout_wrappers(rng, replay):
    """A DropoutWrapper (alone, or inside a stack) is checked with one fixed set of masks: its own
    float32 masks converted when it replays, else masks drawn once; the wrapper passed in keeps its
    masks and mode.  A broken backward under dropout is still caught."""
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)
    inner = npl.rnn.BasicLSTMCell(3, dtype=np.float32, seed=1)
    w = npl.rnn.DropoutWrapper(inner, 0.6, 0.6, 0.6, seed=2)
    m = npl.rnn.MultiRNNCell([w, npl.rnn.GRUCell(2, dtype=np.float32, seed=3)])
    npl.nn.dynamic_rnn(m, x, sequence_length=[4, 0, 2])
    w.replay = replay
    saved = {k: v.copy() for k, v in w.masks.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradcheckWarning)
        for cell in (w, m):
            rep = gradcheck_cell(cell, x, sequence_length=[4, 0, 2])
            assert rep.passed, str(rep)
    assert w.replay == replay and all(np.array_equal(w.masks[k], saved[k]) for k in saved)

    class LeakyLSTM(npl.rnn.BasicLSTMCell):
        def _backward_seq(self, rec, dout, dst):
            res = super()._backward_seq(rec, dout, dst)
            self._grads["kernel"][1, 2] *= 1.01
            return res
    leaky = npl.rnn.DropoutWrapper(LeakyLSTM(3, input_size=2, dtype=np.float64, seed=4), 0.7, 0.7, 0.7, seed=5)
    rep = gradcheck_cell(leaky, x.astype(np.float64))
    assert [c.name for c in rep if not c.passed] == ["kernel"] and rep["kernel"].index == (1, 2)


def test_float32_warns_and_upcasts_a_copy(rng):
    cell = npl.rnn.GRUCell(3, input_size=2, dtype=np.float32, seed=1)
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    before = {k: v.copy() for k, v in cell.params.items()}
    with pytest.warns(GradcheckWarning,
                      match=r"x \(float32\), the cell's parameters \(float32\) upcast to float64"):
        rep = gradcheck_cell(cell, x)
    assert rep.passed, str(rep)
    for k, v in cell.params.items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, before[k])
    # the generic form: float32 inputs are upcast on a copy, with a warning
    a = rng.standard_normal(5).astype(np.float32)

    def fn(inp):
        return np.tanh(inp["a"]), lambda d: {"a": d * (1 - np.tanh(inp["a"]) ** 2)}
    with pytest.warns(GradcheckWarning, match=r"a \(float32\) upcast to float64 on a copy"):
        assert gradcheck(fn, {"a": a}).passed
    # float32 live parameters cannot be upcast behind fn's back: a clear error instead
    with pytest.raises(TypeError, match=r"params\['kernel'\] must be a live float64 numpy array.*float32"):
        gradcheck(fn, {"a": a.astype(np.float64)}, {"kernel": cell.params["gates/kernel"]})
    c64 = float64_copy(cell)
    assert c64.params["gates/kernel"].dtype == np.float64 and cell.dtype == np.float32


def test_bad_arguments(rng):
    a = rng.standard_normal(3)
    with pytest.raises(ValueError, match=r"vjp returned no gradient for 'b'"):
        gradcheck(lambda inp: (inp["a"] * inp["b"], lambda d: {"a": d * inp["b"]}), {"a": a, "b": a.copy()})
    with pytest.raises(ValueError, match=r"gradient for 'a' has shape \(2,\), expected \(3,\)"):
        gradcheck(lambda inp: (inp["a"] * 2, lambda d: {"a": d[:2] * 2}), {"a": a})
    with pytest.raises(TypeError, match=r"fn must return \(outputs, vjp\)"):
        gradcheck(lambda inp: inp["a"] * 2, {"a": a})
    with pytest.raises(TypeError, match="inputs must be a dict"):
        gradcheck(lambda inp: None, [a])
    with pytest.raises(ValueError, match="max_checks must be None or a positive integer, got 0"):
        gradcheck(lambda inp: None, {"a": a}, max_checks=0)
    with pytest.raises(TypeError, match="cell must be an npl RNN cell"):
        gradcheck_cell("lstm", np.zeros((1, 2, 3)))
    with pytest.raises(ValueError, match=r"x must have rank 3 \(\[batch, time, depth\]\), got shape \(2, 3\)"):
        gradcheck_cell(npl.rnn.GRUCell(2), np.zeros((2, 3)))


def test_module_is_callable_and_doctests():
    a = np.linspace(-1, 1, 4)
    rep = gc(lambda inp: (inp["a"] ** 3, lambda d: {"a": 3 * d * inp["a"] ** 2}), {"a": a})
    assert rep.passed and gc.gradcheck_cell is gradcheck_cell
    res = doctest.testmod(gc, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


# ---------------------------------------------------------------------------- the custom cell recipe
def cifg_reference(p, x, c, h, lengths):
    """The CIFG LSTM written directly from its equations (batch-major), with TF's masking."""
    sig = lambda a: 1 / (1 + np.exp(-a))                                    # noqa: E731
    outs = np.zeros(x.shape[:2] + (h.shape[1],))
    for t in range(x.shape[1]):
        a_i, a_j, a_o = np.split(np.concatenate([x[:, t], h], 1) @ p["kernel"] + p["bias"], 3, axis=1)
        i, j, o = sig(a_i), np.tanh(a_j), sig(a_o)
        c_new = (1 - i) * c + i * j
        h_new = o * np.tanh(c_new)
        v = (t < np.asarray(lengths))[:, None]
        c, h = np.where(v, c_new, c), np.where(v, h_new, h)
        outs[:, t] = np.where(v, h_new, 0)
    return outs, c, h


def test_custom_cell_recipe(rng):
    mod = load_example("custom_cell")
    cell = mod.CIFGLSTMCell(3, dtype=np.float64)
    assert isinstance(cell, npl.rnn.RNNCell)
    x = rng.standard_normal((3, 6, 2))
    lengths = [6, 4, 0]
    st = LSTMStateTuple(rng.standard_normal((3, 3)) * 0.5, rng.standard_normal((3, 3)) * 0.5)
    out, final = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=st)
    assert set(cell.params) == {"kernel", "bias"} and cell.params["kernel"].shape == (5, 9)
    randomize_params(cell, rng, 0.7)
    out, final, tr = npl.nn.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=st,
                                        return_trace=True)
    ref_out, ref_c, ref_h = cifg_reference(cell.params, x, st.c, st.h, lengths)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(final.c, ref_c, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(final.h, ref_h, rtol=1e-12, atol=1e-13)
    rep = gradcheck_cell(cell, x, st, sequence_length=lengths)
    assert rep.passed, str(rep)
    assert rep.names == ["inputs", "initial_state.c", "initial_state.h", "kernel", "bias"]
    # npl.inspect understands it through gate_layout; f = 1 - i is the coupling
    import npl.inspect as ni
    tr.record_state_grads()
    cell.zero_grad()
    tr.backward(rng.standard_normal(out.shape), None)
    L = ni.inspect_trace(tr).layer(0)
    assert L.gate_names == ("i", "j", "o")
    v = L.valid
    c_prev = np.concatenate([L.c0[None], L.c[:-1]])
    expect_c = (1 - L.gate("i")) * c_prev + L.gate("i") * L.gate("j")
    np.testing.assert_allclose(L.c[v], expect_c[v], rtol=1e-12)
    for name, contrib in L.weight_grad_contributions().items():
        np.testing.assert_allclose(contrib.sum(axis=0), cell.grads[name], rtol=1e-10, atol=1e-13)
    # a custom cell that does not name its gates, or whose parameters are not one kernel + bias
    class Unnamed(mod.CIFGLSTMCell):
        gate_layout = ()
    _, _, tr2 = npl.nn.dynamic_rnn(Unnamed(3, dtype=np.float64), x, return_trace=True)
    with pytest.raises(TypeError, match="cannot name the gates of Unnamed: give the class a gate_layout"):
        ni.inspect_trace(tr2)
    # the example's own main() runs (and raises if its gradient check fails)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradcheckWarning)
        assert mod.main().passed
