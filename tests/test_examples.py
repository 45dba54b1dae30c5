"""The tutorial examples (examples/*.py) in their --quick mode, plus opt-in long runs of the targets.

Each quick run takes a few seconds and asserts what a short run can honestly show: the training
loss falls by a clear margin, the predictions beat a trivial baseline (predicting zero for the
regressions, 10% chance for MNIST), the example's own consistency claims hold (the hand-unrolled
sine model equals the dynamic_rnn one; static_rnn equals dynamic_rnn; the sampler shares the
training model's weights), and the PNG plots are written.  The sine model's test predictions are
also recomputed with an independent NumPy LSTM written here from TF1's equations.

The command-line tests check each script's argument handling without training: a bad value is an
argparse error naming the flag (exit status 2), and ``--quick`` only fills in the options the user
left out.  The scripts run without matplotlib (a stand-in package that fails to import): they say
so once and exit 0.

The ``slow`` tests (opt-in: ``--runslow`` or NPL_RUN_SLOW=1) run the full commands and assert the
targets of examples/README.md.  MNIST and Shakespeare tests read the real data through
$NPL_DATA_DIR, as tests/test_data.py does (the conftest points it at the shared data folder).
"""
import contextlib
import ctypes
import glob
import importlib.util
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest

import npl
from helpers import numeric_grads

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))


