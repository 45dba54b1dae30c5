"""TensorFlow 1 reference values for npl's parity tests, and the stored copy of them.

One *case* is a JSON-able spec (see :data:`CASES`) plus a flat dict of arrays:

* inputs, drawn from a NumPy generator seeded by the case name (so they never change):
  ``x`` (or ``tensor`` / ``params`` / ``lengths`` for the array ops), ``sequence_length``,
  ``s0/<slot>/<k>`` (leaf ``k`` of the initial state of cell slot ``<slot>``, flattened like
  ``tf.nest.flatten``: c before h), ``w/<slot>/<name>`` (every weight, under npl's = TF's names
  relative to the cell, e.g. ``cell_0/kernel``, ``gates/bias``, ``projection/kernel``),
  ``dy/<j>`` (cotangent of output leaf ``j``) and ``dst/<slot>/<k>`` (cotangent of final-state leaf);
* reference values computed by TensorFlow: ``ref/y/<j>`` (outputs), ``ref/st/<slot>/<k>`` (final
  states), ``ref/dx`` (gradient w.r.t. the inputs), ``ref/ds0/<slot>/<k>`` (w.r.t. the initial
  state) and ``ref/dw/<slot>/<name>`` (w.r.t. every weight).  The gradients are those of the linear
  loss ``L = sum(dy * outputs) + sum(dst * final_state)`` (``tf.gradients`` with ``grad_ys``).

Cell slots: ``cell`` (dynamic_rnn, static_rnn, a single cell call), ``fw`` / ``bw``
(bidirectional_dynamic_rnn), ``fw0``, ``bw0``, ``fw1``, ... (stacked bidirectional, per layer).

:func:`run_tf` builds every case into ONE TF1 graph (graph mode, ``tf.compat.v1.nn``), loads the
weights through a variable-scope custom getter that maps each TF variable name to an npl name
(:func:`tf_variable_to_npl`) and refuses unknown names or shapes, and evaluates all cases in one
``Session.run``.  :func:`run_npl` replays a case through npl (forward with ``return_trace=True``,
``trace.backward`` and ``cell.grads``) and returns the same ``ref/...`` keys; :func:`compare` gives
the relative error of every key.  TensorFlow is imported only inside :func:`run_tf`, so this module
works without it (``tests/test_tf_stored.py`` replays the stored file).

Run as a script to regenerate the stored file ``tests/data/tf_cases.npz``::

    python tests/tf_reference.py            # needs tensorflow + tf-keras
    python tests/tf_reference.py --check    # also replay through npl and print the worst errors
"""
import json
import os
import re
import sys
import zlib

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import npl  # noqa: E402
from helpers import flatten, unflatten, rel_err  # noqa: E402

DATA_PATH = os.path.join(_HERE, "data", "tf_cases.npz")
FORMAT_VERSION = 1

#: relative tolerance (helpers.rel_err: max abs difference / max abs value) per dtype
RTOL = {"float64": 1e-9, "float32": 1e-5}
#: how close a live regeneration must be to the stored TF values (same TF on another CPU may
#: differ in the last bits; inputs must match exactly)
STORED_RTOL = {"float64": 1e-12, "float32": 1e-6}

RNN_OPS = ("dynamic_rnn", "static_rnn", "bidirectional_dynamic_rnn",
           "stack_bidirectional_dynamic_rnn", "cell_call")
ARRAY_OPS = ("sequence_mask", "boolean_mask", "reverse_sequence", "embedding_lookup")


# ============================================================================ case specs
def cell(type_, num_units, **kwargs):
    """Spec of a leaf cell: constructor name in tf.compat.v1.nn.rnn_cell / npl.rnn, and kwargs
    shared by both (``activation`` is a name: tf.nn.<name> / npl's activation of that name)."""
    return {"type": type_, "num_units": num_units, "kwargs": kwargs}


def multi(*cells):
    return {"type": "MultiRNNCell", "cells": list(cells)}


def rnn_case(name, op, cells, batch, time, depth, dtype="float64", time_major=False,
             sequence_length=None, initial_state=True, d_outputs=True, d_state=True,
             none_steps=(), wscale=0.5):
    """Spec of a sequence case.  ``cells``: {slot: cell spec} (for the stacked case {"fw": [...],
    "bw": [...]}).  ``d_outputs`` / ``d_state`` False pass None as that cotangent; ``none_steps``
    (static_rnn) lists steps whose output cotangent is None."""
    if sequence_length is not None:
        assert len(sequence_length) == batch
    return {"name": name, "op": op, "cells": cells, "batch": batch, "time": time, "depth": depth,
            "dtype": dtype, "time_major": time_major, "sequence_length": sequence_length,
            "initial_state": initial_state, "d_outputs": d_outputs, "d_state": d_state,
            "none_steps": list(none_steps), "wscale": wscale}


def op_case(name, op, dtype="float64", **kw):
    d = {"name": name, "op": op, "dtype": dtype}
    d.update(kw)
    return d


_LSTM_ALL = dict(use_peepholes=True, cell_clip=0.4, num_proj=3, proj_clip=0.3, forget_bias=0.37)
_MULTI = multi(cell("LSTMCell", 4, num_proj=3, use_peepholes=True, forget_bias=0.37),
               cell("GRUCell", 3))

