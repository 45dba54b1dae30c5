"""A strict stand-in for CuPy, for running npl's CuPy code paths on a machine with no GPU.

TEST DOUBLE: never installed, only put on ``sys.path`` on purpose (``PYTHONPATH=tests/fake_cupy``,
as ``tests/test_fake_cupy.py`` and ``benchmarks/gpu_check.sh``'s dry run do).  It does not
simulate a GPU; it enforces the rules that make code that runs on NumPy fail on CuPy:

* a device array is not a NumPy array: ``np.asarray(d)`` / ``np.array(d)`` raise TypeError (CuPy:
  "Implicit conversion to a NumPy array is not allowed"); ``.get()`` / ``cupy.asnumpy`` copy to the
  host; it has no ``.ctypes`` and no buffer, so the CPU kernels cannot be handed one;
* a NumPy array (other than 0-d) mixed with a device array in a ufunc, an operator, a NumPy
  function (``__array_function__``) or a ``cupy.*`` function raises TypeError, except in the
  functions that copy host data to the device (``cupy.asarray``, ``cupy.array``, ...), which copy;
* ``d[...] = numpy_array`` and ``d[...] = list`` raise (CuPy: "non-scalar numpy.ndarray cannot be
  used for fill"); a NumPy array indexed by a device array raises;
* reductions return 0-d device arrays, not NumPy scalars;
* ufuncs take only ``out``, ``dtype`` and ``casting``;
* only names real CuPy has exist: ``cupy.<name>``, ``cupy.ndarray.<name>`` and NumPy functions
  dispatched to CuPy (``np.stack(device_arrays)``) are checked against ``cupy_api.json`` (written
  from CuPy 14.2.0 by ``make_api.py``), and so are the keywords and the number of positional
  arguments of each ``cupy.*`` function;
* ``cupy.RawModule`` compiles ``rnn_kernels.cu`` by host emulation (``tests/cuda_host.py``, needs
  g++): launches run every thread on the CPU, with the argument checks CuPy itself does not make.

Arithmetic is NumPy's on the underlying host arrays, so results are bit-equal to a NumPy run where
npl's code is the same; what this tests is npl's discipline (no implicit host copies, no mixing,
no CPU-only paths, the CUDA kernels launched with the right arguments), not CuPy or a device.
"""
import builtins as _builtins
import os
import sys
import types

import numpy as _np

__version__ = "0.0.0+fake"
fake = True

_HOST_OK = {"asarray", "array", "asanyarray", "ascontiguousarray", "asfortranarray"}


def _load_api():
    import json
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cupy_api.json")
    with open(path) as f:
        api = json.load(f)
    api["names"] = set(api["functions"]) | set(api["ufuncs"]) | set(api["other"])
    api["ndarray"] = set(api["ndarray"])
    return api


API = _load_api()


def _no_such(what):
    raise AttributeError("fake CuPy: CuPy %s has no %s" % (API["cupy_version"], what))


def _check_call(name, args, kwargs):
    """The call's keywords and positional count against real CuPy's signature of ``name``."""
    params = API["functions"].get(name)
    if params is None:
        return
    named = [p for p in params if p not in ("*", "**")]
    if "**" not in params:
        bad = sorted(set(kwargs) - set(named))
        if bad:
            raise TypeError("fake CuPy: cupy.%s() got unexpected keyword(s) %s (CuPy %s takes %s)"
                            % (name, bad, API["cupy_version"], ", ".join(params)))
    if "*" not in params:
        positional = params.index("*") if "*" in params else len(named)
        if len(args) > positional:
            raise TypeError("fake CuPy: cupy.%s() takes at most %d positional arguments, got %d"
                            % (name, positional, len(args)))
_UFUNC_KW = {"out", "dtype", "casting"}


def _reject(x, where):
    raise TypeError("Unsupported type %s (fake CuPy: a NumPy array where CuPy needs a device array, "
                    "in %s)" % (type(x), where))


def _unwrap(x, where, host_ok=False):
    t = type(x)
    if t is ndarray:
        return x._a
    if isinstance(x, _np.ndarray):
        if host_ok:
            return _np.array(x)                   # a host-to-device copy
        if x.ndim == 0:
            return x
        _reject(x, where)
    if t is list or t is tuple:
        return t(_unwrap(v, where, host_ok) for v in x)
    return x


