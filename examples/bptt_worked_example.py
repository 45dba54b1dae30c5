"""BPTT by hand: a tiny LSTM (B=1, T=3, H=2, input size 2) with fixed weights, forward and
backward step by step, checked against npl.  docs/bptt.md quotes this script's output verbatim
(tests/test_docs.py reruns it and compares, so the document cannot drift).

The cell is TensorFlow's BasicLSTMCell (forget_bias = 1, tanh); the loss is linear in the outputs,

    L = sum_t  dy_t . y_t          (so dL/dy_t = dy_t, the "output cotangent" given to backward)

with dy_2 = 0: the gradient reaching h_2 comes only from the future, through the recurrence.
Every line below follows an equation of docs/bptt.md and uses its symbols.

Run:  python examples/bptt_worked_example.py       (no options: the numbers are fixed)
"""
import argparse

import numpy as np

import npl
from npl.cells import LSTMStateTuple

H, I, T = 2, 2, 3
FORGET_BIAS = 1.0
# kernel [I + H, 4H]: rows x (2) then h (2); gate columns in TF's order i | j | f | o
KERNEL = np.array([
    #   i1     i2     j1     j2     f1     f2     o1     o2
    [0.50, -0.30, 0.20, 0.60, -0.40, 0.10, 0.30, -0.20],   # x[0]
    [-0.10, 0.40, -0.50, 0.30, 0.20, -0.30, 0.10, 0.40],   # x[1]
    [0.30, 0.20, -0.20, 0.10, 0.50, 0.40, -0.30, 0.20],    # h[0]
    [-0.40, 0.10, 0.40, -0.30, 0.10, -0.20, 0.20, 0.30],   # h[1]
])
BIAS = np.array([0.10, -0.10, 0.00, 0.20, 0.30, -0.20, 0.05, 0.00])
X = np.array([[1.0, -0.5], [0.2, 0.4], [-0.7, 0.1]])        # x_1, x_2, x_3
C0 = np.array([0.5, -0.3])
H0 = np.array([0.1, 0.2])
DY = np.array([[1.0, -0.5], [0.0, 0.0], [0.5, 1.0]])       # dL/dy_1, dL/dy_2, dL/dy_3


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def fmt(v):
    return "[" + ", ".join("% .6f" % e for e in np.ravel(v)) + "]"


def forward():
    """Step by step: returns per-step dicts with a (pre-activations), i, j, f, o, c, h."""
    steps, c, h = [], C0, H0
    for t in range(T):
        a = np.concatenate([X[t], h]) @ KERNEL + BIAS              # (F1) [I+H] @ [I+H, 4H]
        a_i, a_j, a_f, a_o = np.split(a, 4)
        # (F2)-(F4), (F6); no peepholes
        i, j, f, o = sigmoid(a_i), np.tanh(a_j), sigmoid(a_f + FORGET_BIAS), sigmoid(a_o)
        c_new = f * c + i * j                                      # (F5)
        h_new = o * np.tanh(c_new)                                 # (F7)
        steps.append(dict(a=a, i=i, j=j, f=f, o=o, c_prev=c, h_prev=h, c=c_new, h=h_new))
        c, h = c_new, h_new
    return steps


def backward(steps):
    """BPTT, t = T..1: returns per-step dh, dc (totals), da (gate gradients, TF order) and the
    parameter / input / initial-state gradients."""
    U = KERNEL[I:]                                                 # recurrent rows [H, 4H]
    W = KERNEL[:I]                                                 # input rows [I, 4H]
    dh_next, dc_next = np.zeros(H), np.zeros(H)                    # nothing comes from after T
    out = [None] * T
    dX = np.zeros_like(X)
    for t in reversed(range(T)):
        s = steps[t]
        dh = DY[t] + dh_next                                       # (B1) total dL/dh_t
        tc = np.tanh(s["c"])
        dc = dc_next + dh * s["o"] * (1 - tc ** 2)                 # (B2) total dL/dc_t, by (L3)
        da_o = dh * tc * s["o"] * (1 - s["o"])                     # (L2), (L4)
        da_i = dc * s["j"] * s["i"] * (1 - s["i"])                 # (L7)
        da_j = dc * s["i"] * (1 - s["j"] ** 2)                     # (L8)
        da_f = dc * s["c_prev"] * s["f"] * (1 - s["f"])            # (L9)
        da = np.concatenate([da_i, da_j, da_f, da_o])              # TF column order i, j, f, o
        dc_next = dc * s["f"]                                      # (L10) dL/dc_{t-1} via c_t
        dh_next = da @ U.T                                         # (L11) dL/dh_{t-1} via step t
        dX[t] = da @ W.T                                           # (L12)
        out[t] = dict(dh=dh, dc=dc, da=da)
    # (L13), (L14): sums over steps of outer products, i.e. one GEMM [I+H, T] @ [T, 4H]
    XH = np.stack([np.concatenate([X[t], steps[t]["h_prev"]]) for t in range(T)])   # [T, I+H]
    DA = np.stack([o["da"] for o in out])                                            # [T, 4H]
    grads = dict(kernel=XH.T @ DA, bias=DA.sum(axis=0), x=dX, c0=dc_next, h0=dh_next)
    return out, grads


