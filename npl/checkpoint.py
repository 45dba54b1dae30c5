"""Checkpoints: parameters and optimizer state in one ``.npz`` file, keyed by TensorFlow's names.

    npl.checkpoint.save("model.npz", model.params, optimizer)
    npl.checkpoint.restore("model.npz", model.params, optimizer)

Keys are TF variable names: the parameters' own names (``rnn/basic_lstm_cell/kernel``, ...), the
optimizer slots as TF1's Saver names them (``<var>/Adam``, ``<var>/Adam_1``, ``beta1_power``,
``beta2_power``; ``<var>/Momentum``; ``<var>/RMSProp``, ``_1``, ``_2``).

* :func:`save` writes a temporary file in the target's directory and moves it into place with
  ``os.replace``, so a crash never leaves a half-written checkpoint under the real name.
* :func:`restore` reads with ``allow_pickle=False`` (loading never runs code), reads and checks
  the whole file first (names, shapes, dtypes; every difference listed in one ValueError) and only
  then copies values into the live arrays.  A corrupt or truncated file raises ValueError and
  changes nothing.
"""
import os
import re
import tempfile
import zipfile

import numpy as np

from .array_ops import IndexedSlices
from .backend import get_array_module, to_numpy
from .train import STEP_KEY

__all__ = ["save", "restore", "load", "list_variables", "CheckpointError"]


class CheckpointError(ValueError):
    """A checkpoint could not be read, or does not match the parameters it is restored into."""


_ADAM_NON_SLOT = ("beta1_power", "beta2_power")
_SLOT_SUFFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]*(_[0-9]+)?$")


def _check_params(params, what="params"):
    if not isinstance(params, dict):
        raise TypeError("%s must be a dict name -> array, got %s" % (what, type(params).__name__))
    for k, v in params.items():
        if not isinstance(k, str) or not k:
            raise TypeError("%s names must be non-empty strings, got %r" % (what, k))
        if isinstance(v, IndexedSlices) or not hasattr(v, "shape") or not hasattr(v, "dtype"):
            raise TypeError("%s[%r] must be an array, got %s" % (what, k, type(v).__name__))


def save(path, params, optimizer=None):
    """Write ``params`` (dict TF name -> array) and, if given, ``optimizer``'s state to ``path``.

    The file is a standard ``.npz`` (one ``<name>.npy`` entry per variable, no pickles), readable
    with ``numpy.load(path)``.  Written atomically: temp file in the same directory, fsync,
    ``os.replace``.  Returns ``path``.
    """
    _check_params(params)
    arrays = {k: np.asarray(to_numpy(v)) for k, v in params.items()}
    if optimizer is not None:
        state = optimizer.state_dict(params)
        clash = sorted(set(state) & set(arrays))
        if clash:
            raise ValueError("optimizer state names clash with parameter names: %s" % clash)
        arrays.update({k: np.asarray(v) for k, v in state.items()})
    for k, a in arrays.items():
        if a.dtype == object:
            raise TypeError("variable %r is an object array; only numeric arrays can be saved" % k)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for k, a in arrays.items():
                    with zf.open(k + ".npy", "w", force_zip64=True) as entry:
                        np.lib.format.write_array(entry, a, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def load(path):
    """Read every variable of a checkpoint into a dict name -> numpy array (no pickles).

    Raises FileNotFoundError for a missing file and :class:`CheckpointError` (a ValueError) for a
    file that is not a readable checkpoint (corrupt, truncated, holding objects).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError("checkpoint %r does not exist" % path)
    try:
        z = np.load(path, allow_pickle=False)
        if not hasattr(z, "files"):                          # a plain .npy: an array, not a dict
            raise ValueError("not an .npz archive but a single .npy array of shape %s"
                             % (tuple(np.shape(z)),))
        with z:
            out = {k: np.array(z[k]) for k in z.files}      # reads (and CRC-checks) every entry
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, RuntimeError) as e:
        raise CheckpointError("checkpoint %r could not be read (corrupt or truncated file?): %s: %s"
                              % (path, type(e).__name__, e)) from None
    return out


def list_variables(path):
    """``[(name, shape)]`` of a checkpoint, sorted by name (like ``tf.train.list_variables``)."""
    return sorted((k, tuple(v.shape)) for k, v in load(path).items())


def _is_optimizer_key(key, params):
    if key in _ADAM_NON_SLOT or key == STEP_KEY:
        return True
    head, _, tail = key.rpartition("/")
    return head in params and bool(_SLOT_SUFFIX.match(tail))


def _describe(lines, title, items, limit=20):
    if items:
        shown = items[:limit]
        more = "" if len(items) <= limit else " ... and %d more" % (len(items) - limit)
        lines.append("%s (%d): %s%s" % (title, len(items), ", ".join(shown), more))


def restore(path, params, optimizer=None, strict=True):
    """Copy a checkpoint's values into ``params`` (dict TF name -> live array, changed IN PLACE)
    and, if given, into ``optimizer``'s slots.

    Checks before writing anything: every expected name present, no unexpected names (with
    ``strict``; optimizer state in the file is ignored when ``optimizer`` is None), shapes and dtypes
    equal.  All differences are listed in one :class:`CheckpointError`.  Returns the list of names
    restored.
    """
    _check_params(params)
    values = load(path)
    expected = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in params.items()}
    opt_spec = optimizer.state_spec(params) if optimizer is not None else {}
    expected.update(opt_spec)
    missing = sorted(k for k in expected if k not in values
                     and not (k == STEP_KEY and k in opt_spec))     # files from before it was saved
    unexpected = sorted(k for k in values if k not in expected
                        and not (optimizer is None and _is_optimizer_key(k, params)))
    bad_shape = sorted("%s: file %s, expected %s" % (k, values[k].shape, expected[k][0])
                       for k in expected if k in values and tuple(values[k].shape) != expected[k][0])
    # Adam's powers: float32 as in TF1; checkpoints written before npl matched that hold them in
    # the variables' dtype, and any float is read (load_state_dict casts them)
    bad_dtype = sorted("%s: file %s, expected %s" % (k, values[k].dtype, expected[k][1])
                       for k in expected if k in values and values[k].dtype != expected[k][1]
                       and not (k in _ADAM_NON_SLOT and values[k].dtype.kind == "f"))
    lines = []
    _describe(lines, "missing from the file", missing)
    if strict:
        _describe(lines, "in the file but not expected", unexpected)
    _describe(lines, "shape mismatch", bad_shape)
    _describe(lines, "dtype mismatch", bad_dtype)
    if lines:
        raise CheckpointError("checkpoint %r does not match (nothing was restored):\n  %s"
                              % (os.fspath(path), "\n  ".join(lines)))
    for k, v in params.items():
        xp = get_array_module(v)
        v[...] = values[k] if xp is np else xp.asarray(values[k])
    if optimizer is not None:
        optimizer.load_state_dict({k: values[k] for k in opt_spec if k in values}, params)
    return sorted(expected)
