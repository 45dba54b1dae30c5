"""Weight converters (npl.convert) against the frameworks themselves.

Every case uses random weights for every parameter (biases, peepholes and forget_bias too), random
inputs and random initial states, converts, runs npl and the other framework on the same values
and compares outputs and final states: relative 1e-5 in float32, 1e-9 in float64.  Round trips
npl -> X -> npl are exact (bit for bit) except where Keras folds forget_bias into its single bias
(one rounding of b_f + forget_bias).  The converters that have no equivalent (Keras
GRU(reset_after=True), torch.nn.GRU) must raise ValueError naming the difference.
"""
import re

import numpy as np
import pytest

import npl
from npl import convert
from npl.rnn import BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell, MultiRNNCell
from npl.cells import LSTMStateTuple
from helpers import assert_close, random_like

TOL = {np.float32: 1e-5, np.float64: 1e-9}
B, T, I = 3, 5, 4


def _rand(rng, shape, dtype, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _randomize(cell, rng):
    cell.set_params({k: _rand(rng, v.shape, v.dtype) for k, v in cell.params.items()})
    return cell


def _state(cell, rng, dtype):
    """A random initial state with the cell's structure (LSTMStateTuple / array / tuple)."""
    return random_like(cell.zero_state(B, dtype), rng, 0.5)


def _assert_same_params(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].shape == b[k].shape and a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k]), "%s differs after the round trip" % k


def _multi(dtype, rng):
    """Every TF1 cell kind and option at once: peepholes, projection, two forget biases, GRU."""
    cell = MultiRNNCell([LSTMCell(5, use_peepholes=True, num_proj=3, forget_bias=0.7),
                         GRUCell(4), BasicLSTMCell(3, forget_bias=-0.4), BasicRNNCell(2)])
    cell.build(I, dtype)
    return _randomize(cell, rng)


# ============================================================================ TF1 names (no TF needed)
# The variable names TF 1.x / tf.compat.v1 gives these cells under dynamic_rnn (rnn_cell_impl:
# MultiRNNCell scopes each cell as "cell_%d", LSTMCell's projection lives under "projection").
TF1_NAMES = [
    "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel", "rnn/multi_rnn_cell/cell_0/lstm_cell/bias",
    "rnn/multi_rnn_cell/cell_0/lstm_cell/w_f_diag", "rnn/multi_rnn_cell/cell_0/lstm_cell/w_i_diag",
    "rnn/multi_rnn_cell/cell_0/lstm_cell/w_o_diag",
    "rnn/multi_rnn_cell/cell_0/lstm_cell/projection/kernel",
    "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel", "rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias",
    "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel",
    "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias",
    "rnn/multi_rnn_cell/cell_2/basic_lstm_cell/kernel", "rnn/multi_rnn_cell/cell_2/basic_lstm_cell/bias",
    "rnn/multi_rnn_cell/cell_3/basic_rnn_cell/kernel", "rnn/multi_rnn_cell/cell_3/basic_rnn_cell/bias",
]


def test_tf_variable_names_follow_tf1(rng):
    cell = _multi(np.float32, rng)
    names = convert.tf_variable_names(cell)
    assert sorted(names.values()) == sorted(TF1_NAMES)
    assert names["cell_0/projection/kernel"] == "rnn/multi_rnn_cell/cell_0/lstm_cell/projection/kernel"
    tf_vars = convert.to_tf_variables(cell)
    # the GRU reads the projected LSTM output (3 wide): gates/kernel is [3 + 4, 2 * 4]
    assert tf_vars["rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel"].shape == (3 + 4, 8)
    leaf = BasicLSTMCell(4)
    assert convert.tf_variable_names(leaf, "bidirectional_rnn/fw") == {
        "kernel": "bidirectional_rnn/fw/basic_lstm_cell/kernel",
        "bias": "bidirectional_rnn/fw/basic_lstm_cell/bias"}


