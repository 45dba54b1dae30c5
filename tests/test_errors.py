"""Bad input: every case raises ValueError or TypeError (as the case says) whose message names the
argument and, where there is one, the expected and the actual shape/value; backward twice raises
npl.BackwardTwiceError; a backward rejected for a bad cotangent leaves its trace usable."""
import numpy as np
import pytest

import npl
from helpers import assert_raises_naming, numpy_backend  # noqa: F401  (numpy_backend: autouse)

R, nn, S, L = npl.rnn, npl.nn, npl.LSTMStateTuple, npl.layers
F32, F64 = np.float32, np.float64


def _x(shape=(2, 3, 4), dtype=F64):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _lstm(dtype=F64, **kw):
    c = R.BasicLSTMCell(3, **kw)
    c.build(4, dtype)
    return c


def _gru(dtype=F64, units=3, width=4):
    c = R.GRUCell(units)
    c.build(width, dtype)
    return c


def _multi():
    m = R.MultiRNNCell([R.GRUCell(2), R.BasicRNNCell(2)])
    m.build(4, F64)
    return m


def _zeros_lstm(B=2, H=3, P=3, dtype=F64):
    return S(np.zeros((B, H), dtype), np.zeros((B, P), dtype))


# (id, thunk, exception, substrings the message must contain)
FORWARD_CASES = [
    # inputs
    ("inputs_rank2", lambda: nn.dynamic_rnn(_lstm(), _x((2, 4))), ValueError, ["inputs", "rank 3", "(2, 4)"]),
    ("inputs_rank4", lambda: nn.dynamic_rnn(_lstm(), _x((2, 3, 4, 1))), ValueError, ["inputs", "(2, 3, 4, 1)"]),
    ("inputs_width", lambda: nn.dynamic_rnn(_lstm(), _x((2, 3, 5))), ValueError, ["inputs", "4", "(2, 3, 5)"]),
    ("inputs_width_time_major", lambda: nn.dynamic_rnn(_lstm(), _x((3, 2, 2)), time_major=True),
     ValueError, ["inputs", "4"]),
    ("inputs_int", lambda: nn.dynamic_rnn(_lstm(), np.ones((2, 3, 4), np.int64)), TypeError, ["inputs", "int64"]),
    ("inputs_float16", lambda: nn.dynamic_rnn(R.GRUCell(2), _x().astype(np.float16)), TypeError, ["inputs", "float16"]),
    ("inputs_none", lambda: nn.dynamic_rnn(R.GRUCell(2), None), TypeError, ["inputs"]),
    ("inputs_string", lambda: nn.dynamic_rnn(R.GRUCell(2), "abc"), TypeError, ["inputs"]),
    ("inputs_no_features", lambda: nn.dynamic_rnn(R.GRUCell(2), _x((2, 3, 0))), ValueError,
     ["inputs", "at least one feature", "(2, 3, 0)"]),
    ("step_inputs_rank3", lambda: _lstm()(_x(), _zeros_lstm()), ValueError, ["inputs", "rank 2", "(2, 3, 4)"]),
    ("step_inputs_width", lambda: _lstm()(_x((2, 3)), _zeros_lstm()), ValueError, ["inputs", "4", "(2, 3)"]),
    ("step_inputs_int", lambda: _lstm()(np.ones((2, 4), int), _zeros_lstm()), TypeError, ["inputs"]),
    ("static_inputs_not_list", lambda: nn.static_rnn(_lstm(), _x()), TypeError, ["inputs", "list"]),
    ("static_inputs_empty", lambda: nn.static_rnn(_lstm(), []), TypeError, ["inputs"]),
    ("static_inputs_rank3", lambda: nn.static_rnn(_lstm(), [_x()]), ValueError, ["inputs[0]", "(2, 3, 4)"]),
    ("static_inputs_ragged", lambda: nn.static_rnn(_lstm(), [_x((2, 4)), _x((2, 3))]), ValueError,
     ["inputs[1]", "(2, 3)", "(2, 4)"]),
    ("static_inputs_mixed_dtype", lambda: nn.static_rnn(_lstm(), [_x((2, 4)), _x((2, 4), F32)]), TypeError,
     ["inputs[1]", "float32"]),
    ("bidi_inputs_rank2", lambda: nn.bidirectional_dynamic_rnn(_lstm(), _gru(), _x((3, 4))), ValueError,
     ["inputs", "rank 3"]),
    # sequence_length
    ("len_gt_T", lambda: nn.dynamic_rnn(_lstm(), _x(), [4, 1]), ValueError, ["sequence_length", "3", "4"]),
    ("len_negative", lambda: nn.dynamic_rnn(_lstm(), _x(), [-1, 1]), ValueError, ["sequence_length", "-1"]),
    ("len_float", lambda: nn.dynamic_rnn(_lstm(), _x(), [1.0, 2.0]), TypeError, ["sequence_length", "float64"]),
    ("len_float_fraction", lambda: nn.dynamic_rnn(_lstm(), _x(), [1.5, 2.0]), TypeError, ["sequence_length"]),
    ("len_bool", lambda: nn.dynamic_rnn(_lstm(), _x(), np.array([True, False])), TypeError, ["sequence_length", "bool"]),
    ("len_wrong_batch", lambda: nn.dynamic_rnn(_lstm(), _x(), [1, 2, 3]), ValueError,
     ["sequence_length", "(2,)", "(3,)"]),
    ("len_rank2", lambda: nn.dynamic_rnn(_lstm(), _x(), [[1, 2]]), ValueError, ["sequence_length", "(1, 2)"]),
    ("len_scalar", lambda: nn.dynamic_rnn(_lstm(), _x(), 2), ValueError, ["sequence_length", "()"]),
    ("len_strings", lambda: nn.dynamic_rnn(_lstm(), _x(), ["1", "2"]), TypeError, ["sequence_length"]),
    ("len_gt_T_time_major", lambda: nn.dynamic_rnn(_lstm(), _x((3, 2, 4)), [3, 4], time_major=True),
     ValueError, ["sequence_length", "3", "4"]),
    ("static_len_gt_T", lambda: nn.static_rnn(_lstm(), [_x((2, 4))] * 2, sequence_length=[3, 1]),
     ValueError, ["sequence_length", "2", "3"]),
    ("bidi_len_gt_T", lambda: nn.bidirectional_dynamic_rnn(_lstm(), _gru(), _x(), [4, 1]), ValueError,
     ["sequence_length", "4"]),
    ("bidi_len_negative", lambda: nn.bidirectional_dynamic_rnn(_lstm(), _gru(), _x(), [-2, 1]), ValueError,
     ["sequence_length", "-2"]),
    ("bidi_len_float", lambda: nn.bidirectional_dynamic_rnn(_lstm(), _gru(), _x(), [1.0, 1.0]), TypeError,
     ["sequence_length"]),
    ("stack_len_wrong_batch", lambda: R.stack_bidirectional_dynamic_rnn(
        [_gru()], [_gru()], _x(), sequence_length=[1]), ValueError, ["sequence_length", "(2,)", "(1,)"]),
    # initial_state
    ("state_array_for_lstm_tuple", lambda: nn.dynamic_rnn(_lstm(), _x(), initial_state=np.zeros((2, 6))),
     TypeError, ["initial_state", "LSTMStateTuple", "(2, 6)"]),
    ("state_tuple_of_3_for_lstm", lambda: nn.dynamic_rnn(_lstm(), _x(), initial_state=(np.zeros((2, 3)),) * 3),
     TypeError, ["initial_state", "3"]),
    ("state_tuple_for_gru", lambda: nn.dynamic_rnn(_gru(), _x(), initial_state=_zeros_lstm()),
     TypeError, ["initial_state", "(2, 3)"]),
    ("state_lstm_h_shape", lambda: nn.dynamic_rnn(_lstm(), _x(), initial_state=_zeros_lstm(P=4)),
     ValueError, ["initial_state.h", "(2, 3)", "(2, 4)"]),
    ("state_lstm_c_batch", lambda: nn.dynamic_rnn(_lstm(), _x(), initial_state=_zeros_lstm(B=3)),
     ValueError, ["initial_state.c", "(2, 3)", "(3, 3)"]),
    ("state_flat_lstm_shape", lambda: nn.dynamic_rnn(_lstm(state_is_tuple=False), _x(),
                                                     initial_state=np.zeros((2, 5))),
     ValueError, ["initial_state", "(2, 6)", "(2, 5)"]),
    ("state_gru_shape", lambda: nn.dynamic_rnn(_gru(), _x(), initial_state=np.zeros((2, 4))),
     ValueError, ["initial_state", "(2, 3)", "(2, 4)"]),
    ("state_dtype", lambda: nn.dynamic_rnn(_lstm(), _x(), initial_state=_zeros_lstm(dtype=F32)),
     TypeError, ["initial_state.c", "float32", "float64"]),
    ("state_int", lambda: nn.dynamic_rnn(_gru(), _x(), initial_state=np.zeros((2, 3), int)),
     TypeError, ["initial_state", "int64"]),
    ("multi_state_wrong_length", lambda: nn.dynamic_rnn(_multi(), _x(), initial_state=(np.zeros((2, 2)),)),
     TypeError, ["initial_state", "2", "1"]),
    ("multi_state_not_tuple", lambda: nn.dynamic_rnn(_multi(), _x(), initial_state=np.zeros((2, 2))),
     TypeError, ["initial_state", "(2, 2)"]),
    ("multi_state_inner_shape", lambda: nn.dynamic_rnn(_multi(), _x(),
                                                       initial_state=(np.zeros((2, 2)), np.zeros((2, 3)))),
     ValueError, ["initial_state[1]", "(2, 2)", "(2, 3)"]),
    ("step_state_wrong", lambda: _lstm()(_x((2, 4)), (np.zeros((2, 3)),)), TypeError, ["state"]),
    ("bidi_state_bw_shape", lambda: nn.bidirectional_dynamic_rnn(_lstm(), _gru(), _x(),
                                                                 initial_state_bw=np.zeros((2, 2))),
     ValueError, ["initial_state_bw", "(2, 3)", "(2, 2)"]),
    ("bidi_state_fw_structure", lambda: nn.bidirectional_dynamic_rnn(_lstm(), _gru(), _x(),
                                                                     initial_state_fw=np.zeros((2, 3))),
     TypeError, ["initial_state_fw"]),
    ("stack_states_length", lambda: R.stack_bidirectional_dynamic_rnn(
        [_gru(), _gru(width=6)], [_gru(), _gru(width=6)], _x(), initial_states_fw=[None]),
     ValueError, ["initial_states_fw", "2"]),
    ("stack_state_layer1_shape", lambda: R.stack_bidirectional_dynamic_rnn(
        [_gru(), _gru(width=6)], [_gru(), _gru(width=6)], _x(),
        initial_states_bw=[None, np.zeros((2, 5))]), ValueError, ["initial_states_bw[1]", "(2, 3)", "(2, 5)"]),
    # dtypes
    ("f32_inputs_f64_cell", lambda: nn.dynamic_rnn(_lstm(F64), _x(dtype=F32)), TypeError,
     ["inputs", "float32", "float64"]),
    ("f64_state_f32_inputs", lambda: nn.dynamic_rnn(_gru(F32), _x(dtype=F32), initial_state=np.zeros((2, 3))),
     TypeError, ["initial_state", "float64", "float32"]),
    ("dtype_arg_disagrees", lambda: nn.dynamic_rnn(_gru(F32), _x(dtype=F32), dtype=F64), TypeError,
     ["dtype", "float32", "float64"]),
    ("dtype_arg_int", lambda: nn.dynamic_rnn(_gru(F32), _x(dtype=F32), dtype=np.int32), TypeError,
     ["dtype", "int32"]),
    ("cell_dtype_vs_inputs", lambda: nn.dynamic_rnn(R.GRUCell(2, dtype=F32), _x()), TypeError,
     ["inputs", "float64", "float32"]),
    ("bidi_dtype_arg", lambda: nn.bidirectional_dynamic_rnn(_lstm(), _gru(), _x(), dtype=F32), TypeError,
     ["dtype", "float32"]),
    ("step_mixed_dtype", lambda: _gru(F64)(_x((2, 4), F32), np.zeros((2, 3), F32)), TypeError,
     ["inputs", "float32"]),
    # cells and their arguments
    ("not_a_cell", lambda: nn.dynamic_rnn("lstm", _x()), TypeError, ["cell", "str"]),
    ("not_a_cell_static", lambda: nn.static_rnn(None, [_x((2, 4))]), TypeError, ["cell", "NoneType"]),
    ("not_a_cell_bidi", lambda: nn.bidirectional_dynamic_rnn(_lstm(), object(), _x()), TypeError,
     ["cell_bw", "object"]),
    ("not_a_cell_stack", lambda: R.stack_bidirectional_dynamic_rnn([_gru()], [3], _x()), TypeError,
     ["cells_bw[0]", "int"]),
    ("stack_cells_not_list", lambda: R.stack_bidirectional_dynamic_rnn(_gru(), _gru(), _x()), ValueError,
     ["cells_fw"]),
    ("stack_cells_lengths", lambda: R.stack_bidirectional_dynamic_rnn([_gru(), _gru()], [_gru()], _x()),
     ValueError, ["cells_bw", "2"]),
    ("stack_layer1_width", lambda: R.stack_bidirectional_dynamic_rnn(
        [_gru(), _gru(width=5)], [_gru(), _gru(width=5)], _x()), ValueError, ["layer 1", "5", "6"]),
    ("multi_not_cells", lambda: R.MultiRNNCell([R.GRUCell(2), "gru"]), TypeError, ["cells[1]", "str"]),
    ("multi_empty", lambda: R.MultiRNNCell([]), ValueError, ["MultiRNNCell"]),
    ("multi_same_cell_twice", lambda: (lambda c: R.MultiRNNCell([c, c]))(R.GRUCell(2)), ValueError, ["same cell"]),
    ("activation_unknown", lambda: R.GRUCell(2, activation="swishy"), TypeError, ["activation", "swishy"]),
    ("num_proj_zero", lambda: R.LSTMCell(3, num_proj=0), ValueError, ["num_proj", "0"]),
    ("cell_clip_negative", lambda: R.LSTMCell(3, cell_clip=-1.0), ValueError, ["cell_clip", "-1"]),
    ("proj_clip_without_proj", lambda: R.LSTMCell(3, proj_clip=1.0), ValueError, ["proj_clip", "num_proj"]),
    ("forget_bias_string", lambda: R.BasicLSTMCell(3, forget_bias="1"), TypeError, ["forget_bias"]),
    ("build_width_zero", lambda: R.GRUCell(2).build(0), ValueError, ["input_size", "0"]),
    ("input_size_negative", lambda: R.GRUCell(2, input_size=-3), ValueError, ["input_size", "-3"]),
    ("cell_dtype_int", lambda: R.GRUCell(2, dtype=np.int32), TypeError, ["dtype", "int32"]),
    # embedding_lookup / boolean_mask / sequence_mask / reverse_sequence
    ("ids_too_large", lambda: nn.embedding_lookup(np.zeros((3, 2)), [0, 3]), ValueError, ["ids", "[0, 3)", "3"]),
    ("ids_negative", lambda: nn.embedding_lookup(np.zeros((3, 2)), [-1, 0]), ValueError, ["ids", "-1"]),
    ("ids_float", lambda: nn.embedding_lookup(np.zeros((3, 2)), [0.0, 1.0]), TypeError, ["ids", "float64"]),
    ("ids_bool", lambda: nn.embedding_lookup(np.zeros((3, 2)), [True]), TypeError, ["ids", "bool"]),
    ("embedding_params_rank1", lambda: nn.embedding_lookup(np.zeros(3), [0]), ValueError, ["params", "rank 2", "(3,)"]),
    ("embedding_params_int", lambda: nn.embedding_lookup(np.zeros((3, 2), int), [0]), TypeError, ["params", "int64"]),
    ("embedding_sharded", lambda: nn.embedding_lookup([np.zeros((3, 2))] * 2, [0]), ValueError, ["sharded", "2"]),
    ("mask_shape", lambda: npl.boolean_mask(np.zeros((3, 2)), np.array([True, False])), ValueError,
     ["mask", "(2,)", "(3, 2)"]),
    ("mask_shape_axis1", lambda: npl.boolean_mask(np.zeros((3, 2)), np.array([True, False, True]), axis=1),
     ValueError, ["mask", "(3,)"]),
    ("mask_2d_shape", lambda: npl.boolean_mask(np.zeros((3, 2, 2)), np.ones((3, 3), bool)), ValueError,
     ["mask", "(3, 3)"]),
    ("mask_not_bool", lambda: npl.boolean_mask(np.zeros((3, 2)), np.array([1, 0, 1])), TypeError,
     ["mask", "bool", "int64"]),
    ("mask_scalar", lambda: npl.boolean_mask(np.zeros((3, 2)), np.bool_(True)), ValueError, ["mask", "scalar"]),
    ("mask_axis_out_of_range", lambda: npl.boolean_mask(np.zeros((3, 2)), np.ones(2, bool), axis=2),
     ValueError, ["mask", "axis 2"]),
    ("mask_axis_float", lambda: npl.boolean_mask(np.zeros((3, 2)), np.ones(3, bool), axis=0.0), TypeError,
     ["axis"]),
    ("sequence_mask_float_lengths", lambda: npl.sequence_mask([1.0, 2.0]), TypeError, ["lengths", "float64"]),
    ("sequence_mask_maxlen_negative", lambda: npl.sequence_mask([1], -1), ValueError, ["maxlen", "-1"]),
    ("sequence_mask_maxlen_float", lambda: npl.sequence_mask([1], 2.5), TypeError, ["maxlen", "2.5"]),
    ("reverse_lengths_float", lambda: npl.reverse_sequence(np.zeros((3, 2)), [1.0, 2.0, 0.0], 1, 0), TypeError,
     ["seq_lengths", "float64"]),
    ("reverse_lengths_too_long", lambda: npl.reverse_sequence(np.zeros((3, 2)), [1, 3, 0], 1, 0), ValueError,
     ["seq_lengths", "[0, 2]", "3"]),
    ("reverse_lengths_batch", lambda: npl.reverse_sequence(np.zeros((3, 2)), [1, 2], 1, 0), ValueError,
     ["seq_lengths", "(3,)", "(2,)"]),
    ("reverse_same_axes", lambda: npl.reverse_sequence(np.zeros((3, 2)), [1, 1, 1], 0, 0), ValueError,
     ["seq_axis", "batch_axis"]),
    ("reverse_axis_out_of_range", lambda: npl.reverse_sequence(np.zeros((3, 2)), [1, 1, 1], 2, 0), ValueError,
     ["seq_axis", "2"]),
    ("reverse_no_seq_axis", lambda: npl.reverse_sequence(np.zeros((3, 2)), [1, 1, 1]), ValueError, ["seq_axis"]),
    # a cell reached twice through a wrapper, a nested stack or two layers: its arrays would be
    # listed under two names, and an optimizer step would apply its gradient twice
    ("multi_same_cell_in_wrapper", lambda: (lambda c: R.MultiRNNCell([R.DropoutWrapper(c), c]))(R.GRUCell(2)),
     ValueError, ["same cell", "GRUCell", "cells[0] and cells[1]"]),
    ("multi_same_cell_nested", lambda: (lambda c: R.MultiRNNCell([R.MultiRNNCell([c]), c]))(R.GRUCell(2)),
     ValueError, ["same cell", "cells[0] and cells[1]"]),
    ("multi_same_cell_inside_one", lambda: (lambda c: R.MultiRNNCell([R.MultiRNNCell([R.DropoutWrapper(c), c])]))(
        R.GRUCell(2)), ValueError, ["same cell"]),
    ("sequential_same_cell", lambda: (lambda c: L.Sequential([L.RNN(c), L.RNN(R.DropoutWrapper(c))]))(
        R.BasicLSTMCell(2)), ValueError, ["same cell", "BasicLSTMCell", "layers[0] and layers[1]"]),
    ("cell_clip_string", lambda: R.LSTMCell(3, cell_clip="5"), TypeError, ["cell_clip", "'5'"]),
    ("cell_clip_complex", lambda: R.LSTMCell(3, cell_clip=1 + 1j), TypeError, ["cell_clip", "(1+1j)"]),
    ("forget_bias_complex", lambda: R.BasicLSTMCell(3, forget_bias=1 + 2j), TypeError, ["forget_bias", "(1+2j)"]),
    ("forget_bias_nan", lambda: R.BasicLSTMCell(3, forget_bias=float("nan")), ValueError, ["forget_bias", "nan"]),
    ("seed_negative", lambda: R.GRUCell(3, seed=-1), ValueError, ["seed", "-1"]),
    ("seed_string_layer", lambda: L.Dense(3, seed="a"), TypeError, ["seed", "'a'"]),
    ("global_seed_negative", lambda: npl.set_random_seed(-5), ValueError, ["seed", "-5"]),
    ("keep_prob_string", lambda: R.DropoutWrapper(R.GRUCell(2), input_keep_prob="0.5"), TypeError,
     ["input_keep_prob", "'0.5'"]),
    ("multi_set_params_int_key", lambda: _multi().set_params({1: 2}), TypeError, ["set_params", "1"]),
    ("dense_set_params_complex", lambda: L.Dense(2, input_size=3).set_params(
        {"kernel": np.full((3, 2), 1 + 2j), "bias": np.zeros(2)}), TypeError, ["params['kernel']", "complex"]),
    ("dense_set_params_int", lambda: L.Dense(2, input_size=3).set_params(
        {"kernel": np.ones((3, 2), int), "bias": np.zeros(2)}), TypeError, ["params['kernel']", "int64"]),
    ("dense_set_params_overflow", lambda: L.Dense(2, input_size=3, dtype=F32).set_params(
        {"kernel": np.full((3, 2), 1e39), "bias": np.zeros(2)}), ValueError, ["params['kernel']", "overflow", "float32"]),
    ("cell_set_params_overflow", lambda: (lambda c: c.set_params(
        {k: np.full(v.shape, 5e38) for k, v in c.params.items()}))(R.GRUCell(2, input_size=2, dtype=F32)),
     ValueError, ["params[", "5e+38", "overflow float32"]),
    ("sine_noise_negative", lambda: npl.data.sine_windows(10, noise=-1), ValueError, ["noise", "-1"]),
    ("sine_dt_nan", lambda: npl.data.sine_windows(10, dt=float("nan")), ValueError, ["dt", "nan"]),
    ("sin_to_cos_dt_string", lambda: npl.data.sin_to_cos(3, dt="a"), TypeError, ["dt", "'a'"]),
]


