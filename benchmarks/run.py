"""The benchmark command: ``python -m benchmarks.run`` (or ``python benchmarks/run.py``).

Default: the table of configurations C1..C5 x {LSTM, GRU} x {forward, forward+backward} x
{npl, TF1 graph, Keras, Keras GRU reset_after=True, PyTorch}: ms per batch (median, min, max),
GEMM GFLOP/s, its fraction of the machine's GEMM ceiling, peak memory of one call (RSS growth;
TensorFlow's also counts its CPU pool) and npl's time over each peer's.  Each framework runs in
its own subprocess (:mod:`benchmarks.worker`) with the same thread count.  Writes a JSON file
with every raw timing (rewritten after every worker, so a run stopped early keeps what finished)
and a PNG chart.

``--quick``: C1 and C4, 3 short runs each (under a minute).  ``--sweep T`` (or ``--sweep-T``):
T from 10 to 2000 for one configuration (npl and PyTorch), time, peak memory and trace size
against T with line fits; ``--sweep B`` and ``--sweep H`` do the same for the batch and the
hidden units.  ``--long``: npl at T=10000 on a small model (no recursion, linear cost in T).
Run ``python -m benchmarks.run --help`` for every option.
"""
import argparse
import collections
import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

if __package__ in (None, ""):   # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # noqa: E402
from benchmarks.measure import thread_env, usable_cores, OPENBLAS_VARS  # noqa: E402
from benchmarks.spec import (CONFIGS, DEFAULT_CONFIGS, DEFAULT_FRAMEWORKS, DEFAULT_SWEEP,  # noqa: E402
                             FRAMEWORK_LABELS, PROTOCOLS, parse_device, SWEEP_FRAMEWORKS, Protocol, parse_cells, parse_configs,
                             parse_custom, parse_frameworks, parse_int_list, parse_modes,
                             parse_positive_int, parse_sweep_dim, sweep_configs, sweep_value)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK_CONFIGS = "C1,C4"
QUICK_FRAMEWORKS = "npl,torch"   # TensorFlow's import and graph building would double --quick's time
FLOP_FORMULA = ("forward F = sum over layers of 2*B*T*(I+H)*G*H (G=4 LSTM, G=3 GRU); backward 2F; "
                "forward+backward 3F; sampling: F with B=1 over its T single steps")


def _span(values):
    return "%d..%d" % (min(values), max(values))


# The GPU table computes in full float32 on every framework (TensorFloat-32 off); recorded in the
# JSON (gpu_precision) and the header.
GPU_PRECISION = {
    "tf32": False,
    "summary": "float32 everywhere, TensorFloat-32 off: npl's kernels and CuPy's cuBLAS "
               "(CUPY_TF32=0), PyTorch (torch.backends.cuda.matmul.allow_tf32 = False, "
               "torch.backends.cudnn.allow_tf32 = False), TensorFlow "
               "(tf.config.experimental.enable_tensor_float_32_execution(False))",
    "npl": "CUPY_TF32=0 in the worker's environment (CuPy's default: float32 cuBLAS GEMMs); npl's "
           "own CUDA kernels are float32",
    "torch": "torch.backends.cuda.matmul.allow_tf32 = False; torch.backends.cudnn.allow_tf32 = False",
    "tensorflow": "tf.config.experimental.enable_tensor_float_32_execution(False)",
}
# options whose value is a comma-separated list that may start with a negative number
# ("--custom -1,10,4,8"): argparse would take it for an option and say "expected one argument"
LIST_OPTIONS = ("--custom", "--values", "--T-values", "--configs")


class Interrupted(Exception):
    """SIGTERM (a stage time limit, ``timeout``) while the benchmark ran: what is done is kept."""


_SIGTERM = {"defer": 0, "pending": False}


def _on_sigterm(signum, frame):
    if _SIGTERM["defer"]:            # writing the JSON: finish it first
        _SIGTERM["pending"] = True
        return
    raise Interrupted("SIGTERM")


@contextlib.contextmanager
def _deferred_sigterm(reraise=True):
    """A SIGTERM inside this block waits for its end (a JSON being written stays whole); then it
    raises :class:`Interrupted` (``reraise``) or stays pending (see :func:`_sigterm_pending`)."""
    _SIGTERM["defer"] += 1
    try:
        yield
    finally:
        _SIGTERM["defer"] -= 1
        if reraise and not _SIGTERM["defer"] and _SIGTERM["pending"]:
            _SIGTERM["pending"] = False
            raise Interrupted("SIGTERM")


def _sigterm_pending():
    return _SIGTERM["pending"]


