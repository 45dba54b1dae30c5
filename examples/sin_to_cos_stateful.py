"""Read sin(t), output cos(t): a stateful LSTM regression (the TF1 "LSTM regression" tutorial).

The model reads ``sin(t)`` one value per step and must output ``cos(t)`` at every step.  A single
value of sin does not say whether the curve goes up or down, so the network has to remember the
recent past -- across window edges too, which is why the state is carried from one batch to the
next (stateful training).

Data: ``B`` parallel streams (50, as in the tutorial) of one long series, ``t = m * dt`` with
``dt = 1 / (10 pi)`` (the tutorial's spacing); stream ``b`` covers a contiguous stretch of time.
Training cuts the streams into windows of 20 steps, in order, and starts each window from the
final state of the previous one (truncated BPTT: the forward carries the state, the backward stops
at the window edge).  ``npl.train.fit(..., stateful=True, num_steps=20)`` does that bookkeeping.

Model (as the tutorial): a dense input layer (1 -> 10), ``BasicLSTMCell(10)``, a dense output
layer (10 -> 1) on every step::

    x_in, tr_in = dense_in.forward(x)                                    # [B, 20, 1] @ [1, 10]
    outputs, final_state, tr = dynamic_rnn(cell, x_in, initial_state=state, return_trace=True)
    y_hat, tr_out = dense_out.forward(outputs)                           # [B, 20, 10] @ [10, 1]
    backward:  d_outputs = tr_out.backward(d_y_hat)
               d_x_in, d_state0 = tr.backward(d_outputs, None)          # d_state0 dropped: truncation
               tr_in.backward(d_x_in)

Adam(0.006) (the tutorial's rate), mean squared error.  Every ``--plot-every`` steps a frame of the
current predictions on the test stretch is saved (``OUT/sin_to_cos_frames/step_00100.png``, ...):
the tutorial's live plot, as files.  The test stretch continues the series after the training
data.  Its first ``--warmup`` windows only warm up the state (from zeros, the model needs a few
windows to find the phase, as at the start of every epoch); the test MSE is measured on the
windows after them, with the state carried across windows -- and also with every one of those
windows started from zeros, to show what the carried state is worth.

Run:  python examples/sin_to_cos_stateful.py            (well under a minute)
      python examples/sin_to_cos_stateful.py --quick
"""
import argparse
import os
import sys
import time
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

NUM_STEPS = 20                 # window length (truncated BPTT)
DT = 1.0 / (10 * np.pi)        # the tutorial's spacing: x = arange(...) / (10 pi)
CELL_SIZE = 10


class SinToCos:
    """dense_in (1 -> 10) -> BasicLSTMCell(10) -> dense_out (10 -> 1), on every step.

    ``forward(x, initial_state=None) -> (y_hat, trace)``; ``trace.final_state`` is the LSTM's final
    ``LSTMStateTuple`` (feed it to the next window), ``trace.backward(d_y_hat)`` runs the backward.
    """

    def __init__(self, cell_size=CELL_SIZE, seed=0):
        self.dense_in = Dense(cell_size, seed=seed, name="in_hidden")
        self.cell = npl.rnn.BasicLSTMCell(cell_size, forget_bias=1.0, seed=seed + 1)
        self.dense_out = Dense(1, seed=seed + 2, name="out_hidden")
        self.parts = {"in_hidden": self.dense_in, "LSTM_cell": self.cell, "out_hidden": self.dense_out}

    @property
    def params(self):
        return {"%s/%s" % (s, k): v for s, p in self.parts.items() for k, v in p.params.items()}

    @property
    def grads(self):
        return {"%s/%s" % (s, k): v for s, p in self.parts.items() for k, v in p.grads.items()}

    def zero_grad(self):
        for p in self.parts.values():
            p.zero_grad()

    def forward(self, x, initial_state=None):
        x_in, trace_in = self.dense_in.forward(x)                        # [B, T, 1] @ [1, 10]
        outputs, final_state, trace = npl.nn.dynamic_rnn(
            self.cell, x_in, initial_state=initial_state, dtype=x.dtype, return_trace=True)
        y_hat, trace_out = self.dense_out.forward(outputs)               # [B, T, 10] @ [10, 1]

        def backward(d_y_hat):
            d_outputs = trace_out.backward(d_y_hat)
            d_x_in, _ = trace.backward(d_outputs, None)   # the initial state's gradient is dropped:
            trace_in.backward(d_x_in)                      # truncated BPTT stops at the window edge

        return y_hat, types.SimpleNamespace(backward=backward, final_state=final_state)