@pytest.mark.parametrize("thunk,exc,words", [c[1:] for c in FORWARD_CASES], ids=[c[0] for c in FORWARD_CASES])
def test_bad_input_raises_clear_error(thunk, exc, words):
    assert_raises_naming(exc, words, thunk)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", None, 3.0])
@pytest.mark.parametrize("cls", [R.BasicRNNCell, R.BasicLSTMCell, R.LSTMCell, R.GRUCell])
def test_num_units_must_be_positive_int(cls, bad):
    with pytest.raises(ValueError) as e:
        cls(bad)
    assert "num_units" in str(e.value) and repr(bad) in str(e.value)


def test_valid_edge_values_are_accepted():
    """The validation is not over-eager: numpy ints, uint lengths, lists, 0 and T all pass."""
    c = R.GRUCell(np.int64(2))
    x = _x()
    nn.dynamic_rnn(c, x, np.array([0, 3], np.uint8))
    nn.dynamic_rnn(c, x.tolist(), [3, 3])
    nn.dynamic_rnn(c, x, np.array([0, 0]))
    nn.embedding_lookup(np.zeros((3, 2)), np.array([], np.int64))
    npl.boolean_mask(np.zeros((3, 2)), np.zeros(3, bool))
    assert npl.sequence_mask(np.array([], np.int64)).shape == (0, 0)