def _join_negative_values(argv):
    """``--custom -1,10,4,8`` -> ``--custom=-1,10,4,8``, so that the size is refused by name."""
    out, k = [], 0
    while k < len(argv):
        tok = argv[k]
        nxt = argv[k + 1] if k + 1 < len(argv) else None
        if tok in LIST_OPTIONS and nxt is not None and nxt[:1] == "-" and nxt[1:2].isdigit():
            out.append("%s=%s" % (tok, nxt))
            k += 2
            continue
        out.append(tok)
        k += 1
    return out


def _nonneg_int(text, name):
    try:
        v = int(str(text).strip())
    except ValueError:
        raise ValueError("%s must be an integer >= 0, got %r" % (name, text)) from None
    if v < 0:
        raise ValueError("%s must be an integer >= 0, got %d" % (name, v))
    return v


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark npl's LSTM/GRU against TensorFlow (TF1 graph and Keras) and PyTorch.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--sweep", metavar="DIM",
                      help="sweep one dimension of one configuration (--config), npl and PyTorch: "
                           "T (steps, default %s), B (batch, default %s) or H (hidden units of a "
                           "one-layer configuration, default %s); time, peak memory and trace size "
                           "against it, with fits" % tuple(_span(DEFAULT_SWEEP[d]) for d in "TBH"))
    what.add_argument("--sweep-T", action="store_true", help="the same as --sweep T")
    what.add_argument("--long", action="store_true",
                      help="check that npl runs T=10000 on a small model (no recursion, linear cost)")
    p.add_argument("--quick", action="store_true",
                   help="C1 and C4 only, 1 warm-up and 3 short runs each (the smoke test)")
    p.add_argument("--device", default="cpu",
                   help="cpu (default) or cuda: npl on CuPy, PyTorch on CUDA (cuDNN), TensorFlow on "
                        "its GPU; default configurations C1,C2,C3,C5,C6 (C6: B=256, H=1024); "
                        "timings synchronise the device; peak MB is device memory")
    p.add_argument("--configs", help="comma-separated subset of %s (default: %s; --device cuda: %s; "
                   "--quick: %s)" % (",".join(CONFIGS), ",".join(DEFAULT_CONFIGS["cpu"]),
                                     ",".join(DEFAULT_CONFIGS["cuda"]), QUICK_CONFIGS))
    p.add_argument("--custom", action="append", default=[], metavar="B,T,I,H",
                   help="add a configuration (named X1, X2, ...) to the table, also to the ones "
                        "--configs names; H may be 30+1 for a stack; with --sweep, name it with "
                        "--config X1")
    p.add_argument("--cells", help="lstm,gru (default both)")
    p.add_argument("--modes", help="fwd,fwdbwd (default both; C5 runs only with fwd)")
    p.add_argument("--frameworks", help="comma-separated subset of %s (default: all; --quick: %s; "
                   "--sweep: %s)" % (",".join(DEFAULT_FRAMEWORKS), QUICK_FRAMEWORKS, ",".join(SWEEP_FRAMEWORKS)))
    p.add_argument("--threads",
                   help="threads for every framework (default: the cores this process may use, "
                        "os.sched_getaffinity: %d here; more is accepted with a warning)" % usable_cores())
    p.add_argument("--repeats", help="timed runs per case and per GEMM of the ceiling (default 7; "
                   "--quick 3; --sweep 3; --long 3)")
    p.add_argument("--warmup", help="untimed calls before timing, also for the ceiling's GEMMs "
                   "(default 2; --quick 1; --long 1 at each T)")
    p.add_argument("--min-run-ms", help="each timed run lasts at least this long, averaging n calls "
                   "(default 50; --quick 5); the ceiling's recurrent GEMMs at least 20 ms")
    p.add_argument("--config", help="--sweep: the configuration to sweep (default C1)")
    p.add_argument("--values", help="--sweep: comma-separated values of the swept dimension")
    p.add_argument("--T-values", dest="t_values", help="--sweep-T: comma-separated T values (as --values)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG chart")
    p.add_argument("--out-dir", default=os.path.join(REPO_ROOT, "runs", "bench"),
                   help="where bench*.json and bench*.png go (default runs/bench)")
    p.add_argument("--json", help="the JSON path (default OUT_DIR/bench[-sweep|-sweep-B|-sweep-H|-long].json)")
    p.add_argument("--png", help="the chart path (default OUT_DIR/bench[-sweep|-sweep-B|-sweep-H].png)")
    p.add_argument("--unset-openblas-coretype", action="store_true",
                   help="remove OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from the workers' environment "
                   "(benchmark numpy's native OpenBLAS kernel; the kernel in use is recorded either way)")
    p.add_argument("--rounds", default="1",
                   help="run every framework's worker this many times, round-robin (npl, tf1, ..., "
                        "npl, tf1, ...), and keep each case's best round (lowest median): on a "
                        "shared VM whose speed changes for minutes at a time, one slow phase then "
                        "does not decide a framework's row (default 1); the JSON keeps every round")
    p.add_argument("--worker-timeout", default="3600", help="seconds one framework may take (default 3600)")
    return p


