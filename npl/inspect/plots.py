"""PNG figures of a trace and of gradient flow.  matplotlib is imported inside each function (the
``[plot]`` extra); figures are built with the object-oriented API (no pyplot, no global backend
change), written to ``path`` and closed.  Every function returns the path it wrote.
"""
import os

import numpy as np

from .core import LayerInspector, TraceInspector, _check_index

__all__ = ["plot_gradient_flow", "plot_gate_saturation", "plot_gate_histogram",
           "plot_state_trajectories", "plot_step_gradients", "plot_loss_curve"]


def _figure(nrows, ncols, width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("npl.inspect plots need matplotlib: pip install npl-rnn[plot] (%s)" % e) from None
    fig = Figure(figsize=(width, height), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError("path must be a file path (str or os.PathLike), got %s" % type(path).__name__)
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _layer(obj, layer):
    """A LayerInspector from a LayerInspector, a TraceInspector or a trace."""
    if isinstance(obj, LayerInspector):
        return obj
    if not isinstance(obj, TraceInspector):
        obj = TraceInspector(obj)
    return obj.layer(layer)


def plot_gradient_flow(flows, path, titles=None):
    """||dL/dh_t|| against the lag T - t (log scale), one line per cell, and the running gate
    products below.  ``flows``: a dict label -> :class:`~npl.inspect.GradientFlow`, or a list of
    such dicts (one column of panels each, e.g. default vs large weights) with ``titles``."""
    panels = [flows] if isinstance(flows, dict) else list(flows)
    if not panels or not all(isinstance(p, dict) and p for p in panels):
        raise TypeError("flows must be a non-empty dict label -> GradientFlow or a list of them")
    if titles is not None and len(titles) != len(panels):
        raise ValueError("titles must have one entry per panel (%d), got %d" % (len(panels), len(titles)))
    fig, axes = _figure(2, len(panels), 6 * len(panels), 7)
    for k, panel in enumerate(panels):
        top, bottom = axes[0][k], axes[1][k]
        for n, (label, fl) in enumerate(panel.items()):
            lag = np.arange(fl.steps - 1, -1, -1)                      # T - t for t = 1..T
            color = "C%d" % (n % 10)                                   # same colour in both rows
            top.semilogy(lag, np.maximum(fl.dh_norm, 1e-300), color=color,
                         label="%s (ratio %.2g)" % (label, fl.ratio))
            if fl.gate_product is not None:
                bottom.semilogy(lag, np.maximum(fl.gate_product, 1e-300), color=color,
                                label="%s: mean prod of %s" % (label, fl.gate_name))
        top.set_xlabel("lag T - t (steps back from the loss)")
        top.set_ylabel("||dL/dh_t||")
        top.set_title(titles[k] if titles else "gradient flow, loss on the last output")
        top.legend(fontsize=8)
        top.grid(True, alpha=0.3)
        bottom.set_xlabel("lag T - t")
        bottom.set_ylabel("running gate product (mean)")
        bottom.set_title("forget (LSTM) / update (GRU) gate product along the path")
        if bottom.lines:
            bottom.legend(fontsize=8)
        bottom.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_gate_saturation(obj, path, threshold=0.1, layer=0):
    """Heatmaps (unit x time) of the fraction of valid batch rows in which each gate is saturated
    (see :func:`npl.inspect.saturated`), one panel per gate."""
    L = _layer(obj, layer)
    sat = L.saturation(threshold)
    valid = L.valid                                                    # [T, B]
    n = np.maximum(valid.sum(axis=1), 1)[:, None]                      # [T, 1]
    fig, axes = _figure(1, len(L.gate_names), 4 * len(L.gate_names), 3.6)
    for ax, g in zip(axes[0], L.gate_names):
        frac = (sat[g] & valid[:, :, None]).sum(axis=1) / n            # [T, H]
        im = ax.imshow(frac.T, aspect="auto", origin="lower", vmin=0, vmax=1, cmap="magma",
                       interpolation="nearest", extent=(0.5, L.steps + 0.5, -0.5, L.num_units - 0.5))
        ax.set_title("%s (%s): saturated fraction" % (g, L.gate_activations[g].name), fontsize=9)
        ax.set_xlabel("time step t")
        ax.set_ylabel("unit")
        fig.colorbar(im, ax=ax)
    fig.suptitle("%s: gate saturation (threshold %.2g)" % (L.label, threshold), fontsize=10)
    return _save(fig, path)


def plot_gate_histogram(obj, path, bins=40, layer=0):
    """Histogram of each gate's values over all valid steps, rows and units."""
    L = _layer(obj, layer)
    gates, valid = L.gates(), L.valid
    fig, axes = _figure(1, len(L.gate_names), 3.5 * len(L.gate_names), 3.2)
    for ax, g in zip(axes[0], L.gate_names):
        vals = gates[g][valid]                                         # [n_valid, H]
        ax.hist(vals.ravel(), bins=bins, color="tab:blue", alpha=0.8)
        ax.set_title("%s (%s)" % (g, L.gate_activations[g].name), fontsize=9)
        ax.set_xlabel("value")
    axes[0][0].set_ylabel("count")
    fig.suptitle("%s: gate values" % L.label, fontsize=10)
    return _save(fig, path)


def plot_state_trajectories(obj, path, units=None, batch_index=0, layer=0):
    """c_t (LSTM) and h_t over time for the chosen ``units`` (default the first four) of one batch
    row; steps past the row's length are drawn dashed (the state is carried)."""
    L = _layer(obj, layer)
    b = _check_index(batch_index, L.batch_size, "batch_index", "%s (batch of %d)" % (L.label, L.batch_size))
    P = L.output_size
    units = list(range(min(4, P))) if units is None else list(units)
    for u in units:
        _check_index(u, min(L.num_units, P), "units entry", "%s (%d units)" % (L.label, min(L.num_units, P)))
    series = [("h", np.concatenate([L.h0[None], L.h], axis=0))]
    if L.has_cell_state:
        series.insert(0, ("c", np.concatenate([L.c0[None], L.c], axis=0)))
    fig, axes = _figure(len(series), 1, 7, 2.8 * len(series))
    t = np.arange(L.steps + 1)
    last = int(L.valid[:, b].sum())                                    # steps within the length
    for ax, (name, s) in zip(axes[:, 0], series):
        for u in units:
            line, = ax.plot(t[:last + 1], s[:last + 1, b, u], marker=".", label="unit %d" % u)
            if last < L.steps:
                ax.plot(t[last:], s[last:, b, u], ls="--", color=line.get_color())
        ax.set_ylabel("%s_t" % name)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, ncol=min(4, len(units)))
    axes[-1][0].set_xlabel("t (0 = initial state)")
    axes[0][0].set_title("%s: state trajectories, batch row %d" % (L.label, b), fontsize=10)
    return _save(fig, path)


def plot_step_gradients(obj, path, layer=0):
    """||dL/dh_t|| and ||dL/dc_t|| (norms over batch and units) and the norm of each step's
    weight-gradient contribution, per step (needs a backpropagated trace with state grads)."""
    L = _layer(obj, layer)
    dh = np.sqrt((L.d_h ** 2).sum(axis=(1, 2)))
    fig, axes = _figure(1, 2, 11, 3.6)
    t = np.arange(1, L.steps + 1)
    ax = axes[0][0]
    ax.semilogy(t, np.maximum(dh, 1e-300), marker="o", label="||dL/dh_t||")
    if L.has_cell_state:
        dc = np.sqrt((L.d_c ** 2).sum(axis=(1, 2)))
        ax.semilogy(t, np.maximum(dc, 1e-300), marker="s", label="||dL/dc_t||")
    ax.set_xlabel("step t")
    ax.set_title("%s: state gradients" % L.label, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax = axes[0][1]
    for name, v in L.weight_grad_contributions().items():
        norm = np.sqrt((v.reshape(L.steps, -1) ** 2).sum(axis=1))
        ax.semilogy(t, np.maximum(norm, 1e-300), marker=".", label=name)
    ax.set_xlabel("step t")
    ax.set_title("per-step contribution to each weight gradient", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_loss_curve(losses, path, title="training loss"):
    """A training curve: ``losses`` is a sequence of floats, one per step."""
    v = np.asarray(losses, np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("losses must be a non-empty 1-d sequence, got shape %s" % (v.shape,))
    fig, axes = _figure(1, 1, 6, 3.5)
    ax = axes[0][0]
    ax.plot(np.arange(1, v.size + 1), v, lw=1)
    ax.set_xlabel("SGD step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)
