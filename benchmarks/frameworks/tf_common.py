"""Shared TensorFlow set-up: import with legacy Keras (tf_keras), quiet logs, thread pools, and
the device: GPUs hidden for ``--device cpu`` (so a GPU machine's CPU table is a CPU table), and
required for ``--device cuda``."""
import os

from . import Unavailable

DEVICE_MEMORY_METHOD = "tf.config.experimental.get_memory_info('GPU:0')['peak'] after reset"


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
    tf.config.experimental.reset_memory_stats("GPU:0")
    base = tf.config.experimental.get_memory_info("GPU:0")["current"]
    fn()
    sync(tf)
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] - base


def tf_info(tf, threads):
    info = {"version": tf.__version__, "intra_op_threads": threads, "inter_op_threads": threads}
    try:
        import tf_keras
        info["keras"] = "tf_keras %s" % tf_keras.__version__
    except ImportError:
        info["keras"] = "keras %s" % getattr(tf.keras, "__version__", "?")
    return info
