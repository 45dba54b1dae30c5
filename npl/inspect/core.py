"""Views of a trace: gates, states and BPTT gradients per layer and time step.

Every array returned here is NumPy (a host copy when the model runs on CuPy), with named axes

    AXES = ("time", "batch", "unit")          shape [T, B, H]   (or [T, B, P] for h with a projection)

where ``T`` is the number of steps the forward computed (``max(sequence_length)``).  Array index
``k`` holds step ``t = k + 1`` of the sequence (docs/bptt.md numbers steps 1..T, with h_0, c_0 the
initial state): ``h[k]``, ``c[k]`` are the states *after* that step (``h[k]`` is the output of
that step) and ``d_h[k]`` is dL/dh_t.  ``step(k)`` takes an array index; the tidy summary rows and
the plots show ``t`` = 1..T.  The initial state is ``h0`` / ``c0`` ([B, ...]).  ``valid[k, b]``
is False where the step lies past row ``b``'s sequence_length: there the cell carried its state
through unchanged, its gate values were computed but discarded, and its gate gradients are zero.

Gate names follow TensorFlow, in TensorFlow's order, whatever the engine's internal layout (the
block order of the engine's gate slab is ``npl.gates.LSTM_INTERNAL_ORDER``):

* LSTM (``BasicLSTMCell``, ``LSTMCell``): ``i`` input gate, ``j`` candidate (new input, after the
  activation), ``f`` forget gate (``sigmoid(a_f + forget_bias)``, the bias included), ``o`` output
  gate.
* GRU (``GRUCell``, ``GRUBlockCell``, ``GRUBlockCellV2``): ``r`` reset, ``u`` update, ``candidate``
  (``act([x, r*h] @ W_c + b_c)``).
* ``BasicRNNCell``: its one "gate" is the new state itself, named ``h``.
* ``LayerNormBasicLSTMCell``: ``i``, ``j``, ``f``, ``o`` after their layer norms (its
  ``gate_layout``); its ``d_gates`` are with respect to the kernel's product, before the norm.
* your own cell: give its class a ``gate_layout = (("i", "sigmoid"), ("j", "tanh"), ...)``, the
  blocks of its ``gates`` slab in order (see examples/custom_cell.py).

Gradients (after ``trace.record_state_grads()`` and ``trace.backward(...)``):

* ``d_h[k]`` = dL/dh_t, the *total* gradient with respect to the state after step t (from the
  output at t and from every later step), ``d_c[k]`` = dL/dc_t for LSTMs (also total: through
  step t+1 and through h_t = o_t * act(c_t));
* ``d_gates()[name][k]`` = dL/da_t, the gradient with respect to the gate's pre-activation;
* ``weight_grad_contributions()[param][k]``: what step t adds to ``cell.grads[param]`` (for the
  kernel ``concat(x_t, h_{t-1})^T @ dL/da_t`` with the gate columns in TF order).  Summed over
  the steps they equal ``cell.grads`` (when the gradients were zero before the backward).
"""
import numpy as np

from ..backend import to_numpy
from .. import activations as _act
from ..gates import LSTM_INTERNAL_ORDER

__all__ = ["AXES", "TraceInspector", "LayerInspector", "inspect_trace", "format_table",
           "saturated"]

AXES = ("time", "batch", "unit")
_TF_LSTM_GATES = ("i", "j", "f", "o")


