"""A part's anomaly maps and salient features from its patch/centre scores."""
from __future__ import annotations

import numpy as np

from edge_runtime.inspection.part import PartFeatures
from edge_runtime.scoring import paint_3d, upsample_2d


def part_maps(features: PartFeatures, scores: dict[str, np.ndarray], sigma: float = 4.0) -> dict[str, np.ndarray]:
    """Per-modality (S, S) float32 maps: 2D by corner-aligned upsampling of the
    patch grid, 3D by painting centre scores onto the foreground pixels (+ blur)."""
    size = features.image_size
    maps = {}
    if "2d" in scores:
        maps["2d"] = upsample_2d(scores["2d"].reshape(features.grid), size)
    if "3d" in scores:
        maps["3d"] = paint_3d(scores["3d"], features.idw_index, features.idw_weight, features.pixel_index,
                              (size, size), sigma)
    return maps


def salient_feature(features: PartFeatures, modality: str, scores: np.ndarray) -> np.ndarray:
    """The aggregated feature (second-to-last layer) at the part's top-scoring patch/centre; (C,) float32."""
    z = features.features(modality)
    layer = -2 if z.shape[1] > 1 else -1
    return z[int(np.argmax(scores)), layer].astype(np.float32)
