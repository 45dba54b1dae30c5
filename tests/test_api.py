"""The public structure of the engine: state/output sizes, TensorFlow's parameter names, shapes and
initialisers, seeding, set_params, MultiRNNCell's shared arrays, dtype preservation, the backend
switch, trace memory, and the hand-unrolled step loop against dynamic_rnn."""

import numpy as np
import pytest

import npl
from npl.backend import _state as backend_state
from helpers import (CELL_KINDS, cell_spec, flatten, held_bytes, make_cell, numpy_backend, random_like,  # noqa: F401
                     random_state, randomize_params, unflatten, unroll_steps, assert_close)

R = npl.rnn
S = npl.LSTMStateTuple


def _rng(*parts):
    return np.random.default_rng([sum(ord(c) * (k + 1) for k, c in enumerate(str(p))) for p in parts])


@pytest.fixture
def reset_backend():
    """Tests that switch the backend put the lazily-read setting back afterwards."""
    old = backend_state["name"]
    yield
    backend_state["name"] = old


# ----------------------------------------------------------------------------- structures
STRUCTURES = [  # (constructor, state_size, output_size)
    (lambda: R.BasicRNNCell(4), 4, 4),
    (lambda: R.BasicLSTMCell(4), S(4, 4), 4),
    (lambda: R.BasicLSTMCell(4, state_is_tuple=False), 8, 4),
    (lambda: R.LSTMCell(4), S(4, 4), 4),
    (lambda: R.LSTMCell(4, num_proj=2, use_peepholes=True), S(4, 2), 2),
    (lambda: R.LSTMCell(4, num_proj=2, state_is_tuple=False), 6, 2),
    (lambda: R.GRUCell(3), 3, 3),
    (lambda: R.MultiRNNCell([R.LSTMCell(4, num_proj=2), R.GRUCell(3), R.BasicRNNCell(5)]),
     (S(4, 2), 3, 5), 5),
]


def _expected_zero_state(size, B, dtype):
    if isinstance(size, S):
        return S(np.zeros((B, size.c), dtype), np.zeros((B, size.h), dtype))
    if isinstance(size, tuple):
        return tuple(_expected_zero_state(s, B, dtype) for s in size)
    return np.zeros((B, size), dtype)


@pytest.mark.parametrize("ctor,state_size,output_size", STRUCTURES)
@pytest.mark.parametrize("built", [False, True])
def test_state_and_output_sizes_and_zero_state(ctor, state_size, output_size, built):
    cell = ctor()
    if built:
        cell.build(3, np.float64)
    assert cell.state_size == state_size
    assert type(cell.state_size) is type(state_size)
    assert cell.output_size == output_size
    for dtype in (np.float32, np.float64):
        z = cell.zero_state(2, dtype)
        want = _expected_zero_state(state_size, 2, dtype)
        assert type(z) is type(want)
        for a, b in zip(flatten(z), flatten(want)):
            assert a.shape == b.shape and a.dtype == dtype and not a.any()
    # the default dtype: the cell's once built, float32 before
    default = np.float64 if built else np.float32
    assert all(a.dtype == default for a in flatten(cell.zero_state(1)))
    # the state dynamic_rnn returns has the structure of state_size
    out, st = npl.nn.dynamic_rnn(cell, np.ones((2, 3, 3), default))
    assert out.shape == (2, 3, output_size)
    for a, b in zip(flatten(st), flatten(want)):
        assert a.shape == b.shape


# ----------------------------------------------------------------------------- TF names/shapes
I_, H_, P_ = 5, 4, 2
TF_PARAMS = [  # the variable names and shapes TensorFlow 1 creates (relative to the cell scope)
    (lambda: R.BasicRNNCell(H_), {"kernel": (I_ + H_, H_), "bias": (H_,)}),
    (lambda: R.BasicLSTMCell(H_), {"kernel": (I_ + H_, 4 * H_), "bias": (4 * H_,)}),
    (lambda: R.LSTMCell(H_), {"kernel": (I_ + H_, 4 * H_), "bias": (4 * H_,)}),
    (lambda: R.LSTMCell(H_, use_peepholes=True, num_proj=P_),
     {"kernel": (I_ + P_, 4 * H_), "bias": (4 * H_,), "w_f_diag": (H_,), "w_i_diag": (H_,),
      "w_o_diag": (H_,), "projection/kernel": (H_, P_)}),
    (lambda: R.LSTMCell(H_, num_proj=P_), {"kernel": (I_ + P_, 4 * H_), "bias": (4 * H_,),
                                           "projection/kernel": (H_, P_)}),
    (lambda: R.GRUCell(H_), {"gates/kernel": (I_ + H_, 2 * H_), "gates/bias": (2 * H_,),
                             "candidate/kernel": (I_ + H_, H_), "candidate/bias": (H_,)}),
    (lambda: R.GRUBlockCell(H_), {"w_ru": (I_ + H_, 2 * H_), "b_ru": (2 * H_,),
                                  "w_c": (I_ + H_, H_), "b_c": (H_,)}),
    (lambda: R.GRUBlockCellV2(H_), {"gates/kernel": (I_ + H_, 2 * H_), "gates/bias": (2 * H_,),
                                    "candidate/kernel": (I_ + H_, H_), "candidate/bias": (H_,)}),
    (lambda: R.LayerNormBasicLSTMCell(H_), dict(
        [("kernel", (I_ + H_, 4 * H_))] + [("%s/%s" % (sc, v), (H_,)) for sc in
                                           ("input", "transform", "forget", "output", "state")
                                           for v in ("gamma", "beta")])),
    (lambda: R.LayerNormBasicLSTMCell(H_, layer_norm=False),
     {"kernel": (I_ + H_, 4 * H_), "bias": (4 * H_,)}),
    (lambda: R.MultiRNNCell([R.LSTMCell(H_, num_proj=P_), R.GRUCell(3)]),
     {"cell_0/kernel": (I_ + P_, 4 * H_), "cell_0/bias": (4 * H_,),
      "cell_0/projection/kernel": (H_, P_),
      "cell_1/gates/kernel": (P_ + 3, 6), "cell_1/gates/bias": (6,),
      "cell_1/candidate/kernel": (P_ + 3, 3), "cell_1/candidate/bias": (3,)}),
]


@pytest.mark.parametrize("ctor,shapes", TF_PARAMS)
def test_params_names_and_shapes_are_tensorflows(ctor, shapes):
    cell = ctor()
    cell.build(I_, np.float32)
    assert {k: tuple(v.shape) for k, v in cell.params.items()} == shapes
    grads = cell.grads
    assert {k: tuple(v.shape) for k, v in grads.items()} == shapes
    assert all(g.dtype == np.float32 and not g.any() for g in grads.values())
    assert all(v.dtype == np.float32 for v in cell.params.values())


