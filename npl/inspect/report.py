"""Train a tiny model with plain SGD and write an inspection report (PNGs + Markdown).

The task is "remember the first input": each sequence starts with a bit ``s = +-1`` followed by
``seq_len - 1`` steps of Gaussian noise, and the model must output ``s`` at the last step.  The
only loss is on the last output, so every bit of gradient that reaches step 1 has travelled back
through all the steps: exactly what the report's figures show.

Model: an npl cell and a logistic read-out on its last output,

    z = y_T @ w + b                 [B, P] @ [P] -> [B]
    L = mean_b softplus(z) - t z     (binary cross-entropy, t = (s + 1) / 2)

and the update is plain SGD, ``p -= lr * g`` on ``cell.params`` / ``cell.grads`` and the read-out,
with the global gradient norm clipped to ``clip``.
"""
import os

import numpy as np

from .._checks import real_number
from ..backend import to_numpy
from .core import TraceInspector, format_table
from .flow import _make_cell, compare_gradient_flow, gradient_flow
from . import plots

__all__ = ["TinyModel", "memory_task", "train_tiny_model", "write_report"]


def memory_task(batch, seq_len, rng, noise=1.0):
    """x [batch, seq_len, 1] (float64): x[:, 0] = s = +-1, later steps N(0, noise^2).

    Returns (x, t) with the target t = (s + 1) / 2 in {0, 1}, shape [batch]."""
    s = rng.choice([-1.0, 1.0], size=batch)
    x = rng.standard_normal((batch, seq_len, 1)) * noise
    x[:, 0, 0] = s
    return x, (s + 1) / 2


def _softplus(z):
    return np.logaddexp(0.0, z)


class TinyModel:
    """A cell plus a logistic read-out on its last output.  ``losses``: the training curve."""

    def __init__(self, cell, w, b, seq_len, noise, seed):
        self.cell, self.w, self.b = cell, w, b
        self.seq_len, self.noise, self.seed = seq_len, noise, seed
        self.losses = []

    def forward_backward(self, x, t, record_state_grads=False):
        """Loss, accuracy, the read-out gradients, and the (backpropagated) trace of one batch.

        The cell's gradients are zeroed first, so afterwards ``cell.grads`` holds this batch's.
        """
        from ..rnn_ops import dynamic_rnn
        cell = self.cell
        cell.zero_grad()
        y, _, tr = dynamic_rnn(cell, x, return_trace=True)
        yT = to_numpy(y)[:, -1]                                   # [B, P]
        z = yT @ self.w + self.b                                  # [B, P] @ [P] -> [B]
        loss = float(np.mean(_softplus(z) - t * z))
        p = 0.5 * np.tanh(0.5 * z) + 0.5                          # sigmoid(z)
        dz = (p - t) / len(t)                                     # dL/dz  [B]
        dw = yT.T @ dz                                            # [P, B] @ [B] -> [P]
        db = float(dz.sum())
        d_y = np.zeros_like(to_numpy(y))
        d_y[:, -1] = dz[:, None] * self.w[None, :]                # dL/dy_T = dz w^T  [B, P]
        if record_state_grads:
            tr.record_state_grads()
        tr.backward(d_y, None)
        acc = float(np.mean((z > 0) == (t > 0.5)))
        return loss, acc, dw, db, tr

    def sgd_step(self, x, t, lr, clip):
        loss, acc, dw, db, _ = self.forward_backward(x, t)
        grads = list(self.cell.grads.values()) + [dw, np.asarray(db)]
        norm = float(np.sqrt(sum(float((g ** 2).sum()) for g in grads)))
        scale = lr * (min(1.0, clip / norm) if clip and norm > 0 else 1.0)
        params = self.cell.params
        for name, g in self.cell.grads.items():
            params[name] -= scale * g                             # in place: the live arrays
        self.w -= scale * dw
        self.b -= scale * db
        self.losses.append(loss)
        return loss, acc