CASES = [
    # ---- dynamic_rnn: every cell and option; batch-major and time-major; lengths
    rnn_case("dyn_basic_rnn", "dynamic_rnn", {"cell": cell("BasicRNNCell", 3)}, 3, 4, 2,
             initial_state=False),
    rnn_case("dyn_basic_rnn_relu_tm_len", "dynamic_rnn",
             {"cell": cell("BasicRNNCell", 4, activation="relu")}, 3, 4, 2, time_major=True,
             sequence_length=[4, 0, 2]),
    rnn_case("dyn_basic_lstm", "dynamic_rnn", {"cell": cell("BasicLSTMCell", 3, forget_bias=0.37)},
             3, 5, 2, sequence_length=[3, 5, 1]),
    rnn_case("dyn_basic_lstm_concat_state_tm", "dynamic_rnn",
             {"cell": cell("BasicLSTMCell", 3, forget_bias=-0.6, state_is_tuple=False)}, 4, 4, 2,
             time_major=True, sequence_length=[2, 0, 4, 1]),
    rnn_case("dyn_lstm_peepholes", "dynamic_rnn",
             {"cell": cell("LSTMCell", 4, use_peepholes=True, forget_bias=0.37)}, 3, 4, 3,
             sequence_length=[4, 2, 3]),
    rnn_case("dyn_lstm_cell_clip", "dynamic_rnn",
             {"cell": cell("LSTMCell", 3, cell_clip=0.3, forget_bias=1.3)}, 3, 4, 2, wscale=1.0),
    rnn_case("dyn_lstm_proj", "dynamic_rnn",
             {"cell": cell("LSTMCell", 4, num_proj=2, forget_bias=0.37)}, 3, 5, 2,
             sequence_length=[5, 3, 0]),
    rnn_case("dyn_lstm_proj_clip", "dynamic_rnn",
             {"cell": cell("LSTMCell", 4, num_proj=3, proj_clip=0.25, forget_bias=0.8)}, 3, 5, 2,
             sequence_length=[1, 5, 4], wscale=1.0),
    rnn_case("dyn_lstm_all_options_tm", "dynamic_rnn", {"cell": cell("LSTMCell", 4, **_LSTM_ALL)},
             4, 5, 3, time_major=True, sequence_length=[3, 0, 5, 2], wscale=0.8),
    rnn_case("dyn_lstm_softsign", "dynamic_rnn",
             {"cell": cell("LSTMCell", 3, activation="softsign", forget_bias=0.2)}, 2, 3, 2),
    rnn_case("dyn_gru", "dynamic_rnn", {"cell": cell("GRUCell", 3)}, 3, 4, 2,
             sequence_length=[2, 4, 3]),
    rnn_case("dyn_gru_full_lengths", "dynamic_rnn", {"cell": cell("GRUCell", 4)}, 3, 4, 2,
             sequence_length=[4, 4, 4]),
    rnn_case("dyn_gru_softsign_tm", "dynamic_rnn",
             {"cell": cell("GRUCell", 3, activation="softsign")}, 2, 3, 2, time_major=True),
    rnn_case("dyn_multi_lstmproj_gru", "dynamic_rnn", {"cell": _MULTI}, 3, 4, 2,
             sequence_length=[4, 0, 2]),
    rnn_case("dyn_multi_lstmproj_gru_tm", "dynamic_rnn", {"cell": _MULTI}, 2, 3, 3, time_major=True),
    rnn_case("dyn_batch1", "dynamic_rnn", {"cell": cell("LSTMCell", 3, use_peepholes=True)}, 1, 4, 2,
             sequence_length=[3]),
    rnn_case("dyn_time1", "dynamic_rnn", {"cell": cell("GRUCell", 3)}, 3, 1, 2,
             sequence_length=[1, 0, 1]),
    rnn_case("dyn_lstm_outputs_loss_only", "dynamic_rnn",
             {"cell": cell("BasicLSTMCell", 2, forget_bias=0.37)}, 2, 3, 2,
             sequence_length=[3, 1], d_state=False),
    rnn_case("dyn_gru_state_loss_only", "dynamic_rnn", {"cell": cell("GRUCell", 2)}, 3, 3, 2,
             sequence_length=[3, 1, 0], d_outputs=False),
    # ---- static_rnn
    rnn_case("static_lstm_peep_proj", "static_rnn",
             {"cell": cell("LSTMCell", 3, use_peepholes=True, num_proj=2, forget_bias=0.37)},
             4, 4, 2, time_major=True, sequence_length=[3, 1, 4, 0], none_steps=[1]),
    rnn_case("static_gru", "static_rnn", {"cell": cell("GRUCell", 3)}, 2, 3, 2, time_major=True),
    rnn_case("static_basic_rnn_time1", "static_rnn", {"cell": cell("BasicRNNCell", 2)}, 2, 1, 3,
             time_major=True),
    # ---- bidirectional_dynamic_rnn
    rnn_case("bidir_lstmproj_gru", "bidirectional_dynamic_rnn",
             {"fw": cell("LSTMCell", 3, num_proj=2, forget_bias=0.37), "bw": cell("GRUCell", 3)},
             3, 4, 2, sequence_length=[4, 0, 2]),
    rnn_case("bidir_basic_lstm_tm", "bidirectional_dynamic_rnn",
             {"fw": cell("BasicLSTMCell", 3, forget_bias=-0.2),
              "bw": cell("BasicLSTMCell", 2, forget_bias=0.37)}, 3, 4, 2, time_major=True),
    rnn_case("bidir_multi_basic_rnn", "bidirectional_dynamic_rnn",
             {"fw": _MULTI, "bw": cell("BasicRNNCell", 3)}, 3, 5, 2, sequence_length=[3, 5, 1]),
    rnn_case("bidir_batch1", "bidirectional_dynamic_rnn",
             {"fw": cell("GRUCell", 2), "bw": cell("LSTMCell", 2, use_peepholes=True)}, 1, 3, 2,
             sequence_length=[2]),
    # ---- stacked bidirectional (tf.contrib.rnn.stack_bidirectional_dynamic_rnn, composed)
    rnn_case("stack_bidir", "stack_bidirectional_dynamic_rnn",
             {"fw": [cell("LSTMCell", 3, use_peepholes=True, forget_bias=0.37), cell("GRUCell", 2)],
              "bw": [cell("GRUCell", 3), cell("BasicLSTMCell", 2, forget_bias=0.6)]},
             3, 4, 2, sequence_length=[4, 0, 3]),
    rnn_case("stack_bidir_tm_zero_state", "stack_bidirectional_dynamic_rnn",
             {"fw": [cell("BasicRNNCell", 2), cell("LSTMCell", 3, num_proj=2)],
              "bw": [cell("BasicLSTMCell", 2), cell("GRUCell", 2)]},
             2, 3, 2, time_major=True, initial_state=False),
    # ---- one step: cell(inputs, state)
    rnn_case("cell_call_lstm_all_options", "cell_call", {"cell": cell("LSTMCell", 4, **_LSTM_ALL)},
             3, 1, 3, wscale=0.8),
    rnn_case("cell_call_gru", "cell_call", {"cell": cell("GRUCell", 3)}, 2, 1, 2),
    rnn_case("cell_call_multi", "cell_call", {"cell": _MULTI}, 2, 1, 2),
    # ---- float32
    rnn_case("f32_dyn_basic_lstm", "dynamic_rnn",
             {"cell": cell("BasicLSTMCell", 3, forget_bias=0.37)}, 3, 5, 2, dtype="float32",
             sequence_length=[3, 5, 1]),
    rnn_case("f32_dyn_lstm_all_options_tm", "dynamic_rnn", {"cell": cell("LSTMCell", 4, **_LSTM_ALL)},
             4, 5, 3, dtype="float32", time_major=True, sequence_length=[3, 0, 5, 2], wscale=0.8),
    rnn_case("f32_dyn_gru", "dynamic_rnn", {"cell": cell("GRUCell", 3)}, 3, 4, 2, dtype="float32",
             sequence_length=[2, 4, 3]),
    rnn_case("f32_dyn_basic_rnn", "dynamic_rnn", {"cell": cell("BasicRNNCell", 3)}, 3, 4, 2,
             dtype="float32", sequence_length=[4, 0, 2]),
    rnn_case("f32_dyn_multi", "dynamic_rnn", {"cell": _MULTI}, 3, 4, 2, dtype="float32",
             sequence_length=[4, 0, 2]),
    rnn_case("f32_static_lstm", "static_rnn", {"cell": cell("LSTMCell", 3, use_peepholes=True)},
             2, 3, 2, dtype="float32", time_major=True, sequence_length=[3, 2]),
    rnn_case("f32_bidir_lstmproj_gru", "bidirectional_dynamic_rnn",
             {"fw": cell("LSTMCell", 3, num_proj=2, forget_bias=0.37), "bw": cell("GRUCell", 3)},
             3, 4, 2, dtype="float32", sequence_length=[4, 0, 2]),
    rnn_case("f32_stack_bidir", "stack_bidirectional_dynamic_rnn",
             {"fw": [cell("LSTMCell", 3, use_peepholes=True, forget_bias=0.37), cell("GRUCell", 2)],
              "bw": [cell("GRUCell", 3), cell("BasicLSTMCell", 2, forget_bias=0.6)]},
             3, 4, 2, dtype="float32", sequence_length=[4, 0, 3]),
    # ---- array ops
    op_case("sequence_mask_2d", "sequence_mask", lengths=[[1, 3, 0], [2, 5, 4]], maxlen=5,
            out_dtype="bool"),
    op_case("sequence_mask_no_maxlen_f32", "sequence_mask", dtype="float32", lengths=[1, 4, 0, 2],
            maxlen=None, out_dtype="float32"),
    op_case("boolean_mask_axis0", "boolean_mask", shape=[3, 4, 2], mask_ndim=2, axis=0),
    op_case("boolean_mask_axis1_f32", "boolean_mask", dtype="float32", shape=[2, 5, 3], mask_ndim=1,
            axis=1),
    op_case("reverse_sequence_time_major", "reverse_sequence", shape=[5, 3, 2], seq_axis=0,
            batch_axis=1, lengths=[5, 0, 2]),
    op_case("reverse_sequence_batch_major_f32", "reverse_sequence", dtype="float32", shape=[3, 4, 2],
            seq_axis=1, batch_axis=0, lengths=[1, 4, 3]),
    op_case("embedding_lookup_2d_ids", "embedding_lookup", vocab=6, dim=3,
            ids=[[0, 2, 2], [5, 0, 1]]),
    op_case("embedding_lookup_f32", "embedding_lookup", dtype="float32", vocab=5, dim=2,
            ids=[4, 4, 1, 0, 4]),
]