def _given(*pairs):
    """The first option of (name, value) pairs that was given on the command line, else None."""
    for name, value in pairs:
        if value is not None and value != []:
            return name
    return None


def _check_output(path, option):
    """Create ``path``'s directory and check that a file can be written there, at parse time, so
    that an unusable --out-dir / --json / --png fails before any work, with the option's name."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ValueError("%s: %r is a directory; give a file name" % (option, path))
    d = os.path.dirname(path)
    up = d
    while not os.path.exists(up) and os.path.dirname(up) != up:
        up = os.path.dirname(up)
    if os.path.exists(up) and not os.path.isdir(up):
        raise ValueError("%s: cannot create the directory %r: %r is a file, not a directory"
                         % (option, d, up))
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        raise ValueError("%s: cannot create the directory %r (%s)" % (option, d, e.strerror or e)) from None
    try:
        with tempfile.TemporaryFile(dir=d, prefix=".npl-bench-check-"):
            pass
    except OSError as e:
        raise ValueError("%s: cannot write to the directory %r (%s)" % (option, d, e.strerror or e)) from None


def _outputs(a):
    """The paths this run writes (JSON, Markdown next to it for the table, chart), checked."""
    suffix = "-long" if a.long else ("" if not a.sweep else ("-sweep" if a.sweep == "T" else "-sweep-" + a.sweep))
    if a.json:
        a.json_path, jopt = os.path.abspath(a.json), "--json"
    else:
        a.json_path, jopt = os.path.join(os.path.abspath(a.out_dir), "bench%s.json" % suffix), "--out-dir"
    _check_output(a.json_path, jopt)
    a.png_path = None
    if not (a.no_plot or a.long):
        if a.png:
            a.png_path, popt = os.path.abspath(a.png), "--png"
        else:
            a.png_path, popt = os.path.join(os.path.abspath(a.out_dir), "bench%s.png" % suffix), "--out-dir"
        _check_output(a.png_path, popt)


def skipped_cases(args, fw):
    """(cases for ``fw``, [reasons for what it skips]): the cases of the table a framework runs."""
    cases, why = [], []
    for c in args.config_list:
        if c.sample and "fwd" not in args.mode_list:
            why.append("%s is forward-only (%d single steps, mode step) and --modes has no fwd"
                       % (c.name, c.T))
            continue
        for cell in args.cell_list:
            if fw == "keras-ra" and cell != "gru":
                why.append("keras-ra is the GRU with reset_after=True and --cells has no gru")
                continue
            cases.append({"config": c.as_dict(), "cell": cell,
                          "modes": ["step"] if c.sample else list(args.mode_list)})
    return cases, list(dict.fromkeys(why))


def parse_args(argv):
    """Parse and validate; every nonsense value or conflicting pair of options is refused with a
    message naming the option(s)."""
    parser = build_parser()
    a = parser.parse_args(_join_negative_values(list(argv)))
    a.warnings, a.notes = [], []
    try:
        a.device = parse_device(a.device)
        a.sweep = "T" if a.sweep_T else (None if a.sweep is None else parse_sweep_dim(a.sweep))
        flag = "--sweep-T" if a.sweep_T else "--sweep %s" % a.sweep
        if a.device == "cuda" and (a.sweep or a.long):
            raise ValueError("--device cuda runs the table only (not --sweep, --sweep-T or --long)")
        if (a.values is not None or a.t_values is not None) and not a.sweep:
            raise ValueError("%s goes with --sweep (or --sweep-T)" % ("--values" if a.values is not None else "--T-values"))
        if a.values is not None and a.t_values is not None:
            raise ValueError("give the values once: --values or --T-values, not both")
        if a.t_values is not None and a.sweep != "T":
            raise ValueError("--T-values goes with --sweep-T; with %s use --values" % flag)
        if a.png is not None and a.no_plot:
            raise ValueError("--png names a chart and --no-plot turns it off: give one of them")
        if a.long:
            other = _given(("--frameworks", a.frameworks), ("--configs", a.configs), ("--custom", a.custom),
                           ("--config", a.config), ("--modes", a.modes), ("--min-run-ms", a.min_run_ms),
                           ("--png", a.png))
            if other:
                raise ValueError("%s does not apply to --long: the long check runs npl's forward+backward "
                                 "on its own model (B=8, I=16, H=32 at T=1000 and T=10000), one call per "
                                 "run (--cells, --repeats and --warmup apply)" % other)
            if a.quick:
                raise ValueError("--quick does not apply to --long (the long check has its own protocol: "
                                 "1 warm-up and 3 runs at each T; --repeats and --warmup change it)")
        elif a.sweep:
            if a.configs is not None:
                raise ValueError("--configs does not apply to %s: a sweep varies one configuration, "
                                 "named with --config (e.g. --config %s)"
                                 % (flag, a.configs.split(",")[0].strip() or "C1"))
            if a.quick:
                raise ValueError("--quick does not apply to %s (it is the table's smoke test); shorten "
                                 "the sweep with --values%s and --repeats" % (flag, "/--T-values" if a.sweep == "T" else ""))
        elif a.config is not None:
            raise ValueError("--config goes with --sweep or --sweep-T (the configuration to sweep); "
                             "the table takes --configs")
        custom = {}
        for k, text in enumerate(a.custom, 1):
            c = parse_custom(text, "X%d" % k)
            custom[c.name] = c
        if a.sweep:
            base = parse_configs(a.config if a.config is not None else "C1", custom)
            if len(base) != 1:
                raise ValueError("--config must name one configuration for %s, got %r" % (flag, a.config))
            if custom and base[0].name not in custom:
                raise ValueError("--custom with %s only defines a configuration to sweep, named with "
                                 "--config (--config %s); --config is %s" % (flag, next(iter(custom)), base[0].name))
            if a.values is not None or a.t_values is not None:
                values = parse_int_list(a.values if a.values is not None else a.t_values,
                                        "--values" if a.values is not None else "--T-values")
            else:
                values = list(DEFAULT_SWEEP[a.sweep])
            a.config_list = sweep_configs(base[0], values, a.sweep)
            a.base_config = base[0]
        elif a.configs is not None:
            a.config_list = parse_configs(a.configs, custom)
            a.config_list += [c for c in custom.values() if c not in a.config_list]   # --custom adds
        else:
            names = QUICK_CONFIGS if a.quick else ",".join(DEFAULT_CONFIGS[a.device])
            a.config_list = parse_configs(names) + list(custom.values())
        a.cell_list = parse_cells(a.cells if a.cells is not None else "lstm,gru")
        a.mode_list = parse_modes(a.modes if a.modes is not None else "fwd,fwdbwd")
        if a.sweep:
            a.fw_list = parse_frameworks(a.frameworks if a.frameworks is not None else ",".join(SWEEP_FRAMEWORKS),
                                         SWEEP_FRAMEWORKS, "--frameworks (with %s)" % flag)
        elif a.long:
            a.fw_list = ["npl"]
        else:
            default = QUICK_FRAMEWORKS if a.quick else ",".join(DEFAULT_FRAMEWORKS)
            a.fw_list = parse_frameworks(a.frameworks if a.frameworks is not None else default)
        if not a.long:
            reasons = {fw: skipped_cases(a, fw) for fw in a.fw_list}
            if not any(cases for cases, _ in reasons.values()):
                why = list(dict.fromkeys(w for _, ws in reasons.values() for w in ws))
                raise ValueError("nothing to run: %s" % "; ".join(why))
            for c in a.config_list:
                if c.sample and "fwd" not in a.mode_list:
                    a.notes.append("%s not run: it is forward-only (%d single steps, mode step) and "
                                   "--modes has no fwd" % (c.name, c.T))
        a.usable_cores = usable_cores()
        a.threads = a.usable_cores if a.threads is None else parse_positive_int(a.threads, "--threads")
        if a.threads > a.usable_cores:
            a.warnings.append("--threads %d is more than the %d core%s this process may use "
                              "(os.sched_getaffinity): every framework's threads share them, and a "
                              "multi-threaded BLAS call waits for descheduled threads"
                              % (a.threads, a.usable_cores, "" if a.usable_cores == 1 else "s"))
        key = "sweep" if a.sweep else ("quick" if a.quick else "full")
        base = PROTOCOLS[key]
        a.protocol = Protocol(
            warmup=base.warmup if a.warmup is None else _nonneg_int(a.warmup, "--warmup"),
            repeats=base.repeats if a.repeats is None else parse_positive_int(a.repeats, "--repeats"),
            min_run_s=base.min_run_s if a.min_run_ms is None else _nonneg_int(a.min_run_ms, "--min-run-ms") / 1e3)
        if a.long:   # one call per run, the same warm-up at both T
            a.protocol = Protocol(warmup=1 if a.warmup is None else a.protocol.warmup,
                                  repeats=3 if a.repeats is None else a.protocol.repeats, min_run_s=0.0)
        a.worker_timeout = parse_positive_int(a.worker_timeout, "--worker-timeout")
        a.rounds = parse_positive_int(a.rounds, "--rounds")
        if a.rounds > 1 and (a.sweep or a.long):
            raise ValueError("--rounds applies to the table only (not --sweep, --sweep-T or --long)")
        _outputs(a)
    except ValueError as e:
        parser.error(str(e))
    for w in a.warnings:
        sys.stderr.write("warning: %s\n" % w)
    return a


# ----------------------------------------------------------------------------- workers
def _log(msg):
    sys.stderr.write("[bench] %s\n" % msg)
    sys.stderr.flush()


def run_worker(task, env, timeout):
    """Run one worker subprocess on ``task``; returns its JSON, or {"error": ...} if it failed."""
    with tempfile.TemporaryDirectory(prefix="npl-bench-") as d:
        tpath, opath = os.path.join(d, "task.json"), os.path.join(d, "out.json")
        with open(tpath, "w") as f:
            json.dump(task, f)
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker", tpath, opath], cwd=REPO_ROOT,
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        killed = []

        def kill():                                   # ends only the worker this call started
            killed.append(True)
            proc.kill()
        timer = threading.Timer(timeout, kill)
        timer.start()
        tail = collections.deque(maxlen=15)
        try:
            for line in proc.stderr:                  # relay the worker's progress lines live
                tail.append(line.rstrip())
                if line.startswith("[worker]"):
                    sys.stderr.write("  " + line)
                    sys.stderr.flush()
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:                   # interrupted: end the worker this call started
                proc.kill()
                proc.wait()
        wall = time.perf_counter() - t0
        if killed:
            return {"error": "worker timed out after %d s (--worker-timeout)" % timeout}
        if rc != 0 or not os.path.exists(opath):
            return {"error": "worker exited with code %d:\n%s" % (rc, "\n".join(tail))}
        with open(opath) as f:
            out = json.load(f)
    out["process_wall_s"] = wall
    return out


def worker_env(args):
    env = thread_env(os.environ, args.threads, args.unset_openblas_coretype)
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    if getattr(args, "device", "cpu") == "cuda":
        env["CUPY_TF32"] = "0"       # CuPy's cuBLAS in float32 (its default), whatever the caller set
    return env


def _current_rows(best):
    rows = [dict(r) for r in best.values()]
    report.attach_ratios(rows)
    return rows


def run_frameworks(args, env, ceiling_too, on_worker=None):
    """Run every framework's worker in turn, ``args.rounds`` times round-robin; returns (rows,
    per-framework status dict, interruption or None).  With several rounds each case keeps the
    row of its best round (lowest median), with every round's median in ``round_medians_ms``.
    ``on_worker(rows, status)`` runs after each worker (the table writes its JSON there).  A
    SIGTERM or Ctrl-C ends the worker in flight and returns what the finished ones gave."""
    best, status = {}, {}
    by_name = {c.name: c for c in args.config_list}
    rounds = getattr(args, "rounds", 1)
    interrupted = None
    for rnd in range(rounds):
        for fw in args.fw_list:
            if status.get(fw, {}).get("status") in ("skipped", "error"):
                continue                                  # not installed, or broken: once is enough
            cases, why = skipped_cases(args, fw)
            if not cases:
                status[fw] = {"status": "skipped", "note": "no case applies: %s" % "; ".join(why)}
                continue
            _log("%s: %d cases ...%s" % (FRAMEWORK_LABELS[fw], len(cases),
                                         " (round %d of %d)" % (rnd + 1, rounds) if rounds > 1 else ""))
            task = {"kind": "table", "framework": fw, "threads": args.threads, "cases": cases,
                    "protocol": args.protocol._asdict(), "memory": not args.no_memory,
                    "ceiling": ceiling_too, "device": getattr(args, "device", "cpu"),
                    "options": {"device": getattr(args, "device", "cpu")}}
            try:
                _run_one(args, env, fw, rnd, task, best, status, by_name, on_worker)
            except (Interrupted, KeyboardInterrupt) as e:
                interrupted = "%s while the %s worker ran" % (
                    "SIGTERM" if isinstance(e, Interrupted) else "Ctrl-C", FRAMEWORK_LABELS[fw])
                prev = status.get(fw)
                if prev is None or prev.get("status") not in ("ok", "partial"):
                    status[fw] = {"status": "error", "note": "interrupted: %s" % interrupted}
                _log("interrupted: %s; keeping what the finished workers gave" % interrupted)
                break
        if interrupted:
            break
    return _current_rows(best), status, interrupted


def _run_one(args, env, fw, rnd, task, best, status, by_name, on_worker):
    """One worker of :func:`run_frameworks`: run it, merge its rows into ``best``, report."""
    out = run_worker(task, env, args.worker_timeout)
    if "error" in out:
        status[fw] = {"status": "error", "note": out["error"]}
        _log("%s failed: %s" % (fw, out["error"]))
        return
    if out.get("skipped"):
        status[fw] = {"status": "skipped", "note": out["skipped"]}
        _log("%s skipped: %s" % (fw, out["skipped"]))
        return
    prev = status.get(fw, {})
    status[fw] = {"status": "ok", "load": out.get("load"), "facts": out.get("facts"),
                  "blas": out.get("blas"), "gemm_2048": out.get("gemm_2048"),
                  "memory_method": out.get("memory_method"),
                  "errors": prev.get("errors", []) + out.get("errors", []),
                  "wall_s": (prev.get("wall_s") or 0) + (out.get("process_wall_s") or 0),
                  "loadavg": prev.get("loadavg", []) + [out.get("loadavg_start"),
                                                         out.get("loadavg_end")],
                  "rounds": rnd + 1}
    if status[fw]["errors"]:
        status[fw]["status"] = "partial"
    for rec in out["results"]:
        row = report.summarise(rec, by_name[rec["config"]], fw, args.ceiling)
        key = (fw, row["config"], row["cell"], row["mode"])
        old = best.get(key)
        row["round_medians_ms"] = (old["round_medians_ms"] if old else []) + [row["median_ms"]]
        row["round"] = rnd + 1
        if old is None or row["median_ms"] < old["median_ms"]:
            best[key] = row
        else:
            old["round_medians_ms"] = row["round_medians_ms"]
    if on_worker is not None:
        on_worker(_current_rows(best), status)


def run_ceiling(args, env):
    """The GEMM ceiling, timed with the table's protocol (--warmup, --repeats, --min-run-ms; the
    recurrent GEMMs' runs last at least worker.RECURRENT_MIN_RUN_S)."""
    _log("GEMM ceiling (%s) ..." % ("cupy" if getattr(args, "device", "cpu") == "cuda" else "numpy"))
    task = {"kind": "ceiling", "threads": args.threads, "configs": [c.as_dict() for c in args.config_list],
            "protocol": args.protocol._asdict(), "device": getattr(args, "device", "cpu")}
    out = run_worker(task, env, args.worker_timeout)
    if "error" in out:
        _log("ceiling failed: %s" % out["error"])
        return None, None
    if out.get("skipped"):
        _log("ceiling not measured: %s" % out["skipped"])
        return None, out
    ceiling = {"gemm_2048": out["gemm_2048"], "recurrent_gemm": out["recurrent_gemm"],
               "protocol": out.get("protocol")}
    if out.get("ceiling_backend"):
        ceiling["ceiling_backend"] = out["ceiling_backend"]
    return ceiling, out


