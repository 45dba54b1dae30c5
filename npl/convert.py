"""Weight converters between npl cells and TensorFlow 1, Keras and PyTorch, both directions.

All converters work on plain dicts/lists of arrays and return NumPy arrays; the result of a
``from_*`` converter goes straight into ``cell.set_params(...)``.  Framework arrays (torch tensors,
TF tensors/variables, CuPy arrays) are accepted and converted to NumPy; TensorFlow and PyTorch are
imported only by the functions that need them (checkpoints, ``tensors=True``).

npl's layout is TensorFlow 1's (see :mod:`npl.cells`): an LSTM has ``kernel [I+P, 4H]`` whose
column blocks are the gates ``i, j, f, o`` (j = candidate) and ``bias [4H]``, and adds
``forget_bias`` to the f pre-activation at run time::

    [i, j, f, o] = [x, h] @ kernel + bias
    c' = sigmoid(f + forget_bias) * c + sigmoid(i) * tanh(j)      h' = sigmoid(o) * tanh(c')

* **TensorFlow 1** names: ``<scope>/<cell name>/kernel`` (``rnn/lstm_cell/kernel``), stacked
  ``<scope>/multi_rnn_cell/cell_<k>/<cell name>/kernel``, bidirectional under
  ``bidirectional_rnn/fw`` and ``bidirectional_rnn/bw``.  Values are identical; only names change.
* **Keras** ``LSTM``: ``kernel [I, 4H]``, ``recurrent_kernel [H, 4H]``, ``bias [4H]`` with gate
  blocks ``i, f, c, o`` and no run-time forget bias (``unit_forget_bias`` only initialises), so the
  conversion folds it in: ``keras_bias_f = tf_bias_f + forget_bias``.  ``GRU(reset_after=False)``:
  blocks ``z, r, h`` with ``z`` = TF's ``u``; ``SimpleRNN``: ``kernel``, ``recurrent_kernel``,
  ``bias``.  ``GRU(reset_after=True)`` is a different function and is refused.
* **PyTorch** ``nn.LSTM``: ``weight_ih_l{k} [4H, I]``, ``weight_hh_l{k} [4H, P]``, ``bias_ih_l{k}``,
  ``bias_hh_l{k}`` ``[4H]`` with gate blocks ``i, f, g, o`` (g = TF's j), ``weight_hr_l{k} [P, H]``
  with ``proj_size``; the backward direction of a bidirectional module has the suffix
  ``_reverse``.  The two biases are summed; going to PyTorch, npl's bias goes into ``bias_ih`` and
  ``bias_hh`` holds ``forget_bias`` in its f block (so npl -> torch -> npl is exact).
  ``nn.RNN`` maps to ``BasicRNNCell``.  ``nn.GRU`` is a different function and is refused.
"""
import importlib
import re

import numpy as np

from .backend import to_numpy
from .cells import RNNCell, BasicRNNCell, LSTMCell, GRUCell, MultiRNNCell, LayerNormBasicLSTMCell

__all__ = ["tf_variable_names", "to_tf_variables", "from_tf_variables", "read_tf_checkpoint",
           "load_tf_checkpoint", "save_tf_checkpoint", "to_keras", "from_keras", "to_torch",
           "from_torch", "GRU_RESET_AFTER_MESSAGE", "TORCH_GRU_MESSAGE"]

#: Why Keras GRU(reset_after=True) cannot be converted.
GRU_RESET_AFTER_MESSAGE = (
    "Keras GRU(reset_after=True) is not equivalent to TF1 GRUCell / npl GRUCell: it applies the "
    "reset gate AFTER the recurrent matmul, with a separate recurrent bias (bias shape [2, 3H]): "
    "hh = tanh(x @ W_h + b_h + r * (h @ U_h + b_rh)), while GRUCell applies it before: "
    "c = tanh(x @ W_h + (r * h) @ U_h + b_h). No weight mapping makes the two compute the same "
    "function; build the Keras layer with GRU(..., reset_after=False), whose weights convert exactly.")

#: Why torch.nn.GRU cannot be converted.
TORCH_GRU_MESSAGE = (
    "torch.nn.GRU is not equivalent to TF1 GRUCell / npl GRUCell: PyTorch applies the reset gate "
    "AFTER the recurrent matmul, with its own recurrent bias inside the product: "
    "r = sigmoid(W_ir x + b_ir + W_hr h + b_hr), z = sigmoid(W_iz x + b_iz + W_hz h + b_hz), "
    "n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h; while GRUCell "
    "computes [r, u] = sigmoid([x, h] @ gates/kernel + gates/bias), "
    "c = tanh([x, r * h] @ candidate/kernel + candidate/bias), h' = u * h + (1 - u) * c "
    "(reset BEFORE the matmul). No weight mapping makes them compute the same function; convert "
    "an nn.LSTM (or nn.RNN) instead, or a Keras GRU(reset_after=False).")

# Column blocks of TF's LSTM (i, j, f, o) in Keras / PyTorch order (i, f, j, o), and back: the
# permutation swaps blocks 1 and 2, so it is its own inverse.
_IFJO = (0, 2, 1, 3)