def test_tf_variables_round_trip_is_exact_and_ignores_other_variables(rng):
    for dtype in (np.float32, np.float64):
        cell = _multi(dtype, rng)
        tf_vars = {k + ":0": v for k, v in convert.to_tf_variables(cell).items()}
        # what a real checkpoint also holds: optimizer slots, a dense head, counters
        tf_vars.update({"rnn/multi_rnn_cell/cell_0/lstm_cell/kernel/Adam": np.ones((8, 20), dtype),
                        "dense/kernel": np.ones((2, 4), dtype), "dense/bias": np.ones(4, dtype),
                        "global_step": np.array(3, np.int64), "beta1_power": np.array(0.9, dtype)})
        back = convert.from_tf_variables(tf_vars, cell)
        _assert_same_params(back, {k: npl.to_numpy(v) for k, v in cell.params.items()})
        fresh = MultiRNNCell([LSTMCell(5, use_peepholes=True, num_proj=3, forget_bias=0.7),
                              GRUCell(4), BasicLSTMCell(3, forget_bias=-0.4), BasicRNNCell(2)])
        fresh.set_params(back)                      # builds the unbuilt cells from the kernels
        assert fresh.input_size == I and fresh.dtype == dtype


def test_from_tf_variables_needs_scope_when_ambiguous(rng):
    fw, bw = _randomize(BasicLSTMCell(3, input_size=I), rng), _randomize(BasicLSTMCell(3, input_size=I), rng)
    tf_vars = {**convert.to_tf_variables(fw, "bidirectional_rnn/fw"),
               **convert.to_tf_variables(bw, "bidirectional_rnn/bw")}
    with pytest.raises(ValueError, match="2 sets.*bidirectional_rnn/bw/basic_lstm_cell/.*"
                                         "bidirectional_rnn/fw/basic_lstm_cell/.*scope="):
        convert.from_tf_variables(tf_vars, BasicLSTMCell(3))
    got = convert.from_tf_variables(tf_vars, BasicLSTMCell(3), scope="bidirectional_rnn/bw")
    _assert_same_params(got, bw.params)
    # wrong sizes and missing variables are named
    with pytest.raises(ValueError, match=r"kernel \(7, 12\) \(expected \(8, 16\)\)"):
        convert.from_tf_variables(tf_vars, BasicLSTMCell(4, input_size=I), scope="bidirectional_rnn/fw")
    with pytest.raises(ValueError, match="missing.*w_f_diag"):
        convert.from_tf_variables(tf_vars, LSTMCell(3, use_peepholes=True), scope="bidirectional_rnn/fw")
    # Keras variable names (kernel [I, 4H] + recurrent_kernel) are not mistaken for TF1's
    keras_w = convert.to_keras(_randomize(BasicLSTMCell(2, input_size=I), rng))   # kernel [4, 8]
    keras_vars = dict(zip(["lstm/lstm_cell/kernel:0", "lstm/lstm_cell/recurrent_kernel:0",
                           "lstm/lstm_cell/bias:0"], keras_w))
    with pytest.raises(ValueError, match=r"lstm/lstm_cell/ \(has a recurrent_kernel: Keras weights, "
                                         r"use from_keras\)"):
        convert.from_tf_variables(keras_vars, BasicLSTMCell(2))


# ============================================================================ Keras / torch round trips
def test_keras_round_trip(rng):
    for dtype in (np.float32, np.float64):
        for cell in (BasicLSTMCell(6, forget_bias=0.8), GRUCell(5), BasicRNNCell(4)):
            cell.build(I, dtype)
            _randomize(cell, rng)
            w = convert.to_keras(cell)
            back = convert.from_keras(w, cell)
            p = cell.params
            if isinstance(cell, LSTMCell):
                # Keras has one bias: b_f + forget_bias is rounded once, so b_f comes back within
                # one unit in the last place of that sum; everything else is exact.
                H = cell.num_units
                f = slice(2 * H, 3 * H)                                   # TF's f block
                err = np.abs(back["bias"][f] - p["bias"][f])
                assert np.all(err <= np.spacing(np.abs(p["bias"][f]) + abs(cell.forget_bias)))
                back["bias"][f] = p["bias"][f]
            _assert_same_params(back, p)
    stack = MultiRNNCell([BasicLSTMCell(6, forget_bias=0.0), GRUCell(3)])
    stack.build(I, np.float32)
    _randomize(stack, rng)
    _assert_same_params(convert.from_keras(convert.to_keras(stack), stack), stack.params)


