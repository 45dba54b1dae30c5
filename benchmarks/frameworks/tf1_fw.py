"""TensorFlow 1's graph form: a ``tf.compat.v1`` graph run by a ``Session``.

``tf.compat.v1.nn.dynamic_rnn(cell, x, time_major=True)`` over ``BasicLSTMCell`` / ``GRUCell``
(``MultiRNNCell`` for the stack) and ``tf.gradients(sum(outputs * g), [x] + variables)``.  Each
mode gets its own graph (adding gradients rewrites the forward loop to keep its intermediates, which
would slow a forward-only run); the session runs a ``tf.group`` of the results, so no output is
copied back to NumPy.  The sampling case feeds one step and the state per ``session.run``, as a
TF1 sampling loop does.
"""
import numpy as np

from . import tf_common
from .tf_common import import_tf, tf_info, DEVICE_MEMORY_METHOD  # noqa: F401

_state = {}


def load(threads, options):
    tf = import_tf(threads, options.get("device", "cpu"))
    _state["device"] = options.get("device", "cpu")
    _state["tf"], _state["threads"] = tf, threads
    info = tf_info(tf, threads, options.get("device", "cpu"))
    try:
        from tensorflow.python.ops import control_flow_util
        info["control_flow_v2"] = bool(control_flow_util.ENABLE_CONTROL_FLOW_V2)
    except (ImportError, AttributeError):
        pass
    return info


def _cells(v1, config, cell):
    cls = {"lstm": v1.nn.rnn_cell.BasicLSTMCell, "gru": v1.nn.rnn_cell.GRUCell}[cell]
    cells = [cls(h) for h in config.H]
    return cells[0] if len(cells) == 1 else v1.nn.rnn_cell.MultiRNNCell(cells)


def _session(tf, graph):
    v1 = tf.compat.v1
    t = _state["threads"]
    cfg = v1.ConfigProto(intra_op_parallelism_threads=t, inter_op_parallelism_threads=t)
    sess = v1.Session(graph=graph, config=cfg)
    with graph.as_default():
        sess.run(v1.global_variables_initializer())
    return sess


def _sequence_fn(tf, config, cell, data, mode):
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        x = tf.constant(data["x"])                                   # [T, B, I]
        out, _ = v1.nn.dynamic_rnn(_cells(v1, config, cell), x, time_major=True, dtype=tf.float32)
        if mode == "fwd":
            op = tf.group(out)
        else:
            loss = tf.reduce_sum(out * tf.constant(data["g"]))
            op = tf.group(*tf.gradients(loss, [x] + v1.trainable_variables()))
    sess = _session(tf, graph)
    return lambda: sess.run(op)


def _sample_fn(tf, config, cell, data):
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(0)
        rnn = _cells(v1, config, cell)
        x_ph = v1.placeholder(tf.float32, [1, config.I])
        state_ph = tf.nest.map_structure(lambda n: v1.placeholder(tf.float32, [1, n]), rnn.state_size)
        out, new_state = rnn(x_ph, state_ph)
        flat_ph, flat_new = tf.nest.flatten(state_ph), tf.nest.flatten(new_state)
    sess = _session(tf, graph)
    xs = data["xs"]                                                  # [T, 1, I]
    zeros = [np.zeros((1, p.shape[1]), np.float32) for p in flat_ph]

    def step():
        state = zeros
        for t in range(config.T):
            feed = dict(zip(flat_ph, state))
            feed[x_ph] = xs[t]
            _, state = sess.run([out, flat_new], feed_dict=feed)
    return step


def build(config, cell, data, modes, options):
    tf = _state["tf"]
    if config.sample:
        return {"fns": {"step": _sample_fn(tf, config, cell, data)}, "info": {}}
    return {"fns": {m: _sequence_fn(tf, config, cell, data, m) for m in modes}, "info": {}}


def device_peak_memory(fn):
    """--device cuda: TensorFlow's GPU memory high-water mark during one call of ``fn``."""
    return tf_common.device_peak_memory(_state["tf"], fn)


def cpu_memory_pool():
    """--device cpu: TensorFlow's CPU allocator statistics for the peak-memory pass (see
    tf_common.cpu_memory_pool)."""
    return tf_common.cpu_memory_pool(_state["tf"])