# ============================================================================ shared helpers
def _require(module, what, extra):
    """Import an optional framework, or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError("%s needs %s, which is not installed: pip install 'npl-rnn[%s]'. The "
                          "converters to and from plain dicts of arrays work without it"
                          % (what, module, extra)) from e


def _np(a, name):
    """A NumPy float array from numpy / cupy / torch / TF values (no dtype change)."""
    if hasattr(a, "detach"):                      # torch.Tensor
        a = a.detach().cpu().numpy()
    elif hasattr(a, "numpy") and not isinstance(a, np.ndarray):   # tf.Tensor / tf.Variable
        a = a.numpy()
    a = to_numpy(a)
    if not isinstance(a, np.ndarray):
        if not isinstance(a, (list, tuple, float, int, np.generic)):
            raise TypeError("%s must be an array (NumPy, CuPy, torch or TF), got %s"
                            % (name, type(a).__name__))
        a = np.asarray(a)
    if a.dtype.kind != "f":
        raise TypeError("%s must be a floating-point array, got dtype %s" % (name, a.dtype))
    return a


def _blocks(a, order, axis=-1):
    """Reorder the equal column (or row) blocks of ``a``: block k of the result is block order[k]."""
    parts = np.split(a, len(order), axis=axis)
    return np.concatenate([parts[k] for k in order], axis=axis)


def _unwrap(cell):
    """The cell inside a DropoutWrapper, ResidualWrapper or DeviceWrapper (or a chain of them);
    any other object as it is.  TF1's wrappers add no variable scope
    (``rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel`` inside one too) and npl's take the
    wrapped cell's parameter names, so the converters see through them (the weights only: a
    residual connection is not a weight)."""
    from .layers import _CellWrapper, _VariableWrapper
    while isinstance(cell, _CellWrapper) and not isinstance(cell, _VariableWrapper):
        cell = cell.wrapped_cell       # a wrapper with variables (a projection) is not seen through
    return cell


def _stack(cell):
    """The cells of a MultiRNNCell, each unwrapped."""
    return [_unwrap(c) for c in cell.cells]


def _layers(cells, name):
    """The leaf cells of a leaf cell, a MultiRNNCell or a list of leaf cells (DropoutWrappers
    seen through)."""
    cells = _unwrap(cells)
    if isinstance(cells, MultiRNNCell):
        return _stack(cells)
    if isinstance(cells, RNNCell):
        return [cells]
    if isinstance(cells, (list, tuple)) and cells and all(isinstance(c, RNNCell) for c in cells):
        out = []
        for c in cells:
            out.extend(_layers(c, name))
        return out
    raise TypeError("%s must be an npl cell, a MultiRNNCell or a list of cells, got %r" % (name, cells))


def _kind(cell, tf=False):
    """"lstm", "gru" or "rnn"; with ``tf`` (the TF1 name converters) also "layer_norm_lstm"."""
    if isinstance(cell, LayerNormBasicLSTMCell):
        if tf:
            return "layer_norm_lstm"
        raise TypeError("LayerNormBasicLSTMCell has no Keras or PyTorch counterpart (a layer norm "
                        "per gate and on the state); only the TF1 converters take it")
    if isinstance(cell, LSTMCell):
        return "lstm"
    if isinstance(cell, GRUCell):
        return "gru"
    if isinstance(cell, BasicRNNCell):
        return "rnn"
    raise TypeError("cell must be an npl LSTMCell, BasicLSTMCell, GRUCell or BasicRNNCell%s, got %s"
                    % (" (or, for the TF1 converters, LayerNormBasicLSTMCell)" if tf else "",
                       type(cell).__name__))


def _built_params(cell):
    if not cell.built:
        raise ValueError("%r is not built: run it once or call cell.build(input_size) first" % (cell,))
    return {k: to_numpy(v) for k, v in cell.params.items()}


def _plain_lstm(cell, target, allow_proj=False):
    """Refuse LSTM features that ``target`` does not have (peepholes, clipping, projection)."""
    if cell._use_peepholes:
        raise ValueError("%s has no peephole weights; the cell has use_peepholes=True" % target)
    if cell._cell_clip is not None:
        raise ValueError("%s has no cell clipping; the cell has cell_clip=%g" % (target, cell._cell_clip))
    if cell._num_proj is not None and not allow_proj:
        raise ValueError("%s has no projection; the cell has num_proj=%d" % (target, cell._num_proj))
    if cell._proj_clip is not None:
        raise ValueError("%s has no projection clipping; the cell has proj_clip=%g"
                         % (target, cell._proj_clip))


def _check_activation(cell, allowed, target):
    name = cell._activation.name
    if name not in allowed:
        raise ValueError("%s supports activation %s only; the cell has activation=%r"
                         % (target, " or ".join(allowed), name))


def _nested(cells, per_layer):
    """Shape the per-layer dicts like ``cells``: a dict for a leaf cell, one dict with
    ``cell_<k>/`` prefixes for a MultiRNNCell, a list of dicts for a list of cells."""
    cells = _unwrap(cells)
    if isinstance(cells, MultiRNNCell):
        return {"cell_%d/%s" % (k, n): v for k, d in enumerate(per_layer) for n, v in d.items()}
    if isinstance(cells, RNNCell):
        return per_layer[0]
    return list(per_layer)


def _shape_problem(cell, values):
    """None when ``values`` (name -> array) fit ``cell``'s shapes, else a description."""
    shapes1 = cell._shapes(1)
    if cell.built:
        width = cell.input_size
    else:
        key = next(k for k in shapes1 if cell._role(k).endswith("kernel"))
        width = np.shape(values[key])[0] - (shapes1[key][0] - 1) if np.ndim(values[key]) == 2 else 0
        if width < 1:
            return "%s has shape %s" % (key, tuple(np.shape(values[key])))
    expected = cell._shapes(width)
    bad = ["%s %s (expected %s)" % (k, tuple(np.shape(values[k])), expected[k])
           for k in expected if tuple(np.shape(values[k])) != tuple(expected[k])]
    return "; ".join(bad) or None


