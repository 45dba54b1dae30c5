"""The benchmark command: ``python -m benchmarks.run`` (or ``python benchmarks/run.py``).

Default: the table of configurations C1..C5 x {LSTM, GRU} x {forward, forward+backward} x
{npl, TF1 graph, Keras, Keras GRU reset_after=True, PyTorch}: ms per batch (median, min, max),
GEMM GFLOP/s, its fraction of the machine's GEMM ceiling, peak RSS growth and npl's time over
each peer's.  Each framework runs in its own subprocess (:mod:`benchmarks.worker`) with the same
thread count.  Writes a JSON file with every raw timing and a PNG chart.

``--quick``: C1 and C4, 3 short runs each (under a minute).  ``--sweep T`` (or ``--sweep-T``):
T from 10 to 2000 for one configuration (npl and PyTorch), time, peak memory and trace size
against T with line fits; ``--sweep B`` and ``--sweep H`` do the same for the batch and the
hidden units.  ``--long``: npl at T=10000 on a small model (no recursion, linear cost in T).
Run ``python -m benchmarks.run --help`` for every option.
"""
import argparse
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

if __package__ in (None, ""):   # run as a script: make the repository root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import report  # noqa: E402
from benchmarks.measure import thread_env, OPENBLAS_VARS  # noqa: E402
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
                   help="add a configuration (named X1, X2, ...); H may be 30+1 for a stack")
    p.add_argument("--cells", default="lstm,gru", help="lstm,gru (default both)")
    p.add_argument("--modes", default="fwd,fwdbwd", help="fwd,fwdbwd (default both)")
    p.add_argument("--frameworks", help="comma-separated subset of %s (default: all; --quick: %s; "
                   "--sweep: %s)" % (",".join(DEFAULT_FRAMEWORKS), QUICK_FRAMEWORKS, ",".join(SWEEP_FRAMEWORKS)))
    p.add_argument("--threads", default=str(os.cpu_count() or 1),
                   help="threads for every framework (default: the core count, %s)" % os.cpu_count())
    p.add_argument("--repeats", help="timed runs per case (default 7; --quick 3; --sweep 3)")
    p.add_argument("--warmup", help="untimed calls before timing (default 2; --quick 1)")
    p.add_argument("--min-run-ms", help="each timed run lasts at least this long, averaging n calls "
                   "(default 50; --quick 5)")
    p.add_argument("--config", default="C1", help="--sweep: the configuration to sweep (default C1)")
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


def parse_args(argv):
    """Parse and validate; every nonsense value is refused with a message naming the option."""
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        a.device = parse_device(a.device)
        a.sweep = "T" if a.sweep_T else (None if a.sweep is None else parse_sweep_dim(a.sweep))
        flag = "--sweep-T" if a.sweep_T else "--sweep %s" % a.sweep
        if a.device == "cuda" and (a.sweep or a.long):
            raise ValueError("--device cuda runs the table only (not --sweep, --sweep-T or --long)")
        if (a.values or a.t_values) and not a.sweep:
            raise ValueError("%s goes with --sweep (or --sweep-T)" % ("--values" if a.values else "--T-values"))
        if a.values and a.t_values:
            raise ValueError("give the values once: --values or --T-values, not both")
        if a.t_values and a.sweep != "T":
            raise ValueError("--T-values goes with --sweep-T; with %s use --values" % flag)
        custom = {}
        for k, text in enumerate(a.custom, 1):
            c = parse_custom(text, "X%d" % k)
            custom[c.name] = c
        if a.sweep:
            base = parse_configs(a.config, custom)
            if len(base) != 1:
                raise ValueError("--config must name one configuration for %s, got %r" % (flag, a.config))
            if a.values or a.t_values:
                values = parse_int_list(a.values or a.t_values, "--values" if a.values else "--T-values")
            else:
                values = list(DEFAULT_SWEEP[a.sweep])
            a.config_list = sweep_configs(base[0], values, a.sweep)
            a.base_config = base[0]
        elif a.configs:
            a.config_list = parse_configs(a.configs, custom)
        else:
            names = QUICK_CONFIGS if a.quick else ",".join(DEFAULT_CONFIGS[a.device])
            a.config_list = parse_configs(names) + list(custom.values())
        a.cell_list = parse_cells(a.cells)
        a.mode_list = parse_modes(a.modes)
        if a.sweep:
            a.fw_list = parse_frameworks(a.frameworks or ",".join(SWEEP_FRAMEWORKS), SWEEP_FRAMEWORKS,
                                         "--frameworks (with %s)" % flag)
        elif a.long:
            a.fw_list = ["npl"]
        else:
            default = QUICK_FRAMEWORKS if a.quick else ",".join(DEFAULT_FRAMEWORKS)
            a.fw_list = parse_frameworks(a.frameworks or default)
        a.threads = parse_positive_int(a.threads, "--threads")
        key = "sweep" if a.sweep else ("quick" if a.quick else "full")
        base = PROTOCOLS[key]
        a.protocol = Protocol(
            warmup=base.warmup if a.warmup is None else _nonneg_int(a.warmup, "--warmup"),
            repeats=base.repeats if a.repeats is None else parse_positive_int(a.repeats, "--repeats"),
            min_run_s=base.min_run_s if a.min_run_ms is None else _nonneg_int(a.min_run_ms, "--min-run-ms") / 1e3)
        a.worker_timeout = parse_positive_int(a.worker_timeout, "--worker-timeout")
        a.rounds = parse_positive_int(a.rounds, "--rounds")
        if a.rounds > 1 and (a.sweep or a.long):
            raise ValueError("--rounds applies to the table only (not --sweep, --sweep-T or --long)")
    except ValueError as e:
        parser.error(str(e))
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
    return env


