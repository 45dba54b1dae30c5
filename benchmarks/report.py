"""Turning the workers' raw timings into rows, tables, fits and charts (matplotlib imported lazily)."""
import math
import statistics
import sys

from benchmarks.spec import (FRAMEWORKS, FRAMEWORK_LABELS, MODE_LABELS, forward_flops,
                             mode_flops)

__all__ = ["summarise", "attach_ratios", "format_table", "format_ceiling", "format_header",
           "format_sampling", "format_summary", "markdown_summary", "legend", "describe_configs", "fit_line", "power_exponent", "sweep_fits", "format_sweep",
           "plot_table", "plot_sweep", "MB", "lower_bound_mark", "format_peak"]

MB = 1024.0 * 1024.0


def lower_bound_mark(stream=None):
    """The prefix of a peak-memory cell that is only a lower bound: "≥", or ">=" where the output's
    encoding has no "≥"."""
    enc = getattr(stream if stream is not None else sys.stdout, "encoding", None) or "ascii"
    try:
        "\u2265".encode(enc)
        return "\u2265"
    except (UnicodeEncodeError, LookupError):
        return ">="


def format_peak(row, width=0, mark=None):
    """A row's peak MB ("-" when not measured), prefixed with the lower-bound mark where the
    measurement is one."""
    peak = row.get("peak_rss_growth_bytes")
    if peak is None:
        return "-".rjust(width)
    text = "%.1f" % (peak / MB)
    if row.get("memory_lower_bound"):
        text = (lower_bound_mark() if mark is None else mark) + text
    return text.rjust(width)


def _fmt(v, spec, width):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-".rjust(width)
    return format(v, spec).rjust(width)


def summarise(rec, config, framework, ceiling):
    """One result row from a worker's raw record: ms (median/min/max), GFLOP/s, fractions, memory."""
    t = rec["times_s"]
    med = statistics.median(t)
    flops = mode_flops(config, rec["cell"], rec["mode"])
    row = {"config": config.name, "cell": rec["cell"], "mode": rec["mode"], "framework": framework,
           "B": config.B, "T": config.T, "I": config.I, "H": list(config.H),
           "times_s": t, "inner": rec["inner"], "warmup": rec["warmup"], "repeats": rec["repeats"],
           "median_ms": 1e3 * med, "min_ms": 1e3 * min(t), "max_ms": 1e3 * max(t),
           "flops": flops, "gflops": flops / med / 1e9, "info": rec.get("info", {})}
    if config.sample:
        row["per_step_ms"] = row["median_ms"] / config.T
    g2048 = (ceiling or {}).get("gemm_2048", {}).get("gflops")
    row["frac_gemm_2048"] = row["gflops"] / g2048 if g2048 else None
    rg = None
    for r in (ceiling or {}).get("recurrent_gemm", {}).values():
        if config.name in r.get("configs", []):
            rg = r["gflops"]
    row["frac_recurrent_gemm"] = row["gflops"] / rg if rg else None
    mem = rec.get("memory") or {}
    row["peak_rss_growth_bytes"] = mem.get("peak_rss_growth_bytes")
    row["memory_method"] = mem.get("method")
    # True where the peak is only a lower bound (ru_maxrss fallback, or a framework pool that
    # keeps freed memory without statistics); printed with a "≥"
    row["memory_lower_bound"] = bool(mem.get("lower_bound")) if mem else None
    for k in ("rss_growth_bytes", "pool_peak_bytes"):   # TensorFlow on the CPU: the two parts
        if k in mem:
            row[k] = mem[k]
    row["tracemalloc_peak_bytes"] = rec.get("tracemalloc_peak_bytes")
    row["trace_nbytes"] = rec.get("info", {}).get("trace_nbytes") if rec["mode"] == "fwdbwd" else None
    return row


def attach_ratios(rows):
    """row['npl_over'] = npl's median / this row's median (>1: npl is slower), per case."""
    npl = {(r["config"], r["cell"], r["mode"]): r["median_ms"] for r in rows if r["framework"] == "npl"}
    for r in rows:
        base = npl.get((r["config"], r["cell"], r["mode"]))
        r["npl_over"] = base / r["median_ms"] if base is not None else None
    return rows