def make_streams(n_streams, windows_per_stream, n_test_windows):
    """Training streams [B, K*20, 1] (stream b continues in time where stream b-1 ends) and one
    test stream [1, n_test*20, 1] that continues the series after the training data."""
    (x, y), (xt, yt) = npl.data.sin_to_cos(n_streams * windows_per_stream, num_steps=NUM_STEPS, dt=DT,
                                           random_start=False, n_test=n_test_windows)
    L = windows_per_stream * NUM_STEPS
    return (x.reshape(n_streams, L, 1), y.reshape(n_streams, L, 1),
            xt.reshape(1, -1, 1), yt.reshape(1, -1, 1))


def predict_stateful(model, x):
    """Run the model over [B, L, 1] window by window, carrying the state (no traces kept); each
    window on the backend in force (the GPU under NPL_BACKEND=cupy), the predictions on the host."""
    state, out = None, []
    for s in range(0, x.shape[1], NUM_STEPS):
        y_hat, tr = model.forward(npl.to_device(x[:, s:s + NUM_STEPS]), initial_state=state)
        state = tr.final_state
        out.append(npl.to_numpy(y_hat))
    return np.concatenate(out, axis=1)


def _figure():
    return train.new_figure((9, 3.2))      # called only once matplotlib is known to be there


def draw_predictions(ax, x, y, y_hat, warmup_steps, title):
    t = np.arange(x.shape[1]) * DT
    ax.axvspan(0, warmup_steps * DT, color="C7", alpha=0.15, lw=0, label="warm-up (not scored)")
    ax.plot(t, x[0, :, 0], "C7:", lw=1, label="input sin(t)")
    ax.plot(t, y[0, :, 0], "r-", lw=2, alpha=0.6, label="target cos(t)")
    ax.plot(t, y_hat[0, :, 0], "b--", lw=1.5, label="prediction")
    for s in range(NUM_STEPS, x.shape[1], NUM_STEPS):
        ax.axvline(s * DT, color="k", lw=0.3, alpha=0.3)                # window edges
    ax.set_ylim(-1.3, 1.3)
    ax.set_xlabel("t (test stretch; grey lines: window edges, state carried across)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower left", fontsize=8)


QUICK = dict(epochs=1, windows=120, plot_every=40)      # --quick's defaults


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=_cli.positive_int, default=2,
                   help="passes over the streams (state restarts from zeros at each pass)")
    p.add_argument("--batch-size", type=_cli.positive_int, default=50, help="parallel streams")
    p.add_argument("--windows", type=_cli.positive_int, default=500,
                   help="windows of 20 steps per stream (= training steps per epoch)")
    p.add_argument("--learning-rate", "--lr", type=_cli.positive_float, default=0.006)
    p.add_argument("--seed", type=_cli.nonnegative_int, default=0)
    p.add_argument("--plot-every", type=_cli.nonnegative_int, default=100,
                   help="save a live-style frame every N steps (0: no frames)")
    p.add_argument("--test-windows", type=_cli.positive_int, default=20,
                   help="windows in the test stretch, after the warm-up")
    p.add_argument("--warmup", type=_cli.nonnegative_int, default=10,
                   help="windows that warm up the state before the test windows (0: none)")
    p.add_argument("--quick", action="store_true",
                   help=_cli.quick_help("a short run (120 steps)", QUICK))
    p.add_argument("--out", default="out", help="folder for the PNG plots")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_args(argv):
    return _cli.parse_with_quick(build_parser(), argv, QUICK)


