"""Pointwise gate math of one time step, written once for numpy and cupy arrays alike.

These functions are the single statement of the LSTM / GRU / simple-RNN elementwise formulas.
The sequence passes in :mod:`npl.cells` call them once per time step on one step of a
preallocated gate slab; the fused CUDA kernels in :mod:`npl.kernels` (``rnn_kernels.cu``) compute
the same thing, with the same variable names, and are tested against these functions.  Every
function works in place on the arrays it is given (``tmp`` is caller-provided workspace), so nothing
is allocated per time step.

Layout.  Inside a sequence pass npl stores everything *feature-major*: one step's gates are an
array ``g`` of shape ``[G*H, B]`` (gate blocks of H rows, batch along the contiguous axis), states
are ``[H, B]``.  Each gate is then one contiguous block ``g[k*H:(k+1)*H]``, which makes the
elementwise work several times faster than on the strided columns of a ``[B, 4H]`` array.  The
public layout stays TensorFlow's ``[batch, units]``; the cells transpose at the edges.

Gate order.  TensorFlow's: the LSTM kernel's gate columns are ``i, j, f, o``, so one step's gates
are ``g = [i; j; f; o]`` and the sigmoid gates are two contiguous blocks, ``i`` and ``[f; o]``.
No permutation is ever made, so the kernel is used as it is stored.  GRU keeps TF's ``r, u`` order
and appends the candidate: ``g = [r; u; c~]``.

Symbols (as in docs/bptt.md):
    i, f, o  input, forget, output gates (after the sigmoid)
    j        candidate cell input (after the activation)
    c        cell state,  h  output / hidden state,  m = o * act(c) before projection
"""
import numpy as np

from .activations import sigmoid_, tanh as _tanh
from .backend import _is_cupy, get_array_module

__all__ = ["lstm_forward_pointwise", "lstm_backward_pointwise", "gru_gates_forward",
           "gru_state_forward", "gru_backward_pointwise", "gru_reset_backward",
           "rnn_backward_pointwise", "LSTM_INTERNAL_ORDER"]

# position k of the gate slab holds TF gate LSTM_INTERNAL_ORDER[k]: TF's own order i, j, f, o
LSTM_INTERNAL_ORDER = (0, 1, 2, 3)


def _cuda(a, *acts):
    """The fused-kernel module when ``a`` is a cupy array and the kernels cover the case."""
    if not _is_cupy(a) or any(act is not _tanh for act in acts):
        return None
    from . import kernels
    return kernels if kernels.enabled else None


_F32 = np.dtype(np.float32)
_cpu_module = []


def _cpu(a, *acts):
    """The fused CPU kernels (:mod:`npl.kernels.cpu`) when ``a`` is a float32 NumPy array, the
    activations are tanh and the kernels are built; else None (the array code below runs)."""
    if type(a) is not np.ndarray or a.dtype is not _F32 or a.strides[-1] != 4:
        return None
    for act in acts:
        if act is not _tanh:
            return None
    if not _cpu_module:
        from .kernels import cpu
        _cpu_module.append(cpu)
    cpu = _cpu_module[0]
    return cpu if cpu.library() is not None else None


def _mul_sigmoid_grad(d, s, tmp):
    """d *= s * (1 - s), for s = sigmoid(a), using workspace tmp."""
    get_array_module(s).subtract(1, s, out=tmp)
    tmp *= s
    d *= tmp