@pytest.mark.parametrize("case", ["mismatched_widths", "mixed_dtypes", "explicit_dtype_ignored"])
def test_multi_rnn_cell_inconsistent_layers(case):
    """Layers of a MultiRNNCell that cannot work together are reported, naming the layer."""
    x = _x()
    if case == "mismatched_widths":
        m = R.MultiRNNCell([R.GRUCell(3, input_size=4, dtype=F64), R.GRUCell(2, input_size=5, dtype=F64)])
    elif case == "mixed_dtypes":
        m = R.MultiRNNCell([R.GRUCell(3, input_size=4, dtype=F64), R.GRUCell(2, input_size=3, dtype=F32)])
    else:
        m = R.MultiRNNCell([R.GRUCell(3), R.GRUCell(2, dtype=F32)])
    with pytest.raises((ValueError, TypeError)) as e:
        nn.dynamic_rnn(m, x)
    msg = str(e.value)
    assert "matmul" not in msg, "a raw NumPy error instead of a validation message: %s" % msg
    assert any(w in msg for w in ("cells[1]", "cell_1", "layer 1")), "the layer is not named: %s" % msg


@pytest.mark.parametrize("bad,exc", [(-1, ValueError), (2.5, TypeError), ("2", TypeError)])
def test_zero_state_bad_batch_size(bad, exc):
    with pytest.raises(exc) as e:
        R.GRUCell(2).zero_state(bad)
    assert "batch_size" in str(e.value)


