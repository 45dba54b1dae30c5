"""A heterogeneous stack -- an LSTMCell under a GRUCell with twice the units -- on MNIST, run with
both ``static_rnn`` and ``dynamic_rnn`` from the same weights.

TF1 offers two ways to run a cell over a sequence: ``tf.nn.static_rnn`` takes a Python list of
per-step inputs (``tf.unstack(x, 28, axis=1)``) and returns a list of outputs; ``tf.nn.dynamic_rnn``
takes one [batch, time, depth] tensor.  The math is the same, so with the same weights they must
give the same outputs, loss and gradients.  This script builds::

    cell = MultiRNNCell([LSTMCell(H), GRUCell(2H)])           # rows of 28 pixels -> H -> 2H
    logits = last output @ W + b                               # dense layer [2H, 10]

runs one MNIST batch through both, checks (and asserts) that outputs, final states, loss, every
parameter gradient and the input gradients agree, then times both (ms per batch, forward and
backward) and measures their memory: the bytes the trace keeps for the backward
(``trace.nbytes``) and the peak of Python's allocations during one forward + backward
(``tracemalloc``).  Finally it trains the model (dynamic_rnn) and reports the test accuracy.

In npl ``static_rnn`` stacks its list and runs the same fused sequence loop as ``dynamic_rnn``, so
the two agree exactly and cost nearly the same; the difference is only the list handling.  (In TF1
the difference was the graph: static_rnn adds nodes for every step.)

Run:  python examples/stacked_heterogeneous.py
      python examples/stacked_heterogeneous.py --quick
"""
import argparse
import os
import sys
import time
import tracemalloc
import types

if __name__ == "__main__":
    # Small matrices: one BLAS thread is faster than several, and far faster on a busy machine
    # (multi-threaded OpenBLAS spins while it waits for a core).  Must be set before NumPy loads.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import npl
from npl import train
from npl.layers import Dense

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:             # examples/_cli.py, also when this file is loaded by path
    sys.path.insert(0, _HERE)
import _cli  # noqa: E402  (the scripts' argument helpers)

CLASSES = 10


class StackedModel:
    """``MultiRNNCell([LSTMCell(H), GRUCell(2H)])`` and a dense layer on the last output.

    ``forward(x, mode)`` runs the cell with ``dynamic_rnn`` (``mode="dynamic"``) or ``static_rnn``
    (``mode="static"``); both return ``(logits, trace)`` with ``trace.backward(d_logits)`` (which
    returns ``d_x`` [B, T, I]) and ``trace.rnn`` (the sequence function's own trace).
    """

    def __init__(self, hidden=32, seed=0):
        self.cell = npl.rnn.MultiRNNCell([npl.rnn.LSTMCell(hidden, seed=seed),
                                          npl.rnn.GRUCell(2 * hidden, seed=seed + 1)])
        self.dense = Dense(CLASSES, seed=seed + 2)
        self.mode = "dynamic"

    @property
    def params(self):
        p = {"rnn/multi_rnn_cell/%s" % k: v for k, v in self.cell.params.items()}
        p.update({"dense/%s" % k: v for k, v in self.dense.params.items()})
        return p

    @property
    def grads(self):
        g = {"rnn/multi_rnn_cell/%s" % k: v for k, v in self.cell.grads.items()}
        g.update({"dense/%s" % k: v for k, v in self.dense.grads.items()})
        return g

    def zero_grad(self):
        self.cell.zero_grad()
        self.dense.zero_grad()

    def forward(self, x, mode=None):
        mode = mode or self.mode
        if mode == "dynamic":
            outputs, state, trace = npl.nn.dynamic_rnn(self.cell, x, dtype=x.dtype,
                                                       return_trace=True)      # [B, T, 2H]
            last = outputs[:, -1, :]
        elif mode == "static":
            inputs = [x[:, t, :] for t in range(x.shape[1])]     # tf.unstack(x, T, axis=1)
            outputs, state, trace = npl.nn.static_rnn(self.cell, inputs, dtype=x.dtype,
                                                      return_trace=True)       # T x [B, 2H]
            last = outputs[-1]
        else:
            raise ValueError("mode must be 'dynamic' or 'static', got %r" % (mode,))
        logits, dense_trace = self.dense.forward(last)                          # [B, 2H] @ [2H, 10]

        def backward(d_logits):
            d_last = dense_trace.backward(d_logits)
            if mode == "dynamic":
                d_outputs = np.zeros_like(outputs)
                d_outputs[:, -1, :] = d_last
                d_x, _ = trace.backward(d_outputs, None)
            else:
                d_outputs = [None] * (len(outputs) - 1) + [d_last]   # only the last step's output
                d_inputs, _ = trace.backward(d_outputs, None)
                d_x = np.stack(d_inputs, axis=1)                      # list of [B, I] -> [B, T, I]
            return d_x

        return logits, types.SimpleNamespace(backward=backward, rnn=trace, outputs=outputs,
                                             state=state)


