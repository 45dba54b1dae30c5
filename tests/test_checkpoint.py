"""npl.checkpoint: TF variable names, exact round trips (training resumes identically), atomic
writes, and corrupt / mismatched files that raise clearly and overwrite nothing."""
import os
import zipfile

import numpy as np
import pytest

import npl
from npl import checkpoint as ckpt, train, losses, layers as L
from helpers import numpy_backend  # noqa: F401  (autouse: these tests run on NumPy)


def _model(seed=0):
    return L.Sequential([L.Embedding(7, 4, seed=seed), L.RNN(npl.rnn.BasicLSTMCell(5, seed=seed + 1)),
                         L.Dense(7, seed=seed + 2)])


def _step(model, opt, ids, tgt):
    model.zero_grad()
    logits, tr = model.forward(ids)
    loss, d = losses.sparse_softmax_cross_entropy(tgt, logits)
    tr.backward(d)
    opt.update(model.params, model.grads)
    return loss


def _snapshot(params):
    return {k: np.array(v) for k, v in params.items()}


@pytest.mark.parametrize("make_opt", [lambda: train.AdamOptimizer(0.01),
                                      lambda: train.RMSPropOptimizer(0.01, momentum=0.5, centered=True),
                                      lambda: train.MomentumOptimizer(0.1, 0.9, use_nesterov=True)])
def test_round_trip_resumes_training_exactly(rng, tmp_path, make_opt):
    ids, tgt = rng.integers(0, 7, (3, 5)), rng.integers(0, 7, (3, 5))
    model, opt = _model(), make_opt()
    for _ in range(3):
        _step(model, opt, ids, tgt)
    path = str(tmp_path / "ck.npz")
    assert ckpt.save(path, model.params, opt) == path
    after_save = [_step(model, opt, ids, tgt) for _ in range(2)]
    final = _snapshot(model.params)
    model2, opt2 = _model(seed=10), make_opt()           # different weights, no optimizer state
    restored = ckpt.restore(path, model2.params, opt2)
    assert set(restored) == set(np.load(path).files)
    resumed = [_step(model2, opt2, ids, tgt) for _ in range(2)]
    assert resumed == after_save                                       # bit-identical continuation
    for k, v in model2.params.items():
        assert np.array_equal(v, final[k]), k


def test_keys_are_tensorflow_names(rng, tmp_path):
    """The .npz keys equal the variable names of the same model + Adam in a TF1 graph trained
    with a global step (the optimizer's step count is saved as ``global_step``, int64)."""
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    model, opt = _model(), train.AdamOptimizer()
    path = str(tmp_path / "ck.npz")
    ckpt.save(path, model.params, opt)                 # before any step: slots at initial values
    g = tf.Graph()
    with g.as_default():
        emb = v1.get_variable("embedding/embeddings", [7, 4])
        out, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.BasicLSTMCell(5), tf.nn.embedding_lookup(emb, [[1, 2]]),
                                   dtype=tf.float32)
        loss = tf.reduce_sum(v1.layers.dense(out, 7))
        gs = v1.train.get_or_create_global_step()
        v1.train.AdamOptimizer().minimize(loss, global_step=gs)
        tf_names = sorted(v.op.name for v in v1.global_variables())
        assert gs.dtype.base_dtype == tf.int64
    assert sorted(np.load(path, allow_pickle=False).files) == tf_names
    assert [n for n, _ in ckpt.list_variables(path)] == tf_names
    st = np.load(path)
    assert st["beta1_power"].shape == () and st["beta1_power"] == np.float32(0.9)
    assert not st["dense/kernel/Adam"].any()
    assert st["global_step"].dtype == np.int64 and st["global_step"] == 0


def test_resume_continues_a_learning_rate_schedule(rng, tmp_path):
    """The step count is saved: a schedule lambda step: ... continues after restore, so the resumed
    run equals the uninterrupted one bit for bit (before, the count restarted at 0)."""
    def run(model, opt, steps, start=0):
        for k in range(start, start + steps):
            ids = np.random.default_rng(k).integers(0, 7, (3, 4))
            y, tr = model.forward(ids)
            tr.backward(np.random.default_rng(100 + k).standard_normal(y.shape).astype(np.float32))
            opt.apply_gradients([(model.grads[n], v, n) for n, v in model.params.items()])
            model.zero_grad()
    for make in (lambda: train.AdamOptimizer(lambda step: 0.05 / (1 + step)),
                 lambda: train.MomentumOptimizer(lambda step: 0.1 * 0.5 ** step, 0.9)):
        whole, opt = _model(), make()
        run(whole, opt, 6)
        part, opt1 = _model(), make()
        run(part, opt1, 3)
        path = str(tmp_path / "mid.npz")
        ckpt.save(path, part.params, opt1)
        resumed, opt2 = _model(seed=33), make()
        ckpt.restore(path, resumed.params, opt2)
        assert opt2.iterations == 3
        run(resumed, opt2, 3, start=3)
        for k, v in whole.params.items():
            assert np.array_equal(v, resumed.params[k]), k
    # a file saved before the count was kept still restores (the count starts at 0)
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if k != "global_step"}
    np.savez(str(tmp_path / "old.npz"), **old)
    opt3 = train.MomentumOptimizer(0.1, 0.9)
    ckpt.restore(str(tmp_path / "old.npz"), _model().params, opt3)
    assert opt3.iterations == 0


