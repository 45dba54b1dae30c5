"""npl: ``npl.nn.dynamic_rnn(cell, x, time_major=True[, return_trace=True])`` and
``trace.backward(g, None)``; the sampling case calls ``cell(x_t, state)`` once per step.

``--device cuda``: ``npl.use("cupy")``, the data and the weights on the GPU, and every timed call
ends with a device synchronisation.  npl's own CUDA kernels compute in float32, and so do CuPy's
cuBLAS GEMMs unless ``CUPY_TF32`` is set above 0 (the parent sets it to 0 for GPU workers)."""
import os

import numpy as np

from . import Unavailable, synced

_state = {"sync": None}
DEVICE_MEMORY_METHOD = ("CuPy memory pool: bytes it holds after one call minus the bytes in use "
                        "before it (its free blocks emptied first; freed blocks are reused within "
                        "the call, so this is its high-water mark above the weights and inputs)")


def source_digest(package):
    """SHA-1 (12 hex digits) of the package's .py, .c and .cu files: which engine was measured."""
    import glob
    import hashlib
    import os
    h = hashlib.sha1()
    root = os.path.dirname(package.__file__)
    paths = [p for ext in ("py", "c", "cu") for p in
             glob.glob(os.path.join(root, "**", "*." + ext), recursive=True)]
    for path in sorted(paths):
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:12]


def load(threads, options):
    import npl
    import npl.kernels.cpu as cpu_kernels
    extra = {}
    if options.get("device", "cpu") == "cuda":
        try:
            npl.use("cupy")
        except npl.BackendError as e:
            raise Unavailable("npl on the GPU needs CuPy and a CUDA device: %s" % e) from None
        import cupy
        _state["sync"] = cupy.cuda.Device().synchronize
        extra = {"cupy": cupy.__version__,
                 "gpu": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(errors="replace"),
                 "fused_cuda_kernels": bool(npl.kernels.enabled),
                 "cupy_tf32": os.environ.get("CUPY_TF32", "0"),
                 "float32_gemm": "TF32 (CUPY_TF32 > 0)" if _int_env("CUPY_TF32") > 0 else
                                 "float32 (CuPy's default; CUPY_TF32 unset or 0)"}
    else:
        npl.use("numpy")
    return dict(extra, **{"version": npl.__version__, "backend": npl.backend_name(), "source_sha1": source_digest(npl),
            "cpu_kernels": cpu_kernels.status(),
            "path": npl.__file__,
            "api": "npl.nn.dynamic_rnn(time_major=True, return_trace=True) + trace.backward"})


def _synced(fn):
    return synced(fn, _state["sync"])


def _int_env(name):
    try:
        return int(os.environ.get(name, "0").strip() or 0)
    except ValueError:
        return 0


def device_peak_memory(fn):
    """--device cuda: the growth of the CuPy pool during one call of ``fn``: the bytes it holds
    after the call minus the bytes in use before it (the weights, inputs and every other case's
    arrays), its free blocks emptied first, as PyTorch's and TensorFlow's peaks are growths."""
    import gc
    import cupy
    pool = cupy.get_default_memory_pool()
    _state["sync"]()
    gc.collect()
    release_memory()
    pool.free_all_blocks()
    base = pool.used_bytes()
    fn()
    _state["sync"]()
    return pool.total_bytes() - base


def release_memory():
    """Give the workspace pool's free buffers back, so that a memory measurement counts them."""
    import npl
    npl.workspace.clear()


def make_cell(config, cell):
    """BasicLSTMCell or GRUCell per layer (MultiRNNCell for a stack), built for float32 on the
    backend in force (npl.use)."""
    import npl
    cls = {"lstm": npl.rnn.BasicLSTMCell, "gru": npl.rnn.GRUCell}[cell]
    cells = [cls(h, seed=k) for k, h in enumerate(config.H)]
    rnn = cells[0] if len(cells) == 1 else npl.rnn.MultiRNNCell(cells)
    rnn.build(config.I, np.float32)
    return rnn


def build(config, cell, data, modes, options):
    import npl
    rnn = make_cell(config, cell)
    fns, info = {}, {"cell": repr(rnn)}
    if _state["sync"] is not None:                               # --device cuda
        data = {k: npl.to_device(v, "cupy") for k, v in data.items()}
    if config.sample:
        xs = data["xs"]                                          # [T, 1, I]

        def step():
            state = rnn.zero_state(1, np.float32)
            for t in range(config.T):
                _, state = rnn(xs[t], state)                     # one step, state carried
        fns["step"] = _synced(step)
        return {"fns": fns, "info": info}
    x, g = data["x"], data["g"]                                  # [T, B, I], [T, B, H_top]

    def fwd():
        npl.nn.dynamic_rnn(rnn, x, time_major=True)

    def fwdbwd():
        _, _, trace = npl.nn.dynamic_rnn(rnn, x, time_major=True, return_trace=True)
        trace.backward(g, None)                                  # loss = sum(outputs * g)
    if "fwd" in modes:
        fns["fwd"] = _synced(fwd)
    if "fwdbwd" in modes:
        fns["fwdbwd"] = _synced(fwdbwd)
        info["trace_nbytes"] = int(npl.nn.dynamic_rnn(rnn, x, time_major=True,
                                                      return_trace=True)[2].nbytes)
    return {"fns": fns, "info": info}
