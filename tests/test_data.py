"""Data loading (npl.data) on the real files in $NPL_DATA_DIR (the conftest points it at the shared
data folder; elsewhere the cache, downloading on first use), checked against the values published in that folder's README: shapes, dtypes, label
histograms, pixel sums, first labels, the corpus size and alphabet.  Corrupt, truncated, missing
and mismatching files must raise errors that name the file (and for a SHA mismatch both hashes)."""
import gzip
import io
import os
import shutil
import urllib.error
import urllib.request

import numpy as np
import pytest

from npl import data

# Published in the shared data README (closed-form reference values, not npl output).
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
PIXEL_SUMS = {"train": 1567298545, "test": 264923200}
LABEL_SUMS = {"train": 267236, "test": 44434}
FIRST_LABELS = {"train": [5, 0, 4, 1, 9, 2, 1, 3, 1, 4], "test": [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]}
SHA = {"t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"}


def _mnist_dir(kind="test"):
    """The folder holding the real MNIST files of ``kind`` ($NPL_DATA_DIR/mnist in this repo's
    test setup; the cache, downloading if needed, elsewhere)."""
    img, lab, _ = data.MNIST_FILES[kind]
    paths = data._locate([img, lab], "mnist", None, True, 30.0, True, "MNIST")
    assert os.path.dirname(paths[0]) == os.path.dirname(paths[1])
    return os.path.dirname(paths[0])


@pytest.fixture(scope="module")
def train_raw():
    return data.load_mnist(kind="train", normalize=False)


# ============================================================================ MNIST
def test_mnist_train_matches_published_values(train_raw):
    images, labels = train_raw
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,) and labels.dtype == np.int64
    assert int(images.sum(dtype=np.int64)) == PIXEL_SUMS["train"]
    assert int(labels.sum()) == LABEL_SUMS["train"]
    assert np.bincount(labels, minlength=10).tolist() == TRAIN_COUNTS
    assert labels[:10].tolist() == FIRST_LABELS["train"]
    assert images.min() == 0 and images.max() == 255


def test_mnist_normalized_float32(train_raw):
    x, y = data.load_mnist(kind="train")
    assert x.shape == (60000, 28, 28) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() == 1.0
    np.testing.assert_array_equal(y, train_raw[1])
    # x == pixel / 255 (float32 rounding only), and the usual normalisation constants
    np.testing.assert_allclose(x[::7], train_raw[0][::7].astype(np.float64) / 255.0, rtol=1e-7, atol=0)
    assert abs(x.mean(dtype=np.float64) - 0.13066) < 5e-6
    assert abs(x.std(dtype=np.float64) - 0.30811) < 5e-6


def test_mnist_test_split_flatten_and_direct_folder(monkeypatch):
    x, y = data.load_mnist(kind="test", flatten=True, normalize=False)
    assert x.shape == (10000, 784) and x.dtype == np.uint8
    assert int(x.sum(dtype=np.int64)) == PIXEL_SUMS["test"] and int(y.sum()) == LABEL_SUMS["test"]
    assert np.bincount(y, minlength=10).tolist() == TEST_COUNTS
    assert y[:10].tolist() == FIRST_LABELS["test"]
    # a folder holding the .gz files directly, passed as data_dir, gives the same arrays
    folder = _mnist_dir()
    x2, y2 = data.load_mnist(folder, kind="test", flatten=True, normalize=False, download=False)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    # and so does NPL_DATA_DIR naming that folder, or its parent when the folder is 'mnist/'
    parent, base = os.path.split(folder)
    for env in [folder] + ([parent] if base == "mnist" else []):
        monkeypatch.setenv("NPL_DATA_DIR", env)
        np.testing.assert_array_equal(data.load_mnist(kind="test", download=False)[1], y)
    with pytest.raises(ValueError, match=r"kind must be one of \['test', 'train'\], got 'validation'"):
        data.load_mnist(kind="validation")


def _copy_test_set(dst):
    src = _mnist_dir()
    os.makedirs(dst, exist_ok=True)
    for f in data.MNIST_FILES["test"][:2]:
        shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    return dst


def test_sha_mismatch_names_file_and_both_hashes(tmp_path):
    d = _copy_test_set(str(tmp_path / "m"))
    path = os.path.join(d, "t10k-labels-idx1-ubyte.gz")
    raw = bytearray(open(path, "rb").read())
    raw[100] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    import hashlib
    got = hashlib.sha256(bytes(raw)).hexdigest()
    with pytest.raises(data.ChecksumError) as e:
        data.load_mnist(d, kind="test", download=False)
    msg = str(e.value)
    assert path in msg and SHA["t10k-labels-idx1-ubyte.gz"] in msg and got in msg
    assert isinstance(e.value, ValueError)


