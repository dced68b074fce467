"""A part's anomaly maps and salient features from its patch/centre scores."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.settings import FUSED_SCORES
from edge_runtime.scoring import paint_3d, salient_features, upsample_2d


# Each 3D stream CAE pairs with 2D, and the key of the 2D scores that pairing enhances: "3n" (the
# normals picture on the patch grid, settings.normals_stream) has its own 2D partner, "2n".
PAIRS = (("3d", "2d"), ("3n", "2n"))
# The features each scored stream reads, and the modality it counts for in the fusion.
FEATURES_OF = {"2d": "2d", "3d": "3d", "2n": "2d", "3n": "3n"}
MODALITY_OF = {"2d": "2d", "2n": "2d", "3d": "3d", "3n": "3d"}


def part_maps(features: PartFeatures, scores: dict[str, np.ndarray], sigma: float) -> dict[str, np.ndarray]:
    """Per-stream (S, S) float32 maps: 2D, the normals stream and 3D on the patch grid, by
    corner-aligned upsampling of the patch grid; 3D centres by painting their scores onto the
    foreground pixels (+ blur)."""
    size = features.image_size
    maps = {m: upsample_2d(scores[m].reshape(features.grid), size) for m in ("2d", "2n", "3n") if m in scores}
    if "3d" in scores and features.on_grid_3d:
        maps["3d"] = upsample_2d(scores["3d"].reshape(features.grid), size)
    elif "3d" in scores:
        maps["3d"] = paint_3d(scores["3d"], features.idw_index, features.idw_weight, features.pixel_index,
                              (size, size), sigma)
    return maps


def salient_feature(features: PartFeatures, modality: str, scores: np.ndarray) -> np.ndarray:
    """The aggregated feature (second-to-last layer) at the part's top-scoring patch/centre of
    stream ``modality``; (C,) float32."""
    return salient_features(features.features(FEATURES_OF[modality])[None], np.asarray(scores)[None])[0]


def fusion_scale(fusion: str, floors: dict[str, Sequence[float]], peaks: dict[str, Sequence[float]]
                 ) -> dict[str, tuple[float, float]] | None:
    """Each modality's (floor, span) on the window's own scale, or None for a plain sum.

    fusion : "sum" (None) or "window". floors : modality -> each window
    member's median patch/centre score; peaks : modality -> each member's image
    score (map maximum). floor = median of floors, span = median of peaks -
    floor: a typical normal patch lands at 0 and a typical part's peak at 1, in
    both modalities, from nothing but the window's scores.
    """
    if fusion == "sum":
        return None
    if fusion != "window":
        raise ValueError(f"fusion must be 'sum' or 'window', got {fusion!r}")
    scale = {}
    for m, fl in floors.items():
        lo = float(np.median(fl))
        scale[m] = (lo, max(float(np.median(peaks[m])) - lo, 1e-6))
    return scale


def modality_maps(maps: dict[str, np.ndarray], scale: dict[str, tuple[float, float]] | None
                  ) -> dict[str, np.ndarray]:
    """{"2d", "3d"}: (S, S) float32, each modality's streams (MODALITY_OF) put on ``scale``
    (see fusion_scale; None: as they are) and averaged."""
    by = {}
    for m, v in maps.items():
        by.setdefault(MODALITY_OF[m], []).append(v if scale is None else (v - scale[m][0]) / scale[m][1])
    return {mod: np.mean(v, axis=0).astype(np.float32) for mod, v in by.items()}


def fuse(maps: dict[str, np.ndarray], scale: dict[str, tuple[float, float]] | None, score: str
         ) -> tuple[np.ndarray, float]:
    """A part's fused (S, S) float32 map and its fused image score (before RsCon).

    The fused map is the sum of the two ``modality_maps``: with both 3D streams,
    2D and 3D each the mean of their streams, so the map keeps one pair's scale.
    score : "map", the fused map's maximum (MuSc-V2), or "modality", the larger
    of the two modalities' peaks: a defect that one sensor alone sees is not
    diluted by the other's normal surface there, and a good part is not raised
    where the noise of both happens to coincide (docs/ABLATION.md, "Fused image score").
    """
    by = modality_maps(maps, scale)
    fused = np.sum(list(by.values()), axis=0, dtype=np.float32)
    if score == "map":
        return fused, float(fused.max())
    if score == "modality":
        return fused, float(max(v.max() for v in by.values()))
    raise ValueError(f"fused_score must be one of {FUSED_SCORES}, got {score!r}")