def test_torch_round_trip_is_exact(rng):
    for dtype in (np.float32, np.float64):
        fw = [LSTMCell(5, num_proj=3, forget_bias=0.9), LSTMCell(5, num_proj=3, forget_bias=-0.3)]
        bw = [LSTMCell(5, num_proj=3, forget_bias=1.7), LSTMCell(5, num_proj=3, forget_bias=0.2)]
        for k, c in enumerate(fw + bw):
            c.build(I if k % 2 == 0 else 6, dtype)
            _randomize(c, rng)
        sd = convert.to_torch(fw, bw)
        assert sd["weight_ih_l1_reverse"].shape == (20, 6) and sd["weight_hr_l0"].shape == (3, 5)
        back_fw, back_bw = convert.from_torch(sd, fw, bw)
        for c, d in zip(fw + bw, back_fw + back_bw):
            _assert_same_params(d, c.params)
        rnn = MultiRNNCell([BasicRNNCell(4), BasicRNNCell(4)])
        rnn.build(I, dtype)
        _randomize(rnn, rng)
        _assert_same_params(convert.from_torch(convert.to_torch(rnn), rnn), rnn.params)


# ============================================================================ refusals
def test_non_equivalent_conversions_raise(rng):
    H = 4
    gru = _randomize(GRUCell(H, input_size=I), rng)
    with pytest.raises(ValueError, match=r"reset_after=True.*AFTER the recurrent matmul.*recurrent bias"):
        convert.from_keras([np.ones((I, 3 * H)), np.ones((H, 3 * H)), np.ones((2, 3 * H))], gru)
    with pytest.raises(ValueError, match=r"reset_after=True"):
        convert.from_keras([np.ones((I, 3 * H)), np.ones((H, 3 * H)), np.ones(3 * H)], gru,
                           reset_after=True)
    for call in (lambda: convert.to_torch(gru),
                 lambda: convert.from_torch({"weight_ih_l0": np.ones((3 * H, I))}, gru)):
        with pytest.raises(ValueError, match=r"torch\.nn\.GRU is not equivalent.*"
                                             r"n = tanh\(W_in x \+ b_in \+ r \* \(W_hn h \+ b_hn\)\)"
                                             r".*c = tanh\(\[x, r \* h\] @ candidate/kernel"):
            call()
    # a GRU state dict handed to an LSTM cell is recognised by its 3H rows
    with pytest.raises(ValueError, match=r"4 \* H|16 rows.*3H rows: this is a torch\.nn\.GRU"):
        convert.from_torch({"weight_ih_l0": np.ones((3 * H, I)), "weight_hh_l0": np.ones((3 * H, H))},
                           BasicLSTMCell(H))
    peep = _randomize(LSTMCell(H, use_peepholes=True, input_size=I), rng)
    with pytest.raises(ValueError, match="Keras LSTM has no peephole"):
        convert.to_keras(peep)
    with pytest.raises(ValueError, match="torch.nn.LSTM has no peephole"):
        convert.to_torch(peep)
    with pytest.raises(ValueError, match=r"kernel must have shape \[input_size, 16\].*got \(4, 12\)"):
        convert.from_keras([np.ones((I, 12)), np.ones((3, 12)), np.ones(12)], BasicLSTMCell(H))
    with pytest.raises(ValueError, match="unidirectional but cells_bw is given"):
        convert.from_torch(convert.to_torch(_randomize(BasicLSTMCell(H, input_size=I), rng)),
                           BasicLSTMCell(H), BasicLSTMCell(H))