# ------------------------------------------------------------------------------------ helpers
def _check_index(value, n, name, what):
    """An index into a range of ``n`` (negative counts from the end), or ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError("%s must be an integer, got %r" % (name, value))
    v = int(value)
    if not -n <= v < n:
        if n == 0:
            raise ValueError("%s %d does not exist: %s is empty" % (name, v, what))
        raise ValueError("%s must be in range [0, %d) (or -%d..-1 from the end) for %s, got %d"
                         % (name, n, n, what, v))
    return v % n


def saturated(values, activation, threshold=0.1):
    """Boolean array: where an activation's output sits in its flat region.

    sigmoid: ``v < threshold`` or ``v > 1 - threshold`` (Karpathy et al.'s 0.1 / 0.9 rule: the
    derivative ``v (1 - v)`` is below 0.09 there); tanh and softsign: ``|v| > 1 - 2 threshold`` (the
    same pre-activation, since tanh(a) = 2 sigmoid(2a) - 1); relu: ``v <= 0`` (no gradient);
    identity: never.
    """
    name = _act.get(activation).name
    v = np.asarray(values)
    if name == "sigmoid":
        return (v < threshold) | (v > 1 - threshold)
    if name in ("tanh", "softsign"):
        return np.abs(v) > 1 - 2 * threshold
    if name == "relu":
        return v <= 0
    return np.zeros(v.shape, bool)


def format_table(rows, columns=None, floatfmt="%.4g"):
    """A plain-text table of a list of dicts (the tidy summaries); columns default to the keys of
    the first row, in order."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, (float, np.floating)):
            return floatfmt % v
        return str(v)
    cells = [[str(c) for c in columns]] + [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[k]) for row in cells) for k in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _outer_per_step(a, d):
    """sum_b a[t, b, :]^T d[t, b, :] for every t: [T, B, m], [T, B, n] -> [T, m, n]."""
    return np.matmul(a.transpose(0, 2, 1), d)                 # [T, m, B] @ [T, B, n]