def test_input_size_builds_eagerly():
    c = R.LSTMCell(3, num_proj=2, input_size=4, dtype=np.float64)
    assert c.built and c.input_size == 4 and c.params["kernel"].shape == (6, 12)
    assert c.params["kernel"].dtype == np.float64
    assert not R.GRUCell(3).built


# ----------------------------------------------------------------------------- initialisers
def _limit(shape):
    fan_in, fan_out = (shape[0], shape[0]) if len(shape) == 1 else shape
    return np.sqrt(6.0 / (fan_in + fan_out))


@pytest.mark.parametrize("ctor,shapes", TF_PARAMS)
def test_glorot_uniform_limits_and_bias_init(ctor, shapes):
    npl.set_random_seed(11)      # deterministic: a 3-element peephole can fall under 0.5*limit by chance
    cell = ctor()
    cell.build(I_, np.float64)
    for name, w in cell.params.items():
        leaf = name.split("/", 1)[1] if name.startswith("cell_") else name
        if leaf.endswith(("/gamma", "/beta")):      # LayerNormBasicLSTMCell: norm_gain, norm_shift
            assert np.array_equal(w, np.full_like(w, 1.0 if leaf.endswith("gamma") else 0.0)), name
        elif leaf == "bias" and isinstance(cell, R.LayerNormBasicLSTMCell):
            assert 0.5 * _limit(w.shape) < np.abs(w).max() <= _limit(w.shape), \
                "its bias is get_variable's default in TF: glorot uniform"
        elif leaf in ("gates/bias", "b_ru"):
            assert np.array_equal(w, np.ones_like(w)), "GRU gates/bias starts at 1.0, as in TF"
        elif leaf.endswith("bias") or leaf == "b_c":
            assert not w.any(), "%s starts at zero" % name
        else:   # kernels, peepholes, projection: glorot uniform
            lim = _limit(w.shape)
            assert np.abs(w).max() <= lim, name
            assert np.abs(w).max() > 0.5 * lim, "%s looks degenerate" % name


@pytest.mark.parametrize("ctor,name,shape", [
    (lambda: R.LSTMCell(64, num_proj=32), "kernel", (64 + 32, 256)),
    (lambda: R.GRUCell(96), "candidate/kernel", (64 + 96, 96)),
    (lambda: R.BasicRNNCell(128), "kernel", (64 + 128, 128)),
    (lambda: R.LSTMCell(64, num_proj=32), "projection/kernel", (64, 32)),
])
def test_glorot_uniform_statistics(ctor, name, shape):
    """U(-l, l) with l = sqrt(6 / (fan_in + fan_out)): variance l^2/3, mean 0, fills the range."""
    npl.set_random_seed(2024)
    cell = ctor()
    cell.build(64, np.float64)
    w = cell.params[name]
    assert w.shape == shape
    lim = _limit(shape)
    n = w.size
    assert np.abs(w).max() <= lim
    assert np.abs(w).max() > lim * (1 - 20.0 / n)
    # variance of U(-l, l) is l^2/3; the estimator's relative sd is sqrt(0.8 / n) (< 2% here)
    assert abs(w.var() / (lim ** 2 / 3) - 1) < 5 * np.sqrt(0.8 / n)
    assert abs(w.mean()) < 5 * lim / np.sqrt(3 * n)


