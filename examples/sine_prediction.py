"""Predict a sine wave one step ahead with an LSTM -- the classic TF1 regression tutorial, on npl.

The series is ``s[m] = sin(m * dt)`` with ``dt = 0.1``; each example is a window of the 10 past
values ``x = s[m-10 : m]`` (shape [batch, 10, 1]) and its target is the next value ``y = s[m]``.
The test windows continue the series after the last training window (no value is shared).

Three models, exactly as the tutorial builds them:

(a) one ``BasicLSTMCell(1)``: the cell's output at the last step IS the prediction
    (``outputs[:, -1, :]``), trained with Adam(0.001), batch 128, mean squared error;
(b) ``MultiRNNCell([BasicLSTMCell(30), BasicLSTMCell(1)])``: 30 units, then 1 unit whose last
    output is the prediction;
(c) model (b) unrolled by hand, TF1 style -- explicitly built ``LSTMStateTuple`` zero states and
    ``output, state = cell(x[:, t, :], state)`` step by step -- with its backward written as
    backpropagation through the step traces in reverse order.  Run with (b)'s weights it must give
    (b)'s predictions and (b)'s gradients; the script checks both and stops if they differ.

Forward and backward of (a)/(b), written out (``trace.backward`` is npl's hand-written BPTT)::

    outputs, _, trace = npl.nn.dynamic_rnn(cell, x, return_trace=True)     # [B, 10, 1]
    y_hat = outputs[:, -1, :]                                               # [B, 1]
    loss = mean((y_hat - y)^2);   d_y_hat = 2 (y_hat - y) / B
    d_outputs = zeros_like(outputs);  d_outputs[:, -1, :] = d_y_hat          # only the last step
    trace.backward(d_outputs, None)                                         # fills cell.grads

Training uses the toolkit's loop, :func:`npl.train.fit` (shuffled minibatches, progress bar,
test MSE after every epoch) with :class:`npl.train.AdamOptimizer` (TF1's update rule).

Target: the two-layer model's test MSE < 1e-3 (the default run reaches it; the figure is printed
at the end and plotted to ``OUT/sine_prediction.png``).

Run:  python examples/sine_prediction.py            (10-20 s on a 2-core CPU)
      python examples/sine_prediction.py --quick    (a few seconds, a rough fit)
      NPL_BACKEND=cupy python examples/sine_prediction.py    (on a GPU, with CuPy installed)
"""
import argparse
import os
import sys
import time
import types

if __name__ == "__main__":
    # These matrices are small: one BLAS thread is faster than several, and far faster on a busy
    # machine (multi-threaded OpenBLAS spins while it waits for a core).  Must be set before NumPy.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

import npl
from npl import train
from npl.cells import LSTMStateTuple

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:             # examples/_cli.py, also when this file is loaded by path
    sys.path.insert(0, _HERE)
import _cli  # noqa: E402  (the scripts' argument helpers)

WINDOW = 10          # past values per example
DT = 0.1             # time step of the series (radians)
TARGET_MSE = 1e-3    # the two-layer model's target


# ------------------------------------------------------------------------------- models (a), (b)
class LastOutputRegressor:
    """``y_hat = outputs[:, -1, :]`` of ``dynamic_rnn(cell, x)``: the top cell's last output is the
    prediction (the tutorial has no dense layer, so the top cell has 1 unit).

    Implements what :func:`npl.train.fit` needs: ``forward(x) -> (y_hat, trace)`` with
    ``trace.backward(d_y_hat)``, and ``params`` / ``grads`` / ``zero_grad()`` (the cell's).
    """

    def __init__(self, cell):
        self.cell = cell

    @property
    def params(self):
        return self.cell.params

    @property
    def grads(self):
        return self.cell.grads

    def zero_grad(self):
        self.cell.zero_grad()

    def forward(self, x):
        outputs, _, trace = npl.nn.dynamic_rnn(self.cell, x, dtype=x.dtype, return_trace=True)
        y_hat = outputs[:, -1, :]                                  # [B, T, 1] -> [B, 1]

        def backward(d_y_hat):
            d_outputs = np.zeros_like(outputs)                     # the loss sees the last step only
            d_outputs[:, -1, :] = d_y_hat
            trace.backward(d_outputs, None)                        # BPTT, accumulates cell.grads

        return y_hat, types.SimpleNamespace(backward=backward)