def load_example(name):
    """Import examples/<name>.py as a module (the examples folder is not a package)."""
    path = os.path.join(ROOT, "examples", name + ".py")
    spec = importlib.util.spec_from_file_location("example_" + name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _openblas_thread_setters():
    """(get, set) ctypes functions of the OpenBLAS that NumPy loaded, or None (other BLAS)."""
    libdir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*"))):
        try:
            lib = ctypes.CDLL(path)           # the already-loaded library: dlopen returns its handle
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                get = getattr(lib, "%sget_num_threads%s" % (prefix, suffix), None)
                set_ = getattr(lib, "%sset_num_threads%s" % (prefix, suffix), None)
                if get is not None and set_ is not None:
                    return get, set_
    return None


@contextlib.contextmanager
def one_blas_thread():
    """Run with one OpenBLAS thread (the examples' own default when run as scripts): their
    matrices are small, and a multi-threaded OpenBLAS on a busy 2-core machine is many times
    slower.  A no-op where NumPy's BLAS is not a bundled OpenBLAS."""
    fns = _openblas_thread_setters()
    if fns is None:
        yield
        return
    get, set_ = fns
    before = get()
    set_(1)
    try:
        yield
    finally:
        set_(before)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_blas_thread():
        yield


def assert_png(path):
    assert os.path.isfile(path), path
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert os.path.getsize(path) > 2000, path


def mean_head_tail(loss, k):
    return float(np.mean(loss[:k])), float(np.mean(loss[-k:]))


# ============================================================================ sine_prediction
def numpy_lstm(params, x, forget_bias=1.0):
    """Independent reference: a stack of TF1 BasicLSTMCells in plain NumPy (float64), from the
    cells' params (``cell_k/kernel`` [I+H, 4H] with gate columns i, j, f, o; ``cell_k/bias``).
    Returns the top layer's output at the last step, [B, H_top]."""
    seq = x.astype(np.float64)                                           # [B, T, I]
    k = 0
    while "cell_%d/kernel" % k in params:
        W = params["cell_%d/kernel" % k].astype(np.float64)
        b = params["cell_%d/bias" % k].astype(np.float64)
        H = W.shape[1] // 4
        B, T, _ = seq.shape
        c, h, outs = np.zeros((B, H)), np.zeros((B, H)), []
        for t in range(T):
            a = np.concatenate([seq[:, t], h], axis=1) @ W + b
            i, j, f, o = np.split(a, 4, axis=1)
            sig = lambda z: 1.0 / (1.0 + np.exp(-z))                       # noqa: E731
            c = c * sig(f + forget_bias) + sig(i) * np.tanh(j)
            h = np.tanh(c) * sig(o)
            outs.append(h)
        seq = np.stack(outs, axis=1)
        k += 1
    return seq[:, -1]


def test_sine_prediction_quick(tmp_path):
    ex = load_example("sine_prediction")
    r = ex.main(["--quick", "--out", str(tmp_path), "--no-progress", "--seed", "3"])
    # (c), unrolled by hand with cell(x_t, state), equals (b) with the same weights
    assert r["pred_diff_bc"] < 1e-5 and r["grad_diff_bc"] < 1e-4
    assert abs(r["mse_c"] - r["mse_b"]) <= 1e-5 * max(r["mse_b"], 1e-12) + 1e-9
    # the training loss of the two-layer model falls clearly
    first, last = mean_head_tail(r["loss_b"], 10)
    assert last < 0.2 * first, (first, last)
    # it beats predicting zero (MSE 0.5) by far; the slow 1-unit model (a) is still learning
    assert r["mse_b"] < 0.05 * r["mse_zero"], r["mse_b"]
    assert r["test_mse_a"][-1] < 0.8 * r["test_mse_a"][0], r["test_mse_a"]
    first_a, last_a = mean_head_tail(r["loss_a"], 10)
    assert last_a < 0.8 * first_a, (first_a, last_a)
    # the reported test MSE is what an independent NumPy LSTM computes from the trained weights
    ref = numpy_lstm(r["model_b"].params, r["x_test"])
    assert np.max(np.abs(ref - r["pred_b"])) < 1e-5
    assert abs(float(np.mean((ref - r["y_test"]) ** 2)) - r["mse_b"]) < 1e-6 + 1e-4 * r["mse_b"]
    for p in r["plots"]:
        assert_png(p)
    assert len(r["plots"]) == 1


def test_sine_unrolled_model_gradient_matches_finite_differences():
    """Model (c)'s hand-written backward through the step traces, against float64 central
    differences of the loss (independent of npl's backward)."""
    ex = load_example("sine_prediction")
    rng = np.random.default_rng(5)
    cell = npl.rnn.MultiRNNCell([npl.rnn.BasicLSTMCell(3, dtype=np.float64),
                                 npl.rnn.BasicLSTMCell(1, dtype=np.float64)])
    cell.build(1, np.float64)
    for v in cell.params.values():
        v[...] = rng.normal(0, 0.5, v.shape)
    model = ex.UnrolledRegressor(cell)
    x, y = rng.normal(size=(4, 5, 1)), rng.normal(size=(4, 1))
    grads = ex.gradients(model, x, y)

    def loss():
        return float(np.mean((model.forward(x)[0] - y) ** 2))

    for name, v in cell.params.items():
        num, = numeric_grads(loss, [v])
        np.testing.assert_allclose(grads[name], num, rtol=1e-5, atol=1e-8, err_msg=name)


# ============================================================================ mnist_rnn
@pytest.mark.parametrize("model", ["lstm2", "bilstm1", "bilstm2", "lstm128"])
def test_mnist_rnn_quick(tmp_path, model):
    ex = load_example("mnist_rnn")
    r = ex.main(["--quick", "--model", model, "--out", str(tmp_path), "--no-progress"])
    assert r["test_size"] == 1000 and r["epochs"] == 1
    first, last = mean_head_tail(r["loss"], 3)
    assert first > 2.0                                  # starts near ln(10) = 2.30
    assert last < 0.9 * first, (first, last)
    assert r["test_accuracy"] > 0.25, r["test_accuracy"]          # chance is 0.10
    assert len(r["plots"]) == 2
    for p in r["plots"]:
        assert_png(p)


def test_mnist_models_have_the_tutorial_shapes():
    ex = load_example("mnist_rnn")
    x = np.random.default_rng(0).random((3, 28, 28), dtype=np.float32)
    shapes = {}
    for name in ex.BUILDERS:
        m = ex.build_model(name)
        logits, _ = m.forward(x)
        assert logits.shape == (3, 10)
        shapes[name] = {k: v.shape for k, v in m.params.items()}
    assert shapes["lstm2"]["rnn/cell_0/kernel"] == (28 + 30, 4 * 30)
    assert shapes["lstm2"]["rnn/cell_1/kernel"] == (30 + 10, 4 * 10)
    assert shapes["bilstm1"]["bidirectional_rnn/bw/kernel"] == (28 + 10, 40)
    assert shapes["bilstm2"]["stack_bidirectional_rnn/cell_1/bidirectional_rnn/fw/kernel"] == (
        2 * 64 + 10, 40)
    assert shapes["lstm128"]["dense_in/kernel"] == (28, 128)
    assert shapes["lstm128"]["rnn/kernel"] == (256, 512)
    assert shapes["lstm128"]["dense_out/kernel"] == (128, 10)


def test_mnist_bilstm1_logits_are_fw_last_plus_bw_first():
    """The bidirectional logits: the forward output after the last row plus the backward output
    after reading all rows (its output at row 0), checked against two plain dynamic_rnn runs."""
    ex = load_example("mnist_rnn")
    m = ex.build_model("bilstm1")
    x = np.random.default_rng(1).random((2, 28, 28), dtype=np.float32)
    logits, _ = m.forward(x)
    out_fw, _ = npl.nn.dynamic_rnn(m.cell_fw, x)
    out_bw, _ = npl.nn.dynamic_rnn(m.cell_bw, x[:, ::-1].copy())
    np.testing.assert_allclose(logits, out_fw[:, -1] + out_bw[:, -1], rtol=1e-5, atol=1e-6)


# ============================================================================ sin_to_cos_stateful
def test_sin_to_cos_stateful_quick(tmp_path):
    ex = load_example("sin_to_cos_stateful")
    r = ex.main(["--quick", "--out", str(tmp_path), "--no-progress"])
    first, last = mean_head_tail(r["loss"], 10)
    assert last < 0.1 * first, (first, last)
    assert r["test_mse"] < 0.1 * r["mse_zero"], r["test_mse"]
    # carrying the state across windows is what makes the task solvable
    assert r["test_mse"] < 0.5 * r["test_mse_no_carry"], (r["test_mse"], r["test_mse_no_carry"])
    assert len(r["frames"]) == 3                     # 120 steps, a frame every 40
    for p in r["frames"] + r["plots"]:
        assert_png(p)


def test_sin_to_cos_state_is_carried_between_windows():
    """Two windows with the state carried give exactly the outputs of one 40-step run."""
    ex = load_example("sin_to_cos_stateful")
    model = ex.SinToCos(seed=4)
    x = np.sin(np.arange(40) * 0.1).astype(np.float32).reshape(1, 40, 1)
    whole, _ = model.forward(x)
    y1, tr = model.forward(x[:, :20])
    y2, _ = model.forward(x[:, 20:], initial_state=tr.final_state)
    np.testing.assert_allclose(np.concatenate([y1, y2], axis=1), whole, rtol=1e-5, atol=1e-6)


# ============================================================================ shakespeare_char
def test_shakespeare_char_quick(tmp_path):
    ex = load_example("shakespeare_char")
    r = ex.main(["--quick", "--out", str(tmp_path), "--no-progress"])
    vocab_size = len(r["vocab"])
    assert vocab_size == 65
    assert r["loss_first"] > 0.9 * math.log(vocab_size)           # starts near a uniform guess
    assert r["loss_last"] < r["loss_first"] - 0.8, (r["loss_first"], r["loss_last"])
    assert r["val_perplexity"] < 20, r["val_perplexity"]           # uniform guessing: 65
    assert r["shared_arrays"] == 5                                  # embedding, kernel, bias, softmax w, b
    sample = r["sample"]
    assert sample.startswith("thou art")
    assert len(sample) == len("thou art") + 120
    assert set(sample) <= set(r["vocab"])
    assert_png(r["plots"][0])
    with open(os.path.join(str(tmp_path), "shakespeare_sample.txt"), encoding="utf-8") as f:
        assert f.read().startswith("thou art")


def test_shakespeare_sampler_shares_weights_with_training_model():
    """The batch-1, one-step sampler gives the training model's logits (same arrays), before and
    after an update of the training model."""
    ex = load_example("shakespeare_char")
    vocab = npl.data.CharVocab.from_text("abcdefgh ")
    model = ex.CharRNN(len(vocab), embed_size=5, hidden=7, layers=2, seed=2)
    sampler = ex.Sampler(model, vocab)
    text = "a bad cafe"
    ids = vocab.encode(text)[None]                                   # [1, T]
    for _ in range(2):
        logits, _ = model.forward(ids)
        state = model.cell.zero_state(1, np.float32)
        for t, ch in enumerate(text):
            step_logits, state = sampler.step(ch, state)
            np.testing.assert_allclose(step_logits, logits[0, t], rtol=1e-5, atol=1e-6)
        model.softmax_w += 0.5                                       # an in-place "update"
        model.cell.params["cell_0/kernel"][...] *= 1.5
    with pytest.raises(ValueError, match="prime"):
        sampler.sample("xyz", 5)


# ============================================================================ stacked_heterogeneous
def test_stacked_heterogeneous_quick(tmp_path):
    ex = load_example("stacked_heterogeneous")
    r = ex.main(["--quick", "--out", str(tmp_path), "--no-progress"])
    for what, d in r["diffs"].items():
        assert d <= 1e-6, (what, d)                                  # static_rnn == dynamic_rnn
    assert all(v > 0 for v in r["ms_per_batch"].values())
    for m in ("static", "dynamic"):
        assert r["memory"][m]["trace"] > 0 and r["memory"][m]["peak"] >= r["memory"][m]["trace"]
    first, last = mean_head_tail(r["loss"], 3)
    assert last < 0.9 * first, (first, last)
    assert r["test_accuracy"] > 0.25, r["test_accuracy"]
    assert_png(r["plots"][0])


def test_stacked_model_is_lstm_under_gru_with_twice_the_units():
    ex = load_example("stacked_heterogeneous")
    m = ex.StackedModel(hidden=6, seed=1)
    x = np.random.default_rng(2).random((2, 28, 28), dtype=np.float32)
    logits, trace = m.forward(x, "static")
    assert logits.shape == (2, 10)
    lstm, gru = m.cell.cells
    assert isinstance(lstm, npl.rnn.LSTMCell) and isinstance(gru, npl.rnn.GRUCell)
    assert (lstm.num_units, gru.num_units) == (6, 12)
    assert m.params["rnn/multi_rnn_cell/cell_1/gates/kernel"].shape == (6 + 12, 24)


# ============================================================================ command lines
TRAINING_EXAMPLES = ["sine_prediction", "mnist_rnn", "sin_to_cos_stateful", "shakespeare_char",
                     "stacked_heterogeneous"]

BAD_FLAGS = [   # example, arguments, the flag the error must name
    ("shakespeare_char", ["--quick", "--lr", "nan"], "--learning-rate/--lr"),
    ("shakespeare_char", ["--quick", "--batch-size", "0"], "--batch-size"),
    ("shakespeare_char", ["--quick", "--temperature", "inf"], "--temperature"),
    ("mnist_rnn", ["--batch-size", "0"], "--batch-size"),
    ("mnist_rnn", ["--epochs", "1", "--train-size", "500", "--test-size", "0"], "--test-size"),
    ("mnist_rnn", ["--train-size", "0"], "--train-size"),
    ("mnist_rnn", ["--train-size", "60001"], "--train-size"),
    ("mnist_rnn", ["--time-limit", "-5"], "--time-limit"),
    ("mnist_rnn", ["--model", "bilstm2", "--hidden", "0"], "--hidden"),
    ("mnist_rnn", ["--quick", "--epochs", "0"], "--epochs"),
    ("sine_prediction", ["--epochs", "1", "--epochs-1unit", "1", "--train-size", "500",
                         "--test-size", "0"], "--test-size"),
    ("sine_prediction", ["--quick", "--epochs-1unit", "-1"], "--epochs-1unit"),
    ("sine_prediction", ["--seed", "-1"], "--seed"),
    ("sin_to_cos_stateful", ["--batch-size", "0"], "--batch-size"),
    ("sin_to_cos_stateful", ["--quick", "--windows", "0"], "--windows"),
    ("sin_to_cos_stateful", ["--test-windows", "0"], "--test-windows"),
    ("sin_to_cos_stateful", ["--quick", "--plot-every", "-5"], "--plot-every"),
    ("sin_to_cos_stateful", ["--warmup", "-1"], "--warmup"),
    ("stacked_heterogeneous", ["--batch-size", "0"], "--batch-size"),
    ("stacked_heterogeneous", ["--train-size", "0"], "--train-size"),
    ("stacked_heterogeneous", ["--quick", "--test-size", "0"], "--test-size"),
    ("stacked_heterogeneous", ["--quick", "--repeats", "0"], "--repeats"),
    ("stacked_heterogeneous", ["--lr", "0"], "--learning-rate/--lr"),
]


@pytest.mark.parametrize("name,argv,flag", BAD_FLAGS,
                         ids=["%s %s" % (n, " ".join(a)) for n, a, _ in BAD_FLAGS])
def test_bad_value_is_an_argparse_error_naming_the_flag(capsys, name, argv, flag):
    ex = load_example(name)
    with pytest.raises(SystemExit) as e:
        ex.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument %s:" % flag in err, err


@pytest.mark.parametrize("cmd,flag", [
    (["stacked_heterogeneous.py", "--quick", "--repeats", "0"], "--repeats"),
    (["vanishing_gradients.py", "--steps", "0"], "--steps"),
    (["sin_to_cos_stateful.py", "--quick", "--plot-every", "-5"], "--plot-every"),
    (["custom_cell.py", "--quick"], "unrecognized arguments: --quick"),
    (["bptt_worked_example.py", "--epochs", "3"], "unrecognized arguments: --epochs"),
])
def test_script_refuses_bad_flag_from_another_directory(tmp_path, cmd, flag):
    """As a user runs them (``python examples/<name>.py``), from a folder that is not the
    repository: exit status 2, the flag named, no traceback, nothing written."""
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", cmd[0])] + cmd[1:],
                       capture_output=True, text=True, cwd=str(tmp_path), timeout=120,
                       env=_env())
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert flag in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert os.listdir(str(tmp_path)) == []


