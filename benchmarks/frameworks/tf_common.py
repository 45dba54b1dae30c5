"""Shared TensorFlow set-up: import with legacy Keras (tf_keras), quiet logs, thread pools."""
import os


def import_tf(threads):
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
    return tf


def tf_info(tf, threads):
    info = {"version": tf.__version__, "intra_op_threads": threads, "inter_op_threads": threads}
    try:
        import tf_keras
        info["keras"] = "tf_keras %s" % tf_keras.__version__
    except ImportError:
        info["keras"] = "keras %s" % getattr(tf.keras, "__version__", "?")
    return info