def test_weights_of_a_different_cell_are_refused_not_dropped(rng):
    """Weights that would load into a cell computing something else: the converters refuse them
    (before, each of these loaded without a word and gave outputs off by 0.2-1.7)."""
    H = 4
    # TF1 variables of a peephole / projected LSTMCell offered to a plain one: kernel and bias fit
    # (num_proj == num_units keeps the kernel's shape), the extra weights would be dropped.
    for src, what in ((LSTMCell(H, use_peepholes=True), r"w_f_diag, w_i_diag, w_o_diag.*peepholes"),
                      (LSTMCell(H, num_proj=H), r"projection/kernel.*a projection \(num_proj\)")):
        src.build(I, np.float32)
        tf_vars = convert.to_tf_variables(_randomize(src, rng))
        tf_vars["rnn/lstm_cell/kernel/Adam"] = np.ones((I + H, 4 * H), np.float32)
        for dst in (LSTMCell(H), BasicLSTMCell(H)):
            with pytest.raises(ValueError, match=r"rnn/lstm_cell/ \(has " + what):
                convert.from_tf_variables(tf_vars, dst)
        # the matching cell still loads them (the Adam slot is ignored as before)
        match = LSTMCell(H, use_peepholes=src._use_peepholes, num_proj=src._num_proj)
        _assert_same_params(convert.from_tf_variables(tf_vars, match), src.params)
    # Keras GRU weights without a bias: nothing shows whether they are reset_after=True ones
    w = [_rand(rng, (I, 3 * H), np.float32), _rand(rng, (H, 3 * H), np.float32)]
    with pytest.raises(ValueError, match="without a bias.*reset_after=False if you know"):
        convert.from_keras(w, GRUCell(H))
    with pytest.raises(ValueError, match="without a bias"):
        convert.from_keras(dict(zip(["kernel", "recurrent_kernel"], w)), GRUCell(H))
    got = convert.from_keras(w, GRUCell(H), reset_after=False)
    assert not got["gates/bias"].any() and not got["candidate/bias"].any()
    # from_torch checks the cell's activation as to_torch does
    lstm_sd = convert.to_torch(_randomize(BasicLSTMCell(H, input_size=I), rng))
    with pytest.raises(ValueError, match="torch.nn.LSTM supports activation tanh only.*'relu'"):
        convert.from_torch(lstm_sd, BasicLSTMCell(H, activation="relu"))
    rnn_sd = convert.to_torch(_randomize(BasicRNNCell(H, input_size=I), rng))
    with pytest.raises(ValueError, match="torch.nn.RNN supports activation tanh or relu only.*'sigmoid'"):
        convert.from_torch(rnn_sd, BasicRNNCell(H, activation="sigmoid"))
    convert.from_torch(rnn_sd, BasicRNNCell(H, activation="relu"))       # nn.RNN(nonlinearity="relu")


def test_torch_state_dict_biases_are_checked(rng):
    """Bias entries of the wrong shape were broadcast over the gates ((1,) or 0-d) or gave NumPy
    errors; one bias of the two missing was read as zeros."""
    H = 4
    cell = _randomize(BasicLSTMCell(H, input_size=I), rng)
    sd = convert.to_torch(cell)
    for key, bad in (("bias_ih_l0", np.float32([0.5])), ("bias_hh_l0", np.float32(0.5)),
                     ("bias_ih_l0", np.zeros(5, np.float32)), ("bias_hh_l0", np.zeros((16, 1), np.float32))):
        with pytest.raises(ValueError, match=r"%s must have shape \(16,\), got %s"
                                             % (key, re.escape(str(np.shape(bad))))):
            convert.from_torch(dict(sd, **{key: bad}), BasicLSTMCell(H))
    for missing, other in (("bias_hh_l0", "bias_ih_l0"), ("bias_ih_l0", "bias_hh_l0")):
        lone = {k: v for k, v in sd.items() if k != missing}
        with pytest.raises(ValueError, match="has %s but not %s.*bias=False" % (other, missing)):
            convert.from_torch(lone, BasicLSTMCell(H))
    no_bias = {k: v for k, v in sd.items() if not k.startswith("bias")}    # torch bias=False
    got = convert.from_torch(no_bias, BasicLSTMCell(H))
    assert np.array_equal(got["bias"][2 * H:3 * H], -np.full(H, 1.0, np.float32))   # -forget_bias
    with pytest.raises(TypeError, match="weight_hh_l0 must be an array.*dict"):
        convert.from_torch(dict(sd, weight_hh_l0={"a": 1}), BasicLSTMCell(H))
    as_list = convert.from_torch(dict(sd, weight_hh_l0=sd["weight_hh_l0"].tolist()), BasicLSTMCell(H))
    assert np.array_equal(as_list["kernel"], cell.params["kernel"])       # same values (as float64)


def test_missing_frameworks_are_named(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match=r"reading a TensorFlow checkpoint needs tensorflow.*npl-rnn\[tf\]"):
        convert.read_tf_checkpoint(str(tmp_path))
    with pytest.raises(ImportError, match=r"to_torch\(tensors=True\) needs torch.*npl-rnn\[torch\]"):
        convert.to_torch(BasicRNNCell(2, input_size=2), tensors=True)


