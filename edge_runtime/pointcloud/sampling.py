"""Farthest point sampling of group centres and exact k-nearest neighbours."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ._validation import check_points, check_positive_int

# Queries per block when exact distances are recomputed: bounds memory to
# about _QUERY_CHUNK * (k + 1) * 3 float64.
_QUERY_CHUNK = 2048


def farthest_point_sampling(points, n: int, start: int = 0) -> np.ndarray:
    """Deterministic farthest point sampling.

    Starts at index `start`; each next pick is the point with the largest
    running minimum squared distance to the picks so far, the lowest index on
    ties. Squared distances are float32 (dx*dx + dy*dy + dz*dz), as
    pointnet2's furthest_point_sample computes them, which MuSc uses.
    O(n P) time, O(P) memory.

    Parameters
    ----------
    points : (P, 3) float array.
    n : number of picks, 1 <= n <= P.
    start : index of the first pick.

    Returns
    -------
    (n,) int64 indices into points, all distinct while the points are.
    """
    pts = check_points(points).astype(np.float32)
    count = pts.shape[0]
    n = check_positive_int(n, "n")
    if n > count:
        raise ValueError(f"cannot sample n = {n} centres from {count} points")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < count:
        raise ValueError(f"start must be an index in [0, {count}), got {start!r}")
    x, y, z = (np.ascontiguousarray(pts[:, i]) for i in range(3))
    picks = np.empty(n, dtype=np.int64)
    picks[0] = start
    nearest = np.full(count, np.inf, dtype=np.float32)
    dx, dy, dz = (np.empty(count, dtype=np.float32) for _ in range(3))
    for i in range(1, n):
        px, py, pz = pts[picks[i - 1]]
        np.subtract(x, px, out=dx)
        np.subtract(y, py, out=dy)
        np.subtract(z, pz, out=dz)
        dx *= dx
        dy *= dy
        dz *= dz
        dx += dy
        dx += dz
        np.minimum(nearest, dx, out=nearest)
        picks[i] = np.argmax(nearest)
    return picks


def _squared_distances(query: np.ndarray, points: np.ndarray, idx: np.ndarray) -> np.ndarray:
    diff = points[idx] - query[:, None, :]
    return np.einsum("qkc,qkc->qk", diff, diff)


def knn(query, points, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours, sorted by distance, ties by lower index.

    A query point that is also in `points` comes first (distance 0), unless
    an identical point with a lower index precedes it. A KD-tree proposes
    k + 1 candidates; distances are recomputed exactly in float64; rows where
    the (k+1)-th candidate ties the k-th are resolved over every point within
    the k-th distance.

    Parameters
    ----------
    query : (Q, 3) float array.
    points : (P, 3) float array.
    k : neighbours per query, 1 <= k <= P.

    Returns
    -------
    idx : (Q, k) int64 indices into points.
    dist : (Q, k) float32 Euclidean distances.
    """
    q = check_points(query, "query").astype(np.float64)
    pts = check_points(points).astype(np.float64)
    k = check_positive_int(k, "k")
    if k > pts.shape[0]:
        raise ValueError(f"k = {k} exceeds the number of points {pts.shape[0]}")
    tree = cKDTree(pts)
    take = min(k + 1, pts.shape[0])
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    dist2 = np.empty((q.shape[0], k), dtype=np.float64)
    for lo in range(0, q.shape[0], _QUERY_CHUNK):
        block = q[lo : lo + _QUERY_CHUNK]
        _, cand = tree.query(block, k=take)
        cand = cand.reshape(block.shape[0], take).astype(np.int64)
        d2 = _squared_distances(block, pts, cand)
        order = np.lexsort((cand, d2), axis=-1)
        cand = np.take_along_axis(cand, order, axis=1)
        d2 = np.take_along_axis(d2, order, axis=1)
        if take > k:
            # A near-tie across the k-th place may hide a lower index beyond the
            # candidates: take every point within the k-th distance instead.
            tied = np.flatnonzero(d2[:, k] <= d2[:, k - 1] * (1 + 1e-9))
            if tied.size:
                radius = np.sqrt(d2[tied, k - 1]) * (1 + 1e-6) + 1e-12
                balls = tree.query_ball_point(block[tied], radius)
                for row, ball in zip(tied, balls):
                    ball = np.asarray(ball, dtype=np.int64)
                    full = _squared_distances(block[row : row + 1], pts, ball[None])[0]
                    best = np.lexsort((ball, full))[:k]
                    cand[row, :k], d2[row, :k] = ball[best], full[best]
        idx[lo : lo + block.shape[0]] = cand[:, :k]
        dist2[lo : lo + block.shape[0]] = d2[:, :k]
    return idx, np.sqrt(dist2).astype(np.float32)
