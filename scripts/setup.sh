#!/usr/bin/env bash
# Set up musc-edge on a fresh Debian/Ubuntu machine: system packages + .venv.
# Usage: scripts/setup.sh [--print] [extras]   e.g. scripts/setup.sh export,dev
#
# ONNX Runtime is one choice of the install (its builds share one module, and
# with two installed only the CPU provider is left):
#   default            the CPU build (extra `cpu`)
#   gpu / gpu-cuda13   onnxruntime-gpu and CuPy for CUDA 12 / 13
#   jetson             JetPack's onnxruntime-gpu and TensorRT from the system
#                      (venv with --system-site-packages; nothing from PyPI shadows them)
# --print shows the choice (venv flags, pip extras) without installing anything.
set -euo pipefail
cd "$(dirname "$0")/.."
print_only=0
if [ "${1:-}" = "--print" ]; then print_only=1; shift; fi
requested="${1:-}"

extras=()
runtime=""
IFS=',' read -r -a items <<< "$requested"
for item in "${items[@]}"; do
    case "$item" in
        "") ;;
        cpu|gpu|gpu-cuda13|jetson)
            if [ -n "$runtime" ] && [ "$runtime" != "$item" ]; then
                echo "setup.sh: choose one ONNX Runtime: '$runtime' and '$item' exclude each other" >&2
                exit 2
            fi
            runtime="$item"
            [ "$item" != jetson ] && extras+=("$item") ;;
        *) extras+=("$item") ;;
    esac
done
if [ -z "$runtime" ]; then runtime=cpu; extras=(cpu "${extras[@]}"); fi
venv_flags=()
[ "$runtime" = jetson ] && venv_flags+=(--system-site-packages)
joined="$(IFS=,; echo "${extras[*]}")"

if [ "$print_only" = 1 ]; then
    echo "runtime=$runtime"
    echo "venv_flags=${venv_flags[*]:-}"
    echo "extras=$joined"
    exit 0
fi

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_packages=()
# Open3D loads libusb at import time; Debian does not ship it by default.
ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || apt_packages+=(libusb-1.0-0 libgomp1)
# The dashboard test drives Debian's headless Chromium through Selenium (no browser download).
if [[ ",$joined," == *",dev,"* ]] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
    apt_packages+=(chromium chromium-driver)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [ "$runtime" = jetson ] && ! python3 -c "import onnxruntime" 2>/dev/null; then
    echo "setup.sh: 'jetson' uses the system onnxruntime-gpu (JetPack), which python3 cannot import" >&2
    exit 1
fi
python3 -m venv "${venv_flags[@]}" .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ -n "$joined" ]; then
    .venv/bin/python -m pip install -q -e ".[$joined]"
else
    .venv/bin/python -m pip install -q -e .
fi
# A dependency may still have pulled in the other build: refuse the mix.
.venv/bin/python - <<'PY'
import sys
from edge_runtime.engines.onnx_runtime import ORT_DISTRIBUTIONS, installed_ort_distributions
if set(ORT_DISTRIBUTIONS) <= set(installed_ort_distributions()):
    sys.exit("setup.sh: both onnxruntime and onnxruntime-gpu are installed; uninstall both and reinstall one")
PY
