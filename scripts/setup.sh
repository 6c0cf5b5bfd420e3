#!/usr/bin/env bash
# Installs everything llmvirt needs on a fresh Debian 12 machine (idempotent):
# apt packages (libvirt, QEMU, build tools), a virtual environment in .venv,
# torch==2.13.0 (CPU wheel, installed first so nothing pulls CUDA), then llmvirt.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev
              pkg-config gcc cpio busybox-static ruby util-linux procps iproute2
              prometheus   # the exporter's tests scrape it with a real server
              man-db groff-base systemd   # the packaging tests render the man page and verify the units
              postgresql)  # the store's tests run against a real PostgreSQL server too (make test-postgres)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
# the lab builds its guest image with `apt-get download`, which needs package lists
if [ ${#missing[@]} -gt 0 ] || ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "setup done: .venv ready ($(.venv/bin/python -c 'import torch, libvirt; print("torch", torch.__version__, "libvirt", libvirt.getVersion())'))"