def _order(rows, configs):
    cfg_order = {c: k for k, c in enumerate(configs)}
    fw_order = {f: k for k, f in enumerate(FRAMEWORKS)}
    mode_order = {"fwd": 0, "fwdbwd": 1, "step": 2}
    return sorted(rows, key=lambda r: (cfg_order.get(r["config"], 99), r["cell"],
                                       mode_order.get(r["mode"], 9), fw_order.get(r["framework"], 99)))


def format_header(meta):
    lines = ["npl benchmark  %s  (%s)" % (meta["date"], meta["mode"])]
    f = meta["machine"]
    lines.append("machine: %s, %s cores; %s; Python %s" % (f.get("cpu"), f.get("cores"),
                                                          f.get("platform"), f.get("python")))
    if meta.get("device") == "cuda":
        lines.append("device: cuda (npl on CuPy, PyTorch on CUDA/cuDNN, TensorFlow on its GPU; each "
                     "timed call ends with a device synchronisation; peak MB = device memory)")
        prec = meta.get("gpu_precision") or {}
        if prec:
            lines.append("precision: %s" % prec.get("summary", ""))
    lines.append("threads per framework: %d (OMP/OPENBLAS/MKL_NUM_THREADS, torch.set_num_threads, "
                 "TF intra/inter-op)%s" % (meta["threads"], "; %s usable cores" % meta["usable_cores"]
                                           if meta.get("usable_cores") else ""))
    for w in meta.get("warnings") or []:
        lines.append("warning: " + w)
    b = meta.get("blas") or {}
    lines.append("numpy %s BLAS: %s, kernel %s (%s)" % (b.get("numpy"), b.get("numpy_blas_build", "?"),
                                                        b.get("openblas_corename", "?"), b.get("source", "?")))
    env = {k: v for k, v in (f.get("env") or {}).items() if v is not None}
    lines.append("env in the workers: " + (", ".join("%s=%s" % kv for kv in sorted(env.items())) or "-"))
    if env.get("OPENBLAS_CORETYPE"):
        lines.append("note: OPENBLAS_CORETYPE=%s forces numpy's OpenBLAS kernel (%s in use); pass "
                     "--unset-openblas-coretype to benchmark its native kernel"
                     % (env["OPENBLAS_CORETYPE"], b.get("openblas_corename", "?")))
    elif meta.get("unset_openblas_coretype") and any((meta.get("parent_env") or {}).values()):
        lines.append("note: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (%s) were removed for the workers "
                     "(--unset-openblas-coretype)" % ", ".join(
                         "%s=%s" % kv for kv in sorted(meta["parent_env"].items()) if kv[1]))
    if meta.get("npl"):
        lines.append("npl %s from %s, source sha1 %s" % (meta["npl"].get("version"), meta["npl"].get("path"),
                                                         meta["npl"].get("source_sha1")))
        if meta["npl"].get("gpu"):
            lines.append("npl on %s, CuPy %s" % (meta["npl"]["gpu"], meta["npl"].get("cupy")))
        if str(meta["npl"].get("cupy", "")).endswith("+fake"):
            lines.append("WARNING: CuPy here is the test stand-in (tests/fake_cupy): npl's rows are CPU "
                         "timings of the host emulation, not GPU figures; never report them")
    p = meta["protocol"]
    if meta.get("mode") == "long":
        lines.append("timing: at each T, %d warm-up call%s, then the median/min/max of %d runs of one "
                     "call each" % (p["warmup"], "" if p["warmup"] == 1 else "s", p["repeats"]))
    else:
        lines.append("timing: %d warm-up call%s, then the median/min/max of %d runs (each run >= %.0f ms, "
                     "n calls averaged)" % (p["warmup"], "" if p["warmup"] == 1 else "s", p["repeats"],
                                            1e3 * p["min_run_s"]))
    if meta.get("rounds", 1) > 1:
        lines.append("rounds: every framework's worker ran %d times, round-robin; each row is its "
                     "case's best round (lowest median), every round's median is in the JSON"
                     % meta["rounds"])
    if meta.get("loadavg"):
        lines.append("load average at start: %s" % " ".join("%.2f" % v for v in meta["loadavg"]))
        cores = f.get("cores") or 1
        if meta["loadavg"][0] > 0.5 and meta["threads"] > 1:
            lines.append("warning: other processes are running (load %.2f on %d cores): a multi-threaded "
                         "BLAS call waits whenever one of its %d threads is descheduled, which can make "
                         "small GEMMs 10x slower; compare the min column, or rerun with --threads 1"
                         % (meta["loadavg"][0], cores, meta["threads"]))
    return "\n".join(lines)


