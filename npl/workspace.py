"""Host-memory reuse for the sequence passes (NumPy only; CuPy has its own memory pool).

A forward and backward of a sequence allocate a few large slabs (the gates of every step, the
cell and hidden states, the gate gradients, the stacked ``[x; h]`` operand of the weight-gradient
GEMM).  Freshly allocated host memory is not yet backed by pages: the first write to each 4 KB
page is a page fault that the kernel serves by zeroing the page.  On the MNIST-row LSTM benchmark
(C1: B=128, T=28, I=28, H=128) those faults took about a fifth of a training step, because every
step of a training loop asked the allocator for the same slabs again and got fresh pages.

This module keeps the large buffers of one pass for the next.  :func:`empty` hands out a view of a
pooled byte buffer; a buffer is handed out again only when nothing outside the pool refers to it
any longer (NumPy views keep a reference to the buffer that owns their memory, so a buffer that a
live trace, output or gradient still uses is never reused).  Nothing is ever shared between two
live arrays, so results do not depend on the pool; it only changes where the memory comes from.

Policy, chosen so that the pool does not raise a pass's peak memory: a request takes the smallest
free buffer of at least its size and at most twice it; when there is none, the free buffers
smaller than the request are given back to the allocator before a new one is made (a buffer the
pass no longer uses is not held on top of the new one), and beyond the limit the oldest free
buffers go too.  Measured on the benchmark configurations, the peak of NumPy
allocations during a forward+backward is the same with and without the pool (C2 LSTM: 157 MB),
and passes of a training loop reuse their slabs instead of faulting in fresh pages.

Settings: ``NPL_WORKSPACE_BYTES`` (environment) or :func:`set_limit` bounds the bytes the pool may
hold (default 1 GiB; 0 turns pooling off).  :func:`clear` gives all free buffers back to the
allocator, :func:`stats` says what the pool holds.
"""
import math
import os
import sys
import threading

import numpy as np

__all__ = ["empty", "zeros", "set_limit", "get_limit", "clear", "stats"]

# Requests below this size go to the allocator directly: its free lists already serve small
# blocks from memory that is mapped (only blocks above glibc's mmap threshold come back fresh).
MIN_BYTES = 64 * 1024


def _limit_from_env():
    raw = os.environ.get("NPL_WORKSPACE_BYTES", "").strip()
    if not raw:
        return 1 << 30
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError("NPL_WORKSPACE_BYTES must be a number of bytes (0 turns pooling off), "
                         "got %r" % raw) from None
    if value < 0:
        raise ValueError("NPL_WORKSPACE_BYTES must be >= 0, got %r" % raw)
    return value


class _Pool:
    def __init__(self, limit):
        self.limit = limit
        self.buffers = []          # 1-D uint8 arrays, least recently handed out first
        self.nbytes = 0
        self.lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        # The reference count of a buffer that only the pool holds, measured through the same
        # call as every later check (the interpreter's own temporaries differ between versions).
        self.buffers.append(np.empty(1, np.uint8))
        self.free_refs = self._refs(0)
        self.buffers.pop()

    def _refs(self, k):
        return sys.getrefcount(self.buffers[k])

    def _free(self, k):
        return self._refs(k) <= self.free_refs

    def take(self, nbytes):
        with self.lock:
            # best fit: the smallest free buffer that is large enough and at most twice the size
            # (a small array must not pin a large buffer that a later request needs)
            best = None
            for k in range(len(self.buffers)):
                size = self.buffers[k].nbytes - ALIGN
                if nbytes <= size <= 2 * nbytes and \
                        (best is None or size < self.buffers[best].nbytes) and self._free(k):
                    best = k
            if best is not None:
                self.hits += 1
                self.buffers.append(self.buffers.pop(best))   # most recently used last
                return _aligned(self.buffers[-1], nbytes)
            self.misses += 1
            # Free buffers smaller than this request are given back before allocating, so that
            # memory the pass has stopped using is not held on top of the new buffer.  Larger ones
            # are kept: they serve the large slabs of the next pass (evicting them made a T=2000
            # GRU pass re-fault its 375 MB gate slabs every time).
            k = 0
            while k < len(self.buffers):
                if self.buffers[k].nbytes - ALIGN < nbytes and self._free(k):
                    self.nbytes -= self.buffers.pop(k).nbytes
                else:
                    k += 1
            k = 0
            while self.nbytes + nbytes > self.limit and k < len(self.buffers):
                if self._free(k):                             # over the limit: oldest free first
                    self.nbytes -= self.buffers.pop(k).nbytes
                else:
                    k += 1
            if self.nbytes + nbytes > self.limit:
                return None
            self.buffers.append(np.empty(nbytes + ALIGN, np.uint8))
            self.nbytes += nbytes + ALIGN
            return _aligned(self.buffers[-1], nbytes)

    def in_use(self):
        return sum(1 for k in range(len(self.buffers)) if not self._free(k))

    def clear(self):
        with self.lock:
            self.buffers = [self.buffers[k] for k in range(len(self.buffers)) if not self._free(k)]
            self.nbytes = sum(b.nbytes for b in self.buffers)