def test_idx_header_whose_sizes_overflow_is_corrupt(tmp_path):
    """Four dimensions of 65536 make 2**64 elements: a NumPy product would wrap to 0 and match
    an empty payload; the file is reported as corrupt, naming it."""
    p = str(tmp_path / "huge-idx4-ubyte")
    with open(p, "wb") as f:
        f.write(bytes([0, 0, 0x08, 4]) + (65536).to_bytes(4, "big") * 4)
    with pytest.raises(data.CorruptFileError, match=r"huge-idx4-ubyte: the IDX header says shape "
                                                    r"\(65536, 65536, 65536, 65536\) \(18446744073709551616"):
        data.read_idx(p)


def test_truncated_and_corrupt_files_raise_clear_errors(tmp_path):
    d = _copy_test_set(str(tmp_path / "m"))
    lab = os.path.join(d, "t10k-labels-idx1-ubyte.gz")
    good = open(lab, "rb").read()
    # truncated gzip: the checksum catches it first; without verification the parser names it
    open(lab, "wb").write(good[:len(good) // 2])
    with pytest.raises(data.ChecksumError, match="t10k-labels-idx1-ubyte.gz"):
        data.load_mnist(d, kind="test", download=False)
    with pytest.raises(data.CorruptFileError, match=r"t10k-labels-idx1-ubyte\.gz: cannot decompress "
                                                    r"\(truncated or corrupt gzip"):
        data.load_mnist(d, kind="test", download=False, verify=False)
    # a valid gzip whose IDX payload is cut short
    payload = gzip.decompress(good)
    open(lab, "wb").write(gzip.compress(payload[:-7]))
    with pytest.raises(data.CorruptFileError, match=r"header says shape \(10000,\) \(10000 data bytes\) "
                                                    r"but the file holds 9993: truncated"):
        data.read_idx(lab)
    open(lab, "wb").write(gzip.compress(payload + b"\x00\x00\x00"))          # trailing garbage
    with pytest.raises(data.CorruptFileError, match=r"but the file holds 10003"):
        data.read_idx(lab)
    # the wrong magic number (an images header where labels are expected)
    open(lab, "wb").write(gzip.compress(b"\x00\x00\x08\x03" + payload[4:]))
    with pytest.raises(data.CorruptFileError, match=r"expected IDX magic 0x00000801, got 0x00000803"):
        data.load_mnist(d, kind="test", download=False, verify=False)
    open(lab, "wb").write(b"not an idx file at all")
    with pytest.raises(data.CorruptFileError, match=r"not an IDX file \(magic 0x6e6f7420\)"):
        data.read_idx(lab)
    # read_idx reads raw (uncompressed) IDX files and other element types as well
    arr = np.arange(6, dtype=">i4").reshape(2, 3)
    open(lab, "wb").write(b"\x00\x00\x0c\x02" + np.array([2, 3], ">u4").tobytes() + arr.tobytes())
    out = data.read_idx(lab)
    assert out.dtype == np.int32 and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_missing_files_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPL_DATA_DIR", raising=False)
    with pytest.raises(data.DataNotFoundError) as e:
        data.load_mnist(kind="test", download=False)
    msg = str(e.value)
    cache = os.path.join(str(tmp_path / "cache"), "npl", "mnist")
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert cache in msg and "NPL_DATA_DIR" in msg and "download=False" in msg
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(data.DataNotFoundError) as e:
        data.load_mnist(str(tmp_path / "nowhere"), kind="test", download=False)
    msg = str(e.value)              # with data_dir only that folder is searched, and the advice says so
    assert "Put the files" in msg and "in %s (directly or in its 'mnist/' subfolder)" % (tmp_path / "nowhere") in msg
    assert "data_dir=None to use NPL_DATA_DIR" in msg and cache not in msg.split("Put the files")[1].split("or pass")[0]
    with pytest.raises(data.DataNotFoundError, match=r"tinyshakespeare\.txt not found.*npl/text"):
        data.load_text(download=False)


def _fake_urlopen(serve):
    """A urlopen stand-in: ``serve(url)`` returns bytes or raises (no network in tests)."""
    def urlopen(url, timeout=None):
        assert timeout is not None
        return io.BytesIO(serve(url))
    return urlopen


def test_download_tries_mirrors_verifies_and_writes_atomically(tmp_path, monkeypatch):
    src = _mnist_dir()
    monkeypatch.setattr(data, "_unreachable", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NPL_DATA_DIR", raising=False)
    calls = []

    def serve(url):
        calls.append(url)
        name = url.rsplit("/", 1)[-1]
        if url.startswith(data.MNIST_MIRRORS[0]):
            raise urllib.error.URLError("no route to host")
        body = open(os.path.join(src, name), "rb").read()
        if url.startswith(data.MNIST_MIRRORS[1]) and "labels" in name:
            return body[:-10]                                   # a mirror serving a broken copy
        return body

    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(serve))
    x, y = data.load_mnist(kind="test", normalize=False)
    assert int(x.sum(dtype=np.int64)) == PIXEL_SUMS["test"] and y[:10].tolist() == FIRST_LABELS["test"]
    cache = tmp_path / "cache" / "npl" / "mnist"
    assert sorted(os.listdir(cache)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # images: mirror 0 does not answer, mirror 1 serves; labels: mirror 0 is not asked again,
    # mirror 1's copy fails the checksum, mirror 2 serves
    assert sum("images" in c for c in calls) == 2 and sum("labels" in c for c in calls) == 2
    assert not any(c.startswith(data.MNIST_MIRRORS[0]) and "labels" in c for c in calls)
    # cached now: no further requests
    calls.clear()
    data.load_mnist(kind="test")
    assert calls == []

    # no network at all: the error lists each mirror's failure and where to put the files
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))

    monkeypatch.setattr(data, "_unreachable", {})
    calls.clear()

    def offline(url):
        calls.append(url)
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(offline))
    with pytest.raises(data.DataNotFoundError) as e:
        data.load_mnist(kind="train")
    msg = str(e.value)
    assert "offline" in msg and data.MNIST_MIRRORS[2] + "train-images-idx3-ubyte.gz" in msg
    assert os.path.join(str(tmp_path / "empty"), "npl", "mnist") in msg and "NPL_DATA_DIR" in msg
    assert not any(f.endswith(".part") for f in os.listdir(tmp_path / "empty" / "npl" / "mnist"))
    # a stalled network costs one timeout per mirror, not per mirror and file, also on the next call
    assert len(calls) == len(data.MNIST_MIRRORS)
    assert msg.count("skipped (the host did not answer") == len(data.MNIST_MIRRORS)
    with pytest.raises(data.DataNotFoundError, match="skipped"):
        data.load_mnist(kind="test")
    assert len(calls) == len(data.MNIST_MIRRORS)
    # an HTTP error is an answer: the host is asked again for the next file
    monkeypatch.setattr(data, "_unreachable", {})
    calls.clear()

    def not_found(url):
        calls.append(url)
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    monkeypatch.setattr(urllib.request, "urlopen", _fake_urlopen(not_found))
    with pytest.raises(data.DataNotFoundError, match="404"):
        data.load_mnist(kind="test")
    assert len(calls) == 2 * len(data.MNIST_MIRRORS)


