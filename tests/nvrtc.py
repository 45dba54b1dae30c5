"""NVRTC, CUDA's runtime compiler, driven through ctypes: CuPy's own compile path, with no GPU.

``cupy.RawModule`` compiles ``npl/kernels/rnn_kernels.cu`` with NVRTC, not nvcc, so this is the
compiler the kernels meet on a GPU machine.  NVRTC runs on the CPU and needs neither a device nor
a driver; the pip wheel ``nvidia-cuda-nvrtc-cu12`` (part of ``npl[test]`` on Linux) ships it.  The
library is looked for in ``$NPL_NVRTC`` (a path to ``libnvrtc.so``), the ``nvidia`` wheels' folders,
``$CUDA_PATH``/``$CUDA_HOME`` and the system's library path; :class:`Unavailable` when none loads.

:func:`load` returns an :class:`Nvrtc` with :meth:`Nvrtc.compile`: source, options -> (ok, log,
output), where output is PTX for ``-arch=compute_XX`` and a cubin (SASS) for ``-arch=sm_XX``.
"""
import ctypes
import ctypes.util
import glob
import os
import sys


class Unavailable(RuntimeError):
    pass


def _candidates():
    env = os.environ.get("NPL_NVRTC")
    if env:
        yield env
    for base in sys.path:                             # the nvidia-cuda-nvrtc wheels (cu12, cu13)
        for pattern in ("nvidia/cuda_nvrtc/lib/libnvrtc.so*", "nvidia/cu*/lib/libnvrtc.so*"):
            for p in sorted(glob.glob(os.path.join(base, pattern)), reverse=True):
                if "builtins" not in os.path.basename(p) and ".alt." not in os.path.basename(p):
                    yield p
    for var in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(var):
            yield from sorted(glob.glob(os.path.join(os.environ[var], "lib64", "libnvrtc.so*")))
    name = ctypes.util.find_library("nvrtc")
    if name:
        yield name


class Nvrtc:
    def __init__(self, lib, path):
        self.lib, self.path = lib, path
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)
        n = ctypes.c_int()
        self._check(lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * n.value)()
        self._check(lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        self.archs = tuple(archs)                     # e.g. (50, 52, ..., 90, 100, 120)

    def _check(self, rc, what):
        if rc != 0:
            self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            raise RuntimeError("%s failed: %s" % (what, self.lib.nvrtcGetErrorString(rc).decode()))

    def compile(self, source, options, name="rnn_kernels.cu"):
        """Compile ``source`` (str) with ``options`` (str sequence): (ok, log text, PTX or cubin
        bytes; b"" when the compile failed)."""
        lib = self.lib
        prog = ctypes.c_void_p()
        self._check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0,
                                           None, None), "nvrtcCreateProgram")
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            rc = lib.nvrtcCompileProgram(prog, len(options), opts)
            n = ctypes.c_size_t()
            self._check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n)), "nvrtcGetProgramLogSize")
            log = ctypes.create_string_buffer(n.value)
            self._check(lib.nvrtcGetProgramLog(prog, log), "nvrtcGetProgramLog")
            out = b""
            if rc == 0:
                sass = any(o.startswith(("-arch=sm_", "--gpu-architecture=sm_")) for o in options)
                size, get = ((lib.nvrtcGetCUBINSize, lib.nvrtcGetCUBIN) if sass else
                             (lib.nvrtcGetPTXSize, lib.nvrtcGetPTX))
                self._check(size(prog, ctypes.byref(n)), "size of the output")
                buf = ctypes.create_string_buffer(n.value)
                self._check(get(prog, buf), "the output")
                out = buf.raw.rstrip(b"\0") if not sass else buf.raw
            return rc == 0, log.value.decode(errors="replace"), out
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


def load():
    """The first NVRTC library that loads, as an :class:`Nvrtc`; :class:`Unavailable` if none."""
    tried = []
    for path in _candidates():
        try:
            return Nvrtc(ctypes.CDLL(path), path)
        except (OSError, AttributeError, RuntimeError) as e:
            tried.append("%s (%s)" % (path, e))
    raise Unavailable("NVRTC (libnvrtc) was not found; pip install nvidia-cuda-nvrtc-cu12, or "
                      "set NPL_NVRTC to libnvrtc.so" + ("; tried: " + ", ".join(tried) if tried else ""))
