"""npl.losses against float64 central differences, closed forms and TensorFlow 1 (graph mode)."""
import numpy as np
import pytest

from npl import losses as L
from helpers import numeric_grads, rel_err, assert_close

REDUCTIONS = L.Reduction.all()


def _fd_check(fn, arrays, analytic, tol=1e-7):
    num = numeric_grads(fn, arrays)
    for n, a in zip(num, analytic):
        assert_close(a, n, tol, "gradient vs central differences")


# ----------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_softmax_cross_entropy_fd(rng, reduction):
    z = rng.standard_normal((5, 4))
    y = rng.random((5, 4))                        # soft labels, rows not summing to 1
    w = rng.random((5,)) * (rng.random(5) > 0.3)  # some zero weights
    loss, d = L.softmax_cross_entropy(y, z, weights=w, label_smoothing=0.1, reduction=reduction)
    _fd_check(lambda: L.softmax_cross_entropy(y, z, weights=w, label_smoothing=0.1,
                                              reduction=reduction)[0], [z], [d])
    # closed form of the per-example loss
    ys = y * 0.9 + 0.1 / 4
    per = -(ys * (z - np.log(np.exp(z).sum(1, keepdims=True)))).sum(1)
    den = {L.Reduction.SUM: 1, L.Reduction.MEAN: w.sum(), L.Reduction.SUM_OVER_BATCH_SIZE: 5,
           L.Reduction.SUM_BY_NONZERO_WEIGHTS: np.count_nonzero(w)}[reduction]
    assert abs(loss - (per * w).sum() / den) < 1e-12


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sparse_softmax_cross_entropy_fd(rng, reduction):
    z = rng.standard_normal((3, 2, 6))            # leading shape [3, 2]
    lab = rng.integers(0, 6, (3, 2))
    w = rng.random((3, 1)) + 0.1                  # broadcast over the second axis
    loss, d = L.sparse_softmax_cross_entropy(lab, z, weights=w, reduction=reduction)
    _fd_check(lambda: L.sparse_softmax_cross_entropy(lab, z, weights=w, reduction=reduction)[0], [z], [d])
    per = np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, lab[..., None], -1)[..., 0]
    wb = np.broadcast_to(w, (3, 2))
    den = {L.Reduction.SUM: 1, L.Reduction.MEAN: wb.sum(), L.Reduction.SUM_OVER_BATCH_SIZE: 6,
           L.Reduction.SUM_BY_NONZERO_WEIGHTS: 6}[reduction]
    assert abs(loss - (per * wb).sum() / den) < 1e-12


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mean_squared_error_fd(rng, reduction):
    p = rng.standard_normal((4, 3))
    y = rng.standard_normal((4, 3))
    w = rng.random((1, 3))
    loss, d = L.mean_squared_error(y, p, weights=w, reduction=reduction)
    _fd_check(lambda: L.mean_squared_error(y, p, weights=w, reduction=reduction)[0], [p], [d])
    assert_close(d, 2 * (p - y) * np.broadcast_to(w, p.shape) / {
        L.Reduction.SUM: 1, L.Reduction.MEAN: 4 * w.sum(), L.Reduction.SUM_OVER_BATCH_SIZE: 12,
        L.Reduction.SUM_BY_NONZERO_WEIGHTS: 12}[reduction], 1e-12, "closed-form MSE gradient")


@pytest.mark.parametrize("avg_t", [True, False])
@pytest.mark.parametrize("avg_b", [True, False])
def test_sequence_loss_fd(rng, avg_t, avg_b):
    T, B, V = 4, 3, 5
    z = rng.standard_normal((T, B, V))
    t = rng.integers(0, V, (T, B))
    w = rng.random((T, B))
    w[:, 1] = 0.0                                    # an all-zero row: the 1e-12 keeps it finite
    loss, d = L.sequence_loss(z, t, w, avg_t, avg_b)
    _fd_check(lambda: L.sequence_loss(z, t, w, avg_t, avg_b)[0], [z], [d])
    ce = np.log(np.exp(z).sum(-1)) - np.take_along_axis(z, t[..., None], -1)[..., 0]
    per = (ce * w).sum(0)
    if avg_t:
        per = per / (w.sum(0) + 1e-12)
    assert abs(loss - per.sum() / (B if avg_b else 1)) < 1e-12
    assert np.all(d[:, 1] == 0) and np.isfinite(loss)