# ----------------------------------------------------------------------------- seeding
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_seeded_cells_are_reproducible(kind):
    def build(seed):
        if kind == "multi":
            c = R.MultiRNNCell([R.LSTMCell(3, use_peepholes=True, num_proj=2, seed=seed),
                                R.GRUCell(2, seed=seed + 1), R.BasicRNNCell(2, seed=seed + 2)])
        else:
            cls, kw = cell_spec(kind, 0.5)
            c = getattr(R, cls)(seed=seed, **kw)
        c.build(3, np.float64)
        return c.params

    a, b, c = build(7), build(7), build(8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(not np.array_equal(a[k], c[k]) for k in a if "kernel" in k or "diag" in k)


def test_seed_keyword_and_global_seed():
    p1 = R.LSTMCell(3, seed=5, input_size=2).params
    p2 = R.LSTMCell(3, seed=5, input_size=2).params
    p3 = R.LSTMCell(3, seed=6, input_size=2).params
    assert np.array_equal(p1["kernel"], p2["kernel"])
    assert not np.array_equal(p1["kernel"], p3["kernel"])

    def draw():
        npl.set_random_seed(123)
        cells = [R.GRUCell(3), R.BasicLSTMCell(2), R.BasicRNNCell(4)]
        for c in cells:
            c.build(3, np.float32)
        return [c.params for c in cells]

    first, second = draw(), draw()
    for a, b in zip(first, second):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    # successive cells draw different weights from the global stream
    assert not np.array_equal(first[0]["gates/kernel"][:3, :2], first[1]["kernel"][:3, :2])
    npl.set_random_seed(124)
    other = R.GRUCell(3)
    other.build(3, np.float32)
    assert not np.array_equal(other.params["gates/kernel"], first[0]["gates/kernel"])
    npl.set_random_seed(None)


# ----------------------------------------------------------------------------- set_params
def _snapshot(cell):
    return {k: v.copy() for k, v in cell.params.items()}


def _unchanged(cell, snap):
    p = cell.params
    return set(p) == set(snap) and all(np.array_equal(p[k], snap[k]) for k in snap)


@pytest.mark.parametrize("kind", CELL_KINDS)
def test_set_params_round_trip_in_place(kind):
    rng = _rng(kind, "sp")
    cell = make_cell(kind, rng, 3)
    live = cell.params
    new = {k: rng.standard_normal(v.shape) for k, v in live.items()}
    assert cell.set_params(new) is cell
    p = cell.params
    for k in new:
        assert p[k] is live[k], "set_params copies into the existing arrays"
        assert np.array_equal(p[k], new[k])
    # the new values are the ones the forward uses: a second cell given the same values agrees
    twin = make_cell(kind, _rng(kind, "sp"), None)
    twin.set_params({k: v.copy() for k, v in new.items()})
    x = rng.standard_normal((2, 3, 3))
    o1, _ = npl.nn.dynamic_rnn(cell, x)
    o2, _ = npl.nn.dynamic_rnn(twin, x)
    assert np.array_equal(o1, o2)


@pytest.mark.parametrize("kind", CELL_KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_set_params_builds_unbuilt_cell_from_kernel_shape(kind, dtype):
    rng = _rng(kind, "build")
    src = make_cell(kind, rng, 5, dtype)
    dst = make_cell(kind, _rng(kind, "build"))      # same configuration, unbuilt
    assert not dst.built
    dst.set_params({k: v.copy() for k, v in src.params.items()})
    assert dst.built and dst.input_size == 5 and dst.dtype == dtype
    x = rng.standard_normal((2, 3, 5)).astype(dtype)
    s0 = random_state(src, 2, rng, dtype)
    assert np.array_equal(npl.nn.dynamic_rnn(src, x, None, s0)[0],
                          npl.nn.dynamic_rnn(dst, x, None, s0)[0])


def test_set_params_partial_with_strict_false():
    rng = _rng("partial")
    cell = make_cell("lstm_all", rng, 3)
    snap = _snapshot(cell)
    cell.set_params({"w_o_diag": np.full(3, 0.25)}, strict=False)
    p = cell.params
    assert np.array_equal(p["w_o_diag"], np.full(3, 0.25))
    assert all(np.array_equal(p[k], snap[k]) for k in snap if k != "w_o_diag")


REJECTS = {  # name: (mutation of a valid dict, expected text in the message)
    "unknown_name": (lambda d: dict(d, **{"kernel_typo": np.zeros(3)}), "kernel_typo"),
    "missing_name": (lambda d: {k: v for k, v in d.items() if k != "bias"}, "bias"),
    "wrong_shape": (lambda d: dict(d, bias=np.zeros(d["bias"].shape[0] + 1)), "bias"),
    "wrong_rank": (lambda d: dict(d, kernel=d["kernel"].reshape(-1)), "kernel"),
    "int_values": (lambda d: dict(d, bias=np.zeros(d["bias"].shape, np.int64)), "bias"),
}


@pytest.mark.parametrize("how", sorted(REJECTS))
@pytest.mark.parametrize("kind", ["rnn", "lstm_all", "basic_lstm_flat"])
def test_set_params_rejects_and_changes_nothing(kind, how):
    rng = _rng(kind, how)
    cell = make_cell(kind, rng, 3)
    good = {k: rng.standard_normal(v.shape) for k, v in cell.params.items()}
    mutate, text = REJECTS[how]
    snap = _snapshot(cell)
    with pytest.raises((ValueError, TypeError)) as e:
        cell.set_params(mutate(good))
    assert text in str(e.value)
    assert _unchanged(cell, snap), "a rejected set_params must not change any array"


@pytest.mark.parametrize("how", ["wrong_shape", "missing_name", "int_values"])
def test_set_params_rejected_on_unbuilt_cell_leaves_it_unbuilt(how):
    """Nothing is changed unless every entry is valid: an unbuilt cell stays unbuilt."""
    rng = _rng("unbuilt", how)
    src = make_cell("lstm_all", rng, 3)
    good = {k: v.copy() for k, v in src.params.items()}
    mutate, text = REJECTS[how]
    cell = make_cell("lstm_all", _rng("unbuilt", how))
    with pytest.raises((ValueError, TypeError)) as e:
        cell.set_params(mutate(good))
    assert text in str(e.value)
    assert not cell.built


# ----------------------------------------------------------------------------- MultiRNNCell
def test_multi_params_share_the_cells_arrays():
    rng = _rng("multi-share")
    m = make_cell("multi", rng, 3)
    cells = m.cells
    p, g = m.params, m.grads
    for k, c in enumerate(cells):
        for name, v in c.params.items():
            assert p["cell_%d/%s" % (k, name)] is v
            assert np.shares_memory(p["cell_%d/%s" % (k, name)], v)
            assert g["cell_%d/%s" % (k, name)] is c.grads[name]
    assert len(p) == sum(len(c.params) for c in cells)
    # set_params on the stack reaches the cells (in place)
    new = {k: rng.standard_normal(v.shape) for k, v in p.items()}
    m.set_params(new)
    for k, c in enumerate(cells):
        for name, v in c.params.items():
            assert np.array_equal(v, new["cell_%d/%s" % (k, name)])
            assert v is p["cell_%d/%s" % (k, name)]
    # gradients of a backward on the stack land in the cells' own grads
    x = rng.standard_normal((2, 3, 3))
    m.zero_grad()
    out, st, tr = npl.nn.dynamic_rnn(m, x, return_trace=True)
    tr.backward(np.ones_like(out), None)
    assert all(c.grads[n].any() for c in cells for n in c.grads)
    m.zero_grad()
    assert not any(c.grads[n].any() for c in cells for n in c.grads)


@pytest.mark.parametrize("bad", ["bad_index", "bad_prefix", "no_leaf", "cell1_wrong_shape",
                                 "cell1_int", "cell1_unknown"])
def test_multi_set_params_rejects_and_changes_nothing(bad):
    rng = _rng("multi-reject", bad)
    m = make_cell("multi", rng, 3)
    good = {k: rng.standard_normal(v.shape) for k, v in m.params.items()}
    vals = dict(good)
    if bad == "bad_index":
        vals["cell_3/kernel"] = np.zeros((2, 2))
    elif bad == "bad_prefix":
        vals["layer_0/kernel"] = np.zeros((2, 2))
    elif bad == "no_leaf":
        vals["cell_0"] = np.zeros((2, 2))
    elif bad == "cell1_wrong_shape":
        vals["cell_1/gates/bias"] = np.zeros(7)
    elif bad == "cell1_int":
        vals["cell_1/gates/bias"] = np.zeros(4, np.int64)
    elif bad == "cell1_unknown":
        vals["cell_1/gates/bais"] = np.zeros(4)
    snap = _snapshot(m)
    with pytest.raises((ValueError, TypeError)):
        m.set_params(vals)
    assert _unchanged(m, snap), "a rejected set_params must not change any cell"


# ----------------------------------------------------------------------------- dtypes
def _run_all_drivers(kind, dtype, rng):
    """Every sequence function on one configuration; yields (what, array) for every output."""
    cell = make_cell(kind, rng, 3, dtype)
    cell_b = make_cell(kind, rng, 3, dtype)
    B, T = 2, 3
    x = rng.standard_normal((B, T, 3)).astype(dtype)
    s0 = random_state(cell, B, rng, dtype)
    L = np.array([3, 1])
    for tm in (False, True):
        xi = x.transpose(1, 0, 2).copy() if tm else x
        out, st, tr = npl.nn.dynamic_rnn(cell, xi, L, s0, time_major=tm, return_trace=True)
        dx, ds = tr.backward(random_like(out, rng), random_like(st, rng))
        yield from (("dynamic_rnn(tm=%s) %s" % (tm, w), a) for w, a in
                    [("out", out), ("dx", dx)] + [("state", a) for a in flatten(st)] +
                    [("d_state", a) for a in flatten(ds)])
    outs, st, tr = npl.nn.static_rnn(cell, [x[:, t] for t in range(T)], s0, sequence_length=L,
                                     return_trace=True)
    dxs, ds = tr.backward(random_like(outs, rng), None)
    yield from (("static_rnn", a) for a in outs + flatten(st) + dxs + flatten(ds))
    (of, ob), (sf, sb), tr = npl.nn.bidirectional_dynamic_rnn(cell, cell_b, x, L, return_trace=True)
    dx, (dsf, dsb) = tr.backward((random_like(of, rng), random_like(ob, rng)), None)
    yield from (("bidirectional", a) for a in [of, ob, dx] + flatten((sf, sb, dsf, dsb)))
    o, s1, tr = cell(x[:, 0], s0, return_trace=True)
    dx, ds = tr.backward(random_like(o, rng), random_like(s1, rng))
    yield from (("step", a) for a in [o, dx] + flatten((s1, ds)))
    for c in (cell, cell_b):
        yield from (("param %s" % k, v) for k, v in c.params.items())
        yield from (("grad %s" % k, v) for k, v in c.grads.items())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_dtype_is_preserved_everywhere(kind, dtype):
    rng = _rng(kind, dtype)
    seen = 0
    for what, a in _run_all_drivers(kind, dtype, rng):
        assert a.dtype == dtype, "%s has dtype %s, expected %s" % (what, a.dtype, np.dtype(dtype))
        seen += 1
    assert seen > 20


def test_stack_bidirectional_dtype_float32():
    rng = _rng("stack32")
    fw = [make_cell("lstm_proj", rng, 3, np.float32), make_cell("gru", rng, 4, np.float32)]
    bw = [make_cell("rnn", rng, 3, np.float32), make_cell("basic_lstm", rng, 4, np.float32)]
    # layer 1 sees the concatenated outputs: widths 2 + 3 = 5, so rebuild the layer-1 cells
    fw[1], bw[1] = make_cell("gru", rng, 5, np.float32), make_cell("basic_lstm", rng, 5, np.float32)
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    out, sf, sb, tr = R.stack_bidirectional_dynamic_rnn(fw, bw, x, sequence_length=[3, 2],
                                                        return_trace=True)
    dx, (dsf, dsb) = tr.backward(np.ones_like(out), None)
    for a in [out, dx] + flatten((sf, sb, dsf, dsb)) + [g for c in fw + bw for g in c.grads.values()]:
        assert a.dtype == np.float32


def test_cell_dtype_argument_builds_in_that_dtype():
    c = R.GRUCell(3, dtype=np.float64)
    out, st = npl.nn.dynamic_rnn(c, np.ones((1, 2, 3)))
    assert c.params["gates/kernel"].dtype == np.float64 and out.dtype == np.float64
    c = R.GRUCell(3)
    out, _ = npl.nn.dynamic_rnn(c, np.ones((1, 2, 3), np.float32), dtype=np.float32)
    assert out.dtype == np.float32 and c.dtype == np.float32


# ----------------------------------------------------------------------------- backend
def test_backend_numpy_and_get_array_module(reset_backend):
    assert npl.use("numpy") == "numpy"
    assert npl.backend_name() == "numpy"
    assert npl.use(" NumPy ") == "numpy"
    a = np.zeros(2)
    assert npl.get_array_module(a) is np
    assert npl.get_array_module(a, None, np.ones(3)) is np
    assert npl.get_array_module() is np
    c = R.GRUCell(2, input_size=3)
    assert all(type(v) is np.ndarray for v in c.params.values())
    assert type(c.zero_state(2)) is np.ndarray
    assert isinstance(npl.to_numpy([np.ones(1), (np.ones(2),)]), list)
    st = npl.to_numpy(S(np.ones(1), np.zeros(1)))
    assert isinstance(st, S)


def test_backend_cupy_absent_raises_backend_error(monkeypatch, reset_backend):
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)   # `import cupy` now fails
    before = npl.use("numpy")
    with pytest.raises(npl.BackendError) as e:
        npl.use("cupy")
    msg = str(e.value)
    assert "cupy" in msg.lower() and "not installed" in msg
    assert npl.backend_name() == before, "a failed use() leaves the backend unchanged"
    assert npl.use("auto") == "numpy"
    assert isinstance(e.value, RuntimeError)


@pytest.mark.parametrize("bad", ["bogus", "", "tensorflow"])
def test_backend_unknown_name(bad, reset_backend):
    with pytest.raises(ValueError) as e:
        npl.use(bad)
    assert repr(bad) in str(e.value)
    with pytest.raises(TypeError):
        npl.use(None)


def test_backend_env_variable(monkeypatch, reset_backend):
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)
    for value, want in (("numpy", "numpy"), ("", "numpy"), ("auto", "numpy")):
        monkeypatch.setenv("NPL_BACKEND", value)
        backend_state["name"] = None
        assert npl.backend_name() == want
    monkeypatch.delenv("NPL_BACKEND")
    backend_state["name"] = None
    assert npl.backend_name() == "numpy"
    monkeypatch.setenv("NPL_BACKEND", "bogus")
    backend_state["name"] = None
    with pytest.raises(ValueError):
        npl.backend_name()
    monkeypatch.setenv("NPL_BACKEND", "cupy")
    backend_state["name"] = None
    with pytest.raises(npl.BackendError):
        npl.backend_name()
    backend_state["name"] = None