def run_npl():
    """The same computation with npl: dynamic_rnn, trace.backward, npl.inspect."""
    import npl.inspect as ni
    cell = npl.rnn.BasicLSTMCell(H, forget_bias=FORGET_BIAS, dtype=np.float64)
    cell.set_params({"kernel": KERNEL, "bias": BIAS})
    cell.to_numpy()                                  # the example's arrays are NumPy
    y, final, tr = npl.nn.dynamic_rnn(cell, X[None], initial_state=LSTMStateTuple(C0[None], H0[None]),
                                      return_trace=True)
    tr.record_state_grads()
    dx, d0 = tr.backward(DY[None], None)
    L = ni.inspect_trace(tr).layer(0)
    return dict(gates=L.gates(), c=L.c[:, 0], h=L.h[:, 0], d_h=L.d_h[:, 0], d_c=L.d_c[:, 0],
                d_gates=L.d_gates(), grads=cell.grads, dx=dx[0], dc0=d0.c[0], dh0=d0.h[0],
                contrib=L.weight_grad_contributions())


def main():
    steps = forward()
    back, grads = backward(steps)
    loss = float(sum(DY[t] @ steps[t]["h"] for t in range(T)))
    print("LSTM worked example: B=1, T=3, H=2, input size 2, forget_bias=1")
    print("forward")
    for t, s in enumerate(steps, 1):
        print("t=%d  a   = %s" % (t, fmt(s["a"])))
        print("     i   = %s   j = %s" % (fmt(s["i"]), fmt(s["j"])))
        print("     f   = %s   o = %s" % (fmt(s["f"]), fmt(s["o"])))
        print("     c_%d = %s   h_%d = %s" % (t, fmt(s["c"]), t, fmt(s["h"])))
    print("loss L = %.6f" % loss)
    print("backward")
    for t in range(T, 0, -1):
        b = back[t - 1]
        print("t=%d  dL/dh_%d = %s   dL/dc_%d = %s" % (t, t, fmt(b["dh"]), t, fmt(b["dc"])))
        print("     dL/da_%d = %s" % (t, fmt(b["da"])))
        print("     dL/dx_%d = %s" % (t, fmt(grads["x"][t - 1])))
    print("dL/dc_0 = %s   dL/dh_0 = %s" % (fmt(grads["c0"]), fmt(grads["h0"])))
    print("dL/dbias = %s" % fmt(grads["bias"]))
    print("dL/dkernel =")
    for row in grads["kernel"]:
        print("  %s" % fmt(row))

    # the same numbers from npl (forward, trace.backward, npl.inspect)
    n = run_npl()
    checks = [np.concatenate([n["gates"][g] for g in "ijfo"], axis=2)[:, 0]
              - np.stack([np.concatenate([s[g] for g in "ijfo"]) for s in steps]),
              n["c"] - np.stack([s["c"] for s in steps]), n["h"] - np.stack([s["h"] for s in steps]),
              n["d_h"] - np.stack([b["dh"] for b in back]), n["d_c"] - np.stack([b["dc"] for b in back]),
              np.concatenate([n["d_gates"][g] for g in "ijfo"], axis=2)[:, 0]
              - np.stack([b["da"] for b in back]),
              n["grads"]["kernel"] - grads["kernel"], n["grads"]["bias"] - grads["bias"],
              n["dx"] - grads["x"], n["dc0"] - grads["c0"], n["dh0"] - grads["h0"],
              n["contrib"]["kernel"].sum(axis=0) - grads["kernel"]]
    worst = max(float(np.abs(d).max()) for d in checks)
    ok = worst < 1e-12
    print("npl (dynamic_rnn + trace.backward + npl.inspect) agrees to 1e-12: %s" % ok)
    if not ok:
        raise SystemExit("npl differs from the hand computation by %.3g" % worst)
    return steps, back, grads


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()   # --help; no options
    main()