# ============================================================================ TensorFlow 1
def _join(*parts):
    return "/".join(p.strip("/") for p in parts if p)


def tf_variable_names(cell, scope="rnn"):
    """Dict npl name -> TF1 variable name (without ``:0``) for a cell run by ``dynamic_rnn`` under
    ``scope``: ``rnn/lstm_cell/kernel``, ``rnn/multi_rnn_cell/cell_0/gru_cell/gates/kernel``, ...
    Use ``scope="bidirectional_rnn/fw"`` / ``"bidirectional_rnn/bw"`` for the two directions of
    ``bidirectional_dynamic_rnn`` and ``"stack_bidirectional_rnn/cell_<k>/bidirectional_rnn/fw"``
    for ``stack_bidirectional_dynamic_rnn`` (``"stack_bidirectional_rnn/cell_<k>/fw"``, no
    ``bidirectional_rnn`` level, for the static ``stack_bidirectional_rnn``).  Names only: the cell need not be built.  A
    DropoutWrapper adds no scope (as in TF1): its names are the wrapped cell's."""
    from .layers import _VariableWrapper
    cell = _unwrap(cell)
    if isinstance(cell, _VariableWrapper):       # OutputProjectionWrapper, ...: its own scope
        inner = tf_variable_names(cell.wrapped_cell, _join(scope, cell.name))
        out = {tf[len(_join(scope, cell.name)) + 1:]: tf for tf in inner.values()}
        out.update({n: _join(scope, cell.name, n) for n in cell._own_names})
        return out
    if isinstance(cell, MultiRNNCell):
        return {"cell_%d/%s" % (k, n): tf for k, c in enumerate(cell.cells)
                for n, tf in tf_variable_names(c, _join(scope, cell.name, "cell_%d" % k)).items()}
    _kind(cell, tf=True)
    return {n: _join(scope, cell.name, n) for n in cell._shapes(1)}


def to_tf_variables(cell, scope="rnn"):
    """Dict TF1 variable name -> NumPy copy of the value, for ``tf.train.Saver`` / checkpoints."""
    cell = _unwrap(cell)
    for c in _layers(cell, "cell"):
        _built_params(c)
    params = {k: np.array(to_numpy(v)) for k, v in cell.params.items()}
    return {tf: params[n] for n, tf in tf_variable_names(cell, scope).items()}


_SUBSCOPES = ("gates/", "candidate/", "projection/")
# Every variable a TF1 RNN cell can own: one of them beside a cell's own set means a different cell
# (peepholes, a projection) whose weights would load into this one as a different function.
_CELL_PARAMS = ("kernel", "bias", "w_f_diag", "w_i_diag", "w_o_diag", "projection/kernel",
                "gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias")


def _describe(cell):
    if isinstance(cell, LSTMCell):
        return "LSTMCell(use_peepholes=%s, num_proj=%s)" % (cell._use_peepholes, cell._num_proj)
    return type(cell).__name__


def _features(extra):
    out = []
    if any(p.startswith("w_") for p in extra):
        out.append("peepholes (use_peepholes=True)")
    if "projection/kernel" in extra:
        out.append("a projection (num_proj)")
    return " and ".join(out) or "other variables"


def _groups(names, params):
    """Group TF names by prefix: {prefix: {param: name}} for names ending in '/<param>'."""
    params = sorted(params, key=len, reverse=True)            # 'projection/kernel' before 'kernel'
    out = {}
    for nm in names:
        for p in params:
            if nm.endswith("/" + p):
                prefix = nm[:-len(p)]
                if not prefix.endswith(_SUBSCOPES):
                    out.setdefault(prefix, {})[p] = nm
                break
    return out