# ============================================================================ live TensorFlow 1
def _tf1_cells(tf, spec, dtype):
    v1 = tf.compat.v1.nn.rnn_cell
    make = {"lstm": lambda a: v1.LSTMCell(a["n"], use_peepholes=a.get("peep", False),
                                          num_proj=a.get("proj"), forget_bias=a["fb"]),
            "basic_lstm": lambda a: v1.BasicLSTMCell(a["n"], forget_bias=a["fb"]),
            "gru": lambda a: v1.GRUCell(a["n"]), "rnn": lambda a: v1.BasicRNNCell(a["n"])}
    return v1.MultiRNNCell([make[k](a) for k, a in spec])


def _npl_cells(spec):
    make = {"lstm": lambda a: LSTMCell(a["n"], use_peepholes=a.get("peep", False),
                                       num_proj=a.get("proj"), forget_bias=a["fb"]),
            "basic_lstm": lambda a: BasicLSTMCell(a["n"], forget_bias=a["fb"]),
            "gru": lambda a: GRUCell(a["n"]), "rnn": lambda a: BasicRNNCell(a["n"])}
    return MultiRNNCell([make[k](a) for k, a in spec])


def _tf_state(tf, s):
    if isinstance(s, LSTMStateTuple):
        return tf.compat.v1.nn.rnn_cell.LSTMStateTuple(tf.constant(s.c), tf.constant(s.h))
    if isinstance(s, tuple):
        return tuple(_tf_state(tf, v) for v in s)
    return tf.constant(s)


def _compare_structs(got, want, tol, what):
    if isinstance(want, tuple):
        for k, (g, w) in enumerate(zip(got, want)):
            _compare_structs(g, w, tol, "%s[%d]" % (what, k))
        return
    assert_close(npl.to_numpy(got), want, tol, what)


def test_tf1_checkpoints_both_directions(tf, tmp_path):
    """TF -> npl: a TF1 graph with random variables is saved by tf.train.Saver and read into npl.
    npl -> TF: npl's weights are written as a checkpoint and restored into a TF1 graph.  Both run
    dynamic_rnn on the same inputs and initial states."""
    v1 = tf.compat.v1
    rng = np.random.default_rng(7)
    spec_a = [("lstm", dict(n=5, peep=True, proj=3, fb=0.7)), ("gru", dict(n=4)),
              ("basic_lstm", dict(n=3, fb=-0.4))]
    spec_b = [("lstm", dict(n=4, peep=True, fb=1.3)), ("rnn", dict(n=3)), ("gru", dict(n=2))]
    runs = {}
    npl_b = _npl_cells(spec_b)
    npl_b.build(I, np.float64)
    _randomize(npl_b, rng)
    ckpt_b = convert.save_tf_checkpoint(npl_b, str(tmp_path / "from_npl"), scope="npl2tf")
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        for name, spec, dtype in (("tf2npl", spec_a, np.float32), ("npl2tf", spec_b, np.float64)):
            x = _rand(rng, (B, T, I), dtype, 1.0)
            s0 = _state(_npl_cells(spec).build(I, dtype), rng, dtype)
            out, st = v1.nn.dynamic_rnn(_tf1_cells(tf, spec, dtype), tf.constant(x),
                                        initial_state=_tf_state(tf, s0), scope=name)
            runs[name] = (x, s0, out, st)
        sess.run(v1.global_variables_initializer())
        vars_a = [v for v in v1.global_variables() if v.name.startswith("tf2npl/")]
        for v in vars_a:                               # every TF variable random, biases included
            v.load(_rand(rng, v.shape.as_list(), np.float32), sess)
        ckpt_a = v1.train.Saver(var_list=vars_a).save(sess, str(tmp_path / "from_tf"))
        vars_b = [v for v in v1.global_variables() if v.name.startswith("npl2tf/")]
        want_names = convert.tf_variable_names(npl_b, "npl2tf").values()
        assert sorted(v.name[:-2] for v in vars_b) == sorted(want_names)
        v1.train.Saver(var_list=vars_b).restore(sess, ckpt_b)
        results = sess.run({k: (r[2], r[3]) for k, r in runs.items()})

    npl_a = _npl_cells(spec_a)
    loaded = convert.load_tf_checkpoint(ckpt_a, npl_a)          # finds the set without a scope
    assert len(loaded) == 6 + 4 + 2 and npl_a.dtype == np.float32
    for name, cell, dtype in (("tf2npl", npl_a, np.float32), ("npl2tf", npl_b, np.float64)):
        x, s0 = runs[name][:2]
        out, st = npl.nn.dynamic_rnn(cell, x, initial_state=s0)
        want_out, want_st = results[name]
        assert_close(npl.to_numpy(out), want_out, TOL[dtype], "%s outputs" % name)
        _compare_structs(st, tuple(want_st), TOL[dtype], "%s state" % name)