# ------------------------------------------------------------------------------------ layers
class LayerInspector:
    """One layer of a trace (one :class:`npl.cells.LayerRecord`), with named, time-major arrays.

    Attributes: ``label``, ``cell``, ``kind`` ("lstm", "gru", "rnn" or "custom"), ``steps`` (T),
    ``batch_size`` (B), ``num_units`` (H), ``output_size`` (P), ``input_size`` (I), ``gate_names``.
    Axes of every [T, B, ...] array: :data:`AXES`.
    """

    def __init__(self, record, label="layer 0"):
        from ..cells import LSTMCell, GRUCell, BasicRNNCell
        self.record = record
        self.label = label
        self.cell = cell = record.cell
        self._x = to_numpy(record.x)
        self.steps, self.batch_size, self.input_size = self._x.shape
        H = self.num_units = cell.num_units
        self.output_size = cell.output_size
        act = getattr(cell, "_activation", _act.tanh)
        if isinstance(cell, LSTMCell):
            self.kind = "lstm"
            # block k of the engine's gate slab holds TF gate LSTM_INTERNAL_ORDER[k] (npl/gates.py)
            blocks = {_TF_LSTM_GATES[tf_k]: k for k, tf_k in enumerate(LSTM_INTERNAL_ORDER)}
            spec = [("i", "sigmoid"), ("j", act), ("f", "sigmoid"), ("o", "sigmoid")]
        elif isinstance(cell, GRUCell):
            self.kind = "gru"
            blocks = {"r": 0, "u": 1, "candidate": 2}
            spec = [("r", "sigmoid"), ("u", "sigmoid"), ("candidate", act)]
        elif isinstance(cell, BasicRNNCell):
            self.kind = "rnn"
            blocks = {"h": 0}
            spec = [("h", act)]
        else:
            layout = getattr(cell, "gate_layout", None)
            if not layout:
                raise TypeError("cannot name the gates of %s: give the class a gate_layout, e.g. "
                                "gate_layout = (('i', 'sigmoid'), ('j', 'tanh'), ('o', 'sigmoid')), "
                                "the blocks of its 'gates' slab in order" % type(cell).__name__)
            self.kind = "custom"
            blocks = {name: k for k, (name, _) in enumerate(layout)}
            spec = [(name, a) for name, a in layout]
        self.gate_names = tuple(name for name, _ in spec)
        self._gate_act = {name: _act.get(a) for name, a in spec}
        self._gate_cols = {name: slice(blocks[name] * H, (blocks[name] + 1) * H) for name in blocks}
        self._cache = {}

    def __repr__(self):
        return ("<LayerInspector %r: %s, T=%d, B=%d, H=%d, gates %s, %s>"
                % (self.label, type(self.cell).__name__, self.steps, self.batch_size, self.num_units,
                   ",".join(self.gate_names),
                   "backpropagated" if self.backpropagated else "forward only"))

    # -- the record's slabs as NumPy arrays (views for NumPy traces, host copies for CuPy ones)
    def _slab(self, key):
        if key not in self._cache:
            self._cache[key] = to_numpy(self.record.slabs[key])
        return self._cache[key]

    def _by_gate(self, slab):
        return {name: slab[:, :, self._gate_cols[name]].copy() for name in self.gate_names}

    # -- forward values
    @property
    def valid(self):
        """[T, B] bool: True where step t is within row b's sequence_length."""
        if self.record.mask is None:
            return np.ones((self.steps, self.batch_size), bool)
        return to_numpy(self.record.mask)[:, :, 0].copy()

    @property
    def x(self):
        """[T, B, I] the layer's inputs (time-major)."""
        return self._x.copy()

    def gates(self):
        """dict gate name -> [T, B, H] activated gate values, in TensorFlow's order and names."""
        return self._by_gate(self._slab("gates"))

    def gate(self, name):
        """[T, B, H] values of one gate (see :attr:`gate_names`)."""
        if name not in self.gate_names:
            raise ValueError("gate must be one of %s for %s, got %r"
                             % (list(self.gate_names), type(self.cell).__name__, name))
        return self._slab("gates")[:, :, self._gate_cols[name]].copy()

    @property
    def gate_activations(self):
        """dict gate name -> the npl.activations.Activation applied to it."""
        return dict(self._gate_act)

    @property
    def h(self):
        """[T, B, P]: h_t, the state / output after each step (carried where not ``valid``)."""
        return self._slab("h")[1:].copy()

    @property
    def h0(self):
        """[B, P]: the initial h."""
        return self._slab("h")[0].copy()

    @property
    def has_cell_state(self):
        return "c" in self.record.slabs

    @property
    def c(self):
        """[T, B, H]: the LSTM cell state c_t after each step."""
        self._need_c("c")
        return self._slab("c")[1:].copy()

    @property
    def c0(self):
        """[B, H]: the initial LSTM cell state."""
        self._need_c("c0")
        return self._slab("c")[0].copy()

    def _need_c(self, what):
        if not self.has_cell_state:
            raise ValueError("%s: %s has no cell state c (only LSTMs do); its state is h"
                             % (what, type(self.cell).__name__))

    def saturation(self, threshold=0.1):
        """dict gate name -> [T, B, H] bool, True where the gate is saturated (see :func:`saturated`)."""
        g = self.gates()
        return {n: saturated(g[n], self._gate_act[n], threshold) for n in self.gate_names}

    # -- gradients
    @property
    def backpropagated(self):
        return self.record.d_gates is not None

    @property
    def has_state_grads(self):
        return self.record.d_h is not None

    def _need_backward(self, what):
        if not self.backpropagated:
            raise ValueError("%s: this trace has not been backpropagated yet (%s). Call "
                             "trace.record_state_grads() and then trace.backward(d_outputs, "
                             "d_final_state) first; gates, c and h are available without it"
                             % (what, self.label))

    def _need_state_grads(self, what):
        self._need_backward(what)
        if not self.has_state_grads:
            raise ValueError("%s: the backward ran without trace.record_state_grads(), so dL/dh_t "
                             "and dL/dc_t were not kept (%s). Run the forward again and call "
                             "trace.record_state_grads() before trace.backward(...)" % (what, self.label))

    @property
    def d_h(self):
        """[T, B, P]: dL/dh_t, the total gradient with respect to the state after step t."""
        self._need_state_grads("d_h")
        return to_numpy(self.record.d_h).copy()

    @property
    def d_c(self):
        """[T, B, H]: dL/dc_t for an LSTM (total gradient with respect to the cell state)."""
        self._need_c("d_c")
        self._need_state_grads("d_c")
        return to_numpy(self.record.d_c).copy()

    @property
    def d_h_norm(self):
        """[T, B]: ||dL/dh_t|| over the unit axis, per batch row."""
        return np.linalg.norm(self.d_h, axis=2)

    @property
    def d_c_norm(self):
        """[T, B]: ||dL/dc_t|| over the unit axis, per batch row."""
        return np.linalg.norm(self.d_c, axis=2)

    def d_gates(self):
        """dict gate name -> [T, B, H]: dL/da_t, the gradient at the gate's pre-activation."""
        self._need_backward("d_gates")
        return self._by_gate(to_numpy(self.record.d_gates))

    @property
    def has_weight_contributions(self):
        """True when :meth:`weight_grad_contributions` knows this cell's parameter layout: the
        built-in cells, and custom cells whose only parameters are ``kernel`` [I+P, G] (columns in
        the order of the ``gates`` slab) and ``bias`` [G]."""
        if self.kind != "custom":
            return True
        shapes = {k: tuple(v.shape) for k, v in self.cell.params.items()}
        width = self.record.slabs["gates"].shape[2]
        return (set(shapes) == {"kernel", "bias"}
                and shapes["kernel"] == (self.input_size + self.output_size, width))

    def weight_grad_contributions(self):
        """dict parameter name -> [T, *shape]: step t's contribution to ``cell.grads[name]``.

        Built from the saved ``d_gates``, inputs and states (TF parameter names and layouts):

            kernel[t]   = concat(x_t, h_{t-1})^T @ dL/da_t      [I+P, B] @ [B, G], gate cols in TF order
            bias[t]     = sum_b dL/da_t
        LSTM peepholes: w_i_diag[t] = sum_b dL/da_i * c_{t-1}, w_f_diag likewise, w_o_diag with c_t;
        LSTM projection: projection/kernel[t] = m_t^T @ dL/dh_t (masked and clipped as in the
        forward), m_t = o_t * act(c_t) (needs ``record_state_grads``); GRU: gates/kernel from
        concat(x_t, h_{t-1}), candidate/kernel from concat(x_t, r_t * h_{t-1}).
        """
        self._need_backward("weight_grad_contributions")
        if "w" not in self._cache:
            self._cache["w"] = self._weight_contributions()
        return {k: v.copy() for k, v in self._cache["w"].items()}

    def _weight_contributions(self):
        cell, x, H = self.cell, self._x, self.num_units
        T = self.steps
        dG = to_numpy(self.record.d_gates)
        Hs = self._slab("h")
        XH = np.concatenate([x, Hs[:T]], axis=2)                    # [T, B, I+P]: concat(x_t, h_{t-1})
        out = {}
        if self.kind == "lstm":
            dg = self._by_gate(dG)
            dG_tf = np.concatenate([dg[g] for g in _TF_LSTM_GATES], axis=2)   # TF columns i, j, f, o
            out["kernel"] = _outer_per_step(XH, dG_tf)               # [T, I+P, B] @ [T, B, 4H]
            out["bias"] = dG_tf.sum(axis=1)
            C = self._slab("c")
            if "w_i_diag" in cell.params:
                out["w_i_diag"] = (dg["i"] * C[:T]).sum(axis=1)
                out["w_f_diag"] = (dg["f"] * C[:T]).sum(axis=1)
                out["w_o_diag"] = (dg["o"] * C[1:]).sum(axis=1)
            if "projection/kernel" in cell.params:
                self._need_state_grads("weight_grad_contributions (projection/kernel)")
                dhp = to_numpy(self.record.d_h) * self.valid[:, :, None]
                if "proj_clip_mask" in self.record.slabs:
                    dhp = dhp * self._slab("proj_clip_mask")
                M = cell._activation(C[1:]) * self.gate("o")            # m_t = o_t * act(c_t)
                out["projection/kernel"] = _outer_per_step(M, dhp)       # [T, H, B] @ [T, B, P]
        elif self.kind == "gru":
            r = self.gate("r")
            XRH = np.concatenate([x, r * Hs[:T]], axis=2)              # concat(x_t, r_t * h_{t-1})
            gk, gb, ck, cb = cell._param_names                       # GRUBlockCell: w_ru, b_ru, ...
            out[gk] = _outer_per_step(XH, dG[:, :, :2 * H])            # [T, I+H, B] @ [T, B, 2H]
            out[gb] = dG[:, :, :2 * H].sum(axis=1)
            out[ck] = _outer_per_step(XRH, dG[:, :, 2 * H:])           # [T, I+H, B] @ [T, B, H]
            out[cb] = dG[:, :, 2 * H:].sum(axis=1)
        else:
            if not self.has_weight_contributions:
                raise TypeError("weight_grad_contributions knows LSTMCell, GRUCell, BasicRNNCell and "
                                "cells whose only parameters are 'kernel' [I+P, G] and 'bias' [G] with "
                                "the gate columns in the order of the 'gates' slab; %s has %s"
                                % (type(cell).__name__,
                                   {k: tuple(v.shape) for k, v in cell.params.items()}))
            out["kernel"] = _outer_per_step(XH, dG)                  # [T, I+P, B] @ [T, B, G]
            out["bias"] = dG.sum(axis=1)
        return out

    # -- one step
    def step(self, index):
        """Everything about one step, by array index (0..T-1, negative from the end; the step is
        t = index + 1), as a dict of [B, ...] arrays: ``gates`` (dict), ``h``, ``h_prev``, ``c``,
        ``c_prev`` (LSTM), ``valid`` [B], and when the trace was backpropagated ``d_gates`` (dict),
        ``weight_grads`` (dict), ``d_h``, ``d_c``."""
        t = _check_index(index, self.steps, "step", "%s (T = %d computed steps)" % (self.label, self.steps))
        Hs = self._slab("h")
        out = {"t": t + 1, "valid": self.valid[t], "gates": {k: v[t] for k, v in self.gates().items()},
               "h": Hs[t + 1].copy(), "h_prev": Hs[t].copy()}
        if self.has_cell_state:
            C = self._slab("c")
            out["c"], out["c_prev"] = C[t + 1].copy(), C[t].copy()
        if self.backpropagated:
            out["d_gates"] = {k: v[t] for k, v in self.d_gates().items()}
            if self.has_weight_contributions:
                out["weight_grads"] = {k: v[t] for k, v in self.weight_grad_contributions().items()}
            if self.has_state_grads:
                out["d_h"] = to_numpy(self.record.d_h)[t].copy()
                if self.has_cell_state and self.record.d_c is not None:
                    out["d_c"] = to_numpy(self.record.d_c)[t].copy()
        return out

    # -- tidy summary
    def summary(self, threshold=0.1):
        """One dict per step: ``layer``, ``t`` (the step, 1..T as in the equations: array index
        t - 1), ``valid`` (rows within their length), ``mean_<g>``
        and ``sat_<g>`` (mean gate value and saturated fraction over valid rows and units), ``|c|``
        (mean absolute cell state, LSTM), and after a backward ``|dL/dh|`` and ``|dL/dc|`` (norms
        over batch and units) and ``|dW_t|`` (norm of the step's weight-gradient contribution)."""
        valid = self.valid
        gates = self.gates()
        sat = self.saturation(threshold)
        C = self._slab("c")[1:] if self.has_cell_state else None
        dh = dc = dw = None
        if self.backpropagated:
            if self.has_state_grads:
                dh = np.sqrt((to_numpy(self.record.d_h) ** 2).sum(axis=(1, 2)))
                if self.has_cell_state and self.record.d_c is not None:
                    dc = np.sqrt((to_numpy(self.record.d_c) ** 2).sum(axis=(1, 2)))
            if self.has_weight_contributions:
                w = self.weight_grad_contributions()
                dw = np.sqrt(sum((v.reshape(self.steps, -1) ** 2).sum(axis=1) for v in w.values()))
        rows = []
        for t in range(self.steps):
            v = valid[t]
            n = int(v.sum())
            row = {"layer": self.label, "t": t + 1, "valid": n}
            for g in self.gate_names:
                row["mean_" + g] = float(gates[g][t][v].mean()) if n else None
                row["sat_" + g] = float(sat[g][t][v].mean()) if n else None
            if C is not None:
                row["|c|"] = float(np.abs(C[t][v]).mean()) if n else None
            if dh is not None:
                row["|dL/dh|"] = float(dh[t])
            if dc is not None:
                row["|dL/dc|"] = float(dc[t])
            if dw is not None:
                row["|dW_t|"] = float(dw[t])
            rows.append(row)
        return rows

    def format_summary(self, threshold=0.1, floatfmt="%.4g"):
        rows = self.summary(threshold)
        return "%s (%s)\n%s" % (self.label, type(self.cell).__name__,
                                format_table([{k: v for k, v in r.items() if k != "layer"} for r in rows],
                                             floatfmt=floatfmt))

    def print_summary(self, threshold=0.1):
        print(self.format_summary(threshold))