# ----------------------------------------------------------------------------- trace memory
def _trace_nbytes(kind, T, B=4, H=8, I=5, lengths=None):
    rng = _rng(kind, "nbytes")
    cell = make_cell(kind, rng, I, units=H)
    x = rng.standard_normal((B, T, I))
    _, _, tr = npl.nn.dynamic_rnn(cell, x, lengths, return_trace=True)
    return tr


@pytest.mark.parametrize("kind", ["rnn", "basic_lstm", "lstm_all", "gru", "multi"])
def test_trace_nbytes_counts_what_the_trace_holds(kind, no_workspace_pool):
    """nbytes equals the memory the trace keeps alive (tracemalloc: NumPy reports its buffers),
    and is at least the documented slabs (gates, c, h).  The batch and length are large enough
    that the step masks (T*B bytes each) are well above the tolerance for the Python objects."""
    B, T, H, I = 40, 300, 4, 3
    rng = _rng(kind, "mem")
    cell = make_cell(kind, rng, I, units=H)
    x = rng.standard_normal((B, T, I))
    L = rng.integers(0, T + 1, size=B)
    L[:2] = T, 0
    held, tr = held_bytes(lambda: npl.nn.dynamic_rnn(cell, x, L, return_trace=True)[2])
    slabs = sum(a.nbytes for r in tr.records for k, a in r.slabs.items()
                if k in ("gates", "c", "h"))
    assert tr.nbytes >= slabs
    # a stack's layers share the step mask, which the trace counts once
    assert tr.nbytes <= sum(r.nbytes for r in tr.records)
    assert len(tr.records) > 1 or tr.nbytes == tr.records[0].nbytes
    # what the trace keeps alive, to within the Python objects around the arrays (a few KB)
    assert abs(held - tr.nbytes) <= 0.01 * tr.nbytes + 6144, (held, tr.nbytes)