CASES_BY_NAME = {c["name"]: c for c in CASES}
assert len(CASES_BY_NAME) == len(CASES), "case names must be unique"


# ============================================================================ spec helpers
def cell_slots(spec):
    """[(slot, cell spec)] in a fixed order."""
    cells = spec["cells"]
    if spec["op"] == "stack_bidirectional_dynamic_rnn":
        out = []
        for k, (f, b) in enumerate(zip(cells["fw"], cells["bw"])):
            out += [("fw%d" % k, f), ("bw%d" % k, b)]
        return out
    if spec["op"] == "bidirectional_dynamic_rnn":
        return [("fw", cells["fw"]), ("bw", cells["bw"])]
    return [("cell", cells["cell"])]


def npl_cell(cspec, dtype):
    """An unbuilt npl cell from a cell spec."""
    if cspec["type"] == "MultiRNNCell":
        return npl.rnn.MultiRNNCell([npl_cell(c, dtype) for c in cspec["cells"]])
    return getattr(npl.rnn, cspec["type"])(cspec["num_units"], dtype=dtype, **cspec["kwargs"])


def _tf_cell(tf, cspec):
    rc = tf.compat.v1.nn.rnn_cell
    if cspec["type"] == "MultiRNNCell":
        return rc.MultiRNNCell([_tf_cell(tf, c) for c in cspec["cells"]])
    kw = dict(cspec["kwargs"])
    if "activation" in kw:
        kw["activation"] = getattr(tf.nn, kw["activation"])
    return getattr(rc, cspec["type"])(cspec["num_units"], **kw)