def test_quick_keeps_explicit_values():
    """--quick supplies defaults only: the options given win, the rest take the quick values."""
    sine = load_example("sine_prediction")
    a = sine.parse_args(["--quick", "--epochs", "3"])
    assert (a.epochs, a.epochs_1unit, a.train_size, a.test_size) == (3, 8, 5000, 500)
    assert sine.parse_args(["--epochs", "3"]).train_size == 10000          # no --quick: full size
    mnist = load_example("mnist_rnn")
    a = mnist.parse_args(["--epochs", "3", "--quick", "--train-size", "500"])
    assert (a.epochs, a.train_size, a.test_size) == (3, 500, 1000)
    assert mnist.parse_args(["--quick"]).epochs == 1
    stc = load_example("sin_to_cos_stateful")
    a = stc.parse_args(["--quick", "--plot-every", "0", "--windows", "7"])
    assert (a.epochs, a.windows, a.plot_every) == (1, 7, 0)
    stacked = load_example("stacked_heterogeneous")
    a = stacked.parse_args(["--quick", "--repeats", "2", "--test-size", "50"])
    assert (a.repeats, a.test_size, a.train_size) == (2, 50, 3000)
    shakespeare = load_example("shakespeare_char")
    a = shakespeare.parse_args(["--quick", "--lr", "0.03", "--batch-size", "8"])
    assert (a.learning_rate, a.batch_size, a.hidden, a.chars) == (0.03, 8, 64, 50000)


