"""The per-framework subprocess: ``python -m benchmarks.worker TASK.json OUT.json``.

Each framework runs in its own process, started by :mod:`benchmarks.run` with the thread-count
variables already in its environment (so NumPy's, MKL's and OpenMP's pools start at that size).
The task names a framework, the cases (configuration, cell, modes) and the timing protocol.  The
worker first times every case (:func:`benchmarks.measure.time_calls`), then measures peak memory of
each case once (:class:`benchmarks.measure.PeakMemory`; for npl also the tracemalloc peak), and
writes one JSON file.  A framework that is not installed gives ``{"skipped": note}``; a case that
fails gives an ``error`` entry and the others still run.

Task kinds: ``table`` (the cases above), ``ceiling`` (NumPy GEMM GFLOP/s: 2048x2048 and each
configuration's recurrent GEMM [B, H] @ [H, 4H], timed with the table's protocol; the recurrent
GEMMs' runs last at least RECURRENT_MIN_RUN_S) and ``long`` (npl at T=10000: no recursion,
linear cost).
"""
import inspect
import json
import math
import os
import sys
import time
import traceback
import zlib

import numpy as np

from benchmarks import frameworks, measure
from benchmarks.spec import Config, Protocol

# A recurrent GEMM takes microseconds: a run of it must last this long however short
# --min-run-ms is, or the ceiling is timer noise (recorded in the ceiling's JSON).
RECURRENT_MIN_RUN_S = 0.02


def make_data(config, cell):
    """The inputs every framework gets for a case (seeded by the configuration's shape)."""
    seed = zlib.crc32(("%s|%d|%d|%d|%s" % (cell, config.B, config.T, config.I, config.H)).encode())
    rng = np.random.default_rng(seed)
    T, B, I = config.T, config.B, config.I
    if config.sample:
        ids = rng.integers(0, I, size=T)
        xs = np.zeros((T, 1, I), np.float32)
        xs[np.arange(T), 0, ids] = 1.0                       # one-hot characters, batch 1
        return {"xs": xs}
    return {"x": rng.uniform(-1.0, 1.0, (T, B, I)).astype(np.float32),
            "g": rng.standard_normal((T, B, config.H[-1])).astype(np.float32)}


def _error_text(e):
    tb = traceback.format_exc().strip().splitlines()
    return "%s: %s | %s" % (type(e).__name__, e, " | ".join(tb[-4:]))


