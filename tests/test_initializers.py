"""npl.initializers: TF1's initialisers for the cells' and layers' ``initializer`` arguments.

* Which parameter gets which initialiser is read from live TF1 (a graph built with
  ``tf.constant_initializer``: every variable's value says which initialiser made it).
* The random initialisers against their closed forms: bounds, moments, orthogonality.
* Seeds, TF's own initialiser objects, and the errors.
"""

import numpy as np
import pytest

import npl
from npl import initializers as I

R = npl.rnn


def _tf_variables(tf, build):
    """{name relative to the cell: value} of the variables a TF1 graph creates."""
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default():
        build(v1)
        with v1.Session(graph=g) as s:
            s.run(v1.global_variables_initializer())
            return {v.name[:-2]: s.run(v) for v in v1.global_variables()}


def _relative(d, prefix):
    return {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}


@pytest.mark.tf
def test_lstm_initializer_covers_kernel_peepholes_and_projection_as_tf1(tf):
    def build(v1):
        cell = v1.nn.rnn_cell.LSTMCell(3, use_peepholes=True, num_proj=2,
                                       initializer=v1.constant_initializer(0.5))
        v1.nn.dynamic_rnn(cell, tf.zeros((1, 2, 4)), dtype=tf.float32)
    want = _relative(_tf_variables(tf, build), "rnn/lstm_cell/")
    cell = R.LSTMCell(3, use_peepholes=True, num_proj=2, initializer=npl.constant_initializer(0.5),
                      input_size=4)
    assert sorted(cell.params) == sorted(want)
    for k, v in want.items():
        np.testing.assert_array_equal(cell.params[k], v, err_msg=k)
    assert not np.any(want["bias"]) and np.all(want["kernel"] == 0.5)


@pytest.mark.tf
@pytest.mark.parametrize("bias", [True, False])
def test_gru_kernel_and_bias_initializers_as_tf1(tf, bias):
    def build(v1):
        cell = v1.nn.rnn_cell.GRUCell(3, kernel_initializer=v1.constant_initializer(0.3),
                                      bias_initializer=v1.constant_initializer(-0.2) if bias else None)
        v1.nn.dynamic_rnn(cell, tf.zeros((1, 2, 4)), dtype=tf.float32)
    want = _relative(_tf_variables(tf, build), "rnn/gru_cell/")
    cell = R.GRUCell(3, kernel_initializer=npl.constant_initializer(0.3),
                     bias_initializer=npl.constant_initializer(-0.2) if bias else None, input_size=4)
    assert sorted(cell.params) == sorted(want)
    for k, v in want.items():
        np.testing.assert_array_equal(cell.params[k], v, err_msg=k)


@pytest.mark.tf
def test_dense_initializers_as_tf1(tf):
    def build(v1):
        v1.layers.dense(tf.zeros((1, 4)), 3, kernel_initializer=v1.constant_initializer(0.7),
                        bias_initializer=v1.constant_initializer(-1.5))
    want = _relative(_tf_variables(tf, build), "dense/")
    layer = npl.layers.Dense(3, kernel_initializer=npl.constant_initializer(0.7),
                             bias_initializer=npl.constant_initializer(-1.5), input_size=4)
    for k, v in want.items():
        np.testing.assert_array_equal(layer.params[k], v, err_msg=k)


@pytest.mark.tf
def test_tensorflows_own_initializers_are_accepted(tf):
    """A TF initialiser object is a callable (shape, dtype) -> tensor: it works as it is."""
    cell = R.BasicLSTMCell(3, input_size=2)
    lstm = R.LSTMCell(3, initializer=tf.compat.v1.constant_initializer(0.25), input_size=2)
    assert lstm.params["kernel"].dtype == np.float32
    np.testing.assert_array_equal(lstm.params["kernel"], np.full(cell.params["kernel"].shape, 0.25))


