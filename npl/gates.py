"""Pointwise gate math of one time step, written once for numpy and cupy arrays alike.

These functions are the single statement of the LSTM / GRU / simple-RNN elementwise formulas.
The sequence passes in :mod:`npl.cells` call them once per time step on rows of a preallocated
gate slab; the fused CUDA kernels in :mod:`npl.kernels` compute the same thing and are tested
against these functions.  Every function works in place on the arrays it is given, so nothing is
allocated per time step beyond what the caller passes as workspace.

Internal gate order.  TensorFlow stores the LSTM kernel with gate columns ``i, j, f, o``.  Inside a
sequence pass npl permutes the columns once to ``i, f, o, j`` so that the three sigmoid gates are
one contiguous block ``g[:, :3H]`` and the candidate ``j`` is ``g[:, 3H:]``; gradients are permuted
back before they are accumulated under TF's names.  GRU keeps TF's ``r, u`` order and appends the
candidate: ``g = [r | u | c~]``.

Symbols (as in docs/bptt.md):
    i, f, o  input, forget, output gates (after the sigmoid)
    j        candidate cell input (after the activation)
    c        cell state,  h  output / hidden state,  m = o * act(c) before projection
"""
from .activations import sigmoid_

__all__ = ["lstm_forward_pointwise", "lstm_backward_pointwise", "gru_gates_forward",
           "gru_state_forward", "gru_backward_pointwise", "gru_reset_backward",
           "rnn_backward_pointwise", "LSTM_INTERNAL_ORDER"]

# internal position k holds TF gate LSTM_INTERNAL_ORDER[k] (TF order: i=0, j=1, f=2, o=3)
LSTM_INTERNAL_ORDER = (0, 2, 3, 1)


def lstm_forward_pointwise(g, c_prev, c, m, act_j, act_c, peep=None, cell_clip=None, clip_mask=None):
    """One LSTM step after the gate GEMM.

    g:       [B, 4H] pre-activations (i, f, o, j), overwritten with the activated gates.
    c_prev:  [B, H] previous cell state.
    c:       [B, H] output: new cell state (clipped when ``cell_clip``).
    m:       [B, H] output: o * act(c)  (the cell output before any projection).
    peep:    None or (w_i_diag, w_f_diag, w_o_diag), each [H].
    clip_mask: [B, H] bool output, True where |c| <= cell_clip (the clip let the gradient through).

        i = sigmoid(a_i + w_i * c_prev)       f = sigmoid(a_f + forget_bias + w_f * c_prev)
        j = act(a_j)                          c = clip(f * c_prev + i * j)
        o = sigmoid(a_o + w_o * c)            m = o * act(c)
    (forget_bias is already folded into the f column of the bias by the caller.)
    """
    H = c.shape[1]
    if peep is None:
        sigmoid_(g[:, :3 * H], out=g[:, :3 * H])                # i, f, o in one call
    else:
        w_i, w_f, w_o = peep
        g[:, :H] += w_i * c_prev
        g[:, H:2 * H] += w_f * c_prev
        sigmoid_(g[:, :2 * H], out=g[:, :2 * H])                # i, f
    i, f, o, j = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
    act_j(j, out=j)
    c[...] = f * c_prev
    m[...] = i * j                                              # m is workspace here
    c += m
    if cell_clip is not None:
        abs_c = abs(c)
        clip_mask[...] = abs_c <= cell_clip
        c.clip(-cell_clip, cell_clip, out=c)
    if peep is not None:
        o += peep[2] * c
        sigmoid_(o, out=o)
    act_c(c, out=m)
    m *= o


