"""Data for the examples and tutorials: MNIST, character/word text, language-model batches and
synthetic sine sequences.  NumPy and the standard library only; everything returns NumPy arrays
(move them to the GPU with :func:`npl.to_device`).

Where the files are looked for (first hit wins), for MNIST (``subdir = "mnist"``) and the text
corpus (``subdir = "text"``):

1. ``data_dir`` when it is passed (the folder itself, then ``data_dir/<subdir>``); nothing else;
2. otherwise ``$NPL_DATA_DIR`` (the folder itself, then ``$NPL_DATA_DIR/<subdir>``),
3. then the cache ``$XDG_CACHE_HOME/npl/<subdir>`` (``~/.cache/npl/<subdir>`` when
   ``XDG_CACHE_HOME`` is unset).

Files that are not found are downloaded when ``download=True`` (into ``data_dir`` when it was
passed, else into the cache), written to a temporary file in the same folder and renamed into place
only once their SHA-256 matches the published value.  Every file is checked against its published
SHA-256 before it is parsed (``verify=False`` skips the check, e.g. for Fashion-MNIST, which uses the
same file names and format).  Without network the error says exactly where to put the files.
"""
import collections
import gzip
import hashlib
import http.client
import io
import math
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

import numpy as np

from ._checks import real_number

__all__ = ["DataNotFoundError", "ChecksumError", "CorruptFileError", "cache_dir", "read_idx",
           "load_mnist", "load_mnist_csv", "load_text", "CharVocab", "WordVocab", "lm_batches",
           "lm_num_batches", "random_windows", "sine_windows", "sin_to_cos", "minibatches",
           "one_hot", "MNIST_FILES", "MNIST_MIRRORS", "TEXT_URLS"]


# ============================================================================ errors
class DataNotFoundError(FileNotFoundError):
    """A data file is neither on disk nor downloadable; the message says where to put it."""


class ChecksumError(ValueError):
    """A data file's SHA-256 differs from the published value (the message names both)."""


class CorruptFileError(ValueError):
    """A data file cannot be parsed (truncated gzip, wrong IDX magic, sizes that do not add up)."""


# ============================================================================ registry
#: file name -> (published SHA-256, size in bytes)
_KNOWN = {
    "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                                   9912422),
    "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                                   28881),
    "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                                  1648877),
    "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                                  4542),
    "tinyshakespeare.txt": ("86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                            1115394),
}

#: kind -> (images file, labels file, number of samples)
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}

#: Mirrors of the four MNIST files, tried in order (file name appended).
MNIST_MIRRORS = (
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: Full URLs of tinyshakespeare.txt, tried in order.
TEXT_URLS = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
)


def _urls(filename):
    if filename == "tinyshakespeare.txt":
        return list(TEXT_URLS)
    return [m + filename for m in MNIST_MIRRORS]


