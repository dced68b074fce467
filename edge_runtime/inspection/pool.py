"""Batch scoring of a pool of parts (the paper's protocol): every part against all others."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_runtime.inspection.maps import part_maps, salient_feature
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.scoring import mutual_scores, mutual_scores_multimodal, rescore


def score_pool(
    parts: Sequence[PartFeatures],
    modalities: Sequence[str],
    interval: float = 0.3,
    k_list: Sequence[int] = (1, 7),
    sigma: float = 4.0,
    match_radius: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score a pool of parts on the given modalities.

    parts : N PartFeatures with every modality in ``modalities``.
    match_radius : aligned matching (fixtured parts) on the parts' patch grid, or None.
    Returns maps (N, S, S) float32 (sum over modalities), image scores before
    re-scoring (N,) float32, and re-scored image scores (N,) float32 in [0, 1].
    """
    mods = tuple(m for m in ("2d", "3d") if m in modalities)
    if not mods:
        raise ValueError(f"modalities must include '2d' or '3d', got {tuple(modalities)}")
    stacked = {m: np.stack([p.features(m) for p in parts]) for m in mods}
    match = {"match_radius": match_radius, "grid": parts[0].grid}
    if mods == ("2d", "3d"):
        s2, s3 = mutual_scores_multimodal(stacked["2d"], stacked["3d"],
                                          np.stack([p.point2patch for p in parts]), interval, **match)
        per_part = [{"2d": s2[i], "3d": s3[i]} for i in range(len(parts))]
    else:
        cells = np.stack([p.point2patch for p in parts]) if mods == ("3d",) else None
        s = mutual_scores(stacked[mods[0]], interval, cells=cells, **match)
        per_part = [{mods[0]: s[i]} for i in range(len(parts))]
    maps = np.stack([np.sum(list(part_maps(p, sc, sigma).values()), axis=0) for p, sc in zip(parts, per_part)])
    raw = maps.reshape(len(parts), -1).max(axis=1).astype(np.float32)
    salient = np.stack([np.concatenate([salient_feature(p, m, sc[m]) for m in mods]) for p, sc in zip(parts, per_part)])
    return maps.astype(np.float32), raw, rescore(raw, salient, k_list)
