"""Host emulation of the CUDA kernels: ``npl/kernels/rnn_kernels.cu``, unchanged, run on the CPU.

g++ compiles the CUDA source as C++ with ``cuda_host_shim.h`` force-included: ``__global__`` and
``__device__`` are defined away, ``blockIdx`` / ``blockDim`` / ``threadIdx`` / ``gridDim`` become
globals and ``tanh`` / ``fabs`` / ``fmin`` / ``fmax`` the <cmath> overloads for float and double.
The kernel signatures are read from the source (the ``extern "C" __global__`` definitions inside
``NPL_DEFINE_KERNELS`` and that macro's instantiations), and for each kernel an ``extern "C"``
launcher ``npl_host_<kernel>(grid, block, reverse, <kernel arguments>)`` is generated that runs
every (block, thread) of a 1-D grid in turn, forwards or backwards.

:class:`HostKernels` stands in for :func:`npl.kernels.get`: its kernels are called like a
``cupy.RawKernel``, ``kernel(grid, block, args)``, with NumPy arrays for the pointers and NumPy
scalars for the values, so the real launch wrappers of :mod:`npl.kernels` run unchanged on NumPy
arrays.  A call checks what CuPy would pass through blindly: the number of arguments, each
array's dtype against the parameter's element type and its C-contiguity, each scalar's exact NumPy
type (CuPy passes a scalar with the size of its own type), and the launch shape.  Every array goes
to the kernel inside a copy with 4 KiB of guard on each side, signalling NaNs for float32 and
float64 (0xFF bytes for bool), so a read out of bounds poisons the result and a write out of
bounds raises (arithmetic on a signalling NaN gives a quiet one, a different bit pattern); arrays
passed twice share one copy, as on the device.

Threads run one at a time, so the emulation checks the arithmetic and the indexing, not the
device's math library or a race (the reverse order catches a thread that reads another's output).
"""
import collections
import ctypes
import hashlib
import os
import re
import shutil
import subprocess

import numpy as np

from npl import kernels

SHIM_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_host_shim.h")
GUARD = 4096                                      # bytes of guard on each side of every array
_GUARDS = {np.dtype(t): np.frombuffer(np.array([v], t2).tobytes() * (GUARD // np.dtype(t2).itemsize),
                                      np.uint8)
           for t, t2, v in ((np.float32, np.uint32, 0x7FA00001),            # signalling NaNs
                            (np.float64, np.uint64, 0x7FF4000000000001), (np.bool_, np.uint8, 0xFF))}
_SCALAR_CTYPES = {"int": ctypes.c_int, "float": ctypes.c_float, "double": ctypes.c_double}
_NUMPY_TYPES = {"int": np.int32, "float": np.float32, "double": np.float64, "bool": np.bool_}
_built = {}


class Unavailable(RuntimeError):
    """The emulation cannot be built here (no g++); the message says why."""


def parse(source):
    """The kernels of the CUDA source: ([(name, [(type, param), ...]), ...], [(T, SFX), ...]).

    ``name`` is without the dtype suffix (``lstm_forward``); ``type`` is ``"T*"``, ``"bool*"``,
    ``"int"``, ``"T"``, ... with ``const`` dropped."""
    text = source.replace("\\\n", "\n")
    found = []
    for name, params in re.findall(r'extern\s+"C"\s+__global__\s+void\s+npl_(\w+)_##SFX\s*\((.*?)\)',
                                   text, re.S):
        plist = []
        for p in params.split(","):
            m = re.fullmatch(r"\s*(?:const\s+)?(\w+)\s*(\*?)\s*(\w+)\s*", p)
            if m is None:
                raise ValueError("cuda_host: cannot read parameter %r of kernel %s" % (p, name))
            plist.append((m.group(1) + m.group(2), m.group(3)))
        found.append((name, plist))
    instances = re.findall(r"^NPL_DEFINE_KERNELS\((\w+),\s*(\w+)\)", text, re.M)
    if not found or not instances:
        raise ValueError("cuda_host: no kernels or no NPL_DEFINE_KERNELS instantiation found")
    return found, instances


def launcher_source(source_path, found, instances):
    """C++ text: the CUDA source (#included) and one extern "C" launcher per kernel and dtype."""
    lines = ['#include "%s"' % source_path, "", "#define NPL_HOST_LAUNCHERS(T, SFX) \\"]
    for name, params in found:
        decl = ", ".join("%s %s" % (t, p) for t, p in params)
        call = ", ".join(p for _, p in params)
        lines.append('extern "C" void npl_host_%s_##SFX(unsigned grid, unsigned block, int reverse, '
                     '%s) \\' % (name, decl))
        lines.append("{ NPL_HOST_LAUNCH(grid, block, reverse, npl_%s_##SFX(%s)); } \\" % (name, call))
    lines.append("")
    lines += ["NPL_HOST_LAUNCHERS(%s, %s)" % inst for inst in instances]
    return "\n".join(lines) + "\n"


class HostKernel:
    """One emulated kernel, called like a ``cupy.RawKernel``: ``kernel(grid, block, args)``."""

    def __init__(self, owner, fn, name, params, T):
        self._owner, self._fn, self.name = owner, fn, name
        # (param, element/scalar type name, is_pointer), with T resolved
        self.params = []
        for t, p in params:
            base = t.rstrip("*")
            self.params.append((p, T if base == "T" else base, t.endswith("*")))
        fn.restype = None
        fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_int] + [
            ctypes.c_void_p if ptr else _SCALAR_CTYPES[ty] for _, ty, ptr in self.params]

    def _fail(self, exc, param, what):
        raise exc("%s: argument %r %s" % (self.name, param, what))

    def __call__(self, grid, block, args):
        gx, bx = self._launch_shape(grid, "grid"), self._launch_shape(block, "block")
        if not 1 <= bx <= 1024:
            raise ValueError("%s: %d threads per block (CUDA allows 1 to 1024)" % (self.name, bx))
        args = tuple(args)
        if len(args) != len(self.params):
            raise TypeError("%s takes %d arguments, got %d" % (self.name, len(self.params), len(args)))
        copies, cargs = [], []                   # copies: (array, guarded bytes)
        for (param, ty, ptr), a in zip(self.params, args):
            want = _NUMPY_TYPES[ty]
            if not ptr:
                if type(a) is not want:
                    self._fail(TypeError, param, "must be a %s (the kernel's %s), got %s %r"
                               % (want.__name__, ty, type(a).__name__, a))
                cargs.append(a.item())
                continue
            if not isinstance(a, np.ndarray):
                self._fail(TypeError, param, "must be a NumPy array, got %s" % type(a).__name__)
            if a.dtype != want:
                self._fail(TypeError, param, "has dtype %s, the kernel reads %s" % (a.dtype, ty))
            if not a.flags.c_contiguous:
                self._fail(ValueError, param, "is not C-contiguous (strides %s)" % (a.strides,))
            cargs.append(self._guarded(copies, a, param))
        self._fn(gx, bx, int(self._owner.reverse), *cargs)
        self._owner.calls[self.name] += 1
        for a, buf in copies:
            guard = _GUARDS[a.dtype]
            if (buf[:GUARD] != guard).any() or (buf[GUARD + a.nbytes:] != guard).any():
                raise AssertionError("%s wrote outside an argument of shape %s" % (self.name, a.shape))
            a.reshape(-1).view(np.uint8)[...] = buf[GUARD:GUARD + a.nbytes]

    def _launch_shape(self, dims, what):
        dims = tuple(dims)
        if not 1 <= len(dims) <= 3 or any(type(d) is not int or d < 1 for d in dims) or \
                any(d != 1 for d in dims[1:]):
            raise ValueError("%s: %s must be a 1-D tuple of positive ints, got %r"
                             % (self.name, what, dims))
        return dims[0]

    def _guarded(self, copies, a, param):
        """The address of ``a``'s bytes inside a guarded copy (one copy per distinct array)."""
        for b, buf in copies:
            if np.shares_memory(a, b):
                if (a.ctypes.data, a.nbytes) != (b.ctypes.data, b.nbytes):
                    self._fail(ValueError, param, "partly overlaps another argument")
                return buf.ctypes.data + GUARD
        guard = _GUARDS[a.dtype]
        buf = np.concatenate([guard, a.reshape(-1).view(np.uint8), guard])
        copies.append((a, buf))
        return buf.ctypes.data + GUARD