def _positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError("%s must be a positive integer, got %r" % (name, v))


def check_config(units=8, seq_len=8, batch=32, steps=300, lr=1.0, clip=5.0, noise=1.0, flow_steps=40):
    """Raise ValueError / TypeError naming the first bad setting of :func:`write_report`."""
    for name, v in (("units", units), ("seq_len", seq_len), ("batch", batch), ("steps", steps),
                    ("flow_steps", flow_steps)):
        _positive_int(v, name)
    real_number(lr, "lr", allow_zero=False)
    if clip is not None:
        real_number(clip, "clip", allow_zero=False, hint=" (None turns clipping off)")
    real_number(noise, "noise", allow_zero=True)


def train_tiny_model(cell="lstm", units=8, seq_len=8, batch=32, steps=300, lr=1.0, clip=5.0,
                     noise=1.0, seed=0):
    """Train a cell ("lstm", "gru" or "rnn") on :func:`memory_task` with plain SGD.

    Returns a :class:`TinyModel` whose ``losses`` hold the training curve.
    """
    check_config(units=units, seq_len=seq_len, batch=batch, steps=steps, lr=lr, clip=clip, noise=noise)
    rng = np.random.default_rng(seed)
    c = _make_cell(cell, units, 1, seed)
    model = TinyModel(c, rng.standard_normal(units) / np.sqrt(units), 0.0, seq_len, noise, seed)
    for _ in range(steps):
        x, t = memory_task(batch, seq_len, rng, noise)
        model.sgd_step(x, t, lr, clip)
    return model


def _mean(v):
    return float(np.mean(v)) if len(v) else float("nan")


