"""Recipe: write your own RNN cell for npl, run it with dynamic_rnn, and gradient-check it.

The cell is a *coupled input-forget gate* LSTM (CIFG, Greff et al. 2017, "LSTM: A Search Space
Odyssey"): the forget gate is tied to the input gate, ``f = 1 - i``, so a unit can only write new
content in proportion to what it forgets.  No peepholes, no projection.  Equations, with the
parameters in TensorFlow's style (one ``kernel`` over the concatenation ``[x, h]``):

    [a_i, a_j, a_o] = [x_t, h_{t-1}] @ kernel + bias          kernel [I+H, 3H], columns i | j | o
    i = sigmoid(a_i)      j = act(a_j)      o = sigmoid(a_o)      f = 1 - i
    c_t = f * c_{t-1} + i * j  =  c_{t-1} + i * (j - c_{t-1})
    h_t = o * act(c_t)

and their backward (BPTT), for the total gradients dh = dL/dh_t, dc = dL/dc_t:

    dc     += dh * o * act'(c_t)                   (through h_t = o * act(c_t))
    da_o    = dh * act(c_t) * o (1 - o)
    da_i    = dc * (j - c_{t-1}) * i (1 - i)       (i appears twice: i*j and -i*c_{t-1})
    da_j    = dc * i * act'(j)
    dL/dc_{t-1} = dc * (1 - i)                     (= dc * f)
    dL/dh_{t-1} = U @ [da_i; da_j; da_o]           (U = kernel[I:], the recurrent rows)
    dkernel = sum_t [x_t, h_{t-1}]^T @ da_t        one GEMM over all steps, after the loop

What a cell must implement (see npl/cells.py, GRUCell and LSTMCell):

* ``_shapes(input_size)``: parameter name -> shape (TF's names and layouts).
* ``_forward_seq(x, state, mask)``: the whole sequence.  ``x`` is time-major [T, B, I]; ``mask``
  is None or bool [T, B, 1] (True where t < sequence_length[b]).  Returns ``(outputs [T, B, P],
  final_state, record)``.  The record is an ``npl.cells.LayerRecord(cell, x, mask, fm)`` where
  ``fm`` holds the arrays the backward needs in the engine's feature-major layout [T, features, B]
  (``record.slabs`` shows them time-major).  Past a row's length the state is carried unchanged.
* ``_backward_seq(record, d_outputs, d_final_state)``: BPTT.  ``d_outputs`` is [T, B, P] or None,
  ``d_final_state`` is the state structure or None.  Accumulates ``self._grads[name] += ...`` and
  returns ``(d_x [T, B, I], d_initial_state)``.  Set ``record.d_gates_fm`` (and, when
  ``record.record_state_grads``, ``record.d_h_fm`` / ``record.d_c_fm``) so npl.inspect can show them.
* For a state that is not a single [B, H] array: ``state_size``, ``_zero_state``,
  ``_zeros_internal``, ``_to_internal`` (validate a public state) and ``_to_public``; here they are
  borrowed from LSTMCell, whose state is also ``LSTMStateTuple(c, h)``.
* Optional: ``gate_layout`` names the blocks of the ``gates`` slab for npl.inspect.

Run it:  python examples/custom_cell.py       (no options; about a second)
"""
import argparse

import numpy as np

import npl
from npl.cells import RNNCell, LSTMCell, LayerRecord, LSTMStateTuple
from npl.gradcheck import gradcheck_cell


