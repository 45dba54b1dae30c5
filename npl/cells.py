"""TensorFlow-1 RNN cells with fused sequence passes and hand-written BPTT.

Every cell stores its parameters in TensorFlow's variable layout under TensorFlow's names
(``cell.params``), accumulates gradients under the same names (``cell.grads``), and implements

* ``_forward_seq(x, state, mask) -> (outputs, final_state, record)`` over a whole time-major
  sequence ``x [T, B, I]``: one GEMM projects the inputs of all steps into a preallocated gate slab,
  one recurrent GEMM per step adds ``h_{t-1} @ U`` to that step's rows, and the pointwise gate math
  of :mod:`npl.gates` runs in place on them;
* ``_backward_seq(record, d_outputs, d_final_state) -> (d_x, d_initial_state)``: the per-step gate
  gradients are written into a slab and the weight gradients are one GEMM over all steps at the end.

``mask`` is ``None`` or a bool array ``[T, B, 1]`` (True where ``t < sequence_length[b]``); past a
row's length the state is carried through unchanged and the output is zero, as in TensorFlow.
The public sequence functions live in :mod:`npl.rnn_ops`; ``cell(inputs, state)`` runs one step.
"""
import collections

import numpy as np

from . import activations as _act
from .backend import default_xp, get_array_module
from ._checks import float_array, is_real, real_number, check_fits, check_dtype, check_same_device, check_shape, resolve_dtype, \
    check_on_device
from .gates import (lstm_forward_pointwise, lstm_backward_pointwise,
                    gru_gates_forward, gru_state_forward, gru_backward_pointwise,
                    gru_reset_backward, rnn_backward_pointwise)

from . import random as _random
from . import initializers as _init
from . import workspace as _ws

__all__ = ["LSTMStateTuple", "RNNCell", "TraceBase", "flat_records", "BasicRNNCell", "BasicLSTMCell", "LSTMCell", "GRUCell",
           "GRUBlockCell", "GRUBlockCellV2", "MultiRNNCell", "LayerRecord", "StepTrace",
           "LayerNormBasicLSTMCell"]


class LSTMStateTuple(collections.namedtuple("LSTMStateTuple", ("c", "h"))):
    """State of an LSTM cell: ``c`` (cell state) first, then ``h`` (output), as in TensorFlow."""
    __slots__ = ()

    @property
    def dtype(self):
        if self.c.dtype != self.h.dtype:
            raise TypeError("LSTMStateTuple: c has dtype %s but h has %s" % (self.c.dtype, self.h.dtype))
        return self.c.dtype


def glorot_uniform(shape, rng, dtype):
    """TensorFlow's default variable initialiser (glorot_uniform_initializer)."""
    if len(shape) == 1:
        fan_in = fan_out = shape[0]
    else:
        fan_in, fan_out = shape[0], shape[1]
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


class StaleTraceError(RuntimeError):
    """A trace's backward after its cell's weights were replaced (``set_params``, ``build``,
    ``to_device``) since its forward: the saved gates belong to the old weights."""


def _distinct_nbytes(arrays):
    """Total bytes of the arrays, each array object once (None entries skipped)."""
    seen = {}
    for a in arrays:
        if a is not None:
            seen[id(a)] = int(a.nbytes)
    return sum(seen.values())


class LayerRecord:
    """What one layer's forward kept for its backward (and for learners to look at).

    Attributes: ``cell``; ``x`` [T, B, I] (time-major inputs); ``mask`` ([T, B, 1] bool, True where
    ``t < sequence_length[b]``, or None); ``slabs``: dict of the saved arrays as time-major views
    ``[T, B, ...]``: LSTM ``gates`` [T, B, 4H] (activated, TF's order i, j, f, o), ``c`` [T+1, B, H]
    (``c[0]`` is the initial state), ``h`` [T+1, B, P], and with clipping ``cell_clip_mask`` /
    ``proj_clip_mask``; GRU ``gates`` [T, B, 3H] = r, u, candidate, ``h`` [T+1, B, H]; BasicRNN
    ``gates`` [T, B, H] (= h), ``h``.  After the backward: ``d_gates`` (dL/d pre-activation gates,
    same layout as ``gates``) and, when ``record_state_grads`` was set, ``d_h`` [T, B, P] and (LSTM)
    ``d_c`` [T, B, H]: the total gradients with respect to each step's h and c.

    Internally the arrays are feature-major (``fm``: ``[T, features, B]``, see :mod:`npl.gates`);
    the views above are transposes of them, no copies.
    """

    def __init__(self, cell, x, mask, fm):
        self.cell = cell
        self.version = getattr(cell, "_version", 0)      # the weights this forward ran with
        self.x = x
        self.mask = mask
        self.inv_fm = None if mask is None else ~mask.transpose(0, 2, 1)   # [T, 1, B]
        self.fm = fm
        self.d_gates_fm = None
        self.d_h_fm = None
        self.d_c_fm = None
        self.record_state_grads = False
        self.state_mask_fm = None
        self.wrapper_held = []          # what wrappers around this layer keep (see hold_with)
        self.watched = []               # (owner, version) of wrappers' own variables (watch_with)

    @staticmethod
    def _tm(a):
        return None if a is None else a.transpose(0, 2, 1)

    @property
    def slabs(self):
        return {k: self._tm(v) for k, v in self.fm.items() if k != "xT"}

    @property
    def d_gates(self):
        return self._tm(self.d_gates_fm)

    @property
    def d_h(self):
        return self._tm(self.d_h_fm)

    @property
    def d_c(self):
        return self._tm(self.d_c_fm)

    def _held(self):
        """The arrays the forward saved: the slabs, the step mask and its negation (the state
        dropout's masks when there are any)."""
        return list(self.fm.values()) + [self.mask, self.inv_fm, self.state_mask_fm] + self.wrapper_held

    @property
    def nbytes(self):
        """Bytes held by the saved arrays (the trace's memory, O(T * B * (gates + state)))."""
        return _distinct_nbytes(self._held())


# Sigmoid gates are computed from weights prescaled by 1/2 (one tanh call for all gates, see
# npl.gates.lstm_forward_pointwise) when T*B is at least this multiple of the kernel's rows: the
# scaled copy of the kernel costs about as much as the saving on that many batch columns
# (measured: batch-1 sampling, T*B = 1, is 2x slower with it; C1, T*B = 3584, 23x the rows, gains).
PRESCALE_MIN_RATIO = 4

# The input projection is computed this many bytes of gates at a time (see _projection).
PROJECTION_CHUNK_BYTES = 2 << 20
# A forward that keeps no trace holds the gates of this many bytes of steps at a time, and the
# states of as many steps (see _projection's ``ring`` and LSTMCell._infer_seq): a chunk's gates
# stay in cache between its projection and its steps.  Measured, one thread, forward, against
# the pass that keeps every step's slabs (same process, alternating, medians): B=512, T=28,
# I=28, H=128 LSTM 0.87-0.90 of its time with a 2 MB ring (1.03-1.06 with 8 MB), GRU 0.83-0.91.
# With a projection weight [W^T | b] over INFERENCE_RING_WIDE_WEIGHT_BYTES (C2's, 1.6-2 MB) a
# ring of a few steps lost 3-4 % (C2's GRU: 5 steps 1.03-1.10, 21 steps 0.95-1.00), so such a
# ring holds at least INFERENCE_RING_WIDE_MIN_STEPS steps.
INFERENCE_RING_BYTES = 2 << 20
INFERENCE_RING_WIDE_WEIGHT_BYTES = 1 << 20
INFERENCE_RING_WIDE_MIN_STEPS = 8
# A stack's trace-less pass runs this many bytes of a layer's outputs (at least as many steps) at
# a time through all its layers (MultiRNNCell._infer_seq).
INFERENCE_STACK_BYTES = 8 << 20
INFERENCE_STACK_MIN_STEPS = 64


# A projection of at most this many columns (T*B) per row of [W^T | b] (I+1) is computed straight
# from W's column blocks, x [T*B, I] @ W [I, nG], with no copy of the weights: batch-1 sampling
# (T*B = 1) copied [W^T | b] every step, and the GRU its two kernels' input rows before that
# (measured, C5's shapes, H = 256, I = 65, one thread, µs a step, best of 30 runs of 100 steps,
# alternating processes: GRU 58-61 -> 47-48, LSTM 63-66 -> 56).
DIRECT_PROJECTION_MAX_RATIO = 0.25


