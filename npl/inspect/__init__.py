"""``npl.inspect``: look inside backpropagation through time.

* :func:`inspect_trace` opens a trace (from ``dynamic_rnn(..., return_trace=True)`` and friends):
  per layer and time step the gate activations in TensorFlow's names and order, c and h, and after
  ``trace.record_state_grads(); trace.backward(...)`` the per-step gradients dL/dh_t, dL/dc_t,
  dL/d(gates) and each step's contribution to every weight gradient.  Arrays are NumPy, axes
  ``AXES = ("time", "batch", "unit")``; ``summary()`` gives tidy per-step rows (mean gate values,
  saturation fractions, gradient norms) and ``print_summary()`` a table.
* :func:`gradient_flow` / :func:`compare_gradient_flow`: ||dL/dh_t|| for t = T..1 under a loss on
  the last output, and the running product of forget (LSTM) or update (GRU) gates.
* Plots to PNG (matplotlib, the ``[plot]`` extra, imported only when a plot is made):
  :func:`plot_gradient_flow`, :func:`plot_gate_saturation`, :func:`plot_gate_histogram`,
  :func:`plot_state_trajectories`, :func:`plot_step_gradients`.
* :func:`write_report` (also ``python -m npl.inspect report --out DIR``) trains a tiny model with
  plain SGD and writes a folder of PNGs and a Markdown summary.

The derivation behind all of this is docs/bptt.md.
"""
from .core import (AXES, TraceInspector, LayerInspector, inspect_trace, format_table,  # noqa: F401
                   saturated)
from .flow import GradientFlow, gradient_flow, compare_gradient_flow  # noqa: F401
from .plots import (plot_gradient_flow, plot_gate_saturation, plot_gate_histogram,  # noqa: F401
                    plot_state_trajectories, plot_step_gradients, plot_loss_curve)
from .report import TinyModel, train_tiny_model, write_report  # noqa: F401

__all__ = ["AXES", "TraceInspector", "LayerInspector", "inspect_trace", "format_table", "saturated",
           "GradientFlow", "gradient_flow", "compare_gradient_flow", "plot_gradient_flow",
           "plot_gate_saturation", "plot_gate_histogram", "plot_state_trajectories",
           "plot_step_gradients", "plot_loss_curve", "TinyModel", "train_tiny_model", "write_report"]
