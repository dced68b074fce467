"""Native TensorRT engines: build (fp16, int8), load, parity, refusal of foreign engines.

Runs only where the tensorrt package and an NVIDIA GPU exist (a Jetson, an x86
RTX box); elsewhere every test is skipped with the reason.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json

import numpy as np
import pytest

from edge_runtime.engines import ManifestMismatch, load_engine
from edge_runtime.engines.cuda import gpu_info
from edge_runtime.engines.manifest import Manifest

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAVE_TENSORRT, reason="the tensorrt Python package is not installed on this machine"),
    pytest.mark.skipif(HAVE_TENSORRT and gpu_info() is None, reason="no NVIDIA GPU visible (CUDA driver)"),
]
SIZE = 64


def _torch():
    """torch, imported only by the tests that export (a Jetson has none: the others still run there)."""
    return pytest.importorskip("torch", reason="exporting needs torch (on a Jetson: export on another machine)")


def _export(tmp_path, **kw):
    torch = _torch()
    from export.exporter import ExportRequest, build_model, example_inputs, export_encoder

    request = ExportRequest(encoder="efficientnet-lite0", out=tmp_path / "out", image_size=SIZE, tensorrt=True,
                            max_batch=4, **kw)
    manifest_path = export_encoder(request)
    model, _ = build_model(request)
    inputs = example_inputs(dataclasses.replace(request, seed=9), 3)
    with torch.no_grad():
        reference = [t.numpy() for t in model(*inputs)]
    return manifest_path, inputs[0].numpy(), reference


def test_fp16_engine_runs_natively_and_matches_torch(tmp_path):
    manifest_path, x, reference = _export(tmp_path, precision="fp16")
    m = Manifest.read(manifest_path)
    assert m.engine is not None and m.engine.gpu_name == gpu_info()["gpu_name"]
    assert m.onnx.precision == "fp32"  # the fallback keeps full precision
    engine = load_engine(manifest_path)
    assert engine.provider == "tensorrt-native"
    for ref, got in zip(reference, engine.run(x)):
        assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()


def test_int8_engine_from_a_calibration_folder(tmp_path):
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(calibration / f"{i}.npy", rng.standard_normal((4, 3, SIZE, SIZE)).astype(np.float32))
    manifest_path, x, reference = _export(tmp_path, precision="int8", calibration=calibration)
    assert (manifest_path.parent / "efficientnet-lite0.calib.cache").is_file()
    engine = load_engine(manifest_path)
    assert engine.provider == "tensorrt-native"
    for ref, got in zip(reference, engine.run(x)):
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.9


def test_engine_for_another_gpu_is_refused_then_onnx_runs(tmp_path):
    manifest_path, x, reference = _export(tmp_path, precision="fp16")
    doc = json.loads(manifest_path.read_text())
    doc["files"]["engine"]["gpu_name"] = "Some Other GPU"
    manifest_path.write_text(json.dumps(doc))
    with pytest.raises(ManifestMismatch, match="gpu_name 'Some Other GPU'"):
        load_engine(manifest_path, allow_onnx_fallback=False)
    engine = load_engine(manifest_path, gpu=True)
    assert "Some Other GPU" in engine.fallback_reason
    # The fallback must still be on the GPU: ONNX Runtime silently on the CPU is a failure here.
    assert engine.provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider"), engine.provider
    for ref, got in zip(reference, engine.run(x)):
        # fp32 graph; a GPU execution provider may compute it in TF32, hence not 1e-4
        assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()


def test_engine_added_to_an_existing_export(tmp_path):
    _torch()
    from export.exporter import ExportRequest, export_encoder
    from export.tensorrt import add_engine

    manifest_path = export_encoder(ExportRequest(encoder="efficientnet-lite0", out=tmp_path, image_size=SIZE))
    assert Manifest.read(manifest_path).engine is None
    add_engine(manifest_path, "fp16", max_batch=2)
    m = Manifest.read(manifest_path)
    assert m.engine is not None and m.precision == "fp16" and m.engine.max_batch == 2
    engine = load_engine(manifest_path)
    assert engine.provider == "tensorrt-native"
    assert engine.run(np.zeros((2, 3, SIZE, SIZE), np.float32))[0].shape == (2, 8, 8, 40)