def test_mnist_csv_kaggle_format(tmp_path):
    x, y = data.load_mnist(kind="test", normalize=False)
    rows = np.concatenate([y[:40, None], x[:40].reshape(40, -1)], axis=1)
    header = "label," + ",".join("pixel%d" % i for i in range(784))
    train_csv = tmp_path / "train.csv"
    np.savetxt(train_csv, rows, fmt="%d", delimiter=",", header=header, comments="")
    xc, yc = data.load_mnist_csv(str(train_csv))
    assert xc.shape == (40, 28, 28) and xc.dtype == np.float32 and yc.dtype == np.int64
    np.testing.assert_array_equal(yc, y[:40])
    np.testing.assert_allclose(xc, x[:40] / 255.0, rtol=1e-7, atol=0)
    xf, _ = data.load_mnist_csv(str(train_csv), flatten=True, normalize=False)
    np.testing.assert_array_equal(xf, x[:40].reshape(40, 784))
    # Kaggle's test.csv: pixels only; gzip-compressed files too
    test_csv = tmp_path / "test.csv.gz"
    with gzip.open(test_csv, "wt") as f:
        np.savetxt(f, rows[:5, 1:], fmt="%d", delimiter=",", header=header[6:], comments="")
    xt, yt = data.load_mnist_csv(str(test_csv), normalize=False)
    assert yt is None
    np.testing.assert_array_equal(xt, x[:5])
    bad = tmp_path / "bad.csv"
    np.savetxt(bad, rows[:3, :500], fmt="%d", delimiter=",")
    with pytest.raises(ValueError, match=r"bad\.csv: rows must have 784 values \(784 pixels\), got 500"):
        data.load_mnist_csv(str(bad))
    rows2 = rows[:3].copy()
    rows2[1, 9] = 300
    np.savetxt(bad, rows2, fmt="%d", delimiter=",", header=header, comments="")
    with pytest.raises(ValueError, match=r"pixel values must be 0\.\.255, got range \[0, 300\]"):
        data.load_mnist_csv(str(bad))