class HostKernels:
    """The emulated kernels; :meth:`get` has the signature of :func:`npl.kernels.get`.

    ``calls`` counts the launches per kernel name; ``reverse`` runs the threads backwards."""

    def __init__(self, lib_path, found, instances):
        self._lib = ctypes.CDLL(lib_path)
        self.calls = collections.Counter()
        self.reverse = False
        self.kernels = {}
        for T, sfx in instances:
            for name, params in found:
                full = "npl_%s_%s" % (name, sfx)
                self.kernels[full] = HostKernel(self, getattr(self._lib, "npl_host_%s_%s" % (name, sfx)),
                                                full, params, T)

    def get(self, name, dtype):
        sfx = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}[np.dtype(dtype)]
        return self.kernels["npl_%s_%s" % (name, sfx)]


def build(directory):
    """Compile the emulation into ``directory`` (once per process for a given source and shim)
    and load it.  Raises :class:`Unavailable` where g++ is missing, RuntimeError if it fails."""
    gxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("g++")
    if gxx is None:
        raise Unavailable("g++ is not installed: the host emulation of the CUDA kernels needs it")
    source = kernels.source()
    with open(SHIM_PATH, "r", encoding="utf-8") as f:
        key = hashlib.sha256((source + f.read()).encode()).hexdigest()[:16]
    if key in _built:
        return _built[key]
    found, instances = parse(source)
    cpp = os.path.join(str(directory), "rnn_kernels_host_%s.cpp" % key)
    lib = os.path.join(str(directory), "rnn_kernels_host_%s.so" % key)
    with open(cpp, "w", encoding="utf-8") as f:
        f.write(launcher_source(kernels.SOURCE_PATH, found, instances))
    cmd = [gxx, "-x", "c++", "-std=c++14", "-O1", "-Wall", "-Werror", "-shared", "-fPIC",
           "-include", SHIM_PATH, "-o", lib, cpp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("cuda_host: %s failed:\n%s" % (" ".join(cmd), r.stderr))
    _built[key] = HostKernels(lib, found, instances)
    return _built[key]
