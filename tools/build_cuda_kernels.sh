#!/usr/bin/env bash
# Make mamba-ssm and causal-conv1d importable on a CUDA machine without network:
#
#     bash tools/build_cuda_kernels.sh [SDIST_DIR]
#     bash tools/build_cuda_kernels.sh --which-python   # print the python it would use
#
# For each package: kept if it already imports; else installed from a wheel, or built from
# the sdist, found in SDIST_DIR (argument, else $SDIST_DIR, else ./shared/sdists) with
# pip --no-build-isolation --no-deps --no-index, both builds side by side. Their setup.py
# files hard-code nine -gencode targets (sm_75 ... sm_121); when TORCH_CUDA_ARCH_LIST is set
# (default 9.0) those lines are dropped from the unpacked sources so only the listed
# targets are compiled (GPU_CHECK_ALL_ARCHS=1 keeps them all: a ~9x longer build).
# Small pure-python helpers (ninja, packaging, einops, wheel) come from SDIST_DIR too.
# Logs: $LOG_DIR (default /tmp/gpu_check_logs). Exit status 0 = both import.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

# The first of $PYTHON, .venv/bin/python, python3, python whose torch sees CUDA.
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
if [ "${1:-}" = "--which-python" ]; then
    pick_python
    exit
fi

SDIST_DIR="${1:-${SDIST_DIR:-./shared/sdists}}"
LOG_DIR="${LOG_DIR:-/tmp/gpu_check_logs}"
BUILD_ROOT="${BUILD_ROOT:-/tmp/gpu_check_src}"
mkdir -p "$LOG_DIR" "$BUILD_ROOT"
export MAX_JOBS="${MAX_JOBS:-16}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAMBA_FORCE_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE
export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

PY="${PY:-$(pick_python)}" || {
    echo "build_cuda_kernels: no python with a CUDA-enabled torch found (set PYTHON=...)"
    exit 2
}
echo "python: $PY; sdists from: $SDIST_DIR $( [ -d "$SDIST_DIR" ] && echo '(found)' || echo '(missing)')"
command -v nvcc >/dev/null 2>&1 && nvcc --version | tail -1 \
    || echo "note: nvcc not on PATH (CUDA_HOME=${CUDA_HOME:-unset}); source builds need it"

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

status=0
t_build=$SECONDS
ensure_pkg causal_conv1d causal_conv1d_cuda >"$LOG_DIR/causal_conv1d.summary" 2>&1 &
pid_conv=$!
ensure_pkg mamba_ssm selective_scan_cuda >"$LOG_DIR/mamba_ssm.summary" 2>&1 &
pid_scan=$!
wait "$pid_conv" || status=1
cat "$LOG_DIR/causal_conv1d.summary"
wait "$pid_scan" || status=1
cat "$LOG_DIR/mamba_ssm.summary"
echo "CUDA kernel builds done in $((SECONDS - t_build)) s"
exit "$status"
