"""Shared TensorFlow set-up: import with legacy Keras (tf_keras), quiet logs, thread pools, and
the device: GPUs hidden for ``--device cpu`` (so a GPU machine's CPU table is a CPU table), and
required for ``--device cuda``, where TensorFloat-32 is turned off (TensorFlow enables it by
default on Ampere and newer GPUs; every framework of the GPU table computes in full float32).

Peak memory on the CPU: with oneDNN on (TensorFlow's default on x86) buffers of 4 KiB and more
come from a BFC pool (``MklCPUAllocator``) that keeps freed memory for the next call, so the RSS
growth of a call misses them; :func:`cpu_memory_pool` gives the pool's own statistics
(``tf.config.experimental.get_memory_info('CPU:0')``) to :class:`benchmarks.measure.PeakMemory`.
With oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``) TensorFlow's CPU allocator is malloc, whose freed
buffers the RSS method sees, and it reports no statistics."""
import os

from . import Unavailable

DEVICE_MEMORY_METHOD = "tf.config.experimental.get_memory_info('GPU:0')['peak'] after reset"
CPU_POOL_NAME = ("TensorFlow CPU pool peak growth (get_memory_info('CPU:0')['peak'] - ['current'] "
                 "after reset_memory_stats; oneDNN's BFC pool keeps freed buffers >= 4 KiB)")


def import_tf(threads, device="cpu"):
    """Import TensorFlow with TF_USE_LEGACY_KERAS=1 and ``threads`` intra- and inter-op threads."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:   # the runtime already started
        pass
    tf.get_logger().setLevel("ERROR")
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cuda" and not gpus:
        raise Unavailable("TensorFlow sees no GPU (tensorflow-cpu, or a build without CUDA, or no "
                          "driver)")
    if device == "cuda" and getattr(getattr(tf.test, "experimental", None), "sync_devices",
                                    None) is None:
        raise Unavailable("TensorFlow %s has no tf.test.experimental.sync_devices (TF 2.12 and "
                          "later): its GPU timings could not wait for the device's queued work"
                          % tf.__version__)
    if device == "cuda":
        # TensorFlow runs float32 matmuls and cuDNN RNNs in TF32 on Ampere and newer by default;
        # npl (CuPy's cuBLAS, CUPY_TF32 unset) and PyTorch (turned off in torch_fw) use float32
        tf.config.experimental.enable_tensor_float_32_execution(False)
    if device == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass
    return tf


def sync(tf):
    """Wait for the GPU's queued work (a no-op on the CPU)."""
    s = getattr(getattr(tf.test, "experimental", None), "sync_devices", None)
    if s is not None:
        s()


def device_peak_memory(tf, fn):
    """--device cuda: TensorFlow's GPU memory high-water mark during one call of ``fn``, above
    what was allocated before it (the weights and inputs)."""
    sync(tf)
    tf.config.experimental.reset_memory_stats("GPU:0")
    base = tf.config.experimental.get_memory_info("GPU:0")["current"]
    fn()
    sync(tf)
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] - base


def onednn_enabled():
    """Whether TensorFlow's oneDNN ops (and with them its pooling CPU allocator) are on; None when
    this TensorFlow does not say."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        v = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
        return None if v is None else v.strip().lower() not in ("0", "false", "off")


def cpu_memory_pool(tf):
    """The ``pool`` argument of :meth:`benchmarks.measure.PeakMemory.measure` for TensorFlow on
    the CPU: its allocator's statistics where it keeps them (oneDNN's BFC pool); None where it has
    none and oneDNN is off (malloc: the RSS growth is the whole peak); a lower-bound marker where
    it has none but oneDNN says it pools."""
    exp = tf.config.experimental
    try:
        exp.reset_memory_stats("CPU:0")
        exp.get_memory_info("CPU:0")
    except (ValueError, RuntimeError, AttributeError) as e:
        if onednn_enabled():
            return {"lower_bound": True,
                    "why": "a lower bound: TensorFlow's oneDNN CPU allocator keeps freed buffers "
                           "in its pool and gives no statistics here (%s: %s)" % (type(e).__name__, e)}
        return None

    def reset():
        exp.reset_memory_stats("CPU:0")
        return exp.get_memory_info("CPU:0")["current"]

    def peak():
        return exp.get_memory_info("CPU:0")["peak"]
    return {"name": CPU_POOL_NAME, "reset": reset, "peak": peak}


def tf_info(tf, threads, device="cpu"):
    info = {"version": tf.__version__, "intra_op_threads": threads, "inter_op_threads": threads}
    try:
        import tf_keras
        info["keras"] = "tf_keras %s" % tf_keras.__version__
    except ImportError:
        info["keras"] = "keras %s" % getattr(tf.keras, "__version__", "?")
    if device == "cuda":
        info["tensor_float_32_execution"] = bool(tf.config.experimental.tensor_float_32_execution_enabled())
    else:
        info["onednn"] = onednn_enabled()
    return info
