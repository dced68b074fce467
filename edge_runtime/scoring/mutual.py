"""Mutual scoring (MSM): every sample is scored by the other unlabeled samples.

For a patch p of sample i and a reference sample j, the distance to j is the
distance to its closest patch: d[i, p, j] = min_q ||Z[i, p] - Z[j, q]||. A
normal patch has close matches in most references; a defect has few. The score
is the mean of the k smallest d[i, p, :] over the references (the "interval").

Distances come from matrix products with the squared norms folded into the
inner dimension ([a, |a|^2, 1] . [-2b, 1, |b|^2] = |a - b|^2), each followed by a
row and a column minimum: the block between i and j gives d[i, :, j] and
d[j, :, i] at once. The blocks are computed tile by tile (``tiles``), never whole.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.scoring._checks import INTERVAL, as_float_array, check_interval, interval_k
from edge_runtime.scoring.aligned import aligned_min_distances, check_radius
from edge_runtime.scoring.tiles import DEFAULT_BUDGET, augment, distances, squared_min_distances


def _check_features(z, name: str) -> np.ndarray:
    """(N, L, C) or (N, L, n_layers, C) -> (n_layers, N, L, C) view/copy."""
    a = as_float_array(z, name, (3, 4))
    return a[:, :, None, :].transpose(2, 0, 1, 3) if a.ndim == 3 else a.transpose(2, 0, 1, 3)


def min_distances(
    query: np.ndarray, refs: np.ndarray, budget: int = DEFAULT_BUDGET, augmented: bool = False,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-reference minimum distances in both directions, one layer.

    Parameters
    ----------
    query : (L, C) float, one sample's patch features.
    refs : (M, L2, C) float, M reference samples; or, with ``augmented``, the
        same already passed through ``augment(refs, "right")`` ((M, L2, C + 2) float32).
    budget : bytes of distance tile one worker holds at once.
    workers : threads sharing the tiles (default: this process's cores).

    Returns
    -------
    to_refs : (L, M) float32, to_refs[p, j] = min_q ||query[p] - refs[j, q]||.
    from_refs : (M, L2) float32, from_refs[j, q] = min_p ||refs[j, q] - query[p]||.
    """
    r = refs if augmented else augment(refs, "right")
    to_refs, from_refs = squared_min_distances(augment(query, "left"), r, budget=budget, workers=workers)
    return distances(to_refs, from_refs)


def pairwise_min_distances(z: np.ndarray, budget: int = DEFAULT_BUDGET, match=None) -> np.ndarray:
    """All per-reference minimum distances of a pool, one layer.

    z : (N, L, C) float. match : None (global matching) or (cells, grid, radius)
    for aligned matching (``aligned``): cells (N, L) int, each item's grid cell.
    Returns d (N, L, N) float32 with d[i, p, j] = min_q ||z[i, p] - z[j, q]||
    (q within radius of p when aligned) and d[i, :, i] = +inf (a sample is not its own reference).
    """
    n, l, _ = z.shape
    d = np.full((n, l, n), np.inf, dtype=np.float32)
    for i in range(n - 1):
        if match is None:
            to_refs, from_refs = min_distances(z[i], z[i + 1 :], budget)
        else:
            cells, grid, radius = match
            to_refs, from_refs = aligned_min_distances(z[i], cells[i], z[i + 1 :], cells[i + 1 :], grid, radius)
        d[i, :, i + 1 :] = to_refs
        d[i + 1 :, :, i] = from_refs
    return d


def aligned_match(match_radius: int | None, grid: tuple[int, int] | None, cells: np.ndarray):
    """The ``match`` of pairwise_min_distances: None for global matching, else (cells, grid, radius)."""
    if match_radius is None:
        return None
    if grid is None:
        raise ValueError("aligned matching (match_radius) needs the patch grid (h, w)")
    if cells.min() < 0 or cells.max() >= grid[0] * grid[1]:
        raise ValueError(f"cells outside the {grid[0]} x {grid[1]} grid")
    return cells, tuple(grid), check_radius(match_radius)


def references_only(d: np.ndarray) -> np.ndarray:
    """(N, L, N) with +inf self entries -> (N, L, N - 1): each sample's references in original order."""
    n = d.shape[0]
    keep = ~np.eye(n, dtype=bool)
    return d.transpose(0, 2, 1)[keep].reshape(n, n - 1, -1).transpose(0, 2, 1)


def interval_mean(o: np.ndarray, interval: float = INTERVAL) -> np.ndarray:
    """Mean of the k smallest per-reference distances, k = max(1, floor(interval * R)).

    o : (..., R) float. Returns (...) float32.
    """
    k = interval_k(o.shape[-1], interval)
    part = np.partition(o, k - 1, axis=-1)[..., :k] if k < o.shape[-1] else o
    return np.mean(part, axis=-1, dtype=np.float32)


def mutual_scores(z: np.ndarray, interval: float = INTERVAL, budget: int = DEFAULT_BUDGET,
                  match_radius: int | None = None, grid: tuple[int, int] | None = None,
                  cells: np.ndarray | None = None) -> np.ndarray:
    """Mutual scores of a pool of samples.

    Parameters
    ----------
    z : (N, L, C) or (N, L, n_layers, C) float16/float32, L2-normalized per
        patch and layer. N >= 2.
    interval : fraction of the N - 1 references whose smallest distances are averaged.
    budget : bytes of distance tile one worker holds at once.
    match_radius, grid : aligned matching (fixtured parts): patch p of the
        (h, w) grid meets only reference patches within match_radius cells.
    cells : (N, L) int, each item's grid cell when items are not the grid's
        patches in order (3D centres: point2patch).

    Returns
    -------
    (N, L) float32: per-layer scores averaged over layers.
    """
    layers = _check_features(z, "Z")
    check_interval(interval)
    n = layers.shape[1]
    if n < 2:
        raise ValueError(f"mutual scoring needs at least 2 samples, got {n}")
    if cells is None:
        cells = np.broadcast_to(np.arange(layers.shape[2]), layers.shape[1:3])
    match = aligned_match(match_radius, grid, np.asarray(cells))
    total = np.zeros(layers.shape[1:3], dtype=np.float32)
    for layer in layers:
        total += interval_mean(references_only(pairwise_min_distances(layer, budget, match)), interval)
    return total / np.float32(layers.shape[0])
