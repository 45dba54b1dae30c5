"""PyTorch: ``nn.LSTM`` / ``nn.GRU`` (batch_first=False), one module per layer (C4: two layers of
different sizes); forward under ``torch.no_grad()``, forward+backward with ``loss.backward()``.

PyTorch's GRU applies the reset gate after the recurrent matmul (Keras' reset_after=True); its
GEMM FLOPs are the same as TF1's GRUCell.

``--device cuda``: modules and tensors on ``cuda`` (cuDNN's fused RNN kernels), every timed call
ends with ``torch.cuda.synchronize()``, and TensorFloat-32 is off
(``torch.backends.cuda.matmul.allow_tf32 = False``, ``torch.backends.cudnn.allow_tf32 = False``;
cuDNN allows TF32 by default, and its RNNs use it on Ampere and newer), so that PyTorch computes in
full float32 as npl on CuPy and TensorFlow (TF32 off there too) do."""
import numpy as np

from . import Unavailable, synced

_state = {"device": "cpu"}
DEVICE_MEMORY_METHOD = ("torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus "
                        "memory_allocated before the call")


def load(threads, options):
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:   # already set once parallel work started
        pass
    info = {"version": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
            "mkl": bool(torch.backends.mkl.is_available())}
    if options.get("device", "cpu") == "cuda":
        if not torch.cuda.is_available():
            raise Unavailable("PyTorch sees no CUDA device (torch.cuda.is_available() is False; "
                              "a CPU build, or no driver)")
        _state["device"] = "cuda"
        info.update(gpu=torch.cuda.get_device_name(0), cudnn=torch.backends.cudnn.version(),
                    cudnn_enabled=bool(torch.backends.cudnn.enabled), tf32=disable_tf32(torch))
    return info


def disable_tf32(torch):
    """Turn TensorFloat-32 off for cuBLAS matmuls and cuDNN (its RNNs included); return the
    settings read back (and PyTorch 2.9+'s fp32_precision view of them, where it has one)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = {"torch.backends.cuda.matmul.allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
           "torch.backends.cudnn.allow_tf32": bool(torch.backends.cudnn.allow_tf32)}
    for name, obj in (("torch.backends.cuda.matmul.fp32_precision", torch.backends.cuda.matmul),
                      ("torch.backends.cudnn.rnn.fp32_precision",
                       getattr(torch.backends.cudnn, "rnn", None))):
        try:
            value = getattr(obj, "fp32_precision")
        except (AttributeError, RuntimeError):
            continue
        out[name] = str(value)
    return out


def _synced(fn):
    if _state["device"] != "cuda":
        return fn
    import torch
    return synced(fn, torch.cuda.synchronize)


def device_peak_memory(fn):
    """--device cuda: torch.cuda.max_memory_allocated during one call of ``fn``."""
    import torch
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def gemm_ceiling(n, repeats, min_run_s, warmup=1):
    """torch.mm GFLOP/s of float32 [n, n] @ [n, n] (PyTorch's own BLAS)."""
    import torch
    from benchmarks.measure import gemm_gflops
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32))
    b = torch.from_numpy(rng.standard_normal((n, n), dtype=np.float32))
    return gemm_gflops(torch.mm, a, b, repeats, min_run_s, warmup)


def build(config, cell, data, modes, options):
    import torch
    torch.manual_seed(0)
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    dev = _state["device"]
    layers = [cls(i, h, batch_first=False).to(dev) for i, h in config.layers]
    fns = {}
    if config.sample:
        xs = torch.from_numpy(data["xs"]).to(dev)                # [T, 1, I]

        def step():
            with torch.no_grad():
                states = [None] * len(layers)
                for t in range(config.T):
                    y = xs[t:t + 1]                              # [1, 1, I]: one step, batch 1
                    for k, layer in enumerate(layers):
                        y, states[k] = layer(y, states[k])
        fns["step"] = _synced(step)
        return {"fns": fns, "info": {"module": repr(layers)}}
    x = torch.from_numpy(data["x"]).to(dev)                      # [T, B, I]
    g = torch.from_numpy(data["g"]).to(dev)                      # [T, B, H_top]
    xg = x.clone().requires_grad_(True)

    def run(inp):
        y = inp
        for layer in layers:
            y, _ = layer(y)
        return y

    def fwd():
        with torch.no_grad():
            run(x)

    def fwdbwd():
        for layer in layers:
            layer.zero_grad(set_to_none=True)
        xg.grad = None
        loss = (run(xg) * g).sum()
        loss.backward()                                          # grads of weights and inputs
    if "fwd" in modes:
        fns["fwd"] = _synced(fwd)
    if "fwdbwd" in modes:
        fns["fwdbwd"] = _synced(fwdbwd)
    return {"fns": fns, "info": {"module": repr(layers)}}