def _leaf_candidates(cell, variables, names, scope):
    """Complete, shape-valid groups for one leaf cell: {prefix: {param: array}}, and rejects."""
    wanted = list(cell._shapes(1))
    found, rejected = {}, []
    for prefix, g in _groups(names, wanted).items():
        if scope and not prefix.startswith(scope + "/"):
            continue
        if len(g) != len(wanted):
            rejected.append("%s (missing %s)" % (prefix, sorted(set(wanted) - set(g))))
            continue
        if prefix + "recurrent_kernel" in variables:
            rejected.append("%s (has a recurrent_kernel: Keras weights, use from_keras)" % prefix)
            continue
        extra = [p for p in _CELL_PARAMS if p not in wanted and prefix + p in variables]
        if extra:
            rejected.append("%s (has %s, which %s does not: the checkpoint's cell has %s)"
                            % (prefix, ", ".join(extra), _describe(cell), _features(extra)))
            continue
        vals = {p: variables[nm] for p, nm in g.items()}
        problem = _shape_problem(cell, vals)
        if problem:
            rejected.append("%s (%s)" % (prefix, problem))
            continue
        found[prefix] = vals
    return found, rejected


def from_tf_variables(variables, cell, scope=None):
    """Pick a cell's weights out of a dict of TF1 variables; returns {npl name: NumPy array}.

    ``variables``: TF variable name (``:0`` suffixes allowed) -> array, e.g. from
    :func:`read_tf_checkpoint`.  The cell's variables are recognised by their names ending in
    ``<cell scope>/<param>`` (``.../lstm_cell/kernel``; for a MultiRNNCell
    ``.../cell_<k>/<cell scope>/<param>``) and by their shapes; other variables (optimizer slots,
    dense layers, ``global_step``) are ignored.  A set with weights the cell lacks (peepholes, a projection) is
    refused, not loaded in part.  ``scope`` (e.g. ``"rnn"``,
    ``"bidirectional_rnn/bw"``) restricts the search to names under it, and is needed when the
    dict holds more than one matching set.
    """
    if not isinstance(variables, dict):
        raise TypeError("variables must be a dict name -> array, got %s" % type(variables).__name__)
    cell = _unwrap(cell)
    table = {}
    for k, v in variables.items():
        table[re.sub(r":\d+$", "", k)] = v
    scope = scope.strip("/") if scope else None
    names = sorted(table)

    def fail(what, rejected):
        near = ("; candidates rejected: " + "; ".join(rejected)) if rejected else ""
        raise ValueError("from_tf_variables: found no %s%s%s. Variables given: %s"
                         % (what, "" if not scope else " under scope %r" % scope, near,
                            names[:30] + (["..."] if len(names) > 30 else [])))

    def pick(found, what):
        if len(found) > 1:
            raise ValueError("from_tf_variables: %d sets of variables fit %s: %s; pass scope= to "
                             "choose one" % (len(found), what, sorted(found)))
        return next(iter(found.values()))

    from .layers import _VariableWrapper, _walk_cells
    if any(isinstance(c, _VariableWrapper) for c in _walk_cells(cell)):
        return _by_exact_names(table, cell, scope or "rnn", names)
    if not isinstance(cell, MultiRNNCell):
        _kind(cell, tf=True)
        found, rejected = _leaf_candidates(cell, table, names, scope)
        what = "%s variables (%s)" % (type(cell).__name__, ", ".join(cell._shapes(1)))
        if not found:
            fail(what, rejected)
        return {k: np.array(_np(v, k)) for k, v in pick(found, what).items()}

    per_outer, rejected_all = {}, []
    for k, c in enumerate(_stack(cell)):
        _kind(c, tf=True)
        found, rejected = _leaf_candidates(c, table, names, scope)
        rejected_all += rejected
        for prefix, vals in found.items():
            m = re.search(r"(?:^|/)cell_%d/[^/]+/$" % k, prefix)
            if m:
                per_outer.setdefault(prefix[:m.start()], {}).setdefault(k, []).append((prefix, vals))
    n = len(cell.cells)
    complete = {o: d for o, d in per_outer.items() if len(d) == n and all(len(v) == 1 for v in d.values())}
    what = "MultiRNNCell variables (cell_0 .. cell_%d)" % (n - 1)
    if not complete:
        partial = ["%s has cells %s" % (o or "<root>", sorted(d)) for o, d in per_outer.items()]
        fail(what, rejected_all + partial)
    layers = pick(complete, what)
    return {"cell_%d/%s" % (k, p): np.array(_np(v, p)) for k in range(n) for p, v in layers[k][0][1].items()}


def _by_exact_names(table, cell, scope, names):
    """The weights of a cell with wrappers that own variables (OutputProjectionWrapper, ...): read
    by the exact TF names ``tf_variable_names(cell, scope)`` gives (the wrappers' scopes nest the
    cell's names, so the name search by endings does not apply); shapes are checked when they
    are set."""
    want = tf_variable_names(cell, scope)
    missing = sorted(tf for tf in want.values() if tf not in table)
    if missing:
        raise ValueError("from_tf_variables: %s has wrappers with variables of their own, so its "
                         "variables are read by their exact TF names under scope %r (pass scope= "
                         "for another); missing: %s. Variables given: %s"
                         % (_describe(cell), scope, missing, names[:30] + (["..."] if len(names) > 30 else [])))
    return {k: np.array(_np(table[tf], k)) for k, tf in want.items()}


