"""sequence_mask, boolean_mask, reverse_sequence and embedding_lookup: forwards against plain
per-element loops / NumPy indexing, backwards against float64 central finite differences."""
import numpy as np
import pytest

import npl
from helpers import check_grads, numpy_backend, rel_err  # noqa: F401


def _rng(*parts):
    return np.random.default_rng([sum(ord(c) * (k + 1) for k, c in enumerate(str(p))) for p in parts])


# ----------------------------------------------------------------------------- sequence_mask
def _naive_mask(lengths, maxlen):
    lengths = np.asarray(lengths)
    out = np.zeros(lengths.shape + (maxlen,), bool)
    for idx in np.ndindex(*lengths.shape):
        for j in range(maxlen):
            out[idx + (j,)] = j < lengths[idx]
    return out


@pytest.mark.parametrize("lengths", [np.int64(3), [1, 3, 0, 2], [[2, 0], [4, 1], [3, 3]]],
                         ids=["rank0", "rank1", "rank2"])
@pytest.mark.parametrize("maxlen", [None, 0, 2, 6])
def test_sequence_mask(lengths, maxlen):
    m = npl.sequence_mask(lengths, maxlen)
    want_len = int(np.max(lengths)) if maxlen is None else maxlen
    ref = _naive_mask(lengths, want_len)
    assert m.dtype == np.bool_
    assert m.shape == np.shape(lengths) + (want_len,)
    assert np.array_equal(m, ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_sequence_mask_dtype(dtype):
    m = npl.sequence_mask(np.array([2, 0, 3]), 4, dtype=dtype)
    assert m.dtype == dtype
    assert np.array_equal(m, _naive_mask([2, 0, 3], 4).astype(dtype))


def test_sequence_mask_documented_example():
    # tf.sequence_mask([1, 3, 2], 5) from TensorFlow's documentation
    want = [[True, False, False, False, False],
            [True, True, True, False, False],
            [True, True, False, False, False]]
    assert np.array_equal(npl.sequence_mask([1, 3, 2], 5), want)


# ----------------------------------------------------------------------------- boolean_mask
BM_CASES = {
    # name: (tensor shape, mask shape, axis, plain numpy indexing)
    "axis0_1d": ((5, 3), (5,), None, lambda t, m: t[m]),
    "axis0_3d_tensor": ((4, 2, 3), (4,), 0, lambda t, m: t[m]),
    "axis1": ((3, 5, 2), (5,), 1, lambda t, m: t[:, m]),
    "axis_neg": ((3, 5), (5,), -1, lambda t, m: t[:, m]),
    "multi_dim_axis0": ((3, 4, 2), (3, 4), 0, lambda t, m: t[m]),
    "multi_dim_axis1": ((2, 3, 4), (3, 4), 1, lambda t, m: t[:, m]),
    "all_false": ((4, 2), (4,), 0, lambda t, m: t[m]),
}


def _bm_case(name, rng):
    tshape, mshape, axis, ref = BM_CASES[name]
    t = rng.standard_normal(tshape)
    m = rng.random(mshape) < 0.5
    if name == "all_false":
        m[...] = False
    else:
        m.flat[0], m.flat[-1] = True, False      # at least one kept, one dropped
    return t, m, axis, ref


@pytest.mark.parametrize("name", sorted(BM_CASES))
def test_boolean_mask_forward(name):
    t, m, axis, ref = _bm_case(name, _rng(name))
    out = npl.boolean_mask(t, m, axis=axis)
    want = ref(t, m)
    assert out.shape == want.shape
    assert np.array_equal(out, want)
    # the naive loop over the masked positions, in row-major order
    a = 0 if axis is None else axis % t.ndim
    rows = [t[(slice(None),) * a + idx] for idx in np.ndindex(*m.shape) if m[idx]]
    loop = np.stack(rows, axis=a) if rows else np.zeros(want.shape)
    assert np.array_equal(out, loop)


@pytest.mark.parametrize("name", sorted(BM_CASES))
def test_boolean_mask_backward_fd(name):
    rng = _rng(name, "bw")
    t, m, axis, _ = _bm_case(name, rng)
    out, tr = npl.boolean_mask(t, m, axis=axis, return_trace=True)
    W = rng.standard_normal(out.shape)
    d = tr.backward(W)
    assert d.shape == t.shape and d.dtype == t.dtype
    check_grads(lambda: float((npl.boolean_mask(t, m, axis=axis) * W).sum()), [t], [d], ["tensor"])
    # dropped positions get exactly zero
    a = 0 if axis is None else axis % t.ndim
    dropped = d[(slice(None),) * a + np.nonzero(~m)]
    assert not dropped.any()


# ----------------------------------------------------------------------------- reverse_sequence
def _naive_reverse(x, L, seq_axis, batch_axis):
    out = x.copy()
    for b in range(x.shape[batch_axis]):
        for t in range(L[b]):
            src = [slice(None)] * x.ndim
            dst = [slice(None)] * x.ndim
            src[batch_axis] = dst[batch_axis] = b
            src[seq_axis], dst[seq_axis] = L[b] - 1 - t, t
            out[tuple(dst)] = x[tuple(src)]
    return out


RS_CASES = [  # (shape, seq_axis, batch_axis)
    ((3, 5, 2), 1, 0), ((5, 3, 2), 0, 1), ((3, 2, 5), 2, 0), ((2, 5, 3), 1, 2),
    ((3, 5), 1, 0), ((5, 3), 0, 1), ((3, 5, 2), -2, 0),
]


@pytest.mark.parametrize("shape,seq_axis,batch_axis", RS_CASES)
def test_reverse_sequence_forward(shape, seq_axis, batch_axis):
    rng = _rng(shape, seq_axis, batch_axis)
    x = rng.standard_normal(shape)
    B, T = shape[batch_axis], shape[seq_axis]
    L = rng.integers(0, T + 1, size=B)
    L[0], L[-1] = T, 0
    out = npl.reverse_sequence(x, L, seq_axis=seq_axis, batch_axis=batch_axis)
    ref = _naive_reverse(x, L, seq_axis % x.ndim, batch_axis % x.ndim)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert np.array_equal(out, ref)
    # an involution: applying it twice gives back the input
    assert np.array_equal(npl.reverse_sequence(out, L, seq_axis=seq_axis, batch_axis=batch_axis), x)


def test_reverse_sequence_tf_aliases_and_doc_example():
    # tf.reverse_sequence documentation example (seq_dim=1, batch_dim=0)
    x = np.arange(4 * 8).reshape(4, 8)
    L = np.array([7, 2, 3, 5])
    out = npl.reverse_sequence(x, L, seq_dim=1, batch_dim=0)
    assert np.array_equal(out[0], [6, 5, 4, 3, 2, 1, 0, 7])
    assert np.array_equal(out[1], [9, 8, 10, 11, 12, 13, 14, 15])
    assert np.array_equal(out, _naive_reverse(x, L, 1, 0))


@pytest.mark.parametrize("shape,seq_axis,batch_axis", RS_CASES[:5])
def test_reverse_sequence_is_its_own_backward(shape, seq_axis, batch_axis):
    """d/dx <W, reverse_sequence(x, L)> = reverse_sequence(W, L), checked by FD."""
    rng = _rng(shape, seq_axis, batch_axis, "bw")
    x = rng.standard_normal(shape)
    B, T = shape[batch_axis], shape[seq_axis]
    L = rng.integers(0, T + 1, size=B)
    W = rng.standard_normal(shape)
    d = npl.reverse_sequence(W, L, seq_axis=seq_axis, batch_axis=batch_axis)
    check_grads(lambda: float((npl.reverse_sequence(x, L, seq_axis=seq_axis, batch_axis=batch_axis)
                               * W).sum()), [x], [d], ["input"])


# ----------------------------------------------------------------------------- embedding_lookup
@pytest.mark.parametrize("ids_shape", [(5,), (2, 3), (2, 2, 2), ()])
def test_embedding_lookup_forward(ids_shape):
    rng = _rng(ids_shape)
    params = rng.standard_normal((6, 4))
    ids = rng.integers(0, 6, size=ids_shape)
    out = npl.nn.embedding_lookup(params, ids)
    assert out.shape == tuple(ids_shape) + (4,)
    for idx in np.ndindex(*ids.shape):
        assert np.array_equal(out[idx], params[ids[idx]])
    # a one-element list of params is accepted, as in TensorFlow
    assert np.array_equal(npl.nn.embedding_lookup([params], ids), out)


@pytest.mark.parametrize("ids", [[0, 3, 5], [[1, 1], [4, 1]], [2, 2, 2, 2]], ids=["distinct", "2d_repeats", "all_same"])
def test_embedding_lookup_backward_fd(ids):
    rng = _rng(ids, "bw")
    params = rng.standard_normal((6, 3))
    ids = np.array(ids)
    out, tr = npl.nn.embedding_lookup(params, ids, return_trace=True)
    W = rng.standard_normal(out.shape)
    g = tr.backward(W)
    assert isinstance(g, npl.IndexedSlices)
    assert g.dense_shape == (6, 3)
    assert g.values.shape == (ids.size, 3) and g.indices.shape == (ids.size,)
    assert np.array_equal(g.indices, ids.reshape(-1))
    dense = g.to_dense()
    check_grads(lambda: float((npl.nn.embedding_lookup(params, ids) * W).sum()), [params], [dense],
                ["params"])
    # repeated ids add up: row r of the dense gradient is the sum of W over the positions of r
    W2 = W.reshape(-1, 3)
    for r in range(6):
        want = W2[ids.reshape(-1) == r].sum(axis=0)
        assert rel_err(dense[r], want) <= 1e-14
    untouched = np.setdiff1d(np.arange(6), ids)
    assert not dense[untouched].any()


def test_indexed_slices_to_dense_float32():
    v = np.ones((3, 2), np.float32)
    s = npl.IndexedSlices(v, np.array([1, 1, 0]), (3, 2))
    d = s.to_dense()
    assert d.dtype == np.float32 and s.dtype == np.float32 and s.shape == (3, 2)
    assert np.array_equal(d, [[1, 1], [2, 2], [0, 0]])


# ----------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize("dtype", [np.uint64, np.uint32, np.uint8, np.int16])
def test_reverse_sequence_unsigned_and_small_int_lengths(dtype):
    """Any integer dtype of seq_lengths gives the int64 answer (uint64 - int is float64 in NumPy,
    which is not an index)."""
    rng = _rng("rs", np.dtype(dtype).name)
    x = rng.standard_normal((3, 5, 2))
    L = rng.integers(0, 6, size=3)
    L[0] = 5
    out = npl.reverse_sequence(x, L.astype(dtype), seq_axis=1)
    assert np.array_equal(out, _naive_reverse(x, L, 1, 0))
    with pytest.raises(ValueError, match=r"seq_lengths must be in \[0, 5\], got min 0 max 6"):
        npl.reverse_sequence(x, np.array([1, 6, 0], dtype), seq_axis=1)


def test_sequence_mask_dtype_errors():
    for bad in ("foo", object, np.complex64, str):
        with pytest.raises(TypeError, match="dtype must be a bool, integer or float dtype"):
            npl.sequence_mask([1, 2], 3, dtype=bad)
    assert npl.sequence_mask([1, 2], 3, dtype=None).dtype == np.bool_      # TF: None = no cast
    with pytest.raises(TypeError, match="lengths must be an integer array, got dtype float64"):
        npl.sequence_mask(np.array([1.0, 2.0]), 3)         # an explicit float array stays an error


def test_empty_python_lists_are_empty_integer_arrays():
    """TF takes [] as an empty id / length list: embedding_lookup(params, []) has shape (0, D),
    sequence_mask([]) shape (0, 0) (maxlen=4: (0, 4)), reverse_sequence on an empty batch."""
    rng = _rng("empty")
    params = rng.standard_normal((5, 3))
    out = npl.nn.embedding_lookup(params, [])
    assert out.shape == (0, 3) and out.dtype == params.dtype
    out, tr = npl.nn.embedding_lookup(params, [[]], return_trace=True)
    assert out.shape == (1, 0, 3)
    g = tr.backward(np.zeros((1, 0, 3)))
    assert np.array_equal(g.to_dense(), np.zeros((5, 3)))
    assert npl.sequence_mask([]).shape == (0, 0)
    m = npl.sequence_mask([], 4, dtype=np.float32)
    assert m.shape == (0, 4) and m.dtype == np.float32
    x = rng.standard_normal((0, 4))
    assert npl.reverse_sequence(x, [], seq_axis=1).shape == (0, 4)


def test_indexed_slices_checks_indices_and_rows():
    rng = _rng("slices")
    vals = rng.standard_normal((2, 3))
    with pytest.raises(TypeError, match="IndexedSlices indices must be an integer array, got dtype float64"):
        npl.IndexedSlices(vals, np.array([0.0, 1.0]), (4, 3))
    with pytest.raises(ValueError, match=r"2 indices need values of shape \(2, 3\).*got \(1, 3\)"):
        npl.IndexedSlices(vals[:1], np.array([0, 1]), (4, 3))
    with pytest.raises(ValueError, match=r"need values of shape \(2, 3\).*got \(2, 2\)"):
        npl.IndexedSlices(vals[:, :2], np.array([0, 1]), (4, 3))
    with pytest.raises(ValueError, match="dense_shape must be a non-empty sequence of non-negative"):
        npl.IndexedSlices(vals, np.array([0, 1]), (-4, 3))
    for bad in (np.array([-1, 0]), np.array([0, 4])):
        s = npl.IndexedSlices(vals, bad, (4, 3))
        with pytest.raises(ValueError, match=r"IndexedSlices indices must be in \[0, 4\) \(the rows of "
                                             r"dense_shape \(4, 3\)\), got min %d max %d"
                                             % (bad.min(), bad.max())):
            s.to_dense()
    # a list of indices is accepted; values of shape indices.shape + dense_shape[1:] too
    s = npl.IndexedSlices(vals, [3, 3], (4, 3))
    assert np.array_equal(s.to_dense()[3], vals.sum(axis=0)) and not s.to_dense()[:3].any()
    v4 = rng.standard_normal((2, 2, 3))
    d = npl.IndexedSlices(v4, np.array([[0, 1], [1, 2]]), (4, 3)).to_dense()
    assert rel_err(d[1], v4[0, 1] + v4[1, 0]) <= 1e-15 and not d[3].any()