def main(argv=None):
    """Train statefully, save frames and the final plot, report test MSE; returns a dict."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    npl.set_random_seed(args.seed)
    x, y, x_test, y_test = make_streams(args.batch_size, args.windows, args.warmup + args.test_windows)
    w = args.warmup * NUM_STEPS                                  # test steps before the measured ones
    print("streams: train %s (%d windows of %d steps each), test %s"
          % (x.shape, args.windows, NUM_STEPS, x_test.shape), flush=True)
    model = SinToCos(seed=args.seed)
    frames_dir = os.path.join(args.out, "sin_to_cos_frames")
    frames = []
    plotting = _cli.have_matplotlib()
    if not plotting:
        print(_cli.NO_MATPLOTLIB)                               # said once, not once per frame
    elif args.plot_every:
        os.makedirs(frames_dir, exist_ok=True)

    def live_plot(info):
        """The tutorial redraws its plot every step; we save a frame every --plot-every steps."""
        if plotting and args.plot_every and info["step"] % args.plot_every == 0:
            fig = _figure()
            y_hat = predict_stateful(model, x_test)
            draw_predictions(fig.add_subplot(1, 1, 1), x_test, y_test, y_hat, w,
                             "step %d: batch loss %.4f, test MSE %.4f"
                             % (info["step"], info["loss"], float(np.mean((y_hat - y_test)[:, w:] ** 2))))
            fig.tight_layout()
            path = os.path.join(frames_dir, "step_%05d.png" % info["step"])
            fig.savefig(path, format="png", dpi=80)
            frames.append(path)
        return False

    history = train.fit(model, "mse", train.AdamOptimizer(args.learning_rate), x, y,
                        batch_size=args.batch_size, epochs=args.epochs, stateful=True,
                        num_steps=NUM_STEPS, callbacks=[live_plot], progress=not args.no_progress)

    y_hat = predict_stateful(model, x_test)
    mse_stateful = float(np.mean((y_hat - y_test)[:, w:] ** 2))
    windows = x_test[:, w:].reshape(-1, NUM_STEPS, 1)           # the same windows, no state carried
    y_hat_reset = npl.to_numpy(model.forward(npl.to_device(windows))[0]).reshape(1, -1, 1)
    mse_reset = float(np.mean((y_hat_reset - y_test[:, w:]) ** 2))
    loss = history.loss
    results = {"test_mse": mse_stateful, "test_mse_no_carry": mse_reset,
               "mse_zero": float(np.mean(y_test[:, w:] ** 2)), "loss": loss, "steps": len(loss),
               "frames": frames}

    plots = []
    if plotting:
        os.makedirs(args.out, exist_ok=True)
        fig = _figure()
        fig.set_size_inches(9, 6.4)
        draw_predictions(fig.add_subplot(2, 1, 1), x_test, y_test, y_hat, w,
                         "after %d steps: test MSE %.2e (state carried), %.2e (state reset per window)"
                         % (len(loss), mse_stateful, mse_reset))
        ax = fig.add_subplot(2, 1, 2)
        ax.semilogy(history.step, loss, lw=0.8)
        ax.set_xlabel("training step (one 20-step window of every stream)")
        ax.set_ylabel("batch MSE")
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        path = os.path.join(args.out, "sin_to_cos.png")
        fig.savefig(path, format="png", dpi=100)
        plots.append(path)
    results["plots"] = plots
    results["seconds"] = time.perf_counter() - t0
    print("\nbatch loss: first %.4f -> last %.5f over %d steps" % (loss[0], loss[-1], len(loss)))
    print("test MSE %.2e with the state carried across windows, after %d warm-up windows (%.2e when "
          "every window starts from zeros; predicting 0 gives %.3f)   %.1f s, %s"
          % (mse_stateful, args.warmup, mse_reset, results["mse_zero"], results["seconds"],
             "%d frames in %s" % (len(frames), frames_dir) if frames else "no frames"))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
