"""Similarity-weighted neighbourhood aggregation (SNAMD), 2D grids and 3D centres.

Each feature is replaced by a similarity-weighted mean of its neighbours at
several degrees r (r x r cells in 2D, r nearest centres in 3D), with weights
exp(-||f(neighbour) - f(centre)||). Larger degrees see larger defects; the
weights keep a defect's features from being washed out by normal surroundings.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_runtime.scoring._checks import as_float_array

CURVATURE_THRESHOLD = np.float32(0.01)


def _check_degrees(r_list: Sequence[int]) -> tuple[int, ...]:
    rs = tuple(int(r) for r in r_list)
    if not rs or any(r < 1 or r % 2 == 0 for r in rs):
        raise ValueError(f"r_list must hold odd degrees >= 1, got {tuple(r_list)}")
    return rs


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Unit-L2 rows along ``axis``; float32 result, zero vectors stay zero.

    x: any shape, float. Returns a new float32 array of the same shape.
    """
    a = np.asarray(x, dtype=np.float32)
    norm = np.sqrt(np.sum(a * a, axis=axis, keepdims=True))
    return a / np.maximum(norm, eps)


def aggregate_2d(grids: Sequence[np.ndarray], r_list: Sequence[int] = (1, 3, 5)) -> np.ndarray:
    """Aggregate per-layer patch grids over square neighbourhoods.

    Parameters
    ----------
    grids : list over layers of (B, H, W, C_l) float16/float32 arrays. Layers may
        differ in C_l; they are zero-padded to C = max C_l, which changes no
        distance and no norm.
    r_list : odd degrees; the window of degree r is the centred r x r sub-window
        of the r_max x r_max window. Cells outside the grid are zeros that count
        in the weight sum (weight exp(-||f(centre)||)) and add nothing to the sum.

    Returns
    -------
    (B, H*W, n_layers, C) float32, row-major cells, not normalized.
    """
    rs = _check_degrees(r_list)
    if len(grids) == 0:
        raise ValueError("grids is empty: need at least one layer")
    layers = [as_float_array(g, f"grids[{i}]", 4) for i, g in enumerate(grids)]
    b, h, w = layers[0].shape[:3]
    for i, g in enumerate(layers):
        if g.shape[:3] != (b, h, w):
            raise ValueError(f"grids[{i}] has shape {g.shape}, expected (B, H, W) = {(b, h, w)} like grids[0]")
    c = max(g.shape[3] for g in layers)
    out = np.zeros((b, h * w, len(layers), c), dtype=np.float32)
    for li, g in enumerate(layers):
        out[:, :, li, : g.shape[3]] = _aggregate_grid(g.astype(np.float32), rs).reshape(b, h * w, -1)
    return out


def _aggregate_grid(f: np.ndarray, rs: tuple[int, ...]) -> np.ndarray:
    """One layer: f (B, H, W, C) float32 -> (B, H, W, C) float32."""
    b, h, w, c = f.shape
    half = max(rs) // 2
    padded = np.zeros((b, h + 2 * half, w + 2 * half, c), dtype=np.float32)
    padded[:, half : half + h, half : half + w] = f
    num = {r: np.zeros_like(f) for r in rs}
    den = {r: np.zeros((b, h, w, 1), dtype=np.float32) for r in rs}
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            nb = padded[:, half + dy : half + dy + h, half + dx : half + dx + w]
            diff = nb - f
            wgt = np.exp(-np.sqrt(np.einsum("bhwc,bhwc->bhw", diff, diff)))[..., None]
            for r in rs:
                if max(abs(dy), abs(dx)) <= r // 2:
                    num[r] += wgt * nb
                    den[r] += wgt
    return np.mean([num[r] / den[r] for r in rs], axis=0, dtype=np.float32)


def aggregate_3d(
    features: Sequence[np.ndarray],
    centres: np.ndarray,
    curvatures: np.ndarray,
    r_list: Sequence[int] = (1, 3, 5),
    pooling: str = "channel",
) -> np.ndarray:
    """Aggregate per-layer group-centre features over nearest centres.

    Parameters
    ----------
    features : list over layers of (G, C) float arrays, L2-normalized per point.
    centres : (G, 3) float, centre coordinates.
    curvatures : (G,) float; where curvature >= 0.01 (compared in float32) the
        centre keeps its own feature: sharp geometry keeps its detail.
    r_list : degrees; the neighbours of degree r are the r nearest centres
        (itself first; ties by lower index).
    pooling : "channel" (mean of each channel over degrees) or "reference"
        (the official code's mean over adjacent entries of the degree-major
        concatenation, kept for conformance).

    Returns
    -------
    (G, n_layers, C) float32.
    """
    rs = tuple(int(r) for r in r_list)
    if not rs or any(r < 1 for r in rs):
        raise ValueError(f"r_list must hold degrees >= 1, got {tuple(r_list)}")
    if pooling not in ("channel", "reference"):
        raise ValueError(f"pooling must be 'channel' or 'reference', got {pooling!r}")
    if len(features) == 0:
        raise ValueError("features is empty: need at least one layer")
    xyz = as_float_array(centres, "centres", 2)
    if xyz.shape[1] != 3:
        raise ValueError(f"centres must have shape (G, 3), got {xyz.shape}")
    g = xyz.shape[0]
    curv = as_float_array(curvatures, "curvatures", 1).astype(np.float32)
    if curv.shape[0] != g:
        raise ValueError(f"curvatures has {curv.shape[0]} entries for {g} centres")
    layers = [as_float_array(f, f"features[{i}]", 2).astype(np.float32) for i, f in enumerate(features)]
    for i, f in enumerate(layers):
        if f.shape[0] != g:
            raise ValueError(f"features[{i}] has {f.shape[0]} rows for {g} centres")
    if max(rs) > g:
        raise ValueError(f"degree {max(rs)} needs at least that many centres, got {g}")
    c = max(f.shape[1] for f in layers)
    out = np.zeros((g, len(layers), c), dtype=np.float32)
    if max(rs) == 1:  # degree 1 is the centre itself: no neighbours to find
        for li, f in enumerate(layers):
            out[:, li, : f.shape[1]] = f
        return out
    neighbours = _nearest_centres(xyz.astype(np.float32), max(rs))
    flat = curv < CURVATURE_THRESHOLD
    for li, f in enumerate(layers):
        nb = f[neighbours]  # (G, r_max, C)
        wgt = np.exp(-np.linalg.norm(nb - f[:, None, :], axis=-1))[..., None]
        per_r = [np.sum(wgt[:, :r] * nb[:, :r], axis=1) / np.sum(wgt[:, :r], axis=1) for r in rs]
        if pooling == "channel":
            pooled = np.mean(per_r, axis=0)
        else:
            pooled = np.concatenate(per_r, axis=1).reshape(g, f.shape[1], len(rs)).mean(axis=2)
        out[:, li, : f.shape[1]] = np.where(flat[:, None], pooled, f)
    return out


def _nearest_centres(xyz: np.ndarray, k: int) -> np.ndarray:
    """(G, 3) -> (G, k) int64 indices of the k nearest centres, self first, ties by index."""
    sq = np.sum(xyz * xyz, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (xyz @ xyz.T)
    np.fill_diagonal(d2, -np.inf)
    return np.argsort(d2, axis=1, kind="stable")[:, :k]
