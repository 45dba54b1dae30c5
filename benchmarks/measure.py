"""Measuring inside a worker process: the timing loop, peak memory and the machine's facts.

Timing (:func:`time_calls`): ``warmup`` untimed calls, then a calibration call fixes n, the number
of calls per run, so that one run lasts at least ``min_run_s``; then ``repeats`` runs are timed with
``time.perf_counter`` and each gives seconds per call (run time / n).  The report uses the median,
the min and the max of these.

Peak memory (:class:`PeakMemory`): the growth of the process's resident set during one call.
On Linux the kernel's high-water mark (VmHWM in /proc/self/status) is reset by writing "5" to
/proc/self/clear_refs, the call runs, and the growth is VmHWM - VmRSS(before).  To make freed
buffers visible, memory is measured after all timings of the worker, with glibc's mmap threshold
fixed at 128 KiB (mallopt) and ``malloc_trim(0)`` before each call, so that large buffers are
fresh mappings and free heap pages were returned to the OS.  A framework that keeps buffers between
calls on purpose (npl's workspace pool) releases them first (its ``release_memory`` hook), so the
call's own buffers are counted.  A framework whose allocator keeps freed memory in a pool of its
own and cannot give it back (TensorFlow with oneDNN, its default on x86: buffers of 4 KiB and more
come from a BFC pool) hands :meth:`PeakMemory.measure` that pool's statistics (``pool``): the
call's peak is then its RSS growth (what it takes outside the pool) plus the pool's peak bytes in
use above its bytes in use before the call, after one unmeasured call that makes the pool hold
(and the kernel back) what this call needs, so that the pool does not grow during the measured
call and count twice.  Where clear_refs cannot be written
the fallback is the growth of ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (a lower bound: it
only rises above the process's earlier peak); a result that is a lower bound says so
(``lower_bound``).  For NumPy code :func:`tracemalloc_peak` also gives
the exact peak of bytes allocated by NumPy (NumPy reports its buffers to tracemalloc).
"""
import ctypes
import ctypes.util
import gc
import math
import os
import platform
import re
import resource
import sys
import time
import tracemalloc

__all__ = ["time_calls", "PeakMemory", "tracemalloc_peak", "blas_info", "env_facts", "THREAD_VARS",
           "OPENBLAS_VARS", "thread_env", "gemm_gflops", "rss_bytes", "usable_cores"]

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# CUPY_TF32 (CuPy's cuBLAS float32 GEMMs in TF32 when > 0; its default is full float32) and
# NVIDIA_TF32_OVERRIDE (0: cuBLAS and cuDNN never use TF32) decide the GPU's float32 precision
RECORDED_VARS = THREAD_VARS + OPENBLAS_VARS + ("TF_USE_LEGACY_KERAS", "TF_ENABLE_ONEDNN_OPTS",
                                               "NPL_BACKEND", "MALLOC_MMAP_THRESHOLD_", "CUPY_TF32",
                                               "NVIDIA_TF32_OVERRIDE")


def usable_cores():
    """The number of cores this process may run on: ``os.sched_getaffinity(0)`` where the OS has
    it (a container or ``taskset`` can allow fewer than the machine has), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def thread_env(base_env, threads, unset_openblas=False):
    """A copy of ``base_env`` with every thread-count variable set to ``threads``."""
    env = dict(base_env)
    for k in THREAD_VARS:
        env[k] = str(threads)
    if unset_openblas:
        for k in OPENBLAS_VARS:
            env.pop(k, None)
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return env


# ----------------------------------------------------------------------------- timing
def time_calls(fn, warmup, repeats, min_run_s, max_inner=10000):
    """Time ``fn()``: returns dict(times_s=[seconds per call per run], inner=n, warmup=...)."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    n = 1 if one >= min_run_s else min(max_inner, int(math.ceil(min_run_s / max(one, 1e-7))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return {"times_s": times, "inner": n, "warmup": warmup, "repeats": repeats}


