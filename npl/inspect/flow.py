"""Gradient flow over time: how much of a loss on the last output reaches each earlier step.

For a loss ``L = <w, y_T>`` on the last output only, BPTT carries ``dL/dh_t`` backwards:

    dL/dh_{t-1} = (dL/dh_t  * act'(.)) @ U^T                                    simple RNN
    dL/dc_{t-1} = dL/dc_t * f_t  + (terms through the gates)                    LSTM
    dL/dh_{t-1} = dL/dh_t * u_t  + (terms through r, u and the candidate)       GRU

In the simple RNN every step multiplies the gradient by ``diag(act') U^T``; its norm shrinks
geometrically when that Jacobian's norm is below 1 (vanishing) and grows when it is above 1
(exploding).  The LSTM's cell state has an additive path whose only factor is the forget gate:
along it ``dL/dc_t`` is scaled by ``f_{t+1} * ... * f_T``, which stays near 1 while the forget gates
are open.  The GRU's update gate ``u`` plays the same role for h.  :func:`gradient_flow` measures
``||dL/dh_t||`` for t = T..1 and that running gate product; :func:`compare_gradient_flow` does it
for the three cell types on the same inputs.
"""
import numpy as np

from ..backend import to_numpy
from .core import LayerInspector, format_table, _check_index

__all__ = ["GradientFlow", "gradient_flow", "compare_gradient_flow", "CELL_KINDS"]


class GradientFlow:
    """||dL/dh_t|| (and ||dL/dc_t||, the running gate product) for a loss on the last output.

    Arrays are indexed by step: entry ``t`` (0-based) belongs to h_{t+1}, the state after step t+1,
    so ``dh_norm[-1]`` is at the loss and ``dh_norm[0]`` is T - 1 steps before it.

    Attributes: ``label``, ``steps`` (T), ``dh_norm`` [T] (norm over batch and units),
    ``dc_norm`` [T] or None, ``gate_name`` ("f" for LSTM, "u" for GRU, None for a simple RNN),
    ``gate_product`` [T] (mean over batch and units of prod_{s > t} gate_s, 1 at the last step) or
    None, ``gate_product_full`` [T, B, H] or None, ``loss``.
    """

    def __init__(self, label, dh_norm, dc_norm, gate_name, gate_product_full, loss):
        self.label = label
        self.dh_norm = np.asarray(dh_norm)
        self.steps = len(self.dh_norm)
        self.dc_norm = None if dc_norm is None else np.asarray(dc_norm)
        self.gate_name = gate_name
        self.gate_product_full = gate_product_full
        self.gate_product = None if gate_product_full is None else gate_product_full.mean(axis=(1, 2))
        self.loss = loss

    @property
    def ratio(self):
        """||dL/dh_1|| / ||dL/dh_T||: below 1 the gradient vanished on its way back, above 1 it grew."""
        return float(self.dh_norm[0] / self.dh_norm[-1])

    def table(self, every=1):
        """Rows from t = T down to 1 (every ``every``-th step, always including t = 1)."""
        rows = []
        ts = list(range(self.steps - 1, -1, -every))
        if ts[-1] != 0:
            ts.append(0)
        for t in ts:
            row = {"t": t + 1, "T-t": self.steps - 1 - t, "|dL/dh_t|": float(self.dh_norm[t])}
            if self.dc_norm is not None:
                row["|dL/dc_t|"] = float(self.dc_norm[t])
            if self.gate_product is not None:
                row["prod %s" % self.gate_name] = float(self.gate_product[t])
            rows.append(row)
        return rows

    def __str__(self):
        return "%s: ||dL/dh_1|| / ||dL/dh_T|| = %.3g\n%s" % (self.label, self.ratio,
                                                               format_table(self.table()))

    def __repr__(self):
        return "<GradientFlow %s: T=%d, ratio %.3g>" % (self.label, self.steps, self.ratio)


def _suffix_products(g):
    """P[t] = prod_{s > t} g[s] along axis 0 (P[T-1] = 1): the gate product from step t to the end."""
    P = np.ones_like(g)
    for t in range(g.shape[0] - 2, -1, -1):
        P[t] = P[t + 1] * g[t + 1]
    return P