# ------------------------------------------------------------------------------- model (c)
class UnrolledRegressor(LastOutputRegressor):
    """Model (b) unrolled by hand: one ``cell(x_t, state)`` call per time step.

    Forward::

        state = (LSTMStateTuple(c=0 [B, 30], h=0 [B, 30]), LSTMStateTuple(c=0 [B, 1], h=0 [B, 1]))
        for t in 0..T-1:   output, state = cell(x[:, t, :], state)       # output [B, 1]
        y_hat = output                                                    # the last step's output

    Backward (BPTT through the step traces, last step first)::

        d_output, d_state = d_y_hat, None
        for t in T-1..0:   d_x_t, d_state = step_trace[t].backward(d_output, d_state)
                           d_output = None          # earlier outputs do not reach the loss
    """

    def zero_state(self, batch_size, dtype, xp=np):
        """The MultiRNNCell's zero state, built explicitly: one LSTMStateTuple(c, h) per layer
        (``xp``: numpy, or cupy when the model runs on the GPU)."""
        return tuple(LSTMStateTuple(c=xp.zeros((batch_size, layer.num_units), dtype),
                                    h=xp.zeros((batch_size, layer.output_size), dtype))
                     for layer in self.cell.cells)

    def forward(self, x):
        batch, steps, _ = x.shape
        state = self.zero_state(batch, x.dtype, npl.get_array_module(x))
        step_traces = []
        for t in range(steps):
            output, state, step = self.cell(x[:, t, :], state, return_trace=True)   # [B, 1]
            step_traces.append(step)

        def backward(d_y_hat):
            d_output, d_state = d_y_hat, None
            for step in reversed(step_traces):
                _, d_state = step.backward(d_output, d_state)      # accumulates cell.grads
                d_output = None

        return output, types.SimpleNamespace(backward=backward)


# ------------------------------------------------------------------------------- helpers
def predict(model, x, batch_size=1000):
    """Predictions [N, 1] in batches (no trace is kept beyond each batch).  Each batch goes to the
    backend in force (the GPU under NPL_BACKEND=cupy) and its predictions come back to NumPy."""
    return np.concatenate([npl.to_numpy(model.forward(npl.to_device(x[s:s + batch_size]))[0])
                           for s in range(0, len(x), batch_size)])


def mse(model, x, y):
    return float(np.mean((predict(model, x) - y) ** 2))


def gradients(model, x, y):
    """One batch's gradients of the mean squared error (copies), from a fresh ``zero_grad``."""
    model.zero_grad()
    y_hat, trace = model.forward(npl.to_device(x))
    _, d_y_hat = npl.losses.mean_squared_error(npl.to_device(y), y_hat)
    trace.backward(d_y_hat)
    return {k: npl.to_numpy(g) for k, g in model.grads.items()}


def train_model(name, cell, data, epochs, args):
    """Fit one model with Adam and the toolkit's loop; returns ``(model, history)``."""
    (x, y), (x_test, y_test) = data
    model = LastOutputRegressor(cell)
    print("\n(%s) %s: %d epochs, batch %d, Adam(%g)" % (name, cell, epochs, args.batch_size,
                                                     args.learning_rate), flush=True)
    history = train.fit(model, "mse", train.AdamOptimizer(args.learning_rate), x, y,
                        batch_size=args.batch_size, epochs=epochs, seed=args.seed,
                        eval_fn=lambda m: {"test_mse": mse(m, x_test, y_test)},
                        progress=not args.no_progress)
    return model, history


def plot(path, y_test, predictions, histories):
    """Test predictions against the true curve (top) and the test MSE per epoch (bottom)."""
    fig = train.new_figure((9, 6.5), required=False)
    if fig is None:
        return None
    ax = fig.add_subplot(2, 1, 1)
    n = min(len(y_test), 250)                                  # about four periods
    t = np.arange(n) * DT
    ax.plot(t, y_test[:n, 0], "k-", lw=3, alpha=0.3, label="sin(t) (truth)")
    styles = {"a": "C0--", "b": "C1-", "c": "C3."}
    for key, (label, y_hat) in predictions.items():
        ax.plot(t if key != "c" else t[::5], y_hat[:n, 0] if key != "c" else y_hat[:n:5, 0],
                styles[key], lw=1.2, ms=4, label=label)
    ax.set_xlabel("time since the start of the test series (radians)")
    ax.set_title("one-step-ahead prediction from the 10 past values")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    ax2 = fig.add_subplot(2, 1, 2)
    for k, (label, hist) in enumerate(histories.items()):
        epochs, values = zip(*[(e + 1, v) for e, (_, v) in enumerate(hist.eval["test_mse"])])
        ax2.semilogy(epochs, values, "C%d" % k, marker="o", ms=3, label=label)
    ax2.axhline(TARGET_MSE, color="k", ls=":", lw=1, label="target 1e-3")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test MSE")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


