#!/usr/bin/env bash
# Set up musc-edge on a fresh Debian/Ubuntu machine: system packages + .venv.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh export,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

# Open3D loads libusb at import time; Debian does not ship it by default.
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq libusb-1.0-0 libgomp1 >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "$extras" ]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
else
    .venv/bin/python -m pip install -q -e .
fi