# ============================================================================ text
@pytest.fixture(scope="module")
def shakespeare():
    return data.load_text()


def test_tinyshakespeare_and_char_vocab(shakespeare):
    text = shakespeare
    assert len(text) == 1115394
    assert text.splitlines()[:5] == ["First Citizen:", "Before we proceed any further, hear me speak.",
                                     "", "All:", "Speak, speak."]
    assert text.splitlines()[-1] == "Whiles thou art waking."
    v = data.CharVocab.from_text(text)
    letters = [chr(c) for c in range(ord("A"), ord("Z") + 1)]
    letters += [c.lower() for c in letters]
    assert len(v) == 65 and set(v.itos) == set("\n !$&',-.3:;?") | set(letters)
    ids = v.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (1115394,)
    assert v.decode(ids) == text
    assert [v.itos[i] for i in ids[:5]] == list("First")
    with pytest.raises(ValueError, match=r"token '#' \(at position 2\) is not in the vocabulary"):
        v.encode("ab#")
    with pytest.raises(ValueError, match=r"ids must be in \[0, 65\), got range \[0, 65\]"):
        v.decode(np.array([0, 65]))


def test_word_vocab_cutoff_unk_and_round_trip(shakespeare):
    assert len(data.WordVocab.tokenize(shakespeare)) == 202651          # the README's word count
    w = data.WordVocab.from_text("b a c a b a d\ne a", max_size=3)
    assert w.itos == ["<unk>", "a", "b"] and w.unk_id == 0               # a:4, b:2, then cutoff
    np.testing.assert_array_equal(w.encode("a b c z"), [1, 2, 0, 0])
    assert w.decode(w.encode("b a a")) == "b a a"
    eos = data.WordVocab.from_text("x y\ny z\n", eos="<eos>", min_count=2)
    assert eos.itos == ["<unk>", "y", "<eos>"]                           # x, z below min_count
    np.testing.assert_array_equal(eos.encode("y x\n"), [1, 0, 2])
    full = data.WordVocab.from_text(shakespeare)
    head = shakespeare[:shakespeare.index("\n", 5000)]                  # whole words only
    toks = data.WordVocab.tokenize(head)
    assert full.decode(full.encode(head)).split(" ") == toks and "<unk>" not in toks
    top = data.WordVocab.from_text(shakespeare, max_size=100)
    ids = top.encode(shakespeare)
    assert len(top) == 100 and ids.max() == 99
    # the kept words are the 99 most frequent: each at least as frequent as any word mapped to <unk>
    counts = np.bincount(full.encode(shakespeare))
    kept = [full.stoi[t] for t in top.itos[1:]]
    dropped = np.setdiff1d(np.arange(1, len(full)), kept)
    assert counts[kept].min() >= counts[dropped].max()
    assert (ids == 0).sum() == counts[dropped].sum()


# ============================================================================ LM batches
def test_lm_batches_continuity_and_shift():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, size=1003)
    Bs, Ts = 4, 7
    L = 1003 // Bs                                                       # 250 ids per row
    batches = list(data.lm_batches(ids, Bs, Ts))
    assert len(batches) == (L - 1) // Ts == data.lm_num_batches(1003, Bs, Ts) == 35
    for i, (x, y) in enumerate(batches):
        assert x.shape == y.shape == (Bs, Ts) and x.dtype == np.int64
        for r in range(Bs):                                              # row r holds ids[r*L : r*L+L]
            np.testing.assert_array_equal(x[r], ids[r * L + i * Ts: r * L + (i + 1) * Ts])
            np.testing.assert_array_equal(y[r], ids[r * L + i * Ts + 1: r * L + (i + 1) * Ts + 1])
    for (x0, y0), (x1, _) in zip(batches, batches[1:]):
        np.testing.assert_array_equal(x1[:, 0], y0[:, -1])             # each row continues
    with pytest.raises(ValueError, match=r"ids has 20 tokens, too few for batch_size=4 and num_steps=7"):
        list(data.lm_batches(ids[:20], 4, 7))
    with pytest.raises(ValueError, match=r"ids must be a 1-D integer array, got shape \(2, 3\)"):
        data.lm_batches(np.zeros((2, 3), int), 1, 1)


