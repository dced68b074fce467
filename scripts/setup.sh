#!/usr/bin/env bash
# Set up musc-edge on a fresh Debian/Ubuntu machine: system packages + .venv.
# Usage: scripts/setup.sh [extras]   e.g. scripts/setup.sh export,dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_packages=()
# Open3D loads libusb at import time; Debian does not ship it by default.
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || apt_packages+=(libusb-1.0-0 libgomp1)
# The dashboard test drives Debian's headless Chromium through Selenium (no browser download).
if [[ ",$extras," == *",dev,"* ]] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
    apt_packages+=(chromium chromium-driver)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "$extras" ]; then
    .venv/bin/python -m pip install -q -e ".[$extras]"
else
    .venv/bin/python -m pip install -q -e .
fi