def read_tf_checkpoint(path):
    """All variables of a TensorFlow checkpoint as {name: NumPy array} (``tf.train.load_checkpoint``;
    ``path`` is the checkpoint prefix or its folder).  Imports TensorFlow."""
    tf = _require("tensorflow", "reading a TensorFlow checkpoint", "tf")
    reader = tf.train.load_checkpoint(path)
    names = reader.get_variable_to_shape_map()
    return {n: np.asarray(reader.get_tensor(n)) for n in names}


def load_tf_checkpoint(path, cell, scope=None):
    """Read a TF1 checkpoint and set the cell's weights from it; returns the npl dict."""
    values = from_tf_variables(read_tf_checkpoint(path), cell, scope)
    cell.set_params(values)
    return values


def save_tf_checkpoint(cell, path, scope="rnn"):
    """Write the cell's weights as a TF1 checkpoint under TF's variable names (see
    :func:`tf_variable_names`), readable by ``tf.compat.v1.train.Saver.restore``.  Returns the
    checkpoint prefix.  Imports TensorFlow."""
    tf = _require("tensorflow", "writing a TensorFlow checkpoint", "tf")
    v1 = tf.compat.v1
    values = to_tf_variables(cell, scope)
    g = tf.Graph()
    with g.as_default():
        var_list = {n: v1.Variable(a, name=n) for n, a in values.items()}
        saver = v1.train.Saver(var_list=var_list)
        with v1.Session(graph=g) as sess:
            sess.run(v1.variables_initializer(list(var_list.values())))
            return saver.save(sess, path, write_meta_graph=False)


# ============================================================================ Keras
def _keras_weights(entry, name):
    """(kernel, recurrent_kernel, bias or None, layer or None) from a Keras layer, a list or a dict."""
    layer = None
    if hasattr(entry, "get_weights"):
        layer = entry
        entry = entry.get_weights()
    if isinstance(entry, dict):
        table = {re.sub(r":\d+$", "", k).rsplit("/", 1)[-1]: v for k, v in entry.items()}
        missing = [k for k in ("kernel", "recurrent_kernel") if k not in table]
        if missing:
            raise ValueError("%s: dict needs keys 'kernel', 'recurrent_kernel' (and 'bias'), got %s"
                             % (name, sorted(entry)))
        entry = [table["kernel"], table["recurrent_kernel"]] + ([table["bias"]] if "bias" in table else [])
    if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
        raise ValueError("%s must be a Keras layer, a list [kernel, recurrent_kernel, bias] or a dict "
                         "of them, got %r" % (name, type(entry).__name__))
    arrs = [_np(a, "%s[%d]" % (name, i)) for i, a in enumerate(entry)]
    return arrs[0], arrs[1], (arrs[2] if len(arrs) == 3 else None), layer


def _keras_layer_check(layer, cell, name):
    """Refuse Keras layers whose math differs from the cell's (activations, GRU reset_after)."""
    if layer is None:
        return
    cfg = layer.get_config() if hasattr(layer, "get_config") else {}
    kind = _kind(cell)
    cls = type(layer).__name__.lower()
    for k, c in (("lstm", "lstm"), ("gru", "gru"), ("rnn", "simplernn")):
        if kind == k and c not in cls:
            raise ValueError("%s is a Keras %s but the cell is a %s" % (name, type(layer).__name__,
                                                                        type(cell).__name__))
    if kind == "gru" and cfg.get("reset_after", False):
        raise ValueError("%s: %s" % (name, GRU_RESET_AFTER_MESSAGE))
    act = cfg.get("activation")
    if act is not None and act != cell._activation.name:
        raise ValueError("%s has activation %r but the cell has %r" % (name, act, cell._activation.name))
    rec = cfg.get("recurrent_activation")
    if rec is not None and rec != "sigmoid":
        raise ValueError("%s has recurrent_activation %r; npl's gates use 'sigmoid'" % (name, rec))
    units = cfg.get("units")
    if units is not None and units != cell.num_units:
        raise ValueError("%s has units=%d but the cell has num_units=%d" % (name, units, cell.num_units))


def _to_keras_leaf(cell):
    p = _built_params(cell)
    I = cell.input_size
    kind = _kind(cell)
    if kind == "lstm":
        _plain_lstm(cell, "Keras LSTM")
        H = cell.num_units
        K = _blocks(p["kernel"], _IFJO)                                  # [I+H, 4H] in i, f, j, o
        b = _blocks(p["bias"], _IFJO)
        b[H:2 * H] += np.asarray(cell.forget_bias, b.dtype)              # fold the run-time forget bias
        return [K[:I], K[I:], b]
    if kind == "gru":
        H = cell.num_units
        Kg, bg, Kc, bc = (p[n] for n in cell._param_names)              # [I+H, 2H] (r, u), [I+H, H]
        K = np.concatenate([Kg[:, H:], Kg[:, :H], Kc], axis=1)           # [I+H, 3H] in z=u, r, h
        b = np.concatenate([bg[H:], bg[:H], bc])
        return [K[:I], K[I:], b]
    return [p["kernel"][:I], p["kernel"][I:], p["bias"].copy()]


