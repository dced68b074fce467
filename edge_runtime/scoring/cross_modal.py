"""Cross-modal anomaly enhancement (CAE) for 2D+3D mutual scoring.

A defect that shows in one modality should raise the score of the same place in
the other. Each 2D patch borrows the per-reference distances of the 3D centres
inside it, each centre those of its patch; rank replacement puts the borrowed
values on the other modality's scale, and a confidence from how much the
borrowed rows vary tempers the enhancement.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.scoring._checks import INTERVAL, check_interval
from edge_runtime.scoring._order import stable_order
from edge_runtime.scoring.mutual import (
    DEFAULT_BUDGET,
    _check_features,
    aligned_match,
    interval_mean,
    pairwise_min_distances,
    references_only,
)


def _placed(sorted_src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """rank_replace with src given as its sorted values: (n,) float32 sorted_src, (n,) tgt -> (n,) float32."""
    out = np.empty(tgt.shape, dtype=np.float32)
    tgt = np.asarray(tgt)
    order = stable_order(tgt) if tgt.dtype == np.float32 else np.argsort(tgt, kind="stable")
    out[order] = sorted_src
    return out


def rank_replace(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """The element of ``tgt`` with the t-th smallest value receives the t-th smallest value of ``src``.

    src, tgt : 1-D arrays of equal length. Ties are ranked by position (stable).
    Returns a new float32 array shaped like ``tgt``.
    """
    if src.shape != tgt.shape or src.ndim != 1:
        raise ValueError(f"rank_replace needs two 1-D arrays of equal length, got {src.shape} and {tgt.shape}")
    return _placed(np.sort(np.asarray(src, dtype=np.float32)), tgt)


def patch_members(point2patch: np.ndarray, n_patches: int) -> np.ndarray:
    """(G,) patch index per centre -> (P, G) float32 averaging matrix (rows sum to 1, or 0 when empty)."""
    counts = np.bincount(point2patch, minlength=n_patches).astype(np.float32)
    m = np.zeros((n_patches, point2patch.shape[0]), dtype=np.float32)
    m[point2patch, np.arange(point2patch.shape[0])] = np.float32(1.0) / counts[point2patch]
    return m


def enhance(o2: np.ndarray, o3: np.ndarray, point2patch: np.ndarray, interval: float = INTERVAL) -> tuple[np.ndarray, np.ndarray]:
    """CAE scores of one sample from its per-reference minimum distances.

    Parameters
    ----------
    o2 : (P, R) float, per-reference minimum distances of the 2D patches.
    o3 : (G, R) float, the same for the 3D centres (same reference order).
    point2patch : (G,) int, the 2D patch holding each centre.
    interval : fraction of the R references averaged.

    Returns
    -------
    s2 (P,) float32, s3 (G,) float32.
    """
    o2 = np.asarray(o2, dtype=np.float32)
    o3 = np.asarray(o3, dtype=np.float32)
    p, r = o2.shape
    members = patch_members(point2patch, p)
    nonempty = np.bincount(point2patch, minlength=p) > 0
    x2 = members @ o3  # mean o3 row of the centres in each patch; zero row when none
    x3 = o2[point2patch]
    std2 = np.std(o2, axis=1, ddof=1)
    # x3's rows are o2's rows, so are their deviations; each src's sorted values serve both its replacements
    conf2 = 1.0 - rank_replace(std2, np.std(x2, axis=1, ddof=1))
    conf3 = 1.0 - rank_replace(np.std(o3, axis=1, ddof=1), std2[point2patch])
    sorted2, sorted3 = np.sort(o2, axis=None), np.sort(o3, axis=None)
    x3 = _placed(sorted3, x3.ravel()).reshape(x3.shape)
    x2[nonempty] = rank_replace(o2[nonempty].ravel(), x2[nonempty].ravel()).reshape(-1, r)
    e2 = _placed(sorted2, (np.maximum(o2, x2) * conf2[:, None]).ravel()).reshape(o2.shape)
    e3 = _placed(sorted3, (np.maximum(o3, x3) * conf3[:, None]).ravel()).reshape(o3.shape)
    return interval_mean((o2 + e2) / 2, interval), interval_mean((o3 + e3) / 2, interval)


def mutual_scores_multimodal(
    z2: np.ndarray,
    z3: np.ndarray,
    point2patch: np.ndarray,
    interval: float = INTERVAL,
    budget: int = DEFAULT_BUDGET,
    match_radius: int | None = None,
    grid: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """2D+3D mutual scores with cross-modal enhancement.

    Parameters
    ----------
    z2 : (N, P, C2) or (N, P, n_layers, C2) float, L2-normalized 2D patch features.
    z3 : (N, G, C3) or (N, G, n_layers, C3) float, L2-normalized 3D centre features.
        Both must have the same number of layers.
    point2patch : (N, G) int, 2D patch index of centre g of sample i
        (pixel row // patch_h * W + col // patch_w).
    interval : fraction of the N - 1 references averaged.
    match_radius, grid : aligned matching (fixtured parts) on the (h, w) patch
        grid: 2D patches by their cell, 3D centres by point2patch.

    Returns
    -------
    s2 (N, P) float32, s3 (N, G) float32: per-layer scores averaged over layers.
    """
    l2 = _check_features(z2, "Z2")
    l3 = _check_features(z3, "Z3")
    check_interval(interval)
    n, p = l2.shape[1:3]
    if l3.shape[1] != n:
        raise ValueError(f"Z2 has {n} samples but Z3 has {l3.shape[1]}")
    if l2.shape[0] != l3.shape[0]:
        raise ValueError(f"Z2 has {l2.shape[0]} layers but Z3 has {l3.shape[0]}")
    if n < 3:
        raise ValueError(f"cross-modal scoring needs at least 3 samples (2 references), got {n}")
    p2p = np.asarray(point2patch)
    if p2p.shape != (n, l3.shape[2]):
        raise ValueError(f"point2patch must have shape {(n, l3.shape[2])}, got {p2p.shape}")
    if p2p.min() < 0 or p2p.max() >= p:
        raise ValueError(f"point2patch holds patch indices outside [0, {p})")
    match2 = aligned_match(match_radius, grid, np.broadcast_to(np.arange(p), (n, p)))
    match3 = aligned_match(match_radius, grid, p2p)
    s2 = np.zeros((n, p), dtype=np.float32)
    s3 = np.zeros((n, l3.shape[2]), dtype=np.float32)
    for a, b in zip(l2, l3):
        o2 = references_only(pairwise_min_distances(a, budget, match2))
        o3 = references_only(pairwise_min_distances(b, budget, match3))
        for i in range(n):
            e2, e3 = enhance(o2[i], o3[i], p2p[i], interval)
            s2[i] += e2
            s3[i] += e3
    return s2 / np.float32(l2.shape[0]), s3 / np.float32(l2.shape[0])
