"""What can be checked of the GPU install without a GPU: the ONNX Runtime choice of
scripts/setup.sh, the warning when a GPU provider is missing, the TensorRT version
gate and the native engine's refusal paths."""
from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import onnxruntime as ort
import pytest

from edge_runtime.engines.onnx_runtime import choose_providers, installed_ort_distributions, missing_gpu_reason
from export.tensorrt import check_tensorrt_version

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def _choice(extras: str) -> dict[str, str]:
    done = subprocess.run(["bash", str(SETUP), "--print", extras], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


@pytest.mark.parametrize("extras, runtime, pip_extras, flags", [
    ("", "cpu", "cpu", ""),
    ("export,dev", "cpu", "cpu,export,dev", ""),
    ("gpu,dev", "gpu", "gpu,dev", ""),
    ("gpu-cuda13", "gpu-cuda13", "gpu-cuda13", ""),
    ("jetson,dev", "jetson", "dev", "--system-site-packages"),  # JetPack's onnxruntime-gpu is not shadowed
])
def test_setup_installs_exactly_one_onnxruntime(extras, runtime, pip_extras, flags):
    assert _choice(extras) == {"runtime": runtime, "extras": pip_extras, "venv_flags": flags}


@pytest.mark.parametrize("extras", ["cpu,gpu", "gpu,jetson", "gpu-cuda13,gpu"])
def test_setup_refuses_two_onnxruntimes(extras):
    done = subprocess.run(["bash", str(SETUP), "--print", extras], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "exclude each other" in done.stderr


def test_pyproject_pins_tensorrt_10_and_keeps_onnxruntime_out_of_the_core():
    import tomllib

    project = tomllib.loads((SETUP.parents[1] / "pyproject.toml").read_text())["project"]
    assert not any(d.startswith("onnxruntime") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert extras["tensorrt"] == ["tensorrt>=10,<11"]
    assert [d for d in extras["cpu"] if "onnxruntime" in d] == ["onnxruntime>=1.17"]
    for gpu in ("gpu", "gpu-cuda13"):
        assert any(d.startswith("onnxruntime-gpu") for d in extras[gpu])


@pytest.mark.parametrize("distributions, says", [
    (["onnxruntime", "onnxruntime-gpu"], "both onnxruntime and onnxruntime-gpu"),
    (["onnxruntime-gpu"], "CUDA/cuDNN libraries"),
    (["onnxruntime"], "CPU build"),
    ([], "system build"),
])
def test_missing_gpu_reason_names_the_install_problem(distributions, says):
    assert says in missing_gpu_reason(distributions, ["CPUExecutionProvider"])


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="needs a CPU-only onnxruntime")
def test_a_gpu_request_without_a_gpu_provider_warns_loudly(caplog):
    requested = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.INFO, logger="edge_runtime.engines.onnx_runtime"):
        assert choose_providers(requested) == ["CPUExecutionProvider"]
    assert [r.levelno for r in caplog.records] == [logging.INFO]  # nobody asked for a GPU
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edge_runtime.engines.onnx_runtime"):
        assert choose_providers(requested, gpu_expected=True) == ["CPUExecutionProvider"]
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and "GPU requested" in record.getMessage()
    assert missing_gpu_reason(installed_ort_distributions(), ort.get_available_providers()) in record.getMessage()


@pytest.mark.parametrize("version, ok", [("8.6.1", True), ("10.3.0.26", True), ("11.0.0", False), ("7.2.3", False)])
def test_tensorrt_versions_outside_the_builder_api_are_refused(version, ok):
    if ok:
        check_tensorrt_version(version)
    else:
        with pytest.raises(RuntimeError, match="not supported for building engines"):
            check_tensorrt_version(version)
