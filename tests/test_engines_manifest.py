"""The manifest: JSON round trip, validation in one place, digest, profile checks."""
from __future__ import annotations

import json

import pytest

from edge_runtime.engines.manifest import (
    EngineFile,
    Manifest,
    ManifestMismatch,
    OnnxFile,
    check_expected,
)


def manifest(**changes) -> Manifest:
    fields = dict(
        name="efficientnet-lite0", architecture="efficientnet-lite:efficientnet-lite0", modality="2d",
        input={"image_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, patch_size=8,
        grid=[28, 28], layers=[2, 3, 4], channels=[40, 80, 112], precision="fp32", opset=17,
        onnx=OnnxFile("efficientnet-lite0.onnx", "a" * 64), weights={"source": "/x/w.pth", "sha256": "b" * 64},
        created="2026-01-01T00:00:00+00:00", musc_edge_version="0.1.0")
    fields.update(changes)
    return Manifest(**fields)


def test_json_round_trip_keeps_everything(tmp_path):
    engine = EngineFile("m.engine", "c" * 64, "fp16", "10.3.0", "Orin", "8.7", 8)
    m = manifest(engine=engine, parity={"max_abs_error": [1e-6], "scale": [3.0]})
    path = m.write(tmp_path / "manifest.json")
    doc = json.loads(path.read_text())
    assert doc["files"]["onnx"]["path"] == "efficientnet-lite0.onnx"
    assert doc["files"]["engine"]["compute_capability"] == "8.7"
    assert Manifest.read(path) == m


def test_3d_manifest_shape_conventions():
    m = manifest(name="point-mae", modality="3d", input={"groups": 1024, "group_size": 128}, patch_size=None,
                 grid=[1024], layers=[3, 7, 11], channels=[384] * 3)
    assert m.input_names == ("neighbourhood", "centres")
    assert m.input_shapes(2) == {"neighbourhood": (2, 1024, 128, 3), "centres": (2, 1024, 3)}
    assert m.output_names == ["layer3", "layer7", "layer11"]


@pytest.mark.parametrize("changes, message", [
    ({"modality": "rgb"}, "modality"),
    ({"precision": "bf16"}, "precision"),
    ({"channels": [40, 80]}, "equal length"),
    ({"input": {"image_size": 224}}, "needs"),
    ({"grid": [28]}, "grid"),
    ({"onnx": OnnxFile("x.onnx", "short")}, "sha256"),
])
def test_invalid_manifests_are_refused_with_the_field_named(changes, message):
    with pytest.raises(ValueError, match=message):
        manifest(**changes)


def test_unknown_and_missing_fields_are_named():
    doc = manifest().to_dict()
    doc["colour"] = "blue"
    del doc["opset"]
    with pytest.raises(ValueError, match=r"missing \['opset'\], unknown \['colour'\]"):
        Manifest.from_dict(doc)


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="musc-edge export"):
        Manifest.read(tmp_path / "nowhere" / "manifest.json")


def test_digest_identifies_the_model_not_the_export_time():
    a = manifest()
    assert a.digest() == manifest(created="2030-05-05T00:00:00+00:00").digest()
    assert a.digest() == manifest(weights={"source": "/elsewhere/w.pth", "sha256": "b" * 64}).digest()
    assert a.digest() != manifest(layers=[2, 3, 5]).digest()
    assert a.digest() != manifest(onnx=OnnxFile("efficientnet-lite0.onnx", "d" * 64)).digest()
    assert len(a.digest()) == 16


def test_profile_mismatch_names_field_expected_and_found():
    m = manifest()
    check_expected(m, {"modality": "2d", "image_size": 224, "layers": (2, 3, 4), "mean": [0.5, 0.5, 0.5]})
    with pytest.raises(ManifestMismatch, match=r"image_size expected 256, manifest has 224"):
        check_expected(m, {"image_size": 256})
    with pytest.raises(ManifestMismatch, match=r"layers expected \[3, 7, 11\], manifest has \[2, 3, 4\]"):
        check_expected(m, {"layers": [3, 7, 11]})
    with pytest.raises(ManifestMismatch, match="modality expected '3d'"):
        check_expected(m, {"modality": "3d"})
    with pytest.raises(ValueError, match="cannot check 'colour'"):
        check_expected(m, {"colour": "blue"})