@pytest.mark.parametrize("name", TRAINING_EXAMPLES)
def test_quick_help_lists_the_quick_defaults(capsys, name):
    ex = load_example(name)
    with pytest.raises(SystemExit) as e:
        ex.parse_args(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for dest, value in ex.QUICK.items():
        assert "--%s %s" % (dest.replace("_", "-"), value) in out, (dest, out)


def test_mnist_build_model_refuses_a_bad_hidden_size():
    ex = load_example("mnist_rnn")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="hidden must be None"):
            ex.build_model("bilstm2", bad)
    assert ex.build_model("bilstm2").cells_fw[0].num_units == 64           # None: the default
    assert ex.build_model("bilstm2", 8).cells_fw[0].num_units == 8


def test_mnist_time_limit_reports_completed_epochs(tmp_path, capsys, monkeypatch):
    """A stop within an epoch counts only the completed epochs.  A fake clock (one second per
    reading; the stop callback reads it once per step) makes the stop step exact: 640 images in
    batches of 64 are 10 steps per epoch, a limit of 12.5 s stops at step 13."""
    ex = load_example("mnist_rnn")
    clock = iter(range(10 ** 6))
    monkeypatch.setattr(ex, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    r = ex.main(["--model", "lstm2", "--epochs", "5", "--train-size", "640", "--test-size", "100",
                 "--batch-size", "64", "--time-limit", "12.5", "--out", str(tmp_path),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert (r["steps"], r["steps_per_epoch"], r["epochs"]) == (13, 10, 1)
    assert r["epochs_trained"] == pytest.approx(1.3)
    assert len(r["test_accuracies"]) == 2                  # after epoch 1, and where it stopped
    assert "time limit of 12.5 s reached at step 13" in out
    assert "after 1 epoch + 3 of 10 steps (1.30 epochs)" in out
    assert ex.epochs_text(938, 469) == "2 epochs (938 steps)"


def test_sin_to_cos_plot_every_zero_writes_no_frames(tmp_path):
    ex = load_example("sin_to_cos_stateful")
    r = ex.main(["--quick", "--windows", "20", "--plot-every", "0", "--out", str(tmp_path),
                 "--no-progress"])
    assert r["steps"] == 20 and r["frames"] == []
    assert not os.path.exists(os.path.join(str(tmp_path), "sin_to_cos_frames"))
    assert_png(r["plots"][0])


def test_shakespeare_bad_prime_and_too_few_chars_are_refused_before_training(tmp_path, capsys):
    ex = load_example("shakespeare_char")
    for argv, flag in ((["--quick", "--prime", "thou \u00a7"], "--prime"),
                       (["--quick", "--chars", "100"], "--chars")):
        with pytest.raises(SystemExit) as e:
            ex.main(argv + ["--no-progress", "--out", str(tmp_path)])
        assert e.value.code == 2
        captured = capsys.readouterr()
        assert "error: argument %s:" % flag in captured.err, captured.err
        assert "validation loss" not in captured.out                      # no training ran


def _env(**extra):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra.get("PYTHONPATH"), ROOT,
                                                    os.environ.get("PYTHONPATH")) if p)
    return env


@pytest.fixture
def no_matplotlib(tmp_path):
    """PYTHONPATH entry with a ``matplotlib`` package that fails to import, as if not installed."""
    fake = tmp_path / "no_mpl" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('matplotlib hidden by a test')\n")
    return str(tmp_path / "no_mpl")


@pytest.mark.parametrize("cmd", [
    ["vanishing_gradients.py", "--steps", "5", "--out", "vanishing.png"],
    ["sin_to_cos_stateful.py", "--quick", "--windows", "20", "--plot-every", "5", "--out", "out"],
])
def test_without_matplotlib_scripts_say_so_once_and_exit_0(tmp_path, no_matplotlib, cmd):
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", cmd[0])] + cmd[1:] +
                       (["--no-progress"] if cmd[0] != "vanishing_gradients.py" else []),
                       capture_output=True, text=True, cwd=str(work), timeout=300,
                       env=_env(PYTHONPATH=no_matplotlib))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stdout.count("matplotlib is not installed: no plot written") == 1, r.stdout
    assert not glob.glob(str(work / "**" / "*.png"), recursive=True)


