"""Command-line helpers shared by the example scripts (not an example itself).

The scripts import it as ``import _cli`` after putting their own folder on ``sys.path``, so they
work as ``python examples/<name>.py`` from any directory and when a test loads them by path.
Standard library only: the scripts set ``OPENBLAS_NUM_THREADS`` before NumPy is imported.

* ``positive_int``, ``nonnegative_int``, ``positive_float``: argparse ``type=`` functions; a bad
  value is an argparse error naming the flag (``argument --batch-size: must be a positive
  integer, got '0'``), exit status 2.
* ``parse_with_quick(parser, argv, quick)``: ``--quick`` supplies the defaults in ``quick`` for the
  options the user did not give; explicit values win (and are validated like any other).
* ``have_matplotlib()`` / ``NO_MATPLOTLIB``: check once, say once that no plot is written.
"""
import argparse
import math

NO_MATPLOTLIB = "matplotlib is not installed: no plot written (pip install matplotlib)"


def _int(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError("must be an integer, got %r" % (text,)) from None


def positive_int(text):
    """An integer >= 1."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError("must be a positive integer, got %r" % (text,))
    return v


def nonnegative_int(text):
    """An integer >= 0."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError("must be a non-negative integer, got %r" % (text,))
    return v


def positive_float(text):
    """A finite number > 0 (NaN and infinity are refused)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError("must be a number, got %r" % (text,)) from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError("must be a finite number > 0, got %r" % (text,))
    return v


def parse_with_quick(parser, argv, quick):
    """Parse ``argv``; when ``--quick`` is given, parse again with ``quick`` (dest -> value) as the
    defaults, so that only the options the user left out take the quick values."""
    args = parser.parse_args(argv)
    if args.quick:
        unknown = sorted(set(quick) - set(vars(args)))
        if unknown:                                   # a typo in a script's quick table
            raise KeyError("quick defaults for options the parser does not have: %s" % unknown)
        parser.set_defaults(**quick)
        args = parser.parse_args(argv)
    return args


def quick_help(what, quick):
    """``--quick``'s help text: ``what`` it is, then the defaults it sets, as flags."""
    return ("%s: %s (options given explicitly win)"
            % (what, ", ".join("--%s %s" % (k.replace("_", "-"), v) for k, v in quick.items())))


MNIST_TRAIN, MNIST_TEST = 60000, 10000                         # images in the MNIST files


def add_mnist_options(p, quick, out_help):
    """The options the MNIST scripts share: sizes, seed, ``--quick``, output and data folders."""
    p.add_argument("--train-size", type=positive_int, default=None,
                   help="use the first N training images (default: all %d)" % MNIST_TRAIN)
    p.add_argument("--test-size", type=positive_int, default=None,
                   help="use the first N test images (default: all %d)" % MNIST_TEST)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--quick", action="store_true", help=quick_help("a short run", quick))
    p.add_argument("--out", default="out", help=out_help)
    p.add_argument("--data-dir", default=None,
                   help="folder with the MNIST files (else $NPL_DATA_DIR / cache)")
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_mnist(parser, argv, quick):
    """:func:`parse_with_quick`, then sizes above the MNIST files' are argparse errors."""
    args = parse_with_quick(parser, argv, quick)
    for flag, n, most in (("--train-size", args.train_size, MNIST_TRAIN),
                          ("--test-size", args.test_size, MNIST_TEST)):
        if n is not None and n > most:
            parser.error("argument %s: MNIST has %d images there, got %d" % (flag, most, n))
    return args


def format_number(v):
    """A number as the user would write it: 1.5 -> '1.5', 600.0 -> '600'."""
    return format(v, ".15g")


def have_matplotlib():
    """Whether matplotlib's Agg canvas (what npl.train.new_figure draws on) can be imported."""
    try:
        from matplotlib.figure import Figure  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        return False
    return True
