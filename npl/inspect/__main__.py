"""``python -m npl.inspect report --out DIR [options]``: train a tiny model and write a report.

The report folder holds PNG figures (loss curve, gate saturation heatmaps, gate histograms, c/h
trajectories, per-step gradients, gradient flow of BasicRNN / LSTM / GRU cells) and summary.md
with the numbers.  Needs matplotlib (``pip install npl-rnn[plot]``).
"""
import argparse
import sys

from .flow import CELL_KINDS


def build_parser():
    p = argparse.ArgumentParser(prog="python -m npl.inspect",
                                description="Look inside backpropagation through time.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("report", help="train a tiny model with plain SGD and write PNGs + summary.md",
                       description="Train a tiny model on 'remember the first input' with plain SGD, "
                                   "inspect a fresh batch and write a report folder.")
    r.add_argument("--out", required=True, help="folder to write (created if missing)")
    r.add_argument("--cell", default="lstm", choices=sorted(CELL_KINDS), help="cell type (default lstm)")
    r.add_argument("--units", type=int, default=8, help="hidden units (default 8)")
    r.add_argument("--seq-len", type=int, default=8, help="sequence length of the task (default 8)")
    r.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    r.add_argument("--steps", type=int, default=300, help="SGD steps (default 300)")
    r.add_argument("--lr", type=float, default=1.0,
                   help="learning rate (default 1.0; try 0.3 with --cell rnn)")
    r.add_argument("--clip", type=_clip, default=5.0,
                   help="global gradient-norm clip, a positive number or 'none' (default 5)")
    r.add_argument("--noise", type=float, default=1.0, help="std of the distractor inputs (default 1)")
    r.add_argument("--flow-steps", type=int, default=40, help="length of the gradient-flow runs (default 40)")
    r.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p


def _clip(text):
    if text.strip().lower() == "none":
        return None
    return float(text)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    from .report import write_report, check_config
    try:
        check_config(units=args.units, seq_len=args.seq_len, batch=args.batch, steps=args.steps,
                     lr=args.lr, clip=args.clip, noise=args.noise, flow_steps=args.flow_steps)
    except (TypeError, ValueError) as e:         # a bad option value: an argparse error (exit 2)
        parser.error("--" + str(e).replace("_", "-"))
    res = write_report(args.out, cell=args.cell, units=args.units, seq_len=args.seq_len,
                       batch=args.batch, steps=args.steps, lr=args.lr, clip=args.clip,
                       noise=args.noise, seed=args.seed, flow_steps=args.flow_steps)
    print("training loss %.4f -> %.4f, fresh-batch accuracy %.3f"
          % (res["initial_loss"], res["final_loss"], res["eval_accuracy"]))
    for name, path in res["paths"].items():
        print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