def _flat_state(state):
    if isinstance(state, tuple):
        return [a for s in state for a in _flat_state(s)]
    return [state]


def run_once(model, x, y, mode):
    """One forward + backward from zeroed gradients: a dict of everything to compare."""
    model.zero_grad()
    logits, trace = model.forward(x, mode)
    loss, d_logits = npl.losses.sparse_softmax_cross_entropy(y, logits)
    nbytes = sum(r.nbytes for r in trace.rnn.records)
    d_x = trace.backward(d_logits)
    outputs = trace.outputs if mode == "dynamic" else np.stack(trace.outputs, axis=1)
    return {"outputs": outputs, "state": _flat_state(trace.state), "loss": loss, "d_x": d_x,
            "grads": {k: g.copy() for k, g in model.grads.items()}, "trace_bytes": nbytes}


def compare(a, b):
    """Largest absolute difference between two run_once results (0.0 when bitwise equal)."""
    diffs = {"outputs": float(np.max(np.abs(a["outputs"] - b["outputs"]))),
             "final state": max(float(np.max(np.abs(p - q))) for p, q in zip(a["state"], b["state"])),
             "loss": abs(a["loss"] - b["loss"]),
             "d_inputs": float(np.max(np.abs(a["d_x"] - b["d_x"]))),
             "parameter gradients": max(float(np.max(np.abs(a["grads"][k] - b["grads"][k])))
                                        for k in a["grads"])}
    return diffs


def time_ms(model, x, y, mode, repeats):
    """Median wall time of forward + loss + backward, in ms per batch."""
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        run_once(model, x, y, mode)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times[1:]))                 # the first call warms caches


def peak_bytes(model, x, y, mode):
    """Peak of the allocations traced by tracemalloc during one forward + backward (with npl's
    workspace pool off, so that every slab the pass needs is allocated and counted)."""
    old_limit = npl.workspace.set_limit(0)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run_once(model, x, y, mode)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        npl.workspace.set_limit(old_limit)


def accuracy(model, x, y, batch_size=1000):
    pred = np.concatenate([np.argmax(model.forward(x[s:s + batch_size])[0], axis=1)
                           for s in range(0, len(x), batch_size)])
    return float(np.mean(pred == y))


def plot(path, timing, memory, history):
    fig = train.new_figure((10, 3.4), required=False)
    if fig is None:
        return None
    modes = ["static_rnn", "dynamic_rnn"]
    ax = fig.add_subplot(1, 3, 1)
    ax.bar(modes, [timing["static"], timing["dynamic"]], color=["C0", "C1"])
    ax.set_ylabel("ms per batch (forward + backward)")
    ax.set_title("speed", fontsize=10)
    ax = fig.add_subplot(1, 3, 2)
    w = 0.38
    pos = np.arange(2)
    ax.bar(pos - w / 2, [memory["static"]["trace"] / 2 ** 20, memory["dynamic"]["trace"] / 2 ** 20], w,
           label="trace.nbytes")
    ax.bar(pos + w / 2, [memory["static"]["peak"] / 2 ** 20, memory["dynamic"]["peak"] / 2 ** 20], w,
           label="tracemalloc peak")
    ax.set_xticks(pos)
    ax.set_xticklabels(modes)
    ax.set_ylabel("MiB")
    ax.set_title("memory of one forward + backward", fontsize=10)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 3, 3)
    ax.plot(history.step, history.loss, lw=0.7)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training (dynamic_rnn)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