def lstm_forward_pointwise(g, c_prev, c, m, act_j, act_c, peep=None, cell_clip=None,
                           clip_mask=None, prescaled=False):
    """One LSTM step after the gate GEMMs (feature-major).

    g:       [4H, B] pre-activations (a_i; a_j; a_f; a_o), overwritten with the gates (i; j; f; o).
    c_prev:  [H, B] previous cell state.
    c:       [H, B] output: new cell state (clipped when ``cell_clip``).
    m:       [H, B] output: o * act(c)  (the cell output before any projection).
    peep:    None or (w_i, w_f, w_o), each [H, 1] (peephole weights as columns).
    clip_mask: [H, B] bool output, True where |c| <= cell_clip (the clip let the gradient through).

        i = sigmoid(a_i + w_i * c_prev)       f = sigmoid(a_f + forget_bias + w_f * c_prev)
        j = act(a_j)                          c = clip(f * c_prev + i * j)
        o = sigmoid(a_o + w_o * c)            m = o * act(c)
    (forget_bias is already folded into the f rows of the bias by the caller.)

    prescaled: the caller has halved the i, f and o columns of the kernel and bias (exact: a power
    of two), so ``g`` holds (a_i/2; a_j; a_f/2; a_o/2).  As sigmoid(a) = 0.5 * tanh(a/2) + 0.5,
    one tanh call then covers all four gates (no peepholes, tanh for act_j):
        t = tanh(g)      i, f, o = 0.5 * t + 0.5      j = t_j      (then c and m as above)
    """
    if prescaled:
        if peep is not None or act_j is not _tanh:
            raise ValueError("lstm_forward_pointwise: prescaled gates need act_j = tanh and no "
                             "peepholes")
    else:
        k = _cuda(g, act_j, act_c)
        if k is not None:
            return k.lstm_forward(g, c_prev, c, m, peep, cell_clip, clip_mask)
    H = c.shape[0]
    xp = get_array_module(g)
    i, j, f, o = g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:]
    combined = False                                            # c computed by the CPU kernel
    if prescaled:
        xp.tanh(g, out=g)                                       # all four gates in one call (j too)
        k = _cpu(g)
        if k is not None:
            k.lstm_forward_combine(g, c_prev, c)                # i, f, o = 0.5 t + 0.5; c
            combined = True
        else:
            i *= 0.5
            i += 0.5
            g[2 * H:] *= 0.5                                    # f, o
            g[2 * H:] += 0.5
    elif peep is None:
        sigmoid_(i, out=i)
        sigmoid_(g[2 * H:], out=g[2 * H:])                      # f, o in one call
    else:
        w_i, w_f, w_o = peep
        xp.multiply(c_prev, w_i, out=c)
        i += c
        xp.multiply(c_prev, w_f, out=c)
        f += c
        sigmoid_(i, out=i)
        sigmoid_(f, out=f)
    if not prescaled:
        act_j(j, out=j)
    if not combined:
        xp.multiply(f, c_prev, out=c)                           # f * c_prev
        xp.multiply(i, j, out=m)                                # i * j (m as workspace)
        c += m
    if cell_clip is not None:
        xp.abs(c, out=m)
        clip_mask[...] = m <= cell_clip
        c.clip(-cell_clip, cell_clip, out=c)
    if peep is not None:
        xp.multiply(c, w_o, out=m)
        o += m
        sigmoid_(o, out=o)
    act_c(c, out=m)
    m *= o


def lstm_backward_pointwise(g, c_prev, c, dm, dc, dg, act_j, act_c, tmp, peep=None, clip_mask=None,
                            dc_record=None):
    """Backward of :func:`lstm_forward_pointwise` for one step (feature-major).

    g:       [4H, B] gates (i; j; f; o) saved by the forward.
    c_prev, c: [H, B] cell states before and after the step.
    dm:      [H, B] dL/dm for this step (output gradient plus carried dL/dh, through any projection).
    dc:      [H, B] carried dL/dc of this step's c; overwritten with dL/dc_prev.
    dg:      [4H, B] output: dL/d(pre-activation gates) (d_i; d_j; d_f; d_o).
    tmp:     [H, B] workspace.
    dc_record: optional [H, B] output: the total dL/dc of this step (for inspection).

        dL/do   = dm * act(c)                 dL/dc  += dm * o * act'(c)   [+ dL/da_o * w_o]
        dL/di   = dL/dc * j                   dL/dj   = dL/dc * i
        dL/df   = dL/dc * c_prev              dL/dc_prev = dL/dc * f  [+ dL/da_i * w_i + dL/da_f * w_f]
        dL/da_x = dL/dx * sigmoid'(.)  for x in i, f, o;   dL/da_j = dL/dj * act'(a_j)
    """
    k = (_cuda(g, act_j, act_c) or _cpu(g, act_j, act_c)) if dc_record is None else None
    if k is not None:
        return k.lstm_backward(g, c_prev, c, dm, dc, dg, peep, clip_mask)
    H = c.shape[0]
    xp = get_array_module(g)
    i, j, f, o = g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:]
    dg_i, dg_j, dg_f, dg_o = dg[:H], dg[H:2 * H], dg[2 * H:3 * H], dg[3 * H:]
    act_c(c, out=dg_j)                          # tc = act(c), recomputed (dg_j as workspace)
    xp.multiply(dm, dg_j, out=dg_o)             # dL/do = dm * act(c)
    act_c.deriv_into(dg_j, tmp)                 # act'(c), from tc
    tmp *= o
    tmp *= dm
    dc += tmp                                   # dL/dc += dm * o * act'(c)
    _mul_sigmoid_grad(dg_o, o, tmp)             # dL/da_o
    if peep is not None:
        xp.multiply(dg_o, peep[2], out=tmp)
        dc += tmp                               # o = sigmoid(a_o + w_o * c)
    if dc_record is not None:
        dc_record[...] = dc
    if clip_mask is not None:
        dc *= clip_mask                         # clip_by_value passes |c| <= clip
    xp.multiply(dc, j, out=dg_i)
    xp.multiply(dc, i, out=dg_j)
    xp.multiply(dc, c_prev, out=dg_f)
    dc *= f                                     # dL/dc_prev through c = f * c_prev + i * j
    _mul_sigmoid_grad(dg_i, i, tmp)
    _mul_sigmoid_grad(dg_f, f, tmp)
    act_j.mul_grad_from_output(dg_j, j, tmp)
    if peep is not None:
        xp.multiply(dg_i, peep[0], out=tmp)
        dc += tmp
        xp.multiply(dg_f, peep[1], out=tmp)
        dc += tmp


