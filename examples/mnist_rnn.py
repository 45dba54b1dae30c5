"""MNIST with recurrent networks: each 28x28 image is a sequence of 28 rows of 28 pixels.

The classic TF1 tutorials, on npl (``--model``):

* ``lstm2``   -- ``MultiRNNCell([BasicLSTMCell(30), BasicLSTMCell(10)])``; the 10 outputs of the
  top cell at the last row are the logits (no dense layer), as the tutorial does.
* ``bilstm1`` -- ``bidirectional_dynamic_rnn`` with two ``BasicLSTMCell(10)``; logits = forward
  output + backward output, each taken after its direction has read all 28 rows (the forward
  direction's output at the last row, the backward direction's at row 0).
* ``bilstm2`` -- two bidirectional layers, ``stack_bidirectional_dynamic_rnn`` with
  ``[BasicLSTMCell(H), BasicLSTMCell(10)]`` per direction; logits = the top layer's forward +
  backward outputs as in ``bilstm1``.  The tutorial reports about 95% after 35 epochs; here the
  first layer is wider (``--hidden``, default 64) and Adam's rate higher (0.005), which reaches
  95% in a few epochs (see examples/README.md for the measured run).
* ``lstm128`` -- the popular "RNN on MNIST" tutorial: a dense input layer
  ``x @ W_in + b_in`` (28 -> 128), ``BasicLSTMCell(128)``, and a dense output layer on the final
  state's ``h`` (128 -> 10); Adam(0.001), batch 128, as the tutorial.

Every forward keeps npl traces and the backward is written out: the loss gradient goes into the
outputs (or the final state) that made the logits, then ``trace.backward`` runs BPTT.  Training
uses :func:`npl.train.fit` (shuffled batches, progress bar) with TF1's Adam; the accuracy on the
real 10,000-image test set is measured after every epoch.

Targets (``examples/README.md`` has the measured figures): ``bilstm2`` >= 95% and ``lstm128`` >=
98.5% test accuracy, each within 10 minutes of training on a 2-core CPU (``--time-limit`` stops
training after that many seconds; ``--stop-at-target`` stops at the end of the first epoch that
reaches the model's target).

Run:  python examples/mnist_rnn.py --model lstm128 --epochs 10
      python examples/mnist_rnn.py --model bilstm2 --epochs 10 --time-limit 600
      python examples/mnist_rnn.py --quick         (3000 training images, one epoch)
Data: the four MNIST IDX files, found through $NPL_DATA_DIR (or downloaded; see npl.data).
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
from npl.cells import LSTMStateTuple
from npl.layers import Dense

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:             # examples/_cli.py, also when this file is loaded by path
    sys.path.insert(0, _HERE)
import _cli  # noqa: E402  (the scripts' argument helpers)

ROWS = COLS = 28
CLASSES = 10
# per model: default hidden size (None: fixed by the tutorial), Adam learning rate, target accuracy
MODELS = {
    "lstm2": dict(hidden=None, learning_rate=0.01, target=None),
    "bilstm1": dict(hidden=None, learning_rate=0.01, target=None),
    "bilstm2": dict(hidden=64, learning_rate=0.005, target=0.95),
    "lstm128": dict(hidden=128, learning_rate=0.001, target=0.985),
}


class Model:
    """What :func:`npl.train.fit` needs: ``forward(x) -> (logits, trace)`` with
    ``trace.backward(d_logits)``, and ``params`` / ``grads`` / ``zero_grad()``.

    ``parts`` maps a TF-style scope name to a cell or layer; the parameter names are
    ``<scope>/<name inside the part>`` (e.g. ``rnn/cell_0/kernel``, ``dense_out/bias``).
    """

    parts = {}

    @property
    def params(self):
        return {"%s/%s" % (scope, k): v for scope, part in self.parts.items()
                for k, v in part.params.items()}

    @property
    def grads(self):
        return {"%s/%s" % (scope, k): v for scope, part in self.parts.items()
                for k, v in part.grads.items()}

    def zero_grad(self):
        for part in self.parts.values():
            part.zero_grad()


class LSTM2(Model):
    """Two stacked LSTMs (30, then 10 units); the top output at the last row is the logits."""

    def __init__(self, hidden=30, seed=0):
        self.cell = npl.rnn.MultiRNNCell([npl.rnn.BasicLSTMCell(hidden, seed=seed),
                                          npl.rnn.BasicLSTMCell(CLASSES, seed=seed + 1)])
        self.parts = {"rnn": self.cell}

    def forward(self, x):
        outputs, _, trace = npl.nn.dynamic_rnn(self.cell, x, dtype=x.dtype, return_trace=True)
        logits = outputs[:, -1, :]                                   # [B, 28, 10] -> [B, 10]

        def backward(d_logits):
            d_outputs = np.zeros_like(outputs)
            d_outputs[:, -1, :] = d_logits
            trace.backward(d_outputs, None)

        return logits, types.SimpleNamespace(backward=backward)


class BiLSTM1(Model):
    """One bidirectional layer of two 10-unit LSTMs; logits = forward + backward final outputs."""

    def __init__(self, hidden=CLASSES, seed=0):
        self.cell_fw = npl.rnn.BasicLSTMCell(hidden, seed=seed)
        self.cell_bw = npl.rnn.BasicLSTMCell(hidden, seed=seed + 1)
        self.parts = {"bidirectional_rnn/fw": self.cell_fw, "bidirectional_rnn/bw": self.cell_bw}

    def forward(self, x):
        (out_fw, out_bw), _, trace = npl.nn.bidirectional_dynamic_rnn(
            self.cell_fw, self.cell_bw, x, dtype=x.dtype, return_trace=True)
        # out_bw is in input order: the backward cell has read all rows when it outputs row 0
        logits = out_fw[:, -1, :] + out_bw[:, 0, :]                  # [B, 10]

        def backward(d_logits):
            d_fw, d_bw = np.zeros_like(out_fw), np.zeros_like(out_bw)
            d_fw[:, -1, :] = d_logits                                # a sum passes the gradient
            d_bw[:, 0, :] = d_logits                                 # to both terms unchanged
            trace.backward((d_fw, d_bw), None)

        return logits, types.SimpleNamespace(backward=backward)


class BiLSTM2(Model):
    """Two bidirectional layers (stack_bidirectional_dynamic_rnn): H units, then 10 per direction;
    logits = the top layer's forward + backward final outputs."""

    def __init__(self, hidden=64, seed=0):
        self.cells_fw = [npl.rnn.BasicLSTMCell(hidden, seed=seed),
                         npl.rnn.BasicLSTMCell(CLASSES, seed=seed + 1)]
        self.cells_bw = [npl.rnn.BasicLSTMCell(hidden, seed=seed + 2),
                         npl.rnn.BasicLSTMCell(CLASSES, seed=seed + 3)]
        self.parts = {}
        for k in range(2):
            self.parts["stack_bidirectional_rnn/cell_%d/bidirectional_rnn/fw" % k] = self.cells_fw[k]
            self.parts["stack_bidirectional_rnn/cell_%d/bidirectional_rnn/bw" % k] = self.cells_bw[k]

    def forward(self, x):
        outputs, _, _, trace = npl.rnn.stack_bidirectional_dynamic_rnn(
            self.cells_fw, self.cells_bw, x, dtype=x.dtype, return_trace=True)   # [B, 28, 10 + 10]
        logits = outputs[:, -1, :CLASSES] + outputs[:, 0, CLASSES:]

        def backward(d_logits):
            d_outputs = np.zeros_like(outputs)
            d_outputs[:, -1, :CLASSES] = d_logits                    # forward half, last row
            d_outputs[:, 0, CLASSES:] = d_logits                     # backward half, row 0
            trace.backward(d_outputs, None)

        return logits, types.SimpleNamespace(backward=backward)