def _wrapped(kind, rng, I, H):
    R = npl.rnn
    if kind == "dropout":
        return R.DropoutWrapper(make_cell("gru", rng, I, units=H), 0.5, 0.5, seed=1)
    if kind == "variational":
        return R.DropoutWrapper(make_cell("basic_lstm", rng, I, units=H), 0.5, 0.5, 0.5,
                                variational_recurrent=True, seed=1, input_size=I, dtype=np.float64)
    if kind == "out_proj":
        return R.OutputProjectionWrapper(make_cell("lstm_all", rng, I, units=H), 6, activation="tanh")
    if kind == "in_proj":
        return R.InputProjectionWrapper(make_cell("gru", rng, 4, units=H), 4, activation="tanh")
    if kind == "stack":
        return R.MultiRNNCell([R.InputProjectionWrapper(make_cell("gru", rng, 4, units=H), 4),
                               R.DropoutWrapper(make_cell("gru", rng, H, units=H), output_keep_prob=0.5)])
    if kind == "embedding":
        return R.EmbeddingWrapper(make_cell("gru", rng, 6, units=H), 7, 6)
    return R.LayerNormBasicLSTMCell(H, dropout_keep_prob=0.5, input_size=I, dtype=np.float64)


@pytest.mark.parametrize("kind", ["dropout", "variational", "out_proj", "in_proj", "stack", "layer_norm",
                                  "embedding"])
def test_wrapped_trace_nbytes_counts_what_the_trace_holds(kind, no_workspace_pool):
    """As above, for wrappers whose records keep arrays of their own (dropout masks, a
    projection's saved operands) and the layer-norm cell: tracemalloc against nbytes."""
    B, T, H, I = 40, 300, 4, 3
    rng = _rng(kind, "mem-wrapped")
    cell = _wrapped(kind, rng, I, H)
    x = rng.integers(0, 7, (B, T, 1)) if kind == "embedding" else rng.standard_normal((B, T, I))
    L = rng.integers(0, T + 1, size=B)
    L[:2] = T, 0
    held, tr = held_bytes(lambda: npl.nn.dynamic_rnn(cell, x, L, return_trace=True, dtype=np.float64)[2])
    assert abs(held - tr.nbytes) <= 0.01 * tr.nbytes + 6144, (held, tr.nbytes)


@pytest.mark.parametrize("kind", ["rnn", "lstm_all", "gru", "multi"])
def test_trace_nbytes_grows_linearly_in_T(kind):
    n = {T: _trace_nbytes(kind, T).nbytes for T in (2, 3, 5, 9)}
    step = n[3] - n[2]
    assert step > 0
    assert n[5] - n[3] == 2 * step and n[9] - n[5] == 4 * step
    # with sequence_length, only the steps up to max(length) are kept
    short = _trace_nbytes(kind, 9, lengths=np.array([3, 2, 0, 3])).nbytes
    full_3 = _trace_nbytes(kind, 3, lengths=np.array([3, 2, 0, 3])).nbytes
    assert short == full_3