def test_constant_zeros_ones_and_arrays():
    np.testing.assert_array_equal(I.zeros_initializer()((2, 3)), np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(I.ones_initializer()((4,), np.float64), np.ones(4))
    a = np.arange(6.0)
    np.testing.assert_array_equal(I.constant_initializer(a)((2, 3)), a.reshape(2, 3))
    with pytest.raises(ValueError, match=r"value has 6 elements \(shape \(6,\)\), more than the 4"):
        I.constant_initializer(a)((2, 2))


_CONSTANT_CASES = [(0.5, (2, 2)), ([0.5], (3, 2)), ([1.0, 2.0, 3.0], (2, 4)),
                   ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3)), ([[1, 2], [3, 4]], (4,))]


@pytest.mark.tf
def test_constant_initializer_follows_tf1s_shape_rules(tf):
    """One element fills, a shorter list is padded with its last element, a longer one is an
    error, verify_shape=True wants the exact shape: read from live TF1."""
    v1 = tf.compat.v1
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as s:
        want = [s.run(v1.constant_initializer(v)(shape)) for v, shape in _CONSTANT_CASES]
        with pytest.raises(ValueError):
            v1.constant_initializer([1.0, 2.0, 3.0, 4.0, 5.0])((2, 2))
        with pytest.raises(TypeError):
            v1.constant_initializer([1.0, 2.0, 3.0, 4.0], verify_shape=True)((2, 2))
    for (v, shape), w in zip(_CONSTANT_CASES, want):
        np.testing.assert_array_equal(I.constant_initializer(v)(shape), w)
    with pytest.raises(ValueError, match="more than the 4"):
        I.constant_initializer([1.0, 2.0, 3.0, 4.0, 5.0])((2, 2))
    with pytest.raises(ValueError, match=r"verify_shape=True\): value has shape \(4,\)"):
        I.constant_initializer([1.0, 2.0, 3.0, 4.0], verify_shape=True)((2, 2))
    np.testing.assert_array_equal(I.constant_initializer(np.ones((2, 2)), verify_shape=True)((2, 2)),
                                  np.ones((2, 2)))


_TF1_INITIALIZERS = ["zeros_initializer", "ones_initializer", "constant_initializer",
                     "random_uniform_initializer", "random_normal_initializer",
                     "truncated_normal_initializer", "glorot_uniform_initializer",
                     "glorot_normal_initializer", "orthogonal_initializer"]


@pytest.mark.tf
@pytest.mark.parametrize("name", _TF1_INITIALIZERS)
def test_initializer_signatures_are_tf1s(tf, name):
    """Constructor and call take TF1's parameters in TF1's order (read from live TF)."""
    import inspect
    theirs, ours = getattr(tf.compat.v1, name), getattr(npl, name)
    for a, b in ((theirs.__init__, ours.__init__), (theirs.__call__, ours.__call__)):
        want = [p for p in inspect.signature(a).parameters if p not in ("self", "kwargs")]
        got = [p for p in inspect.signature(b).parameters if p != "self"]
        assert got[:len(want)] == want, (name, got, want)


def _big(init, shape=(400, 500)):
    return init(shape, np.float64, rng=np.random.default_rng(0))


def test_random_initializers_against_their_closed_forms():
    u = _big(I.random_uniform_initializer(-0.3, 0.1))
    assert u.min() >= -0.3 and u.max() < 0.1
    assert abs(u.mean() - (-0.1)) < 2e-3 and abs(u.var() - 0.4 ** 2 / 12) < 2e-4
    u1 = _big(I.random_uniform_initializer())                    # maxval None: [0, 1)
    assert u1.min() >= 0 and u1.max() < 1 and abs(u1.mean() - 0.5) < 3e-3
    n = _big(I.random_normal_initializer(1.5, 0.2))
    assert abs(n.mean() - 1.5) < 2e-3 and abs(n.std() - 0.2) < 2e-3
    t = _big(I.truncated_normal_initializer(-1.0, 0.5))
    assert t.min() >= -2.0 and t.max() <= 0.0                   # within two standard deviations
    assert abs(t.mean() + 1.0) < 2e-3 and abs(t.std() - 0.5 * 0.87962566) < 2e-3
    shape = (300, 700)
    g = _big(I.glorot_uniform_initializer(), shape)
    limit = np.sqrt(6.0 / sum(shape))
    assert np.abs(g).max() <= limit and np.abs(g).max() > 0.99 * limit
    assert abs(g.var() / (2.0 / sum(shape)) - 1) < 0.02
    gn = _big(I.glorot_normal_initializer(), shape)
    assert abs(gn.var() / (2.0 / sum(shape)) - 1) < 0.02      # the truncation corrected for
    v = _big(I.glorot_uniform_initializer(), (50,))             # a vector: fan_in = fan_out = 50
    assert np.abs(v).max() <= np.sqrt(6.0 / 100)
    assert I.glorot_uniform_initializer()((0, 0)).shape == (0, 0)   # TF's max(1, fan)
    assert I.orthogonal_initializer()((0, 3)).shape == (0, 3)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (2, 3, 5)])
