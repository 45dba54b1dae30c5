"""TensorFlow 2's Keras form: ``tf.keras.layers.LSTM`` / ``GRU`` (return_sequences=True,
time_major=True where the Keras has it) called inside a ``tf.function``; forward+backward takes
``tf.GradientTape`` gradients of sum(outputs * g) with respect to the inputs and the weights.

Framework "keras" builds the GRU with ``reset_after=False`` (TF1's GRUCell formulation); "keras-ra"
with ``reset_after=True`` (Keras' default, the cuDNN/PyTorch formulation).  The sampling case calls
a ``tf.function`` of the cell (LSTMCell / GRUCell) once per step with the state carried.
"""
import inspect

import numpy as np

from . import synced, tf_common
from .tf_common import import_tf, tf_info, DEVICE_MEMORY_METHOD  # noqa: F401

_state = {}


def load(threads, options):
    tf = import_tf(threads, options.get("device", "cpu"))
    _state["device"] = options.get("device", "cpu")
    _state["tf"] = tf
    _state["time_major"] = "time_major" in inspect.signature(tf.keras.layers.LSTM.__init__).parameters
    info = tf_info(tf, threads, options.get("device", "cpu"))
    info["layout"] = "time-major" if _state["time_major"] else "batch-major (this Keras has no time_major)"
    return info


def _kwargs(cell, options):
    kw = {}
    if cell == "gru":
        kw["reset_after"] = options.get("variant") == "keras-ra"
    return kw


def build(config, cell, data, modes, options):
    tf = _state["tf"]
    tf.keras.utils.set_random_seed(0)
    kw = _kwargs(cell, options)
    info = dict(kw)
    if config.sample:
        cls = {"lstm": tf.keras.layers.LSTMCell, "gru": tf.keras.layers.GRUCell}[cell]
        cells = [cls(h, **kw) for h in config.H]
        rnn = cells[0] if len(cells) == 1 else tf.keras.layers.StackedRNNCells(cells)
        rnn.build((1, config.I))
        x0 = tf.zeros((1, config.I))
        states0 = tf.nest.map_structure(lambda n: tf.zeros((1, n)), rnn.state_size)
        step1 = tf.function(lambda x, s: rnn(x, s))
        xs = [tf.constant(data["xs"][t]) for t in range(config.T)]   # [1, I] each
        step1(x0, states0)

        def step():
            state = states0
            for t in range(config.T):
                _, state = step1(xs[t], state)
        return {"fns": {"step": _synced(step)}, "info": info}

    tm = _state["time_major"]
    cls = {"lstm": tf.keras.layers.LSTM, "gru": tf.keras.layers.GRU}[cell]
    layers = []
    for i, h in config.layers:
        layer = cls(h, return_sequences=True, **dict(kw, **({"time_major": True} if tm else {})))
        layer.build((config.T, config.B, i) if tm else (config.B, config.T, i))
        layers.append(layer)
    xa, ga = data["x"], data["g"]
    if not tm:   # Keras 3: its native [B, T, I] layout, transposed once outside the timing
        xa, ga = np.ascontiguousarray(xa.transpose(1, 0, 2)), np.ascontiguousarray(ga.transpose(1, 0, 2))
    x, g = tf.constant(xa), tf.constant(ga)
    weights = [w for layer in layers for w in layer.trainable_variables]

    def run(inp):
        y = inp
        for layer in layers:
            y = layer(y, training=False)
        return y

    @tf.function
    def fwd():
        return run(x)

    @tf.function
    def fwdbwd():
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(run(x) * g)
        return tape.gradient(loss, [x] + weights)
    table = {"fwd": fwd, "fwdbwd": fwdbwd}
    return {"fns": {m: _synced(table[m]) for m in modes}, "info": info}


def _synced(fn):
    """On the GPU a tf.function returns before its kernels finish: wait for them."""
    tf = _state["tf"]
    return synced(fn, (lambda: tf_common.sync(tf)) if _state.get("device") == "cuda" else None)


def cpu_memory_pool():
    """--device cpu: TensorFlow's CPU allocator statistics for the peak-memory pass (see
    tf_common.cpu_memory_pool)."""
    return tf_common.cpu_memory_pool(_state["tf"])


def device_peak_memory(fn):
    """--device cuda: TensorFlow's GPU memory high-water mark during one call of ``fn``."""
    return tf_common.device_peak_memory(_state["tf"], fn)