# ============================================================================ locating files
def cache_dir(subdir=None):
    """npl's download cache: ``$XDG_CACHE_HOME/npl`` (default ``~/.cache/npl``), plus ``subdir``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    root = os.path.join(base, "npl")
    return root if subdir is None else os.path.join(root, subdir)


def _search_dirs(subdir, data_dir):
    """Folders searched for the files of ``subdir``, in order (see the module docstring)."""
    if data_dir is not None:
        roots = [os.fspath(data_dir)]
    else:
        env = os.environ.get("NPL_DATA_DIR")
        roots = ([env] if env else []) + [cache_dir(subdir)]
    out = []
    for r in roots:
        for d in (r, os.path.join(r, subdir)):
            if d not in out:
                out.append(d)
    return out


_sha_memo = {}


def _sha256(path):
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _sha_memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _sha_memo[key] = h.hexdigest()
    return _sha_memo[key]


def _verify(path, filename):
    expected = _KNOWN[filename][0]
    got = _sha256(path)
    if got != expected:
        raise ChecksumError(
            "%s: SHA-256 mismatch: expected %s (the published value for %s), got %s. The file is "
            "corrupt, truncated or a different version; delete it and download it again (or pass "
            "verify=False for a file you know to be different, e.g. Fashion-MNIST)"
            % (path, expected, filename, got))


# Hosts that did not answer (timeout, refused, no route; not an HTTP error) -> when: they are not
# tried again for UNREACHABLE_RETRY_S seconds, so that a stalled network costs one timeout per
# mirror, not one per mirror and file (MNIST: 4 files, 3 mirrors each).
UNREACHABLE_RETRY_S = 600.0
_unreachable = {}


def _download(filename, target_dir, timeout):
    """Fetch ``filename`` from its mirrors into ``target_dir`` atomically; return its path.

    Each mirror is streamed into a temporary file next to the target, hashed while it is written,
    and renamed into place only when the SHA-256 matches.  A mirror whose host did not answer in
    the last :data:`UNREACHABLE_RETRY_S` seconds is skipped.  Raises OSError listing every failure.
    """
    expected = _KNOWN[filename][0]
    os.makedirs(target_dir, exist_ok=True)
    final = os.path.join(target_dir, filename)
    failures = []
    for url in _urls(filename):
        host = urllib.parse.urlsplit(url).netloc
        when = _unreachable.get(host)
        if when is not None and time.monotonic() - when < UNREACHABLE_RETRY_S:
            failures.append("%s: skipped (the host did not answer %.0f s ago)"
                            % (url, time.monotonic() - when))
            continue
        fd, tmp = tempfile.mkstemp(prefix="." + filename + ".", suffix=".part", dir=target_dir)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(1 << 16), b""):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != expected:
                failures.append("%s: SHA-256 %s, expected %s" % (url, h.hexdigest(), expected))
                continue
            os.replace(tmp, final)
            return final
        except (OSError, ValueError, http.client.HTTPException) as e:
            failures.append("%s: %s" % (url, e))
            if isinstance(e, OSError) and not isinstance(e, urllib.error.HTTPError):
                _unreachable[host] = time.monotonic()         # the server never answered
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise OSError("; ".join(failures))


def _locate(filenames, subdir, data_dir, download, timeout, verify, what):
    """Return {filename: path} for every file, downloading missing ones when allowed."""
    dirs = _search_dirs(subdir, data_dir)
    paths, missing = {}, []
    for f in filenames:
        hit = next((os.path.join(d, f) for d in dirs if os.path.isfile(os.path.join(d, f))), None)
        if hit is None:
            missing.append(f)
        else:
            paths[f] = hit
    failures = []
    if missing and download:
        target = os.fspath(data_dir) if data_dir is not None else cache_dir(subdir)
        for f in list(missing):
            try:
                paths[f] = _download(f, target, timeout)
                missing.remove(f)
            except OSError as e:
                failures.append("%s: %s" % (f, e))
    if missing:
        msg = ["%s: file(s) %s not found." % (what, ", ".join(missing)),
               "Looked in: %s." % ", ".join(dirs)]
        if download:
            msg.append("Download failed (%s)." % " | ".join(failures))
        else:
            msg.append("Downloading was disabled (download=False).")
        if data_dir is not None:            # only data_dir is searched: say so, not the others
            msg.append("Put the files (%s) in %s (directly or in its '%s/' subfolder), or pass "
                       "data_dir=None to use NPL_DATA_DIR and the cache %s."
                       % (", ".join(filenames), os.fspath(data_dir), subdir, cache_dir(subdir)))
        else:
            msg.append("Put the files (%s) in %s, or in a folder named by the environment variable "
                       "NPL_DATA_DIR (directly or in its '%s/' subfolder), or pass data_dir=<folder>."
                       % (", ".join(filenames), cache_dir(subdir), subdir))
        raise DataNotFoundError(" ".join(msg))
    if verify:
        for f in filenames:
            _verify(paths[f], f)
    return [paths[f] for f in filenames]


# ============================================================================ IDX / MNIST
_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path):
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise CorruptFileError("%s: cannot decompress (truncated or corrupt gzip file): %s"
                               % (path, e)) from None


def read_idx(path, expected_magic=None):
    """Parse an IDX file (gzip-compressed or raw) into a NumPy array, with NumPy only.

    Layout: 2 zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64, all big-endian), the rank ``d``, ``d`` big-endian uint32 sizes, then the data.
    ``expected_magic`` (e.g. 0x803 for uint8 rank-3 images, 0x801 for uint8 labels) is checked when
    given.  Truncated or oversized files raise :class:`CorruptFileError` naming the file.
    """
    path = os.fspath(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise CorruptFileError("%s: %d bytes is too short for an IDX header" % (path, len(raw)))
    magic = int.from_bytes(raw[:4], "big")
    code, ndim = raw[2], raw[3]
    if raw[0] or raw[1] or code not in _IDX_DTYPES or ndim == 0:
        raise CorruptFileError("%s: not an IDX file (magic 0x%08x)" % (path, magic))
    if expected_magic is not None and magic != expected_magic:
        raise CorruptFileError("%s: expected IDX magic 0x%08x, got 0x%08x"
                               % (path, expected_magic, magic))
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptFileError("%s: truncated IDX header (%d bytes, need %d)" % (path, len(raw), header))
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dt = _IDX_DTYPES[code]
    count = math.prod(dims)                             # Python ints: a bogus header cannot wrap
    if len(raw) - header != count * dt.itemsize:
        raise CorruptFileError("%s: the IDX header says shape %s (%d data bytes) but the file holds "
                               "%d: truncated or corrupt" % (path, dims, count * dt.itemsize,
                                                              len(raw) - header))
    return np.frombuffer(raw, dt, count, header).reshape(dims).astype(dt.newbyteorder("="))


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError("%s must be one of %s, got %r" % (name, sorted(choices), value))


def _finish_images(images, labels, flatten, normalize):
    """Shared tail of the MNIST loaders: flatten [N, 784] and scale to float32 in [0, 1]."""
    if flatten:
        images = images.reshape(len(images), -1)
    if normalize:
        images = images.astype(np.float32)
        images /= np.float32(255.0)
    return images, labels


def load_mnist(data_dir=None, kind="train", flatten=False, normalize=True, download=True,
               verify=True, timeout=30.0):
    """MNIST from the four original IDX gzip files.

    Returns ``(images, labels)``: images float32 ``[N, 28, 28]`` in [0, 1] (``[N, 784]`` with
    ``flatten``; uint8 0..255 with ``normalize=False``), labels int64 ``[N]`` with values 0..9;
    N = 60000 for ``kind="train"``, 10000 for ``kind="test"``.  For an RNN, each image is a
    sequence of 28 rows of 28 pixels (``batch_major`` input ``[N, 28, 28]``).

    Files are found as the module docstring says (``data_dir``, ``$NPL_DATA_DIR``, the cache;
    a folder holding the ``.gz`` files or one with a ``mnist/`` subfolder), checked against their
    published SHA-256 (unless ``verify=False``) and parsed with NumPy only.
    """
    _check_choice(kind, "kind", {"train", "test"})
    img_name, lab_name, n = MNIST_FILES[kind]
    img_path, lab_path = _locate([img_name, lab_name], "mnist", data_dir, download, timeout, verify,
                                 "MNIST (%s)" % kind)
    images = read_idx(img_path, 0x803)
    labels = read_idx(lab_path, 0x801)
    if images.shape[1:] != (28, 28):
        raise CorruptFileError("%s: expected images of 28x28 pixels, got shape %s"
                               % (img_path, images.shape))
    if len(images) != len(labels):
        raise CorruptFileError("%s holds %d images but %s holds %d labels"
                               % (img_path, len(images), lab_path, len(labels)))
    if verify and len(images) != n:
        raise CorruptFileError("%s: expected %d samples, got %d" % (img_path, n, len(images)))
    return _finish_images(images, labels.astype(np.int64), flatten, normalize)


def _is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_mnist_csv(path, flatten=False, normalize=True, label_column="auto"):
    """MNIST in the Kaggle CSV format: a header row, then one row per image (the label, then 784
    pixel values 0..255).  Plain or ``.gz`` files.

    ``label_column``: ``"auto"`` (the column named ``label`` in the header; else column 0 when a
    row has 785 values; no labels when it has 784, as Kaggle's ``test.csv``), an integer index, or
    None for no labels.  Returns ``(images, labels)`` as :func:`load_mnist` (labels None when the
    file has none).
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        text = f.read()
    first = text.split("\n", 1)[0]
    fields = [s.strip() for s in first.split(",")]
    header = None if all(_is_number(s) for s in fields) else fields
    try:
        rows = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, ndmin=2,
                          skiprows=0 if header is None else 1)
    except ValueError as e:
        raise CorruptFileError("%s: cannot parse as CSV of integers: %s" % (path, e)) from None
    if rows.shape[0] == 0:
        raise ValueError("%s: no data rows" % path)
    ncol = rows.shape[1]
    if label_column == "auto":
        if header is not None and "label" in header:
            label_column = header.index("label")
        else:
            label_column = 0 if ncol == 785 else None
    expect = 784 if label_column is None else 785
    if ncol != expect:
        raise ValueError("%s: rows must have %d values (%s784 pixels), got %d"
                         % (path, expect, "" if label_column is None else "a label and ", ncol))
    labels = None
    if label_column is not None:
        labels = rows[:, label_column]
        rows = np.delete(rows, label_column, axis=1)
        bad = np.flatnonzero((labels < 0) | (labels > 9))
        if bad.size:
            raise ValueError("%s: labels must be 0..9, got %d in data row %d"
                             % (path, labels[bad[0]], bad[0]))
    if rows.size and (rows.min() < 0 or rows.max() > 255):
        raise ValueError("%s: pixel values must be 0..255, got range [%d, %d]"
                         % (path, rows.min(), rows.max()))
    images = rows.astype(np.uint8).reshape(-1, 28, 28)
    return _finish_images(images, labels, flatten, normalize)


