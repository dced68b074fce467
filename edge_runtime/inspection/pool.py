"""Batch scoring of a pool of parts (the paper's protocol): every part against all others.

`pool_distances` once per pool and modality, then `score_distances` for any
combination of modalities and scoring settings (evaluation reuses the distances).

The pool plays the window: the fusion scale comes from the pool's own scores
exactly as a line's comes from its window (`fusion_scale`), never from labels
or a min-max over maps.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_runtime.inspection.maps import fuse_maps, fusion_scale, part_maps, salient_feature
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.settings import InspectionSettings
from edge_runtime.scoring import enhance, interval_mean, pairwise_min_distances, references_only, rescore
from edge_runtime.scoring.mutual import aligned_match


def pool_distances(parts: Sequence[PartFeatures], modality: str,
                   match_radius: int | None = None) -> list[np.ndarray]:
    """Per layer, (N, L, N - 1) float32 per-reference minimum distances of every part to the others.

    match_radius : aligned matching (fixtured parts) on the parts' patch grid, or None.
    """
    z = np.stack([p.features(modality) for p in parts])  # (N, L, n_layers, C)
    cells = (np.stack([p.point2patch for p in parts]) if modality == "3d"
             else np.broadcast_to(np.arange(z.shape[1]), z.shape[:2]))
    match = aligned_match(match_radius, parts[0].grid, cells)
    return [references_only(pairwise_min_distances(z[:, :, layer], match=match)) for layer in range(z.shape[2])]


def distance_scores(distances: dict[str, list[np.ndarray]], point2patch: np.ndarray | None, interval: float,
                    cae: bool) -> list[dict[str, np.ndarray]]:
    """Patch/centre scores of every part from its per-reference distances.

    distances : modality -> per layer (N, L_m, R) float. point2patch : (N, G)
    int (needed for CAE). Returns per part {modality: (L_m,) float32}, averaged
    over layers; CAE (2D+3D with ``cae``) pairs the layers of the two modalities.
    """
    mods = tuple(distances)
    n = distances[mods[0]][0].shape[0]
    if cae and mods == ("2d", "3d"):
        out = []
        for i in range(n):
            per_layer = [enhance(o2[i], o3[i], point2patch[i], interval)
                         for o2, o3 in zip(distances["2d"], distances["3d"])]
            out.append({"2d": np.mean([a for a, _ in per_layer], axis=0, dtype=np.float32),
                        "3d": np.mean([b for _, b in per_layer], axis=0, dtype=np.float32)})
        return out
    per_mod = {m: np.mean([interval_mean(o, interval) for o in distances[m]], axis=0, dtype=np.float32)
               for m in mods}
    return [{m: per_mod[m][i] for m in mods} for i in range(n)]


def score_distances(parts: Sequence[PartFeatures], distances: dict[str, list[np.ndarray]],
                    settings: InspectionSettings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Maps and image scores of a pool from its distances (see ``pool_distances``).

    Returns {key: (maps (N, S, S) float32, image scores (N,) float32)} for each
    modality and, with both, "fused". Image scores are re-scored (RsCon, in
    [0, 1]) where ``settings.rescores(key)``, else the map maximum.
    """
    mods = tuple(m for m in ("2d", "3d") if m in distances)
    if not mods:
        raise ValueError(f"distances must hold '2d' or '3d', got {tuple(distances)}")
    p2p = np.stack([p.point2patch for p in parts]) if "3d" in mods else None
    scores = distance_scores({m: distances[m] for m in mods}, p2p, settings.interval, settings.cae)
    maps = [part_maps(p, sc, settings.map_sigma) for p, sc in zip(parts, scores)]
    out = {m: np.stack([mp[m] for mp in maps]) for m in mods}
    salient = {m: np.stack([salient_feature(p, m, sc[m]) for p, sc in zip(parts, scores)]) for m in mods}
    if len(mods) == 2:
        scale = fusion_scale(settings.fusion, {m: [float(np.median(sc[m])) for sc in scores] for m in mods},
                             {m: out[m].reshape(len(parts), -1).max(axis=1) for m in mods})
        out["fused"] = np.stack([fuse_maps(mp, scale) for mp in maps])
        salient["fused"] = np.concatenate([salient[m] for m in mods], axis=1)
    result = {}
    for key, m in out.items():
        raw = m.reshape(len(parts), -1).max(axis=1).astype(np.float32)
        result[key] = (m.astype(np.float32), rescore(raw, salient[key], settings.k_list) if settings.rescores(key) else raw)
    return result
