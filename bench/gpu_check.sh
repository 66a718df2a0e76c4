#!/usr/bin/env bash
# GPU check (issue 4): on an NVIDIA machine with no internet, install mamba-ssm (and
# causal-conv1d when carried) from bench/wheels, run the GPU parity tests, print the
# kernel-vs-reference throughput table. Budget: under 8 minutes. Run from anywhere:
#
#     bash bench/gpu_check.sh            # PYTHON=/path/to/python to pick the interpreter
#
# What bench/wheels must hold (fill it once on a machine with internet; add bench/wheels/ to
# .gitignore, it is not source):
#   * mamba-ssm: best a wheel prebuilt on a GPU host with the *same* torch as the target
#     (compiled extensions are tied to the exact torch build):
#         MAMBA_FORCE_BUILD=TRUE pip wheel --no-build-isolation --no-deps -w bench/wheels "mamba-ssm==2.3.2.post1"
#     or just the sdist, which this script then builds for the local GPU architecture only:
#         MAMBA_SKIP_CUDA_BUILD=TRUE pip download --no-deps --no-binary :all: --no-build-isolation \
#             -d bench/wheels "mamba-ssm==2.3.2.post1"
#     (the SKIP variable only lets the metadata step pass on a machine without CUDA).
#   * causal-conv1d (optional: ehrfm falls back to torch's conv): a prebuilt wheel, or its
#     sdist (CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE pip download ... "causal-conv1d==1.7.0"),
#     built here only with GPU_CHECK_BUILD_CONV=1 (another few minutes of nvcc).
#   * pure-Python dependencies missing on the target, e.g.
#         pip download -d bench/wheels --only-binary :all: --python-version 3.12 \
#             --platform manylinux2014_x86_64 einops transformers pytest safetensors ninja
#
# How mamba-ssm builds (read from its setup.py; check the version you carry):
#   * 2.3.2.post1 (latest on PyPI when written): MAMBA_FORCE_BUILD=TRUE builds locally instead
#     of downloading a prebuilt wheel from GitHub (an offline download attempt aborts the
#     install); MAMBA_SKIP_CUDA_BUILD=TRUE skips the CUDA extension, but the package then
#     cannot be imported at all (mamba_ssm/__init__ imports selective_scan_cuda unguarded),
#     so it must be compiled. Its -gencode list is hard-coded (nine architectures with nvcc
#     13, TORCH_CUDA_ARCH_LIST ignored): this script patches a copy of setup.py to build the
#     local architecture only (sm_90 alone: ~2-3 min with MAX_JOBS >= 10).
#   * newer releases make the CUDA build opt-in with MAMBA_KEEP_CUDA_BUILD=TRUE and install
#     the Triton (Mamba-2) path without compiling: detected from setup.py; then the compiled
#     Mamba-1 scan is built only with GPU_CHECK_BUILD_SCAN=1.
# mamba-ssm is installed with --no-deps: tilelang / quack-kernels only serve Mamba-3 and are
# imported under guards; triton comes with the CUDA torch; einops and transformers are needed
# (mamba_ssm/__init__ imports transformers) and come from bench/wheels when missing.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python}
WHEELS=${GPU_CHECK_WHEELS:-bench/wheels}
DEADLINE=${GPU_CHECK_DEADLINE:-465}  # seconds; the check must end inside 8 minutes
START=$SECONDS
log() { echo "[gpu_check +$((SECONDS - START))s] $*"; }
left() { echo $((DEADLINE - (SECONDS - START))); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
pip_offline() { "$PY" -m pip install --no-index --find-links "$WHEELS" --no-build-isolation "$@"; }
imports() { "$PY" -c "$1" >/dev/null 2>&1; }

log "machine"
nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
"$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available())" || exit 1
"$PY" -c "import triton; print('triton', triton.__version__)" 2>/dev/null || log "triton is missing: the Mamba-2 kernel will not import"
if ! imports "import torch; assert torch.cuda.is_available()"; then
  log "CUDA is not available to $PY: nothing to check here"
  exit 1
fi
ARCH=$("$PY" -c "import torch; c = torch.cuda.get_device_capability(); print(f'{c[0]}{c[1]}')")
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
# torch's extension build falls back to a serial, far slower build when no ninja is on PATH:
# take the one the ninja package ships if the interpreter has it.
if ! command -v ninja >/dev/null; then
  ninja_dir=$("$PY" -c "import ninja; print(ninja.BIN_DIR)" 2>/dev/null) && export PATH="$ninja_dir:$PATH"
fi
echo "nvcc: $(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo missing); ninja: $(ninja --version 2>/dev/null || echo missing); MAX_JOBS=$MAX_JOBS"
# pip installs into the interpreter's site-packages; where that is read-only (a shared image, a
# non-root user), into a folder put on PYTHONPATH (kept below wherever PYTHONPATH=. is set).
if ! "$PY" -c "import os, sys, sysconfig; sys.exit(not os.access(sysconfig.get_paths()['purelib'], os.W_OK))"; then
  export PIP_TARGET=${PIP_TARGET:-/tmp/gpu_check_site}
  export PYTHONPATH="$PIP_TARGET${PYTHONPATH:+:$PYTHONPATH}"
  log "site-packages is not writable: installing into $PIP_TARGET"
fi

# --- pure-Python dependencies (only what is missing)
for module_package in einops:einops transformers:transformers pytest:pytest safetensors:safetensors ninja:ninja; do
  module=${module_package%%:*}
  package=${module_package##*:}
  if ! imports "import $module"; then
    log "installing $package from $WHEELS"
    pip_offline "$package" || log "could not install $package (not in $WHEELS?)"
  fi
done

# Newest file in $WHEELS matching a glob, or nothing.
newest() { ls -t $WHEELS/$1 2>/dev/null | head -n 1; }

# Build an sdist for the local architecture only: unpack it, patch its -gencode list, pip install.
build_sdist() {
  local sdist=$1 work
  work=$(mktemp -d)
  tar -xzf "$sdist" -C "$work" || return 1
  local src
  src=$(find "$work" -maxdepth 1 -mindepth 1 -type d | head -n 1)
  "$PY" - "$src/setup.py" "$ARCH" <<'PATCH'
import re, sys
path, arch = sys.argv[1], sys.argv[2]
text = open(path).read()
pair = re.compile(r'cc_flag\.append\("-gencode"\)\s*\n\s*cc_flag\.append\("arch=compute_\w+,code=sm_\w+"\)')
count = 0
def keep_local(match):
    global count
    count += 1
    # The first pair in these setup.py files is unconditional: it becomes the local arch.
    if count == 1:
        return f'cc_flag.append("-gencode"); cc_flag.append("arch=compute_{arch},code=sm_{arch}")'
    return "pass"
text = pair.sub(keep_local, text)
open(path, "w").write(text)
print(f"patched {count} -gencode pairs in {path} -> sm_{arch} only" if count else f"no -gencode list found in {path}; building as shipped")
PATCH
  # Leave ~2 minutes for the tests and the table whatever the build does.
  local limit
  limit=$(min "${GPU_CHECK_BUILD_TIMEOUT:-330}" $(( $(left) - 120 )))
  if [ "$limit" -lt 30 ]; then echo "no time left to build $sdist"; rm -rf "$work"; return 1; fi
  timeout "$limit" "$PY" -m pip install --no-index --find-links "$WHEELS" --no-build-isolation --no-deps "$src"
  local rc=$?
  rm -rf "$work"
  return $rc
}

# --- causal-conv1d (optional)
if ! imports "import causal_conv1d"; then
  wheel=$(newest 'causal_conv1d-*.whl')
  sdist=$(newest 'causal_conv1d-*.tar.gz')
  if [ -n "$wheel" ]; then
    log "installing $wheel"
    pip_offline --no-deps "$wheel" || log "causal-conv1d wheel did not install"
  elif [ -n "$sdist" ] && [ "${GPU_CHECK_BUILD_CONV:-0}" = 1 ]; then
    log "building $sdist for sm_$ARCH (MAX_JOBS=$MAX_JOBS)"
    CAUSAL_CONV1D_FORCE_BUILD=TRUE build_sdist "$sdist" || log "causal-conv1d build failed; torch conv is used"
  else
    log "causal-conv1d not installed (no wheel; GPU_CHECK_BUILD_CONV=1 builds the sdist): torch conv is used"
  fi
fi

# --- mamba-ssm
if imports "import torch, mamba_ssm; assert torch.cuda.is_available()"; then
  log "mamba-ssm already importable"
else
  wheel=$(newest 'mamba_ssm-*.whl')
  sdist=$(newest 'mamba_ssm-*.tar.gz')
  if [ -n "$wheel" ]; then
    log "installing $wheel"
    pip_offline --no-deps "$wheel" || log "mamba-ssm wheel did not install"
  elif [ -n "$sdist" ]; then
    export MAMBA_FORCE_BUILD=TRUE  # never try to download a prebuilt wheel: there is no internet
    if tar -xzOf "$sdist" --wildcards '*/setup.py' | grep -q MAMBA_KEEP_CUDA_BUILD; then
      if [ "${GPU_CHECK_BUILD_SCAN:-0}" = 1 ]; then
        export MAMBA_KEEP_CUDA_BUILD=TRUE
        log "building $sdist with the CUDA selective scan for sm_$ARCH"
      else
        log "building $sdist Triton-only (MAMBA_KEEP_CUDA_BUILD unset): Mamba-1 kernel tests will skip"
      fi
    else
      log "building $sdist: this version needs the CUDA extension; sm_$ARCH only, MAX_JOBS=$MAX_JOBS"
    fi
    build_sdist "$sdist" || log "mamba-ssm build failed or timed out; kernel tests will skip"
  else
    log "no mamba-ssm wheel or sdist in $WHEELS; kernel tests will skip and the table shows the reference only"
  fi
fi
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" "$PY" - <<'REPORT'
from ehrfm.ops import load_kernels
k = load_kernels()
print("kernels available:", ", ".join(k.available()) or "none")
for name, why in k.errors.items():
    print(f"  {name}: {why}")
REPORT

# --- parity tests (kernel vs reference, fwd + bwd, fp32 and bf16)
log "GPU parity tests"
# -v: one line per test as it ends, so a run cut short by the timeout still shows what passed.
# Several workers when pytest-xdist is there: on a fresh machine most of the time is Triton
# compiling every autotune config of the Mamba-2 kernels, once per dtype and shape, serially in
# one process; workers spread that over the cores (the GPU is shared, results are unchanged).
workers=()
if imports "import xdist"; then workers=(-n "${GPU_CHECK_TEST_WORKERS:-4}"); fi
test_limit=$(min "${GPU_CHECK_TEST_TIMEOUT:-180}" $(( $(left) - 60 )))
if [ "$test_limit" -lt 20 ]; then test_limit=20; fi  # past the deadline: still a short try, never a negative timeout
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" timeout "$test_limit" \
  "$PY" -m pytest -v ${workers[@]+"${workers[@]}"} -p no:cacheprovider -rs --durations=10 -m gpu tests/ops/test_kernels_gpu.py \
  ${GPU_CHECK_TEST_SELECT:+-k "$GPU_CHECK_TEST_SELECT"}
tests_rc=$?
remaining=$(left)
if [ -n "${GPU_CHECK_NO_TABLE:-}" ]; then
  log "throughput table skipped (GPU_CHECK_NO_TABLE)"
elif [ "$remaining" -gt 40 ]; then
  log "throughput table (${remaining}s left)"
  # --budget-s stops starting new cells; a started cell may run ~30 s more (warm-up + timing).
  PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" timeout "$((remaining - 5))" "$PY" bench/gpu_check.py --budget-s "$((remaining - 40))" || log "throughput table stopped early"
else
  log "no time left for the throughput table"
fi
log "done (parity tests exit code $tests_rc)"
exit $tests_rc