# ============================================================================ text
def load_text(path=None, data_dir=None, download=True, verify=True, timeout=30.0, encoding="utf-8"):
    """Read a text corpus.  With ``path`` that file; otherwise tinyshakespeare.txt (1,115,394
    characters, 65 distinct), found like MNIST under the ``text/`` subfolder (``data_dir``,
    ``$NPL_DATA_DIR``, ``~/.cache/npl/text``), verified by SHA-256 and downloaded when missing."""
    if path is None:
        (path,) = _locate(["tinyshakespeare.txt"], "text", data_dir, download, timeout, verify,
                          "text corpus")
    with open(path, "r", encoding=encoding, newline="") as f:
        return f.read()


class _Vocab:
    """Token <-> id tables shared by :class:`CharVocab` and :class:`WordVocab`."""

    def __init__(self, tokens, unk=None):
        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            raise ValueError("tokens must be unique, got %d tokens with %d distinct"
                             % (len(tokens), len(set(tokens))))
        if unk is not None and unk not in tokens:
            raise ValueError("unk=%r is not one of the tokens" % (unk,))
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}
        self.unk = unk
        self.unk_id = None if unk is None else self.stoi[unk]

    def __len__(self):
        return len(self.itos)

    @property
    def size(self):
        return len(self.itos)

    def __contains__(self, token):
        return token in self.stoi

    def _encode_tokens(self, tokens):
        stoi, unk_id = self.stoi, self.unk_id
        if unk_id is not None:
            return np.fromiter((stoi.get(t, unk_id) for t in tokens), np.int64)
        try:
            return np.fromiter((stoi[t] for t in tokens), np.int64)
        except KeyError as e:
            pos = next(i for i, t in enumerate(tokens) if t not in stoi)
            raise ValueError("token %r (at position %d) is not in the vocabulary of %d and this "
                             "vocabulary has no unk token" % (e.args[0], pos, len(self))) from None

    def _decode_ids(self, ids):
        a = np.asarray(ids)
        if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise ValueError("ids must be a 1-D integer array, got shape %s dtype %s"
                             % (a.shape, a.dtype))
        if a.size and (a.min() < 0 or a.max() >= len(self)):
            raise ValueError("ids must be in [0, %d), got range [%d, %d]"
                             % (len(self), a.min(), a.max()))
        return [self.itos[i] for i in a.tolist()]

    def __repr__(self):
        return "%s(size=%d)" % (type(self).__name__, len(self))