def format_ceiling(ceiling, torch_gemm=None, why=None):
    if not ceiling:
        return "GEMM ceiling: not measured" + (" (%s)" % why if why else "")
    g = ceiling["gemm_2048"]
    lines = ["GEMM ceiling (float32, %s, best run; median in brackets): "
             "2048x2048 @ 2048x2048: %.1f GFLOP/s (%.1f)"
             % (ceiling.get("ceiling_backend", "numpy.matmul"), g["gflops"], g["gflops_median"])]
    if torch_gemm:
        lines[0] += "; torch.mm 2048: %.1f (%.1f)" % (torch_gemm["gflops"], torch_gemm["gflops_median"])
    for key, r in ceiling.get("recurrent_gemm", {}).items():
        lines.append("  recurrent GEMM [B,H]@[H,4H] %-16s %8.1f GFLOP/s (%.1f)  %s"
                     % (key, r["gflops"], r["gflops_median"], ", ".join(r["configs"])))
    return "\n".join(lines)


COLUMNS = [("config", 7), ("cell", 4), ("mode", 6), ("framework", 10), ("median ms", 10),
           ("min ms", 9), ("max ms", 9), ("GFLOP/s", 8), ("%2048", 6), ("%recGEMM", 8),
           ("peak MB", 8), ("npl/fw", 7)]


def format_table(rows, configs):
    """The main table; rows ordered by configuration, cell, mode and framework."""
    head = " ".join(name.rjust(w) if k > 3 else name.ljust(w) for k, (name, w) in enumerate(COLUMNS))
    out = [head, "-" * len(head)]
    prev = None
    for r in _order(rows, configs):
        key = (r["config"], r["cell"], r["mode"])
        if prev is not None and key[:2] != prev[:2]:
            out.append("")
        prev = key
        out.append(" ".join([
            r["config"].ljust(7), r["cell"].ljust(4), r["mode"].ljust(6),
            FRAMEWORK_LABELS.get(r["framework"], r["framework"]).ljust(10),
            _fmt(r["median_ms"], ".3f", 10), _fmt(r["min_ms"], ".3f", 9), _fmt(r["max_ms"], ".3f", 9),
            _fmt(r["gflops"], ".2f", 8),
            _fmt(None if r["frac_gemm_2048"] is None else 100 * r["frac_gemm_2048"], ".1f", 6),
            _fmt(None if r["frac_recurrent_gemm"] is None else 100 * r["frac_recurrent_gemm"], ".1f", 8),
            format_peak(r, 8),
            _fmt(None if r["framework"] == "npl" else r.get("npl_over"), ".2f", 7)]))
    return "\n".join(out)


def _pivot(rows, configs):
    """[(config, cell, mode, {framework: row})] in table order, and the frameworks present."""
    fws = [f for f in FRAMEWORKS if any(r["framework"] == f for r in rows)]
    cases, seen = [], {}
    for r in _order(rows, configs):
        key = (r["config"], r["cell"], r["mode"])
        if key not in seen:
            seen[key] = {}
            cases.append(key + (seen[key],))
        seen[key][r["framework"]] = r
    return cases, fws