@pytest.mark.parametrize("layout", ["time_major", "batch_major", "transposed_view"])
def test_sequence_loss_layouts_fd(rng, layout):
    """Gradients for every memory layout of the logits (a transposed view included)."""
    T, B, V = 3, 4, 5
    z = rng.standard_normal((T, B, V) if layout == "time_major" else (B, T, V))
    if layout == "transposed_view":
        z = np.ascontiguousarray(z.transpose(1, 0, 2)).transpose(1, 0, 2)
    t = rng.integers(0, V, z.shape[:2])
    w = rng.random(z.shape[:2])
    tm = layout == "time_major"
    loss, d = L.sequence_loss(z, t, w, time_major=tm)
    assert d.shape == z.shape
    zc = np.ascontiguousarray(z)
    _fd_check(lambda: L.sequence_loss(zc, t, w, time_major=tm)[0], [zc], [d])
    ce_sparse, d_sparse = L.sparse_softmax_cross_entropy(t, z, weights=w, reduction=L.Reduction.SUM)
    assert np.isfinite(ce_sparse) and d_sparse.shape == z.shape
    _fd_check(lambda: L.sparse_softmax_cross_entropy(t, zc, weights=w, reduction=L.Reduction.SUM)[0],
              [zc], [d_sparse])


def test_sequence_loss_by_example_cotangent_fd(rng):
    T, B, V = 3, 4, 6
    z = rng.standard_normal((T, B, V))
    t = rng.integers(0, V, (T, B))
    w = rng.random((T, B))
    g = rng.standard_normal(B)
    per, d = L.sequence_loss_by_example(z, t, w, d_loss=g)
    assert per.shape == (B,)
    _fd_check(lambda: float((L.sequence_loss_by_example(z, t, w)[0] * g).sum()), [z], [d])


def test_sequence_loss_layouts_agree(rng):
    """A list of [B, V] steps, a [T, B, V] array and a [B, T, V] array give the same loss/gradient."""
    T, B, V = 5, 2, 7
    z = rng.standard_normal((T, B, V)).astype(np.float32)
    t = rng.integers(0, V, (T, B))
    w = rng.random((T, B)).astype(np.float32)
    l_arr, d_arr = L.sequence_loss(z, t, w)
    l_list, d_list = L.sequence_loss(list(z), list(t), list(w))
    z_bm = np.ascontiguousarray(z.transpose(1, 0, 2))     # a real [B, T, V] array, not a view
    l_bm, d_bm = L.sequence_loss(z_bm, np.ascontiguousarray(t.T), np.ascontiguousarray(w.T),
                                 time_major=False)
    assert isinstance(d_list, list) and len(d_list) == T
    assert abs(l_arr - l_list) < 1e-6 and abs(l_arr - l_bm) < 1e-6
    assert_close(np.stack(d_list), d_arr, 1e-6, "list vs array")
    assert_close(d_bm.transpose(1, 0, 2), d_arr, 1e-6, "batch-major vs time-major")
    assert d_arr.dtype == np.float32


# ----------------------------------------------------------------------------- stability, errors
def test_log_sum_exp_stability():
    z = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], np.float32)
    loss, d = L.sparse_softmax_cross_entropy(np.array([1, 1]), z)
    # row 0: loss = 1000 (exactly, after the shift); row 1: loss = 0
    assert np.isfinite(loss) and abs(loss - 500.0) < 1e-3
    assert np.all(np.isfinite(d))
    assert_close(d, np.array([[0.5, -0.5, 0], [0, 0, 0]]), 1e-6, "saturated softmax gradient")
    loss2, _ = L.softmax_cross_entropy(np.eye(3)[[1, 1]], z)
    assert abs(loss2 - loss) < 1e-3