class CharVocab(_Vocab):
    """Character vocabulary: ``CharVocab.from_text(text)`` holds the distinct characters, sorted.

    ``encode(text) -> int64 [len(text)]``, ``decode(ids) -> str``; ``decode(encode(t)) == t``.
    An unknown character raises ValueError unless ``unk`` (one of the characters) is given.
    """

    @classmethod
    def from_text(cls, text, unk=None):
        if not isinstance(text, str):
            raise TypeError("text must be a str, got %s" % type(text).__name__)
        chars = sorted(set(text) | ({unk} if unk is not None else set()))
        return cls(chars, unk)

    def encode(self, text):
        return self._encode_tokens(text)

    def decode(self, ids):
        return "".join(self._decode_ids(ids))


class WordVocab(_Vocab):
    """Word vocabulary with a most-common cutoff and an ``<unk>`` token (id 0).

    ``WordVocab.from_text(text_or_tokens, max_size=None, min_count=1, unk="<unk>", eos=None,
    lower=False)``: words are split on whitespace (:meth:`tokenize`; with ``eos`` that token ends
    every line, as in PTB), counted, and the ``max_size - 1`` most common with at least
    ``min_count`` occurrences are kept after ``unk`` (ties: first occurrence first).  Other words
    encode to ``unk``.  ``decode`` joins with spaces.
    """

    def __init__(self, tokens, unk="<unk>", eos=None, lower=False):
        super().__init__(tokens, unk)
        self.eos = eos
        self.lower = lower

    @staticmethod
    def tokenize(text, eos=None, lower=False):
        """Split on whitespace; with ``eos``, append it after every line (PTB's ``<eos>``)."""
        if not isinstance(text, str):
            raise TypeError("text must be a str, got %s" % type(text).__name__)
        if lower:
            text = text.lower()
        if eos is None:
            return text.split()
        out = []
        for line in text.splitlines():
            out.extend(line.split())
            out.append(eos)
        return out

    @classmethod
    def from_text(cls, text, max_size=None, min_count=1, unk="<unk>", eos=None, lower=False):
        if max_size is not None and (not isinstance(max_size, (int, np.integer)) or max_size < 1):
            raise ValueError("max_size must be None or a positive integer, got %r" % (max_size,))
        if unk is None:
            raise ValueError("unk must be a token string (words outside the cutoff map to it), got None")
        tokens = cls.tokenize(text, eos, lower) if isinstance(text, str) else list(text)
        counts = collections.Counter(tokens)
        counts.pop(unk, None)
        words = [w for w, c in counts.most_common() if c >= min_count]
        if max_size is not None:
            words = words[:max_size - 1]
        return cls([unk] + words, unk, eos, lower)

    def encode(self, text_or_tokens):
        """Ids of a string (tokenized like the vocabulary's text) or of a list of tokens."""
        if isinstance(text_or_tokens, str):
            text_or_tokens = self.tokenize(text_or_tokens, self.eos, self.lower)
        return self._encode_tokens(list(text_or_tokens))

    def decode(self, ids, sep=" "):
        return sep.join(self._decode_ids(ids))


