"""npl against TensorFlow 1 reference values stored in ``tests/data/tf_cases.npz`` (no TF needed).

The file is written by ``python tests/tf_reference.py`` (TensorFlow graph mode, the same random
weights loaded into every TF variable); ``test_tf_parity.py`` regenerates it live and checks that
the live and stored values agree.  Each case here is replayed through npl (forward with
``return_trace=True``, ``trace.backward``, ``cell.grads``) and every output, final state and gradient
(inputs, initial states, every weight) must be within float64 1e-9 / float32 1e-5 relative error.
"""
import os

import numpy as np
import pytest

import tf_reference as ref

META, STORED = ref.load_cases()
SPECS = {s["name"]: s for s in META["cases"]}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_npl_matches_stored_tf(name):
    ref.check_case(SPECS[name], STORED[name])


def test_stored_cases_are_the_current_specs_and_inputs():
    """The stored file is not stale: same specs, and inputs equal to what the generator draws."""
    assert META["cases"] == ref.CASES
    for spec in ref.CASES:
        fresh = ref.make_inputs(spec)
        stored = {k: v for k, v in STORED[spec["name"]].items() if not k.startswith("ref/")}
        assert sorted(fresh) == sorted(stored), spec["name"]
        for k, v in fresh.items():
            assert stored[k].dtype == v.dtype and np.array_equal(stored[k], v), (spec["name"], k)


def test_stored_file_is_small_and_plain():
    assert os.path.getsize(ref.DATA_PATH) < 300 * 1024
    with np.load(ref.DATA_PATH, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)


def test_cases_cover_every_cell_option_and_op():
    """The case list really exercises what the parity tests claim to cover."""
    def leaf_cells(cs):
        if isinstance(cs, list):
            return [c for x in cs for c in leaf_cells(x)]
        if cs["type"] == "MultiRNNCell":
            return [c for x in cs["cells"] for c in leaf_cells(x)]
        return [cs]
    seen_types, seen_kw, ops = set(), set(), set()
    batches, times, lengths_kinds = set(), set(), set()
    for s in ref.CASES:
        ops.add((s["op"], s["dtype"]))
        if s["op"] in ref.ARRAY_OPS:
            continue
        for cs in s["cells"].values():
            for c in leaf_cells(cs):
                seen_types.add(c["type"])
                seen_kw |= {k if k != "state_is_tuple" else "state_is_tuple=%s" % v
                            for k, v in c["kwargs"].items()}
        batches.add(s["batch"])
        times.add(s["time"])
        L = s["sequence_length"]
        if L is None:
            lengths_kinds.add("none")
        else:
            lengths_kinds.add("zero" if 0 in L else "nonzero")
            lengths_kinds.add("unsorted" if L != sorted(L) and L != sorted(L, reverse=True) else "sorted")
            lengths_kinds.add("full" if min(L) == s["time"] else "partial")
    assert seen_types == {"BasicRNNCell", "BasicLSTMCell", "LSTMCell", "GRUCell"}
    assert {"use_peepholes", "cell_clip", "num_proj", "proj_clip", "forget_bias",
            "state_is_tuple=False", "activation"} <= seen_kw
    for op in ref.RNN_OPS:
        assert (op, "float64") in ops
        if op != "cell_call":
            assert (op, "float32") in ops
    for op in ref.ARRAY_OPS:
        assert (op, "float64") in ops and (op, "float32") in ops
    assert 1 in batches and 1 in times
    assert {"none", "zero", "unsorted", "full"} <= lengths_kinds
    assert any(s.get("time_major") for s in ref.CASES) and any(
        s.get("time_major") is False for s in ref.CASES)


def _lstm_cases_with(option):
    for s in ref.CASES:
        c = s.get("cells", {}).get("cell")
        if c is not None and c["type"] == "LSTMCell" and c["kwargs"].get(option) is not None:
            yield s, c["kwargs"][option]


def test_reference_cases_really_clip():
    """Clipping cases are not vacuous: TF's final c (cell_clip) / outputs (proj_clip) sit on the
    bound somewhere (rows of length 0 keep their unclipped initial c, so no max-check on c)."""
    n = 0
    for s, clip in _lstm_cases_with("cell_clip"):
        c_final = STORED[s["name"]]["ref/st/cell/0"]
        assert np.isclose(np.abs(c_final), clip, rtol=1e-6).any(), s["name"]
        n += 1
    for s, clip in _lstm_cases_with("proj_clip"):
        y = STORED[s["name"]]["ref/y/0"]
        assert np.isclose(np.abs(y).max(), clip, rtol=1e-6), s["name"]
        assert (np.abs(y) < clip * (1 - 1e-6)).any(), s["name"]
        n += 1
    assert n >= 6


def test_reference_semantics_of_zero_length_rows():
    """TF's own values (no npl): rows of length 0 give zero outputs and final state == initial."""
    n = 0
    for s in ref.CASES:
        if s["op"] != "dynamic_rnn" or not s["sequence_length"] or 0 not in s["sequence_length"]:
            continue
        a = STORED[s["name"]]
        b = s["sequence_length"].index(0)
        y = a["ref/y/0"]
        assert not (y[:, b] if s["time_major"] else y[b]).any(), s["name"]
        k = 0
        while "s0/cell/%d" % k in a:
            np.testing.assert_array_equal(a["ref/st/cell/%d" % k][b], a["s0/cell/%d" % k][b])
            k += 1
        n += 1
    assert n >= 4


@pytest.mark.parametrize("tf_name, expected", [
    ("case/rnn/lstm_cell/kernel:0", ("cell", "kernel")),
    ("case/rnn/basic_lstm_cell/bias:0", ("cell", "bias")),
    ("rnn/lstm_cell/w_f_diag:0", ("cell", "w_f_diag")),
    ("case/rnn/lstm_cell/projection/kernel:0", ("cell", "projection/kernel")),
    ("case/rnn/multi_rnn_cell/cell_0/lstm_cell/kernel:0", ("cell", "cell_0/kernel")),
    ("case/rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias:0", ("cell", "cell_1/candidate/bias")),
    ("bidirectional_rnn/fw/gru_cell/gates/kernel:0", ("fw", "gates/kernel")),
    ("case/bidirectional_rnn/bw/basic_rnn_cell/kernel:0", ("bw", "kernel")),
    ("case/bidirectional_rnn/fw/multi_rnn_cell/cell_0/lstm_cell/bias:0", ("fw", "cell_0/bias")),
    ("stack_bidirectional_rnn/cell_1/bidirectional_rnn/bw/basic_lstm_cell/bias:0", ("bw1", "bias")),
    ("x/stack_bidirectional_rnn/cell_0/bidirectional_rnn/fw/lstm_cell_1/kernel", ("fw0", "kernel")),
])
def test_tf_variable_name_mapping(tf_name, expected):
    assert ref.tf_variable_to_npl(tf_name) == expected


@pytest.mark.parametrize("bad", ["rnn/dense/kernel:0", "rnn/lstm_cell:0",
                                 "stack_bidirectional_rnn/lstm_cell/kernel:0"])
def test_tf_variable_name_mapping_rejects_unknown_names(bad):
    with pytest.raises(ValueError, match="tf_name"):
        ref.tf_variable_to_npl(bad)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_npl_matches_stored_tf_with_prescaled_gates(name, monkeypatch):
    """The same cases with the prescaled-gate forward forced on (npl takes it by itself only when
    T*B is large against the kernel; these cases are small)."""
    import npl.cells
    monkeypatch.setattr(npl.cells, "PRESCALE_MIN_RATIO", 0)
    ref.check_case(SPECS[name], STORED[name])
