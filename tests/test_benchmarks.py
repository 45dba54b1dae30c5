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
    assert doc["complete"] is True and doc["frameworks_done"] == ["npl", "torch"]
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
    # the check covers the weight gradients too, and the header's protocol is what ran at each T
    assert run["finite_parts"] == {"outputs": True, "d_inputs": True, "weight_grads": True}
    assert run["weight_grads"] == ["candidate/bias", "candidate/kernel", "gates/bias", "gates/kernel"]
    assert [check["runs"][T]["warmup"] for T in ("1000", "10000")] == [1, 1]
    assert "timing: at each T, 1 warm-up call, then the median/min/max of 1 runs" in proc.stdout


def test_long_check_fails_on_a_non_finite_weight_gradient(monkeypatch):
    """A weight gradient that is not finite fails the long check even when the outputs and the
    input gradient are finite (the old check looked at those two only)."""
    import numpy as np
    from benchmarks import worker
    from benchmarks.frameworks import npl_fw
    real = npl_fw.make_cell

    def poisoned(config, cell):
        rnn = real(config, cell)
        next(iter(rnn._grads.values()))[...] = np.nan      # accumulates: stays NaN
        return rnn
    monkeypatch.setattr(npl_fw, "make_cell", poisoned)
    task = dict(B=2, I=3, H=4, T_short=10, T_long=100, recursion_headroom=80,
                per_step_ratio_window=[0.0, 1e9], cells=["lstm"], repeats=1, warmup=1)
    out = {}
    worker.run_long(task, out)
    (check,) = out["checks"]
    for T in ("10", "100"):
        run = check["runs"][T]
        assert run["finite_parts"] == {"outputs": True, "d_inputs": True, "weight_grads": False}
        assert run["finite"] is False
    assert check["passed"] is False and out["passed"] is False


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
    # a negative size is refused by name, not with argparse's "expected one argument"
    (["--custom", "-1,10,4,8"], ["--custom batch B", "got -1"]),
    (["--sweep", "B", "--values", "-4,8"], ["--values", "got -4"]),
    # empty lists are refused, not read as "the default"
    (["--configs", ""], ["--configs", "at least one", "''"]),
    (["--frameworks", ""], ["--frameworks", "at least one", "''"]),
    (["--sweep-T", "--T-values", ""], ["--T-values", "''"]),
    # conflicting options: refused with both names
    (["--sweep-T", "--configs", "C3"], ["--configs", "--sweep-T", "--config C3"]),
    (["--sweep", "B", "--custom", "3,4,5,6"], ["--custom", "--sweep B", "--config X1"]),
    (["--config", "C3"], ["--config", "--sweep", "--configs"]),
    (["--long", "--frameworks", "torch"], ["--frameworks", "--long"]),
    (["--long", "--configs", "C2"], ["--configs", "--long"]),
    (["--long", "--custom", "8,10,4,8"], ["--custom", "--long"]),
    (["--long", "--modes", "fwd"], ["--modes", "--long"]),
    (["--long", "--min-run-ms", "5"], ["--min-run-ms", "--long"]),
    (["--quick", "--long"], ["--quick", "--long"]),
    (["--quick", "--sweep-T"], ["--quick", "--sweep-T"]),
    (["--png", "x.png", "--no-plot"], ["--png", "--no-plot"]),
    # nothing would run: the real reason, naming the options
    (["--modes", "fwdbwd", "--configs", "C5"], ["nothing to run", "C5 is forward-only", "--modes"]),
    (["--frameworks", "keras-ra", "--cells", "lstm"], ["nothing to run", "keras-ra", "--cells has no gru"]),
])
def test_nonsense_is_refused_with_a_clear_message(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, (w, err)


def test_custom_adds_a_configuration_to_configs():
    assert [c.name for c in parse_args(["--configs", "C1", "--custom", "8,10,4,8"]).config_list] == ["C1", "X1"]
    assert [c.name for c in parse_args(["--configs", "X1,C4", "--custom", "8,10,4,8"]).config_list] == ["X1", "C4"]
    a = parse_args(["--sweep-T", "--custom", "8,10,4,8", "--config", "X1", "--T-values", "5"])
    assert [(c.name, c.B, c.T) for c in a.config_list] == [("X1@T=5", 8, 5)]


def test_skip_notes_give_the_real_reason(monkeypatch):
    """A framework or configuration that runs nothing says why: the sampling case is forward-only,
    keras-ra is a GRU variant (the old note blamed keras-ra for every skip)."""
    from benchmarks import run
    a = parse_args(["--configs", "C4,C5", "--modes", "fwdbwd", "--frameworks", "npl", "--no-plot"])
    assert [c.name for c in a.config_list] == ["C4", "C5"]
    assert a.notes == ["C5 not run: it is forward-only (100 single steps, mode step) and --modes has no fwd"]
    cases, why = run.skipped_cases(a, "npl")
    assert [(c["config"]["name"], c["cell"]) for c in cases] == [("C4", "lstm"), ("C4", "gru")]
    assert why == ["C5 is forward-only (100 single steps, mode step) and --modes has no fwd"]

    b = parse_args(["--configs", "C4", "--cells", "lstm", "--frameworks", "npl,keras-ra", "--no-plot"])
    ran = []

    def fake_worker(task, env, timeout):
        ran.append(task["framework"])
        return {"skipped": "not run in this test"}
    monkeypatch.setattr(run, "run_worker", fake_worker)
    rows, status, interrupted = run.run_frameworks(b, {}, ceiling_too=False)
    assert ran == ["npl"] and rows == [] and interrupted is None
    assert status["keras-ra"] == {"status": "skipped", "note": "no case applies: keras-ra is the GRU "
                                                                "with reset_after=True and --cells has no gru"}


def test_threads_default_to_the_usable_cores_and_more_is_a_warning(monkeypatch, capsys):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    a = parse_args([])
    assert a.threads == 1 and a.usable_cores == 1 and a.warnings == []
    b = parse_args(["--threads", "8"])
    assert b.threads == 8
    err = capsys.readouterr().err
    assert "warning: --threads 8 is more than the 1 core this process may use" in err
    meta = {"date": "d", "mode": "full", "machine": {}, "threads": 8, "protocol": b.protocol._asdict(),
            "warnings": b.warnings, "usable_cores": 1}
    head = report.format_header(meta)
    assert "threads per framework: 8" in head and "1 usable cores" in head
    assert "warning: --threads 8 is more than the 1 core" in head


@pytest.mark.parametrize("option", ["--out-dir", "--json", "--png", "--json-in-a-file", "--json-is-a-dir"])
def test_unusable_output_paths_are_refused_before_any_work(option, tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    argv = {"--out-dir": ["--out-dir", "/proc/npl-bench-nope"],
            "--json": ["--json", "/proc/npl-bench-nope/b.json", "--out-dir", str(tmp_path)],
            "--png": ["--png", "/proc/npl-bench-nope/b.png", "--out-dir", str(tmp_path)],
            "--json-in-a-file": ["--json", str(tmp_path / "afile" / "b.json"), "--no-plot"],
            "--json-is-a-dir": ["--json", str(tmp_path), "--no-plot"]}[option]
    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    name = option if option in ("--out-dir", "--json", "--png") else "--json"
    assert "error: %s: " % name in err, err
    assert ("is a file, not a directory" in err) if option == "--json-in-a-file" else True
    assert ("is a directory" in err) if option == "--json-is-a-dir" else True


def test_table_json_is_written_after_each_worker_and_kept_on_sigterm(tmp_path):
    """The table rewrites its JSON after every framework's worker: a run stopped by SIGTERM (a
    stage time limit) keeps the finished workers' rows, says it is incomplete, and prints the
    table so far.  PyTorch is replaced by a module whose import hangs."""
    import signal
    import time
    slow = tmp_path / "slow"
    (slow / "torch").mkdir(parents=True)
    (slow / "torch" / "__init__.py").write_text("import time\ntime.sleep(300)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(slow)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.run", "--quick", "--configs", "C4", "--cells", "lstm",
                             "--modes", "fwd", "--frameworks", "npl,torch", "--no-plot", "--no-memory",
                             "--threads", "1", "--out-dir", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                doc = json.load(open(out / "bench.json"))
                if doc["results"]:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        assert doc["complete"] is False and doc["frameworks_done"] == ["npl"]
        assert [(r["framework"], r["config"]) for r in doc["results"]] == [("npl", "C4")]
        assert "| C4 | lstm | fwd |" in (out / "bench.md").read_text()
        time.sleep(1.0)                                     # the torch worker is importing
        os.killpg(proc.pid, signal.SIGTERM)                 # as `timeout` does: the whole group
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stdout + stderr
    doc = json.load(open(out / "bench.json"))
    assert doc["complete"] is False and doc["interrupted"] == "SIGTERM while the PyTorch worker ran"
    assert doc["frameworks"]["torch"]["status"] == "error"
    assert doc["frameworks_done"] == ["npl"]                # the interrupted worker is not done
    assert [(r["framework"], r["config"]) for r in doc["results"]] == [("npl", "C4")]
    assert "C4      lstm fwd    npl" in stdout and "interrupted (SIGTERM while the PyTorch worker ran)" in stdout


def test_peak_memory_lower_bounds_are_marked():
    """A peak that is only a lower bound (TensorFlow's pool without statistics, the ru_maxrss
    fallback) is flagged in the row and printed with a >= mark; the others are not."""
    from benchmarks.measure import PeakMemory
    pm = PeakMemory()
    rec = pm.measure(lambda: bytearray(1 << 20), None, {"lower_bound": True, "why": "a lower bound: test"})
    assert rec["lower_bound"] is True and "a lower bound: test" in rec["method"]
    assert pm.measure(lambda: None)["lower_bound"] is (not pm.hwm_reset)
    cfg = spec.CONFIGS["C4"]
    base = {"cell": "lstm", "mode": "fwd", "times_s": [0.001], "inner": 1, "warmup": 0, "repeats": 1}
    rows = [report.summarise(dict(base, memory={"peak_rss_growth_bytes": 3 << 20, "lower_bound": lb}),
                             cfg, fw, None) for fw, lb in (("npl", False), ("keras", True))]
    assert [r["memory_lower_bound"] for r in rows] == [False, True]
    lines = {ln.split()[3]: ln for ln in report.format_table(rows, ["C4"]).splitlines()[2:]}
    mark = report.lower_bound_mark()
    assert lines["npl"].split()[10] == "3.0" and lines["Keras"].split()[10] == mark + "3.0"
    assert "\u22653.0" in report.format_peak(rows[1], mark="\u2265")


class _FakeTFMemory:
    """tf.config.experimental's memory statistics for one device: bytes in use and the peak."""

    def __init__(self, current, stats=True):
        self.current, self.peak, self.stats, self.resets = current, current, stats, 0

    def reset_memory_stats(self, device):
        if not self.stats:
            raise ValueError("Cannot reset memory stats for device '%s'" % device)
        self.resets += 1
        self.peak = self.current

    def get_memory_info(self, device):
        if not self.stats:
            raise ValueError("Allocator stats not available for device '%s'" % device)
        return {"current": self.current, "peak": self.peak}

    def allocate(self, n):
        self.current += n
        self.peak = max(self.peak, self.current)

    def free(self, n):
        self.current -= n


def _fake_tf(mem):
    import types
    return types.SimpleNamespace(config=types.SimpleNamespace(experimental=mem),
                                 test=types.SimpleNamespace(experimental=types.SimpleNamespace(sync_devices=lambda: None)))


def test_tensorflow_cpu_peak_counts_its_pool(monkeypatch):
    """TensorFlow's oneDNN allocator keeps freed buffers in a pool the RSS method cannot see: the
    peak adds the pool's own peak growth above what it held before the call (one unmeasured call
    first).  Without statistics it is None (malloc: RSS sees all) or, where oneDNN pools, a
    marked lower bound."""
    from benchmarks.frameworks import tf_common
    from benchmarks.measure import PeakMemory
    mem = _FakeTFMemory(current=5 << 20)
    pool = tf_common.cpu_memory_pool(_fake_tf(mem))
    calls = []

    def call():                                  # 7 MiB of temporaries from the pool, all freed
        calls.append(1)
        mem.allocate(4 << 20)
        mem.allocate(3 << 20)
        mem.free(7 << 20)
    rec = PeakMemory().measure(call, None, pool)
    assert len(calls) == 2                       # one call to fill the pool, one measured
    assert rec["pool_peak_bytes"] == 7 << 20 and rec["pool_in_use_before_bytes"] == 5 << 20
    assert rec["peak_rss_growth_bytes"] == rec["rss_growth_bytes"] + (7 << 20)
    assert "TensorFlow CPU pool" in rec["method"] and rec["lower_bound"] is (not PeakMemory().hwm_reset)
    none = _FakeTFMemory(0, stats=False)
    monkeypatch.setattr(tf_common, "onednn_enabled", lambda: False)
    assert tf_common.cpu_memory_pool(_fake_tf(none)) is None
    monkeypatch.setattr(tf_common, "onednn_enabled", lambda: True)
    marked = tf_common.cpu_memory_pool(_fake_tf(none))
    assert marked["lower_bound"] is True and "a lower bound" in marked["why"]


def test_tensorflow_cpu_peak_on_the_real_allocator(tmp_path):
    """The audit's reproduction: with oneDNN on (TensorFlow's default on x86), a call whose
    temporaries are 64 MiB measured 0 MB by RSS growth alone; with the pool's statistics it must
    count them (and not twice)."""
    pytest.importorskip("tensorflow")
    code = r"""
import os, sys
sys.path.insert(0, %r)
import numpy as np
from benchmarks.frameworks import tf_common
from benchmarks.measure import PeakMemory
tf = tf_common.import_tf(1, "cpu")
x = tf.constant(np.ones((64 * 1024, 256), np.float32)); w = tf.ones((256, 256))
f = tf.function(lambda: tf.reduce_sum(tf.matmul(x, w) * 2.0))
for _ in range(3):
    f()
pool = tf_common.cpu_memory_pool(tf)
rec = PeakMemory().measure(lambda: f(), None, pool)
print(tf_common.onednn_enabled(), pool is not None, rec["peak_rss_growth_bytes"], rec.get("pool_peak_bytes"))
""" % REPO
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    onednn, has_pool, peak, pool_peak = r.stdout.split()
    if onednn != "True":
        pytest.skip("this TensorFlow runs without oneDNN: its CPU allocator is malloc")
    assert has_pool == "True" and int(pool_peak) >= 60 << 20
    assert 60 << 20 <= int(peak) <= 100 << 20                # 64 MiB of temporaries, counted once


def test_gpu_peak_memory_is_the_growth_during_the_call(monkeypatch):
    """--device cuda: every framework's peak is the device memory a call adds to what was held
    before it (the weights and inputs): npl's CuPy pool, Keras' and TF1's TensorFlow statistics
    (Keras had none) and PyTorch's allocator."""
    import types
    from benchmarks.frameworks import keras_fw, npl_fw, tf1_fw, torch_fw

    class Pool:                                  # CuPy's memory pool: used + cached free blocks
        def __init__(self):
            self.used, self.free = 100 << 20, 30 << 20

        def used_bytes(self):
            return self.used

        def total_bytes(self):
            return self.used + self.free

        def free_all_blocks(self):
            self.free = 0
    pool = Pool()
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(get_default_memory_pool=lambda: pool))
    monkeypatch.setitem(npl_fw._state, "sync", lambda: None)
    monkeypatch.setattr(npl_fw, "release_memory", lambda: None)

    def npl_call():                              # 12 MiB of blocks, freed back into the pool
        pool.free += 12 << 20
    assert npl_fw.device_peak_memory(npl_call) == 12 << 20

    for mod in (keras_fw, tf1_fw):
        mem = _FakeTFMemory(current=50 << 20)
        monkeypatch.setitem(mod._state, "tf", _fake_tf(mem))
        assert mod.device_peak_memory(lambda: (mem.allocate(9 << 20), mem.free(9 << 20))) == 9 << 20

    alloc = {"now": 40 << 20, "peak": 40 << 20}
    cuda = types.SimpleNamespace(synchronize=lambda: None, memory_allocated=lambda: alloc["now"],
                                 max_memory_allocated=lambda: alloc["peak"],
                                 reset_peak_memory_stats=lambda: alloc.update(peak=alloc["now"]))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert torch_fw.device_peak_memory(lambda: alloc.update(peak=alloc["now"] + (5 << 20))) == 5 << 20


def test_gpu_runs_turn_tf32_off_and_say_so(monkeypatch):
    """PyTorch's cuDNN and TensorFlow use TensorFloat-32 on Ampere and newer by default, npl's
    CuPy path full float32: every GPU worker is set to float32 and the JSON and header say so."""
    import types
    from benchmarks import run
    from benchmarks.frameworks import tf_common, torch_fw
    flags = types.SimpleNamespace(allow_tf32=True)
    cudnn = types.SimpleNamespace(allow_tf32=True, version=lambda: 90100, enabled=True)
    backends = types.SimpleNamespace(cuda=types.SimpleNamespace(matmul=flags), cudnn=cudnn,
                                     mkldnn=types.SimpleNamespace(is_available=lambda: False),
                                     mkl=types.SimpleNamespace(is_available=lambda: False))
    torch = types.SimpleNamespace(__version__="2.11.0", backends=backends, set_num_threads=lambda n: None,
                                  set_num_interop_threads=lambda n: None, get_num_threads=lambda: 1,
                                  get_num_interop_threads=lambda: 1,
                                  cuda=types.SimpleNamespace(is_available=lambda: True,
                                                             get_device_name=lambda i: "fake GPU"))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(torch_fw._state, "device", "cpu")
    info = torch_fw.load(1, {"device": "cuda"})
    assert flags.allow_tf32 is False and cudnn.allow_tf32 is False
    assert info["tf32"] == {"torch.backends.cuda.matmul.allow_tf32": False, "torch.backends.cudnn.allow_tf32": False}

    tf32 = []
    tf = types.SimpleNamespace(
        config=types.SimpleNamespace(
            threading=types.SimpleNamespace(set_intra_op_parallelism_threads=lambda n: None,
                                            set_inter_op_parallelism_threads=lambda n: None),
            list_physical_devices=lambda kind: ["GPU:0"], set_visible_devices=lambda *a: None,
            experimental=types.SimpleNamespace(enable_tensor_float_32_execution=tf32.append)),
        get_logger=lambda: types.SimpleNamespace(setLevel=lambda level: None),
        test=types.SimpleNamespace(experimental=types.SimpleNamespace(sync_devices=lambda: None)),
        __version__="2.21.0")
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    assert tf_common.import_tf(1, "cuda") is tf and tf32 == [False]
    # a TensorFlow whose GPU work cannot be waited for is not timed on the GPU at all
    monkeypatch.setattr(tf, "test", types.SimpleNamespace(experimental=types.SimpleNamespace()))
    from benchmarks.frameworks import Unavailable
    with pytest.raises(Unavailable, match="no tf.test.experimental.sync_devices"):
        tf_common.import_tf(1, "cuda")

    a = parse_args(["--device", "cuda", "--no-plot"])
    monkeypatch.setenv("CUPY_TF32", "1")
    assert run.worker_env(a)["CUPY_TF32"] == "0"             # CuPy's cuBLAS in float32
    meta = run._meta(a, None, "full")
    assert meta["gpu_precision"]["tf32"] is False
    head = report.format_header(dict(meta, machine={}))
    assert "precision: float32 everywhere, TensorFloat-32 off" in head
    assert "torch.backends.cudnn.allow_tf32 = False" in head
    assert "enable_tensor_float_32_execution(False)" in head
    assert run._meta(parse_args(["--no-plot"]), None, "full")["gpu_precision"] is None


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
    # the GEMM ceiling follows --repeats, --warmup and --min-run-ms (recurrent GEMMs >= 20 ms)
    ceil = doc["ceiling"]
    assert ceil["protocol"] == {"warmup": 0, "repeats": 1, "min_run_s": 0.0, "recurrent_min_run_s": 0.02}
    assert len(ceil["gemm_2048"]["times_s"]) == 1 and ceil["gemm_2048"]["warmup"] == 0
    assert all(len(r["times_s"]) == 1 and r["min_run_s"] == 0.02 for r in ceil["recurrent_gemm"].values())


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


def test_gpu_check_stage_limits_fit_a_gpu_session():
    """A GPU session has 15 minutes of device time, 1-2 of them for the machine's start: the
    stages' limits together must stay well under 10 minutes, and stage 4 has its own."""
    import re
    text = open(os.path.join(REPO, "benchmarks", "gpu_check.sh")).read()
    default = {k: int(v) for k, v in re.findall(r"^(STAGE_S|STAGE4_S)=\$\{\1:-(\d+)\}$", text, re.M)}
    assert set(default) == {"STAGE_S", "STAGE4_S"}
    assert re.search(r"^timeout 60 ", text, re.M)                              # stage 1
    assert 60 + 2 * default["STAGE_S"] + default["STAGE4_S"] + 10 <= 9.5 * 60
    assert "--repeats 5" in text and "timeout -k 10 " in text
    assert text.index('bench bench.json "$BENCH_SMALL"') < text.index('bench bench-large.json "$BENCH_LARGE"')
    assert re.search(r"^BENCH_SMALL=\$\{BENCH_SMALL-C1,C3,C5\}$", text, re.M)
    assert re.search(r"^BENCH_LARGE=\$\{BENCH_LARGE-C2,C6\}$", text, re.M)
    head = text[:text.index("set -uo pipefail")]
    for word in ("STAGE4_S (default", "180", "bench-large.json", "5 timed",
                 "STAGES", "BENCH_SMALL", "BENCH_LARGE", '"complete": false'):
        assert word in head, word


@pytest.mark.skipif(_gpu_present(), reason="a GPU is present: stage 4 really runs there")
def test_gpu_check_stage_4_runs_small_configurations_first(tmp_path):
    """STAGES=4 runs the benchmark alone: two runs, C1,C3,C5 into bench.json, then C2,C6 into
    bench-large.json, 5 timed runs each; without a GPU every framework is skipped with a note, so
    the stage fails, and both JSON files say what was asked."""
    out = tmp_path / "gpu"
    r = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "gpu_check.sh")], cwd=REPO,
                       env=dict(os.environ, OUT=str(out), PYTHON=sys.executable, STAGES="4",
                                BENCH_ARGS="--threads 1"),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert not (out / "gpu_kernels.log").exists() and not (out / "gpu_env.txt").exists()
    log = (out / "gpu_bench.log").read_text()
    assert log.index("-- C1,C3,C5 -> ") < log.index("-- C2,C6 -> ")
    for name, configs in (("bench.json", ["C1", "C3", "C5"]), ("bench-large.json", ["C2", "C6"])):
        doc = json.load(open(out / name))
        assert [c["name"] for c in doc["configs"]] == configs and doc["device"] == "cuda"
        assert doc["protocol"]["repeats"] == 5 and doc["complete"] is True
        assert doc["gpu_precision"]["tf32"] is False
        assert {s["status"] for s in doc["frameworks"].values()} == {"skipped"}


