"""Loading exported encoders at the station: refusals, fallbacks, no torch, default encoder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.engines import (
    ManifestMismatch,
    default_encoder_dir,
    ensure_default_encoders,
    load_engine,
)
from edge_runtime.engines.manifest import EngineFile, Manifest, sha256_file
from edge_runtime.engines.tensorrt_runtime import EngineUnavailable, check_engine_target

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """EfficientNet-Lite0 (real weights) at 64 px, exported once for this module."""
    from export.exporter import ExportRequest, export_encoder

    return export_encoder(ExportRequest(encoder="efficientnet-lite0", out=tmp_path_factory.mktemp("lite0"),
                                        image_size=SIZE))


@pytest.fixture
def copy_of(exported, tmp_path) -> Path:
    """A private copy of the export that a test may damage."""
    folder = tmp_path / "copy"
    shutil.copytree(exported.parent, folder)
    return folder / "manifest.json"


def test_loads_and_runs_on_cpu(exported):
    engine = load_engine(exported, expect={"modality": "2d", "image_size": SIZE, "layers": [2, 3, 5]}, threads=1)
    assert engine.provider == "CPUExecutionProvider" and engine.fallback_reason is None
    rgb = np.random.default_rng(0).integers(0, 256, (3, 90, 120, 3), dtype=np.uint8)
    grids = engine.run(engine.preprocess_rgb(rgb))
    assert [g.shape for g in grids] == [(3, 8, 8, 40), (3, 8, 8, 80), (3, 8, 8, 192)]
    assert all(g.dtype == np.float32 and np.isfinite(g).all() for g in grids)
    # Frames are encoded independently: batch of three == three batches of one.
    single = [engine.run(engine.preprocess_rgb(rgb[i])) for i in range(3)]
    for layer, grid in enumerate(grids):
        np.testing.assert_allclose(grid, np.concatenate([s[layer] for s in single]), rtol=1e-4, atol=1e-4)


def test_profile_mismatch_is_refused_with_the_difference_named(exported):
    with pytest.raises(ManifestMismatch, match="image_size expected 224, manifest has 64"):
        load_engine(exported, expect={"image_size": 224})
    with pytest.raises(ManifestMismatch, match=r"layers expected \[3, 7, 11\], manifest has \[2, 3, 5\]"):
        load_engine(exported, expect={"modality": "2d", "layers": [3, 7, 11]})
    with pytest.raises(ManifestMismatch, match="modality expected '3d', manifest has '2d'"):
        load_engine(exported, expect={"modality": "3d"})


def test_missing_onnx_file_is_named_with_the_fix(copy_of):
    (copy_of.parent / "efficientnet-lite0.onnx").unlink()
    with pytest.raises(FileNotFoundError) as e:
        load_engine(copy_of)
    assert "efficientnet-lite0.onnx" in str(e.value) and "musc-edge export" in str(e.value)


def test_replaced_onnx_file_is_refused_by_digest(copy_of):
    onnx = copy_of.parent / "efficientnet-lite0.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(ManifestMismatch, match="efficientnet-lite0.onnx does not match its manifest: sha256"):
        load_engine(copy_of)


def test_bad_inputs_are_value_errors(exported):
    engine = load_engine(exported)
    with pytest.raises(ValueError, match=r"must have shape \(1, 3, 64, 64\)"):
        engine.run(np.zeros((1, 3, 32, 32), np.float32))
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        engine.run(x)
    with pytest.raises(ValueError, match="takes 1 input"):
        engine.run(x, x)


def _add_engine_entry(manifest_path: Path, **target) -> None:
    """Give a manifest a native-engine entry (a real file with its digest) built for ``target``."""
    blob = manifest_path.parent / "efficientnet-lite0.engine"
    blob.write_bytes(b"serialized engine of another machine")
    doc = json.loads(manifest_path.read_text())
    doc["files"]["engine"] = {"path": blob.name, "sha256": sha256_file(blob), "precision": "fp16",
                              "max_batch": 8, **target}
    manifest_path.write_text(json.dumps(doc))


def test_engine_for_another_target_falls_back_to_onnx_when_allowed(copy_of):
    _add_engine_entry(copy_of, tensorrt_version="10.3.0", gpu_name="Orin (nvgpu)", compute_capability="8.7")
    engine = load_engine(copy_of)
    assert engine.provider == "CPUExecutionProvider"
    assert engine.fallback_reason  # why the native engine was not used
    assert engine.run(np.zeros((1, 3, SIZE, SIZE), np.float32))[0].shape == (1, 8, 8, 40)
    with pytest.raises((ManifestMismatch, EngineUnavailable)):
        load_engine(copy_of, allow_onnx_fallback=False)
    # Asking for ONNX Runtime only never looks at the engine.
    assert load_engine(copy_of, providers=["CPUExecutionProvider"]).fallback_reason is None


def test_engine_file_digest_is_checked_before_any_fallback(copy_of):
    _add_engine_entry(copy_of, tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7")
    (copy_of.parent / "efficientnet-lite0.engine").write_bytes(b"tampered")
    with pytest.raises(ManifestMismatch, match="efficientnet-lite0.engine does not match its manifest"):
        load_engine(copy_of)


def test_engine_target_check_names_every_difference():
    entry = EngineFile("m.engine", "c" * 64, "fp16", "10.3.0", "Orin (nvgpu)", "8.7", 8)
    check_engine_target(entry, {"tensorrt_version": "10.3.0", "gpu_name": "Orin (nvgpu)", "compute_capability": "8.7"})
    with pytest.raises(ManifestMismatch) as e:
        check_engine_target(entry, {"tensorrt_version": "10.7.0", "gpu_name": "NVIDIA GeForce RTX 4090",
                                    "compute_capability": "8.9"})
    msg = str(e.value)
    assert "tensorrt_version '10.3.0' (this machine: '10.7.0')" in msg
    assert "gpu_name 'Orin (nvgpu)'" in msg and "compute_capability '8.7' (this machine: '8.9')" in msg


def test_unavailable_provider_request_is_explained(exported):
    with pytest.raises(ValueError, match="none of the execution providers"):
        load_engine(exported, providers=["NoSuchExecutionProvider"])


STATION = textwrap.dedent("""
    import sys
    import numpy as np
    from edge_runtime.engines import load_engine
    engine = load_engine(sys.argv[1], expect={"modality": "2d"}, threads=1)
    rgb = np.full((48, 48, 3), 128, np.uint8)
    grids = engine.run(engine.preprocess_rgb(rgb))
    assert "torch" not in sys.modules, "the station imported torch"
    print(engine.provider, [g.shape for g in grids])