def gradient_flow(cell, inputs, initial_state=None, d_last=None, time_major=False, layer=-1,
                  label=None):
    """BPTT of a loss on the last output, ``L = <d_last, y_T>``: how ``dL/dh_t`` decays with lag.

    cell:     any npl cell; inputs: [batch, time, depth] (time-major with ``time_major``).
    d_last:   [batch, output_size] weights of the loss (default ones, i.e. ``L = sum(y_T)``).
    layer:    which layer of a MultiRNNCell to report (default the top one).
    The cell's accumulated gradients are restored afterwards, so this can run on a model mid-training.
    Returns a :class:`GradientFlow`.
    """
    from ..rnn_ops import dynamic_rnn
    from ..backend import get_array_module
    out, _, tr = dynamic_rnn(cell, inputs, initial_state=initial_state, time_major=time_major,
                             return_trace=True)
    xp = get_array_module(out)
    y = to_numpy(out)
    y_last = y[-1] if time_major else y[:, -1]                          # [B, P]
    if d_last is None:
        w = np.ones(y_last.shape, y.dtype)
    else:
        w = np.asarray(to_numpy(d_last), y.dtype)
        if w.shape != y_last.shape:
            raise ValueError("d_last must have shape [batch, output_size] = %s, got %s"
                             % (y_last.shape, w.shape))
    d = np.zeros(y.shape, y.dtype)                                      # dL/dy: zero but at T
    if time_major:
        d[-1] = w
    else:
        d[:, -1] = w
    loss = float((y_last * w).sum())
    saved = {k: v.copy() for k, v in cell.grads.items()}
    tr.record_state_grads()
    tr.backward(d if xp is np else xp.asarray(d), None)
    for k, v in cell.grads.items():
        v[...] = saved[k]
    recs = tr.records
    k = _check_index(layer, len(recs), "layer", "this cell (%d layers)" % len(recs))
    insp = LayerInspector(recs[k], "layer %d" % k)
    dh = np.sqrt((insp.d_h ** 2).sum(axis=(1, 2)))
    dc = np.sqrt((insp.d_c ** 2).sum(axis=(1, 2))) if insp.has_cell_state else None
    gname = {"lstm": "f", "gru": "u"}.get(insp.kind)
    prod = _suffix_products(insp.gate(gname)) if gname else None
    return GradientFlow(label or type(insp.cell).__name__, dh, dc, gname, prod, loss)


CELL_KINDS = {"rnn": "BasicRNNCell", "lstm": "BasicLSTMCell", "gru": "GRUCell"}


def _make_cell(kind, units, input_size, seed):
    from .. import cells
    if kind not in CELL_KINDS:
        raise ValueError("cell kind must be one of %s, got %r" % (sorted(CELL_KINDS), kind))
    cell = getattr(cells, CELL_KINDS[kind])(units, seed=seed, dtype=np.float64, input_size=input_size)
    return cell.to_numpy()                        # these small experiments run on the host


def compare_gradient_flow(kinds=("rnn", "lstm", "gru"), steps=50, batch=8, input_size=4, units=16,
                          weight_scale=1.0, input_scale=1.0, seed=0, cells=None):
    """:func:`gradient_flow` of fresh cells of each kind ("rnn", "lstm", "gru") on the same inputs.

    Cells get TensorFlow's initialisation (glorot-uniform kernels, zero biases, GRU gate bias 1,
    LSTM forget_bias 1), then every kernel is multiplied by ``weight_scale``: at 1 the gradients
    vanish with lag, at a few times that the simple RNN's explodes.  ``cells`` (a dict label ->
    cell of your own, e.g. an LSTM with a larger forget_bias) replaces ``kinds``; unbuilt ones are
    built for ``input_size``, and all are moved to NumPy (these are small host-side experiments).
    Inputs are N(0, input_scale^2), shape [batch, steps, input_size], in the cell's dtype (float64
    by default).  Kernels are scaled in place.  Returns a dict label -> :class:`GradientFlow`.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, steps, input_size)) * input_scale
    if cells is None:
        cells = {CELL_KINDS[k] if k in CELL_KINDS else k: _make_cell(k, units, input_size, seed)
                 for k in kinds}
    elif not isinstance(cells, dict):
        raise TypeError("cells must be a dict label -> npl cell, got %s" % type(cells).__name__)
    flows = {}
    for label, cell in cells.items():
        if not cell.built:
            cell.build(input_size, cell.dtype or np.float64)
        cell.to_numpy()                           # the inputs are NumPy arrays
        if weight_scale != 1.0:
            for leaf in cell._leaves():                 # GRUBlockCell's kernels are w_ru, w_c
                for name, p in leaf.params.items():
                    if leaf._role(name).endswith("kernel"):
                        p *= weight_scale
        flows[label] = gradient_flow(cell, x.astype(cell.dtype, copy=False), label=label)
    return flows