def test_dropout_wrapped_cells_convert_under_tf1s_names(tf, tmp_path):
    """TensorFlow's PTB model wraps each layer in a DropoutWrapper, which adds no variable scope:
    the names TF1 gives are the plain cells' (read from a live graph), and every converter sees
    through npl's DropoutWrapper (at the top or around the layers of a stack) to the same
    weights as for the unwrapped cells."""
    v1 = tf.compat.v1
    rc = v1.nn.rnn_cell
    g = tf.Graph()
    with g.as_default():
        tf_cell = rc.DropoutWrapper(rc.MultiRNNCell([
            rc.DropoutWrapper(rc.BasicLSTMCell(4), output_keep_prob=0.5),
            rc.DropoutWrapper(rc.BasicLSTMCell(3), state_keep_prob=0.5)]), input_keep_prob=0.9)
        v1.nn.dynamic_rnn(tf_cell, tf.zeros((2, 3, I)), dtype=tf.float32)
        tf_names = sorted(v.name[:-2] for v in v1.global_variables())
    D = npl.rnn.DropoutWrapper
    rng = np.random.default_rng(11)
    plain = MultiRNNCell([BasicLSTMCell(4, forget_bias=0.3), BasicLSTMCell(3, forget_bias=-0.6)])
    plain.build(I, np.float32)
    _randomize(plain, rng)
    wrapped = D(MultiRNNCell([D(c, output_keep_prob=0.5) for c in plain.cells]), input_keep_prob=0.9)
    assert sorted(convert.tf_variable_names(wrapped).values()) == tf_names
    assert convert.tf_variable_names(wrapped) == convert.tf_variable_names(plain)
    tf_vars = convert.to_tf_variables(wrapped)
    assert sorted(tf_vars) == tf_names
    _assert_same_params(convert.from_tf_variables(tf_vars, wrapped),
                        convert.from_tf_variables(tf_vars, plain))
    ckpt = convert.save_tf_checkpoint(wrapped, str(tmp_path / "wrapped"))
    fresh = D(MultiRNNCell([D(BasicLSTMCell(4, forget_bias=0.3)), D(BasicLSTMCell(3, forget_bias=-0.6))]))
    convert.load_tf_checkpoint(ckpt, fresh)
    _assert_same_params({k: npl.to_numpy(v) for k, v in fresh.params.items()},
                        {k: npl.to_numpy(v) for k, v in plain.params.items()})
    for a, b in zip(convert.to_keras(wrapped), convert.to_keras(plain)):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    one = D(plain.cells[0], output_keep_prob=0.5)
    np.testing.assert_array_equal(convert.to_keras(one)[0], convert.to_keras(plain.cells[0])[0])
    same = MultiRNNCell([BasicLSTMCell(4, forget_bias=0.3), BasicLSTMCell(4)])
    same.build(I, np.float32)
    _randomize(same, rng)
    sd = convert.to_torch(D(MultiRNNCell([D(c) for c in same.cells])))
    ref = convert.to_torch(same)
    assert sorted(sd) == sorted(ref) and all(np.array_equal(sd[k], ref[k]) for k in sd)
    _assert_same_params(convert.from_torch(sd, D(MultiRNNCell([D(c) for c in same.cells]))),
                        convert.from_torch(sd, same))