# ------------------------------------------------------------------------------------ traces
def _records_with_labels(trace):
    """(record, label) pairs of any npl trace, bottom layer first."""
    from ..cells import LayerRecord, StepTrace
    from ..rnn_ops import BidirectionalTrace, StackBidirectionalTrace, StaticRNNTrace
    if isinstance(trace, LayerRecord):
        return [(trace, "layer 0")]
    if isinstance(trace, (list, tuple)) and trace and all(isinstance(r, LayerRecord) for r in trace):
        return [(r, "layer %d" % k) for k, r in enumerate(trace)]
    if isinstance(trace, StaticRNNTrace):
        return _records_with_labels(trace.inner)
    if isinstance(trace, BidirectionalTrace):
        return ([(r, "fw " + lab) for r, lab in _records_with_labels(trace.fw)]
                + [(r, "bw " + lab) for r, lab in _records_with_labels(trace.bw)])
    if isinstance(trace, StackBidirectionalTrace):
        out = []
        for k, tr in enumerate(trace.layers):
            for r, lab in _records_with_labels(tr):
                d, _, sub = lab.partition(" ")
                out.append((r, "stack %d %s %s" % (k, d, sub)))
        return out
    if isinstance(trace, StepTrace):
        recs = trace.record if isinstance(trace.record, list) else [trace.record]
        return [(r, "layer %d" % k) for k, r in enumerate(recs)]
    labelled = getattr(trace, "labelled_records", None)      # a composite trace labels its own
    if callable(labelled):
        return labelled(_records_with_labels)
    recs = getattr(trace, "records", None)
    if recs is None:
        raise TypeError("trace must be an npl trace (from dynamic_rnn, static_rnn, "
                        "bidirectional_dynamic_rnn, ... with return_trace=True), a LayerRecord or a "
                        "list of them, got %s" % type(trace).__name__)
    return [(r, "layer %d" % k) for k, r in enumerate(recs)]