def _meta(args, ceiling_out, mode):
    facts = (ceiling_out or {}).get("facts") or {}
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "mode": mode, "device": getattr(args, "device", "cpu"), "command": " ".join(["python -m benchmarks.run"] + sys.argv[1:]),
            "threads": args.threads, "protocol": args.protocol._asdict(), "machine": facts,
            "blas": (ceiling_out or {}).get("blas"), "loadavg": list(os.getloadavg()),
            "flop_formula": FLOP_FORMULA,
            "parent_env": {k: os.environ.get(k) for k in OPENBLAS_VARS},
            "unset_openblas_coretype": bool(args.unset_openblas_coretype),
            "rounds": getattr(args, "rounds", 1),
            "usable_cores": getattr(args, "usable_cores", None),
            "warnings": list(getattr(args, "warnings", [])),
            "gpu_precision": GPU_PRECISION if getattr(args, "device", "cpu") == "cuda" else None}


def _write_json(path, doc):
    """Write through a temporary file and rename, so that a kill mid-write leaves the last whole
    version (the table rewrites its JSON after every worker)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def _notes(status, extra=()):
    lines = ["note: %s" % n for n in extra]
    for fw, s in status.items():
        if s["status"] == "skipped":
            lines.append("note: %s skipped: %s" % (FRAMEWORK_LABELS[fw], s["note"]))
        elif s["status"] == "error":
            lines.append("note: %s failed: %s" % (FRAMEWORK_LABELS[fw], s["note"]))
        for e in s.get("errors", []) or []:
            lines.append("note: %s %s %s %s failed: %s" % (FRAMEWORK_LABELS[fw], e.get("config"),
                                                          e.get("cell"), e.get("mode", ""), e["error"]))
    return lines


def _plot(fn, *a):
    try:
        fn(*a)
        return None
    except ImportError as e:
        return "chart not written: matplotlib is not installed (%s)" % e


def _memory_lines(status, rows, device):
    lines = []
    mm = sorted({s.get("memory_method") for s in status.values() if s.get("memory_method")})
    if mm and device == "cuda":
        lines.append("memory (peak MB column): device memory high-water mark of one call above what "
                     "was allocated before it: %s" % "; ".join(mm))
    elif mm:
        lines.append("memory: peak RSS growth of one call, measured after the timings: %s; npl also "
                     "records tracemalloc's peak of NumPy allocations in the JSON" % "; ".join(mm))
    if any(r.get("memory_lower_bound") for r in rows):
        lines.append("memory: %s marks a lower bound (memory kept in a pool or above an earlier peak "
                     "that the method cannot see)" % report.lower_bound_mark())
    return lines


def main_table(args, env):
    names = [c.name for c in args.config_list]
    jpath, ppath = args.json_path, args.png_path
    mpath = os.path.splitext(jpath)[0] + ".md"
    state = {"ceiling_out": None}

    def document(rows, status, complete, interrupted=None):
        meta = _meta(args, state["ceiling_out"], "quick" if args.quick else "full")
        meta["npl"] = (status.get("npl") or {}).get("load")
        doc = dict(meta, configs=[c.as_dict() for c in args.config_list], ceiling=args.ceiling,
                   frameworks=status, results=rows, notes=list(args.notes), complete=complete,
                   frameworks_done=[fw for fw in args.fw_list
                                    if (status.get(fw) or {}).get("status") in ("ok", "partial")])
        if interrupted:
            doc["interrupted"] = interrupted
        return meta, doc

    def checkpoint(rows, status, complete=False, interrupted=None, reraise=True):
        """The JSON and the Markdown table so far: a run killed later keeps them."""
        with _deferred_sigterm(reraise):
            return _checkpoint(rows, status, complete, interrupted)

    def _checkpoint(rows, status, complete, interrupted):
        meta, doc = document(rows, status, complete, interrupted)
        _write_json(jpath, doc)
        if rows:
            with open(mpath, "w", encoding="utf-8") as f:
                f.write("%s, %s cores, %d thread(s) per framework, load average %.2f at start%s\n\n%s\n"
                        % (meta["date"], meta["machine"].get("cores"), args.threads, meta["loadavg"][0],
                           "" if complete else " (partial: %s done)" % ", ".join(doc["frameworks_done"]),
                           report.markdown_summary(rows, names)))
        if not complete:
            _log("partial results so far: %s" % jpath)
        return meta

    interrupted = None
    try:
        args.ceiling, state["ceiling_out"] = run_ceiling(args, env)
    except (Interrupted, KeyboardInterrupt) as e:
        args.ceiling, interrupted = None, "%s during the GEMM ceiling" % (
            "SIGTERM" if isinstance(e, Interrupted) else "Ctrl-C")
    rows, status = [], {}
    if not interrupted:
        try:
            checkpoint([], {})
            rows, status, interrupted = run_frameworks(args, env, ceiling_too=True,
                                                       on_worker=checkpoint)
        except (Interrupted, KeyboardInterrupt) as e:     # during the first, empty checkpoint
            interrupted = "%s before the first worker" % (
                "SIGTERM" if isinstance(e, Interrupted) else "Ctrl-C")
    # from here on a SIGTERM only makes the exit status 1: the results are written and printed
    _SIGTERM["defer"] += 1
    meta = checkpoint(rows, status, complete=interrupted is None, interrupted=interrupted, reraise=False)
    torch_gemm = (status.get("torch") or {}).get("gemm_2048")
    print(report.format_header(meta))
    print("FLOPs: " + FLOP_FORMULA)
    ceiling_out = state["ceiling_out"]
    print(report.format_ceiling(args.ceiling, torch_gemm,
                                (ceiling_out or {}).get("skipped") if args.ceiling is None else None))
    print("configurations:")
    print(report.describe_configs(args.config_list))
    print()
    print(report.format_table(rows, names))
    summary = report.format_summary(rows, names)
    if summary:
        print("\nnpl against each peer: the peer's median ms and npl's median over it (> 1: npl slower)")
        print(summary)
    samp = report.format_sampling(rows)
    if samp:
        print("\nbatch-1 sampling latency:")
        print(samp)
    print()
    print(report.legend(args.device))
    for line in _memory_lines(status, rows, args.device):
        print(line)
    for n in _notes(status, args.notes):
        print(n)
    if interrupted:
        print("interrupted (%s): the table above holds the workers that finished" % interrupted)
    if ppath and rows:
        err = _plot(report.plot_table, rows, names, ppath)
        print(err or "chart: %s" % ppath)
    print("json: %s" % jpath)
    if rows:
        print("markdown summary: %s" % mpath)
    if not rows:
        print("no framework could run%s; see the notes above" % (
            " on the GPU" if args.device == "cuda" else ""))
    failed = any(s["status"] in ("error", "partial") for s in status.values()) or \
        (args.ceiling is None and args.device == "cpu") or interrupted is not None or _sigterm_pending()
    _SIGTERM["defer"] -= 1
    return 1 if failed or not rows else 0


def main_sweep(args, env):
    args.ceiling = None
    dim = args.sweep
    rows, status, interrupted = run_frameworks(args, env, ceiling_too=False)
    fits = report.sweep_fits(rows, dim)
    meta = _meta(args, {"facts": next((s.get("facts") for s in status.values() if s.get("facts")), {}),
                        "blas": (status.get("npl") or {}).get("blas")}, "sweep-" + dim)
    meta["npl"] = (status.get("npl") or {}).get("load")
    print(report.format_header(meta))
    c = args.base_config
    fixed = ", ".join("%s=%s" % (k, c.H_label if k == "H" else getattr(c, k))
                      for k in ("B", "T", "I", "H") if k != dim)
    print("sweep of %s for %s (%s)" % (dim, c.name, fixed))
    print(report.format_sweep(rows, fits, dim))
    for line in _memory_lines(status, rows, "cpu")[1:]:
        print(line)
    for n in _notes(status):
        print(n)
    if interrupted:
        print("interrupted (%s)" % interrupted)
    jpath, ppath = args.json_path, args.png_path
    if ppath and rows:
        err = _plot(report.plot_sweep, rows, fits, ppath, dim)
        print(err or "chart: %s" % ppath)
    _write_json(jpath, dict(meta, sweep=dim, values=[sweep_value(k, dim) for k in args.config_list],
                            base_config=c.as_dict(), frameworks=status, results=rows, fits=fits,
                            complete=interrupted is None))
    print("json: %s" % jpath)
    return 1 if any(s["status"] in ("error", "partial") for s in status.values()) or not rows \
        or interrupted else 0


# The per-step time of T=10000 over that of T=1000 (best runs) must lie in this window: a cost
# quadratic in T would give about 10, a linear one 1; the window is wide for a shared machine.
LONG_TASK = {"B": 8, "I": 16, "H": 32, "T_short": 1000, "T_long": 10000, "recursion_headroom": 80,
             "per_step_ratio_window": [0.25, 3.0]}


def main_long(args, env):
    # args.protocol (parse_args): --warmup calls (default 1) at *each* T, --repeats runs of one call
    task = dict(LONG_TASK, kind="long", framework="npl", threads=args.threads, cells=args.cell_list,
                repeats=args.protocol.repeats, warmup=args.protocol.warmup)
    _log("long check: T=%d and T=%d ..." % (task["T_short"], task["T_long"]))
    out = run_worker(task, env, args.worker_timeout)
    jpath = args.json_path
    meta = _meta(args, out if "error" not in out else None, "long")
    print(report.format_header(meta))
    if "error" in out:
        print("long check failed to run: %s" % out["error"])
        _write_json(jpath, dict(meta, error=out["error"]))
        return 1
    print("npl forward+backward, B=%d I=%d H=%d, recursion limit = current depth + %d"
          % (task["B"], task["I"], task["H"], task["recursion_headroom"]))
    for ck in out["checks"]:
        for T, r in ck["runs"].items():
            if r.get("error"):
                print("  %s T=%-6s FAILED: %s" % (ck["cell"], T, r["error"]))
            else:
                parts = r.get("finite_parts") or {}
                bad = [k for k, v in parts.items() if not v]
                print("  %s T=%-6s median %8.3f s  best %8.3f s  %.4f ms/step (best)  trace %.1f MB  "
                      "finite=%s%s" % (ck["cell"], T, r["median_s"], r["min_s"], r["per_step_ms"],
                                       r["trace_nbytes"] / report.MB, r["finite"],
                                       " (not finite: %s)" % ", ".join(bad) if bad else
                                       " (outputs, input and weight gradients)"))
        if "per_step_ratio" in ck:
            print("  %s: per-step time ratio %.2f (linear: within %g..%g; quadratic would be ~%d), "
                  "trace bytes ratio %.3f (T ratio %d) -> %s"
                  % (ck["cell"], ck["per_step_ratio"], task["per_step_ratio_window"][0],
                     task["per_step_ratio_window"][1], task["T_long"] // task["T_short"],
                     ck["nbytes_ratio"], task["T_long"] // task["T_short"],
                     "PASS" if ck["passed"] else "FAIL"))
    _write_json(jpath, dict(meta, task=task, checks=out["checks"], passed=out["passed"]))
    print("long check: %s" % ("PASS" if out["passed"] else "FAIL"))
    print("json: %s" % jpath)
    return 0 if out["passed"] else 1


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = worker_env(args)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)    # a stage limit: keep what is done
    if args.long:
        return main_long(args, env)
    if args.sweep:
        return main_sweep(args, env)
    return main_table(args, env)


if __name__ == "__main__":
    sys.exit(main())