def _input_widths(spec, cells):
    """Input width of every slot (stacked layers read the concatenated outputs below them)."""
    widths = {}
    for slot, _ in cell_slots(spec):
        k = int(slot[2:]) if spec["op"] == "stack_bidirectional_dynamic_rnn" else 0
        widths[slot] = spec["depth"] if k == 0 else \
            cells["fw%d" % (k - 1)].output_size + cells["bw%d" % (k - 1)].output_size
    return widths


def _seed(name):
    return zlib.crc32(name.encode("utf-8"))


_LEAF_SCOPE = re.compile(r"^(basic_rnn_cell|basic_lstm_cell|lstm_cell|gru_cell)(_\d+)?$")


def tf_variable_to_npl(tf_name):
    """Map a TF variable name to ``(slot, npl_name)``.

    'case/rnn/lstm_cell/kernel:0'                               -> ('cell', 'kernel')
    'case/rnn/multi_rnn_cell/cell_0/lstm_cell/projection/kernel:0' -> ('cell', 'cell_0/projection/kernel')
    'case/bidirectional_rnn/fw/gru_cell/gates/kernel:0'         -> ('fw', 'gates/kernel')
    'case/stack_bidirectional_rnn/cell_1/bidirectional_rnn/bw/basic_lstm_cell/bias:0'
                                                                -> ('bw1', 'bias')
    Anything before the recognised scopes (the case's own scope) is ignored.
    """
    parts = tf_name.split(":")[0].split("/")
    leaf = next((i for i, p in enumerate(parts) if _LEAF_SCOPE.match(p)), None)
    if leaf is None or leaf == len(parts) - 1:
        raise ValueError("tf_name %r has no cell scope (one of basic_rnn_cell, basic_lstm_cell, "
                         "lstm_cell, gru_cell) followed by a variable name" % tf_name)
    name = "/".join(parts[leaf + 1:])
    if leaf >= 2 and parts[leaf - 2] == "multi_rnn_cell" and re.match(r"^cell_\d+$", parts[leaf - 1]):
        name = parts[leaf - 1] + "/" + name
    head = parts[:leaf]
    direction = "fw" if "fw" in head else ("bw" if "bw" in head else None)
    layer = None
    if "stack_bidirectional_rnn" in head:
        j = head.index("stack_bidirectional_rnn")
        m = re.match(r"^cell_(\d+)$", head[j + 1]) if j + 1 < len(head) else None
        if m is None or direction is None:
            raise ValueError("tf_name %r: stack_bidirectional_rnn must be followed by cell_<k> "
                             "and a fw/bw scope" % tf_name)
        layer = int(m.group(1))
    slot = (direction or "cell") + ("" if layer is None else str(layer))
    return slot, name