_pool = _Pool(_limit_from_env())

# Every array of MIN_BYTES and more from empty() starts on a 64-byte boundary (a cache line, and
# an AVX-512 vector), so that the kernels' vector loads do not straddle cache lines and, when the
# C loops split a batch over threads in slices of 16 floats, no cache line holds columns of two
# slices (NumPy's allocator aligns to 16 bytes only).
ALIGN = 64


def _aligned(buf, nbytes):
    """nbytes of the uint8 buffer ``buf`` (nbytes + ALIGN long) from its first 64-byte boundary."""
    start = -buf.ctypes.data % ALIGN
    return buf[start:start + nbytes]


def empty(xp, shape, dtype):
    """``xp.empty(shape, dtype)``, served from the pool when ``xp`` is NumPy and the array is
    large.  The result is C-contiguous and not shared with any other live array."""
    if xp is not np:
        return xp.empty(shape, dtype)
    dtype = np.dtype(dtype)
    shape = shape if isinstance(shape, tuple) else (shape,)
    n = dtype.itemsize * int(math.prod(shape))
    if n < MIN_BYTES:                            # the allocator's: one-step sampling asks for
        return np.empty(shape, dtype)            # several small arrays a step
    shape = tuple(int(s) for s in shape)
    raw = _pool.take(n) if _pool.limit > 0 else None
    if raw is None:
        raw = _aligned(np.empty(n + ALIGN, np.uint8), n)
    return raw.view(dtype).reshape(shape)


def zeros(xp, shape, dtype):
    """``xp.zeros(shape, dtype)`` from the pool (see :func:`empty`)."""
    a = empty(xp, shape, dtype)
    a.fill(0)
    return a


def set_limit(nbytes):
    """Bound the bytes the pool may hold (0 turns pooling off and frees the free buffers).
    Returns the previous limit."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError("set_limit(nbytes): nbytes must be an int number of bytes, got %r"
                        % (nbytes,))
    if nbytes < 0:
        raise ValueError("set_limit(nbytes): nbytes must be >= 0, got %d" % nbytes)
    old, _pool.limit = _pool.limit, int(nbytes)
    if _pool.nbytes > _pool.limit:
        clear()
    return old


def get_limit():
    """The bytes the pool may hold."""
    return _pool.limit


def clear():
    """Give every buffer that no array uses any more back to the allocator."""
    _pool.clear()


def stats():
    """``{"buffers", "nbytes", "in_use", "limit", "hits", "misses"}`` of the pool."""
    with _pool.lock:
        in_use = _pool.in_use()
        return {"buffers": len(_pool.buffers), "nbytes": _pool.nbytes, "in_use": in_use,
                "limit": _pool.limit, "hits": _pool.hits, "misses": _pool.misses}
