"""One module per framework, each with the same two functions.

``load(threads, options) -> dict`` imports the framework (raising ImportError when it is not
installed, :class:`Unavailable` when it cannot use ``options["device"]``), sets its thread counts
and returns facts to record (version, threads, ...).  With ``device == "cuda"`` the callables
synchronise the device before they return, and ``device_peak_memory(fn)`` (where a module has
it) gives the device memory high-water mark of one call.

``build(config, cell, data, modes, options) -> dict`` builds the model for one configuration and
cell type and returns ``{"fns": {mode: callable}, "info": {...}}``: each callable runs one batch
(mode "fwd": the forward; "fwdbwd": the forward and the backward of the loss sum(outputs * g),
giving the gradients of the weights and the inputs; "step": for the sampling configuration, T
single steps with the state carried).  ``data`` holds the same NumPy arrays for every framework:
``x`` [T, B, I] float32 (time-major), ``g`` [T, B, H_top] the output cotangent, and ``xs`` the
one-hot steps [T, 1, I] of the sampling case.
"""
import importlib


class Unavailable(Exception):
    """The framework is installed but cannot run the request (e.g. no CUDA device for
    ``--device cuda``); the worker records the message as a skip note."""

def synced(fn, sync):
    """``fn`` followed by ``sync()`` (a device synchronisation), or ``fn`` itself when sync is None,
    so that a timed call on a GPU includes the work it queued."""
    if sync is None:
        return fn

    def call():
        fn()
        sync()
    return call


MODULES = {"npl": "npl_fw", "torch": "torch_fw", "tf1": "tf1_fw", "keras": "keras_fw",
           "keras-ra": "keras_fw"}


def get(framework):
    """The module that benchmarks ``framework`` (one of benchmarks.spec.FRAMEWORKS)."""
    return importlib.import_module("benchmarks.frameworks." + MODULES[framework])
