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

from edge_runtime.inspection.maps import PAIRS, fuse, fusion_scale, part_maps, salient_feature
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
    cells = np.stack([p.cells(modality) for p in parts])
    match = aligned_match(match_radius, parts[0].grid, cells)
    return [references_only(pairwise_min_distances(z[:, :, layer], match=match)) for layer in range(z.shape[2])]


def part_scores(rows: dict[str, Sequence[np.ndarray]], part: PartFeatures, interval: float,
                cae: bool) -> dict[str, np.ndarray]:
    """One part's patch/centre scores per stream from its per-reference distances.

    rows : modality ("2d", "3d", "3n") -> per layer (L_m, R) float.
    part : the part they belong to (CAE reads each 3D item's patch, ``PartFeatures.cells``).
    Returns {stream: (L_m,) float32}, averaged over layers. With 2D, each 3D
    stream in ``rows`` comes with its 2D partner (PAIRS): cross-modal enhanced
    with it when ``cae``, else the plain 2D scores (so "2n" equals "2d").
    """
    def mean(layers):
        return np.mean(layers, axis=0, dtype=np.float32)

    if not cae or "2d" not in rows or len(rows) == 1:
        plain = {m: mean([interval_mean(o, interval) for o in rows[m]]) for m in rows}
        return plain | ({"2n": plain["2d"]} if "2d" in rows and "3n" in rows else {})
    out = {}
    for m3, m2 in PAIRS:
        if m3 in rows:
            per_layer = [enhance(o2, o3, part.cells(m3), interval) for o2, o3 in zip(rows["2d"], rows[m3])]
            out[m2], out[m3] = mean([a for a, _ in per_layer]), mean([b for _, b in per_layer])
    return out


def distance_scores(distances: dict[str, list[np.ndarray]], parts: Sequence[PartFeatures], interval: float,
                    cae: bool) -> list[dict[str, np.ndarray]]:
    """Every part's ``part_scores``. distances : modality -> per layer (N, L_m, R) float, N = len(parts)."""
    return [part_scores({m: [o[i] for o in layers] for m, layers in distances.items()}, part, interval, cae)
            for i, part in enumerate(parts)]


def score_distances(parts: Sequence[PartFeatures], distances: dict[str, list[np.ndarray]],
                    settings: InspectionSettings) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Maps and image scores of a pool from its distances (see ``pool_distances``).

    Returns {key: (maps (N, S, S) float32, image scores (N,) float32)} for each
    stream (``part_scores``) and, with more than one, "fused". Image scores are the map maximum
    (fused: ``maps.fuse``'s score), re-scored (RsCon, in [0, 1]) where ``settings.rescores(key)``.
    """
    mods = tuple(m for m in ("2d", "3d", "3n") if m in distances)
    if not {"2d", "3d"} & set(mods):
        raise ValueError(f"distances must hold '2d' or '3d', got {tuple(distances)}")
    scores = distance_scores({m: distances[m] for m in mods}, parts, settings.interval, settings.cae)
    streams = tuple(scores[0])
    maps = [part_maps(p, sc, settings.map_sigma) for p, sc in zip(parts, scores)]
    out = {m: np.stack([mp[m] for mp in maps]) for m in streams}
    salient = {m: np.stack([salient_feature(p, m, sc[m]) for p, sc in zip(parts, scores)]) for m in streams}
    peaks = {m: out[m].reshape(len(parts), -1).max(axis=1) for m in streams}
    if len(streams) > 1:
        scale = fusion_scale(settings.fusion, {m: [float(np.median(sc[m])) for sc in scores] for m in streams},
                             peaks)
        fused = [fuse(mp, scale, settings.fused_score) for mp in maps]
        out["fused"] = np.stack([f for f, _ in fused])
        peaks["fused"] = np.array([v for _, v in fused])
        salient["fused"] = np.concatenate([salient[m] for m in streams], axis=1)
    result = {}
    for key, m in out.items():
        raw = peaks[key].astype(np.float32)
        result[key] = (m.astype(np.float32), rescore(raw, salient[key], settings.k_list) if settings.rescores(key) else raw)
    return result