class LSTM128(Model):
    """Dense(28 -> 128) on every row, BasicLSTMCell(128), Dense(128 -> 10) on the final h."""

    def __init__(self, hidden=128, seed=0):
        self.dense_in = Dense(hidden, seed=seed, name="dense_in")
        self.cell = npl.rnn.BasicLSTMCell(hidden, seed=seed + 1)
        self.dense_out = Dense(CLASSES, seed=seed + 2, name="dense_out")
        self.parts = {"dense_in": self.dense_in, "rnn": self.cell, "dense_out": self.dense_out}

    def forward(self, x):
        x_in, trace_in = self.dense_in.forward(x)                    # [B, 28, 28] @ [28, H]
        _, state, trace = npl.nn.dynamic_rnn(self.cell, x_in, dtype=x.dtype, return_trace=True)
        logits, trace_out = self.dense_out.forward(state.h)          # [B, H] @ [H, 10]

        def backward(d_logits):
            d_h = trace_out.backward(d_logits)                       # [B, H]
            d_state = LSTMStateTuple(c=np.zeros_like(state.c), h=d_h)   # the loss sees h only
            d_x_in, _ = trace.backward(None, d_state)                # BPTT from the final state
            trace_in.backward(d_x_in)

        return logits, types.SimpleNamespace(backward=backward)