def to_keras(cell, layer=None):
    """Keras weights ``[kernel, recurrent_kernel, bias]`` (the order of ``layer.get_weights()``)
    for an LSTM (LSTMCell without peepholes, clipping or projection), GRU (``reset_after=False``)
    or SimpleRNN layer; a list of them for a MultiRNNCell or a list of cells (stacked layers).
    LSTM: ``keras_bias_f = bias_f + forget_bias``.  With ``layer`` (a built Keras layer, or a list
    of them), the layer is checked against the cell and its weights are set."""
    cell = _unwrap(cell)
    leaves = _layers(cell, "cell")
    out = [_to_keras_leaf(c) for c in leaves]
    if layer is not None:
        layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if len(layers) != len(leaves):
            raise ValueError("layer: expected %d Keras layers (one per cell), got %d"
                             % (len(leaves), len(layers)))
        for k, (lay, c, w) in enumerate(zip(layers, leaves, out)):
            _keras_layer_check(lay, c, "layer[%d]" % k)
            if not getattr(lay, "built", True):
                lay.build((None, None, c.input_size))
            lay.set_weights(w)
    return out[0] if isinstance(cell, RNNCell) and not isinstance(cell, MultiRNNCell) else out


def _from_keras_leaf(entry, cell, reset_after, name):
    _keras_layer_check(entry if hasattr(entry, "get_weights") else None, cell, name)
    W, U, b, layer = _keras_weights(entry, name)
    kind = _kind(cell)
    H = cell.num_units
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    if kind == "lstm":
        _plain_lstm(cell, "Keras LSTM")
    if kind == "gru" and (reset_after or (b is not None and b.ndim == 2)):
        raise ValueError("%s: %s" % (name, GRU_RESET_AFTER_MESSAGE))
    if kind == "gru" and b is None and layer is None and reset_after is None:
        # Without the layer's config or its bias ([3H] or [2, 3H]) nothing shows which GRU the
        # weights come from, and reset_after=True ones would load into a different function.
        raise ValueError("%s: GRU weights without a bias do not show whether the Keras layer had "
                         "reset_after=True (Keras 3's default, which npl's GRUCell cannot run) or "
                         "False; pass the layer itself, or reset_after=False if you know it was False"
                         % name)
    if W.ndim != 2 or W.shape[1] != gates * H:
        raise ValueError("%s: kernel must have shape [input_size, %d] for %s(num_units=%d), got %s"
                         % (name, gates * H, type(cell).__name__, H, W.shape))
    if U.shape != (H, gates * H):
        raise ValueError("%s: recurrent_kernel must have shape %s, got %s" % (name, (H, gates * H), U.shape))
    if b is None:
        b = np.zeros(gates * H, W.dtype)
    if b.shape != (gates * H,):
        raise ValueError("%s: bias must have shape %s, got %s" % (name, (gates * H,), b.shape))
    K = np.concatenate([W, U], axis=0)                                   # [I+H, G*H]
    if kind == "lstm":
        b = b.copy()
        b[H:2 * H] -= np.asarray(cell.forget_bias, b.dtype)              # unfold the forget bias
        return {"kernel": _blocks(K, _IFJO), "bias": _blocks(b, _IFJO)}
    if kind == "gru":
        return dict(zip(cell._param_names,                               # GRUCell's or GRUBlockCell's
                        (np.concatenate([K[:, H:2 * H], K[:, :H]], axis=1), np.concatenate([b[H:2 * H], b[:H]]),
                         K[:, 2 * H:].copy(), b[2 * H:].copy())))
    return {"kernel": K, "bias": b.copy()}


def from_keras(weights, cell, reset_after=None):
    """npl weights from Keras ones: {npl name: array} for ``cell.set_params``.

    ``weights``: a Keras ``LSTM`` / ``GRU`` / ``SimpleRNN`` layer (or its cell), a list
    ``[kernel, recurrent_kernel, bias]`` (``layer.get_weights()``) or a dict with those names; for a
    MultiRNNCell or a list of cells, a list with one such entry per layer.  LSTM:
    ``bias_f = keras_bias_f - forget_bias`` (the cell's).  GRU weights with ``reset_after=True``
    (given, read from the layer, or recognised by a bias of shape [2, 3H]) raise ValueError, and so
    do GRU weights without a bias given as a list or dict, unless ``reset_after=False`` says which
    they are."""
    cell = _unwrap(cell)
    leaves = _layers(cell, "cell")
    if isinstance(cell, RNNCell) and not isinstance(cell, MultiRNNCell):
        entries = [weights]
    else:
        if not isinstance(weights, (list, tuple)) or len(weights) != len(leaves):
            raise ValueError("weights must be a list of %d per-layer entries (one per cell), got %r"
                             % (len(leaves), type(weights).__name__))
        entries = list(weights)
    per = [_from_keras_leaf(e, c, reset_after, "weights[%d]" % k if len(leaves) > 1 else "weights")
           for k, (e, c) in enumerate(zip(entries, leaves))]
    return _nested(cell, per)


# ============================================================================ PyTorch
def _torch_gate_blocks(kind):
    return {"lstm": _IFJO, "rnn": (0,)}[kind]