QUICK = dict(train_size=3000, test_size=1000, repeats=5)     # --quick's defaults


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--hidden", type=_cli.positive_int, default=32,
                   help="LSTM units (the GRU above has twice as many)")
    p.add_argument("--epochs", type=_cli.positive_int, default=3)
    p.add_argument("--batch-size", type=_cli.positive_int, default=128)
    p.add_argument("--learning-rate", "--lr", type=_cli.positive_float, default=0.005)
    p.add_argument("--repeats", type=_cli.positive_int, default=20, help="timed batches per mode")
    return _cli.add_mnist_options(p, QUICK, 'folder for the PNG plot')


def parse_args(argv):
    p = build_parser()
    args = _cli.parse_mnist(p, argv, QUICK)
    return args


def main(argv=None):
    """Compare static_rnn and dynamic_rnn, then train; returns a dict of results."""
    args = parse_args(argv)
    npl.use("numpy")              # a CPU comparison: it times the host and measures its memory
    npl.set_random_seed(args.seed)
    x, y = npl.data.load_mnist(args.data_dir, kind="train")
    x_test, y_test = npl.data.load_mnist(args.data_dir, kind="test")
    x, y = x[:args.train_size], y[:args.train_size]
    x_test, y_test = x_test[:args.test_size], y_test[:args.test_size]
    model = StackedModel(args.hidden, seed=args.seed)
    xb, yb = x[:args.batch_size], y[:args.batch_size]

    static, dynamic = run_once(model, xb, yb, "static"), run_once(model, xb, yb, "dynamic")
    diffs = compare(static, dynamic)
    print("%s + dense, one batch %s, same weights:" % (model.cell, xb.shape))
    for k, v in diffs.items():
        print("  static_rnn vs dynamic_rnn, max |difference| of %-20s %.3g" % (k + ":", v))
    if max(diffs.values()) > 1e-6:
        raise AssertionError("static_rnn and dynamic_rnn disagree: %s" % diffs)

    timing = {m: time_ms(model, xb, yb, m, args.repeats) for m in ("static", "dynamic")}
    memory = {m: {"trace": (static if m == "static" else dynamic)["trace_bytes"],
                  "peak": peak_bytes(model, xb, yb, m)} for m in ("static", "dynamic")}
    for m in ("static", "dynamic"):
        print("  %s_rnn: %.1f ms per batch (forward + backward, median of %d), trace %.2f MiB, "
              "tracemalloc peak %.2f MiB" % (m, timing[m], args.repeats, memory[m]["trace"] / 2 ** 20,
                                             memory[m]["peak"] / 2 ** 20))

    print("\ntraining with dynamic_rnn: %d images, %d epoch(s), Adam(%g)" % (len(x), args.epochs,
                                                                            args.learning_rate), flush=True)
    history = train.fit(model, "sparse_softmax_cross_entropy", train.AdamOptimizer(args.learning_rate),
                        x, y, batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
                        progress=not args.no_progress)
    acc = accuracy(model, x_test, y_test)
    os.makedirs(args.out, exist_ok=True)
    path = plot(os.path.join(args.out, "stacked_heterogeneous.png"), timing, memory, history)
    results = {"diffs": diffs, "ms_per_batch": timing, "memory": memory, "loss": history.loss,
               "test_accuracy": acc, "test_size": len(x_test), "plots": [path] if path else []}
    print("\ntest accuracy %.2f%% on %d images after %d epoch(s) (%.1f min); static_rnn == dynamic_rnn "
          "(max difference %.1g)" % (100 * acc, len(x_test), args.epochs, history.seconds / 60,
                                     max(diffs.values())))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
