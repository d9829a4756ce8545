#!/usr/bin/env bash
# GPU check of the selective-scan kernels and the real configs, for a CUDA machine without
# network:
#
#     bash tools/gpu_check.sh [SDIST_DIR]
#     bash tools/gpu_check.sh --cpu-config-stage   # stage 4 alone, on CPU at 64 px
#
# 1. makes causal-conv1d and mamba-ssm importable (tools/build_cuda_kernels.sh SDIST_DIR)
#    while our CPU kernel builds in place beside them (so the CPU cases of the tests run);
# 2. runs tests/test_ops.py, CUDA cases included;
# 3. CUDA-vs-PyTorch agreement and timings of the scan and the tiny backbone
#    (tools/gpu_check.py);
# 4. the config stage: UperNet-GlobalMamba-T (ADE20K layout, 512x512), Mask R-CNN-GlobalMamba-T
#    (COCO layout, 1333x800) and UperNet-Vim-T, 20 train iterations each on generated data,
#    batch 2, fp16 AMP, with and without with_cp, then a short evaluation; prints it/s, peak
#    memory, first / last loss (tools/trial_runs.py). --cpu-config-stage runs only this stage,
#    on CPU at 64 px, 2 iterations, fp32, so the script is checked without a GPU.
# Logs go to $LOG_DIR (default /tmp/gpu_check_logs). Exit status 0 = all good.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
TRIAL_WORK_DIR="${TRIAL_WORK_DIR:-work_dirs/gpu_check_trials}"
if [ "${1:-}" = "--cpu-config-stage" ]; then
    PY="${PYTHON:-.venv/bin/python}"
    printf '\n== config stage on CPU (64 px, 2 iterations, fp32) ==\n'
    exec "$PY" tools/trial_runs.py --size 64 --iters 2 --precision fp32 \
        --work-dir "$TRIAL_WORK_DIR"
fi
export LOG_DIR="${LOG_DIR:-/tmp/gpu_check_logs}"
mkdir -p "$LOG_DIR"

say() { printf '\n== %s ==\n' "$*"; }

PY="$(bash tools/build_cuda_kernels.sh --which-python)" || {
    echo "gpu_check: no python with a CUDA-enabled torch found (set PYTHON=/path/to/python)"
    exit 2
}
export PY
say "python: $PY"
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
"device", torch.cuda.get_device_name(0))'

say "CUDA kernels and the CPU kernel (built side by side)"
status=0
bash tools/build_cuda_kernels.sh "$@" >"$LOG_DIR/cuda_kernels.summary" 2>&1 &
pid_cuda=$!
"$PY" setup.py build_ext --inplace >"$LOG_DIR/cpu_kernel.build.log" 2>&1
cpu_rc=$?
wait "$pid_cuda" || status=1
cat "$LOG_DIR/cuda_kernels.summary"
if [ "$cpu_rc" = 0 ]; then
    echo "built mmglobalmamba._C in place"
else
    echo "CPU kernel build failed (log $LOG_DIR/cpu_kernel.build.log); CPU cases will skip"
fi

say "tests/test_ops.py"
if "$PY" -c "import pytest" >/dev/null 2>&1; then
    "$PY" -m pytest tests/test_ops.py tests/test_dispatch.py -q -rs -p no:cacheprovider \
        || status=1
else
    echo "pytest is not installed for $PY: tests not run"
    status=1
fi

say "CUDA vs PyTorch: agreement and timings"
"$PY" tools/gpu_check.py || status=1

say "config stage: 20 iterations at the real resolution, fp16 AMP, with_cp off / on"
"$PY" tools/trial_runs.py --iters 20 --precision fp16 --require-cuda-kernels \
    --work-dir "$TRIAL_WORK_DIR" || status=1

say "gpu_check: $([ "$status" = 0 ] && echo 'all stages passed' || echo 'FAILED (see above)')"
exit "$status"
