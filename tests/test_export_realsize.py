"""Parity at the published default sizes: DINO ViT-B/8 at 224 px, Point-MAE with 1024 groups of 128 points.

Random weights in the official layouts (the real checkpoints are not shipped).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from edge_runtime.engines import encoder_spec, load_engine
from export.checkpoints import write_random_checkpoint
from export.exporter import ExportRequest, build_model, example_inputs, export_encoder


def export_and_compare(request: ExportRequest) -> tuple[float, object]:
    manifest_path = export_encoder(request)
    engine = load_engine(manifest_path, providers=["CPUExecutionProvider"])
    model, _ = build_model(request)
    inputs = example_inputs(dataclasses.replace(request, seed=request.seed + 1), 1)
    with torch.no_grad():
        reference = [t.numpy() for t in model(*inputs)]
    got = engine.run(*(t.numpy() for t in inputs))
    ratio = max(float(np.abs(g - r).max() / np.abs(r).max()) for g, r in zip(got, reference))
    return ratio, engine.manifest


@pytest.mark.slow
def test_dino_vitb8_at_224(tmp_path):
    weights = write_random_checkpoint(encoder_spec("dino-vitb8"), tmp_path / "dino_vitbase8_pretrain.pth")
    request = ExportRequest(encoder="dino-vitb8", out=tmp_path / "out", weights=weights, image_size=224,
                            layers=(3, 7, 11), check_batch=1)
    ratio, manifest = export_and_compare(request)
    assert ratio <= 1e-4
    assert manifest.grid == [28, 28] and manifest.channels == [768] * 3 and manifest.layers == [3, 7, 11]


@pytest.mark.slow
def test_point_mae_1024_groups_of_128(tmp_path):
    weights = write_random_checkpoint(encoder_spec("point-mae"), tmp_path / "pretrain.pth")
    request = ExportRequest(encoder="point-mae", out=tmp_path / "out", weights=weights, groups=1024,
                            group_size=128, check_batch=1)
    ratio, manifest = export_and_compare(request)
    assert ratio <= 1e-4
    assert manifest.input == {"groups": 1024, "group_size": 128} and manifest.channels == [384] * 3