# ----------------------------------------------------------------------------- traces
def _trace(kind):
    """(trace, good d_outputs, good d_state, list of (bad args, exception, words))."""
    x = _x()
    if kind == "dynamic":
        c = _lstm()
        out, st, tr = nn.dynamic_rnn(c, x, [3, 1], return_trace=True)
        bad = [((np.zeros((2, 3, 2)), None), ValueError, ["d_outputs", "(2, 3, 3)", "(2, 3, 2)"]),
               ((out.astype(F32), None), TypeError, ["d_outputs", "float32", "float64"]),
               ((out[0], None), ValueError, ["d_outputs", "rank 3"]),
               ((out.astype(int), None), TypeError, ["d_outputs", "int64"]),
               ((None, np.zeros((2, 6))), TypeError, ["d_final_state", "LSTMStateTuple"]),
               ((None, S(st.c, np.zeros((2, 2)))), ValueError, ["d_final_state.h", "(2, 3)", "(2, 2)"]),
               ((None, S(st.c.astype(F32), st.h)), TypeError, ["d_final_state.c", "float32"]),
               ((None, (st.c, st.h, st.h)), TypeError, ["d_final_state"])]
        return tr, (out, st), bad
    if kind == "time_major":
        c = _gru()
        out, st, tr = nn.dynamic_rnn(c, x.transpose(1, 0, 2).copy(), time_major=True, return_trace=True)
        bad = [((out.transpose(1, 0, 2), None), ValueError, ["d_outputs", "(3, 2, 3)", "(2, 3, 3)"]),
               ((None, S(st, st)), TypeError, ["d_final_state"])]
        return tr, (out, st), bad
    if kind == "static":
        c = _lstm()
        outs, st, tr = nn.static_rnn(c, [x[:, t] for t in range(3)], return_trace=True)
        bad = [((outs[:2], None), ValueError, ["d_outputs", "3"]),
               ((np.stack(outs), None), ValueError, ["d_outputs", "list"]),
               (([outs[0], np.zeros((2, 2)), None], None), ValueError, ["d_outputs[1]", "(2, 3)", "(2, 2)"]),
               (([None, None, outs[2].astype(F32)], None), TypeError, ["d_outputs[2]", "float32"]),
               ((None, st.c), TypeError, ["d_final_state", "LSTMStateTuple"])]
        return tr, (outs, st), bad
    if kind == "bidirectional":
        cf, cb = _lstm(), _gru(units=2)
        (of, ob), (sf, sb), tr = nn.bidirectional_dynamic_rnn(cf, cb, x, [3, 1], return_trace=True)
        bad = [((of, None), TypeError, ["d_outputs", "pair"]),
               (((ob, ob), None), ValueError, ["d_outputs[0]", "(2, 3, 3)", "(2, 3, 2)"]),
               (((of, of), None), ValueError, ["d_outputs[1]", "(2, 3, 2)", "(2, 3, 3)"]),
               (((of, ob.astype(F32)), None), TypeError, ["d_outputs[1]", "float32"]),
               (((of, ob[0]), None), ValueError, ["d_outputs[1]", "rank 3"]),
               ((None, sf), TypeError, ["d_final_state", "pair", "LSTMStateTuple"]),
               ((None, (sb, sf)), TypeError, ["d_final_state[0]", "LSTMStateTuple"]),
               ((None, (sf, np.zeros((2, 3)))), ValueError, ["d_final_state[1]", "(2, 2)", "(2, 3)"])]
        return tr, ((of, ob), (sf, sb)), bad
    if kind == "stack":
        fw, bw = [_gru(units=2), R.BasicRNNCell(2)], [_gru(), R.BasicLSTMCell(2)]
        out, sf, sb, tr = R.stack_bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[3, 2],
                                                            return_trace=True)
        bad = [((out[:, :, :3], None), ValueError, ["d_outputs", "(2, 3, 4)", "(2, 3, 3)"]),
               ((out[:, :2], None), ValueError, ["d_outputs", "(2, 3, 4)", "(2, 2, 4)"]),
               ((out.astype(F32), None), TypeError, ["d_outputs", "float32"]),
               ((None, (sf[:1], sb)), ValueError, ["d_final_state[0]", "2"]),
               ((None, sf), ValueError, ["d_final_state[0]", "2"]),
               ((None, (sb, sf)), ValueError, ["d_final_state[0][0]", "(2, 2)", "(2, 3)"]),
               ((None, (sf, (sb[0], np.zeros((2, 2))))), TypeError, ["d_final_state[1][1]", "LSTMStateTuple"])]
        return tr, (out, (sf, sb)), bad
    if kind == "step":
        c = _lstm()
        o, s, tr = c(x[:, 0], _zeros_lstm(), return_trace=True)
        bad = [((np.zeros((2, 4)), None), ValueError, ["d_output", "(2, 3)", "(2, 4)"]),
               ((o.astype(F32), None), TypeError, ["d_output", "float32"]),
               ((None, np.zeros((2, 3))), TypeError, ["d_state", "LSTMStateTuple"])]
        return tr, (o, s), bad
    if kind == "boolean_mask":
        t = _x((3, 2))
        o, tr = npl.boolean_mask(t, np.array([True, False, True]), return_trace=True)
        bad = [((o[:1],), ValueError, ["d_output", "(2, 2)", "(1, 2)"]),
               ((o.astype(F32),), TypeError, ["d_output", "float32"])]
        return tr, (o,), bad
    if kind == "embedding":
        o, tr = nn.embedding_lookup(_x((4, 2)), np.array([0, 3, 3]), return_trace=True)
        bad = [((o[:2],), ValueError, ["d_output", "(3, 2)", "(2, 2)"]),
               ((o.astype(F32),), TypeError, ["d_output", "float32"])]
        return tr, (o,), bad
    raise AssertionError(kind)