def lstm_backward_pointwise(g, c_prev, c, dm, dc, dg, act_j, act_c, peep=None, clip_mask=None,
                            dc_record=None):
    """Backward of :func:`lstm_forward_pointwise` for one step.

    g:       [B, 4H] activated gates (i, f, o, j) saved by the forward.
    c_prev, c: [B, H] cell states before and after the step.
    dm:      [B, H] dL/dm for this step (output gradient plus carried dL/dh, through any projection).
    dc:      [B, H] carried dL/dc of this step's c; overwritten with dL/dc_prev.
    dg:      [B, 4H] output: dL/d(pre-activation gates), internal order (i, f, o, j).
    dc_record: optional [B, H] output: the total dL/dc of this step (for inspection).
    """
    H = c.shape[1]
    i, f, o, j = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
    dg_i, dg_f, dg_o, dg_j = dg[:, :H], dg[:, H:2 * H], dg[:, 2 * H:3 * H], dg[:, 3 * H:]
    tc = act_c(c)                                    # act(c), recomputed rather than stored
    dg_o[...] = dm * tc                              # dL/do
    dc += dm * o * act_c.grad_from_output(tc)        # dL/dc through m = o*act(c)
    dg_o *= o * (1 - o)                              # dL/da_o
    if peep is not None:
        dc += dg_o * peep[2]                         # o = sigmoid(a_o + w_o*c)
    if dc_record is not None:
        dc_record[...] = dc
    if clip_mask is not None:
        dc *= clip_mask                              # clip_by_value passes |c| <= clip
    dg_i[...] = dc * j
    dg_j[...] = dc * i
    dg_f[...] = dc * c_prev
    dc *= f                                          # dL/dc_prev through c = f*c_prev + ...
    dg_i *= i * (1 - i)
    dg_f *= f * (1 - f)
    dg_j *= act_j.grad_from_output(j)
    if peep is not None:
        dc += dg_i * peep[0]
        dc += dg_f * peep[1]


def gru_gates_forward(g, h_prev, rh):
    """GRU gates: ``g[:, :2H]`` holds a_r, a_u (pre-activations), overwritten with r, u.

    rh: [B, H] output, r * h_prev (the input of the candidate's recurrent GEMM).
    """
    H = h_prev.shape[1]
    sigmoid_(g[:, :2 * H], out=g[:, :2 * H])
    rh[...] = g[:, :H] * h_prev


def gru_state_forward(g, h_prev, h, act):
    """GRU candidate and new state: ``g[:, 2H:]`` holds a_c, overwritten with c~ = act(a_c).

        h = u * h_prev + (1 - u) * c~  =  c~ + u * (h_prev - c~)
    """
    H = h_prev.shape[1]
    cand = g[:, 2 * H:]
    act(cand, out=cand)
    h[...] = h_prev - cand
    h *= g[:, H:2 * H]
    h += cand


def gru_backward_pointwise(g, h_prev, dh, dg, act):
    """First half of the GRU step backward (everything before the candidate's recurrent GEMM).

    Given dL/dh (dh, [B, H]) writes dg[:, 2H:] = dL/da_c and dg[:, H:2H] = dL/da_u, and returns
    dL/dh_prev through the ``u * h_prev`` path.  The caller then forms d(rh) = dg_c @ U_c^T and
    calls :func:`gru_reset_backward`.
    """
    H = h_prev.shape[1]
    u, cand = g[:, H:2 * H], g[:, 2 * H:]
    dg_u, dg_c = dg[:, H:2 * H], dg[:, 2 * H:]
    dg_u[...] = dh * (h_prev - cand)
    dg_u *= u * (1 - u)
    dg_c[...] = dh * (1 - u)
    dg_c *= act.grad_from_output(cand)
    return dh * u


def gru_reset_backward(g, h_prev, drh, dh_prev, dg):
    """Second half: through rh = r * h_prev.  Adds to dh_prev, writes dg[:, :H] = dL/da_r."""
    H = h_prev.shape[1]
    r = g[:, :H]
    dg_r = dg[:, :H]
    dg_r[...] = drh * h_prev
    dg_r *= r * (1 - r)
    dh_prev += drh * r


def rnn_backward_pointwise(a, dh, dg, act):
    """Simple RNN: h = act(a).  dg = dh * act'(a), from the saved output ``a`` (= h)."""
    dg[...] = dh * act.grad_from_output(a)
