#!/usr/bin/env bash
# GPU check of the selective-scan kernels, for a CUDA machine without network:
#
#     bash tools/gpu_check.sh [SDIST_DIR]
#     bash tools/gpu_check.sh --cpu-config-stage   # stage 6 alone, on CPU at 64 px
#
# 1. picks a python whose torch sees CUDA ($PYTHON, .venv/bin/python, python3, python);
# 2. makes causal-conv1d and mamba-ssm importable: kept if already installed, else installed
#    from a wheel or built from the sdist found in SDIST_DIR (argument, else $SDIST_DIR,
#    else ./shared/sdists) with pip --no-build-isolation --no-deps --no-index. Both builds
#    and the CPU kernel build run side by side. Their setup.py files hard-code nine -gencode
#    targets (sm_75 ... sm_121); when TORCH_CUDA_ARCH_LIST is set (default 9.0) those lines
#    are dropped from the unpacked sources so only the listed targets are compiled
#    (GPU_CHECK_ALL_ARCHS=1 keeps them all: a ~9x longer build);
# 3. builds our CPU kernel in place (so the CPU cases of the tests run too);
# 4. runs tests/test_ops.py, CUDA cases included;
# 5. prints CUDA-vs-PyTorch agreement and speed-ups for the scan and the tiny backbone;
# 6. the config stage: UperNet-GlobalMamba-T (ADE20K layout, 512x512), Mask R-CNN-GlobalMamba-T
#    (COCO layout, 1333x800) and UperNet-Vim-T, 20 train iterations each on generated data,
#    batch 2, fp16 AMP, with and without with_cp, then a short evaluation; prints it/s, peak
#    memory, first / last loss (tools/trial_runs.py). --cpu-config-stage runs only this stage,
#    on CPU at 64 px, 2 iterations, fp32, so the script is checked without a GPU.
# Build logs go to $LOG_DIR (default /tmp/gpu_check_logs). Exit status 0 = all good.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
TRIAL_WORK_DIR="${TRIAL_WORK_DIR:-work_dirs/gpu_check_trials}"
if [ "${1:-}" = "--cpu-config-stage" ]; then
    PY="${PYTHON:-.venv/bin/python}"
    printf '\n== config stage on CPU (64 px, 2 iterations, fp32) ==\n'
    exec "$PY" tools/trial_runs.py --size 64 --iters 2 --precision fp32 \
        --work-dir "$TRIAL_WORK_DIR"
fi
SDIST_DIR="${1:-${SDIST_DIR:-./shared/sdists}}"
LOG_DIR="${LOG_DIR:-/tmp/gpu_check_logs}"
BUILD_ROOT="${BUILD_ROOT:-/tmp/gpu_check_src}"
mkdir -p "$LOG_DIR" "$BUILD_ROOT"
export MAX_JOBS="${MAX_JOBS:-16}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '\n== %s ==\n' "$*"; }

pick_python() {
    local cand
    for cand in "${PYTHON:-}" .venv/bin/python python3 python; do
        [ -n "$cand" ] || continue
        command -v "$cand" >/dev/null 2>&1 || continue
        if "$cand" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
            >/dev/null 2>&1; then
            echo "$cand"
            return 0
        fi
    done
    return 1
}

PY="$(pick_python)" || {
    echo "gpu_check: no python with a CUDA-enabled torch found (set PYTHON=/path/to/python)"
    exit 2
}
say "python: $PY"
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda,
"device", torch.cuda.get_device_name(0))'
command -v nvcc >/dev/null 2>&1 && nvcc --version | tail -1 \
    || echo "note: nvcc not on PATH (CUDA_HOME=${CUDA_HOME:-unset}); source builds need it"
echo "sdists from: $SDIST_DIR $( [ -d "$SDIST_DIR" ] && echo '(found)' || echo '(missing)')"

# torch first: the compiled CUDA modules link against libtorch, which `import torch` loads.
importable() { "$PY" -c "import torch, $1" >/dev/null 2>&1; }

# Small pure-python helpers the builds / imports use, from local files only.
for mod in ninja packaging einops wheel; do
    if ! importable "$mod" && [ -d "$SDIST_DIR" ]; then
        "$PY" -m pip install --no-index --no-deps --find-links "$SDIST_DIR" "$mod" \
            >"$LOG_DIR/pip_$mod.log" 2>&1 && echo "installed $mod from $SDIST_DIR"
    fi
    importable "$mod" || echo "note: python module '$mod' is missing"
done