def test_sigterm_while_the_first_checkpoint_is_written_is_kept(tmp_path, monkeypatch, capsys):
    """A SIGTERM that lands while the first (empty) JSON is written waits for the write, then
    ends the run like any other: exit status 1, no traceback, the JSON says so."""
    import signal
    from benchmarks import run
    real, calls = run._write_json, []

    def write(path, doc):
        calls.append(path)
        if len(calls) == 1:
            run._SIGTERM["pending"] = True          # as _on_sigterm sets it inside the block
        real(path, doc)

    monkeypatch.setattr(run, "_write_json", write)
    monkeypatch.setitem(run._SIGTERM, "pending", False)
    monkeypatch.setitem(run._SIGTERM, "defer", run._SIGTERM["defer"])   # restored afterwards
    old = signal.getsignal(signal.SIGTERM)
    try:
        rc = run.main(["--quick", "--configs", "C4", "--cells", "lstm", "--modes", "fwd",
                       "--frameworks", "npl", "--no-plot", "--no-memory", "--threads", "1",
                       "--out-dir", str(tmp_path)])
    finally:
        signal.signal(signal.SIGTERM, old)
    assert rc == 1
    doc = json.load(open(tmp_path / "bench.json"))
    assert doc["complete"] is False and doc["interrupted"] == "SIGTERM before the first worker"
    assert doc["results"] == [] and doc["frameworks_done"] == []