def test_zero_weights_give_zero_loss():
    z = np.ones((2, 3))
    loss, d = L.sparse_softmax_cross_entropy([0, 1], z, weights=0.0)
    assert loss == 0.0 and not d.any()


def test_errors_name_the_argument():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*max 3"):
        L.sparse_softmax_cross_entropy(np.array([0, 3]), z)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\).*min -1"):
        L.sparse_softmax_cross_entropy(np.array([-1, 0]), z)
    with pytest.raises(TypeError, match="labels must be an integer array"):
        L.sparse_softmax_cross_entropy(np.array([0.0, 1.0]), z)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        L.sparse_softmax_cross_entropy(np.array([0, 1, 2]), z)
    with pytest.raises(ValueError, match=r"onehot_labels must have the shape of logits \(2, 3\)"):
        L.softmax_cross_entropy(np.zeros((2, 4)), z)
    with pytest.raises(ValueError, match=r"labels must have the shape of predictions"):
        L.mean_squared_error(np.zeros(3), np.zeros((3, 1)))
    bad = z.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"logits must be finite.*\(1, 2\)"):
        L.sparse_softmax_cross_entropy(np.array([0, 1]), bad)
    bad[1, 2] = np.inf
    with pytest.raises(ValueError, match="logits must be finite"):
        L.softmax_cross_entropy(np.eye(3)[[0, 1]], bad)
    with pytest.raises(ValueError, match="predictions must be finite"):
        L.mean_squared_error(np.zeros(2), np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match="weights must be a scalar or broadcastable"):
        L.sparse_softmax_cross_entropy(np.array([0, 1]), z, weights=np.ones(3))
    with pytest.raises(ValueError, match="reduction must be one of"):
        L.sparse_softmax_cross_entropy(np.array([0, 1]), z, reduction="none")
    with pytest.raises(ValueError, match="Lengths of logits, weights, and targets must be the same"):
        L.sequence_loss([z, z], [np.array([0, 1])], [np.ones(2), np.ones(2)])
    with pytest.raises(ValueError, match=r"targets must be in \[0, 3\)"):
        L.sequence_loss([z], [np.array([0, 5])], [np.ones(2)])
    with pytest.raises(ValueError, match=r"weights must have shape \[time, batch\] = \(1, 2\)"):
        L.sequence_loss(z[None], np.zeros((1, 2), int), np.ones((2, 1)))
    with pytest.raises(ValueError, match="softmax_loss_function"):
        L.sequence_loss([z], [np.array([0, 1])], [np.ones(2)], softmax_loss_function=lambda **k: 0)
    with pytest.raises(TypeError, match="logits must be float32 or float64"):
        L.sparse_softmax_cross_entropy(np.array([0, 1]), np.zeros((2, 3), int))


def test_get_by_name():
    assert L.get("mse") is L.mean_squared_error
    assert L.get("sparse_softmax_cross_entropy") is L.sparse_softmax_cross_entropy
    with pytest.raises(ValueError, match="loss must be a callable"):
        L.get("hinge")


# ----------------------------------------------------------------------------- TensorFlow
def _legacy_sequence_loss_by_example(tf, logits, targets, weights, average_across_timesteps):
    """tf.contrib.legacy_seq2seq.sequence_loss_by_example (TF 1.x source), which TF 2 no longer
    ships, transcribed onto tf ops: add_n of weighted sparse cross entropies, / (add_n(w) + 1e-12)."""
    log_perp_list = []
    for logit, target, weight in zip(logits, targets, weights):
        crossent = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.reshape(target, [-1]),
                                                                  logits=logit)
        log_perp_list.append(crossent * weight)
    log_perps = tf.add_n(log_perp_list)
    if average_across_timesteps:
        total_size = tf.add_n(weights)
        total_size += 1e-12
        log_perps /= total_size
    return log_perps


