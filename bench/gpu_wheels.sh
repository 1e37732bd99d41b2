#!/usr/bin/env bash
# The wheelhouse for the offline GPU machines, made on a machine that reaches PyPI:
#
#   bash bench/gpu_wheels.sh                      # -> build/gpu-wheels/{1,2,3}/ (cp312 manylinux wheels)
#   bash bench/gpu_wheels.sh --out DIR --python-version 3.11   # the same for another Python (the dry run's)
#
# The GPU machines have Python 3.12 with torch and many packages preinstalled (bench/gpu_image_packages.txt)
# and reach no package registry; each run there carries the working tree plus named ignored folders, 64 MiB in
# all. bench/gpu_wheels.txt says what the GPU check needs beyond the image and which chunk brings it: this
# script downloads exactly those wheels in the pinned versions (pure-Python sdists are built here into
# py3-none-any wheels), one folder per chunk, checks that each chunk fits one run beside the working tree, and
# lists what it left out because the image has it or the GPU check does not need it. bench/gpu_check.sh
# installs the chunks there (the run sequence: docs/performance.md#gpu).
# Exit status: 0 when every chunk was made and fits, 1 otherwise (what failed is said).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$repo/build/gpu-wheels"
python_version=3.12
platforms=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)  # glibc 2.28 or older
python=${PYTHON:-python3}
budget_mib=64  # what one run carries: the working tree and the chunk

usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=$(realpath -m "$2"); shift 2 ;;
    --python-version) python_version="$2"; shift 2 ;;
    --platform) platforms=("$2"); shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "gpu_wheels.sh: unknown argument '$1'" >&2; usage ;;
  esac
done

# NAME -> its pin in requirements.txt or requirements-java.txt (the one place each version is fixed).
pin() {
  local name=$1
  grep -hiE "^${name//-/[-_]}==" "$repo/requirements.txt" "$repo/requirements-java.txt" | head -n1 | tr -d ' '
}

declare -A chunk_of=()
specs=()
left_out=()
while read -r where spec _; do
  [[ -z "$where" || "$where" == \#* ]] && continue
  case "$where" in
    1|2|3)
      if [[ "$spec" != *==* ]]; then
        pinned=$(pin "$spec")
        [[ -n "$pinned" ]] || { echo "gpu_wheels.sh: $spec has no version here or in requirements" >&2; exit 1; }
        spec=$pinned
      fi
      specs+=("$spec")
      chunk_of[$spec]=$where ;;
    image)
      grep -qixF "$spec" "$repo/bench/gpu_image_packages.txt" \
        || { echo "gpu_wheels.sh: $spec is marked 'image' but the image does not list it" >&2; exit 1; }
      left_out+=("$spec (in the image)") ;;
    skip) left_out+=("$spec (not needed on a GPU machine)") ;;
    *) echo "gpu_wheels.sh: bench/gpu_wheels.txt: unknown place '$where' for $spec" >&2; exit 1 ;;
  esac
done <"$repo/bench/gpu_wheels.txt"

rm -rf "$out"
status=0
for spec in "${specs[@]}"; do
  dir="$out/${chunk_of[$spec]}"
  mkdir -p "$dir"
  name=${spec%%==*}
  if grep -qixF "$name" "$repo/bench/gpu_image_packages.txt"; then
    echo "gpu_wheels.sh: note: the image has $name too (version unknown); chunk ${chunk_of[$spec]} brings $spec"
  fi
  if "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version "$python_version" --implementation cp "${platforms[@]/#/--platform=}" -d "$dir" "$spec" 2>/dev/null; then
    continue
  fi
  # No wheel on PyPI: a pure-Python sdist (pytorchvideo, fvcore, iopath), built here into a py3-none-any wheel.
  if ! "$python" -m pip wheel --quiet --disable-pip-version-check --no-deps -w "$dir" "$spec"; then
    echo "gpu_wheels.sh: could not get $spec (no wheel for cp${python_version/./} ${platforms[0]}, and no sdist built)" >&2
    status=1
    continue
  fi
  built=$(ls -t "$dir"/*.whl | head -n1)
  if [[ "$built" != *-none-any.whl ]]; then
    echo "gpu_wheels.sh: $spec built into $(basename "$built"), which is not a pure-Python wheel" >&2
    status=1
  fi
done

# What each run carries besides the chunk: the tracked files and the untracked files git does not ignore.
tree_bytes=$(cd "$repo" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null \
  | tail -n1 | cut -f1)
budget=$((budget_mib * 1024 * 1024))
echo
echo "working tree: $((tree_bytes / 1024 / 1024)) MiB carried by every run; budget per run: $budget_mib MiB"
for dir in "$out"/*/; do
  chunk=$(basename "$dir")
  bytes=$(du -cb "$dir"/*.whl | tail -n1 | cut -f1)
  total=$((bytes + tree_bytes))
  verdict="fits"
  if ((total > budget)); then
    verdict="DOES NOT FIT"
    status=1
  fi
  printf 'chunk %s: %s MiB + tree = %s MiB of %s: %s\n' "$chunk" "$((bytes / 1024 / 1024))" \
    "$((total / 1024 / 1024))" "$budget_mib" "$verdict"
  (cd "$dir" && ls -1 ./*.whl | sed 's|^\./|  |')
done
echo "left out:"
printf '  %s\n' "${left_out[@]}"
exit $status