# ============================================================================ live Keras
def test_keras_layers_match(tf):
    """LSTM, GRU(reset_after=False) and SimpleRNN layers with return_sequences and return_state:
    npl -> Keras in float32 (to_keras(cell, layer=...)) and Keras -> npl in float64 (Keras-layout
    random weights read back with from_keras(layer, cell))."""
    keras = tf.keras
    v1 = tf.compat.v1
    rng = np.random.default_rng(11)
    H = 6
    kw = dict(return_sequences=True, return_state=True)
    lstm = lambda d: keras.layers.LSTM(H, dtype=d, **kw)                       # noqa: E731
    gru = lambda d: keras.layers.GRU(H, reset_after=False, dtype=d, **kw)      # noqa: E731
    rnn = lambda d: keras.layers.SimpleRNN(H, dtype=d, **kw)                   # noqa: E731
    cases = [  # (npl cell, Keras layer factory, direction, dtype)
        (BasicLSTMCell(H, forget_bias=0.8), lstm, "to", np.float32),
        (BasicLSTMCell(H, forget_bias=-1.3), lstm, "from", np.float64),
        (GRUCell(H), gru, "to", np.float32),
        (GRUCell(H), gru, "from", np.float64),
        (BasicRNNCell(H), rnn, "to", np.float64),
    ]
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        built = []
        for cell, factory, direction, dtype in cases:
            layer = factory(np.dtype(dtype).name)
            x = _rand(rng, (B, T, I), dtype, 1.0)
            if isinstance(cell, LSTMCell):
                s0 = LSTMStateTuple(_rand(rng, (B, H), dtype), _rand(rng, (B, H), dtype))
                init = [tf.constant(s0.h), tf.constant(s0.c)]           # Keras order: [h, c]
            else:
                s0 = _rand(rng, (B, H), dtype)
                init = [tf.constant(s0)]
            outs = layer(tf.constant(x), initial_state=init)
            if direction == "to":
                cell.build(I, dtype)
                _randomize(cell, rng)
                convert.to_keras(cell, layer=layer)
            else:
                layer.set_weights([_rand(rng, w.shape, dtype) for w in layer.get_weights()])
                cell.set_params(convert.from_keras(layer, cell))
            built.append((cell, x, s0, outs, direction, dtype))
        results = sess.run([b[3] for b in built])
        # a GRU layer with the TF2 default reset_after=True is refused with the reason
        default_gru = keras.layers.GRU(H)
        default_gru(tf.constant(_rand(rng, (B, T, I), np.float32)))
        with pytest.raises(ValueError, match="reset_after=True.*AFTER the recurrent matmul"):
            convert.from_keras(default_gru, GRUCell(H))
        with pytest.raises(ValueError, match="reset_after=True"):
            convert.to_keras(_randomize(GRUCell(H, input_size=I), rng), layer=default_gru)

    for (cell, x, s0, _, direction, dtype), res in zip(built, results):
        out, st = npl.nn.dynamic_rnn(cell, x, initial_state=s0)
        what = "%s %s %s" % (type(cell).__name__, direction, np.dtype(dtype).name)
        assert_close(npl.to_numpy(out), res[0], TOL[dtype], what + " outputs")
        if isinstance(st, LSTMStateTuple):
            assert_close(npl.to_numpy(st.h), res[1], TOL[dtype], what + " h")
            assert_close(npl.to_numpy(st.c), res[2], TOL[dtype], what + " c")
        else:
            assert_close(npl.to_numpy(st), res[1], TOL[dtype], what + " state")