def format_summary(rows, configs):
    """One line per case: npl's median ms, then each peer's median ms and npl/peer."""
    cases, fws = _pivot(rows, configs)
    peers = [f for f in fws if f != "npl"]
    if "npl" not in fws or not peers:
        return ""
    head = "%-7s %-4s %-6s %9s" % ("config", "cell", "mode", "npl ms") + "".join(
        " %18s" % FRAMEWORK_LABELS[f] for f in peers)
    out = [head, "-" * len(head)]
    for c, cell, mode, by in cases:
        if "npl" not in by:
            continue
        line = "%-7s %-4s %-6s %9.3f" % (c, cell, mode, by["npl"]["median_ms"])
        for f in peers:
            r = by.get(f)
            line += " %18s" % ("-" if r is None else "%.3f (%.2f)" % (r["median_ms"], r["npl_over"]))
        out.append(line)
    return "\n".join(out)


def markdown_summary(rows, configs):
    """The same comparison as a Markdown table (median ms; npl/peer in brackets; npl's GFLOP/s)."""
    cases, fws = _pivot(rows, configs)
    peers = [f for f in fws if f != "npl"]
    head = ["config", "cell", "mode"] + (["npl ms", "npl GFLOP/s", "npl peak MB"] if "npl" in fws else []) + \
        ["%s ms%s" % (FRAMEWORK_LABELS[f], " (npl/fw)" if "npl" in fws else "") for f in peers]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c, cell, mode, by in cases:
        cells = [c, cell, mode]
        if "npl" in fws:
            n = by.get("npl")
            cells += ["-"] * 3 if n is None else ["%.3f" % n["median_ms"], "%.1f" % n["gflops"],
                                                  format_peak(n, mark="\u2265")]
        for f in peers:
            r = by.get(f)
            if r is None:
                cells.append("-")
            elif r.get("npl_over") is None:
                cells.append("%.3f" % r["median_ms"])
            else:
                cells.append("%.3f (%.2f)" % (r["median_ms"], r["npl_over"]))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def format_sampling(rows):
    lines = []
    for r in rows:
        if r["mode"] == "step":
            lines.append("  %s %s %-10s %8.1f us per step (batch 1)"
                         % (r["config"], r["cell"], FRAMEWORK_LABELS.get(r["framework"], r["framework"]),
                            1e3 * r["per_step_ms"]))
    return "\n".join(lines)


def legend(device="cpu"):
    mem = ("peak MB = the device memory high-water mark of one call above what was allocated "
           "before it" if device == "cuda" else
           "peak MB = peak RSS growth during one call (TensorFlow: plus its CPU pool's peak growth); "
           "%s: a lower bound" % lower_bound_mark())
    return ("columns: median/min/max ms per batch (mode step: per %s); GFLOP/s = GEMM FLOPs / median "
            "(forward F = 2*B*T*(I+H)*G*H per layer, G=4 LSTM, G=3 GRU; forward+backward 3F); "
            "%%2048 and %%recGEMM = GFLOP/s as a percentage of %s 2048x2048 GEMM and of the "
            "configuration's [B,H]@[H,4H] GEMM; %s; "
            "npl/fw = npl's median / this framework's median (> 1: npl is slower)."
            % (MODE_LABELS["step"], "cuBLAS's (cupy.matmul)" if device == "cuda" else "numpy's", mem))