def run_table(task, out):
    fw = task["framework"]
    proto = Protocol(**task["protocol"])
    mod = frameworks.get(fw)
    try:
        out["load"] = mod.load(task["threads"], task.get("options", {}))
    except ImportError as e:
        out["skipped"] = "%s is not installed (%s)" % (fw, e)
        return
    except frameworks.Unavailable as e:
        out["skipped"] = str(e)
        return
    device = task.get("device", "cpu")
    if fw == "npl":
        out["blas"] = measure.blas_info()
    if task.get("ceiling") and hasattr(mod, "gemm_ceiling") and device == "cpu":
        out["gemm_2048"] = mod.gemm_ceiling(2048, proto.repeats, proto.min_run_s, proto.warmup)
    live = []
    options = dict(task.get("options", {}), variant=fw)
    for case in task["cases"]:
        config, cell = Config.from_dict(case["config"]), case["cell"]
        try:
            built = mod.build(config, cell, make_data(config, cell), case["modes"], options)
        except Exception as e:   # one failing case must not hide the others
            out["errors"].append({"config": config.name, "cell": cell, "error": _error_text(e)})
            continue
        for mode, fn in built["fns"].items():
            rec = {"config": config.name, "cell": cell, "mode": mode, "info": built["info"]}
            t0 = time.perf_counter()
            try:
                rec.update(measure.time_calls(fn, proto.warmup, proto.repeats, proto.min_run_s))
            except Exception as e:
                out["errors"].append({"config": config.name, "cell": cell, "mode": mode,
                                      "error": _error_text(e)})
                continue
            rec["wall_s"] = time.perf_counter() - t0
            out["results"].append(rec)
            live.append((rec, fn))
            _progress("%s %s %s %s: %.3f ms" % (fw, config.name, cell, mode,
                                                1e3 * sorted(rec["times_s"])[len(rec["times_s"]) // 2]))
    if task.get("memory", True) and live and device == "cuda":
        peak = getattr(mod, "device_peak_memory", None)
        out["memory_method"] = getattr(mod, "DEVICE_MEMORY_METHOD", "not measured on the device")
        for rec, fn in live:
            if peak is None:
                rec["memory_error"] = "no device memory measurement for %s" % fw
                continue
            try:
                rec["memory"] = {"peak_rss_growth_bytes": int(peak(fn)),
                                 "method": out["memory_method"]}
            except Exception as e:
                rec["memory_error"] = _error_text(e)
    elif task.get("memory", True) and live:
        pm = measure.PeakMemory()
        release = getattr(mod, "release_memory", None)
        pool_of = getattr(mod, "cpu_memory_pool", None)   # an allocator pool RSS cannot see
        pool = pool_of() if pool_of is not None else None
        out["memory_method"] = pm.method
        if pool is not None:
            out["memory_method"] += (" + " + pool["name"]) if pool.get("peak") else \
                " (%s)" % pool.get("why", "a lower bound")
        for rec, fn in live:
            try:
                rec["memory"] = pm.measure(fn, release, pool)
                if fw == "npl":
                    rec["tracemalloc_peak_bytes"] = measure.tracemalloc_peak(fn, release)
            except Exception as e:
                rec["memory_error"] = _error_text(e)


def _cuda_matmul():
    """(asarray, matmul that synchronises) on the GPU through CuPy, else None with the reason."""
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:   # not installed, or no device / driver
        return None, "CuPy with a CUDA device is needed for the GPU GEMM ceiling (%s: %s)" % (
            type(e).__name__, e)

    def mm(a, b):
        r = cupy.matmul(a, b)
        cupy.cuda.Device().synchronize()
        return r
    return (cupy.asarray, mm), None


def run_ceiling(task, out):
    proto = Protocol(**task["protocol"])
    out["blas"] = measure.blas_info()
    rng = np.random.default_rng(0)
    asarray, matmul = np.asarray, np.matmul
    if task.get("device") == "cuda":
        fns, why = _cuda_matmul()
        if fns is None:
            out["skipped"] = why
            return
        asarray, matmul = fns
        out["ceiling_backend"] = "cupy.matmul (cuBLAS)"
    n = 2048
    a = asarray(rng.standard_normal((n, n), dtype=np.float32))
    b = asarray(rng.standard_normal((n, n), dtype=np.float32))
    out["protocol"] = dict(proto._asdict(), recurrent_min_run_s=max(proto.min_run_s, RECURRENT_MIN_RUN_S))
    out["gemm_2048"] = measure.gemm_gflops(matmul, a, b, proto.repeats, proto.min_run_s, proto.warmup)
    rec = {}
    for d in task["configs"]:
        c = Config.from_dict(d)
        B, H = c.B, c.H[0]
        key = "%dx%d@%dx%d" % (B, H, H, 4 * H)
        if key not in rec:
            h = asarray(rng.standard_normal((B, H), dtype=np.float32))
            u = asarray(rng.standard_normal((H, 4 * H), dtype=np.float32))
            r = measure.gemm_gflops(matmul, h, u, proto.repeats,
                                    max(proto.min_run_s, RECURRENT_MIN_RUN_S), proto.warmup)
            r["configs"] = []
            rec[key] = r
        rec[key]["configs"].append(c.name)
    out["recurrent_gemm"] = rec


def run_long(task, out):
    """npl at T=10000 on a small model: runs under a tight recursion limit, cost linear in T."""
    import npl
    from benchmarks.frameworks import npl_fw
    npl.use("numpy")
    out["load"] = {"version": npl.__version__}
    out["blas"] = measure.blas_info()
    B, I, H = task["B"], task["I"], task["H"]
    t_short, t_long = task["T_short"], task["T_long"]
    out["checks"] = []
    for cell in task["cells"]:
        res = {"cell": cell, "B": B, "I": I, "H": H, "runs": {}}
        rnn = npl_fw.make_cell(Config("long", B, t_short, I, (H,), "", False), cell)
        for T in (t_short, t_long):
            cfg = Config("long", B, T, I, (H,), "", False)
            data = make_data(cfg, cell)
            holder = {"finite": {"outputs": True, "d_inputs": True, "weight_grads": True}}

            def fwdbwd():
                outs, _, trace = npl.nn.dynamic_rnn(rnn, data["x"], time_major=True, return_trace=True)
                holder["nbytes"] = trace.nbytes
                d_x = trace.backward(data["g"], None)[0]
                # every call of the check, warm-ups included: the outputs, the input gradient and
                # the weight gradients (accumulated in the cell: finite as long as every call's is)
                f = holder["finite"]
                f["outputs"] = f["outputs"] and bool(np.isfinite(outs).all())
                f["d_inputs"] = f["d_inputs"] and bool(np.isfinite(d_x).all())
                f["weight_grads"] = f["weight_grads"] and all(
                    bool(np.isfinite(g).all()) for g in rnn.grads.values())
            limit = sys.getrecursionlimit()
            sys.setrecursionlimit(len(inspect.stack()) + task["recursion_headroom"])
            try:
                timing = measure.time_calls(fwdbwd, task["warmup"], task["repeats"], 0.0)
                err = None
            except RecursionError as e:
                timing, err = None, "RecursionError: %s" % e
            finally:
                sys.setrecursionlimit(limit)
            run = {"T": T, "error": err}
            if timing is not None:
                med = sorted(timing["times_s"])[len(timing["times_s"]) // 2]
                best = min(timing["times_s"])
                run.update(timing, median_s=med, min_s=best, per_step_ms=1e3 * best / T,
                           trace_nbytes=int(holder["nbytes"]), finite=all(holder["finite"].values()),
                           finite_parts=dict(holder["finite"]),
                           weight_grads=sorted(rnn.grads))
            res["runs"][str(T)] = run
            _progress("long %s T=%d: %s" % (cell, T, "%.3f s" % run["median_s"] if err is None else err))
        s, l_ = res["runs"][str(t_short)], res["runs"][str(t_long)]
        ok = s["error"] is None and l_["error"] is None
        if ok:
            res["time_ratio"] = l_["min_s"] / s["min_s"]
            res["per_step_ratio"] = l_["per_step_ms"] / s["per_step_ms"]
            res["nbytes_ratio"] = l_["trace_nbytes"] / s["trace_nbytes"]
            k = t_long / t_short
            lo, hi = task["per_step_ratio_window"]
            res["linear_time"] = bool(lo <= res["per_step_ratio"] <= hi)
            res["linear_memory"] = bool(abs(res["nbytes_ratio"] / k - 1.0) < 0.01)
            ok = res["linear_time"] and res["linear_memory"] and s["finite"] and l_["finite"]
        res["no_recursion"] = s["error"] is None and l_["error"] is None
        res["passed"] = bool(ok)
        out["checks"].append(res)
    out["passed"] = all(c["passed"] for c in out["checks"])


def _progress(msg):
    sys.stderr.write("[worker] %s\n" % msg)
    sys.stderr.flush()


def _clean(o):
    """JSON cannot hold NaN/inf: write them as None."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.generic):
        return _clean(o.item())
    return o


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: python -m benchmarks.worker TASK.json OUT.json\n")
        return 2
    with open(argv[0]) as f:
        task = json.load(f)
    out = {"framework": task.get("framework"), "kind": task["kind"], "facts": measure.env_facts(),
           "results": [], "errors": [], "loadavg_start": list(os.getloadavg())}
    t0 = time.perf_counter()
    {"table": run_table, "ceiling": run_ceiling, "long": run_long}[task["kind"]](task, out)
    out["worker_wall_s"] = time.perf_counter() - t0
    out["loadavg_end"] = list(os.getloadavg())
    with open(argv[1], "w") as f:
        json.dump(_clean(out), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
