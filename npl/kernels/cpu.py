"""Fused CPU kernels for the float32 LSTM / GRU step math: the third executor of :mod:`npl.gates`.

NumPy runs a step's pointwise math as 10-25 separate array passes; ``cpu_kernels.c`` (beside this
file, shipped as package data) does each of :mod:`npl.gates`' backward functions
(``lstm_backward_pointwise``, ``gru_backward_pointwise``, ``gru_reset_backward``) in one
vectorised pass, and the LSTM and GRU forwards' work between their tanh calls in one more each.

**Sequence loops.** For the common cells (tanh, no peepholes, clipping, projection or state
dropout; sequence lengths or not) the whole time loop of a forward or backward pass runs
in C as well (``lstm_forward_seq`` ... ``gru_backward_seq``): per step one recurrent product and
one pass of gate math, with no Python between steps.  The product runs on npl's packed-weight
kernel where the compiler targets AVX-512 or AVX2 with FMA (the weights packed once per pass, see
:func:`packed_gemm` and :func:`pack_weight`), else it is one call of the same ``cblas_sgemm`` NumPy uses (found in the
BLAS NumPy loaded, checked against ``numpy.matmul``, see :func:`sgemm`).  Their forward uses a
rational tanh (within 4e-7 of tanh) instead of NumPy's, so they agree with the Python loop to
float32 rounding, not bit for bit.  ``NPL_CPU_LOOPS=0`` or :func:`enable_sequence_loops` turns
them off; they need x86-64 Linux (see ``_find_sgemm``).

It is compiled on first use with the system C compiler (``$CC``, else ``cc``, ``gcc`` or ``clang``)
for the host's vector instructions, cached under ``$NPL_CACHE_DIR/kernels`` (default
``~/.cache/npl/kernels``, keyed by a hash of the source, the compiler, its flags and the CPU), and
loaded with :mod:`ctypes`.  Nothing but NumPy is needed at run time: where no compiler is found, or
the build fails, or ``NPL_CPU_KERNELS=0`` is set, npl uses its array code (the results agree to
float32 rounding; the kernels are tested against it) and :func:`status` says why.

Only float32 NumPy arrays with tanh activations take this path; float64 (the precision of the
gradient checks) and every other case run the array code in :mod:`npl.gates`.
"""
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np

__all__ = ["SOURCE_PATH", "available", "status", "enable", "library", "FLAGS", "sgemm",
           "sequence_loops", "enable_sequence_loops", "threads", "set_threads", "matmul",
           "packed_gemm", "enable_packed_gemm", "kernel_grad", "copy_transposed", "PackedWeight",
           "packed_floats", "pack_weight", "narrow_max", "set_narrow_max", "narrow_batch"]

SOURCE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels.c")
# -ffp-contract=off: no fused multiply-adds, so the forward's combine step rounds exactly as the
# array code does (the kernels' forward results are bit for bit NumPy's).
FLAGS = ("-O3", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-fno-trapping-math",
         "-ffp-contract=off", "-std=c99")
_NATIVE = ("-march=native",)

_OFF = ("0", "false", "off", "")


def _env_threads():
    """NPL_CPU_THREADS as a positive int, or None (follow the BLAS's thread count)."""
    v = os.environ.get("NPL_CPU_THREADS", "").strip()
    if not v:
        return None
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError("NPL_CPU_THREADS must be a positive integer, got %r" % (v,))
    return n

_state = {"lib": None, "why": None, "tried": False,
          "enabled": os.environ.get("NPL_CPU_KERNELS", "1").strip() not in _OFF,
          "loops": os.environ.get("NPL_CPU_LOOPS", "1").strip() not in _OFF,
          "sgemm": None, "sgemm_why": None, "sgemm_tried": False,
          "blas_threads": None, "threads": _env_threads(),
          "packed": os.environ.get("NPL_PACKED_GEMM", "1").strip() not in _OFF, "narrow": 0}
_lock = threading.Lock()

_F = ctypes.c_float
_I = ctypes.c_int64
_P = ctypes.c_void_p
_SIGNATURES = {
    "npl_tanh_f32": (_P, _P, _I),
    "npl_sigmoid_f32": (_P, _P, _I),
    "npl_lstm_forward_combine_f32": (_P, _I, _P, _P, _I, _I),
    "npl_gru_gates_combine_f32": (_P, _I, _P, _P, _I, _I),
    "npl_lstm_backward_f32": (_P, _I, _P, _P, _P, _P, _P, _I, _P, _P, _P, _P, _I, _I),
    "npl_gru_backward_f32": (_P, _I, _P, _P, _P, _I, _P, _I, _I),
    "npl_gru_reset_backward_f32": (_P, _I, _P, _P, _P, _P, _I, _I, _I),
    "npl_tanh_rational_f32": (_P, _P, _I),
    "npl_lstm_forward_seq_f32": (_P, _P, _I, _P, _P, _P, _P, _I, _I, _I, _I, _P, _I),
    "npl_lstm_backward_seq_f32": (_P, _P, _I, _P, _P, _P, _I, _P, _P, _P, _I, _I, _P, _P, _I, _I,
                                  _I, _I, _P, _I),
    "npl_gru_forward_seq_f32": (_P, _P, _I, _P, _P, _I, _P, _P, _P, _P, _I, _I, _I, _I, _P, _I),
    "npl_gru_backward_seq_f32": (_P, _P, _I, _P, _I, _P, _P, _P, _I, _P, _P, _P, _P, _I, _I, _P,
                                 _P, _I, _I, _I, _I, _P, _I),
    "npl_sgemm_threads_f32": (_P, _I, _I, _I, _I, _I, _F, _P, _I, _I, _P, _I, _I, _F, _P, _I, _I,
                              _I, _I),
}
_SIGNATURES["npl_pool_others_runnable"] = ()
_SIGNATURES["npl_packed_gemm_width"] = ()
_SIGNATURES["npl_set_packed_gemm"] = (_I,)
_SIGNATURES["npl_packed_matmul_f32"] = (_P, _I, _I, _I, _I, _P, _I, _I, _I, _F, _P, _I, _I, _I, _I)
_SIGNATURES["npl_prepacked_matmul_f32"] = (_P, _I, _I, _P, _I, _I, _I, _F, _P, _I, _I, _I, _I)
_SIGNATURES["npl_set_stream_min_bytes"] = (_I,)
_SIGNATURES["npl_set_narrow_max"] = (_I,)
_SIGNATURES["npl_narrow_batch"] = (_I,)
_SIGNATURES["npl_packed_floats"] = (_I, _I)
_SIGNATURES["npl_pack_f32"] = (_P, _I, _I, _I, _I, _P, _I)
_SIGNATURES["npl_transpose_f32"] = (_P, _I, _I, _P, _I, _I, _I, _I, _I)
_SIGNATURES["npl_kernel_grad_f32"] = (_P, _I, _I, _P, _I, _I, _I, _P, _I, _I, _P, _I, _I, _I, _I,
                                      _I, _P, _I, _I, _I)