def _cases(args, fw):
    cases = []
    for c in args.config_list:
        for cell in args.cell_list:
            if fw == "keras-ra" and cell != "gru":
                continue   # reset_after only exists for the GRU
            if c.sample and "fwd" not in args.mode_list:
                continue   # sampling is forward only
            cases.append({"config": c.as_dict(), "cell": cell,
                          "modes": ["step"] if c.sample else list(args.mode_list)})
    return cases


def run_frameworks(args, env, ceiling_too):
    """Run every framework's worker in turn, ``args.rounds`` times round-robin; returns (rows,
    per-framework status dict).  With several rounds each case keeps the row of its best round
    (lowest median), with every round's median in ``round_medians_ms``."""
    best, status = {}, {}
    by_name = {c.name: c for c in args.config_list}
    rounds = getattr(args, "rounds", 1)
    for rnd in range(rounds):
        for fw in args.fw_list:
            if status.get(fw, {}).get("status") in ("skipped", "error"):
                continue                                  # not installed, or broken: once is enough
            cases = _cases(args, fw)
            if not cases:
                status[fw] = {"status": "skipped", "note": "no case applies (keras-ra needs the GRU)"}
                continue
            _log("%s: %d cases ...%s" % (FRAMEWORK_LABELS[fw], len(cases),
                                         " (round %d of %d)" % (rnd + 1, rounds) if rounds > 1 else ""))
            task = {"kind": "table", "framework": fw, "threads": args.threads, "cases": cases,
                    "protocol": args.protocol._asdict(), "memory": not args.no_memory,
                    "ceiling": ceiling_too, "device": getattr(args, "device", "cpu"),
                    "options": {"device": getattr(args, "device", "cpu")}}
            out = run_worker(task, env, args.worker_timeout)
            if "error" in out:
                status[fw] = {"status": "error", "note": out["error"]}
                _log("%s failed: %s" % (fw, out["error"]))
                continue
            if out.get("skipped"):
                status[fw] = {"status": "skipped", "note": out["skipped"]}
                _log("%s skipped: %s" % (fw, out["skipped"]))
                continue
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
    rows = list(best.values())
    report.attach_ratios(rows)
    return rows, status


def run_ceiling(args, env):
    _log("GEMM ceiling (%s) ..." % ("cupy" if getattr(args, "device", "cpu") == "cuda" else "numpy"))
    task = {"kind": "ceiling", "threads": args.threads, "configs": [c.as_dict() for c in args.config_list],
            "protocol": (PROTOCOLS["quick"] if args.quick else PROTOCOLS["full"])._asdict(),
            "device": getattr(args, "device", "cpu")}
    out = run_worker(task, env, args.worker_timeout)
    if "error" in out:
        _log("ceiling failed: %s" % out["error"])
        return None, None
    if out.get("skipped"):
        _log("ceiling not measured: %s" % out["skipped"])
        return None, out
    ceiling = {"gemm_2048": out["gemm_2048"], "recurrent_gemm": out["recurrent_gemm"]}
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
            "rounds": getattr(args, "rounds", 1)}


def _paths(args, suffix, png=True):
    os.makedirs(args.out_dir, exist_ok=True)
    j = args.json or os.path.join(args.out_dir, "bench%s.json" % suffix)
    p = None if (args.no_plot or not png) else (args.png or os.path.join(args.out_dir, "bench%s.png" % suffix))
    for path in (j, p):
        if path and os.path.dirname(os.path.abspath(path)):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return j, p