# ----------------------------------------------------------------------------- sweeps
def fit_line(xs, ys):
    """Least-squares y = a + b*x: returns dict(intercept, slope, r2)."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    return {"intercept": a, "slope": b, "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def power_exponent(xs, ys):
    """k of y ~ x^k: the least-squares slope of log y against log x (None unless every y > 0)."""
    if len(xs) < 2 or any(y is None or y <= 0 for y in ys):
        return None
    f = fit_line([math.log(x) for x in xs], [math.log(y) for y in ys])
    return None if f is None else f["slope"]


# the unit one step of each swept dimension adds (for the fits' slopes)
SWEEP_UNITS = {"T": "step", "B": "sample", "H": "unit"}


def _x(row, dim):
    return row["H"][0] if dim == "H" else row[dim]


def sweep_fits(rows, dim="T"):
    """Per (framework, cell, mode), against the swept dimension ``dim`` (T, B or H): line fits of
    ms, of peak bytes and of trace bytes; ms against the GEMM FLOPs; and the growth exponent
    (log-log slope) of time and of peak memory over the larger half of the values, where fixed
    costs no longer dominate."""
    fits = {}
    keys = sorted({(r["framework"], r["cell"], r["mode"]) for r in rows})
    for key in keys:
        rs = sorted((r for r in rows if (r["framework"], r["cell"], r["mode"]) == key), key=lambda r: _x(r, dim))
        xs = [_x(r, dim) for r in rs]
        ms = [r["median_ms"] for r in rs]
        top = max(2, (len(xs) + 1) // 2)
        f = {"dim": dim, dim: xs, "ms": fit_line(xs, ms),
             "ms_vs_flops": fit_line([r["flops"] for r in rs], ms),
             "growth_from": xs[-top] if len(xs) >= 2 else None,
             "ms_exponent": power_exponent(xs[-top:], ms[-top:])}
        mem = [r.get("peak_rss_growth_bytes") for r in rs]
        if all(m is not None for m in mem):
            f["peak_bytes"] = fit_line(xs, mem)
            f["peak_exponent"] = power_exponent(xs[-top:], mem[-top:])
        tb = [r.get("trace_nbytes") for r in rs]
        if all(v is not None for v in tb):
            f["trace_nbytes"] = fit_line(xs, tb)
        fits["%s/%s/%s" % key] = f
    return fits


def format_sweep(rows, fits, dim="T"):
    unit = SWEEP_UNITS[dim]
    per = "ms/%s" % unit if dim != "H" else "GFLOP/s"
    head = "%-10s %-4s %-6s %6s %10s %10s %9s %9s %9s" % ("framework", "cell", "mode", dim, "median ms",
                                                          per, "peak MB", "trace MB", "npl/fw")
    out = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r["cell"], r["mode"], _x(r, dim), FRAMEWORKS.index(r["framework"]))):
        tb = r.get("trace_nbytes")
        out.append("%-10s %-4s %-6s %6d %10.3f %10.4f %s %s %s" % (
            FRAMEWORK_LABELS[r["framework"]], r["cell"], r["mode"], _x(r, dim), r["median_ms"],
            r["gflops"] if dim == "H" else r["median_ms"] / _x(r, dim),
            format_peak(r, 9),
            _fmt(None if tb is None else tb / MB, ".2f", 9),
            _fmt(None if r["framework"] == "npl" else r.get("npl_over"), ".2f", 9)))
    out.append("")
    out.append("line fits against %s (least squares)%s; growth exponents k of y ~ %s^k (log-log slope) "
               "over the larger half of the values:" % (
                   dim, ", and of time against the GEMM FLOPs F (which grow as (I+H)*H)" if dim == "H" else "", dim))
    for key, f in fits.items():
        if not f.get("ms"):
            continue
        if dim == "H":
            g = f.get("ms_vs_flops")
            s = "  %-22s time = %.3f ms/GFLOP * F + %.3f ms (R^2 %.4f)" % (
                key, g["slope"] * 1e9, g["intercept"], g["r2"]) if g else "  %-22s" % key
        else:
            s = "  %-22s time = %.4f ms/%s * %s + %.3f ms (R^2 %.4f)" % (
                key, f["ms"]["slope"], unit, dim, f["ms"]["intercept"], f["ms"]["r2"])
        if f.get("ms_exponent") is not None:
            s += ", k = %.2f from %s = %d" % (f["ms_exponent"], dim, f["growth_from"])
        if f.get("peak_bytes"):
            s += "; peak = %.1f KB/%s * %s + %.2f MB (R^2 %.3f)" % (
                f["peak_bytes"]["slope"] / 1024, unit, dim, f["peak_bytes"]["intercept"] / MB, f["peak_bytes"]["r2"])
            if f.get("peak_exponent") is not None:
                s += ", k = %.2f" % f["peak_exponent"]
        if f.get("trace_nbytes"):
            s += "; trace = %.1f KB/%s * %s + %.1f KB (R^2 %.4f)" % (
                f["trace_nbytes"]["slope"] / 1024, unit, dim, f["trace_nbytes"]["intercept"] / 1024,
                f["trace_nbytes"]["r2"])
        out.append(s)
    return "\n".join(out)


# ----------------------------------------------------------------------------- charts
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_table(rows, configs, path):
    """Grouped bars of ms per batch (log scale, min-max whiskers): one panel per mode."""
    plt = _pyplot()
    modes = [m for m in ("fwd", "fwdbwd", "step") if any(r["mode"] == m for r in rows)]
    fws = [f for f in FRAMEWORKS if any(r["framework"] == f for r in rows)]
    fig, axes = plt.subplots(len(modes), 1, figsize=(12, 3.6 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        groups = [(c, cell) for c in configs for cell in ("lstm", "gru")
                  if any(r["config"] == c and r["cell"] == cell and r["mode"] == mode for r in rows)]
        width = 0.8 / max(1, len(fws))
        for k, fw in enumerate(fws):
            xs, ys, lo, hi = [], [], [], []
            for gi, (c, cell) in enumerate(groups):
                r = next((r for r in rows if (r["config"], r["cell"], r["mode"], r["framework"]) ==
                          (c, cell, mode, fw)), None)
                if r is not None:
                    xs.append(gi + (k - (len(fws) - 1) / 2) * width)
                    ys.append(r["median_ms"])
                    lo.append(r["median_ms"] - r["min_ms"])
                    hi.append(r["max_ms"] - r["median_ms"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=FRAMEWORK_LABELS[fw])
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(["%s %s" % g for g in groups])
        ax.set_yscale("log")
        ax.set_ylabel("ms per batch")
        ax.set_title(MODE_LABELS[mode] + " (median, min-max whiskers; lower is better)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


SWEEP_AXIS_LABELS = {"T": "T (steps)", "B": "B (batch)", "H": "H (hidden units)"}


def plot_sweep(rows, fits, path, dim="T"):
    """Time and memory against the swept dimension, with the fitted lines (time against T or B;
    against the FLOPs for H, drawn at each H)."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, f in fits.items():
        fw, cell, mode = key.split("/")
        rs = sorted((r for r in rows if (r["framework"], r["cell"], r["mode"]) == (fw, cell, mode)),
                    key=lambda r: _x(r, dim))
        xs = [_x(r, dim) for r in rs]
        label = "%s %s %s" % (FRAMEWORK_LABELS[fw], cell, mode)
        line = a1.plot(xs, [r["median_ms"] for r in rs], "o", label=label)[0]
        g = f.get("ms_vs_flops") if dim == "H" else f.get("ms")
        if g:   # the fitted line, where it is positive (the axes are logarithmic)
            fit = [(x, g["intercept"] + g["slope"] * (r["flops"] if dim == "H" else x)) for x, r in zip(xs, rs)]
            fit = [(x, y) for x, y in fit if y > 0]
            a1.plot([x for x, _ in fit], [y for _, y in fit], "-", color=line.get_color())
        mem = [r.get("peak_rss_growth_bytes") for r in rs]
        if all(m is not None for m in mem):
            a2.plot(xs, [m / MB for m in mem], "o-", color=line.get_color(), label=label + " peak RSS")
        tb = [r.get("trace_nbytes") for r in rs]
        if all(v is not None for v in tb):
            a2.plot(xs, [v / MB for v in tb], "s--", color=line.get_color(), label=label + " trace.nbytes")
    for ax, yl in ((a1, "ms per batch"), (a2, "MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(SWEEP_AXIS_LABELS[dim])
        ax.set_ylabel(yl)
        ax.legend(fontsize=7)
    a1.set_title("time against %s (lines: least-squares fit%s)" % (dim, " against the FLOPs" if dim == "H" else ""))
    a2.set_title("peak RSS growth and trace size against %s" % dim)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def describe_configs(configs):
    lines = []
    for c in configs:
        lines.append("  %-4s B=%-4d T=%-5d I=%-4d H=%-6s %s; forward GEMM FLOPs LSTM %.3g, GRU %.3g"
                     % (c.name, c.B, c.T, c.I, c.H_label, c.description, forward_flops(c, "lstm"),
                        forward_flops(c, "gru")))
    return "\n".join(lines)