def test_orthogonal_initializer(shape):
    q = I.orthogonal_initializer(gain=2.0, seed=1)(shape, np.float64)
    m = q.reshape(-1, shape[-1])
    small = min(m.shape)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(small), atol=1e-12)


def test_seeds_and_the_cells_generator():
    init = I.random_uniform_initializer(-1, 1, seed=5)
    np.testing.assert_array_equal(init((3, 4)), init((3, 4)))    # its own seed: the same draws
    free = I.random_normal_initializer()
    a = R.GRUCell(4, kernel_initializer=free, seed=9, input_size=3)
    b = R.GRUCell(4, kernel_initializer=free, seed=9, input_size=3)
    for k in a.params:                                         # the cell's seed decides
        np.testing.assert_array_equal(a.params[k], b.params[k])
    c = R.GRUCell(4, kernel_initializer=free, seed=10, input_size=3)
    assert not np.array_equal(a.params["gates/kernel"], c.params["gates/kernel"])
    e = npl.layers.Embedding(5, 3, seed=1, embeddings_initializer=I.random_uniform_initializer(2, 3))
    assert e.params["embeddings"].min() >= 2 and e.params["embeddings"].dtype == np.float32


def test_a_plain_callable_works_and_its_result_is_checked():
    cell = R.BasicRNNCell(2, input_size=3)
    lstm = R.LSTMCell(2, initializer=lambda shape, dtype: np.full(shape, 0.1), input_size=3,
                      dtype=np.float64)
    assert lstm.params["kernel"].dtype == np.float64 and np.all(lstm.params["kernel"] == 0.1)
    with pytest.raises(ValueError, match=r"initializer for kernel returned shape \(3,\), expected \(5, 8\)"):
        R.LSTMCell(2, initializer=lambda shape, dtype: np.ones(3), input_size=3)
    with pytest.raises(ValueError, match="initializer for gates/kernel must return finite real numbers"):
        R.GRUCell(2, kernel_initializer=lambda shape, dtype: np.full(shape, np.nan), input_size=3)
    with pytest.raises(TypeError, match="kernel_initializer must be a callable initializer"):
        R.GRUCell(2, kernel_initializer=0.1)
    with pytest.raises(TypeError, match="bias_initializer must be a callable initializer"):
        npl.layers.Dense(2, bias_initializer="zeros")
    assert cell.built


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="minval must be below maxval"):
        I.random_uniform_initializer(1.0, 1.0)
    with pytest.raises(ValueError, match="stddev must be a positive finite number"):
        I.truncated_normal_initializer(stddev=0)
    with pytest.raises(ValueError, match="seed"):
        I.random_normal_initializer(seed=-1)
    with pytest.raises(ValueError, match=r"initializer for w_f_diag \(shape \(3,\)\): orthogonal"):
        R.LSTMCell(3, use_peepholes=True, initializer=I.orthogonal_initializer(), input_size=2)
    with pytest.raises(TypeError, match="value must be a finite real number or a non-empty array"):
        I.constant_initializer([np.nan])
    with pytest.raises(TypeError, match="random_uniform_initializer needs a float dtype, got int32"):
        I.random_uniform_initializer()((2,), np.int32)
    with pytest.raises(ValueError, match="gates/kernel must return finite real numbers within float32"):
        R.GRUCell(2, kernel_initializer=lambda shape, dtype: np.full(shape, 1e39), input_size=2)

    def raises(shape, dtype):
        raise ValueError("no")
    with pytest.raises(ValueError, match=r"initializer for kernel \(shape \(5, 2\)\): no"):
        npl.layers.Dense(2, kernel_initializer=raises, input_size=5)