def _write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def _notes(status):
    lines = []
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


def main_table(args, env):
    args.ceiling, ceiling_out = run_ceiling(args, env)
    rows, status = run_frameworks(args, env, ceiling_too=True)
    meta = _meta(args, ceiling_out, "quick" if args.quick else "full")
    meta["npl"] = (status.get("npl") or {}).get("load")
    names = [c.name for c in args.config_list]
    torch_gemm = (status.get("torch") or {}).get("gemm_2048")
    print(report.format_header(meta))
    print("FLOPs: " + FLOP_FORMULA)
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
    mm = sorted({s.get("memory_method") for s in status.values() if s.get("memory_method")})
    if mm and args.device == "cuda":
        print("memory (peak MB column): device memory high-water mark of one call: %s" % "; ".join(mm))
    elif mm:
        print("memory: peak RSS growth of one call, measured after the timings: %s; npl also "
              "records tracemalloc's peak of NumPy allocations in the JSON" % "; ".join(mm))
    notes = _notes(status)
    for n in notes:
        print(n)
    jpath, ppath = _paths(args, "")
    if ppath and rows:
        err = _plot(report.plot_table, rows, names, ppath)
        print(err or "chart: %s" % ppath)
    doc = dict(meta, configs=[c.as_dict() for c in args.config_list], ceiling=args.ceiling,
               frameworks=status, results=rows)
    _write_json(jpath, doc)
    print("json: %s" % jpath)
    if rows:
        mpath = os.path.splitext(jpath)[0] + ".md"
        with open(mpath, "w") as f:
            f.write("%s, %s cores, %d thread(s) per framework, load average %.2f at start\n\n%s\n"
                    % (meta["date"], meta["machine"].get("cores"), args.threads, meta["loadavg"][0],
                       report.markdown_summary(rows, names)))
        print("markdown summary: %s" % mpath)
    if not rows:
        print("no framework could run%s; see the notes above" % (
            " on the GPU" if args.device == "cuda" else ""))
    failed = any(s["status"] in ("error", "partial") for s in status.values()) or \
        (args.ceiling is None and args.device == "cpu")
    return 1 if failed or not rows else 0


def main_sweep(args, env):
    args.ceiling = None
    dim = args.sweep
    rows, status = run_frameworks(args, env, ceiling_too=False)
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
    for n in _notes(status):
        print(n)
    jpath, ppath = _paths(args, "-sweep" if dim == "T" else "-sweep-" + dim)
    if ppath and rows:
        err = _plot(report.plot_sweep, rows, fits, ppath, dim)
        print(err or "chart: %s" % ppath)
    _write_json(jpath, dict(meta, sweep=dim, values=[sweep_value(k, dim) for k in args.config_list],
                            base_config=c.as_dict(), frameworks=status, results=rows, fits=fits))
    print("json: %s" % jpath)
    return 1 if any(s["status"] in ("error", "partial") for s in status.values()) or not rows else 0


# The per-step time of T=10000 over that of T=1000 (best runs) must lie in this window: a cost
# quadratic in T would give about 10, a linear one 1; the window is wide for a shared machine.
LONG_TASK = {"B": 8, "I": 16, "H": 32, "T_short": 1000, "T_long": 10000, "recursion_headroom": 80,
             "per_step_ratio_window": [0.25, 3.0]}


def main_long(args, env):
    args.protocol = Protocol(warmup=args.protocol.warmup if args.warmup else 1,
                             repeats=args.protocol.repeats if args.repeats else 3, min_run_s=0.0)
    task = dict(LONG_TASK, kind="long", framework="npl", threads=args.threads, cells=args.cell_list,
                repeats=args.protocol.repeats, warmup=args.protocol.warmup)
    _log("long check: T=%d and T=%d ..." % (task["T_short"], task["T_long"]))
    out = run_worker(task, env, args.worker_timeout)
    jpath, _ = _paths(args, "-long", png=False)
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
                print("  %s T=%-6s median %8.3f s  best %8.3f s  %.4f ms/step (best)  trace %.1f MB  "
                      "finite=%s" % (ck["cell"], T, r["median_s"], r["min_s"], r["per_step_ms"],
                                     r["trace_nbytes"] / report.MB, r["finite"]))
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
    if args.long:
        return main_long(args, env)
    if args.sweep:
        return main_sweep(args, env)
    return main_table(args, env)


if __name__ == "__main__":
    sys.exit(main())