TRACE_KINDS = ["dynamic", "time_major", "static", "bidirectional", "stack", "step", "boolean_mask",
               "embedding"]


@pytest.mark.parametrize("kind", TRACE_KINDS)
def test_backward_twice_raises(kind):
    tr, good, _ = _trace(kind)
    tr.backward(*good)
    with pytest.raises(npl.BackwardTwiceError) as e:
        tr.backward(*good)
    assert isinstance(e.value, RuntimeError) and isinstance(e.value, ValueError)
    assert "backward was already called" in str(e.value)
    with pytest.raises(npl.BackwardTwiceError):     # also with other arguments
        tr.backward(*[None] * len(good)) if kind not in ("boolean_mask", "embedding") else tr.backward(good[0])


def _bad_cases():
    out = []
    for kind in TRACE_KINDS:
        _, _, bad = _trace(kind)
        out.extend((kind, k) for k in range(len(bad)))
    return out


@pytest.mark.parametrize("kind,k", _bad_cases())
def test_backward_bad_cotangent(kind, k):
    tr, _, bad = _trace(kind)
    args, exc, words = bad[k]
    assert_raises_naming(exc, words, tr.backward, *args)


@pytest.mark.parametrize("kind", TRACE_KINDS)
def test_rejected_backward_leaves_trace_usable(kind):
    """A backward refused for a bad cotangent consumes nothing: the trace still works, and gives
    the same result as a fresh trace."""
    tr, good, bad = _trace(kind)
    for args, exc, _ in bad:
        with pytest.raises(exc):
            tr.backward(*args)
    tr.backward(*good)


