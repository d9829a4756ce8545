#!/usr/bin/env bash
# Set up .venv for mmglobalmamba: torch (CPU 2.13.0 unless one is already there), mmcv 2.1.0
# with ops (built once per torch version, wheel cached outside the repo), the OpenMMLab
# stack, and this package in editable mode (which compiles the CPU scan kernel).
# Idempotent: a second run checks a stamp and finishes in seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${MMGM_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"
CACHE="${MMGM_CACHE:-$HOME/.cache/mmglobalmamba}"
TORCH_DEFAULT="${MMGM_TORCH:-torch==2.13.0}"
PIP_QUIET=(-q --disable-pip-version-check)

step() { printf '\033[1m[setup %s] %s\033[0m\n' "$(date +%H:%M:%S)" "$*"; }
filter_pip() { grep -v -e 'is ignored: it is neither' -e '^Looking in' || true; }

# 1. the virtual environment
if [ ! -x "$VENV/bin/python" ]; then
    step "creating virtual environment $VENV"
    "$PYTHON_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip "${PIP_QUIET[@]}")

# 2. the fast path: nothing changed since the last successful run
fingerprint() {
    cat setup.py requirements/*.txt tools/setup_env.sh mmglobalmamba/ops/csrc/*.cpp mmglobalmamba/ops/csrc/*.h 2>/dev/null \
        | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.mmglobalmamba_setup_stamp"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(fingerprint)" ] \
    && "$PY" -c "import mmglobalmamba, mmcv.ops, mmdet, mmseg" 2>/dev/null; then
    step "environment is up to date ($VENV)"
    exit 0
fi

step "pip, setuptools (<81: mmcv and mmengine need pkg_resources), wheel"
"${PIP[@]}" install --upgrade pip 'setuptools>=77,<81' wheel 2>&1 | filter_pip

# 3. torch: keep a torch the user installed (e.g. a CUDA build), else the CPU build
if "$PY" -c "import torch" 2>/dev/null; then
    step "torch already present: $("$PY" -c 'import torch; print(torch.__version__)')"
else
    step "installing $TORCH_DEFAULT (CPU build)"
    "${PIP[@]}" install "$TORCH_DEFAULT" 2>&1 | filter_pip
fi
TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
# Pin the installed torch: nothing installed below may replace it.
CONSTRAINTS="$VENV/torch-constraint.txt"
echo "torch==$TORCH_VERSION" > "$CONSTRAINTS"

# 4. mmcv 2.1.0 with ops, built from source once per torch version
"${PIP[@]}" install -c "$CONSTRAINTS" numpy ninja packaging pyyaml addict yapf termcolor \
    opencv-python-headless 'setuptools>=77,<81' 2>&1 | filter_pip
if "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
    step "mmcv 2.1.0 with ops already installed"
else
    WHEELS="$CACHE/wheels/torch-$TORCH_VERSION"
    mkdir -p "$WHEELS"
    WHEEL="$(ls "$WHEELS"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)"
    if [ -z "$WHEEL" ]; then
        BUILD_ENV=(MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}")
        if "$PY" -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" \
            && command -v nvcc >/dev/null; then
            BUILD_ENV+=(FORCE_CUDA=1)
            step "building mmcv 2.1.0 with CUDA ops for torch $TORCH_VERSION"
        else
            step "building mmcv 2.1.0 with CPU ops for torch $TORCH_VERSION"
        fi
        step "this is the long step (~12 min on 2 cores), done once per machine; log: $WHEELS/build.log"
        TMP_WHEELS="$(mktemp -d "$WHEELS/tmp.XXXX")"
        env "${BUILD_ENV[@]}" "$PY" -m pip wheel --no-build-isolation --no-deps \
            -w "$TMP_WHEELS" mmcv==2.1.0 > "$WHEELS/build.log" 2>&1 &
        BUILD_PID=$!
        START=$SECONDS
        while kill -0 "$BUILD_PID" 2>/dev/null; do
            sleep 30
            kill -0 "$BUILD_PID" 2>/dev/null && \
                step "  mmcv build still running ($(( (SECONDS - START) / 60 )) min elapsed)"
        done
        if ! wait "$BUILD_PID"; then
            tail -n 30 "$WHEELS/build.log"
            echo "mmcv build failed; full log: $WHEELS/build.log" >&2
            exit 1
        fi
        mv "$TMP_WHEELS"/mmcv-2.1.0-*.whl "$WHEELS"/ && rm -rf "$TMP_WHEELS"
        WHEEL="$(ls "$WHEELS"/mmcv-2.1.0-*.whl | head -n1)"
        step "mmcv wheel cached: $WHEEL"
    else
        step "installing cached mmcv wheel $WHEEL"
    fi
    "${PIP[@]}" install -c "$CONSTRAINTS" "$WHEEL" 2>&1 | filter_pip
fi

# 5. the OpenMMLab stack, test tools, and this package (editable; builds the CPU kernel)
step "installing runtime, test and deploy (onnx, onnxruntime) requirements"
"${PIP[@]}" install -c "$CONSTRAINTS" -r requirements/runtime.txt -r requirements/tests.txt \
    -r requirements/deploy.txt \
    2>&1 | filter_pip
step "installing mmglobalmamba in editable mode (compiles the CPU scan kernel)"
"${PIP[@]}" install -c "$CONSTRAINTS" --no-build-isolation --no-deps -e . 2>&1 | filter_pip

# 6. tcmalloc (optional): CPU training with with_cp and the train-step benchmark run under it
#    (README, "Training at scale"). A system library: installed here only where apt-get can.
if ! "$PY" -c "from mmglobalmamba.engine.cpu_allocator import find_allocator as f; f('tcmalloc')" \
        2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        step "installing tcmalloc (Debian package libtcmalloc-minimal4)"
        (apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1 \
            || { apt-get update -qq >/dev/null 2>&1 \
                 && apt-get install -y -qq libtcmalloc-minimal4 >/dev/null 2>&1; }) \
            || step "  could not install it; tests that need it will be skipped"
    else
        step "tcmalloc not found (optional: apt-get install libtcmalloc-minimal4, or conda install gperftools)"
    fi
fi

"$PY" - <<'PY'
import sys, torch, mmcv, mmengine, mmdet, mmseg, mmglobalmamba
from mmglobalmamba.ops import available_backends
assert 'mamba_ssm' not in sys.modules
print(f'torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, '
      f'mmglobalmamba {mmglobalmamba.__version__}; scan backends: {available_backends()}')
PY
fingerprint > "$STAMP"
step "done: activate with 'source $VENV/bin/activate'"