# ============================================================================ inputs
def make_inputs(spec):
    """The case's input arrays (deterministic in the case name; never depends on TensorFlow)."""
    rng = np.random.default_rng(_seed(spec["name"]))
    dt = np.dtype(spec["dtype"])

    def normal(shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(dt)

    a = {}
    op = spec["op"]
    if op == "sequence_mask":
        a["lengths"] = np.asarray(spec["lengths"], np.int32)
        return a
    if op == "boolean_mask":
        shape = spec["shape"]
        a["tensor"] = normal(shape)
        ax, nd = spec["axis"], spec["mask_ndim"]
        mask = rng.random(shape[ax:ax + nd]) < 0.5
        mask.reshape(-1)[0] = True
        a["mask"] = mask
        n = int(mask.sum())
        a["dy/0"] = normal(tuple(shape[:ax]) + (n,) + tuple(shape[ax + nd:]))
        return a
    if op == "reverse_sequence":
        a["x"] = normal(spec["shape"])
        a["lengths"] = np.asarray(spec["lengths"], np.int64)
        a["dy/0"] = normal(spec["shape"])
        return a
    if op == "embedding_lookup":
        a["params"] = normal((spec["vocab"], spec["dim"]))
        a["ids"] = np.asarray(spec["ids"], np.int64)
        a["dy/0"] = normal(a["ids"].shape + (spec["dim"],))
        return a

    B, T, I = spec["batch"], spec["time"], spec["depth"]
    cells = {slot: npl_cell(c, dt) for slot, c in cell_slots(spec)}
    widths = _input_widths(spec, cells)
    for slot, c in cells.items():
        c.build(widths[slot], dt)
    if op == "cell_call":
        a["x"] = normal((B, I))
    else:
        a["x"] = normal((T, B, I) if spec["time_major"] else (B, T, I))
    if spec["sequence_length"] is not None:
        a["sequence_length"] = np.asarray(spec["sequence_length"], np.int32)
    for slot, c in cells.items():
        if spec["initial_state"] or op == "cell_call":
            for k, z in enumerate(flatten(c.zero_state(B, dt))):
                a["s0/%s/%d" % (slot, k)] = normal(z.shape, 0.5)
        for name in sorted(c.params):
            a["w/%s/%s" % (slot, name)] = normal(c.params[name].shape, spec["wscale"])
    if spec["d_outputs"]:
        for j, shape in enumerate(_output_shapes(spec, cells)):
            if j not in spec["none_steps"]:
                a["dy/%d" % j] = normal(shape)
    if spec["d_state"]:
        for slot, c in cells.items():
            for k, z in enumerate(flatten(c.zero_state(B, dt))):
                a["dst/%s/%d" % (slot, k)] = normal(z.shape)
    return a


def _output_shapes(spec, cells):
    B, T = spec["batch"], spec["time"]
    op = spec["op"]

    def seq(P):
        return (T, B, P) if spec["time_major"] else (B, T, P)
    if op == "cell_call":
        return [(B, cells["cell"].output_size)]
    if op == "dynamic_rnn":
        return [seq(cells["cell"].output_size)]
    if op == "static_rnn":
        return [(B, cells["cell"].output_size)] * T
    if op == "bidirectional_dynamic_rnn":
        return [seq(cells["fw"].output_size), seq(cells["bw"].output_size)]
    n = len(spec["cells"]["fw"]) - 1
    return [seq(cells["fw%d" % n].output_size + cells["bw%d" % n].output_size)]


def _leaves(a, prefix):
    """[a['<prefix>/0'], a['<prefix>/1'], ...] (empty when absent)."""
    out, k = [], 0
    while "%s/%d" % (prefix, k) in a:
        out.append(a["%s/%d" % (prefix, k)])
        k += 1
    return out


def _weights(a, slot):
    pre = "w/%s/" % slot
    return {k[len(pre):]: v for k, v in a.items() if k.startswith(pre)}


# ============================================================================ npl replay
def run_npl(spec, a):
    """Run one case through npl; returns {'ref/...': array} with the same keys as TF's (NumPy).

    The case's arrays (host NumPy) go to the backend in force first (to the GPU under
    NPL_BACKEND=cupy), as a user would move them; the RNNs' sequence lengths stay on the host (npl
    takes them from either)."""
    a = {k: v if k == "sequence_length" else npl.to_device(v) for k, v in a.items()}
    if spec["op"] in ARRAY_OPS:
        return {k: npl.to_numpy(v) for k, v in _NPL_ARRAY_OPS[spec["op"]](spec, a).items()}
    dt = np.dtype(spec["dtype"])
    B, op = spec["batch"], spec["op"]
    cells = {}
    for slot, cs in cell_slots(spec):
        c = npl_cell(cs, dt)
        c.set_params(_weights(a, slot), strict=True)
        cells[slot] = c

    def s0(slot):
        lv = _leaves(a, "s0/" + slot)
        return unflatten(cells[slot].zero_state(B, dt), lv) if lv else None

    def dst(slot, like):
        lv = _leaves(a, "dst/" + slot)
        return unflatten(like, lv) if lv else None

    dys = [a.get("dy/%d" % j) for j in range(len(_output_shapes(spec, cells)))]
    has_dy = spec["d_outputs"]
    L = a.get("sequence_length")
    tm = spec["time_major"]
    res = {}
    if op == "cell_call":
        y, st, tr = cells["cell"](a["x"], s0("cell"), return_trace=True)
        dx, d0 = tr.backward(dys[0], dst("cell", st))
        ys, states, d0s = [y], {"cell": st}, {"cell": d0}
    elif op == "dynamic_rnn":
        y, st, tr = npl.nn.dynamic_rnn(cells["cell"], a["x"], sequence_length=L,
                                       initial_state=s0("cell"), time_major=tm, return_trace=True)
        dx, d0 = tr.backward(dys[0] if has_dy else None, dst("cell", st))
        ys, states, d0s = [y], {"cell": st}, {"cell": d0}
    elif op == "static_rnn":
        ys, st, tr = npl.nn.static_rnn(cells["cell"], list(a["x"]), initial_state=s0("cell"),
                                       sequence_length=L, return_trace=True)
        dxs, d0 = tr.backward(dys if has_dy else None, dst("cell", st))
        dx = np.stack(dxs)
        states, d0s = {"cell": st}, {"cell": d0}
    elif op == "bidirectional_dynamic_rnn":
        (yf, yb), (sf, sb), tr = npl.nn.bidirectional_dynamic_rnn(
            cells["fw"], cells["bw"], a["x"], sequence_length=L, initial_state_fw=s0("fw"),
            initial_state_bw=s0("bw"), time_major=tm, return_trace=True)
        dsf, dsb = dst("fw", sf), dst("bw", sb)
        dx, (d0f, d0b) = tr.backward(tuple(dys) if has_dy else None,
                                     None if dsf is None else (dsf, dsb))
        ys, states, d0s = [yf, yb], {"fw": sf, "bw": sb}, {"fw": d0f, "bw": d0b}
    else:  # stack_bidirectional_dynamic_rnn
        n = len(spec["cells"]["fw"])
        fws = [cells["fw%d" % k] for k in range(n)]
        bws = [cells["bw%d" % k] for k in range(n)]
        init_f = [s0("fw%d" % k) for k in range(n)]
        init_b = [s0("bw%d" % k) for k in range(n)]
        y, sfs, sbs, tr = npl.rnn.stack_bidirectional_dynamic_rnn(
            fws, bws, a["x"], initial_states_fw=init_f if spec["initial_state"] else None,
            initial_states_bw=init_b if spec["initial_state"] else None, sequence_length=L,
            time_major=tm, return_trace=True)
        dsf = tuple(dst("fw%d" % k, sfs[k]) for k in range(n))
        dsb = tuple(dst("bw%d" % k, sbs[k]) for k in range(n))
        dx, (d0f, d0b) = tr.backward(dys[0] if has_dy else None,
                                     (dsf, dsb) if spec["d_state"] else None)
        ys = [y]
        states = dict([("fw%d" % k, sfs[k]) for k in range(n)] + [("bw%d" % k, sbs[k]) for k in range(n)])
        d0s = dict([("fw%d" % k, d0f[k]) for k in range(n)] + [("bw%d" % k, d0b[k]) for k in range(n)])
    for j, y in enumerate(ys):
        res["ref/y/%d" % j] = y
    res["ref/dx"] = dx
    for slot, c in cells.items():
        for k, v in enumerate(flatten(states[slot])):
            res["ref/st/%s/%d" % (slot, k)] = v
        if "s0/%s/0" % slot in a:
            for k, v in enumerate(flatten(d0s[slot])):
                res["ref/ds0/%s/%d" % (slot, k)] = v
        for name, g in c.grads.items():
            res["ref/dw/%s/%s" % (slot, name)] = g.copy()
    return {k: npl.to_numpy(v) for k, v in res.items()}


def _npl_sequence_mask(spec, a):
    dt = bool if spec["out_dtype"] == "bool" else np.dtype(spec["out_dtype"])
    return {"ref/y/0": npl.sequence_mask(a["lengths"], spec["maxlen"], dtype=dt)}


def _npl_boolean_mask(spec, a):
    y, tr = npl.boolean_mask(a["tensor"], a["mask"], axis=spec["axis"], return_trace=True)
    return {"ref/y/0": y, "ref/dx": tr.backward(a["dy/0"])}


def _npl_reverse_sequence(spec, a):
    f = lambda v: npl.reverse_sequence(v, a["lengths"], seq_axis=spec["seq_axis"],  # noqa: E731
                                       batch_axis=spec["batch_axis"])
    return {"ref/y/0": f(a["x"]), "ref/dx": f(a["dy/0"])}   # its own adjoint


def _npl_embedding_lookup(spec, a):
    y, tr = npl.nn.embedding_lookup(a["params"], a["ids"], return_trace=True)
    g = tr.backward(a["dy/0"])
    assert isinstance(g, npl.IndexedSlices), type(g)
    return {"ref/y/0": y, "ref/dx": g.to_dense(), "ref/dense_shape": np.asarray(g.dense_shape, np.int64)}


_NPL_ARRAY_OPS = {"sequence_mask": _npl_sequence_mask, "boolean_mask": _npl_boolean_mask,
                  "reverse_sequence": _npl_reverse_sequence,
                  "embedding_lookup": _npl_embedding_lookup}


# ============================================================================ TensorFlow
def import_tf():
    """TensorFlow with the legacy (tf-keras) RNN cells; the env var must precede the import."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    return tf


def _tf_stack_bidirectional(tf, cells_fw, cells_bw, inputs, initial_states_fw, initial_states_bw,
                            dtype, sequence_length, time_major):
    """tf.contrib.rnn.stack_bidirectional_dynamic_rnn (TF 1.15), which TF 2 no longer ships:
    per layer ``cell_<i>`` a bidirectional_dynamic_rnn over the previous layer's concatenated
    (fw, bw) outputs, all layers with the same sequence_length."""
    v1 = tf.compat.v1
    states_fw, states_bw = [], []
    prev_layer = inputs
    with v1.variable_scope("stack_bidirectional_rnn"):
        for i, (cell_fw, cell_bw) in enumerate(zip(cells_fw, cells_bw)):
            init_fw = initial_states_fw[i] if initial_states_fw else None
            init_bw = initial_states_bw[i] if initial_states_bw else None
            with v1.variable_scope("cell_%d" % i):
                outputs, (state_fw, state_bw) = v1.nn.bidirectional_dynamic_rnn(
                    cell_fw, cell_bw, prev_layer, initial_state_fw=init_fw,
                    initial_state_bw=init_bw, sequence_length=sequence_length, dtype=dtype,
                    time_major=time_major)
                prev_layer = tf.concat(outputs, 2)
            states_fw.append(state_fw)
            states_bw.append(state_bw)
    return prev_layer, tuple(states_fw), tuple(states_bw)


def _tf_rnn_case(tf, spec, a):
    """Build one sequence case in the current graph; returns {key: tensor}."""
    v1 = tf.compat.v1
    dt = tf.as_dtype(spec["dtype"])
    B, op, tm = spec["batch"], spec["op"], spec["time_major"]
    created = {}

    def load_weights(getter, name, *args, **kw):     # TF calls it with getter=, name= keywords
        slot, npl_name = tf_variable_to_npl(name)
        key = "w/%s/%s" % (slot, npl_name)
        if key not in a:
            raise KeyError("TF variable %r (-> %r) has no value in case %r" % (name, key, spec["name"]))
        shape = tuple(tf.TensorShape(kw["shape"]).as_list())
        if shape != a[key].shape:
            raise ValueError("TF variable %r has shape %s but %r has %s"
                             % (name, shape, key, a[key].shape))
        kw["initializer"] = v1.constant_initializer(a[key])
        var = getter(name, *args, **kw)
        created[key] = var
        return var

    with v1.variable_scope(spec["name"], custom_getter=load_weights):
        slots = cell_slots(spec)
        cells = {slot: _tf_cell(tf, cs) for slot, cs in slots}
        x = tf.constant(a["x"])
        L = tf.constant(a["sequence_length"]) if "sequence_length" in a else None
        s0 = {}
        for slot, c in cells.items():
            lv = [tf.constant(v) for v in _leaves(a, "s0/" + slot)]
            s0[slot] = tf.nest.pack_sequence_as(c.zero_state(B, dt), lv) if lv else None
        if op == "cell_call":
            y, st = cells["cell"](x, s0["cell"])
            ys, states = [y], {"cell": st}
        elif op == "dynamic_rnn":
            y, st = v1.nn.dynamic_rnn(cells["cell"], x, sequence_length=L, initial_state=s0["cell"],
                                      dtype=dt, time_major=tm)
            ys, states = [y], {"cell": st}
        elif op == "static_rnn":
            ys, st = v1.nn.static_rnn(cells["cell"], tf.unstack(x), initial_state=s0["cell"],
                                      dtype=dt, sequence_length=L)
            states = {"cell": st}
        elif op == "bidirectional_dynamic_rnn":
            (yf, yb), (sf, sb) = v1.nn.bidirectional_dynamic_rnn(
                cells["fw"], cells["bw"], x, sequence_length=L, initial_state_fw=s0["fw"],
                initial_state_bw=s0["bw"], dtype=dt, time_major=tm)
            ys, states = [yf, yb], {"fw": sf, "bw": sb}
        else:
            n = len(spec["cells"]["fw"])
            init = spec["initial_state"]
            y, sfs, sbs = _tf_stack_bidirectional(
                tf, [cells["fw%d" % k] for k in range(n)], [cells["bw%d" % k] for k in range(n)], x,
                [s0["fw%d" % k] for k in range(n)] if init else None,
                [s0["bw%d" % k] for k in range(n)] if init else None, dt, L, tm)
            ys = [y]
            states = {}
            for k in range(n):
                states["fw%d" % k], states["bw%d" % k] = sfs[k], sbs[k]
        unused = sorted(k for k in a if k.startswith("w/") and k not in created)
        if unused:
            raise ValueError("case %r: weights %s were not used by any TF variable" % (spec["name"], unused))
        out = {}
        grad_ys, targets = [], []
        for j, y in enumerate(ys):
            out["ref/y/%d" % j] = y
            if "dy/%d" % j in a:
                targets.append(y)
                grad_ys.append(tf.constant(a["dy/%d" % j]))
        for slot in cells:
            for k, v in enumerate(tf.nest.flatten(states[slot])):
                out["ref/st/%s/%d" % (slot, k)] = v
                if "dst/%s/%d" % (slot, k) in a:
                    targets.append(v)
                    grad_ys.append(tf.constant(a["dst/%s/%d" % (slot, k)]))
        wrt = {"ref/dx": x}
        for slot in cells:
            if s0[slot] is not None:
                for k, v in enumerate(tf.nest.flatten(s0[slot])):
                    wrt["ref/ds0/%s/%d" % (slot, k)] = v
        for key, var in created.items():
            wrt["ref/dw/" + key[2:]] = var
        grads = tf.gradients(targets, list(wrt.values()), grad_ys=grad_ys)
        for key, g in zip(wrt, grads):
            if g is None:
                raise ValueError("case %r: TF has no gradient for %s" % (spec["name"], key))
            out[key] = tf.convert_to_tensor(g)
    return out


def _tf_op_case(tf, spec, a):
    op = spec["op"]
    with tf.compat.v1.variable_scope(spec["name"]):
        if op == "sequence_mask":
            dt = tf.bool if spec["out_dtype"] == "bool" else tf.as_dtype(spec["out_dtype"])
            return {"ref/y/0": tf.sequence_mask(tf.constant(a["lengths"]), spec["maxlen"], dtype=dt)}
        if op == "boolean_mask":
            t = tf.constant(a["tensor"])
            y = tf.boolean_mask(t, tf.constant(a["mask"]), axis=spec["axis"])
        elif op == "reverse_sequence":
            t = tf.constant(a["x"])
            y = tf.reverse_sequence(t, tf.constant(a["lengths"]), seq_axis=spec["seq_axis"],
                                    batch_axis=spec["batch_axis"])
        else:
            t = tf.constant(a["params"])
            y = tf.compat.v1.nn.embedding_lookup(t, tf.constant(a["ids"]))
        g = tf.gradients([y], [t], grad_ys=[tf.constant(a["dy/0"])])[0]
        out = {"ref/y/0": y, "ref/dx": tf.convert_to_tensor(g)}     # IndexedSlices -> dense
        if op == "embedding_lookup":
            assert isinstance(g, tf.IndexedSlices), type(g)
            out["ref/dense_shape"] = tf.cast(g.dense_shape, tf.int64)
        return out


def run_tf(specs=None):
    """Evaluate every case with TensorFlow: ONE graph, ONE session, ONE ``Session.run``.

    Returns {case name: dict of the case's inputs plus TF's ``ref/...`` values}.
    """
    tf = import_tf()
    specs = CASES if specs is None else specs
    inputs = {s["name"]: make_inputs(s) for s in specs}
    graph = tf.Graph()
    with graph.as_default():
        fetches = {}
        for s in specs:
            build = _tf_op_case if s["op"] in ARRAY_OPS else _tf_rnn_case
            fetches[s["name"]] = build(tf, s, inputs[s["name"]])
        init = tf.compat.v1.global_variables_initializer()
    with tf.compat.v1.Session(graph=graph) as sess:
        sess.run(init)
        values = sess.run(fetches)
    out = {}
    for s in specs:
        d = dict(inputs[s["name"]])
        d.update({k: np.asarray(v) for k, v in values[s["name"]].items()})
        out[s["name"]] = d
    return out


# ============================================================================ compare / store
def compare(spec, got, want):
    """{key: relative error} of npl's values ``got`` against the reference ``want``.

    Keys must match exactly (every TF gradient has an npl counterpart and vice versa); shapes and
    dtypes must match; integer / bool arrays must be equal (error 0 or inf).
    """
    want = {k: v for k, v in want.items() if k.startswith("ref/")}
    if set(got) != set(want):
        raise AssertionError("case %s: npl keys %s != reference keys %s" % (
            spec["name"], sorted(set(got) - set(want)), sorted(set(want) - set(got))))
    errs = {}
    for k, w in want.items():
        g = np.asarray(got[k])
        if g.shape != w.shape or g.dtype != w.dtype:
            raise AssertionError("case %s, %s: npl gives %s %s, TF %s %s"
                                 % (spec["name"], k, g.dtype, g.shape, w.dtype, w.shape))
        if w.dtype.kind in "biu":
            errs[k] = 0.0 if np.array_equal(g, w) else float("inf")
        else:
            errs[k] = rel_err(g, w)
    return errs


def save_cases(cases, path=DATA_PATH, specs=None):
    """Write {name: arrays} to a compressed npz.

    To keep the file small each case is packed into two flat arrays, ``<name>/float`` (float64;
    float32 values are exact in float64) and ``<name>/int`` (int64; bools as 0/1); the JSON string
    ``__meta__`` holds the case specs and, per case, the layout ``[key, dtype, shape]`` in order.
    """
    tf_version = None
    if "tensorflow" in sys.modules:
        tf_version = sys.modules["tensorflow"].__version__
    specs = CASES if specs is None else specs
    layouts, arrays = {}, {}
    for s in specs:
        items = sorted(cases[s["name"]].items())
        layouts[s["name"]] = [[k, str(v.dtype), list(v.shape)] for k, v in items]
        fl = [np.asarray(v, np.float64).ravel() for _, v in items if v.dtype.kind == "f"]
        it = [np.asarray(v, np.int64).ravel() for _, v in items if v.dtype.kind in "biu"]
        arrays[s["name"] + "/float"] = np.concatenate(fl) if fl else np.zeros(0)
        arrays[s["name"] + "/int"] = np.concatenate(it) if it else np.zeros(0, np.int64)
    meta = {"format": FORMAT_VERSION, "tensorflow": tf_version, "numpy": np.__version__,
            "cases": specs, "layouts": layouts}
    arrays["__meta__"] = np.array(json.dumps(meta, sort_keys=True))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_cases(path=DATA_PATH):
    """(meta dict, {name: arrays}) from the stored npz (no pickle: allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError("%s has format %r, expected %d; regenerate it with "
                             "`python tests/tf_reference.py`" % (path, meta.get("format"), FORMAT_VERSION))
        cases = {}
        for s in meta["cases"]:
            fl, it = z[s["name"] + "/float"], z[s["name"] + "/int"]
            d, fo, io = {}, 0, 0
            for key, dtype, shape in meta["layouts"][s["name"]]:
                dt, n = np.dtype(dtype), int(np.prod(shape, dtype=np.int64))
                if dt.kind == "f":
                    d[key] = fl[fo:fo + n].astype(dt).reshape(shape)
                    fo += n
                else:
                    d[key] = it[io:io + n].astype(dt).reshape(shape)
                    io += n
            if fo != fl.size or io != it.size:
                raise ValueError("%s: case %r does not match its layout" % (path, s["name"]))
            cases[s["name"]] = d
    return meta, cases


def check_case(spec, arrays):
    """Replay one case through npl and assert every key is within :data:`RTOL`; returns the
    {key: relative error} dict (used by the live and the stored tests alike)."""
    errs = compare(spec, run_npl(spec, arrays), arrays)
    tol = RTOL[spec["dtype"]]
    bad = {k: e for k, e in errs.items() if not e <= tol}
    assert not bad, "case %s: relative errors above %g: %s" % (
        spec["name"], tol, ", ".join("%s=%.3g" % kv for kv in sorted(bad.items())))
    return errs


def worst_errors(specs, cases):
    """{dtype: (worst relative error, case, key)} of npl against ``cases``."""
    worst = {}
    for s in specs:
        errs = compare(s, run_npl(s, cases[s["name"]]), cases[s["name"]])
        k = max(errs, key=errs.get)
        if errs[k] > worst.get(s["dtype"], (-1,))[0]:
            worst[s["dtype"]] = (errs[k], s["name"], k)
    return worst


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=DATA_PATH, help="where to write the npz (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="replay through npl and print worst errors")
    args = p.parse_args(argv)
    cases = run_tf()
    save_cases(cases, args.out)
    print("wrote %d cases to %s (%d bytes)" % (len(cases), args.out, os.path.getsize(args.out)))
    if args.check:
        for dt, (e, name, key) in sorted(worst_errors(CASES, cases).items()):
            print("%s: worst relative error %.3g (%s, %s), tolerance %g" % (dt, e, name, key, RTOL[dt]))


if __name__ == "__main__":
    main()
