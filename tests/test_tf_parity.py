"""npl against live TensorFlow 1 (graph mode, tf.compat.v1): outputs, final states and gradients.

Every case of :data:`tf_reference.CASES` (all cells and options, heterogeneous MultiRNNCell,
dynamic_rnn batch/time-major, static_rnn, bidirectional and stacked bidirectional RNNs, a single
cell call, sequence_length None / with zero-length rows / unsorted / full, batch 1, T = 1,
float64 and float32, and sequence_mask / boolean_mask / reverse_sequence / embedding_lookup) is
built into ONE TF graph and evaluated in ONE session run (module fixture), with the same random
weights loaded into every TF variable.  The gradients are ``tf.gradients`` of a random linear loss
with respect to the inputs, the initial states and every weight, compared with npl's
``trace.backward`` and ``cell.grads``.  The live values must also equal the stored ones that
``test_tf_stored.py`` replays without TensorFlow.
"""
import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("tf_keras")

import tf_reference as ref  # noqa: E402
from helpers import rel_err  # noqa: E402

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def live():
    """{case name: inputs + TF reference values}, computed once for the module."""
    return ref.run_tf()


@pytest.mark.parametrize("name", [s["name"] for s in ref.CASES])
def test_npl_matches_live_tf(live, name):
    ref.check_case(ref.CASES_BY_NAME[name], live[name])


def test_live_tf_equals_stored_cases(live):
    """Regenerating the reference in memory reproduces tests/data/tf_cases.npz: inputs exactly,
    TF's values to within the last bits (float64 1e-12, float32 1e-6 relative)."""
    meta, stored = ref.load_cases()
    assert meta["cases"] == ref.CASES
    assert sorted(stored) == sorted(live)
    for spec in ref.CASES:
        name = spec["name"]
        a, b = live[name], stored[name]
        assert sorted(a) == sorted(b), name
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (name, k)
            if not k.startswith("ref/") or a[k].dtype.kind in "biu":
                assert np.array_equal(a[k], b[k]), (name, k)
            else:
                assert rel_err(a[k], b[k]) <= ref.STORED_RTOL[spec["dtype"]], (name, k)


def test_every_tf_variable_got_a_weight(live):
    """Each RNN case has a TF gradient for every npl weight (so no weight was left at TF's own
    initial value, and none of npl's names is missing in TF)."""
    for spec in ref.CASES:
        if spec["op"] in ref.ARRAY_OPS:
            continue
        a = live[spec["name"]]
        weights = {k[2:] for k in a if k.startswith("w/")}
        grads = {k[len("ref/dw/"):] for k in a if k.startswith("ref/dw/")}
        assert weights and weights == grads, spec["name"]