def test_against_tensorflow(rng):
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    f32 = np.float32
    B, C = 6, 5
    z = rng.standard_normal((B, C)).astype(f32) * 3
    lab = rng.integers(0, C, B)
    onehot = np.eye(C, dtype=f32)[lab]
    soft = rng.random((B, C)).astype(f32)
    soft /= soft.sum(1, keepdims=True)   # TF's xent gradient is softmax - labels: right only for
    #                                      distributions (npl's is exact for any labels, see the fd test)
    w = (rng.random(B) * (rng.random(B) > 0.3)).astype(f32)
    p = rng.standard_normal((B, 3)).astype(f32)
    y = rng.standard_normal((B, 3)).astype(f32)
    wm = rng.random((B, 1)).astype(f32)
    wi = rng.integers(0, 3, B)
    wi[1] = 0
    T = 4
    zs = rng.standard_normal((T, B, C)).astype(f32)
    ts = rng.integers(0, C, (T, B))
    ws = rng.random((T, B)).astype(f32)
    ws[:, 2] = 0
    g = tf.Graph()
    cases = {}
    with g.as_default():
        zt, pt, zst = tf.constant(z), tf.constant(p), tf.constant(zs)
        for red in REDUCTIONS:
            cases["sce", red] = v1.losses.softmax_cross_entropy(soft, zt, weights=w, label_smoothing=0.2,
                                                                reduction=red), zt
            cases["onehot", red] = v1.losses.softmax_cross_entropy(onehot, zt, reduction=red), zt
            cases["sparse", red] = v1.losses.sparse_softmax_cross_entropy(lab, zt, weights=w,
                                                                          reduction=red), zt
            cases["mse", red] = v1.losses.mean_squared_error(y, pt, weights=wm, reduction=red), pt
            # TF1's input forms: labels [B, 1] and weights [B, 1] squeezed, integer weights cast
            cases["sparse_b1", red] = v1.losses.sparse_softmax_cross_entropy(
                lab[:, None], zt, weights=wi[:, None], reduction=red), zt
            cases["mse_int", red] = v1.losses.mean_squared_error(y, pt, weights=wi[:, None], reduction=red), pt
        for avg_t in (True, False):
            for avg_b in (True, False):
                per = _legacy_sequence_loss_by_example(tf, tf.unstack(zst), list(ts), list(ws), avg_t)
                cost = tf.reduce_sum(per)
                if avg_b:
                    cost = cost / tf.cast(tf.shape(ts[0])[0], cost.dtype)
                cases["seq", avg_t, avg_b] = cost, zst
        fetch = {k: (loss, tf.gradients(loss, [x])[0]) for k, (loss, x) in cases.items()}
        with v1.Session(graph=g) as s:
            got = s.run(fetch)
    worst = 0.0
    for key, (tl, tg) in got.items():
        if key[0] == "sce":
            nl, nd = L.softmax_cross_entropy(soft, z, weights=w, label_smoothing=0.2, reduction=key[1])
        elif key[0] == "onehot":
            nl, nd = L.softmax_cross_entropy(onehot, z, reduction=key[1])
        elif key[0] == "sparse":
            nl, nd = L.sparse_softmax_cross_entropy(lab, z, weights=w, reduction=key[1])
        elif key[0] == "mse":
            nl, nd = L.mean_squared_error(y, p, weights=wm, reduction=key[1])
        elif key[0] == "sparse_b1":
            nl, nd = L.sparse_softmax_cross_entropy(lab[:, None], z, weights=wi[:, None], reduction=key[1])
        elif key[0] == "mse_int":
            nl, nd = L.mean_squared_error(y, p, weights=wi[:, None], reduction=key[1])
        else:
            nl, nd = L.sequence_loss(zs, ts, ws, key[1], key[2])
        e = max(rel_err(nl, tl), rel_err(nd, tg))
        worst = max(worst, e)
        assert e < 2e-6, "%s: relative error %.3g vs TensorFlow" % (key, e)
    print("losses vs TF: max relative error %.2e" % worst)