# these return the number of batch slices (threads) they ran, or a count
_RETURNS_INT = ("npl_pool_others_runnable", "npl_packed_gemm_width", "npl_packed_matmul_f32",
                "npl_packed_floats", "npl_pack_f32", "npl_prepacked_matmul_f32",
                "npl_set_stream_min_bytes", "npl_set_narrow_max", "npl_narrow_batch",
                "npl_kernel_grad_f32",
                "npl_lstm_forward_seq_f32", "npl_lstm_backward_seq_f32", "npl_gru_forward_seq_f32",
                "npl_gru_backward_seq_f32", "npl_sgemm_threads_f32")


def _cache_dir():
    root = os.environ.get("NPL_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "npl")
    return os.path.join(root, "kernels")


def _compiler():
    """The compiler command as a list: ``$CC`` (which may carry arguments, ``CC="gcc -m64"``),
    else the first of cc, gcc, clang on the PATH; None when there is none."""
    env = os.environ.get("CC", "").strip()
    if env:
        try:
            words = shlex.split(env)
        except ValueError:
            words = []
        path = shutil.which(words[0]) if words else None
        if path:
            return [path] + words[1:]
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _cpu_id():
    """What the compiled code depends on besides the source: the machine and its vector units."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "model name", "Features", "CPU part")):
                    parts.append(line.strip())
                    if len(parts) > 6:
                        break
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


# Seconds a compile may take before it counts as failed (a normal -O3 build takes a few).
COMPILE_TIMEOUT_S = 300


def _compile(cc, src, out, flags, timeout=None):
    cmd = ([cc] if isinstance(cc, str) else list(cc)) + list(flags) + [src, "-o", out]
    timeout = COMPILE_TIMEOUT_S if timeout is None else timeout
    # its own process group: on a timeout the compiler proper (cc1, as, ld) is stopped too, not
    # only the driver that subprocess started
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output = p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.communicate()
        raise RuntimeError("%s took more than %d s; killed" % (" ".join(cmd), timeout)) from None
    if p.returncode != 0:
        raise RuntimeError("%s failed (exit %d): %s" % (" ".join(cmd), p.returncode,
                                                        output.decode(errors="replace")[-2000:]))


def _build():
    """Compile (or find in the cache) and load the library; returns (lib, None) or (None, why)."""
    if sys.platform.startswith("win"):
        return None, "the CPU kernels are built with a Unix C compiler; not on Windows"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found ($CC, cc, gcc, clang); using the NumPy array code"
    with open(SOURCE_PATH, "rb") as f:
        src = f.read()
    try:
        version = subprocess.run(cc + ["--version"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, "the C compiler %s does not run (%s)" % (" ".join(cc), e)
    errors = []
    for flags in (FLAGS + _NATIVE, FLAGS):               # the host's vector units, else baseline
        key = hashlib.sha256(src + version + " ".join(cc[1:] + list(flags)).encode() + _cpu_id().encode())
        name = "cpu_kernels-%s.so" % key.hexdigest()[:20]
        for directory in (_cache_dir(), None):
            scratch = directory is None                  # the cache is not writable: a temp folder,
            try:                                         # removed once the library is loaded
                if scratch:
                    directory = tempfile.mkdtemp(prefix="npl-kernels-")
                else:
                    os.makedirs(directory, mode=0o700, exist_ok=True)
                path = os.path.join(directory, name)
                if not os.path.exists(path):
                    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
                    os.close(fd)
                    try:
                        _compile(cc, SOURCE_PATH, tmp, flags)
                        os.replace(tmp, path)                # atomic: never a half-written library
                    finally:
                        if os.path.exists(tmp):
                            os.unlink(tmp)
                lib = ctypes.CDLL(path)
                for fn, argtypes in _SIGNATURES.items():
                    f = getattr(lib, fn)
                    f.argtypes = argtypes
                    f.restype = ctypes.c_int64 if fn in _RETURNS_INT else None
                lib.npl_set_packed_gemm(1 if _state["packed"] else 0)
                _state["narrow"] = int(lib.npl_set_narrow_max(-1))
                return lib, None
            except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
                errors.append(str(e))
            finally:
                if scratch:                              # a loaded library stays mapped (POSIX)
                    shutil.rmtree(directory, ignore_errors=True)
    return None, "building the CPU kernels failed; using the NumPy array code: " + " | ".join(errors)


def library():
    """The loaded kernel library, or None (disabled, or it could not be built: see :func:`status`)."""
    if not _state["enabled"]:
        return None
    lib = _state["lib"]
    if lib is not None or _state["tried"]:
        return lib
    with _lock:
        if not _state["tried"]:
            _state["lib"], _state["why"] = _build()
            _state["tried"] = True
    return _state["lib"]


def available():
    """True when the kernels are enabled and built."""
    return library() is not None


def enable(on=True):
    """Turn the CPU kernels on or off for this process (off: the NumPy array code runs).
    Returns the previous setting."""
    if not isinstance(on, bool):
        raise TypeError("enable(on): on must be True or False, got %r" % (on,))
    old, _state["enabled"] = _state["enabled"], on
    return old


def status():
    """One line: whether the fused CPU kernels are in use, and if not, why."""
    if not _state["enabled"]:
        return "off (NPL_CPU_KERNELS=0 or npl.kernels.cpu.enable(False)); using the NumPy array code"
    if library() is not None:
        loops = ("sequence loops in C with %s, batch split over up to %d thread(s)"
                 % (_recurrent_gemm(), threads())) if sequence_loops() else \
            ("sequence loops in Python: %s" % (_state["sgemm_why"] if _state["loops"] else
                                              "NPL_CPU_LOOPS=0 or enable_sequence_loops(False)"))
        return "on (%s; %s)" % (_state["lib"]._name, loops)
    return "off: " + str(_state["why"])


# ----------------------------------------------------------------- the BLAS NumPy uses
_SGEMM_SYMBOLS = ("scipy_cblas_sgemm64_", "cblas_sgemm64_", "scipy_cblas_sgemm", "cblas_sgemm")


def _blas_libraries():
    """Paths of the BLAS libraries mapped into this process (NumPy's bundled OpenBLAS, or MKL,
    or a system BLAS), from /proc/self/maps."""
    np.matmul(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))   # BLAS loaded and used
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "/" in ln and ".so" in ln}
    except OSError:
        return []
    keys = ("openblas", "mkl_rt", "blas")
    numpy_dir = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))

    def rank(p):
        # NumPy's own first (its wheels bundle OpenBLAS in numpy.libs / numpy/.dylibs), then by
        # name; another package's BLAS (PyTorch's, say) would compute the same product but with
        # its own thread settings
        ours = os.path.basename(os.path.dirname(p)) in ("numpy.libs", ".dylibs") and \
            os.path.dirname(os.path.dirname(p)) == numpy_dir
        return (not ours, [k in os.path.basename(p).lower() for k in keys].index(True), p)
    return sorted((p for p in paths if any(k in os.path.basename(p).lower() for k in keys)),
                  key=rank)


def _find_sgemm():
    """(address, where) of a cblas_sgemm that computes what numpy.matmul does, or (None, why).
    Only on x86-64 Linux, where the C side's int64 arguments suit both LP64 and ILP64 BLAS."""
    if not (sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")):
        return None, "the C sequence loops call the BLAS only on x86-64 Linux"
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal((7, 3)).astype(np.float32)
    want = a @ b
    for path in _blas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in _SGEMM_SYMBOLS:
            f = getattr(lib, sym, None)
            if f is None:
                continue
            f.restype = None
            f.argtypes = (_I, _I, _I, _I, _I, _I, _F, _P, _I, _P, _I, _F, _P, _I)
            c = np.full((5, 3), np.nan, np.float32)
            try:
                f(101, 111, 111, 5, 3, 7, 1.0, a.ctypes.data, 7, b.ctypes.data, 3, 0.0,
                  c.ctypes.data, 3)
            except Exception:        # noqa: BLE001 - a foreign symbol: try the next
                continue
            if np.allclose(c, want, rtol=1e-5, atol=1e-5):
                _state["blas_threads"] = _thread_controls(lib, sym)
                return ctypes.cast(f, ctypes.c_void_p).value, "%s from %s" % (sym, os.path.basename(path))
    return None, "no cblas_sgemm found in the BLAS NumPy loaded"


def _thread_controls(lib, sgemm_symbol):
    """(get, set) of the thread count of the OpenBLAS that exports ``sgemm_symbol`` (same prefix
    and suffix: scipy_openblas_get_num_threads64_ beside scipy_cblas_sgemm64_), or None."""
    prefix = "scipy_" if sgemm_symbol.startswith("scipy_") else ""
    suffix = "64_" if sgemm_symbol.endswith("64_") else ""
    get = getattr(lib, "%sopenblas_get_num_threads%s" % (prefix, suffix), None)
    put = getattr(lib, "%sopenblas_set_num_threads%s" % (prefix, suffix), None)
    if get is None or put is None:
        return None
    get.restype, get.argtypes = ctypes.c_int, ()
    put.restype, put.argtypes = None, (ctypes.c_int,)
    return get, put


def sgemm():
    """The address of the cblas_sgemm NumPy's BLAS exports (checked on a small product), or None."""
    if not _state["sgemm_tried"]:
        with _lock:
            if not _state["sgemm_tried"]:
                _state["sgemm"], where = _find_sgemm()
                _state["sgemm_where" if _state["sgemm"] else "sgemm_why"] = where
                _state["sgemm_tried"] = True
    return _state["sgemm"]


def packed_gemm():
    """The vector width (floats) of the packed recurrent-GEMM kernel the C loops use (16: AVX-512,
    8: AVX2 with FMA), or 0 when they call the BLAS's sgemm for it instead: the kernel is not
    built for this CPU, or ``NPL_PACKED_GEMM=0`` / :func:`enable_packed_gemm` switched it off."""
    lib = library()
    if lib is None or not _state["packed"]:
        return 0
    return int(lib.npl_packed_gemm_width())


def enable_packed_gemm(on=True):
    """Let the C loops run their per-step recurrent GEMMs on the packed kernel (True, the default
    where it is built) or on the BLAS's sgemm (False).  Returns the previous setting."""
    if not isinstance(on, bool):
        raise TypeError("enable_packed_gemm(on): on must be True or False, got %r" % (on,))
    old, _state["packed"] = _state["packed"], on
    lib = library()
    if lib is not None:
        lib.npl_set_packed_gemm(1 if on else 0)
    return old


def narrow_max():
    """How many columns past a whole number of vectors let a product (or a batch slice) of fewer
    than 32 columns run on the packed kernel's narrow form: vectors along the weight's rows, on
    its transpose, instead of along the batch, where B columns fill only B of a vector's lanes
    (the last vector's ``B % width``).  3/4 of the vector width by default (12 with AVX-512: 1-12
    and 17-28 columns; 6 with AVX2), 0 where the packed kernel is not built.  With it the C loops
    also take batches under ``npl.cells.C_LOOPS_MIN_BATCH`` from
    ``npl.cells.NARROW_LOOPS_MIN_STEPS`` steps."""
    return 0 if library() is None else _state["narrow"]


def set_narrow_max(n):
    """Set :func:`narrow_max` (0: never use the narrow form; for tests and measurements).  Both
    forms give identical bits.  Returns the previous value."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError("set_narrow_max(n): n must be an integer >= 0, got %r" % (n,))
    old = narrow_max()
    lib = library()
    if lib is not None:
        _state["narrow"] = int(lib.npl_set_narrow_max(n))
    return old


def narrow_batch(B):
    """Whether the C loops run a pass of batch B (one slice) on the narrow form: the packed kernel
    on, and B under 32 with at most :func:`narrow_max` columns past whole vectors (the library's
    own rule, ``npl_narrow_batch``)."""
    lib = library()
    return lib is not None and _state["packed"] and bool(lib.npl_narrow_batch(int(B)))


def _recurrent_gemm():
    w = packed_gemm()
    where = _state["sgemm_where"]
    if w:
        return ("the recurrent GEMMs, the input projection and the kernel gradient on npl's "
                "packed %s kernel (batch slices under 32 columns with up to %d past whole "
                "vectors on its narrow form), the other GEMMs on %s"
                % ("AVX-512" if w == 16 else "AVX2", narrow_max(), where))
    return where


def sequence_loops():
    """True when the float32 sequence passes of the common cells run their time loop in C
    (kernels built, NumPy's sgemm found, ``NPL_CPU_LOOPS`` not 0)."""
    return _state["loops"] and library() is not None and sgemm() is not None


def enable_sequence_loops(on=True):
    """Turn the C time loops on or off for this process (off: the Python loop calls the step
    kernels).  Returns the previous setting."""
    if not isinstance(on, bool):
        raise TypeError("enable_sequence_loops(on): on must be True or False, got %r" % (on,))
    old, _state["loops"] = _state["loops"], on
    return old


# ----------------------------------------------------------------- threads
# The C loops split a batch into slices of at least this many columns (a multiple of 16 floats,
# so that no two threads write one cache line); narrower batches leave the threads to the BLAS.
# Where the steps call sgemm, each slice's sgemm packs the whole recurrent weight block again, so
# narrow slices lose: two
# threads, forward+backward, npl's threads against OpenBLAS's two-thread sgemm per step, same
# machine: C1 (B=128, slices of 64) GRU 10.8-11.7 ms against 12.2-13.1, LSTM 13.3-13.8 against
# 14.8-15.5; C2 (slices of 32) 336 / 347 ms (GRU), 404 / 402 (LSTM); C3 (slices of 16) GRU 96 / 87,
# LSTM 143 / 108.
MIN_SLICE = 64
# With the packed recurrent-GEMM kernel a slice re-reads the packed weights but copies nothing, and
# narrow slices win: two threads against one slice, forward+backward, same machine: C2 (B=64,
# slices of 32) GRU 264 / 368 ms, LSTM 336 / 473; C3 (B=32, slices of 16) GRU 79 / 109, LSTM
# 101 / 138.
MIN_SLICE_PACKED = 16


def _min_slice():
    """The narrowest batch slice a thread takes: MIN_SLICE_PACKED with the packed kernel, else
    MIN_SLICE."""
    return MIN_SLICE_PACKED if packed_gemm() else MIN_SLICE


def _others_busy():
    """True while another thread of this process is runnable (see npl_pool_others_runnable)."""
    return library().npl_pool_others_runnable() != 0


def threads():
    """How many threads the C sequence loops (and the all-steps GEMMs of their passes) split a
    batch over: ``set_threads(n)`` or ``NPL_CPU_THREADS`` when given, else the thread count of
    NumPy's OpenBLAS (``OPENBLAS_NUM_THREADS``, threadpoolctl's limits), so npl uses the cores
    NumPy is allowed to.  1 where that BLAS's thread count cannot be read and set."""
    if sgemm() is None or _state["blas_threads"] is None:
        return 1
    n = _state["threads"]
    return n if n is not None else max(1, int(_state["blas_threads"][0]()))


def set_threads(n=None):
    """Split the C loops' batch over ``n`` threads (None: follow NumPy's BLAS, the default).
    Returns the previous setting."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError("set_threads(n): n must be a positive integer or None, got %r" % (n,))
    old, _state["threads"] = _state["threads"], (None if n is None else int(n))
    return old


def loop_threads(B):
    """The threads a pass over a batch of B columns uses: :func:`threads`, at most one per
    :func:`_min_slice` columns, and 1 while another thread of this process is busy (typically
    OpenBLAS's own workers, which poll for about 0.1 s after a threaded NumPy product): npl's
    threads would share a core with it, which is slower than leaving the threads to the BLAS."""
    n = min(threads(), B // _min_slice())
    if n <= 1 or _others_busy():
        return 1
    return n


class _OneBlasThread:
    """While npl's own threads run, NumPy's OpenBLAS is set to one thread (its pool would
    otherwise be asked for the same cores, and its idle workers poll them), then restored.  The
    thread count is process-wide, so passes running at once in several Python threads share one
    saved value: the first to enter sets it, the last to leave restores it."""
    __slots__ = ("n",)
    _lock = threading.Lock()
    _inside = 0
    _saved = None

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        if self.n > 1:
            cls = _OneBlasThread
            with cls._lock:
                if cls._inside == 0:
                    get, put = _state["blas_threads"]
                    prev = get()
                    cls._saved = prev if prev != 1 else None
                    if prev != 1:
                        put(1)
                cls._inside += 1
        return self

    def __exit__(self, *exc):
        if self.n > 1:
            cls = _OneBlasThread
            with cls._lock:
                cls._inside -= 1
                if cls._inside == 0 and cls._saved is not None:
                    _state["blas_threads"][1](cls._saved)
                    cls._saved = None
        return False


def _operand(a, name):
    """(pointer, transposed, leading dimension) of a 2-D float32 GEMM operand whose rows or
    columns are contiguous."""
    if a.dtype != np.float32 or a.ndim != 2:
        raise ValueError("npl.kernels.cpu: %s must be a 2-D float32 array, got dtype %s, shape %s"
                         % (name, a.dtype, a.shape))
    r, c = a.shape
    s0, s1 = a.strides
    if (s1 == 4 or c == 1) and s0 % 4 == 0 and (r == 1 or s0 >= 4 * c):
        return a.__array_interface__["data"][0], False, (s0 // 4 if r > 1 else max(c, 1))
    if (s0 == 4 or r == 1) and s1 % 4 == 0 and (c == 1 or s1 >= 4 * r):
        return a.__array_interface__["data"][0], True, (s1 // 4 if c > 1 else max(r, 1))
    raise ValueError("npl.kernels.cpu: %s needs contiguous rows or columns, got strides %s"
                     % (name, a.strides))


# The packed kernel serves products whose b has contiguous rows of at most this many columns
# (per batch entry): there it beats the BLAS (the per-step shapes of the input projection), while
# on wide ones (d inputs, N = T*B) the two measured the same (C2: 99-101 GFLOP/s).
PACKED_MAX_N = 1024


def matmul(a, b, out, beta=0.0):
    """out = a @ b (+ beta * out) in float32.  a [M, K]; b [K, N] and out [M, N], or b [n, K, N]
    and out [n, M, N] (a batch, one a for all).  Any operand may be a transposed view; out needs
    contiguous rows.  Returns the number of threads used.  ``a`` may be a :class:`PackedWeight`
    (:func:`pack_weight`, for an a used by several calls): then b needs contiguous rows and beta
    is 0 or 1, and every product runs on the packed kernel.

    Where b has contiguous rows of at most PACKED_MAX_N columns, beta is 0 or 1 and the packed
    kernel is on (:func:`packed_gemm`), a is packed once and every product runs on the packed
    kernel, columns split over :func:`loop_threads` threads.  Otherwise the output's larger side is
    split over those threads, each calling NumPy's sgemm single-threaded; on one thread this is
    ``numpy.matmul`` (the BLAS with its own threads) where beta is 0."""
    packed = isinstance(a, PackedWeight)
    for x, name in (() if packed else ((a, "a"),)) + ((b, "b"), (out, "out")):
        if not isinstance(x, np.ndarray) or x.ndim not in ((2,) if name == "a" else (2, 3)):
            raise ValueError("npl.kernels.cpu.matmul: %s must be a %s NumPy array, got %r"
                             % (name, "2-D" if name == "a" else "2-D or 3-D",
                                getattr(x, "shape", type(x).__name__)))
    batch = 1
    sB = sC = 0
    if b.ndim == 3:
        if out.ndim != 3 or out.shape[0] != b.shape[0]:
            raise ValueError("npl.kernels.cpu.matmul: with b [n, K, N], out must be [n, M, N], "
                             "got b %s, out %s" % (b.shape, out.shape))
        batch, sB, sC = b.shape[0], b.strides[0] // 4, out.strides[0] // 4
        if batch == 0:
            return 0
        b2, out2 = b[0], out[0]
    else:
        b2, out2 = b, out
    M, K = a.shape
    if b2.shape[0] != K or out2.shape != (M, b2.shape[1]):
        raise ValueError("npl.kernels.cpu.matmul: shapes %s @ %s -> %s do not match"
                         % (a.shape, b.shape, out.shape))
    N = b2.shape[1]
    pb, tb, ldb = _operand(b2, "b")
    pc = _operand(out2, "out")[0]
    if out2.dtype != np.float32 or not (out2.strides[1] == 4 or N == 1):
        raise ValueError("npl.kernels.cpu.matmul: out needs contiguous rows of float32, got dtype "
                         "%s, strides %s" % (out.dtype, out.strides))
    ldc = out2.strides[0] // 4 if M > 1 else N
    if M == 0 or N == 0:
        return 0
    if packed:
        if tb or beta not in (0.0, 1.0):
            raise ValueError("npl.kernels.cpu.matmul: with a packed a, b needs contiguous rows and "
                             "beta must be 0 or 1, got b strides %s, beta %r" % (b2.strides, beta))
        r = library().npl_prepacked_matmul_f32(_ptr(a.buffer), M, K, pb, ldb, sB, N, beta, pc, ldc,
                                               sC, batch, loop_threads(N))
        if r <= 0:
            raise ValueError("npl.kernels.cpu.matmul: this library has no packed kernel to read a "
                             "packed a")
        return r
    pa, ta, lda = _operand(a, "a")
    if K == 0:                                     # a @ b is zero; beta = 0 overwrites NaNs too
        if beta == 0:
            out[...] = 0
        else:
            out *= beta
        return 1
    if not tb and beta in (0.0, 1.0) and N <= PACKED_MAX_N and packed_gemm():
        sam, sak = (1, lda) if ta else (lda, 1)
        r = library().npl_packed_matmul_f32(pa, sam, sak, M, K, pb, ldb, sB, N, beta, pc, ldc,
                                            sC, batch, loop_threads(N))
        if r > 0:
            return r
    n = loop_threads(max(M, N))
    if n == 1 and beta == 0:
        np.matmul(a, b, out=out)
        return 1
    with _OneBlasThread(n):
        return library().npl_sgemm_threads_f32(
            sgemm(), _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS, M, N, K, 1.0,
            pa, lda, 0, pb, ldb, sB, beta, pc, ldc, sC, batch, n)


_NO_TRANS, _TRANS = 111, 112


# kernel_grad accumulates in an [nG, I+P+1] buffer per thread, read and written by every product
# of its steps; above this size that traffic costs more than the transposed-operand GEMM saves
# (C2 LSTM, nG = 2048, 6.4 MB: 610-624 ms against 619-632 on OpenBLAS, one thread; 361 against
# 352 on two), while below it the per-step sum wins (one thread, forward+backward against the
# OpenBLAS GEMM: C1 LSTM 22.4 / 23.0 ms, GRU 18.2 / 19.0; C2 GRU 457 / 467; C3 LSTM 171 / 177, GRU
# 128 / 135).
KERNEL_GRAD_MAX_ACC_BYTES = 4 << 20


def copy_transposed(src, dst):
    """dst[...] = src for 3-D float32 NumPy arrays of one shape [n, a, b] where src is a
    transposed view (its middle axis contiguous: src.strides[1] == 4) and dst has contiguous rows
    (dst.strides[2] == 4): the feature-major slabs' [T, P, B] seen as [T, B, P], copied in cache
    blocks (npl_transpose_f32).  Returns True, or False when it did nothing (no library, other
    dtypes or layouts, overlapping memory): then the caller assigns."""
    if (type(src) is not np.ndarray or type(dst) is not np.ndarray or src.dtype != np.float32
            or dst.dtype != np.float32 or src.ndim != 3 or src.shape != dst.shape
            or src.strides[1] != 4 or dst.strides[2] != 4 or src.size == 0
            or any(s < 0 or s % 4 for s in src.strides + dst.strides)
            or np.may_share_memory(src, dst)):
        return False
    lib = library()
    if lib is None:
        return False
    n, a, b = src.shape
    lib.npl_transpose_f32(src.__array_interface__["data"][0], src.strides[0] // 4,
                          src.strides[2] // 4, dst.__array_interface__["data"][0],
                          dst.strides[0] // 4, dst.strides[1] // 4, n, b, a)
    return True


def kernel_grad(x, h, dG2, out, scale=None):
    """out [I+P+1, nG] = sum_t [x_t; h_t (* scale_t); 1] dG_t^T over all steps, on the packed
    kernel (npl_kernel_grad_f32): a layer's kernel gradient (rows :I+P) and bias gradient (row
    I+P).  x [T, B, I] with contiguous features (any other strides), h and scale [T, P, B] with
    contiguous batch rows, dG2 [nG, T*B] with contiguous rows (the gate-major slab), out
    C-contiguous float32.  Returns the number of threads used, or 0 when it did nothing (the
    kernel is not built or is off, an operand is not in that form, or the accumulator would
    exceed KERNEL_GRAD_MAX_ACC_BYTES): then the caller computes the product itself."""
    if not packed_gemm():
        return 0
    arrays = (x, h, dG2, out) + (() if scale is None else (scale,))
    if any(type(a) is not np.ndarray or a.dtype != np.float32 for a in arrays):
        return 0
    if x.ndim != 3 or h.ndim != 3 or dG2.ndim != 2 or out.ndim != 2:
        return 0
    T, B, I = x.shape
    P = h.shape[1]
    nG = dG2.shape[0]
    if (h.shape != (T, P, B) or dG2.shape[1] != T * B or out.shape != (I + P + 1, nG)
            or (scale is not None and scale.shape != h.shape)):
        raise ValueError("npl.kernels.cpu.kernel_grad: shapes x %s, h %s, dG2 %s, out %s%s do not "
                         "match" % (x.shape, h.shape, dG2.shape, out.shape,
                                    "" if scale is None else ", scale %s" % (scale.shape,)))
    if nG * (-(-(I + P + 1) // 16) * 16) * 4 > KERNEL_GRAD_MAX_ACC_BYTES:
        return 0
    if (x.strides[2] != 4 or h.strides[2] != 4 or dG2.strides[1] != 4
            or not out.flags.c_contiguous
            or (scale is not None and scale.strides[2] != 4)):
        return 0
    s = (0, 0) if scale is None else (scale.strides[0] // 4, scale.strides[1] // 4)
    r = library().npl_kernel_grad_f32(
        dG2.__array_interface__["data"][0], dG2.strides[0] // 4, nG,
        x.__array_interface__["data"][0], x.strides[0] // 4, x.strides[1] // 4, I,
        h.__array_interface__["data"][0], h.strides[0] // 4, h.strides[1] // 4,
        None if scale is None else scale.__array_interface__["data"][0], s[0], s[1], P, T, B,
        out.__array_interface__["data"][0], nG, _kernel_grad_parts(T * B), loop_threads(T * B))
    return max(0, int(r))


def _kernel_grad_parts(columns):
    """How many partial sums kernel_grad splits the steps into: npl's thread setting (the one
    :func:`threads` reads first, kept for the process unless :func:`set_threads` changes it), at
    most one per :func:`_min_slice` columns.  Not :func:`loop_threads`, which drops to 1 while
    another thread is busy: the sum's rounding would then depend on what ran just before."""
    n = _state["threads"]
    if n is None:
        n = _state.get("kgrad_threads")
        if n is None:
            n = _state["kgrad_threads"] = threads()
    return max(1, min(n, columns // _min_slice()))


# ----------------------------------------------------------------- per-step wrappers
_addressof = ctypes.addressof
_from_buffer = ctypes.c_char.from_buffer


def _ptr(a):
    """The address of a's first element (through the buffer protocol for a writable contiguous
    array: about 4x quicker than ``a.ctypes.data``, which counts at B=128, H=128)."""
    f = a.flags
    if f.c_contiguous and f.writeable and a.size:
        return _addressof(_from_buffer(a))
    return a.__array_interface__["data"][0]


def _rows(a, name):
    """Row stride (in elements) of a 2-D float32 array whose rows are contiguous."""
    if a.dtype != np.float32 or a.ndim != 2 or a.strides[1] != 4 or a.strides[0] % 4:
        raise ValueError("npl.kernels.cpu: %s must be a 2-D float32 array with contiguous rows, "
                         "got dtype %s, strides %s" % (name, a.dtype, a.strides))
    return a.strides[0] // 4


def _dense(a, name):
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        raise ValueError("npl.kernels.cpu: %s must be a C-contiguous float32 array, got dtype %s, "
                         "strides %s" % (name, a.dtype, a.strides))
    return _ptr(a)


def _peep(peep):
    """Pointers to the peephole weights ([H, 1] columns of contiguous parameters), or Nones."""
    if peep is None:
        return None, None, None
    for w in peep:
        if w.dtype != np.float32 or w.size != w.shape[0] or w.strides[0] != 4:
            raise ValueError("npl.kernels.cpu: peephole weights must be contiguous float32 "
                             "columns, got dtype %s, shape %s" % (w.dtype, w.shape))
    return tuple(_ptr(w) for w in peep)


def _shape(a, shape, name):
    if a.shape != shape:
        raise ValueError("npl.kernels.cpu: %s must have shape %s, got %s" % (name, shape, a.shape))


def tanh(x, out):
    """out = tanh(x) with the kernels' own tanh (contiguous float32; for testing it)."""
    _shape(out, x.shape, "out")
    library().npl_tanh_f32(_dense(x, "x"), _dense(out, "out"), x.size)


def sigmoid(x, out):
    """out = 0.5 * tanh(x / 2) + 0.5 with the kernels' own tanh (contiguous float32)."""
    _shape(out, x.shape, "out")
    library().npl_sigmoid_f32(_dense(x, "x"), _dense(out, "out"), x.size)


def lstm_forward_combine(g, c_prev, c):
    """The step of :func:`npl.gates.lstm_forward_pointwise` between its tanh calls (prescaled
    gates): i, f, o = 0.5 * g + 0.5 in place, c = f * c_prev + i * j."""
    H, B = c.shape
    _shape(g, (4 * H, B), "g")
    _shape(c_prev, (H, B), "c_prev")
    library().npl_lstm_forward_combine_f32(_ptr(g), _rows(g, "g"), _dense(c_prev, "c_prev"),
                                           _dense(c, "c"), H, B)


def gru_gates_combine(g, h_prev, rh):
    """The step of :func:`npl.gates.gru_gates_forward` after its tanh (prescaled gates):
    r, u = 0.5 * g + 0.5 in place, rh = r * h_prev."""
    H, B = h_prev.shape
    _shape(g, (3 * H, B), "g")
    _shape(rh, (H, B), "rh")
    library().npl_gru_gates_combine_f32(_ptr(g), _rows(g, "g"), _dense(h_prev, "h_prev"),
                                        _dense(rh, "rh"), H, B)


def lstm_backward(g, c_prev, c, dm, dc, dg, peep=None, clip_mask=None):
    """C twin of :func:`npl.gates.lstm_backward_pointwise` (tanh activations, float32)."""
    H, B = c.shape
    for a, shape, name in ((g, (4 * H, B), "g"), (dg, (4 * H, B), "dg"), (c_prev, (H, B), "c_prev"),
                           (dm, (H, B), "dm"), (dc, (H, B), "dc")):
        _shape(a, shape, name)
    w_i, w_f, w_o = _peep(peep)
    if clip_mask is not None and (clip_mask.dtype != np.bool_ or not clip_mask.flags.c_contiguous
                                  or clip_mask.shape != (H, B)):
        raise ValueError("npl.kernels.cpu: clip_mask must be a C-contiguous bool array of shape %s"
                         % ((H, B),))
    library().npl_lstm_backward_f32(
        _ptr(g), _rows(g, "g"), _dense(c_prev, "c_prev"), _dense(c, "c"), _dense(dm, "dm"),
        _dense(dc, "dc"), _ptr(dg), _rows(dg, "dg"), w_i, w_f, w_o,
        None if clip_mask is None else _ptr(clip_mask), H, B)


def gru_backward(g, h_prev, dh, dg, dh_prev):
    """C twin of :func:`npl.gates.gru_backward_pointwise` (tanh candidate, float32)."""
    H, B = h_prev.shape
    for a, shape, name in ((g, (3 * H, B), "g"), (dg, (3 * H, B), "dg"), (dh, (H, B), "dh"),
                           (dh_prev, (H, B), "dh_prev")):
        _shape(a, shape, name)
    library().npl_gru_backward_f32(
        _ptr(g), _rows(g, "g"), _dense(h_prev, "h_prev"), _dense(dh, "dh"), _ptr(dg),
        _rows(dg, "dg"), _dense(dh_prev, "dh_prev"), H, B)


def gru_reset_backward(g, h_prev, drh, dh_prev, dg):
    """C twin of :func:`npl.gates.gru_reset_backward` (float32)."""
    H, B = h_prev.shape
    for a, shape, name in ((g, (3 * H, B), "g"), (dg, (3 * H, B), "dg"), (drh, (H, B), "drh"),
                           (dh_prev, (H, B), "dh_prev")):
        _shape(a, shape, name)
    library().npl_gru_reset_backward_f32(
        _ptr(g), _rows(g, "g"), _dense(h_prev, "h_prev"), _dense(drh, "drh"),
        _dense(dh_prev, "dh_prev"), _ptr(dg), _rows(dg, "dg"), H, B)


def tanh_rational(x, out):
    """out = tanh(x) with the sequence loops' rational tanh (contiguous float32; for testing it)."""
    _shape(out, x.shape, "out")
    library().npl_tanh_rational_f32(_dense(x, "x"), _dense(out, "out"), x.size)


def _weights(U, name):
    """A recurrent weight block (rows of a kernel): contiguous rows of float32."""
    return _ptr(U), _rows(U, name)


class PackedWeight:
    """A weight ``[M, K]`` in the packed kernel's layout (:func:`pack_weight`): panels of 6 rows,
    ``buffer[(p*K + k)*6 + r] = A[6p + r, k]``, the rows past M zero.  The forward loops take one in
    place of their recurrent weight, so that a pass whose steps run in several calls (a chunk of
    steps at a time, after each chunk's input projection) packs it once."""

    __slots__ = ("shape", "buffer")

    def __init__(self, shape, buffer):
        self.shape, self.buffer = tuple(shape), buffer

    def __repr__(self):
        return "PackedWeight(shape=%s)" % (self.shape,)


def packed_floats(M, K):
    """Floats of a packed [M, K] weight; 0 where the packed kernel is not built or is off."""
    lib = library()
    return 0 if lib is None else int(lib.npl_packed_floats(M, K))


def pack_weight(a, out=None):
    """``a`` [M, K] (float32, any strides: ``U.T`` is read in place) as a :class:`PackedWeight`,
    or None where the packed kernel is not built or is switched off (the loops then take a matrix
    with contiguous rows).  ``out``: a float32 buffer of at least :func:`packed_floats` elements to
    pack into (npl passes its workspace), else one is allocated."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 2:
        raise ValueError("npl.kernels.cpu.pack_weight: a must be a 2-D float32 NumPy array, got %r"
                         % (getattr(a, "dtype", type(a).__name__),))
    M, K = a.shape
    n = packed_floats(M, K)
    if n == 0:
        return None
    if a.strides[0] % 4 or a.strides[1] % 4:
        raise ValueError("npl.kernels.cpu.pack_weight: a's strides %s are not whole floats"
                         % (a.strides,))
    if out is None:
        out = np.empty(n, np.float32)
    elif (not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.ndim != 1
          or not out.flags.c_contiguous or out.size < n):
        raise ValueError("npl.kernels.cpu.pack_weight: out must be a contiguous float32 vector of "
                         "at least %d elements, got %r" % (n, getattr(out, "shape", out)))
    r = library().npl_pack_f32(a.__array_interface__["data"][0], a.strides[0] // 4,
                               a.strides[1] // 4, M, K, _ptr(out), out.size)
    return PackedWeight((M, K), out) if r == 1 else None


def _recurrent(U, shape, name):
    """(pointer, row stride, packed pointer) of a forward loop's recurrent weight: a matrix with
    contiguous rows, a :class:`PackedWeight` of the same shape, or the transpose of a matrix with
    contiguous rows (a view: the kernel's recurrent rows read in place), given to the C loops as
    a negative row stride."""
    if isinstance(U, PackedWeight):
        if U.shape != shape:
            raise ValueError("npl.kernels.cpu: %s has shape %s, expected %s" % (name, U.shape, shape))
        return None, shape[1], _ptr(U.buffer)
    _shape(U, shape, name)
    if (U.ndim == 2 and U.dtype == np.float32 and U.strides[0] == 4 and U.strides[1] % 4 == 0
            and U.strides[1] > 0 and U.shape[0] > 1):
        return U.__array_interface__["data"][0], -(U.strides[1] // 4), None
    return _weights(U, name) + (None,)


def _slices(n, what):
    """The C loops' return value: the number of slices they ran; -1 is a refused call."""
    if n < 0:
        raise ValueError("npl.kernels.cpu.%s: the loop was given no recurrent weight" % what)
    return n


def _lengths(lengths, B):
    """Pointer to the sequence lengths: a C-contiguous float32 [B] (a column is past its end at
    step t when its length is <= t), or None."""
    if lengths is None:
        return None
    _shape(lengths, (B,), "lengths")
    return _dense(lengths, "lengths")


def lstm_forward_seq(UT, G, C, Hs, t0, t1, lengths=None):
    """Steps t0 .. t1-1 of the LSTM forward (see ``npl_lstm_forward_seq_f32``): UT [4H, H] the
    recurrent kernel rows transposed (contiguous rows, or a :class:`PackedWeight`); G [T, 4H, B]
    holds the input projections and gets the gates; C, Hs [T+1, H, B] get c and h.  ``lengths``
    (float32 [B], counted from step 0 of G): past its length a column carries c and h
    unchanged."""
    T, nG, B = G.shape
    H = nG // 4
    u, ldu, up = _recurrent(UT, (nG, H), "UT")
    _shape(C, (T + 1, H, B), "C")
    _shape(Hs, (T + 1, H, B), "Hs")
    n = loop_threads(B)
    with _OneBlasThread(n):
        return _slices(library().npl_lstm_forward_seq_f32(
            sgemm(), u, ldu, up, _dense(G, "G"), _dense(C, "C"), _dense(Hs, "Hs"), t0, t1, H, B,
            _lengths(lengths, B), n), "lstm_forward_seq")


def _dout(dout, T, B, H):
    if dout is None:
        return None, 0
    _shape(dout, (T, B, H), "dout")
    return _dense(dout, "dout"), H


def _grad_slab(dG2, T, B, nG):
    """The gate-major gradient slab [nG, T*B]: (pointer, step stride, row stride) in elements."""
    _shape(dG2, (nG, T * B), "dG2")
    return _dense(dG2, "dG2"), B, T * B


def _fold(DZ, T, B, H, rows, name):
    """(pointer, I) of the d-inputs slab DZ [T, I+H, B] (or (None, 0)), I from the kernel's rows."""
    if DZ is None:
        return None, 0
    I = rows - H
    _shape(DZ, (T, I + H, B), "DZ")
    if I < 0:
        raise ValueError("npl.kernels.cpu: with DZ, %s must be the whole kernel ([I+H, ...])" % name)
    return _dense(DZ, "DZ"), I


def lstm_backward_seq(U, G, C, dout, dh, dc, dG2, dgc, DZ=None, lengths=None):
    """The LSTM backward over all steps (see ``npl_lstm_backward_seq_f32``); dh, dc [H, B] hold
    the final state's cotangents and get the initial state's; dG2 [4H, T*B] gets dL/d(gates);
    dgc [4H, B] is scratch.  U: the recurrent rows of the kernel, [H, 4H]; or, with DZ
    [T, I+H, B], the whole kernel [I+H, 4H], and DZ[t] gets [dx_t; dh_{t-1}].  ``lengths``
    (float32 [B]): past its length a column has zero gate gradients and carries dh and dc back
    unchanged, and its output cotangent there is not read."""
    T, nG, B = G.shape
    H = nG // 4
    if DZ is None:
        _shape(U, (H, nG), "U")
    z, I = _fold(DZ, T, B, H, U.shape[0], "U")
    _shape(U, (I + H, nG), "U")
    for a, name in ((dh, "dh"), (dc, "dc")):
        _shape(a, (H, B), name)
    d, ldo = _dout(dout, T, B, H)
    u, ldu = _weights(U, "U")
    g2, ldstep, lddg = _grad_slab(dG2, T, B, nG)
    _shape(dgc, (nG, B), "dgc")
    n = loop_threads(B)
    with _OneBlasThread(n):
        return library().npl_lstm_backward_seq_f32(
            sgemm(), u, ldu, _dense(G, "G"), _dense(C, "C"), d, ldo, _dense(dh, "dh"),
            _dense(dc, "dc"), g2, ldstep, lddg, _dense(dgc, "dgc"), z, I, T, H, B,
            _lengths(lengths, B), n)


def gru_forward_seq(UgT, UcT, G, Hs, rh, t0, t1, lengths=None):
    """Steps t0 .. t1-1 of the GRU forward (see ``npl_gru_forward_seq_f32``); UgT [2H, H] and
    UcT [H, H]: the recurrent kernel rows transposed (contiguous rows, or each a
    :class:`PackedWeight`); ``lengths`` as for :func:`lstm_forward_seq`."""
    T, nG, B = G.shape
    H = nG // 3
    ug, ldug, ugp = _recurrent(UgT, (2 * H, H), "UgT")
    uc, lduc, ucp = _recurrent(UcT, (H, H), "UcT")
    _shape(Hs, (T + 1, H, B), "Hs")
    _shape(rh, (H, B), "rh")
    n = loop_threads(B)
    with _OneBlasThread(n):
        return _slices(library().npl_gru_forward_seq_f32(
            sgemm(), ug, ldug, ugp, uc, lduc, ucp, _dense(G, "G"), _dense(Hs, "Hs"),
            _dense(rh, "rh"), t0, t1, H, B, _lengths(lengths, B), n), "gru_forward_seq")


def gru_backward_seq(Ug, Uc, G, Hs, dout, dh, dprev, drh, dG2, dgc, DZ=None, lengths=None):
    """The GRU backward over all steps (see ``npl_gru_backward_seq_f32``); dprev [H, B], drh and
    dgc [3H, B] are scratch.  Ug [H, 2H], Uc [H, H]: the recurrent rows of the kernels, drh
    [H, B]; or, with DZ [T, I+H, B], the whole kernels [I+H, 2H] and [I+H, H], drh [I+H, B], and
    DZ[t] gets [dx_t; dh_{t-1}].  ``lengths`` as for :func:`lstm_backward_seq`."""
    T, nG, B = G.shape
    H = nG // 3
    z, I = _fold(DZ, T, B, H, Ug.shape[0], "Ug")
    _shape(Ug, (I + H, 2 * H), "Ug")
    _shape(Uc, (I + H, H), "Uc")
    _shape(drh, (I + H, B), "drh")
    for a, name in ((dh, "dh"), (dprev, "dprev")):
        _shape(a, (H, B), name)
    d, ldo = _dout(dout, T, B, H)
    ug, ldug = _weights(Ug, "Ug")
    uc, lduc = _weights(Uc, "Uc")
    g2, ldstep, lddg = _grad_slab(dG2, T, B, nG)
    _shape(dgc, (nG, B), "dgc")
    n = loop_threads(B)
    with _OneBlasThread(n):
        return library().npl_gru_backward_seq_f32(
            sgemm(), ug, ldug, uc, lduc, _dense(G, "G"), _dense(Hs, "Hs"), d, ldo,
            _dense(dh, "dh"), _dense(dprev, "dprev"), _dense(drh, "drh"), g2, ldstep, lddg,
            _dense(dgc, "dgc"), z, I, T, H, B, _lengths(lengths, B), n)