def _to_torch_layer(cell, suffix):
    kind = _kind(cell)
    if kind == "gru":
        raise ValueError(TORCH_GRU_MESSAGE)
    p = _built_params(cell)
    I, H = cell.input_size, cell.num_units
    order = _torch_gate_blocks(kind)
    if kind == "lstm":
        _plain_lstm(cell, "torch.nn.LSTM", allow_proj=True)
        _check_activation(cell, ("tanh",), "torch.nn.LSTM")
    else:
        _check_activation(cell, ("tanh", "relu"), "torch.nn.RNN")
    K = _blocks(p["kernel"], order)                                      # [I+P, G*H] in torch order
    b_ih = _blocks(p["bias"], order)
    b_hh = np.zeros_like(b_ih)
    if kind == "lstm":
        b_hh[H:2 * H] = cell.forget_bias                                 # f block of i, f, g, o
    sd = {"weight_ih" + suffix: np.ascontiguousarray(K[:I].T),           # [G*H, I]
          "weight_hh" + suffix: np.ascontiguousarray(K[I:].T),           # [G*H, P]
          "bias_ih" + suffix: b_ih, "bias_hh" + suffix: b_hh}
    if "projection/kernel" in p:
        sd["weight_hr" + suffix] = np.ascontiguousarray(p["projection/kernel"].T)   # [P, H]
    return sd


def _uniform(leaves, what):
    kinds = {_kind(c) for c in leaves}
    if len(kinds) > 1:
        raise ValueError("%s: one torch module has one cell type for all layers, got %s"
                         % (what, [type(c).__name__ for c in leaves]))
    sizes = {(c.num_units, c.output_size) for c in leaves}
    if len(sizes) > 1:
        raise ValueError("%s: torch uses one hidden_size (and proj_size) for all layers, got "
                         "(num_units, output_size) = %s"
                         % (what, [(c.num_units, c.output_size) for c in leaves]))


def to_torch(cells, cells_bw=None, tensors=False):
    """A ``state_dict`` for ``torch.nn.LSTM`` (LSTM cells; ``num_proj`` -> ``proj_size``) or
    ``torch.nn.RNN`` (BasicRNNCell), ``num_layers`` = number of cells.

    ``cells``: a cell, a MultiRNNCell or a list of cells (layer k -> ``_l{k}``); ``cells_bw``: the
    backward cells of a bidirectional module (suffix ``_reverse``), as run by
    ``npl.nn.bidirectional_dynamic_rnn`` (one layer) or ``npl.rnn.stack_bidirectional_dynamic_rnn``
    (several: layer k+1 reads [fw, bw] outputs of layer k, as PyTorch does).  ``bias_ih`` gets npl's
    bias and ``bias_hh`` holds ``forget_bias`` in its f block.  NumPy arrays, or torch tensors with
    ``tensors=True`` (for ``module.load_state_dict``).  GRU cells raise ValueError (see
    :data:`TORCH_GRU_MESSAGE`)."""
    fw = _layers(cells, "cells")
    bw = None if cells_bw is None else _layers(cells_bw, "cells_bw")
    if bw is not None and len(bw) != len(fw):
        raise ValueError("cells_bw must have as many layers as cells (%d), got %d" % (len(fw), len(bw)))
    _uniform(fw + (bw or []), "cells")
    sd = {}
    for k, c in enumerate(fw):
        sd.update(_to_torch_layer(c, "_l%d" % k))
        if bw is not None:
            sd.update(_to_torch_layer(bw[k], "_l%d_reverse" % k))
    if tensors:
        torch = _require("torch", "to_torch(tensors=True)", "torch")
        sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    return sd