def test_dropout_masks_must_be_arrays():
    c = R.DropoutWrapper(_gru(), output_keep_prob=0.5, seed=1)
    x = _x()
    nn.dynamic_rnn(c, x)
    c.replay = True
    c.masks = dict(c.masks, output=c.masks["output"].tolist())
    with pytest.raises(TypeError, match=r"masks\['output'\] must be a numpy array of shape \(3, 2, 3\).*list"):
        nn.dynamic_rnn(c, x)


# ----------------------------------------------------------------------------- stale traces
STALE_KINDS = ["dynamic", "time_major", "static", "bidirectional", "stack", "step"]


@pytest.mark.parametrize("how", ["set_params", "build"])
@pytest.mark.parametrize("kind", STALE_KINDS)
def test_backward_after_the_weights_were_replaced_raises(kind, how):
    """A trace whose cell got new weights (set_params, build) between its forward and its backward
    would mix the old gates with the new weights (dx off by ~1 before); it raises instead, before
    any gradient is accumulated, and a new forward works."""
    tr, good, _ = _trace(kind)
    cell = tr.records[0].cell                        # the bottom (or forward) layer's cell
    grads = [g.copy() for r in tr.records for g in r.cell.grads.values()]
    if how == "set_params":
        cell.set_params({k: v + 0.5 for k, v in cell.params.items()})
    else:
        cell.build(cell.input_size, cell.dtype)
    with pytest.raises(npl.StaleTraceError, match="weights of .* were replaced.*forward again"):
        tr.backward(*good)
    assert all(np.array_equal(a, g) for a, g in zip(grads, [g for r in tr.records for g in r.cell.grads.values()]))
    tr2, good2, _ = _trace(kind)                     # unrelated fresh cells still work
    tr2.backward(*good2)


