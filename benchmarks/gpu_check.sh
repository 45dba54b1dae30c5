#!/usr/bin/env bash
# The GPU checks of npl in one command, for a machine with a CUDA GPU and CuPy (and, for the peer
# column, PyTorch with CUDA) already installed: nothing is downloaded, npl runs from this checkout.
#
#   bash benchmarks/gpu_check.sh            # writes its logs and the benchmark JSON under $OUT
#
# Stages, each with its own time limit so that a slow one still leaves the others' results:
#   1. versions: CuPy, the device, PyTorch, whether npl sees the GPU;
#   2. the CUDA kernels against the NumPy gate math, whole sequence passes and npl.train.fit on
#      CuPy against NumPy (tests/test_kernels.py), and every configuration of the gradient suite
#      on the GPU against the NumPy run (tests/test_device_parity.py: every cell, dynamic_rnn in
#      both layouts, static_rnn, the single step, bidirectional and stacked, all length cases,
#      float32 and float64); the device-mixing tests (tests/test_backend_mixing.py) and the
#      host-emulation tests run too;
#   3. the stored TensorFlow cases replayed on the GPU (NPL_BACKEND=cupy tests/test_tf_stored.py);
#   4. the GPU benchmark: npl on CuPy against PyTorch's cuDNN on C1-C3, C5 and C6.
# OUT defaults to runs/gpu; STAGE_S (default 150) bounds stages 2-4 each; BENCH_ARGS (default
# empty) is appended to the benchmark's command line. CI runs this script on the CuPy stand-in
# (tests/test_fake_cupy.py), so it is known to run before a GPU's minutes are spent on it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
STAGE_S=${STAGE_S:-150}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
status=0

echo "== 1. versions" | tee "$OUT/gpu_env.txt"
"$PY" - <<'EOF' 2>&1 | tee -a "$OUT/gpu_env.txt"
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

echo "== 2. CUDA kernels and CuPy sequence passes" | tee "$OUT/gpu_kernels.log"
timeout "$STAGE_S" "$PY" -m pytest -q -ra -p no:cacheprovider tests/test_kernels.py \
    tests/test_device_parity.py tests/test_backend_mixing.py tests/test_kernels_host.py 2>&1 | tee -a "$OUT/gpu_kernels.log" \
    || status=1

echo "== 3. stored TensorFlow cases on CuPy (NPL_BACKEND=cupy)" | tee "$OUT/gpu_parity.log"
NPL_BACKEND=cupy timeout "$STAGE_S" "$PY" -m pytest -q -ra -p no:cacheprovider \
    tests/test_tf_stored.py 2>&1 | tee -a "$OUT/gpu_parity.log" || status=1

echo "== 4. GPU benchmark" | tee "$OUT/gpu_bench.log"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of words
timeout "$STAGE_S" "$PY" -m benchmarks.run --device cuda --frameworks npl,torch --no-plot \
    --out-dir "$OUT" ${BENCH_ARGS:-} 2>&1 | tee -a "$OUT/gpu_bench.log" || status=1

exit $status