class TraceInspector:
    """All layers of a trace: ``insp.layer(k)`` (or ``insp[k]``) is a :class:`LayerInspector`.

    Layers are ordered bottom first; for bidirectional traces the forward layers come first
    ("fw layer 0"), then the backward ones ("bw layer 0", whose time axis runs in processing order,
    i.e. reversed within each row's length).

    >>> import numpy as np, npl
    >>> cell = npl.rnn.BasicLSTMCell(3, seed=0, dtype=np.float64)
    >>> out, st, tr = npl.nn.dynamic_rnn(cell, np.ones((2, 4, 5)), return_trace=True)
    >>> insp = npl.inspect.inspect_trace(tr)
    >>> insp.layer(0).gate_names, insp.layer(0).gates()["f"].shape
    (('i', 'j', 'f', 'o'), (4, 2, 3))
    """

    def __init__(self, trace):
        pairs = _records_with_labels(trace)
        if not pairs:
            raise ValueError("the trace holds no computed steps (every sequence_length is 0), so "
                             "there is nothing to inspect")
        self.trace = trace
        self.layers = [LayerInspector(r, lab) for r, lab in pairs]

    @property
    def num_layers(self):
        return len(self.layers)

    @property
    def labels(self):
        return [l.label for l in self.layers]

    @property
    def backpropagated(self):
        return all(l.backpropagated for l in self.layers)

    def layer(self, k=0):
        """The :class:`LayerInspector` of layer ``k`` (an index, negative from the top, or a label)."""
        if isinstance(k, str):
            for l in self.layers:
                if l.label == k:
                    return l
            raise ValueError("layer must be one of the labels %s or an index in range [0, %d), got %r"
                             % (self.labels, self.num_layers, k))
        return self.layers[_check_index(k, self.num_layers, "layer",
                                        "this trace (%d layers: %s)" % (self.num_layers,
                                                                       ", ".join(self.labels)))]

    __getitem__ = layer

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def summary(self, threshold=0.1):
        """Tidy rows of every layer (see :meth:`LayerInspector.summary`)."""
        return [row for l in self.layers for row in l.summary(threshold)]

    def format_summary(self, threshold=0.1, floatfmt="%.4g"):
        return "\n\n".join(l.format_summary(threshold, floatfmt) for l in self.layers)

    def print_summary(self, threshold=0.1):
        print(self.format_summary(threshold))

    def __repr__(self):
        return "<TraceInspector: %d layers (%s)>" % (self.num_layers, ", ".join(self.labels))


def inspect_trace(trace):
    """Open a trace for inspection: returns a :class:`TraceInspector`.

    For gradients, call ``trace.record_state_grads()`` before ``trace.backward(...)``.
    """
    return TraceInspector(trace)