BUILDERS = {"lstm2": LSTM2, "bilstm1": BiLSTM1, "bilstm2": BiLSTM2, "lstm128": LSTM128}


def build_model(name, hidden=None, seed=0):
    if name not in BUILDERS:
        raise ValueError("model must be one of %s, got %r" % (sorted(BUILDERS), name))
    if hidden is None:
        hidden = MODELS[name]["hidden"]               # None here too: the builder's own default
    elif isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 1:
        raise ValueError("hidden must be None (the model's default) or a positive integer, got %r"
                         % (hidden,))
    return BUILDERS[name](seed=seed) if hidden is None else BUILDERS[name](hidden, seed=seed)


def predict(model, x, batch_size=1000):
    """Logits [N, 10] in batches, each batch on the backend in force (the GPU under
    NPL_BACKEND=cupy), the logits back on the host."""
    return np.concatenate([npl.to_numpy(model.forward(npl.to_device(x[s:s + batch_size]))[0])
                           for s in range(0, len(x), batch_size)])


def accuracy(model, x, y):
    return float(np.mean(np.argmax(predict(model, x), axis=1) == y))


def plot_samples(path, model, x, y, n=24):
    """A grid of test digits with the predicted label (red when wrong)."""
    fig = train.new_figure((9, 3.4), required=False)
    if fig is None:
        return None
    pred = np.argmax(predict(model, x[:n]), axis=1)
    for k in range(n):
        ax = fig.add_subplot(3, n // 3, k + 1)
        ax.imshow(x[k], cmap="gray_r")
        ax.set_title("%d" % pred[k], color="k" if pred[k] == y[k] else "r", fontsize=9)
        ax.set_axis_off()
    fig.suptitle("test digits, predicted label (red: wrong)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


QUICK = dict(train_size=3000, test_size=1000, epochs=1)      # --quick's defaults


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=sorted(BUILDERS), default="lstm128")
    p.add_argument("--epochs", type=_cli.positive_int, default=10)
    p.add_argument("--batch-size", type=_cli.positive_int, default=128)
    p.add_argument("--learning-rate", "--lr", type=_cli.positive_float, default=None,
                   help="Adam's rate (default per model: lstm2/bilstm1 0.01, bilstm2 0.005, lstm128 0.001)")
    p.add_argument("--hidden", type=_cli.positive_int, default=None,
                   help="units of the first recurrent layer (default per model: bilstm2 64, "
                        "lstm128 128, lstm2 30, bilstm1 10)")
    p.add_argument("--time-limit", type=_cli.positive_float, default=None,
                   help="stop training after this many seconds (within the epoch it falls in; the "
                        "model is evaluated where it stopped)")
    p.add_argument("--stop-at-target", action="store_true",
                   help="stop after the first epoch whose test accuracy reaches the model's target")
    return _cli.add_mnist_options(p, QUICK, 'folder for the PNG plots')


def parse_args(argv):
    p = build_parser()
    args = _cli.parse_mnist(p, argv, QUICK)
    if args.learning_rate is None:
        args.learning_rate = MODELS[args.model]["learning_rate"]
    return args


def epochs_text(steps, steps_per_epoch):
    """What was trained, truthfully: ``"2 epochs (938 steps)"``, or after a stop within an epoch
    ``"2 epochs + 13 of 469 steps (2.03 epochs)"`` -- only completed epochs count as epochs."""
    done, extra = divmod(steps, steps_per_epoch)
    text = "%d epoch%s" % (done, "" if done == 1 else "s")
    if extra:
        return text + " + %d of %d steps (%.2f epochs)" % (
            extra, steps_per_epoch, steps / steps_per_epoch)
    return text + " (%d steps)" % steps


def main(argv=None):
    """Train the chosen model and report the test accuracy; returns a dict of results."""
    args = parse_args(argv)
    npl.set_random_seed(args.seed)
    x, y = npl.data.load_mnist(args.data_dir, kind="train")            # [60000, 28, 28] float32
    x_test, y_test = npl.data.load_mnist(args.data_dir, kind="test")   # [10000, 28, 28]
    x, y = x[:args.train_size], y[:args.train_size]
    x_test, y_test = x_test[:args.test_size], y_test[:args.test_size]
    model = build_model(args.model, args.hidden, args.seed)
    target = MODELS[args.model]["target"]
    print("MNIST rows as sequences: train %s, test %s\nmodel %s: %s\nAdam(%g), batch %d, up to %d "
          "epochs" % (x.shape, x_test.shape, args.model, type(model).__doc__.split("\n")[0],
                      args.learning_rate, args.batch_size, args.epochs), flush=True)

    t0 = time.perf_counter()
    reached = {}                     # index of the evaluation that first reached the target, minutes
    evals = []                       # test accuracy after each epoch (and where training stopped)

    def evaluate(m):
        acc = accuracy(m, x_test, y_test)
        evals.append(acc)
        if target is not None and acc >= target and not reached:
            reached.update(index=len(evals) - 1, minutes=(time.perf_counter() - t0) / 60)
        return {"test_accuracy": acc}

    def stop(info):
        if args.time_limit is not None and time.perf_counter() - t0 > args.time_limit:
            print("\ntime limit of %s s reached at step %d"
                  % (_cli.format_number(args.time_limit), info["step"]))
            return True
        return args.stop_at_target and bool(reached)

    steps_per_epoch = -(-len(x) // args.batch_size)   # evaluating on the epoch's last step lets
    history = train.fit(model, "sparse_softmax_cross_entropy",  # the stop callback see the result
                        train.AdamOptimizer(args.learning_rate), x, y, batch_size=args.batch_size,
                        epochs=args.epochs, seed=args.seed, eval_fn=evaluate,
                        eval_every=steps_per_epoch, callbacks=[stop], progress=not args.no_progress)
    train_seconds = history.seconds
    final = evals[-1]
    steps = len(history.loss)
    completed = steps // steps_per_epoch          # a stop within an epoch leaves it incomplete

    def epoch_of(index):
        """The epochs trained when evaluation ``index`` ran: an int at an epoch's end, the
        fraction (e.g. 2.03) for the evaluation where training stopped within an epoch."""
        return index + 1 if index < completed else steps / steps_per_epoch

    print("\nparameters: %s" % ", ".join("%s %s" % (k, tuple(v.shape)) for k, v in model.params.items()))
    results = {"model": args.model, "test_accuracy": final, "test_accuracies": list(evals),
               "epochs": completed, "steps": steps, "steps_per_epoch": steps_per_epoch,
               "epochs_trained": steps / steps_per_epoch, "loss": history.loss,
               "train_minutes": train_seconds / 60, "target": target,
               "target_epoch": epoch_of(reached["index"]) if reached else None,
               "target_minutes": reached.get("minutes"),
               "learning_rate": args.learning_rate, "test_size": len(x_test)}

    os.makedirs(args.out, exist_ok=True)
    plots = []
    if _cli.have_matplotlib():
        plots.append(train.plot_history(history, os.path.join(args.out, "mnist_%s_history.png" % args.model),
                                        title="MNIST %s: training loss and test accuracy" % args.model))
        plots.append(plot_samples(os.path.join(args.out, "mnist_%s_samples.png" % args.model), model,
                                  x_test, y_test))
    else:
        print(_cli.NO_MATPLOTLIB)
    results["plots"] = plots

    print("\n%s: test accuracy %.2f%% on %d images after %s, %.1f min of training"
          % (args.model, 100 * final, len(x_test), epochs_text(steps, steps_per_epoch),
             results["train_minutes"]))
    if target is not None:
        if reached:
            e = results["target_epoch"]
            print("target %.1f%% reached %s (%.1f min)"
                  % (100 * target, "after epoch %d" % e if isinstance(e, int) else
                     "after %.2f epochs" % e, reached["minutes"]))
        else:
            print("target %.1f%% NOT reached" % (100 * target))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