QUICK = dict(train_size=5000, test_size=500, epochs=6, epochs_1unit=8)   # --quick's defaults


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=_cli.positive_int, default=30,
                   help="epochs of the two-layer model (b)")
    p.add_argument("--epochs-1unit", type=_cli.positive_int, default=100,
                   help="epochs of the 1-unit model (a), which learns slowly")
    p.add_argument("--batch-size", type=_cli.positive_int, default=128)
    p.add_argument("--learning-rate", "--lr", type=_cli.positive_float, default=0.001)
    p.add_argument("--train-size", type=_cli.positive_int, default=10000, help="training windows")
    p.add_argument("--test-size", type=_cli.positive_int, default=1000, help="test windows")
    p.add_argument("--seed", type=_cli.nonnegative_int, default=0)
    p.add_argument("--quick", action="store_true",
                   help=_cli.quick_help("a short run (320 + 240 steps)", QUICK))
    p.add_argument("--out", default="out", help="folder for the PNG plot")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / epoch lines")
    return p


def parse_args(argv):
    return _cli.parse_with_quick(build_parser(), argv, QUICK)


def main(argv=None):
    """Train (a) and (b), check (c) == (b), plot, print the test MSEs; returns a dict of results."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    npl.set_random_seed(args.seed)
    data = npl.data.sine_windows(args.train_size, window=WINDOW, dt=DT, n_test=args.test_size)
    (x, y), (x_test, y_test) = data
    print("sine windows: train %s -> %s, test %s; predicting 0 gives test MSE %.3f"
          % (x.shape, y.shape, x_test.shape, float(np.mean(y_test ** 2))))

    # (a) one BasicLSTMCell with a single unit
    model_a, hist_a = train_model("a", npl.rnn.BasicLSTMCell(1, seed=args.seed), data,
                                  args.epochs_1unit, args)
    # (b) two layers: 30 units, then 1 unit
    cell_b = npl.rnn.MultiRNNCell([npl.rnn.BasicLSTMCell(30, seed=args.seed + 1),
                                   npl.rnn.BasicLSTMCell(1, seed=args.seed + 2)])
    model_b, hist_b = train_model("b", cell_b, data, args.epochs, args)

    # (c) the same cell object (same weights), unrolled by hand
    model_c = UnrolledRegressor(cell_b)
    pred_a, pred_b, pred_c = predict(model_a, x_test), predict(model_b, x_test), predict(model_c, x_test)
    pred_diff = float(np.max(np.abs(pred_c - pred_b)))
    g_b = gradients(model_b, x[:args.batch_size], y[:args.batch_size])
    g_c = gradients(model_c, x[:args.batch_size], y[:args.batch_size])
    grad_diff = max(float(np.max(np.abs(g_c[k] - g_b[k])) / (np.max(np.abs(g_b[k])) + 1e-30))
                    for k in g_b)
    print("\n(c) unrolled by hand vs (b) dynamic_rnn, same weights: max |prediction difference| "
          "%.2e, max relative gradient difference %.2e" % (pred_diff, grad_diff))
    if not (pred_diff < 1e-5 and grad_diff < 1e-4):
        raise AssertionError("the hand-unrolled model (c) does not match (b): predictions differ by "
                             "%.3g, gradients by %.3g" % (pred_diff, grad_diff))

    results = {"mse_a": float(np.mean((pred_a - y_test) ** 2)),
               "mse_b": float(np.mean((pred_b - y_test) ** 2)),
               "mse_c": float(np.mean((pred_c - y_test) ** 2)),
               "mse_zero": float(np.mean(y_test ** 2)),
               "pred_diff_bc": pred_diff, "grad_diff_bc": grad_diff,
               "loss_a": hist_a.loss, "loss_b": hist_b.loss,
               "test_mse_a": [v for _, v in hist_a.eval["test_mse"]],
               "test_mse_b": [v for _, v in hist_b.eval["test_mse"]],
               "model_a": model_a, "model_b": model_b, "x_test": x_test, "y_test": y_test,
               "pred_a": pred_a, "pred_b": pred_b, "pred_c": pred_c}

    os.makedirs(args.out, exist_ok=True)
    path = plot(os.path.join(args.out, "sine_prediction.png"), y_test,
                {"a": ("(a) 1-unit LSTM, MSE %.2e" % results["mse_a"], pred_a),
                 "b": ("(b) 30+1 MultiRNNCell, MSE %.2e" % results["mse_b"], pred_b),
                 "c": ("(c) (b) unrolled by hand", pred_c)},
                {"(a) 1-unit": hist_a, "(b) 30+1": hist_b})
    results["plots"] = [path] if path else []
    results["seconds"] = time.perf_counter() - t0

    print("\ntest MSE  (a) 1-unit LSTM: %.2e   (b) two-layer 30+1: %.2e   (c) unrolled: %.2e"
          % (results["mse_a"], results["mse_b"], results["mse_c"]))
    print("target: two-layer test MSE < %g -> %s   (%.1f s)%s"
          % (TARGET_MSE, "reached" if results["mse_b"] < TARGET_MSE else "NOT reached",
             results["seconds"], "" if not path else "; plot: %s" % path))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