def _wrap(r):
    if isinstance(r, _np.ndarray):
        return ndarray(r)
    if isinstance(r, _np.generic) and not isinstance(r, (_np.str_, _np.bytes_)):
        return ndarray(_np.asarray(r))
    if type(r) is tuple:
        return tuple(_wrap(v) for v in r)
    if type(r) is list:
        return [_wrap(v) for v in r]
    return r


class _MemoryPointer:
    def __init__(self, a):
        self.ptr = a.__array_interface__["data"][0]


def _binop(uf):
    def op(self, other):
        return uf(self, other)
    return op


def _rbinop(uf):
    def op(self, other):
        return uf(other, self)
    return op


def _ibinop(uf):
    def op(self, other):
        uf(self, other, out=self)
        return self
    return op


class ndarray:
    """A device array: a NumPy array that refuses to be taken for one."""
    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, a):
        if type(a) is not _np.ndarray:
            raise TypeError("fake cupy.ndarray wraps a numpy.ndarray, got %s" % type(a))
        self._a = a

    # -- what CuPy refuses ------------------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
                        "to construct a NumPy array explicitly.")

    @property
    def ctypes(self):
        raise AttributeError("'cupy.ndarray' object has no attribute 'ctypes'")

    @property
    def __array_interface__(self):
        raise AttributeError("'cupy.ndarray' object has no attribute '__array_interface__'")

    def __buffer__(self, flags):
        raise TypeError("a cupy.ndarray does not expose a host buffer")

    # -- NumPy protocols --------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = "numpy.%s.%s" % (ufunc.__name__, method)
        bad = set(kwargs) - _UFUNC_KW
        if bad:
            raise TypeError("fake CuPy: ufunc %s got unsupported keyword(s) %s" % (ufunc.__name__, sorted(bad)))
        args = [_unwrap(x, where) for x in inputs]
        if "out" in kwargs:
            out = kwargs["out"]
            outs = out if type(out) is tuple else (out,)
            for o in outs:
                if o is not None and type(o) is not ndarray:
                    raise TypeError("fake CuPy: out= must be a cupy.ndarray in %s, got %s" % (where, type(o)))
            kwargs["out"] = tuple(None if o is None else o._a for o in outs)
        r = getattr(ufunc, method)(*args, **kwargs)
        if "out" in kwargs:
            return outs[0] if len(outs) == 1 else outs
        return _wrap(r)

    def __array_function__(self, func, types_, args, kwargs):
        where = "numpy.%s" % func.__name__
        if func.__name__ not in API["functions"]:
            raise TypeError("no implementation found for 'numpy.%s' on cupy.ndarray (fake CuPy: "
                            "CuPy %s has no cupy.%s)" % (func.__name__, API["cupy_version"], func.__name__))
        _check_call(func.__name__, args, kwargs)
        args = _unwrap_deep(args, where)
        kwargs = {k: _unwrap_deep(v, where) for k, v in kwargs.items()}
        return _wrap(func(*args, **kwargs))

    # -- attributes -------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray(self._a.T))
    data = property(lambda self: _MemoryPointer(self._a))
    device = property(lambda self: cuda.Device(0))

    @property
    def base(self):
        b = self._a.base
        return None if b is None else ndarray(b) if type(b) is _np.ndarray else None

    def get(self, stream=None, order="C", out=None):
        if out is not None:
            out[...] = self._a
            return out
        return _np.array(self._a, order=order)

    def set(self, arr, stream=None):
        if not isinstance(arr, _np.ndarray) or arr.shape != self._a.shape:
            raise ValueError("fake CuPy: set() needs a numpy array of shape %s" % (self._a.shape,))
        self._a[...] = arr

    def __getattr__(self, name):                  # methods: reshape, astype, sum, ...
        if name.startswith("_") or name not in API["ndarray"] or name in (
                "ctypes", "tofile", "dump", "dumps", "tobytes", "byteswap"):
            raise AttributeError("'cupy.ndarray' object has no attribute %r (fake CuPy)" % name)
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        where = "cupy.ndarray.%s" % name

        def method(*args, **kwargs):
            args = _unwrap_deep(args, where)
            kwargs = {k: _unwrap_deep(v, where) for k, v in kwargs.items()}
            return _wrap(attr(*args, **kwargs))
        return method

    # -- Python protocols -------------------------------------------------------------------------
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)          # rows, or 0-d arrays of a 1-d array

    def __bool__(self):
        return _builtins.bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __complex__(self):
        return complex(self._a)

    def __index__(self):
        if self._a.ndim != 0 or self._a.dtype.kind not in "iub":
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return int(self._a)

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __getitem__(self, key):
        k = _unwrap_key(key)
        return _wrap(self._a[k])

    def __setitem__(self, key, value):
        k = _unwrap_key(key)
        if type(value) is ndarray:
            value = value._a
        elif isinstance(value, _np.ndarray) and value.ndim > 0:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill (fake CuPy)")
        elif isinstance(value, (list, tuple)):
            raise TypeError("Unsupported type %s (fake CuPy: cannot assign a list)" % type(value))
        self._a[k] = value

    def __copy__(self):
        return ndarray(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray(self._a.copy())

    def __reduce__(self):
        raise TypeError("fake CuPy: device arrays are not pickled in these tests")

    __add__, __radd__, __iadd__ = _binop(_np.add), _rbinop(_np.add), _ibinop(_np.add)
    __sub__, __rsub__, __isub__ = _binop(_np.subtract), _rbinop(_np.subtract), _ibinop(_np.subtract)
    __mul__, __rmul__, __imul__ = _binop(_np.multiply), _rbinop(_np.multiply), _ibinop(_np.multiply)
    __truediv__, __rtruediv__, __itruediv__ = (_binop(_np.true_divide), _rbinop(_np.true_divide),
                                               _ibinop(_np.true_divide))
    __floordiv__, __rfloordiv__, __ifloordiv__ = (_binop(_np.floor_divide), _rbinop(_np.floor_divide),
                                                  _ibinop(_np.floor_divide))
    __mod__, __rmod__, __imod__ = _binop(_np.remainder), _rbinop(_np.remainder), _ibinop(_np.remainder)
    __pow__, __rpow__, __ipow__ = _binop(_np.power), _rbinop(_np.power), _ibinop(_np.power)
    __matmul__, __rmatmul__ = _binop(_np.matmul), _rbinop(_np.matmul)
    __and__, __rand__, __iand__ = _binop(_np.bitwise_and), _rbinop(_np.bitwise_and), _ibinop(_np.bitwise_and)
    __or__, __ror__, __ior__ = _binop(_np.bitwise_or), _rbinop(_np.bitwise_or), _ibinop(_np.bitwise_or)
    __xor__, __rxor__, __ixor__ = _binop(_np.bitwise_xor), _rbinop(_np.bitwise_xor), _ibinop(_np.bitwise_xor)
    __lt__, __le__, __gt__, __ge__ = (_binop(_np.less), _binop(_np.less_equal), _binop(_np.greater),
                                      _binop(_np.greater_equal))
    __eq__, __ne__ = _binop(_np.equal), _binop(_np.not_equal)

    def __neg__(self):
        return _np.negative(self)

    def __pos__(self):
        return _np.positive(self)

    def __abs__(self):
        return _np.absolute(self)

    def __invert__(self):
        return _np.invert(self)


def _unwrap_deep(x, where):
    t = type(x)
    if t is ndarray:
        return x._a
    if isinstance(x, _np.ndarray):
        return _unwrap(x, where)
    if t is list or t is tuple:
        return t(_unwrap_deep(v, where) for v in x)
    if t is dict:
        return {k: _unwrap_deep(v, where) for k, v in x.items()}
    return x


def _unwrap_key(key):
    if type(key) is tuple:
        return tuple(_unwrap_key(k) for k in key)
    if type(key) is ndarray:
        return key._a
    return key                                    # NumPy index arrays are accepted (CuPy copies)


class _Ufunc:
    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__
        self.nin, self.nout, self.nargs = uf.nin, uf.nout, uf.nargs

    def __call__(self, *args, **kwargs):
        for a in args:
            if isinstance(a, _np.ndarray) and a.ndim > 0:
                _reject(a, "cupy.%s" % self.__name__)
        if not any(type(a) is ndarray for a in args + tuple(_as_tuple(kwargs.get("out")))):
            args = tuple(ndarray(_np.asarray(a)) if isinstance(a, (_np.generic, _np.ndarray)) else a
                         for a in args)
            if not any(type(a) is ndarray for a in args):
                raise TypeError("Unsupported type: cupy.%s needs a cupy.ndarray argument (fake CuPy)"
                                % self.__name__)
        return self._uf(*args, **kwargs)

    def reduce(self, a, *args, **kwargs):
        return _wrap(self._uf.reduce(_unwrap(a, "cupy.%s.reduce" % self.__name__), *args, **kwargs))

    def outer(self, a, b, **kwargs):
        where = "cupy.%s.outer" % self.__name__
        return _wrap(self._uf.outer(_unwrap(a, where), _unwrap(b, where), **kwargs))

    def at(self, a, indices, b=None):
        where = "cupy.%s.at" % self.__name__
        if type(a) is not ndarray:
            _reject(a, where)
        args = (_unwrap_key(indices),) + (() if b is None else (_unwrap(b, where),))
        self._uf.at(a._a, *args)


def _as_tuple(x):
    if x is None:
        return ()
    return x if type(x) is tuple else (x,)


def _function(name, f, check=True):
    """cupy.<name>: numpy.<name> on the device arrays' data; NumPy array arguments are refused
    except by the host-to-device copies (asarray, array, ...); ``check``: the call against CuPy's
    signature of ``name``."""
    host_ok = name in _HOST_OK
    where = "cupy.%s" % name

    def fn(*args, **kwargs):
        if check:
            _check_call(name, args, kwargs)
        out = kwargs.get("out")
        args = tuple(_unwrap(a, where, host_ok) for a in args)
        kwargs = {k: (_unwrap(v, where, host_ok) if k != "out" else _out(v, where))
                  for k, v in kwargs.items()}
        r = f(*args, **kwargs)
        return out if out is not None else _wrap(r)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = "fake CuPy: numpy.%s on device arrays" % name
    return fn


def _out(v, where):
    if v is None:
        return None
    if type(v) is not ndarray:
        raise TypeError("fake CuPy: out= must be a cupy.ndarray in %s, got %s" % (where, type(v)))
    return v._a


def asnumpy(a, stream=None, order="C", out=None):
    if type(a) is ndarray:
        return a.get(order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    return sys.modules[__name__] if any(type(a) is ndarray for a in args) else _np


def copyto(dst, src, casting="same_kind", where=None):
    if type(dst) is not ndarray:
        _reject(dst, "cupy.copyto (dst)")
    if isinstance(src, _np.ndarray) and src.ndim > 0:
        _reject(src, "cupy.copyto (src)")
    _np.copyto(dst._a, src._a if type(src) is ndarray else src, casting=casting,
               **({} if where is None else {"where": _unwrap(where, "cupy.copyto (where)")}))


_DTYPES = {n: getattr(_np, n) for n in (
    "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
    "float32", "float64", "complex64", "complex128", "intp", "uintp", "dtype", "newaxis", "pi", "e",
    "inf", "nan", "finfo", "iinfo", "result_type", "can_cast", "promote_types", "issubdtype",
    "integer", "floating", "number", "generic", "ndim", "shape", "isscalar")}
globals().update({k: v for k, v in _DTYPES.items() if k in API["names"]})
bool = _np.bool_  # noqa: A001  (cupy.bool_ / cupy.bool)
_cache = {}


def __getattr__(name):
    if name in _cache:
        return _cache[name]
    if name.startswith("_"):
        raise AttributeError(name)
    if name not in API["names"]:
        _no_such("cupy.%s" % name)
    f = getattr(_np, name, None)
    if f is None or isinstance(f, types.ModuleType):
        raise AttributeError("module 'cupy' (fake) has no attribute %r" % name)
    if isinstance(f, _np.ufunc):
        obj = _Ufunc(f)
    elif callable(f) and not isinstance(f, type):
        obj = _function(name, f)
    else:
        raise AttributeError("module 'cupy' (fake) has no attribute %r" % name)
    _cache[name] = obj
    return obj


# -- cupy.cuda ------------------------------------------------------------------------------------
class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDeviceProperties(i):
        return {"name": b"fake CuPy (host emulation, no GPU)", "totalGlobalMem": 0}

    @staticmethod
    def runtimeGetVersion():
        return 0

    @staticmethod
    def deviceSynchronize():
        pass


class _Device:
    def __init__(self, i=0):
        self.id = i

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Stream:
    def synchronize(self):
        pass


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        pass


class _Event:
    def __init__(self, *args, **kwargs):
        import time
        self._time = time
        self.t = None

    def record(self, stream=None):
        self.t = self._time.perf_counter()

    def synchronize(self):
        pass


def _get_elapsed_time(a, b):
    return 1000.0 * (b.t - a.t)


cuda = types.SimpleNamespace(
    runtime=_Runtime(), Device=_Device, Stream=types.SimpleNamespace(null=_Stream()),
    get_current_stream=lambda: _Stream(), Event=_Event, get_elapsed_time=_get_elapsed_time,
    MemoryPool=_MemoryPool)
_pool = _MemoryPool()
get_default_memory_pool = lambda: _pool                    # noqa: E731
get_default_pinned_memory_pool = lambda: _pool             # noqa: E731


# -- kernels: the CUDA source by host emulation -----------------------------------------------------
_launch_log = []
_launches = __import__("collections").Counter()             # kernel name -> launches, this process


class RawModule:
    """``cupy.RawModule(code=..., options=...)``: the kernels of npl's CUDA source, emulated on the
    CPU by tests/cuda_host.py (the source must be npl's own: the emulation reads its signatures)."""

    def __init__(self, code=None, options=(), **kwargs):
        tests = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if tests not in sys.path:
            sys.path.insert(0, tests)
        import tempfile
        import cuda_host
        from npl import kernels
        if code != kernels.source():
            raise ValueError("fake CuPy: RawModule emulates only npl/kernels/rnn_kernels.cu")
        if tuple(options) != tuple(kernels.OPTIONS):
            raise ValueError("fake CuPy: unexpected compile options %r" % (options,))
        d = os.path.join(tempfile.gettempdir(), "npl_fake_cupy_%d" % os.getuid())
        os.makedirs(d, exist_ok=True)
        self._host = cuda_host.build(d)
        self.launches = _launches
        log = os.environ.get("NPL_FAKE_CUPY_LAUNCHES")
        if log and not _launch_log:                 # launch counts per kernel, at exit (JSON)
            import atexit
            import json
            _launch_log.append(log)
            def write(calls=_launches):             # added to what earlier processes wrote
                try:
                    with open(log) as f:
                        total = json.load(f)
                except (OSError, ValueError):
                    total = {}
                for k, n in calls.items():
                    total[k] = total.get(k, 0) + n
                with open(log, "w") as f:
                    json.dump(total, f)
            atexit.register(write)

    def get_function(self, name):
        k = self._host.kernels.get(name)
        if k is None:
            raise AttributeError("fake CuPy: no kernel %r in the module" % name)

        def launch(grid, block, args, shared_mem=0, stream=None):
            for a in args:
                if isinstance(a, _np.ndarray):
                    _reject(a, "a kernel launch (%s)" % name)
            k(grid, block, tuple(a._a if type(a) is ndarray else a for a in args))
            _launches[name] += 1
        launch.__name__ = name
        return launch


# -- cupy.random (for code that draws on the device) ------------------------------------------------
class _Random(types.ModuleType):
    def __getattr__(self, name):
        f = getattr(_np.random, name)
        if callable(f) and not isinstance(f, type):
            return _function("random." + name, f, check=False)
        return f


random = _Random("cupy.random")
sys.modules["cupy.random"] = random
sys.modules["cupy.cuda"] = cuda
ndarray.__module__ = "cupy"