def _trace_floats_closed_form(cls, kw, T, B, H):
    """What the README says a trace keeps per layer, counted independently of the code: the
    activated gates of every step, plus c (LSTM) and the output h of every step and the initial
    state; an LSTM with cell_clip (proj_clip) also keeps a one-byte clip mask per unit (projected
    unit) and step.  Returns (floats, extra bytes)."""
    P = kw.get("num_proj") or H
    if cls in ("BasicLSTMCell", "LSTMCell"):
        masks = (H if kw.get("cell_clip") else 0) + (P if kw.get("proj_clip") else 0)
        return T * B * (4 * H + H + P) + B * (H + P), T * B * masks
    if cls == "GRUCell":
        return T * B * (3 * H + H) + B * H, 0
    return T * B * (H + H) + B * H, 0          # BasicRNNCell: one gate block and h


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", [k for k in CELL_KINDS if k != "multi"])
def test_trace_nbytes_is_the_closed_form_in_T_B_and_H(kind, dtype):
    """trace.nbytes equals the documented formula over random T, B, H and input widths (so the
    trace's memory is linear in T, in B and in H), and with sequence_length T is max(length)."""
    rng = _rng(kind, dtype, "closed")
    for _ in range(3):
        T, B, H, I = (int(v) for v in rng.integers(1, 12, size=4))
        cls, kw = cell_spec(kind, 1.0, H, proj=int(rng.integers(1, 6)))
        cell = getattr(npl.rnn, cls)(**kw)
        x = rng.standard_normal((B, T, I)).astype(dtype)
        floats, extra = _trace_floats_closed_form(cls, kw, T, B, H)
        _, _, tr = npl.nn.dynamic_rnn(cell, x, dtype=dtype, return_trace=True)
        assert tr.nbytes == floats * np.dtype(dtype).itemsize + extra, (T, B, H, I)
        # with lengths: T is the longest; a one-byte step mask [T, B] and its negation where some
        # row is shorter; nothing at all when every length is zero
        for L in (rng.integers(0, T + 1, size=B), np.full(B, T // 2)):
            Tm = int(L.max())
            floats, extra = _trace_floats_closed_form(cls, kw, Tm, B, H)
            want = floats * np.dtype(dtype).itemsize + extra + (2 * Tm * B if (L < Tm).any() else 0)
            _, _, tr = npl.nn.dynamic_rnn(cell, x, L, dtype=dtype, return_trace=True)
            assert tr.nbytes == (want if Tm else 0), (T, B, H, I, L)


def test_stacked_trace_nbytes_is_the_sum_of_the_layers_closed_forms():
    rng = _rng("closed", "stack")
    T, B, I = 7, 5, 4
    layers = [("LSTMCell", dict(num_units=6, num_proj=3, cell_clip=0.5)), ("GRUCell", dict(num_units=4)),
              ("BasicRNNCell", dict(num_units=2))]
    cell = npl.rnn.MultiRNNCell([getattr(npl.rnn, c)(**kw) for c, kw in layers])
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    _, _, tr = npl.nn.dynamic_rnn(cell, x, dtype=np.float32, return_trace=True)
    want = 0
    for c, kw in layers:
        floats, extra = _trace_floats_closed_form(c, kw, T, B, kw["num_units"])
        want += 4 * floats + extra
    assert tr.nbytes == want
    # with lengths: the layers share one step mask [T, B] (counted once); each keeps its negation
    L = np.array([T, 2, 0, T, 5])
    _, _, tr = npl.nn.dynamic_rnn(cell, x, L, dtype=np.float32, return_trace=True)
    assert tr.nbytes == want + T * B * (1 + len(layers))


# ----------------------------------------------------------------------------- step loop
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_hand_unrolled_step_loop_equals_dynamic_rnn(kind, dtype):
    rng = _rng(kind, dtype, "loop")
    cell = make_cell(kind, rng, 3, dtype)
    B, T = 3, 4
    x = rng.standard_normal((B, T, 3)).astype(dtype)
    s0 = random_state(cell, B, rng, dtype)
    s, outs = s0, []
    for t in range(T):
        o, s = cell(x[:, t], s)
        outs.append(o)
    out, st = npl.nn.dynamic_rnn(cell, x, initial_state=s0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, np.stack(outs, axis=1), rtol=tol, atol=tol)
    for a, b in zip(flatten(st), flatten(s)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    # per-row prefixes with lengths, through the shared helper
    L = [4, 0, 2]
    ref_out, ref_st = unroll_steps(cell, x, s0, L)
    out, st = npl.nn.dynamic_rnn(cell, x, L, s0)
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    for a, b in zip(flatten(st), flatten(ref_st)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_randomize_params_touches_every_parameter():
    """The shared helper really gives nonzero values to biases and peepholes (layout bugs hide
    behind zeros)."""
    cell = make_cell("lstm_all", _rng("touch"), 3)
    assert all(np.abs(v).min() > 0 for v in cell.params.values())
    randomize_params(cell, _rng("touch2"))
    assert all(np.abs(v).min() > 0 for v in cell.params.values())


def test_every_trace_type_reports_its_size():
    """nbytes of every trace kind is the sum of its layers' saved arrays (and so is nonzero)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 3))
    c1, c2 = R.GRUCell(3, dtype=np.float64), R.BasicLSTMCell(2, dtype=np.float64)
    traces = [
        npl.nn.dynamic_rnn(c1, x, return_trace=True)[-1],
        npl.nn.static_rnn(c1, [x[:, 0], x[:, 1]], return_trace=True)[-1],
        npl.nn.bidirectional_dynamic_rnn(c1, c2, x, return_trace=True)[-1],
        npl.rnn.stack_bidirectional_dynamic_rnn([c1], [c2], x, return_trace=True)[-1],
        c2(x[:, 0], c2.zero_state(2, np.float64), return_trace=True)[-1],
    ]
    for tr in traces:
        expected = 0
        for r in tr.records:
            expected += sum(int(a.nbytes) for a in r.fm.values())
        assert tr.nbytes == expected > 0


def test_tf_style_namespaces():
    """A TF1 tutorial ports by changing its imports: tf.nn.rnn_cell.X -> npl.nn.rnn_cell.X,
    tf.contrib.rnn.X -> npl.rnn.X, tf.nn.f -> npl.nn.f."""
    for name in ("BasicRNNCell", "BasicLSTMCell", "LSTMCell", "GRUCell", "MultiRNNCell",
                 "LSTMStateTuple", "DropoutWrapper", "ResidualWrapper", "DeviceWrapper", "RNNCell"):
        assert getattr(npl.nn.rnn_cell, name) is getattr(npl.rnn, name)
    for name in ("static_rnn", "stack_bidirectional_dynamic_rnn", "stack_bidirectional_rnn"):
        assert callable(getattr(npl.rnn, name))
    for name in ("dynamic_rnn", "static_rnn", "bidirectional_dynamic_rnn", "embedding_lookup"):
        assert callable(getattr(npl.nn, name))
    for name in ("sequence_mask", "boolean_mask", "reverse_sequence", "clip_by_global_norm"):
        assert callable(getattr(npl, name))
    assert npl.train.AdamOptimizer is not None and npl.LSTMStateTuple is npl.rnn.LSTMStateTuple


@pytest.mark.parametrize("make", [
    lambda: R.LSTMCell(3, use_peepholes=True, num_proj=2, cell_clip=0.7, forget_bias=0.3),
    lambda: R.GRUCell(3), lambda: R.BasicRNNCell(3),
    lambda: R.MultiRNNCell([R.BasicLSTMCell(3), R.GRUCell(2)])])
@pytest.mark.parametrize("lengths", [None, [8, 0, 5]])
def test_traceless_forward_in_chunks_equals_whole_sequence(monkeypatch, make, lengths):
    """Without a trace, dynamic_rnn runs long sequences in chunks with the state carried across;
    outputs and final state equal the single-pass (traced) forward."""
    rng = np.random.default_rng(3)
    cell = make()
    cell.build(2, np.float64)
    randomize_params(cell, rng)
    x = rng.standard_normal((3, 8, 2))
    s0 = random_state(cell, 3, rng)
    L = None if lengths is None else np.array(lengths)
    ref_out, ref_state, _ = npl.nn.dynamic_rnn(cell, x, L, s0, return_trace=True)
    monkeypatch.setattr(npl.rnn_ops, "INFERENCE_CHUNK", 3)
    out, state = npl.nn.dynamic_rnn(cell, x, L, s0)
    assert_close(out, ref_out, 1e-12, "outputs")
    for a, b in zip(flatten(state), flatten(ref_state)):
        assert_close(a, b, 1e-12, "final state")


def test_traceless_forward_memory_is_bounded(no_workspace_pool):
    """The forward without a trace holds O(chunk) working memory: for T = 512 its peak NumPy
    allocation is a fraction of the traced forward's (whose slabs are O(T)).  Float64 runs the
    Python loop, which dynamic_rnn runs INFERENCE_CHUNK steps a call (the C loops' ring:
    tests/test_inference_pass.py)."""
    import tracemalloc
    cell = R.BasicLSTMCell(32, input_size=8, seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((16, 512, 8))
    peaks = []
    for trace in (True, False):
        tracemalloc.start()
        res = npl.nn.dynamic_rnn(cell, x, return_trace=trace)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        del res
    outputs_bytes = 16 * 512 * 32 * 8
    assert peaks[1] < 0.4 * peaks[0], peaks
    assert peaks[1] < 3 * outputs_bytes, (peaks, outputs_bytes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["rnn", "lstm_all", "gru", "multi"])
@pytest.mark.parametrize("B", [3, 16])              # 16: the C loops' batches, on float32
def test_past_a_length_outputs_are_zero_and_cotangents_ignored_even_if_not_finite(kind, B, dtype):
    """TF selects zeros past each length (and its gradient drops the cotangent there), so a row
    whose carried state is NaN still gives exact +0.0 outputs past its length, and a NaN output
    cotangent past the length changes nothing.  (Multiplying by the mask gave NaN and -0.0.)"""
    rng = _rng(kind, B, "nan", np.dtype(dtype).name)
    T, I = 6, 4
    cell = make_cell(kind, rng, I, dtype=dtype, units=5)
    x = rng.standard_normal((B, T, I)).astype(dtype)
    L = rng.integers(0, T + 1, size=B)
    L[:3] = 0, 2, T
    state = random_like(cell.zero_state(B, dtype), rng)
    nan_row = [s.copy() for s in flatten(state)]
    for s in nan_row:
        s[0] = np.nan                                   # row 0: length 0, NaN initial state
    state_nan = unflatten(state, nan_row)
    out, final, tr = npl.nn.dynamic_rnn(cell, x, L, initial_state=state_nan, dtype=dtype,
                                        return_trace=True)
    past = np.arange(T)[None, :] >= L[:, None]          # [B, T]
    assert np.all(out[past] == 0) and not np.any(np.signbit(out[past]))
    assert np.all(np.isfinite(out[1:]))
    d_out = rng.standard_normal(out.shape).astype(dtype)
    d_nan = d_out.copy()
    d_nan[past] = np.nan
    cell.zero_grad()
    _, _, tr = npl.nn.dynamic_rnn(cell, x, L, initial_state=state, dtype=dtype, return_trace=True)
    dx, d0 = tr.backward(d_out, None)
    want = [dx] + list(flatten(d0)) + [g.copy() for g in cell.grads.values()]
    cell.zero_grad()
    _, _, tr = npl.nn.dynamic_rnn(cell, x, L, initial_state=state, dtype=dtype, return_trace=True)
    dx, d0 = tr.backward(d_nan, None)
    got = [dx] + list(flatten(d0)) + [g.copy() for g in cell.grads.values()]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)



def test_a_python_list_takes_the_dtype_given_as_tf_feeds_it():
    """TF converts a fed Python list to the placeholder's dtype; npl converts a list (which has
    no dtype of its own) to ``dtype`` too, while an array of another dtype is still refused."""
    rng = _rng("list", "dtype")
    cell = make_cell("gru", rng, 3, dtype=np.float32, units=4)
    x = rng.standard_normal((2, 5, 3))
    out, st = npl.nn.dynamic_rnn(cell, x.tolist(), dtype=np.float32)
    want, want_st = npl.nn.dynamic_rnn(cell, x.astype(np.float32), dtype=np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(st, want_st)
    with pytest.raises(TypeError, match="inputs have dtype float64 but dtype=float32"):
        npl.nn.dynamic_rnn(cell, x, dtype=np.float32)
    # a list of float64 arrays has a dtype: refused too, not cast
    with pytest.raises(TypeError, match="inputs have dtype float64 but dtype=float32"):
        npl.nn.dynamic_rnn(cell, list(x), dtype=np.float32)
    # the other sequence functions take lists the same way
    bw = make_cell("rnn", rng, 3, dtype=np.float32, units=2)
    steps = [x[:, t].tolist() for t in range(x.shape[1])]
    want_s = npl.nn.static_rnn(cell, [x[:, t].astype(np.float32) for t in range(x.shape[1])])
    got_s = npl.nn.static_rnn(cell, steps, dtype=np.float32)
    for a, b in zip(flatten(got_s), flatten(want_s)):
        np.testing.assert_array_equal(a, b)
    want_b = npl.nn.bidirectional_dynamic_rnn(cell, bw, x.astype(np.float32))
    got_b = npl.nn.bidirectional_dynamic_rnn(cell, bw, x.tolist(), dtype=np.float32)
    for a, b in zip(flatten(got_b), flatten(want_b)):
        np.testing.assert_array_equal(a, b)
    got_sb = npl.nn.static_bidirectional_rnn(cell, bw, steps, dtype=np.float32)
    want_sb = npl.nn.static_bidirectional_rnn(cell, bw, [np.asarray(v, np.float32) for v in steps])
    for a, b in zip(flatten(got_sb), flatten(want_sb)):
        np.testing.assert_array_equal(a, b)


def test_an_ndarray_subclass_runs_like_the_ndarray(tmp_path):
    """np.memmap inputs take the same paths (the C loops on float32, B >= 8) as the plain array,
    bit for bit; they once fell to the Python loop because of a ``type(a) is np.ndarray`` test."""
    rng = _rng("memmap")
    B, T, I = 16, 9, 5
    cell = make_cell("lstm_all", rng, I, dtype=np.float32, units=6)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    mm = np.memmap(str(tmp_path / "x.dat"), np.float32, "w+", shape=x.shape)
    mm[:] = x
    got = npl.nn.dynamic_rnn(cell, mm, return_trace=True)
    want = npl.nn.dynamic_rnn(cell, x, return_trace=True)
    assert type(got[0]) is np.ndarray
    for a, b in zip(flatten(got[:2]), flatten(want[:2])):
        np.testing.assert_array_equal(a, b)
    d = rng.standard_normal(want[0].shape).astype(np.float32)
    cell.zero_grad()
    dx_mm = got[2].backward(d, None)[0]
    g_mm = {k: v.copy() for k, v in cell.grads.items()}
    cell.zero_grad()
    dx = want[2].backward(d, None)[0]
    np.testing.assert_array_equal(dx_mm, dx)
    for k, v in cell.grads.items():
        np.testing.assert_array_equal(g_mm[k], v)


def test_cell_call_takes_tf1s_scope_argument():
    """TF1's RNNCell.__call__(inputs, state, scope=None): ``cell(x, s, scope="rnn")`` and the
    positional form return (output, state) as in TF; return_trace goes by keyword, and a bool in
    scope's place (the old positional return_trace) is a TypeError saying so."""
    rng = _rng("scope")
    cell = make_cell("lstm_all", rng, 3, units=4)
    x = rng.standard_normal((2, 3))
    s = random_state(cell, 2, rng)
    want = cell(x, s)
    for got in (cell(x, s, scope="rnn"), cell(x, s, "rnn/multi_rnn_cell")):
        assert len(got) == 2
        for a, b in zip(flatten(got), flatten(want)):
            np.testing.assert_array_equal(a, b)
    assert len(cell(x, s, scope="rnn", return_trace=True)) == 3
    with pytest.raises(TypeError, match="pass return_trace=True by keyword"):
        cell(x, s, True)
    with pytest.raises(TypeError, match="scope .* must be a string or None, got 3"):
        cell(x, s, 3)


# ---------------------------------------------------------------- TF1's signatures, read live
_TF1_SIGNATURES = [
    ("sequence_mask", lambda v1: v1.sequence_mask, lambda: npl.sequence_mask),
    ("boolean_mask", lambda v1: v1.boolean_mask, lambda: npl.boolean_mask),
    ("reverse_sequence", lambda v1: v1.reverse_sequence, lambda: npl.reverse_sequence),
    ("embedding_lookup", lambda v1: v1.nn.embedding_lookup, lambda: npl.nn.embedding_lookup),
    ("clip_by_global_norm", lambda v1: v1.clip_by_global_norm, lambda: npl.clip_by_global_norm),
    ("global_norm", lambda v1: v1.global_norm, lambda: npl.global_norm),
    ("dynamic_rnn", lambda v1: v1.nn.dynamic_rnn, lambda: npl.nn.dynamic_rnn),
    ("static_rnn", lambda v1: v1.nn.static_rnn, lambda: npl.nn.static_rnn),
    ("bidirectional_dynamic_rnn", lambda v1: v1.nn.bidirectional_dynamic_rnn,
     lambda: npl.nn.bidirectional_dynamic_rnn),
    ("static_bidirectional_rnn", lambda v1: v1.nn.static_bidirectional_rnn,
     lambda: npl.nn.static_bidirectional_rnn),
    ("LSTMCell", lambda v1: v1.nn.rnn_cell.LSTMCell.__init__, lambda: R.LSTMCell.__init__),
    ("BasicLSTMCell", lambda v1: v1.nn.rnn_cell.BasicLSTMCell.__init__, lambda: R.BasicLSTMCell.__init__),
    ("GRUCell", lambda v1: v1.nn.rnn_cell.GRUCell.__init__, lambda: R.GRUCell.__init__),
    ("BasicRNNCell", lambda v1: v1.nn.rnn_cell.BasicRNNCell.__init__, lambda: R.BasicRNNCell.__init__),
    ("MultiRNNCell", lambda v1: v1.nn.rnn_cell.MultiRNNCell.__init__, lambda: R.MultiRNNCell.__init__),
    ("DropoutWrapper", lambda v1: v1.nn.rnn_cell.DropoutWrapper.__init__, lambda: R.DropoutWrapper.__init__),
    ("ResidualWrapper", lambda v1: v1.nn.rnn_cell.ResidualWrapper.__init__, lambda: R.ResidualWrapper.__init__),
    ("DeviceWrapper", lambda v1: v1.nn.rnn_cell.DeviceWrapper.__init__, lambda: R.DeviceWrapper.__init__),
    ("RNNCell.__call__", lambda v1: v1.nn.rnn_cell.RNNCell.__call__, lambda: R.BasicRNNCell.__call__),
    ("zero_state", lambda v1: v1.nn.rnn_cell.RNNCell.zero_state, lambda: R.BasicRNNCell.zero_state),
]


@pytest.mark.tf
@pytest.mark.parametrize("name, tf_fn, npl_fn", _TF1_SIGNATURES, ids=[c[0] for c in _TF1_SIGNATURES])
def test_tf1_parameters_come_first_in_tf1s_order(name, tf_fn, npl_fn):
    """A TF1 call ports with its positional and keyword arguments as written: npl's parameters
    begin with TF1's, same names, same order (read from live TensorFlow; npl may add its own,
    such as return_trace, after them)."""
    import inspect
    import os
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf = pytest.importorskip("tensorflow")
    theirs = [p for p in inspect.signature(tf_fn(tf.compat.v1)).parameters if p not in ("self", "kwargs")]
    ours = [p for p in inspect.signature(npl_fn()).parameters if p != "self"]
    assert ours[:len(theirs)] == theirs, (name, ours, theirs)


def test_tf1_name_arguments_take_strings_only():
    """TF's ``name=`` arguments are accepted (and unused); anything but a string there is a
    TypeError, so an argument meant for another parameter is never silently dropped (TF1's
    boolean_mask(tensor, mask, name, axis): an old positional axis is told to go by keyword)."""
    x, m = np.arange(6.0).reshape(3, 2), np.array([True, False, True])
    assert npl.sequence_mask([1, 2], 3, bool, "mask").shape == (2, 3)
    assert npl.boolean_mask(x, m, "bm").shape == (2, 2)
    assert npl.nn.embedding_lookup(np.eye(3), [2], "div", "lookup").shape == (1, 3)
    calls = [lambda: npl.sequence_mask([1], 2, bool, 5),
             lambda: npl.reverse_sequence(x, [1, 2, 0], 1, 0, 7),
             lambda: npl.nn.embedding_lookup(np.eye(3), [0], "mod", 3),
             lambda: npl.clip_by_global_norm([x], 1.0, None, 2),
             lambda: npl.global_norm([x], 1)]
    for call in calls:
        with pytest.raises(TypeError, match=r"name \(TF's op name\) must be a string or None"):
            call()
    with pytest.raises(TypeError, match="pass axis=1 by keyword"):
        npl.boolean_mask(x.T, m[:2], 1)
    with pytest.raises(ValueError, match='partition_strategy must be "mod" or "div"'):
        npl.nn.embedding_lookup(np.eye(3), [0], "bogus")
    with pytest.raises(ValueError, match="max_norm: clipping the looked-up rows' norms is not supported"):
        npl.nn.embedding_lookup(np.eye(3), [0], max_norm=1.0)


@pytest.mark.tf
@pytest.mark.parametrize("kind", ["lstm", "gru", "multi"])
@pytest.mark.parametrize("B, T", [(0, 5), (4, 0), (0, 0)])
def test_empty_batch_or_sequence_as_tf1(kind, B, T):
    """TF1's dynamic_rnn takes a batch of 0 rows or a sequence of 0 steps: empty outputs, and for
    T = 0 the final state is the initial state, whose gradient is the final state's cotangent
    (read from live TF1 with tf.gradients; no step runs, so the weights play no part).  npl
    gives the same, traced or not."""
    import os
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    tf = pytest.importorskip("tensorflow")
    v1 = tf.compat.v1
    rc = v1.nn.rnn_cell
    build = {"lstm": (lambda: R.BasicLSTMCell(3), lambda: rc.BasicLSTMCell(3)),
             "gru": (lambda: R.GRUCell(3), lambda: rc.GRUCell(3)),
             "multi": (lambda: R.MultiRNNCell([R.GRUCell(3), R.BasicLSTMCell(2)]),
                       lambda: rc.MultiRNNCell([rc.GRUCell(3), rc.BasicLSTMCell(2)]))}[kind]
    rng = _rng(kind, B, T, "empty")
    I = 3
    cell = build[0]()
    cell.build(I, np.float64)
    s0 = random_state(cell, B, rng)
    w = random_like(s0, rng)

    def tf_struct(s):
        if isinstance(s, S):
            return rc.LSTMStateTuple(tf.constant(s.c), tf.constant(s.h))
        if isinstance(s, tuple):
            return tuple(tf_struct(v) for v in s)
        return tf.constant(s)
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        init = tf_struct(s0)
        out, st = v1.nn.dynamic_rnn(build[1](), tf.constant(np.zeros((B, T, I))), initial_state=init)
        flat_st, flat_init = tf.nest.flatten(st), tf.nest.flatten(init)
        loss = tf.add_n([tf.reduce_sum(a * b) for a, b in zip(flat_st, flatten(w))])
        grads = [tf.zeros_like(v) if d is None else d for v, d in zip(flat_init, tf.gradients(loss, flat_init))]
        sess.run(v1.global_variables_initializer())
        want_out, want_st, want_g = sess.run([out, flat_st, grads])
    got_out, got_st, tr = npl.nn.dynamic_rnn(cell, np.zeros((B, T, I)), initial_state=s0,
                                             return_trace=True)
    assert got_out.shape == want_out.shape == (B, T, cell.output_size)
    for a, b in zip(flatten(got_st), want_st):
        np.testing.assert_array_equal(a, b)
    dx, d0 = tr.backward(np.zeros_like(got_out), w)
    assert dx.shape == (B, T, I)
    for a, b in zip(flatten(d0), want_g):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    plain_out, plain_st = npl.nn.dynamic_rnn(cell, np.zeros((B, T, I)), initial_state=s0)
    assert plain_out.shape == got_out.shape
    for a, b in zip(flatten(plain_st), want_st):
        np.testing.assert_array_equal(a, b)