def gemm_gflops(matmul, a, b, repeats, min_run_s, warmup=1):
    """GFLOP/s of ``matmul(a, b)`` for a [m, k] and b [k, n]: 2*m*k*n / time, timed as
    :func:`time_calls` (``warmup`` untimed calls, ``repeats`` runs of at least ``min_run_s``).

    ``gflops`` uses the best run (a ceiling: the fastest the machine managed), ``gflops_median``
    the median run.
    """
    m, k = a.shape
    n = b.shape[1]
    r = time_calls(lambda: matmul(a, b), warmup, repeats, min_run_s)
    med = sorted(r["times_s"])[len(r["times_s"]) // 2]
    flops = 2 * m * k * n
    return {"shape": [[m, k], [k, n]], "flops": flops, "median_s": med, "min_s": min(r["times_s"]),
            "gflops": flops / min(r["times_s"]) / 1e9, "gflops_median": flops / med / 1e9,
            "times_s": r["times_s"], "inner": r["inner"], "warmup": warmup, "repeats": repeats,
            "min_run_s": min_run_s}


# ----------------------------------------------------------------------------- memory
def _status_kib(key):
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"^%s:\s+(\d+)\s+kB" % key, f.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def rss_bytes():
    """The current resident set size (VmRSS) in bytes, or None where /proc is missing."""
    v = _status_kib("VmRSS")
    return None if v is None else v * 1024


def _maxrss_bytes():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024   # Linux reports KiB, macOS bytes


def _reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak RSS growth of one call; see the module docstring for the method."""

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3

    def __init__(self):
        self._libc = None
        name = ctypes.util.find_library("c")
        if name and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(name)
                libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
                libc.malloc_trim.argtypes = [ctypes.c_size_t]
                self._libc = libc
            except (OSError, AttributeError):
                self._libc = None
        self.glibc_tuned = False
        if self._libc is not None:
            ok = self._libc.mallopt(self.M_MMAP_THRESHOLD, 128 * 1024)
            ok &= self._libc.mallopt(self.M_TRIM_THRESHOLD, 128 * 1024)
            self.glibc_tuned = bool(ok)
        self.hwm_reset = _reset_hwm() and _status_kib("VmHWM") is not None
        if self.hwm_reset:
            self.method = "VmHWM-VmRSS (clear_refs reset)" + (", glibc mmap threshold 128 KiB"
                                                               if self.glibc_tuned else "")
        else:
            self.method = "ru_maxrss growth (lower bound)"

    def _settle(self, release=None):
        gc.collect()
        if release is not None:
            release()
        if self._libc is not None:
            self._libc.malloc_trim(0)

    def measure(self, fn, release=None, pool=None):
        """Run ``fn()`` once; return dict(peak_rss_growth_bytes, rss_before_bytes, method,
        lower_bound).  ``release``: the framework's own cache release (npl's workspace pool),
        called first, so that memory a framework keeps between calls is counted as the call's.

        ``pool``: for a framework whose allocator keeps freed buffers in a pool that cannot be
        emptied (TensorFlow's oneDNN allocator), a dict with ``name``, ``reset()`` (reset the
        pool's peak statistic, return its bytes in use) and ``peak()`` (its peak bytes in use
        since the reset).  One unmeasured call runs first, so the pool already holds what this
        call needs; the result, ``peak_rss_growth_bytes``, is then the RSS growth
        (``rss_growth_bytes``: memory outside the pool) plus the pool's peak growth
        (``pool_peak_bytes``).  A pool dict with ``lower_bound`` and ``why`` instead (a pool
        without statistics) marks the RSS growth as a lower bound."""
        counted = pool is not None and pool.get("peak") is not None
        if counted:
            fn()                               # the pool now holds (resident) what this call needs
        self._settle(release)
        base = pool["reset"]() if counted else None
        if self.hwm_reset:
            before = rss_bytes()
            _reset_hwm()
            fn()
            peak = _status_kib("VmHWM") * 1024
        else:
            before = _maxrss_bytes()
            fn()
            peak = _maxrss_bytes()
        rss = max(0, peak - before)
        out = {"peak_rss_growth_bytes": rss, "rss_before_bytes": before, "method": self.method,
               "lower_bound": not self.hwm_reset}
        if counted:
            grown = max(0, int(pool["peak"]()) - int(base))
            out.update(peak_rss_growth_bytes=rss + grown, rss_growth_bytes=rss, pool_peak_bytes=grown,
                       pool_in_use_before_bytes=int(base), method="%s + %s" % (self.method, pool["name"]))
        elif pool is not None and pool.get("lower_bound"):
            out.update(lower_bound=True, method="%s (%s)" % (self.method, pool.get("why", "a lower bound")))
        return out


def tracemalloc_peak(fn, release=None):
    """Peak bytes allocated through tracemalloc-aware allocators (NumPy's) during ``fn()``
    (``release`` as in :meth:`PeakMemory.measure`)."""
    gc.collect()
    if release is not None:
        release()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return max(0, peak - base)


# ----------------------------------------------------------------------------- facts
def _openblas_corename():
    """Ask the loaded OpenBLAS which kernel it runs (without threadpoolctl): a ctypes call."""
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln})
    except OSError:
        return None
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in ("openblas_get_corename", "openblas_get_corename64_",
                    "scipy_openblas_get_corename64_", "scipy_openblas_get_corename"):
            f = getattr(lib, sym, None)
            if f is not None:
                f.restype = ctypes.c_char_p
                try:
                    return {"library": path, "corename": f().decode()}
                except Exception:   # a foreign symbol with another signature
                    continue
    return None


def blas_info():
    """The BLAS libraries in use: threadpoolctl's view when it is installed, else a ctypes probe."""
    import numpy as np
    info = {"numpy": np.__version__}
    try:
        from threadpoolctl import threadpool_info
        info["threadpoolctl"] = [{k: v for k, v in d.items() if k in (
            "user_api", "internal_api", "prefix", "version", "num_threads", "threading_layer",
            "architecture", "filepath")} for d in threadpool_info()]
        arch = [d.get("architecture") for d in info["threadpoolctl"] if d.get("internal_api") == "openblas"]
        if arch:
            info["openblas_corename"] = arch[0]
        info["source"] = "threadpoolctl"
    except ImportError:
        info["source"] = "ctypes probe (threadpoolctl not installed)"
    probe = _openblas_corename()
    if probe is not None:
        info.setdefault("openblas_corename", probe["corename"])
        info["openblas_library"] = probe["library"]
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas_build"] = "%s %s" % (cfg.get("name"), cfg.get("version"))
    except Exception:   # numpy < 1.25 has no mode="dicts"
        pass
    return info


def env_facts():
    """The machine, the Python and the environment variables that decide threads and kernels."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
        if m:
            cpu = m.group(1).strip()
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "env": {k: os.environ.get(k) for k in RECORDED_VARS}}