def _projection(W, x, b, mm=None, ring=False):
    """The input projection G[t] = W^T x_t + b of every step, bias included, in a [T, nG, B] slab.

    Returns ``(G, K, fill)``: ``fill(t0)`` computes steps t0 .. t0+K-1 with one GEMM into ``G``
    and returns them (a [k, nG, B] view).  ``ring`` (a forward that keeps no trace): ``G`` holds
    only K steps, INFERENCE_RING_BYTES of them, and each ``fill`` overwrites it.
    The sequence loop calls it every K steps, so a chunk is projected just before the recurrence
    reads it and is still in cache; K is chosen so that a chunk is about 2 MB (measured on the
    C1 benchmark: 3-7 % faster than projecting all steps first).  When one step's gates exceed
    320 KB the single large GEMM is the better trade (C2's GRU was 5 % slower chunked) and K = T.  x [T, B, I] (any strides) is copied
    once into feature-major [T, I+1, B] with a row of ones that carries the bias:
    [W^T | b] [nG, I+1] @ [T, I+1, B].  ``mm``: see :func:`_matmul`.  ``W`` [I, nG] may be given
    as a tuple of column blocks ([I, n_k] views of the kernels), concatenated only where needed:
    a projection of few columns (DIRECT_PROJECTION_MAX_RATIO) multiplies x by each block in place,
    x [T*B, I] @ W_k [I, n_k], and transposes the small result into G."""
    xp = get_array_module(x)
    T, B, I = x.shape
    blocks = W if isinstance(W, tuple) else (W,)
    nG = sum(w.shape[1] for w in blocks)
    if I > 1 and T * B <= DIRECT_PROJECTION_MAX_RATIO * (I + 1):
        xt = x.reshape(T * B, I)                # [T*B, I] (a copy only where x's strides need it)
        G = _ws.empty(xp, (T, nG, B), x.dtype)
        off = 0
        for w in blocks:
            n = w.shape[1]
            G[:, off:off + n] = xp.matmul(xt, w).reshape(T, B, n).transpose(0, 2, 1)  # [T*B, I] @ [I, n]
            off += n
        G += b[:, None]
        return G, T, lambda t0: G
    W = blocks[0] if len(blocks) == 1 else xp.concatenate(blocks, axis=1)
    step_bytes = nG * B * x.dtype.itemsize
    if ring:
        K = _ring_steps(T, B, I, nG, x.dtype)
    elif I == 1 or xp is not np or step_bytes > 320 * 1024:
        K = T
    else:
        K = max(1, min(T, PROJECTION_CHUNK_BYTES // step_bytes))
    R = K if ring else T                        # the steps G holds
    G = _ws.empty(xp, (R, nG, B), x.dtype)
    if I == 1:                                  # one input feature (e.g. a sine wave): an outer
        def fill(t0):                           # product [1, nG, 1] * [k, 1, B]; BLAS is slow at K=1
            k, o = min(K, T - t0), 0 if ring else t0
            g = G[o:o + k]
            xp.multiply(W.T[None], x[t0:t0 + k].transpose(0, 2, 1), out=g)
            g += b[:, None]
            return g
        return G, K, fill
    Wb = xp.concatenate([W.T, b[:, None]], axis=1)    # [nG, I+1]
    if mm is not None and K < T:                      # chunks on npl's kernel: pack [W^T | b] once
        Wb = _packed(Wb) or Wb
    x1 = _ws.empty(xp, (R, I + 1, B), x.dtype)        # [x_t; 1], feature-major
    x1[:, I] = 1

    def fill(t0):
        k, o = min(K, T - t0), 0 if ring else t0
        _copy(x1[o:o + k, :I], x[t0:t0 + k].transpose(0, 2, 1))
        return _matmul(Wb, x1[o:o + k], G[o:o + k], mm)   # [nG, I+1] @ [k, I+1, B] -> [k, nG, B]
    return G, K, fill


def _ring_steps(T, B, I, nG, dtype):
    """The steps of a trace-less pass's ring (see INFERENCE_RING_BYTES)."""
    itemsize = np.dtype(dtype).itemsize
    K = INFERENCE_RING_BYTES // (nG * B * itemsize)
    if nG * (I + 1) * itemsize > INFERENCE_RING_WIDE_WEIGHT_BYTES:
        K = max(K, INFERENCE_RING_WIDE_MIN_STEPS)
    return max(1, min(T, K))


def _run_ring(T, K, project, slabs, run, out):
    """The chunk loop of a trace-less pass: for each chunk of K steps (the last one shorter),
    ``project(t0)`` fills the ring's gates [k, nG, B], ``run(G, k, t0)`` runs the steps from slot
    0 of each state slab in ``slabs`` (the last one h) into slots 1 .. k, and the chunk's outputs
    are copied into ``out``; the next chunk starts from slot k.  Returns the final slot, k."""
    k = 0
    for t0 in range(0, T, K):
        if k:                                       # the last chunk's final state
            for S in slabs:
                S[0] = S[k]
        G = project(t0)                             # steps t0 .. t0+k-1
        k = G.shape[0]
        run(G, k, t0)
        _copy(out[t0:t0 + k], slabs[-1][1:k + 1].transpose(0, 2, 1))
    return k


def _copy(dst, src):
    """dst[...] = src; the cells' outputs and d inputs are transposed views of feature-major slabs,
    which npl.kernels.cpu.copy_transposed copies in cache blocks (NumPy's strided copy took 0.30
    of C1's 23 ms, the blocked one 0.12) where it takes them."""
    if type(src) is np.ndarray and src.dtype == np.float32:
        from .kernels import cpu
        if cpu.copy_transposed(src, dst):
            return
    dst[...] = src


def _matmul(a, b, out, mm=None):
    """out = a @ b with the array module's matmul, or with ``mm`` (:func:`npl.kernels.cpu.matmul`,
    npl's own threads) when the pass's C loops split the batch over threads: then no GEMM of the
    pass wakes the BLAS's thread pool, whose idle workers would poll the cores the loops use."""
    if mm is None:
        return get_array_module(a).matmul(a, b, out=out)
    mm(a, b, out)
    return out


def _threaded_gemm(loops, B):
    """:func:`npl.kernels.cpu.matmul` when ``loops`` (from :func:`_c_loops`) run a batch of B on
    more than one thread or have the packed kernel (which then runs the input projection), else
    None (the array module's matmul)."""
    if loops is None:
        return None
    return loops.matmul if loops.packed_gemm() or loops.loop_threads(B) > 1 else None


# The C time loops run from this batch size up.  Below it the Python loop is quicker on the BLAS's
# sgemm: NumPy's matmul turns a one-column product into a GEMV, while the loops' sgemm packs the
# whole recurrent weight block every step (measured, LSTM H=256, one step: batch 1 88 us in C
# against 71 us in Python, batch 2 89 / 86, batch 8 205 / 212, batch 16 258 / 274); and the packed
# kernel's register tile fills only B of its 16-column vectors (LSTM H=256, T=50, forward:
# batch 1 6.5 ms in C against 1.6 in Python).
C_LOOPS_MIN_BATCH = 8
# Smaller batches run in the C loops all the same, from this many steps, on the packed kernel's
# narrow form (vectors along the weight's rows, npl.kernels.cpu.narrow_max) with the gate math
# along units and columns together.  Measured for batch 1 (one thread, I = 65, µs, Python loop /
# C loops): LSTM H=256 forward T=1 83 / 178, T=8 344 / 306, T=32 1062 / 752; H=64 forward T=8
# 149 / 87, T=32 477 / 126.  Batches 2-7 (one thread, I = 28, forward+backward, ms, Python / C):
# T=8, H=128 LSTM batch 2 0.486 / 0.388, batch 4 0.611 / 0.443, batch 7 0.877 / 0.590, GRU
# batch 4 0.541 / 0.352; H=256 LSTM batch 2 1.089 / 1.017, batch 4 2.362 / 1.320, GRU batch 4
# 0.988 / 0.934; but T=4, H=256 batch 2 0.686 / 0.845.  (Until the narrow kernel's accumulators
# stopped spilling to the stack, batches 2-7 were slower in C: T=28, H=128, forward, batch 4
# 0.65 ms in Python against 0.88.)
NARROW_LOOPS_MIN_STEPS = 8


def _narrow_batch(batch):
    """Whether the C loops run a pass of this batch on the narrow form
    (:func:`npl.kernels.cpu.narrow_batch`)."""
    from .kernels import cpu
    return cpu.narrow_batch(batch)


def _loops_may_take(a, batch):
    """Whether the C loops could run a pass on ``a`` ([T, ...] float32 NumPy data) with this
    batch: from C_LOOPS_MIN_BATCH, or a smaller batch with NARROW_LOOPS_MIN_STEPS steps or more
    on the narrow form.  The cheap checks first, so that other data never builds the C library."""
    if type(a) is not np.ndarray or a.dtype != np.float32:
        return False
    if batch >= C_LOOPS_MIN_BATCH:
        return True
    return batch >= 1 and a.shape[0] >= NARROW_LOOPS_MIN_STEPS and _narrow_batch(batch)


# In the C backward loops, d inputs are folded into each step's recurrent GEMM (the whole kernel
# times the step's gate gradients gives [dx_t; dh_{t-1}]) when the input is at most this fraction
# of the units: I more rows per step cost less than a separate all-steps GEMM whose narrow output
# runs at 50-70 GFLOP/s (measured on C1, I = 28, H = 128, one thread, forward+backward: LSTM
# 24.6 -> 24.1 ms, GRU 19.3 -> 18.9 ms; no difference with two BLAS threads).
FOLD_D_INPUTS_MAX_RATIO = 0.25


def _c_loops(x, act, plain, batch):
    """The C sequence-loop module (:mod:`npl.kernels.cpu`) when this pass can use it: float32
    NumPy data, tanh activations, a batch :func:`_loops_may_take`, and ``plain`` (no
    peepholes, clipping, projection, state dropout or per-step recording, and any
    sequence_length mask in the form :func:`_loop_lengths` gives: what the C loops implement)."""
    if not plain or act is not _act.tanh or not _loops_may_take(x, batch):
        return None
    from .kernels import cpu
    return cpu if cpu.sequence_loops() else None


def _packed(a):
    """``a`` packed for npl's kernel (:func:`npl.kernels.cpu.pack_weight`, into the workspace), for
    an operand that several calls multiply: packed once, where each call would pack it again; None
    where the packed kernel is not built or is switched off."""
    from .kernels import cpu
    n = cpu.packed_floats(*a.shape)
    return cpu.pack_weight(a, _ws.empty(np, (n,), a.dtype)) if n else None


# A forward that runs its steps in one call of the C loops packs a recurrent weight smaller than
# this inside that call, from a transposed copy: for C4's tiny layers (14 KB) packing it first in
# Python cost 3-4 % of the forward+backward in call overhead.
PREPACK_MIN_BYTES = 64 * 1024


def _loop_weight(U, calls, narrow=False):
    """U^T for the C forward loops, U [P, nG] (rows of a kernel), which ``calls`` calls of the
    loops use: on the packed kernel packed once for all of them, read from U in place (a
    transposed copy of C1's LSTM weights took 154 us of its 8.3 ms forward, and each of its 4
    calls packed it again); else a transposed copy, [nG, P], which the loops pack themselves or,
    on sgemm, multiply 3-20 % quicker than U^T in place.  ``narrow`` (a batch the narrow form
    takes, :func:`_narrow_batch`): U^T as a view of U, whose rows the loops copy as they are."""
    if narrow:                          # the loops copy U's rows as A^T for the narrow form
        return U.T
    packed = _packed(U.T) if calls > 1 or U.nbytes >= PREPACK_MIN_BYTES else None
    if packed is not None:
        return packed
    UT = _ws.empty(np, U.shape[::-1], U.dtype)
    UT[...] = U.T
    return UT


def _loop_lengths(mask):
    """A sequence_length mask ([T, B, 1], True at the valid steps) in the C loops' form: each
    column's length, float32 [B]; None without a mask; False when the valid steps of a column are
    not a prefix (the C loops take lengths, so such a mask keeps the Python loop)."""
    if mask is None:
        return None
    if type(mask) is not np.ndarray:
        return False
    m = mask[:, :, 0]
    n = m.sum(axis=0)
    if not (m == (np.arange(m.shape[0])[:, None] < n)).all():
        return False
    return n.astype(np.float32)


def _c_backward_inputs(dout, dtype, T, B, I, H):
    """What a C backward loop takes besides the weights: the output cotangent as a C-contiguous
    time-major array (or None) and, for narrow inputs (FOLD_D_INPUTS_MAX_RATIO), the slab DZ
    [T, I+H, B] in which each step leaves [dx_t; dh_{t-1}] (else None)."""
    if dout is not None:
        dout = np.ascontiguousarray(dout, dtype=dtype)
    fold = I <= FOLD_D_INPUTS_MAX_RATIO * H
    return dout, (_ws.empty(np, (T, I + H, B), dtype) if fold else None)


def _folded_dx(DZ, I):
    """d inputs [T, B, I] (a view) from the slab a folded C backward filled, or None."""
    return None if DZ is None else DZ[:, :I].transpose(0, 2, 1)


def _flat(a):
    """[T, F, B] -> [F, T*B] (one copy), so that a sum over all steps is one GEMM."""
    return a.transpose(1, 0, 2).reshape(a.shape[1], -1)


def _masked_fm(dout, rec):
    """Output cotangent [T, B, P] -> feature-major view [T, P, B], zero past each row's length."""
    if dout is None:
        return None
    d = dout.transpose(0, 2, 1)
    return d if rec.inv_fm is None else get_array_module(d).where(rec.inv_fm, 0, d)


def _state_dropout(rec, state_mask, T, xp):
    """Set up state dropout (DropoutWrapper's state_keep_prob): ``state_mask`` [T or 1, B, P]
    scaled mask (time-major, public layout) -> feature-major view [T or 1, P, B] kept on the record,
    and the slab that holds the undropped outputs.  Returns (S, h_out) or (None, None)."""
    if state_mask is None:
        return None, None
    S = state_mask.transpose(0, 2, 1)
    h = rec.fm["h"]
    h_out = rec.fm["h_out"] = _ws.empty(xp, (T,) + h.shape[1:], h.dtype)
    rec.state_mask_fm = S
    return S, h_out


def _drop_state(Hs, t, S, h_out):
    """The step's output keeps h_t; the state carried to the next step is h_t * mask_t."""
    if S is not None:
        h_out[t] = Hs[t + 1]
        Hs[t + 1] *= S[t if S.shape[0] > 1 else 0]


def _step_grad(dh, dout_fm, t, rec, carry):
    """Turn the carried dL/d(state h_t) into dL/dh_t of the step's own output (adding the output
    cotangent, and through state dropout when there is one).  Returns the array whose rows pass
    through unchanged for rows past their length."""
    S = rec.state_mask_fm
    if S is not None:
        if rec.inv_fm is not None:
            carry[...] = dh
        dh *= S[t if S.shape[0] > 1 else 0]
    if dout_fm is not None:
        dh += dout_fm[t]                              # dL/dh_t: output + carried
    return carry if (S is not None and rec.inv_fm is not None) else dh


def _outputs(rec):
    """The [T, B, P] view of the outputs: h, or the undropped h under state dropout."""
    h_out = rec.fm.get("h_out")
    return (rec.fm["h"][1:] if h_out is None else h_out).transpose(0, 2, 1)


def _gate_grad_slab(G):
    """Storage for dL/d(gates) of every step: returns (flat [nG, T*B], per-step view [T, nG, B]).

    On NumPy the slab is gate-major, so the weight gradients read it as one [nG, T*B] operand with
    no copy (each step writes a [nG, B] block with rows T*B apart; BLAS takes the row stride).  The
    CUDA kernels want contiguous steps, so on CuPy the slab is step-major and flattened once."""
    xp = get_array_module(G)
    T, nG, B = G.shape
    if xp is np:
        flat = _ws.empty(np, (nG, T * B), G.dtype)
        return flat, flat.reshape(nG, T, B).transpose(1, 0, 2)
    dG = _ws.empty(xp, G.shape, G.dtype)
    return None, dG


SPLIT_KERNEL_GRAD_BYTES = 4 << 20


def _kernel_grad(x, h, dG2, scale=None, reuse=None, mm=None, loops=None):
    """sum_t [x_t; h_t] dG_t^T and sum_t dG_t: the kernel gradient [I+P, nG] and the bias gradient
    [nG] over all steps, x: [T, B, I] (any strides), h: [T, P, B] (times ``scale``, [T, P, B],
    when given: the GRU candidate's r * h), dG2: [nG, T*B].  Returns (grad, bias grad, operand);
    passing the operand back as ``reuse`` (same x) refills only its h rows.

    The operand ends with a row of ones, so the same GEMM sums the bias gradient (on C1 a separate
    ``dG2.sum(axis=1)`` took 0.3 ms of the 26 ms step).  When x is C-contiguous (time-major inputs)
    and large (>= SPLIT_KERNEL_GRAD_BYTES) its rows are used in place, [T*B, I]^T @ dG2^T, and the
    operand holds only h and the ones, [P+1, T*B]: the peak memory of the backward is lower by x's
    size (C2: 6.5 MB).  Otherwise the operand is [x; h; 1] stacked, [I+P+1, T*B], and one GEMM
    (faster for narrow inputs: on C1, I = 28, the split GEMMs took 7.8 ms against 6.7).

    ``loops`` (the C loops' module, when the pass ran them): the packed kernel computes the sum
    step by step instead (:func:`npl.kernels.cpu.kernel_grad`: the gate-major slab read in
    place, no operand stacked; operand returned None), where it is built."""
    xp = get_array_module(h)
    T, B, I = x.shape
    P = h.shape[1]
    if loops is not None and reuse is None:
        out = np.empty((I + P + 1, dG2.shape[0]), h.dtype)
        if loops.kernel_grad(x, h, dG2, out, scale):
            return out[:I + P], out[I + P], None
    split = x.flags.c_contiguous and x.nbytes >= SPLIT_KERNEL_GRAD_BYTES
    top = 0 if split else I                      # the h rows start here
    op = reuse
    if op is None:
        op = _ws.empty(xp, (top + P + 1, T * B), h.dtype)
        if not split:
            op[:I].reshape(I, T, B)[...] = x.transpose(2, 0, 1)
        op[top + P] = 1
    h_rows = op[top:top + P].reshape(P, T, B)
    if scale is None:
        h_rows[...] = h.transpose(1, 0, 2)
    else:
        xp.multiply(scale.transpose(1, 0, 2), h.transpose(1, 0, 2), out=h_rows)
    out = xp.empty((I + P + 1, dG2.shape[0]), h.dtype)
    if not split:
        _matmul(op, dG2.T, out, mm)                                  # [I+P+1, T*B] @ [T*B, nG]
    else:
        _matmul(x.reshape(T * B, I).T, dG2.T, out[:I], mm)          # [I, T*B] @ [T*B, nG]
        _matmul(op, dG2.T, out[I:], mm)                              # [P+1, T*B] @ [T*B, nG]
    return out[:I + P], out[I + P], op


def _dx(W, dG2, T, B, mm=None):
    """d x_t = W @ dG_t for all steps at once: [I, nG] @ [nG, T*B] -> [T, B, I] (a view)."""
    xp = get_array_module(W)
    out = _ws.empty(xp, (W.shape[0], T * B), W.dtype)
    return _matmul(W, dG2, out, mm).reshape(W.shape[0], T, B).transpose(1, 2, 0)


def _state_fm(a):
    """[B, F] public state -> [F, B] (a view)."""
    return a.T


def _ws_copy(a):
    """A C-contiguous copy of ``a`` from the workspace (a pooled one, from 64 KB, is reused across
    passes and starts on a cache line, like the slabs the C loops write beside it)."""
    out = _ws.empty(get_array_module(a), a.shape, a.dtype)
    out[...] = a
    return out


def _state_public(a):
    """[F, B] -> new contiguous [B, F] array (never a view into a trace)."""
    return a.T.copy()


class Parameterized:
    """Named parameters and their accumulated gradients (shared by cells and layers).

    Subclasses keep ``_params`` and ``_grads``: dicts name -> array with TensorFlow's names
    relative to the object.  The dicts handed out are new, the arrays in them the live ones.
    ``_version`` counts the replacements of the weights (``set_params``, ``build``, ``to_device``),
    so that a trace can tell that its forward ran with other weights."""

    _version = 0
    # the backend chosen with ``to_device`` ("numpy" / "cupy"; None: the one in force at build)
    _device = None

    def _bump_version(self):
        self._version = self._version + 1

    def _home_xp(self):
        """The array module new parameters (and an unbuilt cell's states) go to: the backend
        given to ``to_device``, else the one in force."""
        if self._device is None:
            return default_xp()
        if self._device == "cupy":
            from .backend import _import_cupy
            return _import_cupy()
        return np

    @property
    def params(self):
        """Dict of parameter arrays in TensorFlow's layout, keyed by TF's names."""
        return dict(self._params)

    @property
    def grads(self):
        """Dict of accumulated gradients, same keys and shapes as :attr:`params`."""
        return dict(self._grads)

    @property
    def trainable_variables(self):
        """List of (name, array) pairs, in a stable order."""
        return list(self.params.items())

    def zero_grad(self):
        """Set every accumulated gradient to zero."""
        for g in self._grads.values():
            g[...] = 0


class RNNCell(Parameterized):
    """Base class: parameters, gradients, state structures and the one-step ``__call__``."""

    # A sequence may be run in consecutive chunks with the state carried between them (the
    # trace-less forward does, to bound its memory).  False for cells that draw per-call random
    # masks over the whole sequence (DropoutWrapper).
    _chunkable = True

    _param_specs = ()  # filled per cell: name -> shape function
    _kernel_init = None     # the cell's initializer for its kernels (None: glorot uniform)
    _bias_init = None       # and for its biases (None: zeros; GRU gates/bias: ones)

    def _leaves(self):
        """The cells that own parameters, through stacks and wrappers: ``[self]`` for a leaf."""
        return [self]

    def __init__(self, num_units, activation=None, dtype=None, seed=None, input_size=None, name=None):
        if isinstance(num_units, bool) or not isinstance(num_units, (int, np.integer)) or num_units < 1:
            raise ValueError("num_units must be a positive integer, got %r" % (num_units,))
        self._num_units = int(num_units)
        self._activation = _act.get(activation)
        self._dtype = resolve_dtype(dtype)
        self._seed = _random.check_seed(seed)
        self._params = {}
        self._grads = {}
        self._input_size = None
        self.name = name or self._default_name
        if input_size is not None:
            self.build(input_size, self._dtype or np.float32)

    # ---------------------------------------------------------------- structure
    @property
    def num_units(self):
        return self._num_units

    @property
    def input_size(self):
        """The input width, known once the cell is built."""
        return self._input_size

    @property
    def built(self):
        return self._input_size is not None

    @property
    def dtype(self):
        return self._dtype

    @property
    def output_size(self):
        return self._num_units

    @property
    def state_size(self):
        return self._num_units

    # ---------------------------------------------------------------- parameters
    def _role(self, name):
        """The name the generic code reads a parameter's kind from (a kernel's ends in "kernel",
        a bias's in "bias"): TF's name itself, but for a cell whose TF names say neither
        (GRUBlockCell's ``w_ru``, ...: see :attr:`GRUCell._param_names`)."""
        return name

    def _init_value(self, name, shape, rng, dtype):
        bias = self._role(name).endswith("bias")
        init = self._bias_init if bias else self._kernel_init
        if init is not None:
            return _init.initialize(init, shape, dtype, rng, name)
        if bias:
            return np.zeros(shape, dtype)
        return glorot_uniform(shape, rng, dtype)

    def build(self, input_size, dtype=np.float32):
        """Create the parameters for inputs of width ``input_size`` (TF's initialisers)."""
        if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 1:
            raise ValueError("input_size must be a positive integer, got %r" % (input_size,))
        dtype = resolve_dtype(dtype)
        rng = _random.generator(self._seed)
        xp = self._home_xp()
        self._input_size = int(input_size)
        self._dtype = dtype
        self._params = {}
        for name, shape in self._shapes(self._input_size).items():
            self._params[name] = xp.asarray(self._init_value(name, shape, rng, dtype))
        self._grads = {k: xp.zeros_like(v) for k, v in self._params.items()}
        self._on_build()
        self._bump_version()
        return self

    def _on_build(self):
        pass

    def set_params(self, values, strict=True):
        """Set the weights from a dict name -> array in one call (e.g. read from a TF checkpoint).

        Names are TF's, relative to the cell.  An unbuilt cell is built from the kernel's shape.
        Unknown or missing names (with ``strict``), non-float values and wrong shapes raise
        ValueError/TypeError, and nothing is changed (an unbuilt cell stays unbuilt) unless every
        entry is valid.  Values are copied into the existing arrays (so MultiRNNCell and optimizers
        that hold them keep seeing the same arrays).
        """
        self._apply_plan(self._plan_params(values, strict))
        return self

    def _plan_params(self, values, strict, name="set_params"):
        """Validate ``values`` without changing anything: (input_size, dtype, arrays)."""
        if not isinstance(values, dict):
            raise TypeError("%s expects a dict name -> array, got %s" % (name, type(values).__name__))
        if self.built:
            input_size, dtype = self._input_size, self._dtype
            shapes = {k: tuple(v.shape) for k, v in self._params.items()}
        else:
            input_size, dtype = self._infer_input_size(values, name)
            shapes = self._shapes(input_size)
        unknown = sorted(set(values) - set(shapes))
        missing = sorted(set(shapes) - set(values))
        if unknown:
            raise ValueError("%s: unknown parameter names %s for %s; expected %s"
                             % (name, unknown, type(self).__name__, sorted(shapes)))
        if strict and missing:
            raise ValueError("%s: missing parameters %s for %s (pass strict=False to set only some)"
                             % (name, missing, type(self).__name__))
        arrays = {}
        for k, v in values.items():
            a = float_array(v, "%s: params[%r]" % (name, k))
            if tuple(a.shape) != tuple(shapes[k]):
                raise ValueError("%s: %r must have shape %s, got %s"
                                 % (name, k, tuple(shapes[k]), tuple(a.shape)))
            check_fits(a, dtype, "%s: params[%r]" % (name, k))
            arrays[k] = a
        return input_size, dtype, arrays

    def _apply_plan(self, plan):
        input_size, dtype, arrays = plan
        if not self.built:
            self.build(input_size, dtype)
        xp = self._xp()
        for k, a in arrays.items():
            if get_array_module(a) is not xp:
                a = xp.asarray(a) if xp is not np else a.get()
            self._params[k][...] = a.astype(self._dtype, copy=False)
        self._bump_version()

    def _infer_input_size(self, values, name):
        shapes = self._shapes(1)
        kernels = [k for k in shapes if self._role(k).endswith("kernel")]
        key = next((k for k in kernels if k in values), None)
        if key is None:
            raise ValueError("%s on an unbuilt %s needs %r to infer the input size"
                             % (name, type(self).__name__, kernels[0]))
        kshape = np.shape(values[key])
        extra = shapes[key][0] - 1
        if len(kshape) != 2 or kshape[0] - extra < 1:
            raise ValueError("%s: %r has shape %s; expected [input_size + %d, %d]"
                             % (name, key, tuple(kshape), extra, shapes[key][1]))
        dtype = self._dtype
        if dtype is None:
            vd = np.dtype(getattr(values[key], "dtype", np.float32))
            dtype = vd if vd in (np.float32, np.float64) else np.dtype(np.float32)
        return int(kshape[0] - extra), dtype

    def to_device(self, backend=None):
        """Move parameters and gradients to ``backend`` ("numpy" or "cupy", any case; None: the
        backend in force); returns self.  The name is checked first (ValueError; BackendError for
        "cupy" where CuPy cannot be used), also on an unbuilt cell, which remembers the choice
        and builds its parameters there.  Traces of earlier forwards become stale."""
        from .backend import resolve_backend, to_device
        name = resolve_backend(backend, "%s.to_device" % type(self).__name__)
        self._device = name
        if self.built:
            self._params = {k: to_device(v, name) for k, v in self._params.items()}
            self._grads = {k: to_device(v, name) for k, v in self._grads.items()}
            self._on_build()
        self._bump_version()
        return self

    def to_numpy(self):
        return self.to_device("numpy")

    # ---------------------------------------------------------------- states
    def zero_state(self, batch_size, dtype=None):
        """Zeros with the structure of :attr:`state_size`, on the backend in force."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise TypeError("zero_state: batch_size must be an integer, got %r" % (batch_size,))
        if batch_size < 0:
            raise ValueError("zero_state: batch_size must be >= 0, got %d" % batch_size)
        dtype = resolve_dtype(dtype) or self._dtype or np.dtype(np.float32)
        xp = self._xp() if self.built else self._home_xp()
        return self._zero_state(batch_size, dtype, xp)

    def _zero_state(self, batch_size, dtype, xp):
        return xp.zeros((batch_size, self._num_units), dtype)

    def _xp(self):
        return get_array_module(*self._params.values())

    def _to_internal(self, state, batch, dtype, xp, name):
        """Validate a public state and return the internal form (array, or (c, h) for LSTM)."""
        return _check_state_array(state, (batch, self._num_units), dtype, xp, name)

    def _to_public(self, state):
        return state

    def _zeros_internal(self, batch, dtype, xp):
        return self._zero_state(batch, dtype, xp)

    # ---------------------------------------------------------------- building on first use
    def _maybe_build(self, x, name):
        width = x.shape[-1]
        if not self.built:
            if self._dtype is not None and x.dtype != self._dtype:
                raise TypeError("%s has dtype %s but the cell was created with dtype=%s"
                                % (name, x.dtype, self._dtype))
            self.build(int(width), x.dtype)
        elif width != self._input_size:
            raise ValueError("%s must have feature width %d (the cell was built for it), got "
                             "shape %s" % (name, self._input_size, tuple(x.shape)))
        check_dtype(x, self._dtype, name)
        self._check_device(x, name)

    def _check_device(self, x, name):
        """TypeError when ``x`` is not on the device of the parameters, naming both."""
        check_same_device(x, name, self._params.values(), "%s's parameters" % type(self).__name__)

    # ---------------------------------------------------------------- one step
    def __call__(self, inputs, state, scope=None, return_trace=False):
        """Run one time step: ``output, new_state = cell(inputs, state)``.

        inputs: [batch, input_size]; state: structured as :attr:`state_size`.  ``scope``: TF1's
        third argument (a variable-scope name), accepted so that ``cell(x, state, scope="rnn")``
        ports; the weights belong to the cell, so it changes nothing.  With ``return_trace=True``
        (by keyword) also returns a :class:`StepTrace` whose ``backward(d_output, d_new_state)``
        gives ``(d_inputs, d_state)`` and accumulates parameter gradients.
        """
        if scope is not None and not isinstance(scope, str):
            raise TypeError("scope (the third argument, TF1's variable scope) must be a string or "
                            "None, got %r%s" % (scope, "; pass return_trace=%r by keyword" % scope
                                                if isinstance(scope, (bool, np.bool_)) else ""))
        x = float_array(inputs, "inputs", ndim=2)
        self._maybe_build(x, "inputs")
        xp = get_array_module(x)
        st = self._to_internal(state, x.shape[0], x.dtype, xp, "state")
        out, new, rec = self._forward_seq(x[None], st, None)
        output, new_state = out[0].copy(), self._to_public(new)
        if return_trace:
            return output, new_state, StepTrace(self, rec, x)
        return output, new_state

    def _infer_seq(self, x, state, mask, out):
        """A forward that keeps no trace, written into ``out`` [T, B, P] with O(chunk) working
        memory; returns the final state (internal form), or None where this cell has no such
        pass for this input (then the caller runs :meth:`_forward_seq`).  Decided before anything
        is written.  LSTMCell and GRUCell have one on the C loops."""
        return None

    def _infer_steps(self, x, mask):
        """The steps :meth:`_infer_seq` holds at a time on inputs like ``x`` (its dtype, T and B;
        the cell built), or 0 where it does not take them."""
        return 0

    def _infers(self, x, mask):
        """Whether ``dynamic_rnn`` without a trace runs :meth:`_infer_seq`: where it takes the
        inputs and holds fewer steps than the whole sequence (otherwise it holds what the pass
        that keeps its slabs holds, and copies more)."""
        return 0 < self._infer_steps(x, mask) < x.shape[0]

    def _accumulate(self, name, value):
        self._grads[name] += value

    def __repr__(self):
        return "%s(num_units=%d%s)" % (type(self).__name__, self._num_units,
                                      "" if not self.built else ", input_size=%d" % self._input_size)


def _check_state_array(a, shape, dtype, xp, name):
    if isinstance(a, tuple):
        raise TypeError("%s must be an array of shape %s, got a tuple of %d (wrong state structure)"
                        % (name, tuple(shape), len(a)))
    a = float_array(a, name)
    check_on_device(a, name, xp, "the inputs")
    check_shape(a, shape, name)
    check_dtype(a, dtype, name)
    return a


def hold_with(inner, *arrays):
    """Count ``arrays``, which a wrapper's record keeps for its backward (dropout masks, a
    projection's saved operands), in the trace's ``nbytes``: they join the held arrays of the
    top LayerRecord of the wrapped pass ``inner`` (None entries skipped)."""
    recs = flat_records(inner)
    if recs:
        recs[-1].wrapper_held.extend(a for a in arrays if a is not None)


def watch_with(inner, owner):
    """Make the freshness check of every trace over the wrapped pass ``inner`` (``check_current``,
    run before a backward consumes anything) also cover ``owner``'s variables (a wrapper's own),
    as they are now: ``(owner, owner._version)`` joins the top LayerRecord's ``watched``."""
    recs = flat_records(inner)
    if recs:
        recs[-1].watched.append((owner, getattr(owner, "_version", 0)))


def flat_records(recs):
    """The LayerRecords inside a (possibly nested) record structure, bottom layer first."""
    if isinstance(recs, list):
        out = []
        for r in recs:
            out.extend(flat_records(r))
        return out
    return [] if recs is None else [recs]


class TraceBase:
    """What every trace shares: ``records`` (one LayerRecord per layer and direction), their size
    in bytes, and the switch that makes the backward keep each step's state gradients."""

    @property
    def nbytes(self):
        """Bytes held by the saved arrays: O(T * B * (gates + state)) per layer.  An array the
        layers share (a stack's step mask) counts once."""
        return _distinct_nbytes([a for r in self.records for a in r._held()])

    def record_state_grads(self, on=True):
        """Ask the backward to keep dL/dh_t (and dL/dc_t for LSTM) of every step in the records."""
        for r in self.records:
            r.record_state_grads = on
        return self


class StepTrace(TraceBase):
    """Trace of one ``cell(inputs, state, return_trace=True)`` step."""

    def __init__(self, cell, record, x):
        self.cell = cell
        self.record = record
        self._batch = x.shape[0]
        self._xp, self._dtype = get_array_module(x), x.dtype
        self._done = False

    @property
    def records(self):
        """The LayerRecord(s) of this step: one per layer, bottom first."""
        return flat_records(self.record)

    def backward(self, d_output=None, d_state=None):
        """Return ``(d_inputs, d_state)``; parameter gradients accumulate into ``cell.grads``.

        One step (T = 1) of the cell's backward in docs/bptt.md: it starts from (B1)-(B2),
        ``dh_t = d_output + d_state.h`` (the LSTM's ``d_state.c`` is the carried part of dc_t), then
        runs (L1)-(L16) for an LSTM, (U1)-(U11) for a GRU, (S1)-(S3) for a BasicRNNCell; a
        MultiRNNCell runs its cells top-down (section 10), a DropoutWrapper goes through its masks.

        Cotangents in (None: zeros): ``d_output`` = dL/dy_t [B, cell.output_size]; ``d_state`` =
        dL/d(new state), structured as ``cell.state_size`` (LSTM: ``LSTMStateTuple(dc [B, H],
        dh [B, P])``; a stack: a tuple, one per cell).  Gradients out: ``d_inputs`` = dL/dx_t
        [B, I], and ``d_state`` = dL/d(the state passed to the step), structured as
        ``cell.state_size``.  Each parameter's gradient (summed over the batch) is *added* to
        ``cell.grads`` under the parameter's name, with its shape; ``cell.zero_grad()`` resets
        them.  A trace takes one backward (then BackwardTwiceError), and none once the cell's
        weights were replaced (StaleTraceError).

        >>> import numpy as np, npl
        >>> rng = np.random.default_rng(0)
        >>> cell = npl.rnn.BasicRNNCell(3, seed=0, input_size=4, dtype=np.float64)  # H = 3, I = 4
        >>> x, h0 = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))      # B = 2
        >>> y, h1, trace = cell(x, h0, return_trace=True)
        >>> dy, dh1 = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))    # dL/dy_t, dL/dh_t
        >>> dx, dh0 = trace.backward(dy, dh1)
        >>> dx.shape, dh0.shape
        ((2, 4), (2, 3))
        >>> K = cell.params["kernel"]                                              # [I + H, H]
        >>> da = (dy + dh1) * (1 - h1 ** 2)                                       # (B1), (S1)
        >>> np.allclose(dx, da @ K[:4].T), np.allclose(dh0, da @ K[4:].T)        # dx_t, (S2)
        (True, True)
        >>> g = cell.grads                                                         # (S3)
        >>> np.allclose(g["kernel"], np.concatenate([x, h0], 1).T @ da)
        True
        >>> np.allclose(g["bias"], da.sum(0))
        True
        >>> _ = cell(x, h0, return_trace=True)[2].backward(dy, dh1)               # accumulates
        >>> np.allclose(cell.grads["bias"], 2 * da.sum(0))
        True
        """
        from .rnn_ops import _consume, _ensure_fresh
        _ensure_fresh(self)
        cell, rec = self.cell, self.record
        xp, dtype = self._xp, self._dtype
        dout = None
        if d_output is not None:
            d = float_array(d_output, "d_output")
            check_shape(d, (self._batch, cell.output_size), "d_output")
            check_dtype(d, dtype, "d_output")
            check_on_device(d, "d_output", xp, "the step's inputs")
            dout = d[None]
        dst = None if d_state is None else cell._to_internal(d_state, self._batch, dtype, xp, "d_state")
        _consume(self)
        dx, dstate = cell._backward_seq(rec, dout, dst)
        return dx[0].copy(), cell._to_public(dstate)


# ============================================================================ simple RNN
class BasicRNNCell(RNNCell):
    """TensorFlow 1's ``BasicRNNCell``: one step is (R1) of docs/bptt.md::

        h_t = act([x_t, h_{t-1}] @ kernel + bias)  =  act(x_t @ W + h_{t-1} @ U + bias)     (R1)

    ``act`` is ``activation`` (tanh by default).  Parameters: ``kernel`` [I + H, H] (input rows
    ``W = kernel[:I]``, then recurrent rows ``U = kernel[I:]``), ``bias`` [H] (starts at 0).
    Shapes: input x_t [B, I]; state h_{t-1} [B, H]; the output and the new state are both h_t
    [B, H] (``state_size = output_size = H``).

    >>> import numpy as np, npl
    >>> rng = np.random.default_rng(0)
    >>> cell = npl.rnn.BasicRNNCell(3, seed=0, input_size=4, dtype=np.float64)   # H = 3, I = 4
    >>> {k: v.shape for k, v in cell.params.items()}, cell.state_size, cell.output_size
    ({'kernel': (7, 3), 'bias': (3,)}, 3, 3)
    >>> p = cell.set_params({"bias": rng.standard_normal(3)}, strict=False).params  # bias != 0
    >>> x, h0 = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))          # B = 2
    >>> y, h1 = cell(x, h0)
    >>> np.allclose(h1, np.tanh(np.concatenate([x, h0], 1) @ p["kernel"] + p["bias"]))  # (R1)
    True
    >>> y.shape, np.array_equal(y, h1), np.array_equal(cell.zero_state(2), np.zeros((2, 3)))
    ((2, 3), True, True)
    """

    _default_name = "basic_rnn_cell"

    def __init__(self, num_units, activation=None, reuse=None, name=None, dtype=None, seed=None,
                 input_size=None):
        super().__init__(num_units, activation, dtype, seed, input_size, name)

    def _shapes(self, input_size):
        H = self._num_units
        return {"kernel": (input_size + H, H), "bias": (H,)}

    def _forward_seq(self, x, h0, mask, state_mask=None):
        xp = get_array_module(x)
        T, B, I = x.shape
        H, dt = self._num_units, x.dtype
        K, b = self._params["kernel"], self._params["bias"]
        W, U = K[:I], K[I:]
        A, K, project = _projection(W, x, b)             # [H, I+1] @ [T, I+1, B], K steps at a time
        Hs = _ws.empty(xp, (T + 1, H, B), dt)
        Hs[0] = _state_fm(h0)
        rec = LayerRecord(self, x, mask, {"gates": A, "h": Hs})
        inv, act = rec.inv_fm, self._activation
        S, h_out = _state_dropout(rec, state_mask, T, xp)
        buf = _ws.empty(xp, (H, B), dt)
        for t in range(T):
            if t % K == 0:
                project(t)
            xp.matmul(U.T, Hs[t], out=buf)               # [H, H] @ [H, B]
            A[t] += buf
            act(A[t], out=A[t])
            Hs[t + 1] = A[t]
            _drop_state(Hs, t, S, h_out)
            if inv is not None:
                xp.copyto(Hs[t + 1], Hs[t], where=inv[t])
        return _outputs(rec), _state_public(Hs[T]), rec

    def _backward_seq(self, rec, dout, dh_final):
        A, Hs, x = rec.fm["gates"], rec.fm["h"], rec.x
        xp = get_array_module(A)
        T, H, B = A.shape
        I, dt = x.shape[2], A.dtype
        K = self._params["kernel"]
        W, U = K[:I], K[I:]
        dh = _ws.zeros(xp, (H, B), dt) if dh_final is None else _ws_copy(_state_fm(dh_final))
        buf, tmp, carry = _ws.empty(xp, (H, B), dt), _ws.empty(xp, (H, B), dt), _ws.empty(xp, (H, B), dt)
        dout_fm = _masked_fm(dout, rec)
        dG2, dG = _gate_grad_slab(A)
        if rec.record_state_grads:
            rec.d_h_fm = _ws.empty(xp, (T, H, B), dt)
        inv, act = rec.inv_fm, self._activation
        for t in range(T - 1, -1, -1):
            passthrough = _step_grad(dh, dout_fm, t, rec, carry)
            if rec.d_h_fm is not None:
                rec.d_h_fm[t] = dh
            rnn_backward_pointwise(A[t], dh, dG[t], act, tmp)
            if inv is not None:
                xp.copyto(dG[t], 0, where=inv[t])
            xp.matmul(U, dG[t], out=buf)                 # [H, H] @ [H, B]
            if inv is not None:
                xp.copyto(buf, passthrough, where=inv[t])
            dh, buf = buf, dh
        rec.d_gates_fm = dG
        dG2 = _flat(dG) if dG2 is None else dG2          # [H, T*B]
        gk, gb, _ = _kernel_grad(x, Hs[:T], dG2)                          # [I+H+1, T*B] @ [T*B, H]
        self._accumulate("kernel", gk)
        self._accumulate("bias", gb)
        return _dx(W, dG2, T, B), _state_public(dh)      # [I, H] @ [H, T*B]


# ============================================================================ LSTM
class LSTMCell(RNNCell):
    """TensorFlow 1's ``LSTMCell``: optional peepholes, cell clipping and a projection.

    One step is (F1)-(F8) of docs/bptt.md (``act`` = ``activation``, tanh by default)::

        [a_i, a_j, a_f, a_o] = [x_t, h_{t-1}] @ kernel + bias                    (F1)
        i   = sigmoid(a_i + w_i_diag * c_{t-1})                                  (F2)
        f   = sigmoid(a_f + forget_bias + w_f_diag * c_{t-1})                    (F3)
        j   = act(a_j)                                                           (F4)
        c_t = clip(f * c_{t-1} + i * j, -cell_clip, cell_clip)                   (F5)
        o   = sigmoid(a_o + w_o_diag * c_t)              the NEW c_t (peephole)  (F6)
        m_t = o * act(c_t)                                                       (F7)
        h_t = clip(m_t @ projection/kernel, -proj_clip, proj_clip)               (F8)

    The ``w_*_diag`` terms only with ``use_peepholes``, each clip only with its ``cell_clip`` /
    ``proj_clip``, and (F8) only with ``num_proj`` (otherwise ``h_t = m_t``).

    Parameters (TF names and layouts): ``kernel`` [I + P, 4H] with gate columns i, j, f, o;
    ``bias`` [4H] (starts at 0); with ``use_peepholes`` ``w_f_diag``, ``w_i_diag``, ``w_o_diag``
    [H]; with ``num_proj`` ``projection/kernel`` [H, P].  ``forget_bias`` is added at run time,
    never stored.  P = num_proj when given, else H.  Shapes: input x_t [B, I]; state
    ``LSTMStateTuple(c [B, H], h [B, P])`` (``state_is_tuple=False``: one array [B, H + P], c
    first); output h_t [B, P].

    >>> import numpy as np, npl
    >>> rng = np.random.default_rng(0)
    >>> cell = npl.rnn.LSTMCell(3, use_peepholes=True, cell_clip=1.0, num_proj=2, proj_clip=0.2,
    ...                         seed=0, input_size=4, dtype=np.float64)      # H = 3, P = 2, I = 4
    >>> {k: v.shape for k, v in sorted(cell.params.items())}
    {'bias': (12,), 'kernel': (6, 12), 'projection/kernel': (3, 2),
     'w_f_diag': (3,), 'w_i_diag': (3,), 'w_o_diag': (3,)}
    >>> cell.state_size, cell.output_size
    (LSTMStateTuple(c=3, h=2), 2)
    >>> p = cell.set_params({"bias": rng.standard_normal(12)}, strict=False).params  # bias != 0
    >>> x, c0 = rng.standard_normal((2, 4)), 2 * rng.standard_normal((2, 3))     # B = 2
    >>> h0 = rng.standard_normal((2, 2))
    >>> y, (c1, h1) = cell(x, npl.LSTMStateTuple(c0, h0))
    >>> sig, xh = lambda a: 1 / (1 + np.exp(-a)), np.concatenate([x, h0], 1)
    >>> a_i, a_j, a_f, a_o = np.split(xh @ p["kernel"] + p["bias"], 4, 1)      # (F1)
    >>> i = sig(a_i + p["w_i_diag"] * c0)                                     # (F2)
    >>> f = sig(a_f + cell.forget_bias + p["w_f_diag"] * c0)                  # (F3)
    >>> c = np.clip(f * c0 + i * np.tanh(a_j), -1.0, 1.0)                     # (F4), (F5)
    >>> o = sig(a_o + p["w_o_diag"] * c)                                      # (F6)
    >>> h = np.clip((o * np.tanh(c)) @ p["projection/kernel"], -0.2, 0.2)    # (F7), (F8)
    >>> np.allclose(c1, c), np.allclose(h1, h), np.array_equal(y, h1)
    (True, True, True)
    >>> float(abs(c1).max()), float(abs(h1).max())                          # both clips bite
    (1.0, 0.2)
    """

    _default_name = "lstm_cell"

    def __init__(self, num_units, use_peepholes=False, cell_clip=None, initializer=None,
                 num_proj=None, proj_clip=None, num_unit_shards=None, num_proj_shards=None,
                 forget_bias=1.0, state_is_tuple=True, activation=None, reuse=None, name=None,
                 dtype=None, seed=None, input_size=None):
        self._kernel_init = _init.check(initializer, "initializer")   # kernel, peepholes, projection
        if num_unit_shards is not None or num_proj_shards is not None:
            raise ValueError("num_unit_shards / num_proj_shards are deprecated in TF and not supported")
        if num_proj is not None and (isinstance(num_proj, bool) or not isinstance(num_proj, (int, np.integer))
                                     or num_proj < 1):
            raise ValueError("num_proj must be None or a positive integer, got %r" % (num_proj,))
        for nm, v in (("cell_clip", cell_clip), ("proj_clip", proj_clip)):
            if v is not None and not is_real(v):
                raise TypeError("%s must be None or a positive real number, got %r" % (nm, v))
            if v is not None and not v > 0:
                raise ValueError("%s must be None or a positive number, got %r" % (nm, v))
        if proj_clip is not None and num_proj is None:
            raise ValueError("proj_clip needs num_proj")
        real_number(forget_bias, "forget_bias")
        self._use_peepholes = bool(use_peepholes)
        self._cell_clip = None if cell_clip is None else float(cell_clip)
        self._num_proj = None if num_proj is None else int(num_proj)
        self._proj_clip = None if proj_clip is None else float(proj_clip)
        self._forget_bias = float(forget_bias)
        self._state_is_tuple = bool(state_is_tuple)
        super().__init__(num_units, activation, dtype, seed, input_size, name)

    @property
    def forget_bias(self):
        return self._forget_bias

    @property
    def output_size(self):
        return self._num_proj or self._num_units

    @property
    def state_size(self):
        if self._state_is_tuple:
            return LSTMStateTuple(self._num_units, self.output_size)
        return self._num_units + self.output_size

    def _shapes(self, input_size):
        H, P = self._num_units, self.output_size
        s = {"kernel": (input_size + P, 4 * H), "bias": (4 * H,)}
        if self._use_peepholes:
            s.update({"w_f_diag": (H,), "w_i_diag": (H,), "w_o_diag": (H,)})
        if self._num_proj is not None:
            s["projection/kernel"] = (H, P)
        return s

    # -- states
    def _zero_state(self, batch_size, dtype, xp):
        c = xp.zeros((batch_size, self._num_units), dtype)
        h = xp.zeros((batch_size, self.output_size), dtype)
        return LSTMStateTuple(c, h) if self._state_is_tuple else xp.concatenate([c, h], axis=1)

    def _zeros_internal(self, batch, dtype, xp):
        return LSTMStateTuple(xp.zeros((batch, self._num_units), dtype),
                              xp.zeros((batch, self.output_size), dtype))

    def _to_internal(self, state, batch, dtype, xp, name):
        H, P = self._num_units, self.output_size
        if self._state_is_tuple:
            if not isinstance(state, tuple) or len(state) != 2:
                raise TypeError("%s must be an LSTMStateTuple(c, h) (c: %s, h: %s), got %s"
                                % (name, (batch, H), (batch, P), _describe(state)))
            c = _check_state_array(state[0], (batch, H), dtype, xp, name + ".c")
            h = _check_state_array(state[1], (batch, P), dtype, xp, name + ".h")
            return LSTMStateTuple(c, h)
        a = _check_state_array(state, (batch, H + P), dtype, xp, name)
        return LSTMStateTuple(a[:, :H], a[:, H:])

    def _to_public(self, state):
        if self._state_is_tuple:
            return LSTMStateTuple(*state)
        return get_array_module(state.c).concatenate([state.c, state.h], axis=1)

    # -- forward
    def _effective_weights(self, I, prescaled=False):
        """W [I, 4H] and U [P, 4H] (views of the kernel, gate columns i, j, f, o) and the bias
        with forget_bias added to the f block (a copy: forget_bias is never stored).

        ``prescaled``: copies with the i, f and o columns halved, so that the gate GEMMs give
        a/2 for the sigmoid gates and one tanh covers all four (see
        :func:`npl.gates.lstm_forward_pointwise`).  Halving is exact in binary floating point,
        so the gates are bit for bit the same as with the stored weights."""
        H = self._num_units
        K = self._params["kernel"]
        b = self._params["bias"].copy()
        b[2 * H:3 * H] += self._forget_bias
        if prescaled:
            xp = get_array_module(K)
            scale = xp.full((4 * H,), 0.5, K.dtype)
            scale[H:2 * H] = 1
            K = K * scale
            b *= scale
        return K[:I], K[I:], b

    def _loops(self, x, mask, state_mask=None):
        """(the C loops' module or None, the lengths in their form): see :func:`_c_loops`."""
        lens = _loop_lengths(mask) if _loops_may_take(x, x.shape[1]) else False
        plain = (not self._use_peepholes and self._cell_clip is None and self._proj_clip is None
                 and "projection/kernel" not in self._params and lens is not False
                 and state_mask is None)
        return _c_loops(x, self._activation, plain, x.shape[1]), lens

    def _infer_steps(self, x, mask):
        if self._loops(x, mask)[0] is None:
            return 0
        return _ring_steps(x.shape[0], x.shape[1], self.input_size, 4 * self._num_units, x.dtype)

    def _infer_seq(self, x, state, mask, out):
        """The forward of a sequence that keeps no trace, into ``out`` [T, B, P] (any strides with
        contiguous rows); returns the final state, or None when the C loops do not take the pass
        (then the caller runs :meth:`_forward_seq`).  Only K steps of gates, c and h are held at a
        time (INFERENCE_RING_BYTES of gates): the slab's first slot holds the state a chunk
        starts from, and its outputs are copied out after it."""
        loops, lens = self._loops(x, mask)
        if loops is None:
            return None
        T, B, I = x.shape
        H, dt = self._num_units, x.dtype
        W, U, b = self._effective_weights(I)
        G, K, project = _projection(W, x, b, _threaded_gemm(loops, B), ring=True)
        C = _ws.empty(np, (K + 1, H, B), dt)                 # slots 0 .. k of the chunk's steps
        Hs = _ws.empty(np, (K + 1, H, B), dt)
        C[0], Hs[0] = _state_fm(state.c), _state_fm(state.h)
        UT = _loop_weight(U, -(-T // K), _narrow_batch(B))   # U^T [4H, H], once for all chunks
        k = _run_ring(T, K, project, (C, Hs), lambda Gc, k, t0: loops.lstm_forward_seq(
            UT, Gc, C[:k + 1], Hs[:k + 1], 0, k, lengths=None if lens is None else lens - t0), out)
        return LSTMStateTuple(_state_public(C[k]), _state_public(Hs[k]))

    def _peep(self):
        if not self._use_peepholes:
            return None
        p = self._params
        return p["w_i_diag"][:, None], p["w_f_diag"][:, None], p["w_o_diag"][:, None]

    def _forward_seq(self, x, state, mask, state_mask=None):
        xp = get_array_module(x)
        T, B, I = x.shape
        H, P, dt = self._num_units, self.output_size, x.dtype
        peep, act = self._peep(), self._activation
        loops, lens = self._loops(x, mask, state_mask)
        # NumPy: sigmoid gates prescaled by 1/2 so one tanh call covers all four gates (worth its
        # copy of the kernel when the steps outnumber the kernel's rows, not for one-step sampling)
        prescaled = (loops is None and xp is np and peep is None and act is _act.tanh
                     and T * B >= PRESCALE_MIN_RATIO * (I + self.output_size))
        W, U, b = self._effective_weights(I, prescaled)
        G, K, project = _projection(W, x, b, _threaded_gemm(loops, B))  # [4H, I+1] @ [T, I+1, B], K steps a call
        C = _ws.empty(xp, (T + 1, H, B), dt)
        Hs = _ws.empty(xp, (T + 1, P, B), dt)
        C[0], Hs[0] = _state_fm(state.c), _state_fm(state.h)
        fm = {"gates": G, "c": C, "h": Hs}
        CM = PM = None
        if self._cell_clip is not None:
            CM = fm["cell_clip_mask"] = _ws.empty(xp, (T, H, B), bool)
        if self._proj_clip is not None:
            PM = fm["proj_clip_mask"] = _ws.empty(xp, (T, P, B), bool)
        rec = LayerRecord(self, x, mask, fm)
        if loops is not None:                                # the time loop in C, K steps a call
            chunks = range(0, T, K)
            UT = _loop_weight(U, len(chunks), _narrow_batch(B))   # U^T [4H, P], once for all chunks
            for t0 in chunks:
                project(t0)
                loops.lstm_forward_seq(UT, G, C, Hs, t0, min(t0 + K, T), lengths=lens)
            return _outputs(rec), LSTMStateTuple(_state_public(C[T]), _state_public(Hs[T])), rec
        proj = self._params.get("projection/kernel")         # [H, P]
        m = _ws.empty(xp, (H, B), dt) if proj is not None else None
        buf = _ws.empty(xp, (4 * H, B), dt)
        inv = rec.inv_fm
        S, h_out = _state_dropout(rec, state_mask, T, xp)
        for t in range(T):
            if t % K == 0:
                project(t)
            g = G[t]
            xp.matmul(U.T, Hs[t], out=buf)                   # [4H, P] @ [P, B]
            g += buf
            mt = m if proj is not None else Hs[t + 1]
            lstm_forward_pointwise(g, C[t], C[t + 1], mt, act, act, peep, self._cell_clip,
                                   None if CM is None else CM[t], prescaled)
            if proj is not None:
                xp.matmul(proj.T, m, out=Hs[t + 1])          # [P, H] @ [H, B]
                if PM is not None:
                    xp.abs(Hs[t + 1], out=buf[:P])
                    PM[t] = buf[:P] <= self._proj_clip
                    Hs[t + 1].clip(-self._proj_clip, self._proj_clip, out=Hs[t + 1])
            _drop_state(Hs, t, S, h_out)
            if inv is not None:
                xp.copyto(C[t + 1], C[t], where=inv[t])
                xp.copyto(Hs[t + 1], Hs[t], where=inv[t])
        final = LSTMStateTuple(_state_public(C[T]), _state_public(Hs[T]))
        return _outputs(rec), final, rec

    # -- backward
    def _backward_seq(self, rec, dout, dstate):
        fm, x = rec.fm, rec.x
        G, C = fm["gates"], fm["c"]
        CM, PM = fm.get("cell_clip_mask"), fm.get("proj_clip_mask")
        xp = get_array_module(G)
        T, _, B = G.shape
        I = x.shape[2]
        H, P, dt = self._num_units, self.output_size, G.dtype
        U = self._params["kernel"][I:]                       # [P, 4H] recurrent rows
        proj = self._params.get("projection/kernel")
        if dstate is None:
            dc, dh = _ws.zeros(xp, (H, B), dt), _ws.zeros(xp, (P, B), dt)
        else:
            dc, dh = _ws_copy(_state_fm(dstate.c)), _ws_copy(_state_fm(dstate.h))
        dG2, dG = _gate_grad_slab(G)
        inv, peep, act = rec.inv_fm, self._peep(), self._activation
        lens = _loop_lengths(rec.mask) if _loops_may_take(G, B) else False
        loops = _c_loops(G, act, peep is None and CM is None and PM is None and proj is None
                         and lens is not False and rec.state_mask_fm is None
                         and not rec.record_state_grads and dG2 is not None, B)
        if loops is not None:                                # the time loop in C
            dout, DZ = _c_backward_inputs(dout, dt, T, B, I, H)
            loops.lstm_backward_seq(U if DZ is None else self._params["kernel"], G, C, dout, dh, dc,
                                    dG2, _ws.empty(xp, (4 * H, B), dt), DZ, lengths=lens)
            return self._weight_grads(rec, dG, dG2, None, None, dc, dh, _folded_dx(DZ, I),
                                      _threaded_gemm(loops, B), loops)
        buf, tmp, carry = _ws.empty(xp, (P, B), dt), _ws.empty(xp, (H, B), dt), _ws.empty(xp, (P, B), dt)
        dout_fm = _masked_fm(dout, rec)
        DHP = _ws.empty(xp, (T, P, B), dt) if proj is not None else None
        dm = _ws.empty(xp, (H, B), dt) if proj is not None else None
        dhv = _ws.empty(xp, (P, B), dt) if inv is not None else None
        dc_keep = _ws.empty(xp, (H, B), dt) if inv is not None else None
        if rec.record_state_grads:
            rec.d_h_fm, rec.d_c_fm = _ws.empty(xp, (T, P, B), dt), _ws.empty(xp, (T, H, B), dt)
        for t in range(T - 1, -1, -1):
            passthrough = _step_grad(dh, dout_fm, t, rec, carry)
            if rec.d_h_fm is not None:
                rec.d_h_fm[t] = dh
            if inv is not None:                              # the part that flows into step t
                dhv[...] = dh
                xp.copyto(dhv, 0, where=inv[t])
                dc_keep[...] = dc
                d_step = dhv
            else:
                d_step = dh                                  # dh is replaced below, so in place is fine
            if proj is not None:
                if PM is not None:
                    d_step *= PM[t]                          # clip_by_value passes |h| <= proj_clip
                DHP[t] = d_step
                xp.matmul(proj, d_step, out=dm)              # [H, P] @ [P, B]
                d_m = dm
            else:
                d_m = d_step
            lstm_backward_pointwise(G[t], C[t], C[t + 1], d_m, dc, dG[t], act, act, tmp, peep,
                                    None if CM is None else CM[t],
                                    None if rec.d_c_fm is None else rec.d_c_fm[t])
            if inv is not None:                              # rows past their length carried the
                xp.copyto(dG[t], 0, where=inv[t])            # state through: no gate gradient,
                xp.copyto(dc, dc_keep, where=inv[t])         # dc and dh pass unchanged
            xp.matmul(U, dG[t], out=buf)                     # [P, 4H] @ [4H, B]
            if inv is not None:
                xp.copyto(buf, passthrough, where=inv[t])
            dh, buf = buf, dh
        return self._weight_grads(rec, dG, dG2, DHP, peep, dc, dh)

    def _weight_grads(self, rec, dG, dG2, DHP, peep, dc, dh, dx=None, mm=None, loops=None):
        """The parameter gradients from the gate gradients of every step, one GEMM each, and the
        backward's return value (d inputs, computed here unless given, d initial state)."""
        fm, x = rec.fm, rec.x
        G, C, Hs = fm["gates"], fm["c"], fm["h"]
        xp = get_array_module(G)
        T, _, B = G.shape
        I = x.shape[2]
        H, act = self._num_units, self._activation
        W = self._params["kernel"][:I]
        proj = self._params.get("projection/kernel")
        rec.d_gates_fm = dG
        # weight gradients: one GEMM each over all steps
        dG2 = _flat(dG) if dG2 is None else dG2              # [4H, T*B]
        gk, gb, _ = _kernel_grad(x, Hs[:T], dG2, mm=mm, loops=loops)      # [I+P+1, T*B] @ [T*B, 4H]
        self._accumulate("kernel", gk)
        self._accumulate("bias", gb)
        if peep is not None:
            self._accumulate("w_i_diag", (dG[:, :H] * C[:T]).sum(axis=(0, 2)))
            self._accumulate("w_f_diag", (dG[:, 2 * H:3 * H] * C[:T]).sum(axis=(0, 2)))
            self._accumulate("w_o_diag", (dG[:, 3 * H:] * C[1:]).sum(axis=(0, 2)))
        if proj is not None:
            M = act(C[1:])
            M *= G[:, 3 * H:]                                # m = o * act(c), all steps [T, H, B]
            self._accumulate("projection/kernel",
                             xp.matmul(_flat(M), _flat(DHP).T))  # [H, T*B] @ [T*B, P]
        if dx is None:
            dx = _dx(W, dG2, T, B, mm)                       # [I, 4H] @ [4H, T*B]
        return dx, LSTMStateTuple(_state_public(dc), _state_public(dh))


class BasicLSTMCell(LSTMCell):
    """TensorFlow 1's ``BasicLSTMCell``: an LSTM without peepholes, clipping or projection.

    One step is (F1)-(F8) of docs/bptt.md without those terms (``act`` = ``activation``, tanh
    by default; ``forget_bias`` is added at run time, never stored in ``bias``)::

        [a_i, a_j, a_f, a_o] = [x_t, h_{t-1}] @ kernel + bias      (F1)  gate columns i, j, f, o
        i = sigmoid(a_i),   f = sigmoid(a_f + forget_bias)         (F2), (F3)
        j = act(a_j),       c_t = f * c_{t-1} + i * j              (F4), (F5)
        o = sigmoid(a_o),   h_t = m_t = o * act(c_t)               (F6), (F7), (F8)

    Parameters: ``kernel`` [I + H, 4H], ``bias`` [4H] (starts at 0).  Shapes: input x_t [B, I];
    state ``LSTMStateTuple(c [B, H], h [B, H])`` (``state_is_tuple=False``: one array [B, 2H], c
    first); output h_t [B, H].

    >>> import numpy as np, npl
    >>> rng = np.random.default_rng(0)
    >>> cell = npl.rnn.BasicLSTMCell(3, seed=0, input_size=4, dtype=np.float64)   # H = 3, I = 4
    >>> {k: v.shape for k, v in cell.params.items()}, cell.state_size
    ({'kernel': (7, 12), 'bias': (12,)}, LSTMStateTuple(c=3, h=3))
    >>> s0 = cell.zero_state(2)                                                 # B = 2
    >>> np.array_equal(s0.c, np.zeros((2, 3))), np.array_equal(s0.h, np.zeros((2, 3)))
    (True, True)
    >>> x, c0 = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    >>> h0 = rng.standard_normal((2, 3))
    >>> y, (c1, h1) = cell(x, npl.LSTMStateTuple(c0, h0))
    >>> p, sig = cell.params, lambda a: 1 / (1 + np.exp(-a))
    >>> a_i, a_j, a_f, a_o = np.split(np.concatenate([x, h0], 1) @ p["kernel"] + p["bias"], 4, 1)
    >>> c = sig(a_f + 1.0) * c0 + sig(a_i) * np.tanh(a_j)                   # forget_bias = 1.0
    >>> np.allclose(c1, c), np.allclose(h1, sig(a_o) * np.tanh(c)), np.array_equal(y, h1)
    (True, True, True)
    """

    _default_name = "basic_lstm_cell"

    def __init__(self, num_units, forget_bias=1.0, state_is_tuple=True, activation=None, reuse=None,
                 name=None, dtype=None, seed=None, input_size=None):
        super().__init__(num_units, forget_bias=forget_bias, state_is_tuple=state_is_tuple,
                         activation=activation, name=name, dtype=dtype, seed=seed,
                         input_size=input_size)


# ============================================================================ GRU
class LSTMBlockCell(LSTMCell):
    """``tf.contrib.rnn.LSTMBlockCell`` (TensorFlow's PTB model's default ``rnn_mode``): TF's fused
    LSTM op, the same function as :class:`LSTMCell` without projection, with TF's variable names
    (``lstm_cell/kernel``, ``bias``, ``w_i_diag``, ``w_f_diag``, ``w_o_diag``), so its
    checkpoints load as they are.

    (F1)-(F7) of docs/bptt.md, gate columns i, j (TF's op calls it ``ci``), f, o; ``forget_bias``
    added to the f column at run time; with ``use_peephole`` (TF's singular name) the input and
    forget gates see c_{t-1} and the output gate the new c_t; ``cell_clip`` clips c_t to
    [-cell_clip, cell_clip], and None, 0 or a negative value (TF's default -1) clips nothing, as
    TF's op.  Parameters: ``kernel`` [I + H, 4H], ``bias`` [4H] (starts at 0), peepholes [H].
    State ``LSTMStateTuple(c [B, H], h [B, H])``; output h_t [B, H].

    >>> import numpy as np, npl
    >>> cell = npl.rnn.LSTMBlockCell(3, use_peephole=True, cell_clip=-1, seed=0, input_size=2)
    >>> sorted(cell.params), cell.state_size
    (['bias', 'kernel', 'w_f_diag', 'w_i_diag', 'w_o_diag'], LSTMStateTuple(c=3, h=3))
    >>> ref = npl.rnn.LSTMCell(3, use_peepholes=True, input_size=2)
    >>> _ = ref.set_params(cell.params)
    >>> x, s = np.ones((1, 2), np.float32), ref.zero_state(1, np.float32)
    >>> bool(np.array_equal(cell(x, s)[0], ref(x, s)[0]))
    True
    """

    def __init__(self, num_units, forget_bias=1.0, cell_clip=None, use_peephole=False, dtype=None,
                 reuse=None, name=None, seed=None, input_size=None):
        if cell_clip is not None and is_real(cell_clip) and cell_clip <= 0:
            cell_clip = None                     # TF's op clips only for cell_clip > 0
        super().__init__(num_units, use_peepholes=use_peephole, cell_clip=cell_clip,
                         forget_bias=forget_bias, reuse=reuse, name=name, dtype=dtype, seed=seed,
                         input_size=input_size)


class GRUCell(RNNCell):
    """TensorFlow 1's ``GRUCell`` (reset applied to the state *before* the candidate's matmul).

    One step is (G1)-(G3) of docs/bptt.md (``act`` = ``activation``, tanh by default)::

        [r, u] = sigmoid([x_t, h_{t-1}] @ gates/kernel + gates/bias)           (G1)
        c~     = act([x_t, r * h_{t-1}] @ candidate/kernel + candidate/bias)   (G2)
        h_t    = c~ + u * (h_{t-1} - c~)     (= u * h_{t-1} + (1 - u) * c~)    (G3)

    Parameters: ``gates/kernel`` [I + H, 2H] (columns r, then u), ``gates/bias`` [2H] (starts at
    1.0, as in TensorFlow), ``candidate/kernel`` [I + H, H], ``candidate/bias`` [H] (starts at 0).
    Shapes: input x_t [B, I]; state h_{t-1} [B, H]; the output and the new state are both h_t
    [B, H].

    >>> import numpy as np, npl
    >>> rng = np.random.default_rng(0)
    >>> cell = npl.rnn.GRUCell(3, seed=0, input_size=4, dtype=np.float64)      # H = 3, I = 4
    >>> {k: v.shape for k, v in cell.params.items()}, cell.state_size
    ({'gates/kernel': (7, 6), 'gates/bias': (6,), 'candidate/kernel': (7, 3),
      'candidate/bias': (3,)}, 3)
    >>> p = cell.params
    >>> np.array_equal(p["gates/bias"], np.ones(6)), np.array_equal(p["candidate/bias"], np.zeros(3))
    (True, True)
    >>> x, h0 = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))      # B = 2
    >>> y, h1 = cell(x, h0)
    >>> sig = lambda a: 1 / (1 + np.exp(-a))
    >>> r, u = np.split(sig(np.concatenate([x, h0], 1) @ p["gates/kernel"] + p["gates/bias"]), 2, 1)
    >>> cand = np.tanh(np.concatenate([x, r * h0], 1) @ p["candidate/kernel"] + p["candidate/bias"])
    >>> np.allclose(h1, cand + u * (h0 - cand)), np.array_equal(y, h1)     # (G1)-(G3)
    (True, True)
    """

    _default_name = "gru_cell"
    # TF's variable names of the four parameters, in the roles (G1)-(G2) give them: the gates'
    # kernel and bias, the candidate's kernel and bias.  Everything that reads the parameters by
    # name (the passes here, npl.convert, npl.inspect) goes through them, so a subclass that only
    # renames them (GRUBlockCell: w_ru, b_ru, w_c, b_c) is this cell.
    _param_names = ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias")

    def __init__(self, num_units, activation=None, reuse=None, kernel_initializer=None,
                 bias_initializer=None, name=None, dtype=None, seed=None, input_size=None):
        self._kernel_init = _init.check(kernel_initializer, "kernel_initializer")
        self._bias_init = _init.check(bias_initializer, "bias_initializer")   # both biases, as TF
        super().__init__(num_units, activation, dtype, seed, input_size, name)

    def _role(self, name):
        """GRUCell's name of this cell's parameter ``name`` (itself for GRUCell)."""
        roles = dict(zip(self._param_names, GRUCell._param_names))
        return roles.get(name, name)

    def _shapes(self, input_size):
        H = self._num_units
        gk, gb, ck, cb = self._param_names
        return {gk: (input_size + H, 2 * H), gb: (2 * H,), ck: (input_size + H, H), cb: (H,)}

    def _init_value(self, name, shape, rng, dtype):
        if self._role(name) == "gates/bias" and self._bias_init is None:
            return np.ones(shape, dtype)
        return super()._init_value(name, shape, rng, dtype)

    def _biases(self, xp, gate_scale=1):
        """[gates/bias * gate_scale; candidate/bias] [3H], the projection's bias (a new array)."""
        p, (_, gb, _, cb) = self._params, self._param_names
        return xp.concatenate([p[gb] * gate_scale, p[cb]])

    def _weights(self, I, prescaled=False, blocks=False):
        """Wx [I, 3H] (a copy), Ug [H, 2H], Uc [H, H].  ``prescaled``: the r, u columns halved
        (exact), see :func:`npl.gates.gru_gates_forward`.  ``blocks``: Wx as its two column
        blocks, views ([I, 2H], [I, H]; for :func:`_projection`)."""
        p, (gk, _, ck, _) = self._params, self._param_names
        Kg, Kc = p[gk], p[ck]
        xp = get_array_module(Kg)
        if prescaled:
            Kg = Kg * 0.5
        Wx = (Kg[:I], Kc[:I]) if blocks else xp.concatenate([Kg[:I], Kc[:I]], axis=1)  # [I, 3H]
        return Wx, Kg[I:], Kc[I:]                                         # Ug [H, 2H], Uc [H, H]

    def _loops(self, x, mask, state_mask=None):
        """(the C loops' module or None, the lengths in their form): see :func:`_c_loops`."""
        B = x.shape[1]
        lens = _loop_lengths(mask) if _loops_may_take(x, B) else False
        return _c_loops(x, self._activation, lens is not False and state_mask is None, B), lens

    def _infer_steps(self, x, mask):
        if self._loops(x, mask)[0] is None:
            return 0
        return _ring_steps(x.shape[0], x.shape[1], self.input_size, 3 * self._num_units, x.dtype)

    def _infer_seq(self, x, h0, mask, out):
        """The forward of a sequence that keeps no trace (see :meth:`LSTMCell._infer_seq`)."""
        loops, lens = self._loops(x, mask)
        if loops is None:
            return None
        T, B, I = x.shape
        H, dt = self._num_units, x.dtype
        Wx, Ug, Uc = self._weights(I, blocks=True)
        b = self._biases(np)
        G, K, project = _projection(Wx, x, b, _threaded_gemm(loops, B), ring=True)
        Hs = _ws.empty(np, (K + 1, H, B), dt)                # slots 0 .. k of the chunk's steps
        Hs[0] = _state_fm(h0)
        rh = _ws.empty(np, (H, B), dt)
        calls, nb = -(-T // K), _narrow_batch(B)
        UgT, UcT = _loop_weight(Ug, calls, nb), _loop_weight(Uc, calls, nb)   # once for all chunks
        k = _run_ring(T, K, project, (Hs,), lambda Gc, k, t0: loops.gru_forward_seq(
            UgT, UcT, Gc, Hs[:k + 1], rh, 0, k, lengths=None if lens is None else lens - t0), out)
        return _state_public(Hs[k])

    def _forward_seq(self, x, h0, mask, state_mask=None):
        xp = get_array_module(x)
        T, B, I = x.shape
        H, dt = self._num_units, x.dtype
        loops, lens = self._loops(x, mask, state_mask)
        prescaled = loops is None and xp is np and T * B >= PRESCALE_MIN_RATIO * (I + H)  # r, u by one tanh
        Wx, Ug, Uc = self._weights(I, prescaled, blocks=True)
        b = self._biases(xp, 0.5 if prescaled else 1)
        G, K, project = _projection(Wx, x, b, _threaded_gemm(loops, B))  # [3H, I+1] @ [T, I+1, B]
        Hs = _ws.empty(xp, (T + 1, H, B), dt)
        Hs[0] = _state_fm(h0)
        rec = LayerRecord(self, x, mask, {"gates": G, "h": Hs})
        rh = _ws.empty(xp, (H, B), dt)
        if loops is not None:                              # the time loop in C, K steps a call
            chunks = range(0, T, K)
            nb = _narrow_batch(B)
            UgT, UcT = _loop_weight(Ug, len(chunks), nb), _loop_weight(Uc, len(chunks), nb)  # [2H,H], [H,H]
            for t0 in chunks:
                project(t0)
                loops.gru_forward_seq(UgT, UcT, G, Hs, rh, t0, min(t0 + K, T), lengths=lens)
            return _outputs(rec), _state_public(Hs[T]), rec
        buf_g, buf_c = _ws.empty(xp, (2 * H, B), dt), _ws.empty(xp, (H, B), dt)
        inv, act = rec.inv_fm, self._activation
        S, h_out = _state_dropout(rec, state_mask, T, xp)
        for t in range(T):
            if t % K == 0:
                project(t)
            g = G[t]
            xp.matmul(Ug.T, Hs[t], out=buf_g)              # [2H, H] @ [H, B]
            g[:2 * H] += buf_g
            gru_gates_forward(g, Hs[t], rh, prescaled)
            xp.matmul(Uc.T, rh, out=buf_c)                 # [H, H] @ [H, B]
            g[2 * H:] += buf_c
            gru_state_forward(g, Hs[t], Hs[t + 1], act)
            _drop_state(Hs, t, S, h_out)
            if inv is not None:
                xp.copyto(Hs[t + 1], Hs[t], where=inv[t])
        return _outputs(rec), _state_public(Hs[T]), rec

    def _backward_seq(self, rec, dout, dh_final):
        G, Hs, x = rec.fm["gates"], rec.fm["h"], rec.x
        xp = get_array_module(G)
        T, _, B = G.shape
        I = x.shape[2]
        H, dt = self._num_units, G.dtype
        Wx, Ug, Uc = self._weights(I)
        dh = _ws.zeros(xp, (H, B), dt) if dh_final is None else _ws_copy(_state_fm(dh_final))
        dG2, dG = _gate_grad_slab(G)
        inv, act = rec.inv_fm, self._activation
        lens = _loop_lengths(rec.mask) if _loops_may_take(G, B) else False
        loops = _c_loops(G, act, lens is not False and rec.state_mask_fm is None
                         and not rec.record_state_grads and dG2 is not None, B)
        mm = _threaded_gemm(loops, B)
        if loops is not None:                              # the time loop in C
            dout, DZ = _c_backward_inputs(dout, dt, T, B, I, H)
            p, (gk, _, ck, _) = self._params, self._param_names   # folded: the whole kernels
            Kg, Kc = (Ug, Uc) if DZ is None else (p[gk], p[ck])
            loops.gru_backward_seq(Kg, Kc, G, Hs, dout, dh, _ws.empty(xp, (H, B), dt),
                                   _ws.empty(xp, (Kg.shape[0], B), dt), dG2,
                                   _ws.empty(xp, (3 * H, B), dt), DZ, lengths=lens)
            dx = _folded_dx(DZ, I)
        else:
            dx = None
            buf, drh = _ws.empty(xp, (H, B), dt), _ws.empty(xp, (H, B), dt)
            tmp, tmp2, carry = _ws.empty(xp, (H, B), dt), _ws.empty(xp, (H, B), dt), _ws.empty(xp, (H, B), dt)
            dout_fm = _masked_fm(dout, rec)
            if rec.record_state_grads:
                rec.d_h_fm = _ws.empty(xp, (T, H, B), dt)
            for t in range(T - 1, -1, -1):
                passthrough = _step_grad(dh, dout_fm, t, rec, carry)
                if rec.d_h_fm is not None:
                    rec.d_h_fm[t] = dh
                g, dg = G[t], dG[t]
                gru_backward_pointwise(g, Hs[t], dh, dg, act, buf, tmp)
                xp.matmul(Uc, dg[2 * H:], out=drh)         # [H, H] @ [H, B]
                gru_reset_backward(g, Hs[t], drh, buf, dg, tmp)
                xp.matmul(Ug, dg[:2 * H], out=tmp2)        # [H, 2H] @ [2H, B]
                buf += tmp2
                if inv is not None:
                    xp.copyto(dg, 0, where=inv[t])
                    xp.copyto(buf, passthrough, where=inv[t])
                dh, buf = buf, dh
        rec.d_gates_fm = dG
        dG2 = _flat(dG) if dG2 is None else dG2                           # [3H, T*B]
        names = self._param_names
        gk, gb, op = _kernel_grad(x, Hs[:T], dG2[:2 * H], mm=mm, loops=loops)  # [x_t; h_{t-1}; 1] @ dG_r,u
        self._accumulate(names[0], gk)
        self._accumulate(names[1], gb)
        ck, cb, _ = _kernel_grad(x, Hs[:T], dG2[2 * H:], scale=G[:, :H], reuse=op, mm=mm,
                                 loops=loops)                             # [x_t; r*h; 1]
        self._accumulate(names[2], ck)
        self._accumulate(names[3], cb)
        if dx is None:
            dx = _dx(Wx, dG2, T, B, mm)                                   # [I, 3H] @ [3H, T*B]
        return dx, _state_public(dh)


def _check_block_size(num_units, cell_size, owner):
    """GRUBlockCell's rule (TF's): exactly one of num_units and its deprecated alias cell_size."""
    if (num_units is None) == (cell_size is None):
        raise ValueError("%s: give exactly one of num_units and cell_size (cell_size is TF's "
                         "deprecated name for num_units), got num_units=%r, cell_size=%r"
                         % (owner, num_units, cell_size))
    if num_units is None:
        if isinstance(cell_size, bool) or not isinstance(cell_size, (int, np.integer)) or cell_size < 1:
            raise ValueError("%s: cell_size must be a positive integer, got %r" % (owner, cell_size))
        return cell_size
    return num_units


class GRUBlockCell(GRUCell):
    """``tf.contrib.rnn.GRUBlockCell``: TensorFlow's fused GRU op (``GRUBlockCell``), the same
    function as :class:`GRUCell` with tanh, under the op's variable names ``w_ru``, ``b_ru``,
    ``w_c``, ``b_c`` (``gru_cell/w_ru``, ...), so its checkpoints load as they are.

    One step is (G1)-(G3) of docs/bptt.md::

        [r, u] = sigmoid([x_t, h_{t-1}] @ w_ru + b_ru)                 (G1)
        c      = tanh([x_t, r * h_{t-1}] @ w_c + b_c)                  (G2)
        h_t    = u * h_{t-1} + (1 - u) * c                             (G3)

    Parameters: ``w_ru`` [I + H, 2H] (columns r, then u; glorot uniform), ``b_ru`` [2H] (starts at
    1.0), ``w_c`` [I + H, H] (glorot uniform), ``b_c`` [H] (starts at 0), TF 1.15's initialisers.
    Shapes: input x_t [B, I]; state h_{t-1} [B, H]; output = new state = h_t [B, H].  As in TF,
    exactly one of ``num_units`` and ``cell_size`` (its deprecated alias) is given.  npl runs it
    on GRUCell's passes (C loops, CuPy, traces); :class:`GRUBlockCellV2` is the same cell under
    GRUCell's variable names.

    >>> import numpy as np, npl
    >>> rng = np.random.default_rng(0)
    >>> cell = npl.rnn.GRUBlockCell(3, seed=0, input_size=4, dtype=np.float64)    # H = 3, I = 4
    >>> {k: v.shape for k, v in cell.params.items()}
    {'w_ru': (7, 6), 'b_ru': (6,), 'w_c': (7, 3), 'b_c': (3,)}
    >>> p = cell.params
    >>> np.array_equal(p["b_ru"], np.ones(6)), np.array_equal(p["b_c"], np.zeros(3))
    (True, True)
    >>> _ = cell.set_params({"b_c": rng.standard_normal(3)}, strict=False)          # b_c != 0
    >>> x, h0 = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))          # B = 2
    >>> y, h1 = cell(x, h0)
    >>> sig = lambda a: 1 / (1 + np.exp(-a))
    >>> r, u = np.split(sig(np.concatenate([x, h0], 1) @ p["w_ru"] + p["b_ru"]), 2, 1)     # (G1)
    >>> c = np.tanh(np.concatenate([x, r * h0], 1) @ p["w_c"] + p["b_c"])                # (G2)
    >>> np.allclose(h1, u * h0 + (1 - u) * c), np.array_equal(y, h1)                    # (G3)
    (True, True)
    """

    _param_names = ("w_ru", "b_ru", "w_c", "b_c")

    def __init__(self, num_units=None, cell_size=None, reuse=None, name=None, dtype=None, seed=None,
                 input_size=None):
        num_units = _check_block_size(num_units, cell_size, type(self).__name__)
        super().__init__(num_units, reuse=reuse, name=name, dtype=dtype, seed=seed,
                         input_size=input_size)


class GRUBlockCellV2(GRUBlockCell):
    """``tf.contrib.rnn.GRUBlockCellV2``: :class:`GRUBlockCell` (TF's fused GRU op, the same
    signature and initialisers) with GRUCell's variable names: ``gates/kernel`` [I + H, 2H]
    (r, u), ``gates/bias`` [2H] (starts at 1.0), ``candidate/kernel`` [I + H, H],
    ``candidate/bias`` [H] (starts at 0); (G1)-(G3) of docs/bptt.md with tanh.

    >>> import numpy as np, npl
    >>> cell = npl.rnn.GRUBlockCellV2(cell_size=3, seed=0, input_size=2)
    >>> list(cell.params), cell.num_units
    (['gates/kernel', 'gates/bias', 'candidate/kernel', 'candidate/bias'], 3)
    >>> ref = npl.rnn.GRUCell(3, input_size=2)
    >>> _ = ref.set_params(cell.params)
    >>> x, h = np.ones((1, 2), np.float32), np.full((1, 3), 0.5, np.float32)
    >>> bool(np.array_equal(cell(x, h)[0], ref(x, h)[0]))
    True
    """

    _param_names = GRUCell._param_names


# ============================================================================ stacks
def _check_distinct(leaves_per_item, owner, what):
    """Refuse a cell that appears twice among ``what`` (directly, or inside a wrapper or a nested
    stack): its arrays would be listed under two names, and an optimizer step would apply its
    gradient twice."""
    seen = {}
    for k, leaves in enumerate(leaves_per_item):
        for leaf in leaves:
            j = seen.setdefault(id(leaf), k)
            if j != k or sum(l is leaf for l in leaves) > 1:
                where = ("%s[%d] and %s[%d]" % (what, j, what, k)) if j != k else "%s[%d]" % (what, k)
                raise ValueError("%s: the same cell object (%s) appears twice, in %s (directly or "
                                 "inside a wrapper or stack); create one cell per layer (TF would "
                                 "share their weights, which npl does not support)"
                                 % (owner, type(leaf).__name__, where))


class MultiRNNCell(RNNCell):
    """A stack of cells (any mix of the cells above); the output of cell k feeds cell k+1.

    One step, for k = 0 .. L-1 with ``y^(-1)_t = x_t`` (its backward runs the cells top-down,
    layer k+1's input gradient being layer k's output cotangent: docs/bptt.md section 10)::

        y^(k)_t, s^(k)_t = cells[k](y^(k-1)_t, s^(k)_{t-1})
        output = y^(L-1)_t,     new state = (s^(0)_t, ..., s^(L-1)_t)

    Shapes: input x_t [B, I]; state a tuple of L states, the k-th structured as
    ``cells[k].state_size`` (``state_size`` is the tuple of the cells'); output
    [B, cells[-1].output_size].  Cell k's input width is ``cells[k-1].output_size``.
    ``params`` / ``grads`` prefix each cell's names with ``cell_0/``, ``cell_1/``, ... and share the
    arrays of the cells themselves (no copies).

    >>> import numpy as np, npl
    >>> lstm, gru = npl.rnn.LSTMCell(3, seed=0), npl.rnn.GRUCell(2, seed=1)
    >>> stack = npl.rnn.MultiRNNCell([lstm, gru])
    >>> stack.state_size, stack.output_size
    ((LSTMStateTuple(c=3, h=3), 2), 2)
    >>> x = np.random.default_rng(0).standard_normal((2, 4))                  # B = 2, I = 4
    >>> s = stack.zero_state(2, np.float64)
    >>> y, (s_lstm, s_gru) = stack(x, s)                                      # builds both cells
    >>> {k: v.shape for k, v in stack.params.items()}
    {'cell_0/kernel': (7, 12), 'cell_0/bias': (12,), 'cell_1/gates/kernel': (5, 4),
     'cell_1/gates/bias': (4,), 'cell_1/candidate/kernel': (5, 2), 'cell_1/candidate/bias': (2,)}
    >>> y0, s0 = lstm(x, s[0])                          # the same cells, one after the other
    >>> y1, s1 = gru(y0, s[1])
    >>> np.allclose(y, y1), np.allclose(s_lstm.c, s0.c), np.allclose(s_gru, s1)
    (True, True, True)
    >>> stack.params["cell_1/gates/bias"] is gru.params["gates/bias"]        # shared, not copied
    True
    """

    _default_name = "multi_rnn_cell"

    def __init__(self, cells, state_is_tuple=True):
        if not isinstance(cells, (list, tuple)) or not cells:
            raise ValueError("MultiRNNCell needs a non-empty list of cells, got %r" % (cells,))
        for k, c in enumerate(cells):
            if not isinstance(c, RNNCell):
                raise TypeError("cells[%d] must be an npl RNN cell, got %s" % (k, type(c).__name__))
        _check_distinct([c._leaves() for c in cells], "MultiRNNCell", "cells")
        if not state_is_tuple:
            raise ValueError("MultiRNNCell(state_is_tuple=False) is deprecated in TF and not supported")
        self._cells = list(cells)
        self.name = self._default_name
        self._seed = None

    @property
    def cells(self):
        return list(self._cells)

    def _leaves(self):
        return [leaf for c in self._cells for leaf in c._leaves()]

    @property
    def _chunkable(self):
        return all(c._chunkable for c in self._cells)

    @property
    def num_units(self):
        return self._cells[-1].num_units

    @property
    def built(self):
        return all(c.built for c in self._cells)

    @property
    def input_size(self):
        return self._cells[0].input_size

    @property
    def dtype(self):
        return self._cells[0].dtype

    @property
    def _dtype(self):
        return self._cells[0].dtype

    @property
    def output_size(self):
        return self._cells[-1].output_size

    @property
    def state_size(self):
        return tuple(c.state_size for c in self._cells)

    def build(self, input_size, dtype=np.float32):
        self._check_chain(input_size, resolve_dtype(dtype), "input_size")
        for c in self._cells:
            if not c.built:
                c.build(input_size, dtype)
            input_size = c.output_size
        return self

    def _check_chain(self, width, dtype, what):
        """Each cell must take the previous one's output width and share the inputs' dtype."""
        for k, c in enumerate(self._cells):
            src = what if k == 0 else "cells[%d].output_size" % (k - 1)
            if c.built and c.input_size != width:
                raise ValueError("MultiRNNCell: cells[%d] was built for input width %d but receives "
                                 "width %d (%s)" % (k, c.input_size, width, src))
            if c.dtype is not None and dtype is not None and c.dtype != dtype:
                raise TypeError("MultiRNNCell: cells[%d] has dtype %s but the inputs are %s (no "
                                "silent casting)" % (k, c.dtype, dtype))
            width = c.output_size

    @property
    def _params(self):
        return {"cell_%d/%s" % (k, n): v for k, c in enumerate(self._cells) for n, v in c._params.items()}

    @property
    def _grads(self):
        return {"cell_%d/%s" % (k, n): v for k, c in enumerate(self._cells) for n, v in c._grads.items()}

    def zero_grad(self):
        for c in self._cells:
            c.zero_grad()

    def set_params(self, values, strict=True):
        """Set the weights of every cell from ``{'cell_<k>/<name>': array}`` in one call; all
        entries are validated (names, shapes, dtypes, and that the cells chain) before any is set."""
        if not isinstance(values, dict):
            raise TypeError("set_params expects a dict name -> array, got %s" % type(values).__name__)
        per = [dict() for _ in self._cells]
        for k, v in values.items():
            if not isinstance(k, str):
                raise TypeError("set_params: parameter names must be strings 'cell_<k>/<name>', got %r"
                                % (k,))
            head, _, rest = k.partition("/")
            idx = head[5:] if head.startswith("cell_") else ""
            if not idx.isdigit() or int(idx) >= len(self._cells) or not rest:
                raise ValueError("set_params: unknown parameter name %r for MultiRNNCell; names are "
                                 "'cell_<k>/<name>' with k < %d" % (k, len(self._cells)))
            per[int(idx)][rest] = v
        plans = []
        width = None
        for k, c in enumerate(self._cells):
            plan = c._plan_params(per[k], strict, "set_params (cell_%d)" % k) if (per[k] or strict) else None
            in_k = plan[0] if plan is not None else c.input_size
            if width is not None and in_k is not None and in_k != width:
                raise ValueError("set_params: cell_%d's kernel is for input width %d but cell_%d "
                                 "outputs width %d" % (k, in_k, k - 1, width))
            width = c.output_size
            plans.append(plan)
        for c, plan in zip(self._cells, plans):
            if plan is not None:
                c._apply_plan(plan)
        return self

    def to_device(self, backend=None):
        """Every cell's :meth:`RNNCell.to_device` (the name checked once, before any moves)."""
        from .backend import resolve_backend
        name = resolve_backend(backend, "MultiRNNCell.to_device")
        for c in self._cells:
            c.to_device(name)
        return self

    def _home_xp(self):
        return self._cells[0]._home_xp()

    def _xp(self):
        return self._cells[0]._xp()

    def _maybe_build(self, x, name):
        self._check_chain(int(x.shape[-1]), x.dtype, "the width of %s" % name)
        if not self.built:
            self.build(int(x.shape[-1]), x.dtype)
        self._check_device(x, name)

    def _zero_state(self, batch_size, dtype, xp):
        return tuple(c._zero_state(batch_size, dtype, xp) for c in self._cells)

    def _zeros_internal(self, batch, dtype, xp):
        return tuple(c._zeros_internal(batch, dtype, xp) for c in self._cells)

    def _to_internal(self, state, batch, dtype, xp, name):
        if not isinstance(state, (tuple, list)) or isinstance(state, LSTMStateTuple) \
                or len(state) != len(self._cells):
            raise TypeError("%s must be a tuple of %d states (one per cell), got %s"
                            % (name, len(self._cells), _describe(state)))
        return tuple(c._to_internal(s, batch, dtype, xp, "%s[%d]" % (name, k))
                     for k, (c, s) in enumerate(zip(self._cells, state)))

    def _to_public(self, state):
        return tuple(c._to_public(s) for c, s in zip(self._cells, state))

    def _forward_seq(self, x, state, mask, state_mask=None):
        recs, finals = [], []
        masks = state_mask if state_mask is not None else [None] * len(self._cells)
        for c, s, sm in zip(self._cells, state, masks):
            x, f, r = c._forward_seq(x, s, mask) if sm is None else c._forward_seq(x, s, mask, sm)
            recs.append(r)
            finals.append(f)
        return x, tuple(finals), recs

    def _infer_steps(self, x, mask):
        steps = [c._infer_steps(x, mask) for c in self._cells]
        return min(steps) if all(steps) else 0

    def _infer_seq(self, x, state, mask, out):
        """Every layer's trace-less pass (:meth:`RNNCell._infer_seq`), INFERENCE_STACK_BYTES of
        steps at a time through the whole stack (at least INFERENCE_STACK_MIN_STEPS), so the
        outputs between the layers are held for a chunk of steps only."""
        if not self._infer_steps(x, mask):
            return None
        T, B, _ = x.shape
        if len(self._cells) == 1:                # nothing between layers to hold
            return (self._cells[0]._infer_seq(x, state[0], mask, out),)
        width = max(c.output_size for c in self._cells[:-1])
        M = max(INFERENCE_STACK_MIN_STEPS, INFERENCE_STACK_BYTES // (B * width * x.dtype.itemsize))
        M = min(M, T)
        bufs = [_ws.empty(np, (M, B, width), x.dtype) for _ in range(min(2, len(self._cells) - 1))]
        finals = list(state)
        for t0 in range(0, T, M):
            t1 = min(t0 + M, T)
            xin, m = x[t0:t1], None if mask is None else mask[t0:t1]
            for k, c in enumerate(self._cells):
                last = k == len(self._cells) - 1
                dst = out[t0:t1] if last else bufs[k % 2][:t1 - t0, :, :c.output_size]
                f = c._infer_seq(xin, finals[k], m, dst)
                if f is None:                  # a last chunk too short for the C loops
                    o, f, _ = c._forward_seq(xin, finals[k], m)
                    _copy(dst, o)
                finals[k], xin = f, dst
        return tuple(finals)

    def _backward_seq(self, recs, dout, dstate):
        d0 = [None] * len(self._cells)
        for k in range(len(self._cells) - 1, -1, -1):
            dout, d0[k] = self._cells[k]._backward_seq(recs[k], dout, None if dstate is None else dstate[k])
        return dout, tuple(d0)

    def __repr__(self):
        return "MultiRNNCell([%s])" % ", ".join(repr(c) for c in self._cells)




def _describe(s):
    if isinstance(s, tuple):
        return "%s of %d" % (type(s).__name__, len(s))
    if hasattr(s, "shape"):
        return "an array of shape %s" % (tuple(s.shape),)
    return type(s).__name__


# ============================================================================ layer-normalised LSTM
#: The variance epsilon of TF 1.15's ``tf.contrib.layers.layer_norm`` (1e-3 for float16 only).
LAYER_NORM_EPSILON = 1e-12
# The variable scopes of the four gates' layer norms, in the kernel's column order (i, j, f, o),
# and of the cell state's.
_LN_GATE_SCOPES = ("input", "transform", "forget", "output")


def _layer_norm_forward(a, r, eps, scratch):
    """In place, over axis 1 of ``a`` [k, H, B] (each of k blocks, each batch column):
    ``a <- (a - mean) * r`` with ``r`` [k, 1, B] set to ``1 / sqrt(var + eps)``, the biased
    variance (N2).  ``scratch``: a free buffer of ``a``'s shape (no per-step temporary)."""
    xp = get_array_module(a)
    a -= a.mean(axis=1, keepdims=True)
    xp.multiply(a, a, out=scratch)
    xp.mean(scratch, axis=1, keepdims=True, out=r)
    r += eps
    xp.sqrt(r, out=r)
    xp.divide(1, r, out=r)
    a *= r


def _layer_norm_backward(d, xhat, r, scratch):
    """In place, (N11): ``d`` [k, H, B] = dL/d(xhat) becomes dL/d(the normalised input),
    ``r * (d - mean(d) - xhat * mean(d * xhat))`` over axis 1.  ``scratch``: a free buffer of
    ``d``'s shape."""
    xp = get_array_module(d)
    xp.multiply(d, xhat, out=scratch)
    m2 = scratch.mean(axis=1, keepdims=True)
    d -= d.mean(axis=1, keepdims=True)
    xp.multiply(xhat, m2, out=scratch)
    d -= scratch
    d *= r


class LayerNormBasicLSTMCell(RNNCell):
    """``tf.contrib.rnn.LayerNormBasicLSTMCell`` (TF 1.15): a basic LSTM with layer normalisation
    of each gate and of the new cell state (Ba et al. 2016), and recurrent dropout on the
    candidate (Semeniuta et al. 2016).  One step is (N1)-(N8) of docs/bptt.md::

        [a_i, a_j, a_f, a_o] = [x_t, h_{t-1}] @ kernel  (+ bias without layer_norm)   (N1)
        LN_s(v) = gamma_s * (v - mean(v)) / sqrt(var(v) + 1e-12) + beta_s              (N2)
        n_k = LN_k(a_k)  for k = input, transform, forget, output  (= a_k without layer_norm)  (N3)
        i = sigmoid(n_i),  f = sigmoid(n_f + forget_bias),  o = sigmoid(n_o)            (N4)
        g = act(n_j) * d_t          d_t: the scaled dropout mask, 0 or 1/keep (1 without)  (N5)
        c~_t = f * c_{t-1} + i * g                                                    (N6)
        c_t = LN_state(c~_t)        (= c~_t without layer_norm)                       (N7)
        h_t = act(c_t) * o                                                            (N8)

    mean and var (the biased variance, TF's ``nn.moments``) are over the H units of each row,
    separately for each gate; epsilon is TF's 1e-12 (:data:`LAYER_NORM_EPSILON`).  The carried
    state c_t is the *normalised* one, as in TF.  ``act`` is ``activation`` (tanh by default).

    Parameters (TF's names): ``kernel`` [I + H, 4H] (gate columns i, j, f, o; glorot uniform);
    with ``layer_norm`` ``input/gamma``, ``input/beta``, ``transform/...``, ``forget/...``,
    ``output/...``, ``state/gamma``, ``state/beta`` [H] (starting at ``norm_gain`` /
    ``norm_shift``) and no bias; with ``layer_norm=False`` a ``bias`` [4H] instead (which TF
    creates with ``get_variable``'s default, glorot uniform, not zeros) and no gamma / beta.
    ``forget_bias`` is added at run time, after the layer norm, never stored.  Shapes: input x_t
    [B, I]; state ``LSTMStateTuple(c [B, H], h [B, H])``; output h_t [B, H].  ``input_size``
    (deprecated and unused in TF) builds the cell eagerly, as for npl's other cells.

    Dropout (``dropout_keep_prob < 1``): each step draws a mask for g, kept with probability
    ``dropout_keep_prob`` and scaled by its inverse (``dropout_prob_seed`` seeds the cell's own
    generator; the random stream is NumPy's, not TF's).  As for :class:`npl.rnn.DropoutWrapper`:
    the masks of the last forward are in ``masks`` ([T, B, H], time-major, scaled; one call of
    ``dynamic_rnn`` or one step is one draw), ``replay = True`` runs the next forwards with them
    again (or with masks assigned by hand: the way to finite-difference a dropout cell, or to feed
    the same masks to a TF graph), and ``training = False`` turns the dropout off (TF's cell has
    no such switch: there one feeds ``dropout_keep_prob`` = 1).  ``Sequential(training=...)``,
    npl.train's evaluation and ``npl.gradcheck.gradcheck_cell``'s mask replay switch it as they
    switch DropoutWrappers (``npl.layers.dropout_cells``).

    >>> import numpy as np, npl
    >>> rng = np.random.default_rng(0)
    >>> cell = npl.rnn.LayerNormBasicLSTMCell(3, forget_bias=0.5, seed=0, input_size=2,
    ...                                       dtype=np.float64)                 # H = 3, I = 2
    >>> sorted(cell.params)[:4], cell.params["kernel"].shape, "bias" in cell.params
    (['forget/beta', 'forget/gamma', 'input/beta', 'input/gamma'], (5, 12), False)
    >>> p = cell.set_params({k: rng.standard_normal(v.shape) for k, v in cell.params.items()}).params
    >>> x, c0, h0 = rng.standard_normal((2, 2)), rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    >>> y, (c1, h1) = cell(x, npl.LSTMStateTuple(c0, h0))
    >>> def ln(v, s):                                                           # (N2)
    ...     mu, var = v.mean(1, keepdims=True), v.var(1, keepdims=True)
    ...     return p[s + "/gamma"] * (v - mu) / np.sqrt(var + 1e-12) + p[s + "/beta"]
    >>> sig = lambda v: 1 / (1 + np.exp(-v))
    >>> a = np.split(np.concatenate([x, h0], 1) @ p["kernel"], 4, axis=1)     # (N1)
    >>> n_i, n_j, n_f, n_o = (ln(v, s) for v, s in zip(a, ["input", "transform", "forget", "output"]))
    >>> c = ln(sig(n_f + 0.5) * c0 + sig(n_i) * np.tanh(n_j), "state")        # (N3)-(N7)
    >>> np.allclose(c1, c), np.allclose(h1, np.tanh(c) * sig(n_o)), np.array_equal(y, h1)  # (N8)
    (True, True, True)
    """

    _default_name = "layer_norm_basic_lstm_cell"
    _has_dropout = True          # training / replay / masks, as a DropoutWrapper's (dropout_cells)
    _state_is_tuple = True
    # the LSTM's state structure and its checks (c and h both [B, H])
    state_size = LSTMCell.state_size
    _zero_state = LSTMCell._zero_state
    _zeros_internal = LSTMCell._zeros_internal
    _to_internal = LSTMCell._to_internal
    _to_public = LSTMCell._to_public

    def __init__(self, num_units, forget_bias=1.0, input_size=None, activation=None,
                 layer_norm=True, norm_gain=1.0, norm_shift=0.0, dropout_keep_prob=1.0,
                 dropout_prob_seed=None, reuse=None, name=None, dtype=None, seed=None):
        real_number(forget_bias, "forget_bias")
        real_number(norm_gain, "norm_gain")
        real_number(norm_shift, "norm_shift")
        if not is_real(dropout_keep_prob):
            raise TypeError("dropout_keep_prob must be a number in (0, 1], got %r" % (dropout_keep_prob,))
        if not 0 < float(dropout_keep_prob) <= 1:
            raise ValueError("dropout_keep_prob must be a number in (0, 1], got %r" % (dropout_keep_prob,))
        if not isinstance(layer_norm, (bool, np.bool_)):
            raise TypeError("layer_norm must be True or False, got %r" % (layer_norm,))
        self._forget_bias = float(forget_bias)
        self._layer_norm = bool(layer_norm)
        self._norm_gain, self._norm_shift = float(norm_gain), float(norm_shift)
        self._keep_prob = float(dropout_keep_prob)
        self._rng = None if dropout_prob_seed is None else \
            _random.generator(_random.check_seed(dropout_prob_seed))
        self.training = True
        self.replay = False
        self.masks = None
        super().__init__(num_units, activation, dtype, seed, input_size, name)

    @property
    def forget_bias(self):
        return self._forget_bias

    @property
    def gate_layout(self):
        """npl.inspect's names of the ``gates`` slab's blocks, activated: i, j (``act(n_j)``,
        before the dropout mask), f (``forget_bias`` included), o.  Their ``d_gates`` are dL/da,
        with respect to the kernel's product a of (N1), before the layer norm."""
        return (("i", "sigmoid"), ("j", self._activation), ("f", "sigmoid"), ("o", "sigmoid"))

    @property
    def layer_norm(self):
        return self._layer_norm

    @property
    def dropout_keep_prob(self):
        return self._keep_prob

    @property
    def _chunkable(self):
        return not self._dropping()             # masks cover the whole sequence of one call

    def _dropping(self):
        return self.training and self._keep_prob < 1

    def _shapes(self, input_size):
        H = self._num_units
        s = {"kernel": (input_size + H, 4 * H)}
        if not self._layer_norm:
            s["bias"] = (4 * H,)
            return s
        for scope in _LN_GATE_SCOPES + ("state",):
            s[scope + "/gamma"] = (H,)
            s[scope + "/beta"] = (H,)
        return s

    def _init_value(self, name, shape, rng, dtype):
        if name.endswith("/gamma"):
            return np.full(shape, self._norm_gain, dtype)
        if name.endswith("/beta"):
            return np.full(shape, self._norm_shift, dtype)
        return glorot_uniform(shape, rng, dtype)       # kernel, and bias: get_variable's default

    # -- dropout
    def _dropout_masks(self, T, B, dtype, xp):
        """The scaled masks of g for this call, [T, B, H] (time-major), or None."""
        if not self._dropping():
            return None
        shape = (T, B, self._num_units)
        if self.replay:
            m = self.masks
            if m is None:
                raise ValueError("replay=True but masks is None; run a forward with replay=False "
                                 "first or set the masks")
            if not hasattr(m, "shape") or get_array_module(m) is not xp:
                raise TypeError("masks must be a %s array of shape %s (the inputs' backend), got %s"
                                % (xp.__name__, shape, type(m).__name__))
            check_shape(m, shape, "masks")
            check_dtype(m, dtype, "masks")
            return m
        rng = self._rng if self._rng is not None else _random.generator(None)
        keep = self._keep_prob
        m = xp.asarray((rng.random(shape) < keep).astype(dtype) / np.asarray(keep, dtype))
        self.masks = m
        return m

    # -- forward
    def _norm_params(self, xp):
        """gamma, beta of the gates [4, H, 1] and of the state [H, 1]."""
        p = self._params
        gam = xp.stack([p[s + "/gamma"] for s in _LN_GATE_SCOPES])[:, :, None]
        bet = xp.stack([p[s + "/beta"] for s in _LN_GATE_SCOPES])[:, :, None]
        return gam, bet, p["state/gamma"][:, None], p["state/beta"][:, None]

    def _forward_seq(self, x, state, mask, state_mask=None):
        xp = get_array_module(x)
        T, B, I = x.shape
        H, dt = self._num_units, x.dtype
        ln, act, sig = self._layer_norm, self._activation, _act.sigmoid
        K = self._params["kernel"]
        W, U = K[:I], K[I:]
        b = self._params["bias"] if not ln else xp.zeros((4 * H,), dt)
        G, KP, project = _projection(W, x, b)          # (N1): [4H, I+1] @ [T, I+1, B]
        A = _ws.empty(xp, (T, 4 * H, B), dt)           # i, act(n_j), f, o (before the mask)
        C = _ws.empty(xp, (T + 1, H, B), dt)
        Hs = _ws.empty(xp, (T + 1, H, B), dt)
        C[0], Hs[0] = _state_fm(state.c), _state_fm(state.h)
        fm = {"gates": A, "c": C, "h": Hs}
        dm = self._dropout_masks(T, B, dt, xp)
        D = None if dm is None else dm.transpose(0, 2, 1)      # [T, H, B] view
        if D is not None:
            fm["dropout_mask"] = D
        if ln:
            gam, bet, gs, bs = self._norm_params(xp)
            fm["gates_hat"] = G                        # G becomes the normalised a (xhat)
            RG = fm["gates_rstd"] = _ws.empty(xp, (T, 4, B), dt)
            CH = fm["c_hat"] = _ws.empty(xp, (T, H, B), dt)
            RC = fm["c_rstd"] = _ws.empty(xp, (T, 1, B), dt)
        rec = LayerRecord(self, x, mask, fm)
        inv = rec.inv_fm
        S, h_out = _state_dropout(rec, state_mask, T, xp)
        buf = _ws.empty(xp, (4 * H, B), dt)
        tmp = _ws.empty(xp, (H, B), dt)
        fb = np.asarray(self._forget_bias, dt)
        eps = np.asarray(LAYER_NORM_EPSILON, dt)
        for t in range(T):
            if t % KP == 0:
                project(t)
            g, a = G[t], A[t]
            xp.matmul(U.T, Hs[t], out=buf)             # [4H, H] @ [H, B]
            g += buf
            if ln:                                     # (N2), (N3)
                g4, a4 = g.reshape(4, H, B), a.reshape(4, H, B)
                _layer_norm_forward(g4, RG[t].reshape(4, 1, B), eps, buf.reshape(4, H, B))  # buf: free
                xp.multiply(g4, gam, out=a4)
                a4 += bet
            else:
                a[...] = g
            i, j, f, o = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]
            sig(i, out=i)                              # (N4), (N5)
            act(j, out=j)
            f += fb
            sig(f, out=f)
            sig(o, out=o)
            c = C[t + 1]
            xp.multiply(f, C[t], out=c)                # (N6)
            xp.multiply(i, j, out=tmp)
            if D is not None:
                tmp *= D[t]
            c += tmp
            if ln:                                     # (N7)
                ch = CH[t]
                ch[...] = c
                _layer_norm_forward(ch[None], RC[t][None], eps, tmp[None])    # tmp: added to c
                xp.multiply(ch, gs, out=c)
                c += bs
            act(c, out=tmp)                            # (N8)
            xp.multiply(tmp, o, out=Hs[t + 1])
            _drop_state(Hs, t, S, h_out)
            if inv is not None:
                xp.copyto(C[t + 1], C[t], where=inv[t])
                xp.copyto(Hs[t + 1], Hs[t], where=inv[t])
        final = LSTMStateTuple(_state_public(C[T]), _state_public(Hs[T]))
        return _outputs(rec), final, rec

    # -- backward
    def _backward_seq(self, rec, dout, dstate):
        """BPTT, (N9)-(N17) of docs/bptt.md, one step at a time from the last; the weight
        gradients after the loop, one GEMM for the kernel and one reduction per gamma / beta."""
        fm, x = rec.fm, rec.x
        A, C, Hs = fm["gates"], fm["c"], fm["h"]
        D = fm.get("dropout_mask")
        xp = get_array_module(A)
        T, _, B = A.shape
        I = x.shape[2]
        H, dt = self._num_units, A.dtype
        ln, act = self._layer_norm, self._activation
        K = self._params["kernel"]
        W, U = K[:I], K[I:]                            # U [H, 4H]
        if dstate is None:
            dc, dh = _ws.zeros(xp, (H, B), dt), _ws.zeros(xp, (H, B), dt)
        else:
            dc, dh = _ws_copy(_state_fm(dstate.c)), _ws_copy(_state_fm(dstate.h))
        dG2, dG = _gate_grad_slab(A)                   # dL/da (raw pre-activations)
        if ln:
            gam, bet, gs, bs = self._norm_params(xp)
            XH, RG, CH, RC = fm["gates_hat"], fm["gates_rstd"], fm["c_hat"], fm["c_rstd"]
            DN = _ws.empty(xp, (T, 4 * H, B), dt)      # dL/dn (the normalised gates)
            DC = _ws.empty(xp, (T, H, B), dt)          # dL/dc_t (the normalised state)
            s4 = _ws.empty(xp, (4, H, B), dt)          # the gates' layer-norm backward's scratch
        buf, carry = _ws.empty(xp, (H, B), dt), _ws.empty(xp, (H, B), dt)
        tmp, tmp2, dcr_buf = (_ws.empty(xp, (H, B), dt) for _ in range(3))
        inv = rec.inv_fm
        dhv = _ws.empty(xp, (H, B), dt) if inv is not None else None
        dc_keep = _ws.empty(xp, (H, B), dt) if inv is not None else None
        dout_fm = _masked_fm(dout, rec)
        if rec.record_state_grads:
            rec.d_h_fm, rec.d_c_fm = _ws.empty(xp, (T, H, B), dt), _ws.empty(xp, (T, H, B), dt)
        for t in range(T - 1, -1, -1):
            passthrough = _step_grad(dh, dout_fm, t, rec, carry)
            if rec.d_h_fm is not None:
                rec.d_h_fm[t] = dh
            if inv is not None:                        # rows past their length get no gradient
                dhv[...] = dh                          # here; dc and dh pass through unchanged
                xp.copyto(dhv, 0, where=inv[t])
                dc_keep[...] = dc
                xp.copyto(dc, 0, where=inv[t])
                d_step = dhv
            else:
                d_step = dh
            a = A[t]
            i, j, f, o = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]
            e = DN[t] if ln else dG[t]
            ei, ej, ef, eo = e[:H], e[H:2 * H], e[2 * H:3 * H], e[3 * H:]
            act(C[t + 1], out=tmp)                     # act(c_t)
            xp.multiply(d_step, tmp, out=eo)           # (N9)
            xp.subtract(1, o, out=tmp2)
            eo *= o
            eo *= tmp2
            act.deriv_into(tmp, tmp2)                  # (N10)
            tmp2 *= o
            tmp2 *= d_step
            dc += tmp2
            if rec.d_c_fm is not None:
                rec.d_c_fm[t] = dc
            if ln:                                     # (N11) through LN_state
                DC[t] = dc
                dcr = dcr_buf
                xp.multiply(dc, gs, out=dcr)
                _layer_norm_backward(dcr[None], CH[t][None], RC[t][None], tmp2[None])  # tmp2: free
            else:
                dcr = dc
            if D is not None:                          # g = act(n_j) * d_t
                xp.multiply(j, D[t], out=tmp)
            else:
                tmp[...] = j
            xp.multiply(dcr, tmp, out=ei)              # (N12)
            xp.subtract(1, i, out=tmp2)
            ei *= i
            ei *= tmp2
            act.deriv_into(j, ej)                      # (N13)
            ej *= i
            ej *= dcr
            if D is not None:
                ej *= D[t]
            xp.multiply(dcr, C[t], out=ef)             # (N14)
            xp.subtract(1, f, out=tmp2)
            ef *= f
            ef *= tmp2
            xp.multiply(dcr, f, out=dc)                # (N15): dc_{t-1}
            if ln:                                     # (N11) through the gates' LN, into dG[t]
                w4 = dG[t].reshape(4, H, B)            # a view: the slab's rows are contiguous
                xp.multiply(e.reshape(4, H, B), gam, out=w4)
                _layer_norm_backward(w4, XH[t].reshape(4, H, B), RG[t].reshape(4, 1, B), s4)
            if inv is not None:
                xp.copyto(dc, dc_keep, where=inv[t])
            xp.matmul(U, dG[t], out=buf)               # (N16): [H, 4H] @ [4H, B]
            if inv is not None:
                xp.copyto(buf, passthrough, where=inv[t])
            dh, buf = buf, dh
        rec.d_gates_fm = dG
        dG2 = _flat(dG) if dG2 is None else dG2        # [4H, T*B]
        gk, gb, _ = _kernel_grad(x, Hs[:T], dG2)       # (N17): [I+H+1, T*B] @ [T*B, 4H]
        self._accumulate("kernel", gk)
        if ln:                                         # (N17): gamma, beta
            DN4, XH4 = DN.reshape(T, 4, H, B), XH.reshape(T, 4, H, B)
            dgam, dbet = (DN4 * XH4).sum(axis=(0, 3)), DN4.sum(axis=(0, 3))
            for k, s in enumerate(_LN_GATE_SCOPES):
                self._accumulate(s + "/gamma", dgam[k])
                self._accumulate(s + "/beta", dbet[k])
            self._accumulate("state/gamma", (DC * CH).sum(axis=(0, 2)))
            self._accumulate("state/beta", DC.sum(axis=(0, 2)))
        else:
            self._accumulate("bias", gb)
        return _dx(W, dG2, T, B), LSTMStateTuple(_state_public(dc), _state_public(dh))

    def __repr__(self):
        return "LayerNormBasicLSTMCell(num_units=%d, layer_norm=%s, dropout_keep_prob=%g%s)" % (
            self._num_units, self._layer_norm, self._keep_prob,
            "" if not self.built else ", input_size=%d" % self._input_size)