class CIFGLSTMCell(RNNCell):
    """LSTM with a coupled input-forget gate (f = 1 - i), no peepholes.  State LSTMStateTuple(c, h).

    Parameters: ``kernel`` [I + H, 3H] (gate columns i, j, o) and ``bias`` [3H].
    """

    _default_name = "cifg_lstm_cell"
    gate_layout = (("i", "sigmoid"), ("j", "tanh"), ("o", "sigmoid"))   # for npl.inspect

    def __init__(self, num_units, activation=None, dtype=None, seed=None, input_size=None, name=None):
        super().__init__(num_units, activation, dtype, seed, input_size, name)
        if self._activation is not npl.activations.tanh:
            self.gate_layout = (("i", "sigmoid"), ("j", self._activation.name), ("o", "sigmoid"))

    def _shapes(self, input_size):
        H = self._num_units
        return {"kernel": (input_size + H, 3 * H), "bias": (3 * H,)}

    # the state is an LSTMStateTuple(c, h), exactly as for LSTMCell without a projection
    output_size = property(lambda self: self._num_units)
    state_size = property(lambda self: LSTMStateTuple(self._num_units, self._num_units))
    _state_is_tuple = True
    _zero_state = LSTMCell._zero_state
    _zeros_internal = LSTMCell._zeros_internal
    _to_internal = LSTMCell._to_internal
    _to_public = LSTMCell._to_public

    def _forward_seq(self, x, state, mask):
        xp = npl.get_array_module(x)
        T, B, I = x.shape
        H, dt = self._num_units, x.dtype
        K, b = self._params["kernel"], self._params["bias"]
        W, U = K[:I], K[I:]                                   # [I, 3H] input rows, [H, 3H] recurrent rows
        # input projection of all steps in one GEMM, feature-major: G[t] = W^T x_t + b
        G = xp.matmul(W.T, x.transpose(0, 2, 1))              # [3H, I] @ [T, I, B] -> [T, 3H, B]
        G += b[:, None]
        C = xp.empty((T + 1, H, B), dt)                       # C[0] = c_0, C[t+1] = c after step t
        Hs = xp.empty((T + 1, H, B), dt)
        C[0], Hs[0] = state.c.T, state.h.T
        rec = LayerRecord(self, x, mask, {"gates": G, "c": C, "h": Hs})
        inv, act, sig = rec.inv_fm, self._activation, npl.activations.sigmoid
        for t in range(T):
            g = G[t]
            g += xp.matmul(U.T, Hs[t])                        # [3H, H] @ [H, B]
            i, j, o = g[:H], g[H:2 * H], g[2 * H:]
            sig(i, out=i)
            act(j, out=j)
            sig(o, out=o)
            C[t + 1] = C[t] + i * (j - C[t])                  # f * c + i * j with f = 1 - i
            Hs[t + 1] = o * act(C[t + 1])
            if inv is not None:                               # past the length: carry the state
                xp.copyto(C[t + 1], C[t], where=inv[t])
                xp.copyto(Hs[t + 1], Hs[t], where=inv[t])
        final = LSTMStateTuple(C[T].T.copy(), Hs[T].T.copy())
        return Hs[1:].transpose(0, 2, 1), final, rec

    def _backward_seq(self, rec, dout, dstate):
        G, C, Hs, x = rec.fm["gates"], rec.fm["c"], rec.fm["h"], rec.x
        xp = npl.get_array_module(G)
        T, _, B = G.shape
        I, H, dt = x.shape[2], self._num_units, G.dtype
        K = self._params["kernel"]
        W, U = K[:I], K[I:]
        act = self._activation
        if dstate is None:
            dc, dh = xp.zeros((H, B), dt), xp.zeros((H, B), dt)
        else:
            dc, dh = dstate.c.T.copy(), dstate.h.T.copy()
        valid = None if rec.inv_fm is None else ~rec.inv_fm   # [T, 1, B]
        d_out = None if dout is None else dout.transpose(0, 2, 1)      # [T, H, B]
        if d_out is not None and valid is not None:
            d_out = d_out * valid                             # outputs past the length are constant 0
        dG = xp.empty_like(G)
        if rec.record_state_grads:
            rec.d_h_fm, rec.d_c_fm = xp.empty((T, H, B), dt), xp.empty((T, H, B), dt)
        for t in range(T - 1, -1, -1):
            if d_out is not None:
                dh = dh + d_out[t]                            # dL/dh_t: this step's output + carried
            dh_step = dh if valid is None else dh * valid[t]  # the part that flows into step t
            i, j, o = G[t, :H], G[t, H:2 * H], G[t, 2 * H:]
            tc = act(C[t + 1])
            dc_t = dc + dh_step * o * act.grad_from_output(tc)           # total dL/dc_t
            if rec.d_h_fm is not None:
                rec.d_h_fm[t], rec.d_c_fm[t] = dh, dc_t
            dG[t, 2 * H:] = dh_step * tc * o * (1 - o)                    # da_o
            dG[t, :H] = dc_t * (j - C[t]) * i * (1 - i)                   # da_i
            dG[t, H:2 * H] = dc_t * i * act.grad_from_output(j)           # da_j
            dc_prev = dc_t * (1 - i)                                      # through f = 1 - i
            dh_prev = xp.matmul(U, dG[t])                                 # [H, 3H] @ [3H, B]
            if valid is not None:                             # rows past their length: nothing
                dG[t] *= valid[t]                             # happened at step t, so the
                dc_prev = xp.where(valid[t], dc_prev, dc)     # gradients pass through unchanged
                dh_prev = xp.where(valid[t], dh_prev, dh)
            dc, dh = dc_prev, dh_prev
        rec.d_gates_fm = dG
        # weight gradients: one GEMM over all T*B columns
        dG2 = dG.transpose(1, 0, 2).reshape(3 * H, T * B)                 # [3H, T*B]
        X2 = x.reshape(T * B, I)                                          # [T*B, I]
        H2 = Hs[:T].transpose(1, 0, 2).reshape(H, T * B)                  # h_{t-1}, [H, T*B]
        self._grads["kernel"][:I] += xp.matmul(X2.T, dG2.T)               # [I, T*B] @ [T*B, 3H]
        self._grads["kernel"][I:] += xp.matmul(H2, dG2.T)                 # [H, T*B] @ [T*B, 3H]
        self._grads["bias"] += dG2.sum(axis=1)
        dx = xp.matmul(W, dG).transpose(0, 2, 1)                          # [I, 3H] @ [T, 3H, B] -> [T, B, I]
        return dx, LSTMStateTuple(dc.T.copy(), dh.T.copy())


def main():
    npl.use("numpy")              # host arrays throughout: the checks below are written in NumPy
    rng = np.random.default_rng(0)
    cell = CIFGLSTMCell(4, seed=0, dtype=np.float64)
    x = rng.standard_normal((3, 6, 2))                                    # [batch, time, depth]
    out, state = npl.nn.dynamic_rnn(cell, x, sequence_length=[6, 4, 1])
    print("outputs", out.shape, "final c", state.c.shape, "final h", state.h.shape)
    print("parameters:", {k: v.shape for k, v in cell.params.items()})
    # random biases too, so that a layout bug cannot hide behind zeros
    cell.set_params({k: rng.standard_normal(v.shape) * 0.5 for k, v in cell.params.items()})
    report = gradcheck_cell(cell, x, sequence_length=[6, 4, 1])
    print(report)
    report.raise_if_failed()
    return report


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()   # --help; no options
    main()