# ============================================================================ live PyTorch
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_torch_bidirectional_stacked_lstm_from_npl(torch):
    """npl stack_bidirectional_dynamic_rnn == torch.nn.LSTM(num_layers=2, bidirectional=True,
    batch_first=True) after to_torch, float32 and float64, random initial states."""
    rng = np.random.default_rng(3)
    H = 5
    for dtype, tdtype in ((np.float32, torch.float32), (np.float64, torch.float64)):
        fw = [BasicLSTMCell(H, forget_bias=0.6), BasicLSTMCell(H, forget_bias=-0.2)]
        bw = [BasicLSTMCell(H, forget_bias=1.1), BasicLSTMCell(H, forget_bias=0.4)]
        for k, c in enumerate(fw + bw):
            c.build(I if k % 2 == 0 else 2 * H, dtype)
            _randomize(c, rng)
        mod = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True).to(tdtype)
        mod.load_state_dict(convert.to_torch(fw, bw, tensors=True), strict=True)
        x = _rand(rng, (B, T, I), dtype, 1.0)
        h0, c0 = _rand(rng, (4, B, H), dtype), _rand(rng, (4, B, H), dtype)   # [layer*2 + dir, B, H]
        with torch.no_grad():
            y, (hn, cn) = mod(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        init_fw = [LSTMStateTuple(c0[2 * k], h0[2 * k]) for k in range(2)]
        init_bw = [LSTMStateTuple(c0[2 * k + 1], h0[2 * k + 1]) for k in range(2)]
        out, st_fw, st_bw = npl.rnn.stack_bidirectional_dynamic_rnn(
            fw, bw, x, initial_states_fw=init_fw, initial_states_bw=init_bw)
        tol = TOL[dtype]
        assert_close(npl.to_numpy(out), y.numpy(), tol, "outputs")
        for k in range(2):
            assert_close(npl.to_numpy(st_fw[k].h), hn[2 * k].numpy(), tol, "h fw %d" % k)
            assert_close(npl.to_numpy(st_bw[k].h), hn[2 * k + 1].numpy(), tol, "h bw %d" % k)
            assert_close(npl.to_numpy(st_fw[k].c), cn[2 * k].numpy(), tol, "c fw %d" % k)
            assert_close(npl.to_numpy(st_bw[k].c), cn[2 * k + 1].numpy(), tol, "c bw %d" % k)


def test_torch_projected_lstm_and_rnn_to_npl(torch):
    """Random torch.nn.LSTM(proj_size=P, num_layers=2) -> npl MultiRNNCell of LSTMCell(num_proj=P)
    in float64 and float32, and a torch.nn.RNN held inside a Module (state_dict prefix 'rnn.')."""
    rng = np.random.default_rng(5)
    H, P = 6, 3
    for dtype, tdtype in ((np.float64, torch.float64), (np.float32, torch.float32)):
        mod = torch.nn.LSTM(I, H, num_layers=2, proj_size=P, batch_first=True).to(tdtype)
        with torch.no_grad():
            for p in mod.parameters():
                p.copy_(torch.from_numpy(_rand(rng, tuple(p.shape), dtype)))
        cell = MultiRNNCell([LSTMCell(H, num_proj=P, forget_bias=0.9),
                             LSTMCell(H, num_proj=P, forget_bias=0.0)])
        cell.set_params(convert.from_torch(mod.state_dict(), cell))
        x = _rand(rng, (B, T, I), dtype, 1.0)
        h0, c0 = _rand(rng, (2, B, P), dtype), _rand(rng, (2, B, H), dtype)
        with torch.no_grad():
            y, (hn, cn) = mod(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
        s0 = tuple(LSTMStateTuple(c0[k], h0[k]) for k in range(2))
        out, st = npl.nn.dynamic_rnn(cell, x, initial_state=s0)
        tol = TOL[dtype]
        assert_close(npl.to_numpy(out), y.numpy(), tol, "outputs")
        for k in range(2):
            assert_close(npl.to_numpy(st[k].h), hn[k].numpy(), tol, "h %d" % k)
            assert_close(npl.to_numpy(st[k].c), cn[k].numpy(), tol, "c %d" % k)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.RNN(I, 4, batch_first=True)
            self.head = torch.nn.Linear(4, 2)

    net = Net().double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.from_numpy(_rand(rng, tuple(p.shape), np.float64)))
    cell = BasicRNNCell(4)
    cell.set_params(convert.from_torch(net.state_dict(), cell))
    x, h0 = _rand(rng, (B, T, I), np.float64, 1.0), _rand(rng, (1, B, 4), np.float64)
    with torch.no_grad():
        y, hn = net.rnn(torch.from_numpy(x), torch.from_numpy(h0))
    out, st = npl.nn.dynamic_rnn(cell, x, initial_state=h0[0])
    assert_close(npl.to_numpy(out), y.numpy(), TOL[np.float64], "rnn outputs")
    assert_close(npl.to_numpy(st), hn[0].numpy(), TOL[np.float64], "rnn state")


def test_torch_gru_module_is_refused(torch):
    gru = torch.nn.GRU(I, 4, batch_first=True)
    with pytest.raises(ValueError, match=r"torch\.nn\.GRU is not equivalent.*reset gate AFTER"):
        convert.from_torch(gru.state_dict(), GRUCell(4))