def gru_gates_forward(g, h_prev, rh, prescaled=False):
    """GRU gates: ``g[:2H]`` holds a_r, a_u (pre-activations), overwritten with r, u.

    rh: [H, B] output, r * h_prev (the input of the candidate's recurrent GEMM).
    prescaled: ``g[:2H]`` holds a_r/2, a_u/2 (the caller halved gates/kernel and gates/bias, which
    is exact), so r, u = 0.5 * tanh(g) + 0.5 without the multiplication of the sigmoid.
    """
    H = h_prev.shape[0]
    xp = get_array_module(g)
    if prescaled:
        xp.tanh(g[:2 * H], out=g[:2 * H])
        k = _cpu(g)
        if k is not None:
            return k.gru_gates_combine(g, h_prev, rh)           # r, u = 0.5 t + 0.5; rh
        g[:2 * H] *= 0.5
        g[:2 * H] += 0.5
    else:
        k = _cuda(g)
        if k is not None:
            return k.gru_gates_forward(g, h_prev, rh)
        sigmoid_(g[:2 * H], out=g[:2 * H])
    xp.multiply(g[:H], h_prev, out=rh)


def gru_state_forward(g, h_prev, h, act):
    """GRU candidate and new state: ``g[2H:]`` holds a_c, overwritten with c~ = act(a_c).

        h = u * h_prev + (1 - u) * c~  =  c~ + u * (h_prev - c~)
    """
    k = _cuda(g, act)
    if k is not None:
        return k.gru_state_forward(g, h_prev, h)
    H = h_prev.shape[0]
    cand = g[2 * H:]
    act(cand, out=cand)
    get_array_module(g).subtract(h_prev, cand, out=h)
    h *= g[H:2 * H]
    h += cand


def gru_backward_pointwise(g, h_prev, dh, dg, act, dh_prev, tmp):
    """First half of the GRU step backward (everything before the candidate's recurrent GEMM).

    Given dL/dh (dh, [H, B]) writes dg[2H:] = dL/da_c, dg[H:2H] = dL/da_u, and dh_prev = dL/dh_prev
    through the ``u * h_prev`` path.  The caller then forms d(rh) = U_c @ dg_c and calls
    :func:`gru_reset_backward`.

        dL/du = dh * (h_prev - c~)     dL/dc~ = dh * (1 - u)     dL/dh_prev = dh * u
    """
    k = _cuda(g, act) or _cpu(g, act)
    if k is not None:
        return k.gru_backward(g, h_prev, dh, dg, dh_prev)
    H = h_prev.shape[0]
    xp = get_array_module(g)
    u, cand = g[H:2 * H], g[2 * H:]
    dg_u, dg_c = dg[H:2 * H], dg[2 * H:]
    xp.subtract(h_prev, cand, out=dg_u)
    dg_u *= dh
    _mul_sigmoid_grad(dg_u, u, tmp)
    xp.subtract(1, u, out=dg_c)
    dg_c *= dh
    act.mul_grad_from_output(dg_c, cand, tmp)
    xp.multiply(dh, u, out=dh_prev)


def gru_reset_backward(g, h_prev, drh, dh_prev, dg, tmp):
    """Second half: through rh = r * h_prev.  Adds drh * r to dh_prev, writes dg[:H] = dL/da_r."""
    k = _cuda(g) or _cpu(g)
    if k is not None:
        return k.gru_reset_backward(g, h_prev, drh, dh_prev, dg)
    H = h_prev.shape[0]
    xp = get_array_module(g)
    r, dg_r = g[:H], dg[:H]
    xp.multiply(drh, h_prev, out=dg_r)
    _mul_sigmoid_grad(dg_r, r, tmp)
    xp.multiply(drh, r, out=tmp)
    dh_prev += tmp


def rnn_backward_pointwise(a, dh, dg, act, tmp):
    """Simple RNN: h = act(a).  dg = dh * act'(a), from the saved output ``a`` (= h)."""
    act.deriv_from_output(a, dg, tmp)
    dg *= dh