""")


def test_station_process_never_imports_torch(exported):
    done = subprocess.run([sys.executable, "-c", STATION, str(exported)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "CPUExecutionProvider" in done.stdout


def test_default_encoder_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSC_EDGE_MODELS", str(tmp_path))
    assert default_encoder_dir() == tmp_path
    monkeypatch.delenv("MUSC_EDGE_MODELS")
    assert default_encoder_dir() == Path.home() / ".cache" / "musc-edge" / "models"


def test_default_encoder_exported_on_first_use_then_reused(tmp_path):
    manifest_path = ensure_default_encoders(tmp_path)
    m = Manifest.read(manifest_path)
    assert (m.name, m.image_size, m.layers, m.grid) == ("efficientnet-lite0", 224, [2, 3, 5], [28, 28])
    stamp = os.stat(manifest_path).st_mtime_ns
    assert ensure_default_encoders(tmp_path) == manifest_path
    assert os.stat(manifest_path).st_mtime_ns == stamp  # not exported again
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".export")]


def test_default_encoder_without_torch_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as in a station install without the export extra
    with pytest.raises(RuntimeError) as e:
        ensure_default_encoders(tmp_path)
    assert "pip install -e '.[export]'" in str(e.value)
    assert "musc-edge export --encoder efficientnet-lite0" in str(e.value)