def test_restore_reports_every_mismatch_and_changes_nothing(rng, tmp_path):
    model = _model()
    path = str(tmp_path / "ck.npz")
    vals = _snapshot(model.params)
    vals.pop("dense/bias")
    vals["dense/kernel"] = vals["dense/kernel"][:, :3]
    vals["embedding/embeddings"] = vals["embedding/embeddings"].astype(np.float64)
    vals["extra/var"] = np.zeros(2, np.float32)
    ckpt.save(path, vals)
    target = _model(seed=20)
    before = _snapshot(target.params)
    with pytest.raises(ckpt.CheckpointError) as ei:
        ckpt.restore(path, target.params)
    msg = str(ei.value)
    assert "nothing was restored" in msg
    assert "missing from the file (1): dense/bias" in msg
    assert "in the file but not expected (1): extra/var" in msg
    assert "dense/kernel: file (5, 3), expected (5, 7)" in msg
    assert "embedding/embeddings: file float64, expected float32" in msg
    assert isinstance(ei.value, ValueError)
    for k, v in target.params.items():
        assert np.array_equal(v, before[k]), k


def test_optimizer_state_optional_and_strict(rng, tmp_path):
    model, opt = _model(), train.AdamOptimizer()
    path = str(tmp_path / "ck.npz")
    ckpt.save(path, model.params, opt)
    other = _model(seed=3)
    ckpt.restore(path, other.params)                       # weights only: slots are ignored
    for k, v in other.params.items():
        assert np.array_equal(v, model.params[k])
    ckpt.save(path, model.params)                          # no optimizer state in the file
    msg = r"missing from the file \(12\): beta1_power, beta2_power, dense/bias/Adam,"
    with pytest.raises(ckpt.CheckpointError, match=msg):
        ckpt.restore(path, other.params, train.AdamOptimizer())
    extra = dict(model.params)
    extra["unused"] = np.zeros(3, np.float32)
    ckpt.save(path, extra)
    with pytest.raises(ckpt.CheckpointError, match="in the file but not expected"):
        ckpt.restore(path, other.params)
    ckpt.restore(path, other.params, strict=False)


def test_corrupt_and_truncated_files(rng, tmp_path):
    model = _model()
    path = str(tmp_path / "ck.npz")
    ckpt.save(path, model.params)
    blob = open(path, "rb").read()
    target = _model(seed=5)
    before = _snapshot(target.params)
    cases = {"truncated": blob[:len(blob) // 2], "garbage": b"not a checkpoint at all" * 10, "empty": b""}
    flipped = bytearray(blob)
    with zipfile.ZipFile(path) as z:                     # flip a byte inside an array's data
        info = z.getinfo("dense/kernel.npy")
    flipped[info.header_offset + 30 + len(info.filename) + info.extra.__len__() + 200] ^= 0xFF
    cases["bad crc"] = bytes(flipped)
    for name, data in cases.items():
        p = str(tmp_path / ("bad_%s.npz" % name.replace(" ", "_")))
        with open(p, "wb") as f:
            f.write(data)
        with pytest.raises(ckpt.CheckpointError, match="could not be read"):
            ckpt.restore(p, target.params)
        for k, v in target.params.items():
            assert np.array_equal(v, before[k]), (name, k)
    # an object array (a pickle) is refused, never unpickled
    p = str(tmp_path / "pickle.npz")
    np.savez(p, **{"dense/kernel": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ckpt.CheckpointError, match="could not be read.*allow_pickle"):
        ckpt.load(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ckpt.restore(str(tmp_path / "nope.npz"), target.params)
    # a plain .npy (one array, not a dict of them) is named as such
    p = str(tmp_path / "one.npy")
    np.save(p, np.ones((2, 3)))
    with pytest.raises(ckpt.CheckpointError, match=r"not an \.npz archive but a single \.npy array "
                                                    r"of shape \(2, 3\)"):
        ckpt.load(p)


def test_save_is_atomic(rng, tmp_path, monkeypatch):
    model = _model()
    path = str(tmp_path / "ck.npz")
    ckpt.save(path, model.params)
    good = open(path, "rb").read()

    def boom(src, dst):
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(os, "replace", boom)
    changed = _model(seed=9)
    with pytest.raises(OSError, match="simulated"):
        ckpt.save(path, changed.params)
    monkeypatch.undo()
    assert open(path, "rb").read() == good                            # old checkpoint intact
    assert os.listdir(str(tmp_path)) == ["ck.npz"]                    # temp file cleaned up
    with pytest.raises(TypeError, match=r"params\['x'\] must be an array"):
        ckpt.save(path, {"x": [1, 2]})
    assert open(path, "rb").read() == good


def test_names_that_numpy_savez_would_swallow(tmp_path):
    """Keys are written entry by entry, so names like 'file' or 'allow_pickle' survive."""
    path = str(tmp_path / "ck.npz")
    vals = {"file": np.arange(3.0), "allow_pickle": np.ones((2, 2), np.float32)}
    ckpt.save(path, vals)
    back = ckpt.load(path)
    assert set(back) == set(vals) and all(np.array_equal(back[k], vals[k]) for k in vals)