# ============================================================================ long runs (opt-in)
@pytest.mark.slow
def test_sine_prediction_target(tmp_path):
    r = load_example("sine_prediction").main(["--out", str(tmp_path), "--no-progress"])
    assert r["mse_b"] < 1e-3, r["mse_b"]


@pytest.mark.slow
def test_sin_to_cos_target(tmp_path):
    r = load_example("sin_to_cos_stateful").main(["--out", str(tmp_path), "--no-progress"])
    assert r["test_mse"] < 1e-3, r["test_mse"]


@pytest.mark.slow
@pytest.mark.parametrize("model,target", [("bilstm2", 0.95), ("lstm128", 0.985)])
def test_mnist_targets(tmp_path, model, target):
    r = load_example("mnist_rnn").main(["--model", model, "--epochs", "30", "--time-limit", "600",
                                        "--stop-at-target", "--out", str(tmp_path), "--no-progress"])
    assert r["test_size"] == 10000
    assert r["test_accuracy"] >= target, r["test_accuracies"]


@pytest.mark.slow
def test_shakespeare_char_full(tmp_path):
    r = load_example("shakespeare_char").main(["--out", str(tmp_path), "--no-progress"])
    assert r["loss_last"] < 1.7, r["loss_last"]
    assert r["val_perplexity"] < 5.5, r["val_perplexity"]
    assert r["sample"].startswith("thou art")