def _from_torch_layer(sd, cell, suffix, prefix):
    kind = _kind(cell)
    if kind == "gru":
        raise ValueError(TORCH_GRU_MESSAGE)
    H = cell.num_units
    G = {"lstm": 4, "rnn": 1}[kind]
    get = lambda n: sd.get(prefix + n + suffix)                          # noqa: E731
    W_ih, W_hh = get("weight_ih"), get("weight_hh")
    if W_ih is None or W_hh is None:
        raise ValueError("state_dict has no %sweight_ih%s / %sweight_hh%s (keys: %s)"
                         % (prefix, suffix, prefix, suffix, sorted(sd)))
    W_ih, W_hh = _np(W_ih, "weight_ih" + suffix), _np(W_hh, "weight_hh" + suffix)
    if W_ih.ndim != 2 or W_ih.shape[0] != G * H:
        rows = W_ih.shape[0] if W_ih.ndim == 2 else None
        hint = " (3H rows: this is a torch.nn.GRU; %s)" % TORCH_GRU_MESSAGE if rows == 3 * H else ""
        raise ValueError("weight_ih%s must have %d rows for %s(num_units=%d), got shape %s%s"
                         % (suffix, G * H, type(cell).__name__, H, W_ih.shape, hint))
    P = cell.output_size
    if W_hh.shape != (G * H, P):
        raise ValueError("weight_hh%s must have shape %s, got %s" % (suffix, (G * H, P), W_hh.shape))
    W_hr = get("weight_hr")
    if kind == "rnn":
        _check_activation(cell, ("tanh", "relu"), "torch.nn.RNN")
    if kind == "lstm":
        _plain_lstm(cell, "torch.nn.LSTM", allow_proj=True)
        _check_activation(cell, ("tanh",), "torch.nn.LSTM")
        if (W_hr is None) != (cell._num_proj is None):
            raise ValueError("weight_hr%s (torch proj_size) %s but the cell has num_proj=%s"
                             % (suffix, "is absent" if W_hr is None else "is present", cell._num_proj))
    if (get("bias_ih") is None) != (get("bias_hh") is None):
        raise ValueError("state_dict has %s%s but not %s%s; a torch module has both biases or "
                         "neither (bias=False)" % ((prefix, "bias_ih" + suffix, prefix, "bias_hh" + suffix)
                                                   if get("bias_hh") is None else
                                                   (prefix, "bias_hh" + suffix, prefix, "bias_ih" + suffix)))

    def bias(n):                                                         # absent with bias=False
        v = get(n)
        if v is None:
            return np.zeros(G * H, W_ih.dtype)
        v = _np(v, n + suffix)
        if v.shape != (G * H,):
            raise ValueError("%s%s must have shape %s, got %s" % (n, suffix, (G * H,), v.shape))
        return v.copy()

    b_ih, b_hh = bias("bias_ih"), bias("bias_hh")
    if kind == "lstm":
        b_hh[H:2 * H] -= np.asarray(cell.forget_bias, b_hh.dtype)       # f block of i, f, g, o
    order = _torch_gate_blocks(kind)
    K = np.concatenate([W_ih.T, W_hh.T], axis=0)                         # [I+P, G*H]
    out = {"kernel": _blocks(K, order), "bias": _blocks(b_ih + b_hh, order)}
    if W_hr is not None:
        W_hr = _np(W_hr, "weight_hr" + suffix)
        if W_hr.shape != (P, H):
            raise ValueError("weight_hr%s must have shape %s, got %s" % (suffix, (P, H), W_hr.shape))
        out["projection/kernel"] = np.ascontiguousarray(W_hr.T)         # [H, P]
    return out


def _torch_prefix(sd):
    hits = sorted({k[:-len("weight_ih_l0")] for k in sd if k.endswith("weight_ih_l0")})
    if len(hits) != 1:
        raise ValueError("state_dict: expected one recurrent module (one key ending in 'weight_ih_l0'), "
                         "found prefixes %s; pass prefix=" % hits)
    return hits[0]


def from_torch(state_dict, cells, cells_bw=None, prefix=None):
    """npl weights from a ``torch.nn.LSTM`` / ``torch.nn.RNN`` ``state_dict`` (tensors or arrays).

    ``cells`` (and ``cells_bw`` for a bidirectional module) are shaped as in :func:`to_torch`; the
    result has the same shape: a dict for a cell, one ``cell_<k>/``-prefixed dict for a
    MultiRNNCell, a list of dicts for a list of cells, and a pair ``(fw, bw)`` with ``cells_bw``.
    LSTM: ``bias = bias_ih + (bias_hh - forget_bias on the f block)``, gate blocks i, f, g, o ->
    i, j, f, o.  ``prefix`` (e.g. ``"lstm."``) is found automatically when the dict holds one
    module.  ``nn.GRU`` weights raise ValueError (see :data:`TORCH_GRU_MESSAGE`)."""
    if not hasattr(state_dict, "items"):
        raise TypeError("state_dict must be a dict name -> tensor, got %s" % type(state_dict).__name__)
    sd = dict(state_dict.items())
    if prefix is None:
        prefix = _torch_prefix(sd)
    fw = _layers(cells, "cells")
    bw = None if cells_bw is None else _layers(cells_bw, "cells_bw")
    if any(_kind(c) == "gru" for c in fw + (bw or [])):
        raise ValueError(TORCH_GRU_MESSAGE)
    n_sd = len([k for k in sd if re.fullmatch(re.escape(prefix) + r"weight_ih_l\d+", k)])
    if n_sd != len(fw):
        raise ValueError("state_dict has %d layers but %d cells were given" % (n_sd, len(fw)))
    has_rev = any(k.startswith(prefix) and k.endswith("_reverse") for k in sd)
    if has_rev != (bw is not None):
        raise ValueError("state_dict is %s but cells_bw is %s"
                         % ("bidirectional (has _reverse keys)" if has_rev else "unidirectional",
                            "None" if bw is None else "given"))
    if bw is not None and len(bw) != len(fw):
        raise ValueError("cells_bw must have as many layers as cells (%d), got %d" % (len(fw), len(bw)))
    out_fw = _nested(cells, [_from_torch_layer(sd, c, "_l%d" % k, prefix) for k, c in enumerate(fw)])
    if bw is None:
        return out_fw
    out_bw = _nested(cells_bw, [_from_torch_layer(sd, c, "_l%d_reverse" % k, prefix)
                                for k, c in enumerate(bw)])
    return out_fw, out_bw