# ============================================================================ LM batches
def _ids_array(ids):
    a = np.asarray(ids)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError("ids must be a 1-D integer array, got shape %s dtype %s" % (a.shape, a.dtype))
    return a


def _positive(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError("%s must be a positive integer, got %r" % (name, v))


def lm_num_batches(num_ids, batch_size, num_steps):
    """Number of windows :func:`lm_batches` yields: ``(num_ids // batch_size - 1) // num_steps``."""
    return max((num_ids // batch_size - 1) // num_steps, 0)


def lm_batches(ids, batch_size, num_steps):
    """PTB-style producer for language models (the ``ptb_producer`` of TF's tutorial).

    The ids are cut to ``batch_size * L`` with ``L = len(ids) // batch_size`` and reshaped into
    ``data [batch_size, L]``, row ``r`` holding ids ``r*L .. r*L+L-1``.  Window ``i`` is
    ``x = data[:, i*num_steps:(i+1)*num_steps]`` and ``y = data[:, i*num_steps+1:(i+1)*num_steps+1]``
    (the next id), both int64 ``[batch_size, num_steps]``, for ``i < (L - 1) // num_steps``.
    Window ``i+1`` continues every row of window ``i``, so the final RNN state of one window is the
    right initial state for the next.
    """
    a = _ids_array(ids)
    _positive(batch_size, "batch_size")
    _positive(num_steps, "num_steps")
    n = lm_num_batches(len(a), batch_size, num_steps)
    if n == 0:
        raise ValueError("ids has %d tokens, too few for batch_size=%d and num_steps=%d (need at "
                         "least batch_size * (num_steps + 1) = %d)"
                         % (len(a), batch_size, num_steps, batch_size * (num_steps + 1)))
    L = len(a) // batch_size
    data = a[:batch_size * L].astype(np.int64).reshape(batch_size, L)
    return _lm_windows(data, n, num_steps)


def _lm_windows(data, n, T):
    for i in range(n):
        yield data[:, i * T:(i + 1) * T].copy(), data[:, i * T + 1:(i + 1) * T + 1].copy()


def random_windows(ids, batch_size, num_steps, num_batches=None, seed=None):
    """Random training windows: each batch takes ``batch_size`` start offsets ``s`` uniformly from
    ``[0, len(ids) - num_steps - 1]`` and yields ``x[b] = ids[s_b : s_b + num_steps]`` and
    ``y[b] = ids[s_b + 1 : s_b + num_steps + 1]`` (int64 ``[batch_size, num_steps]``).  Windows are
    independent (no state carried).  ``num_batches`` defaults to ``len(ids) // (batch_size *
    num_steps)`` (about one pass over the data)."""
    a = _ids_array(ids)
    _positive(batch_size, "batch_size")
    _positive(num_steps, "num_steps")
    if len(a) < num_steps + 1:
        raise ValueError("ids has %d tokens, need at least num_steps + 1 = %d" % (len(a), num_steps + 1))
    if num_batches is None:
        num_batches = max(len(a) // (batch_size * num_steps), 1)
    _positive(num_batches, "num_batches")
    rng = np.random.default_rng(seed)
    a = a.astype(np.int64)
    return _random_windows(a, batch_size, num_steps, num_batches, rng)


def _random_windows(a, B, T, n, rng):
    offs = np.arange(T)
    for _ in range(n):
        idx = rng.integers(0, len(a) - T, size=B)[:, None] + offs      # [B, T]
        yield a[idx], a[idx + 1]


# ============================================================================ sequences
def _series_rng(seed):
    return np.random.default_rng(seed)


def _split(pair_train, pair_test, n_test):
    return (pair_train, pair_test) if n_test else pair_train


def sine_windows(n, window=10, dt=0.1, noise=0.0, random_offset=False, n_test=0, seed=None,
                 dtype=np.float32):
    """Sliding windows over a sine wave, for next-value regression (the TF RNN regression tutorial).

    The series is ``s[m] = sin(t0 + m * dt)`` (plus Gaussian noise of std ``noise`` when given),
    ``t0 = 0`` or, with ``random_offset``, uniform in [0, 2*pi) from ``seed``.  Window ``i`` is
    ``X[i, :, 0] = s[i : i + window]`` and its target ``y[i, 0] = s[i + window]``.
    Returns ``(X [n, window, 1], y [n, 1])``; with ``n_test > 0`` returns
    ``((X, y), (X_test, y_test))`` where the test windows come from the same series continued after
    the last training sample (``s[n + window :]``), so no sample is shared.
    """
    _positive(n, "n")
    _positive(window, "window")
    real_number(dt, "dt", allow_zero=False)
    real_number(noise, "noise", allow_zero=True)
    if n_test < 0:
        raise ValueError("n_test must be >= 0, got %r" % (n_test,))
    rng = _series_rng(seed)
    t0 = rng.uniform(0.0, 2 * np.pi) if random_offset else 0.0
    m_train, m_test = n + window, (n_test + window if n_test else 0)
    s = np.sin(t0 + np.arange(m_train + m_test) * dt)
    if noise:
        s = s + rng.normal(0.0, noise, size=s.shape)
    s = s.astype(dtype)

    def windows(seg, count):
        idx = np.arange(count)[:, None] + np.arange(window)              # [count, window]
        return seg[idx][..., None], seg[window:window + count][:, None]

    return _split(windows(s[:m_train], n), windows(s[m_train:], n_test) if n_test else None, n_test)


def sin_to_cos(n, num_steps=20, dt=0.1, random_start=True, n_test=0, seed=None, return_time=False,
               dtype=np.float32):
    """Sequence-to-sequence pairs: read ``sin(t)``, predict ``cos(t)`` at every step.

    ``t[i, k] = start_i + k * dt``; ``start_i`` uniform in [0, 2*pi) from ``seed`` with
    ``random_start``, else contiguous ``start_i = i * num_steps * dt`` (sequence i+1 continues
    sequence i, so state can be carried from one to the next).  Returns ``(X, Y)`` with
    ``X[..., 0] = sin(t)``, ``Y[..., 0] = cos(t)``, both ``[n, num_steps, 1]`` (``(X, Y, t)`` with
    ``return_time``); with ``n_test > 0``, a pair ``(train, test)`` whose test sequences are further
    draws (``random_start``) or continue the training series.
    """
    _positive(n, "n")
    _positive(num_steps, "num_steps")
    real_number(dt, "dt", allow_zero=False)
    if n_test < 0:
        raise ValueError("n_test must be >= 0, got %r" % (n_test,))
    rng = _series_rng(seed)
    total = n + n_test
    if random_start:
        starts = rng.uniform(0.0, 2 * np.pi, size=total)
    else:
        starts = np.arange(total) * (num_steps * dt)
    t = starts[:, None] + np.arange(num_steps) * dt                      # [total, num_steps]

    def pack(sl):
        tt = t[sl]
        out = (np.sin(tt)[..., None].astype(dtype), np.cos(tt)[..., None].astype(dtype))
        return out + (tt,) if return_time else out

    return _split(pack(slice(0, n)), pack(slice(n, total)) if n_test else None, n_test)


# ============================================================================ batches
def minibatches(*arrays, batch_size, shuffle=True, seed=None, drop_remainder=False):
    """Yield tuples of aligned minibatches ``(a[idx], b[idx], ...)`` over the first axis, in a
    seeded random order with ``shuffle``; the last short batch is kept unless ``drop_remainder``."""
    if not arrays:
        raise ValueError("minibatches needs at least one array")
    _positive(batch_size, "batch_size")
    n = len(arrays[0])
    for k, a in enumerate(arrays):
        if len(a) != n:
            raise ValueError("arrays[%d] has length %d, expected %d (the length of arrays[0])"
                             % (k, len(a), n))
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_remainder else n
    for i in range(0, stop, batch_size):
        idx = order[i:i + batch_size]
        yield tuple(a[idx] for a in arrays)


def one_hot(labels, depth, dtype=np.float32):
    """``[N] int -> [N, depth]`` with ones at the labels (ValueError for labels outside 0..depth-1)."""
    a = np.asarray(labels)
    if a.dtype.kind not in "iu":
        raise ValueError("labels must be integers, got dtype %s" % a.dtype)
    if a.size and (a.min() < 0 or a.max() >= depth):
        raise ValueError("labels must be in [0, %d), got range [%d, %d]" % (depth, a.min(), a.max()))
    out = np.zeros(a.shape + (depth,), dtype)
    np.put_along_axis(out, a[..., None], 1, axis=-1)
    return out