def test_layer_traces_see_replaced_weights():
    x = _x((2, 3, 4), F32)
    rnn = L.RNN(R.MultiRNNCell([R.GRUCell(3), R.BasicLSTMCell(2)]))
    dense = L.Dense(2)
    model = L.Sequential([rnn, dense])
    y, tr = model.forward(x)
    dense.set_params(dense.params)
    with pytest.raises(npl.StaleTraceError, match="Dense 'dense'"):
        tr.backward(np.ones_like(y))
    y, tr = model.forward(x)
    rnn.set_params(rnn.params)                       # the RNN layer writes into the stack's cells
    with pytest.raises(npl.StaleTraceError, match="GRUCell"):
        tr.backward(np.ones_like(y))
    y, tr = model.forward(x)
    tr.backward(np.ones_like(y))                     # no change since its forward: runs


def test_rejected_layer_backward_changes_nothing():
    """Sequential/Dense/RNN layer traces check their cotangents before anything is spent or
    accumulated (before, a bad d_final_state left Dense's kernel gradient added and the trace spent)."""
    x = _x((2, 3, 4), F32)
    dense = L.Dense(2)
    model = L.Sequential([L.RNN(R.BasicLSTMCell(3)), dense])
    y, tr = model.forward(x)
    st = tr.final_state[0]
    bad_state = (S(np.zeros((3, 3), F32), st.h),)
    for args, exc in (((np.ones((2, 3, 3), F32),), ValueError), ((np.ones_like(y, F64),), TypeError),
                      ((np.ones_like(y), bad_state), ValueError), ((np.ones_like(y), st), TypeError)):
        with pytest.raises(exc):
            tr.backward(*args)
        assert not model.grads["dense/kernel"].any()
    tr.backward(np.ones_like(y), (S(np.ones_like(st.c), np.ones_like(st.h)),))
    assert model.grads["dense/kernel"].any()
    d_y = np.ones((2, 2), F32)
    out, dtr = dense.forward(np.ones((2, 3), F32))
    with pytest.raises(ValueError, match="d_output"):
        dtr.backward(np.ones((2, 5), F32))
    dtr.backward(d_y)                                # still usable after the rejected call