def test_random_windows_are_seeded_shifted_slices():
    ids = np.arange(100, 400)                                            # value = 100 + position
    a = list(data.random_windows(ids, 5, 8, num_batches=6, seed=3))
    b = list(data.random_windows(ids, 5, 8, num_batches=6, seed=3))
    assert len(a) == 6
    starts = []
    for (x, y), (x2, y2) in zip(a, b):
        np.testing.assert_array_equal(x, x2)
        assert x.shape == (5, 8)
        np.testing.assert_array_equal(np.diff(x, axis=1), 1)            # contiguous windows
        np.testing.assert_array_equal(y, x + 1)                          # next token
        starts += (x[:, 0] - 100).tolist()
    assert min(starts) >= 0 and max(starts) <= 300 - 8 - 1 and len(set(starts)) > 10
    assert len(list(data.random_windows(ids, 5, 8))) == 300 // 40


# ============================================================================ sequences
def test_sine_windows_equal_np_sin_at_offsets():
    (X, y), (Xt, yt) = data.sine_windows(50, window=10, dt=0.1, n_test=20)
    assert X.shape == (50, 10, 1) and y.shape == (50, 1) and X.dtype == np.float32
    i, k = np.arange(50)[:, None], np.arange(10)
    np.testing.assert_allclose(X[..., 0], np.sin(0.1 * (i + k)), rtol=0, atol=1e-7)
    np.testing.assert_allclose(y[:, 0], np.sin(0.1 * (np.arange(50) + 10)), rtol=0, atol=1e-7)
    # test windows start after the last training sample (index 50 + 10 - 1 = 59)
    j = np.arange(20)[:, None]
    np.testing.assert_allclose(Xt[..., 0], np.sin(0.1 * (60 + j + k)), rtol=0, atol=1e-7)
    np.testing.assert_allclose(yt[:, 0], np.sin(0.1 * (70 + np.arange(20))), rtol=0, atol=1e-7)
    X2, y2 = data.sine_windows(30, window=5, dt=0.2, noise=0.1, random_offset=True, seed=4,
                               dtype=np.float64)
    X3, _ = data.sine_windows(30, window=5, dt=0.2, noise=0.1, random_offset=True, seed=4,
                              dtype=np.float64)
    np.testing.assert_array_equal(X2, X3)
    np.testing.assert_array_equal(X2[1:, :-1], X2[:-1, 1:])              # windows slide by one
    np.testing.assert_array_equal(y2[:-1, 0], X2[1:, -1, 0])


def test_sin_to_cos_pairs():
    X, Y, t = data.sin_to_cos(6, num_steps=8, dt=0.1, random_start=False, return_time=True)
    assert X.shape == Y.shape == (6, 8, 1)
    np.testing.assert_allclose(t, 0.1 * (np.arange(6)[:, None] * 8 + np.arange(8)), rtol=1e-12)
    np.testing.assert_allclose(X[..., 0], np.sin(t), atol=1e-7)
    np.testing.assert_allclose(Y[..., 0], np.cos(t), atol=1e-7)
    (Xa, Ya, ta), (Xb, Yb, tb) = data.sin_to_cos(4, num_steps=5, n_test=3, seed=1, return_time=True)
    assert Xa.shape == (4, 5, 1) and Xb.shape == (3, 5, 1)
    np.testing.assert_allclose(np.diff(ta, axis=1), 0.1, rtol=1e-9)
    assert 0 <= ta.min() and tb[:, 0].max() < 2 * np.pi
    np.testing.assert_allclose(Yb[..., 0], np.cos(tb), atol=1e-7)
    (Xc, _, _), _ = data.sin_to_cos(4, num_steps=5, n_test=3, seed=1, return_time=True)
    np.testing.assert_array_equal(Xc, Xa)


def test_minibatches_and_one_hot():
    a, b = np.arange(10), np.arange(10) * 2
    got = list(data.minibatches(a, b, batch_size=4, seed=0))
    assert [len(x) for x, _ in got] == [4, 4, 2]
    assert sorted(np.concatenate([x for x, _ in got]).tolist()) == list(range(10))
    assert all(np.array_equal(y, 2 * x) for x, y in got)
    assert len(list(data.minibatches(a, batch_size=4, drop_remainder=True))) == 2
    np.testing.assert_array_equal(data.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got range \[0, 3\]"):
        data.one_hot(np.array([0, 3]), 3)
    with pytest.raises(ValueError, match=r"arrays\[1\] has length 3, expected 10"):
        list(data.minibatches(a, a[:3], batch_size=2))
