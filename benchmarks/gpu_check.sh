#!/usr/bin/env bash
# The GPU checks of npl in one command, for a machine with a CUDA GPU and CuPy (and, for the peer
# column, PyTorch with CUDA) already installed: nothing is downloaded, npl runs from this checkout.
#
#   bash benchmarks/gpu_check.sh            # writes its logs and the benchmark JSON under $OUT
#
# Stages, each with its own time limit so that a slow one still leaves the others' results:
#   1. versions: CuPy, the device, PyTorch, whether npl sees the GPU (60 s at most);
#   2. the CUDA kernels against the NumPy gate math, whole sequence passes and npl.train.fit on
#      CuPy against NumPy (tests/test_kernels.py), and every configuration of the gradient suite
#      on the GPU against the NumPy run (tests/test_device_parity.py: every cell, dynamic_rnn in
#      both layouts, static_rnn, the single step, bidirectional and stacked, all length cases,
#      float32 and float64); the device-mixing tests (tests/test_backend_mixing.py) and the
#      host-emulation tests run too;
#   3. the stored TensorFlow cases replayed on the GPU (NPL_BACKEND=cupy tests/test_tf_stored.py);
#   4. the GPU benchmark, npl on CuPy against PyTorch's cuDNN (TF32 off: full float32), 5 timed
#      runs per case, as two runs of benchmarks.run so that the small configurations are done
#      first: C1, C3, C5 -> $OUT/bench.json (and bench.md), then C2, C6 -> $OUT/bench-large.json
#      (and bench-large.md). Each run rewrites its JSON after every framework's worker, so a run
#      cut off by the time limit keeps the workers that finished ("complete": false in it).
# OUT defaults to runs/gpu; STAGE_S (default 150) bounds stages 2 and 3 each, STAGE4_S (default
# 180) stage 4 as a whole (its second run gets what the first left): at most 60 + 150 + 150 +
# 180 s = 9 minutes, plus 10 s for each benchmark run that outlives its SIGTERM (then killed). STAGES
# (default "1 2 3 4") picks the stages to run (STAGES=4: the benchmark alone). BENCH_SMALL (default C1,C3,C5) and BENCH_LARGE (default C2,C6; empty: no second run) are
# the two runs' configurations; BENCH_ARGS (default empty) is appended to both command lines (its
# options win). CI runs this script on the CuPy stand-in (tests/test_fake_cupy.py), so it is known
# to run before a GPU's minutes are spent on it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
STAGE_S=${STAGE_S:-150}
STAGE4_S=${STAGE4_S:-180}
STAGES=${STAGES:-1 2 3 4}
BENCH_SMALL=${BENCH_SMALL-C1,C3,C5}
BENCH_LARGE=${BENCH_LARGE-C2,C6}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
status=0
stage() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if stage 1; then
echo "== 1. versions" | tee "$OUT/gpu_env.txt"
timeout 60 "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/gpu_env.txt" || status=1
import platform, numpy
print("python", platform.python_version(), "numpy", numpy.__version__)
try:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(0)
    print("cupy", cupy.__version__, "device", props["name"].decode(errors="replace"),
          "CUDA runtime", cupy.cuda.runtime.runtimeGetVersion())
except Exception as e:
    print("cupy unavailable:", e)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except Exception as e:
    print("torch unavailable:", e)
import npl
print("npl", npl.__version__, "cupy available to npl:", npl.backend.cupy_available())
EOF
fi

if stage 2; then
echo "== 2. CUDA kernels and CuPy sequence passes" | tee "$OUT/gpu_kernels.log"
timeout "$STAGE_S" "$PY" -m pytest -q -ra -p no:cacheprovider tests/test_kernels.py \
    tests/test_device_parity.py tests/test_backend_mixing.py tests/test_kernels_host.py 2>&1 | tee -a "$OUT/gpu_kernels.log" \
    || status=1
fi

if stage 3; then
echo "== 3. stored TensorFlow cases on CuPy (NPL_BACKEND=cupy)" | tee "$OUT/gpu_parity.log"
NPL_BACKEND=cupy timeout "$STAGE_S" "$PY" -m pytest -q -ra -p no:cacheprovider \
    tests/test_tf_stored.py 2>&1 | tee -a "$OUT/gpu_parity.log" || status=1
fi

# one benchmark run of stage 4: bench JSON_NAME CONFIGS, bounded by what is left of STAGE4_S
bench() {
    local left=$((stage4_end - SECONDS))
    if [ "$left" -lt 10 ]; then
        echo "stage 4: no time left for $2 (STAGE4_S=$STAGE4_S)" | tee -a "$OUT/gpu_bench.log"
        status=1
        return
    fi
    echo "-- $2 -> $OUT/$1 (time limit ${left} s)" | tee -a "$OUT/gpu_bench.log"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
    timeout -k 10 "$left" "$PY" -m benchmarks.run --device cuda --frameworks npl,torch --no-plot \
        --repeats 5 --configs "$2" --out-dir "$OUT" --json "$OUT/$1" ${BENCH_ARGS:-} 2>&1 \
        | tee -a "$OUT/gpu_bench.log" || status=1
}

if stage 4; then
echo "== 4. GPU benchmark (npl, PyTorch; the small configurations first)" | tee "$OUT/gpu_bench.log"
stage4_end=$((SECONDS + STAGE4_S))
bench bench.json "$BENCH_SMALL"
if [ -n "$BENCH_LARGE" ]; then
    bench bench-large.json "$BENCH_LARGE"
fi
fi

exit $status