# unpack_sdist ARCHIVE: unpack into $BUILD_ROOT, print the source folder. Unless
# GPU_CHECK_ALL_ARCHS=1, replace the hard-coded `cc_flag.append("-gencode")` /
# `cc_flag.append("arch=compute_XX,code=sm_XX")` calls of its setup.py by `pass`, so that
# torch's cpp_extension compiles for TORCH_CUDA_ARCH_LIST alone.
unpack_sdist() {
    local archive="$1" name
    case "$archive" in  # name: the archive's top-level folder
        *.zip) "$PY" -m zipfile -e "$archive" "$BUILD_ROOT" &&
               name="$("$PY" -c 'import sys, zipfile; print(zipfile.ZipFile(sys.argv[1]).namelist()[0].split("/")[0])' "$archive")" ;;
        *) tar -xzf "$archive" -C "$BUILD_ROOT" &&
           name="$(tar -tzf "$archive" | head -n 1 | cut -d/ -f1)" ;;
    esac || return 1
    [ -n "$name" ] && [ -f "$BUILD_ROOT/$name/setup.py" ] || return 1
    if [ "${GPU_CHECK_ALL_ARCHS:-0}" != 1 ] && [ -n "${TORCH_CUDA_ARCH_LIST:-}" ]; then
        "$PY" - "$BUILD_ROOT/$name/setup.py" <<'EOF' >&2
import re, sys
path = sys.argv[1]
src = open(path).read()
new, n = re.subn(r'cc_flag\.append\("(?:-gencode|arch=compute_\w+,code=sm_\w+)"\)', 'pass', src)
open(path, 'w').write(new)
print(f'{path}: {n // 2} hard-coded -gencode targets dropped (TORCH_CUDA_ARCH_LIST decides)')
EOF
    fi
    echo "$BUILD_ROOT/$name"
}

# ensure_pkg DIST_PREFIX CUDA_MODULE: install / build one CUDA package unless importable.
ensure_pkg() {
    local dist="$1" module="$2" f found=0
    if importable "$module"; then
        echo "$dist: already importable ($module)"
        return 0
    fi
    if [ ! -d "$SDIST_DIR" ]; then
        echo "$dist: not installed and no sdist directory $SDIST_DIR"
        return 1
    fi
    local alt="${dist//_/-}"
    shopt -s nullglob
    local wheels=("$SDIST_DIR/$dist"-*.whl "$SDIST_DIR/$alt"-*.whl)
    local sdists=("$SDIST_DIR/$dist"-*.tar.gz "$SDIST_DIR/$alt"-*.tar.gz
                  "$SDIST_DIR/$dist"-*.zip "$SDIST_DIR/$alt"-*.zip)
    shopt -u nullglob
    for f in "${wheels[@]}"; do
        found=1
        echo "$dist: installing wheel $f"
        if "$PY" -m pip install --no-index --no-deps --force-reinstall "$f" \
            >"$LOG_DIR/$dist.wheel.log" 2>&1 && importable "$module"; then
            return 0
        fi
        echo "$dist: wheel $f did not import here; trying a source build"
    done
    for f in "${sdists[@]}"; do
        found=1
        local src
        src="$(unpack_sdist "$f")" || { echo "$dist: could not unpack $f"; continue; }
        echo "$dist: building $f (MAX_JOBS=$MAX_JOBS, TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST;"\
             "log $LOG_DIR/$dist.build.log)"
        local t0=$SECONDS
        if "$PY" -m pip install -v --no-index --no-build-isolation --no-deps \
            --force-reinstall "$src" >"$LOG_DIR/$dist.build.log" 2>&1 && importable "$module"; then
            echo "$dist: built in $((SECONDS - t0)) s"
            return 0
        fi
        echo "$dist: build of $f FAILED; last lines of the log:"
        tail -n 30 "$LOG_DIR/$dist.build.log"
    done
    [ "$found" = 1 ] || echo "$dist: no wheel or sdist in $SDIST_DIR"
    return 1
}

say "CUDA kernels and the CPU kernel (built side by side)"
status=0
t_build=$SECONDS
ensure_pkg causal_conv1d causal_conv1d_cuda >"$LOG_DIR/causal_conv1d.summary" 2>&1 &
pid_conv=$!
ensure_pkg mamba_ssm selective_scan_cuda >"$LOG_DIR/mamba_ssm.summary" 2>&1 &
pid_scan=$!
"$PY" setup.py build_ext --inplace >"$LOG_DIR/cpu_kernel.build.log" 2>&1
cpu_rc=$?
wait "$pid_conv" || status=1
cat "$LOG_DIR/causal_conv1d.summary"
wait "$pid_scan" || status=1
cat "$LOG_DIR/mamba_ssm.summary"
if [ "$cpu_rc" = 0 ]; then
    echo "built mmglobalmamba._C in place"
else
    echo "CPU kernel build failed (log $LOG_DIR/cpu_kernel.build.log); CPU cases will skip"
fi
echo "builds done in $((SECONDS - t_build)) s"

say "tests/test_ops.py"
if importable pytest; then
    "$PY" -m pytest tests/test_ops.py -q -rs -p no:cacheprovider || status=1
else
    echo "pytest is not installed for $PY: tests not run"
    status=1
fi

say "CUDA vs PyTorch: agreement and speed-ups"
"$PY" tools/gpu_check.py || status=1

say "config stage: 20 iterations at the real resolution, fp16 AMP, with_cp off / on"
"$PY" tools/trial_runs.py --iters 20 --precision fp16 --require-cuda-kernels \
    --work-dir "$TRIAL_WORK_DIR" || status=1

say "gpu_check: $([ "$status" = 0 ] && echo OK || echo 'FAILED (see above)')"
exit "$status"