def write_report(out, cell="lstm", units=8, seq_len=8, batch=32, steps=300, lr=1.0, clip=5.0,
                 noise=1.0, seed=0, flow_steps=40):
    """Train a tiny model (:func:`train_tiny_model`), inspect one fresh batch, write a report.

    Files in ``out``: ``loss_curve.png``, ``gate_saturation.png``, ``gate_histogram.png``,
    ``state_trajectories.png``, ``step_gradients.png``, ``gradient_flow.png`` (the trained cell, and
    fresh BasicRNN / LSTM / GRU cells at default and 4x kernels) and ``summary.md`` (the numbers).
    Returns a dict: ``paths`` (name -> path), ``initial_loss``, ``final_loss`` (means of the first and
    last 10% of steps), ``eval_loss``, ``eval_accuracy``, ``summary`` (per-step rows),
    ``flow_trained``, ``flows``, ``flows_large`` (label -> GradientFlow), ``model``, ``inspector``.
    """
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError("out must be a folder path, got %s" % type(out).__name__)
    out = os.fspath(out)
    check_config(units, seq_len, batch, steps, lr, clip, noise, flow_steps)
    model = train_tiny_model(cell, units, seq_len, batch, steps, lr, clip, noise, seed)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    x, t = memory_task(batch, seq_len, rng, noise)
    eval_loss, eval_acc, _, _, trace = model.forward_backward(x, t, record_state_grads=True)
    insp = TraceInspector(trace)
    layer = insp.layer(0)
    rows = layer.summary()
    x_flow, _ = memory_task(batch, flow_steps, rng, noise)
    trained = gradient_flow(model.cell, x_flow, label="trained %s" % type(model.cell).__name__)
    fresh = compare_gradient_flow(steps=flow_steps, seed=seed)           # 16 units, 4 inputs
    large = compare_gradient_flow(steps=flow_steps, seed=seed, weight_scale=4.0)
    model.cell.zero_grad()
    def png(name):
        return os.path.join(out, name + ".png")
    paths = {
        "loss_curve": plots.plot_loss_curve(model.losses, png("loss_curve"),
                                            "training loss (%s, plain SGD, lr %g)" % (cell, lr)),
        "gate_saturation": plots.plot_gate_saturation(layer, png("gate_saturation")),
        "gate_histogram": plots.plot_gate_histogram(layer, png("gate_histogram")),
        "state_trajectories": plots.plot_state_trajectories(layer, png("state_trajectories")),
        "step_gradients": plots.plot_step_gradients(layer, png("step_gradients")),
        "gradient_flow": plots.plot_gradient_flow(
            [{trained.label: trained}, fresh, large], png("gradient_flow"),
            titles=["the trained cell on the task, T=%d" % flow_steps,
                    "fresh cells (16 units), default init", "fresh cells, kernels x4"]),
    }
    k = max(1, len(model.losses) // 10)
    res = {"paths": paths, "initial_loss": _mean(model.losses[:k]),
           "final_loss": _mean(model.losses[-k:]),
           "eval_loss": eval_loss, "eval_accuracy": eval_acc, "summary": rows,
           "flow_trained": trained, "flows": fresh, "flows_large": large,
           "model": model, "inspector": insp}
    paths["summary"] = os.path.join(out, "summary.md")
    with open(paths["summary"], "w") as f:
        f.write(_markdown(res, dict(cell=cell, units=units, seq_len=seq_len, batch=batch, steps=steps,
                                    lr=lr, clip=clip, noise=noise, seed=seed)))
    return res


def _markdown(res, cfg):
    model, layer = res["model"], res["inspector"].layer(0)
    lines = ["# npl inspection report", "",
             "Task: remember the sign of the first input over %(seq_len)d steps of N(0, %(noise)g^2) "
             "noise; loss on the last output only (logistic read-out, binary cross-entropy)." % cfg, "",
             "Model: `%s` with %d units, trained with plain SGD (lr %g, %s) for %d "
             "steps of batch %d, seed %d." % (type(model.cell).__name__, cfg["units"], cfg["lr"],
                                              "no clipping" if cfg["clip"] is None else
                                              "global-norm clip %g" % cfg["clip"],
                                              cfg["steps"], cfg["batch"], cfg["seed"]), "",
             "## Numbers", "",
             "| quantity | value |", "|---|---|",
             "| training loss, first 10%% of steps | %.4f |" % res["initial_loss"],
             "| training loss, last 10%% of steps | %.4f |" % res["final_loss"],
             "| loss on a fresh batch | %.4f |" % res["eval_loss"],
             "| accuracy on a fresh batch | %.3f |" % res["eval_accuracy"],
             "| chance loss (log 2) | %.4f |" % np.log(2.0), "",
             "## Per-step view of the fresh batch (%s)" % layer.label, "",
             "Mean gate values and saturated fractions over the batch and units; gradient norms over "
             "the batch and units (dL/dh_t is the total gradient reaching the state after step t).", "",
             "```", format_table([{k: v for k, v in r.items() if k != "layer"} for r in res["summary"]]),
             "```", "",
             "## Gradient flow: ||dL/dh_1|| / ||dL/dh_T|| for a loss on the last output", "",
             "The trained cell on %d steps of the task: %.3g.  Fresh cells (16 units, 4 inputs, "
             "N(0, 1) inputs, %d steps):" % (res["flow_trained"].steps, res["flow_trained"].ratio,
                                             res["flow_trained"].steps), "",
             "| cell | default init | kernels x4 |", "|---|---|---|"]
    for label, fl in res["flows"].items():
        lines.append("| %s | %.3g | %.3g |" % (label, fl.ratio, res["flows_large"][label].ratio))
    lines += ["", "Below 1 the gradient vanished on its way back through time, above 1 it exploded "
              "(examples/vanishing_gradients.py explains why). See docs/bptt.md for the equations.",
              "", "## Figures", ""]
    for name, p in res["paths"].items():
        if p.endswith(".png"):
            lines.append("![%s](%s)" % (name, os.path.basename(p)))
    return "\n".join(lines) + "\n"
