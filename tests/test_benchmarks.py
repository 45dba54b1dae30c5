"""The benchmark suite (benchmarks/): it runs, its JSON has the promised structure, its FLOP counts
and fits match closed forms, a missing peer is skipped with a note, and nonsense is refused.

No test here asserts a speed: times are only checked to be finite and positive.
"""
import json
import math
import os
import statistics
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:   # benchmarks/ is not part of the installed package
    sys.path.insert(0, REPO)

from benchmarks import report, spec  # noqa: E402
from benchmarks.run import parse_args  # noqa: E402


def _run(args, tmp_path, extra_env=None, timeout=150):
    """Run the command with one thread per framework: on a shared 2-core machine a two-thread BLAS
    stalls whenever another process holds the second core, which only makes the smoke test slow."""
    env = dict(os.environ)
    env.update(extra_env or {})
    args = args + ["--threads", "1", "--out-dir", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.run"] + args,
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def _installed(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


def _finite_pos(v):
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def _lstm_gru_flops(B, T, layers, G):
    """Closed form, written out independently of benchmarks.spec: 2*B*T*(I+H)*G*H per layer."""
    return sum(2 * B * T * (i + h) * G * h for i, h in layers)


def test_quick_run_table_json_and_chart(tmp_path):
    proc = _run(["--quick"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for text in ("median ms", "GFLOP/s", "npl/fw", "peak MB", "GEMM ceiling", "2048x2048",
                 "kernel", "threads per framework: "):
        assert text in out, text
    doc = json.load(open(tmp_path / "bench.json"))
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "bench.md").read_text()
    assert "| config | cell | mode | npl ms |" in md and "| C4 | lstm | fwdbwd |" in md

    assert doc["mode"] == "quick" and doc["threads"] >= 1
    assert doc["machine"]["cores"] >= 1
    assert set(doc["machine"]["env"]) >= {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                          "OPENBLAS_CORETYPE"}
    assert doc["machine"]["env"]["OMP_NUM_THREADS"] == str(doc["threads"])
    assert "source" in doc["blas"] and doc["blas"]["numpy"]
    assert _finite_pos(doc["ceiling"]["gemm_2048"]["gflops"])
    rec = doc["ceiling"]["recurrent_gemm"]
    assert rec["128x128@128x512"]["shape"] == [[128, 128], [128, 512]] and "C1" in rec["128x128@128x512"]["configs"]
    assert all(_finite_pos(r["gflops"]) for r in rec.values())

    fws = [fw for fw in ("npl", "torch") if doc["frameworks"][fw]["status"] == "ok"]
    assert "npl" in fws
    if not _installed("torch"):
        assert doc["frameworks"]["torch"]["status"] == "skipped"
    rows = {(r["config"], r["cell"], r["mode"], r["framework"]): r for r in doc["results"]}
    expected = {(c, cell, mode, fw) for c in ("C1", "C4") for cell in ("lstm", "gru")
                for mode in ("fwd", "fwdbwd") for fw in fws}
    assert set(rows) == expected
    layers = {"C1": (128, 28, [(28, 128)]), "C4": (128, 10, [(1, 30), (30, 1)])}
    for (c, cell, mode, fw), r in rows.items():
        t = r["times_s"]
        assert len(t) == doc["protocol"]["repeats"] == 3
        assert all(_finite_pos(v) for v in t)
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["median_ms"] == pytest.approx(1e3 * statistics.median(t))
        B, T, ls = layers[c]
        f = _lstm_gru_flops(B, T, ls, {"lstm": 4, "gru": 3}[cell])
        assert r["flops"] == (3 * f if mode == "fwdbwd" else f)
        assert r["gflops"] == pytest.approx(r["flops"] / (r["median_ms"] / 1e3) / 1e9)
        assert r["frac_gemm_2048"] == pytest.approx(r["gflops"] / doc["ceiling"]["gemm_2048"]["gflops"])
        assert isinstance(r["peak_rss_growth_bytes"], int) and r["peak_rss_growth_bytes"] >= 0
        npl_med = rows[(c, cell, mode, "npl")]["median_ms"]
        assert r["npl_over"] == pytest.approx(npl_med / r["median_ms"])
        if fw == "npl":
            assert r["tracemalloc_peak_bytes"] > 0
            if mode == "fwdbwd":
                assert r["trace_nbytes"] > 0


def test_missing_peer_is_skipped_with_a_note(tmp_path):
    fake = tmp_path / "fake"
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("raise ImportError('torch hidden for this test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    proc = _run(["--quick", "--configs", "C4", "--cells", "lstm", "--modes", "fwd", "--frameworks", "npl,torch",
                 "--no-plot", "--no-memory"], tmp_path, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: PyTorch skipped: torch is not installed" in proc.stdout
    doc = json.load(open(tmp_path / "bench.json"))
    assert doc["frameworks"]["torch"]["status"] == "skipped"
    assert "torch hidden for this test" in doc["frameworks"]["torch"]["note"]
    assert [(r["framework"], r["config"]) for r in doc["results"]] == [("npl", "C4")]


def test_tensorflow_workers_run(tmp_path):
    pytest.importorskip("tensorflow")
    proc = _run(["--quick", "--configs", "C4", "--cells", "gru", "--frameworks", "tf1,keras,keras-ra",
                 "--repeats", "1", "--warmup", "0", "--min-run-ms", "0", "--no-plot", "--no-memory"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    doc = json.load(open(tmp_path / "bench.json"))
    got = {(r["framework"], r["mode"]) for r in doc["results"]}
    assert got == {(fw, m) for fw in ("tf1", "keras", "keras-ra") for m in ("fwd", "fwdbwd")}
    assert all(_finite_pos(r["median_ms"]) for r in doc["results"])
    ra = {r["framework"]: r["info"].get("reset_after") for r in doc["results"] if r["framework"] != "tf1"}
    assert ra == {"keras": False, "keras-ra": True}


def test_sweep_T_fits_and_trace_bytes(tmp_path):
    proc = _run(["--sweep-T", "--config", "C4", "--T-values", "5,10,20", "--cells", "lstm", "--modes", "fwdbwd",
                 "--frameworks", "npl", "--repeats", "1", "--min-run-ms", "0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "line fits against T" in proc.stdout
    doc = json.load(open(tmp_path / "bench-sweep.json"))
    assert (tmp_path / "bench-sweep.png").exists()
    rows = sorted(doc["results"], key=lambda r: r["T"])
    assert [r["T"] for r in rows] == [5, 10, 20]
    nb = [r["trace_nbytes"] for r in rows]
    assert nb[0] < nb[1] < nb[2]
    fit = doc["fits"]["npl/lstm/fwdbwd"]
    assert fit["T"] == [5, 10, 20] and math.isfinite(fit["ms"]["slope"])
    assert fit["trace_nbytes"]["r2"] == pytest.approx(1.0)   # the trace grows exactly linearly in T


def _closed_form_trace_bytes(cell, B, T, H):
    """float32 bytes an npl trace keeps for the benchmark's one-layer cells (README's formula):
    LSTM T*B*(4H+H+H) + B*2H floats, GRU T*B*(3H+H) + B*H."""
    floats = T * B * 6 * H + 2 * B * H if cell == "lstm" else T * B * 4 * H + B * H
    return 4 * floats


@pytest.mark.parametrize("dim, values", [("B", [1, 3, 8]), ("H", [4, 8, 16])])
def test_sweep_B_and_H_fits_and_trace_bytes(tmp_path, dim, values):
    """--sweep B / --sweep H: one row per value, each trace exactly the closed form, and fits."""
    proc = _run(["--sweep", dim, "--custom", "3,4,5,6", "--config", "X1", "--values",
                 ",".join(map(str, values)), "--modes", "fwdbwd", "--frameworks", "npl",
                 "--repeats", "1", "--min-run-ms", "0"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sweep of %s for X1" % dim in proc.stdout
    assert "line fits against %s" % dim in proc.stdout
    doc = json.load(open(tmp_path / ("bench-sweep-%s.json" % dim)))
    assert (tmp_path / ("bench-sweep-%s.png" % dim)).exists()
    assert doc["sweep"] == dim and doc["values"] == values and doc["mode"] == "sweep-" + dim
    for cell in ("lstm", "gru"):
        rows = sorted((r for r in doc["results"] if r["cell"] == cell), key=lambda r: r[dim] if dim == "B" else r["H"])
        assert [r[dim] if dim == "B" else r["H"][0] for r in rows] == values
        for r in rows:
            assert r["trace_nbytes"] == _closed_form_trace_bytes(cell, r["B"], r["T"], r["H"][0])
            assert (r["T"], r["I"]) == (4, 5) and (dim == "B" or r["B"] == 3) and (dim == "H" or r["H"] == [6])
        fit = doc["fits"]["npl/%s/fwdbwd" % cell]
        assert fit["dim"] == dim and fit[dim] == values
        assert fit["trace_nbytes"]["r2"] == pytest.approx(1.0)   # linear in B and in H
        assert math.isfinite(fit["ms_vs_flops"]["slope"]) and math.isfinite(fit["ms_exponent"])
        assert fit["growth_from"] == values[1]   # the larger half of three values: the last two


def test_sweep_exponent_and_fits_on_a_closed_form():
    rows = [{"framework": "npl", "cell": "lstm", "mode": "fwdbwd", "B": 4, "T": 3, "I": 2, "H": [h],
             "median_ms": 0.5 + 0.002 * h * h, "flops": 1000 * h * h, "peak_rss_growth_bytes": 100 * h,
             "trace_nbytes": 64 * h + 8} for h in (16, 32, 64, 128, 256)]
    f = report.sweep_fits(rows, "H")["npl/lstm/fwdbwd"]
    assert f["H"] == [16, 32, 64, 128, 256] and f["growth_from"] == 64
    assert f["ms_vs_flops"]["slope"] == pytest.approx(0.002 / 1000) and f["ms_vs_flops"]["r2"] == pytest.approx(1)
    # over H = 64..256 the fixed 0.5 ms shrinks: the exponent lies just under 2
    want = math.log((0.5 + 0.002 * 256 ** 2) / (0.5 + 0.002 * 64 ** 2)) / math.log(4)
    assert 1.9 < f["ms_exponent"] < 2.0 and f["ms_exponent"] == pytest.approx(want, rel=0.01)
    assert f["peak_exponent"] == pytest.approx(1.0)
    assert f["trace_nbytes"]["slope"] == pytest.approx(64) and f["trace_nbytes"]["intercept"] == pytest.approx(8)
    assert report.power_exponent([1, 2, 4], [3, 12, 48]) == pytest.approx(2.0)
    assert report.power_exponent([1, 2], [0, 1]) is None   # a zero has no logarithm
    text = report.format_sweep([dict(r, gflops=1.0, npl_over=None) for r in rows],
                               report.sweep_fits(rows, "H"), "H")
    assert "ms/GFLOP * F" in text and "k = 1.9" in text


def test_sweep_configs_replace_one_dimension():
    c1 = spec.CONFIGS["C1"]
    assert [(c.name, c.B) for c in spec.sweep_configs(c1, [1, 7], "B")] == [("C1@B=1", 1), ("C1@B=7", 7)]
    hs = spec.sweep_configs(c1, [64], "H")
    assert hs[0].H == (64,) and (hs[0].B, hs[0].T, hs[0].I) == (c1.B, c1.T, c1.I)
    assert [c.T for c in spec.sweep_configs(c1, [5, 9])] == [5, 9]        # T by default
    with pytest.raises(ValueError, match="one-layer"):
        spec.sweep_configs(spec.CONFIGS["C4"], [8], "H")


def test_long_check_runs_T_10000_without_recursion(tmp_path):
    proc = _run(["--long", "--cells", "gru", "--repeats", "1"], tmp_path)
    doc = json.load(open(tmp_path / "bench-long.json"))
    (check,) = doc["checks"]
    assert check["no_recursion"], proc.stdout
    run = check["runs"]["10000"]
    assert run["error"] is None and run["finite"] and _finite_pos(run["median_s"])
    assert check["nbytes_ratio"] == pytest.approx(10.0, rel=0.01)


def test_fit_line_matches_closed_form():
    f = report.fit_line([1, 2, 4, 8], [3 + 0.5 * x for x in (1, 2, 4, 8)])
    assert f["slope"] == pytest.approx(0.5) and f["intercept"] == pytest.approx(3.0)
    assert f["r2"] == pytest.approx(1.0)
    g = report.fit_line([0, 1, 2, 3], [0, 1, 0, 1])   # least squares by hand: slope 0.2, intercept 0.2
    assert g["slope"] == pytest.approx(0.2) and g["intercept"] == pytest.approx(0.2)


def test_device_defaults_and_the_large_configuration():
    cpu, gpu = parse_args([]), parse_args(["--device", "gpu"])
    assert cpu.device == "cpu" and [c.name for c in cpu.config_list] == ["C1", "C2", "C3", "C4", "C5"]
    assert gpu.device == "cuda" and [c.name for c in gpu.config_list] == ["C1", "C2", "C3", "C5", "C6"]
    c6 = spec.CONFIGS["C6"]
    assert (c6.B, c6.I, c6.H) == (256, 512, (1024,))


def _gpu_present():
    try:
        import torch
        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@pytest.mark.skipif(_gpu_present(), reason="a GPU is present: the GPU table really runs there")
def test_gpu_table_without_a_gpu_gives_notes_not_a_crash(tmp_path):
    proc = _run(["--device", "cuda", "--quick", "--no-plot"], tmp_path)
    assert proc.returncode == 1                    # nothing could run: a failure, with reasons
    out = proc.stdout
    assert "Traceback" not in out + proc.stderr
    assert "note: npl skipped: npl on the GPU needs CuPy" in out
    assert "no framework could run on the GPU" in out
    assert "GEMM ceiling: not measured (CuPy with a CUDA device is needed" in out
    doc = json.load(open(tmp_path / "bench.json"))
    assert doc["device"] == "cuda" and doc["results"] == []
    assert {s["status"] for s in doc["frameworks"].values()} == {"skipped"}


def test_flop_formula_on_the_issue_configurations():
    assert spec.forward_flops(spec.CONFIGS["C2"], "lstm") == 2 * 64 * 100 * (256 + 512) * 4 * 512
    assert spec.forward_flops(spec.CONFIGS["C3"], "gru") == 2 * 32 * 200 * (128 + 256) * 3 * 256
    assert spec.mode_flops(spec.CONFIGS["C4"], "lstm", "fwdbwd") == 3 * (
        2 * 128 * 10 * (1 + 30) * 4 * 30 + 2 * 128 * 10 * (30 + 1) * 4 * 1)
    c = spec.parse_custom("8,5,3,30+1", "X1")
    assert c.layers == [(3, 30), (30, 1)]


@pytest.mark.parametrize("argv, words", [
    (["--frameworks", "npl,foo"], ["--frameworks", "'foo'", "npl, tf1, keras, keras-ra, torch"]),
    (["--configs", "C9"], ["--configs", "'C9'", "C1, C2, C3, C4, C5"]),
    (["--custom", "0,10,5,5"], ["--custom", "batch B", "got 0"]),
    (["--custom", "4,-3,5,5"], ["steps T", "got -3"]),
    (["--custom", "4,10,5"], ["B,T,I,H", "'4,10,5'"]),
    (["--custom", "4,10,5,30+0"], ["hidden units H", "got 0"]),
    (["--threads", "0"], ["--threads", "got 0"]),
    (["--repeats", "two"], ["--repeats", "'two'"]),
    (["--warmup", "-1"], ["--warmup", ">= 0", "got -1"]),
    (["--cells", "lstm,rnn"], ["--cells", "'rnn'", "lstm, gru"]),
    (["--modes", "back"], ["--modes", "'back'"]),
    (["--sweep-T", "--frameworks", "keras"], ["--sweep-T", "'keras'", "npl, torch"]),
    (["--sweep-T", "--config", "C5"], ["--sweep-T", "C5"]),
    (["--sweep-T", "--T-values", "10,0"], ["--T-values", "got 0"]),
    (["--device", "tpu"], ["--device", "cpu, cuda", "'tpu'"]),
    (["--device", "cuda", "--sweep-T"], ["--device cuda", "--sweep-T"]),
    (["--sweep", "X"], ["--sweep", "T, B, H", "'X'"]),
    (["--sweep", "H", "--config", "C4"], ["--sweep H", "one-layer", "C4", "30+1"]),
    (["--sweep", "b", "--config", "C5"], ["--sweep B", "C5", "sampling"]),
    (["--sweep", "B", "--T-values", "1,2"], ["--T-values", "--sweep B", "--values"]),
    (["--sweep", "B", "--values", "0,4"], ["--values", "got 0"]),
    (["--sweep", "H", "--frameworks", "tf1"], ["--sweep H", "'tf1'", "npl, torch"]),
    (["--sweep-T", "--values", "5", "--T-values", "5"], ["--values or --T-values"]),
    (["--values", "1,2"], ["--values", "goes with --sweep"]),
    (["--T-values", "1,2"], ["--T-values", "goes with --sweep"]),
    (["--sweep", "B", "--long"], ["--long", "not allowed with", "--sweep"]),
    (["--sweep", "B", "--rounds", "2"], ["--rounds", "table only"]),
])
def test_nonsense_is_refused_with_a_clear_message(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)


def test_rounds_keep_each_cases_best_round(tmp_path):
    proc = _run(["--quick", "--configs", "C4", "--cells", "lstm", "--modes", "fwd", "--frameworks", "npl",
                 "--rounds", "3", "--repeats", "1", "--warmup", "0", "--min-run-ms", "0", "--no-plot",
                 "--no-memory"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rounds: every framework's worker ran 3 times" in proc.stdout
    assert proc.stderr.count("(round ") == 3
    doc = json.load(open(tmp_path / "bench.json"))
    assert doc["rounds"] == 3 and doc["frameworks"]["npl"]["rounds"] == 3
    (row,) = doc["results"]
    meds = row["round_medians_ms"]
    assert len(meds) == 3 and all(_finite_pos(v) for v in meds)
    assert row["median_ms"] == min(meds)                      # the best round's row
    assert meds[row["round"] - 1] == row["median_ms"]
    assert row["median_ms"] == 1e3 * statistics.median(row["times_s"])


def test_rounds_are_validated():
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "0"])
    with pytest.raises(SystemExit):
        parse_args(["--rounds", "2", "--long"])
    assert parse_args(["--rounds", "2"]).rounds == 2


def test_gpu_check_script_parses():
    """benchmarks/gpu_check.sh only runs where a GPU is lent; here bash must at least parse it."""
    path = os.path.join(REPO, "benchmarks", "gpu_check.sh")
    r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
