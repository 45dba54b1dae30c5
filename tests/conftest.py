import os
import sys

# Small GEMMs on a shared 2-core machine stall with a multi-threaded OpenBLAS (a thread waiting for
# a core); the suite runs single-threaded BLAS unless the caller chose otherwise.  Set before NumPy
# is imported, which is why it is the first thing here.
_NUMPY_WAS_LOADED = "numpy" in sys.modules
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_HERE = os.path.dirname(os.path.abspath(__file__))
_SHARED = os.path.normpath(os.path.join(_HERE, "..", "..", "shared", "data"))
if "NPL_DATA_DIR" not in os.environ and os.path.isdir(_SHARED):
    os.environ["NPL_DATA_DIR"] = _SHARED


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run long training tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("NPL_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="long run: opt in with --runslow or NPL_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config):
    import npl
    lines = ["npl backend: %s; OPENBLAS_NUM_THREADS=%s%s" % (
        npl.backend_name(), os.environ.get("OPENBLAS_NUM_THREADS"),
        " (numpy was loaded before conftest: not applied)" if _NUMPY_WAS_LOADED else "")]
    try:
        import tensorflow as tf  # noqa: F401
        lines.append("tensorflow: %s (live parity tests run)" % tf.__version__)
    except Exception as e:
        lines.append("tensorflow: not installed (%s); live parity tests skip, stored cases run" % e)
    return lines


@pytest.fixture
def xp():
    """The array module of the backend in force (NPL_BACKEND=cupy runs the suite on the GPU)."""
    import npl
    from npl.backend import default_xp
    return default_xp()


@pytest.fixture(scope="session")
def tf():
    """TensorFlow with TF1's rnn_cell (legacy Keras), or a skip where it is not installed."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    return pytest.importorskip("tensorflow")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def no_workspace_pool():
    """Memory measurements see the allocator: pooling off (and free pooled buffers released)."""
    import npl
    old = npl.workspace.set_limit(0)
    yield
    npl.workspace.set_limit(old)
