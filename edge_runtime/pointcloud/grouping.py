"""Local groups of a cloud: curvature of each centre and Iterative Point Grouping
(ALGORITHM.md section 3), plus the whole chain FPS -> KNN -> IPG (group_cloud).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validation import check_index, check_points, check_positive_int
from .sampling import farthest_point_sampling, knn

# Curved-centre distance blocks hold at most about this many entries.
CURVATURE_THRESHOLD = 0.01  # MuSc-V2's: curvature above this marks a centre as on an edge
_BLOCK_ENTRIES = 1 << 21


def _check_group_inputs(xyz, centre_idx, knn_idx, group_size):
    pts = check_points(xyz, "xyz").astype(np.float32)
    count = pts.shape[0]
    centres = check_index(centre_idx, count, "centre_idx")
    if centres.size == 0:
        raise ValueError("centre_idx is empty")
    table = check_index(knn_idx, count, "knn_idx", ndim=2)
    if table.shape[0] != count:
        raise ValueError(f"knn_idx must have one row per point ({count}), got {table.shape[0]} rows")
    group_size = check_positive_int(group_size, "group_size", minimum=3)
    if table.shape[1] < group_size:
        raise ValueError(f"knn_idx has {table.shape[1]} neighbours per point, fewer than group_size = {group_size}")
    rows = table[centres]
    ordered = np.sort(rows, axis=1)
    if (ordered[:, 1:] == ordered[:, :-1]).any():
        raise ValueError("a knn_idx row of a centre repeats a point index")
    return pts, centres, rows, group_size


def _curvature_of_rows(pts: np.ndarray, centres: np.ndarray, rows: np.ndarray, group_size: int) -> np.ndarray:
    offsets = pts[rows[:, 1:group_size]] - pts[centres][:, None, :]
    reach = np.sqrt((offsets**2).sum(axis=-1)).max(axis=1)
    # A centre whose neighbours all coincide with it has no shape: curvature 0.
    offsets = offsets / np.where(reach > 0, reach, 1)[:, None, None]
    centred = (offsets - offsets.mean(axis=1, keepdims=True)).astype(np.float64)
    covariance = np.einsum("gnc,gnd->gcd", centred, centred) / (group_size - 2)
    eigen = np.linalg.eigvalsh(covariance)
    total = eigen.sum(axis=1)
    ratio = np.where(total > 0, eigen[:, 0] / np.where(total > 0, total, 1), 0.0)
    return ratio.astype(np.float32)


def curvature(xyz, centre_idx, knn_idx, group_size: int) -> np.ndarray:
    """Surface variation of each centre's neighbourhood (MuSc-V2's IPG curvature).

    The centre's first group_size KNN entries without the first (itself), as
    offsets from the centre, scaled by the largest offset norm, mean-centred;
    covariance X^T X / (group_size - 2); curvature = smallest eigenvalue / sum
    of eigenvalues, in [0, 1/3]. 0 on a plane.

    Parameters
    ----------
    xyz : (P, 3) float array.
    centre_idx : (G,) int indices into xyz.
    knn_idx : (P, K) int, K >= group_size, row p = neighbours of p, itself first.
        Only the rows of the centres are read.
    group_size : >= 3.

    Returns
    -------
    (G,) float32.
    """
    pts, centres, rows, group_size = _check_group_inputs(xyz, centre_idx, knn_idx, group_size)
    return _curvature_of_rows(pts, centres, rows, group_size)


def _grow(pts: np.ndarray, rows: np.ndarray, start: int, group_size: int, k_iter: int) -> np.ndarray:
    """IPG growth of curved groups; rows (C, K) are the centres' KNN entries."""
    n_centres, width = rows.shape
    # Candidates are ranked by point index, as the reference's torch.unique does;
    # with a flat position tie-break this reproduces its top-k order.
    order = np.argsort(rows, axis=1, kind="stable")
    support = np.take_along_axis(rows, order, axis=1)
    member = np.zeros((n_centres, width), dtype=bool)
    np.put_along_axis(member, np.argsort(order, axis=1)[:, :start], True, axis=1)
    group = rows[:, :start]
    while group.shape[1] < group_size:
        size = group.shape[1]
        take = min(k_iter, group_size - size)
        picked = np.empty((n_centres, take), dtype=np.int64)
        block = max(1, _BLOCK_ENTRIES // (size * width))
        position = np.arange(size * width, dtype=np.int64)
        for lo in range(0, n_centres, block):
            sl = slice(lo, lo + block)
            near = pts[group[sl]]
            cand = pts[support[sl]]
            d2 = np.zeros((near.shape[0], size, width), dtype=np.float32)
            for c in range(3):
                diff = near[:, :, None, c] - cand[:, None, :, c]
                d2 += diff * diff
            dist = np.sqrt(d2)
            dist[np.broadcast_to(member[sl][:, None, :], dist.shape)] = np.inf
            # Non-negative float32 order = their bit patterns' order, so one
            # int64 key sorts by (distance, group entry, candidate index).
            key = (dist.view(np.int32).astype(np.int64) << 32).reshape(dist.shape[0], -1) | position
            best = np.sort(np.partition(key, take - 1, axis=1)[:, :take], axis=1)
            column = (best & 0xFFFFFFFF) % width
            picked[sl] = np.take_along_axis(support[sl], column, axis=1)
            np.put_along_axis(member[sl], column, True, axis=1)
        group = np.concatenate([picked, group], axis=1)
    return group


def iterative_point_grouping(
    xyz,
    centre_idx,
    knn_idx,
    group_size: int,
    *,
    k_iter: int = 80,
    curvature_threshold: float = CURVATURE_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Iterative Point Grouping (MuSc-V2), as ALGORITHM.md section 3.

    A centre with curvature < curvature_threshold takes its first group_size
    KNN entries. A curved centre starts from its first min(k_iter, group_size)
    entries and grows: the candidates are the centre's KNN entries not yet in
    the group; the `take` (group entry, candidate) pairs of smallest distance
    are chosen (take = k_iter, or what is left to reach group_size) and their
    candidates are prepended, nearest first; repeat. A candidate nearest to
    several group points can be taken more than once, as in the reference
    (its duplicates are kept: the vectors pin them). Ties rank by group entry,
    then candidate index. With group_size <= k_iter a curved group is its first
    group_size entries (the reference fails there).

    Parameters
    ----------
    xyz : (P, 3) float array (float32 arithmetic).
    centre_idx : (G,) int indices into xyz.
    knn_idx : (P, K) int, K >= group_size (the reference uses 2 * group_size);
        row p = neighbours of p sorted by distance, itself first, distinct.
        Only the rows of the centres are read.
    group_size : points per group, >= 3.
    k_iter : growth step (80 in MuSc-V2).
    curvature_threshold : 0.01 in MuSc-V2.

    Returns
    -------
    idx : (G, group_size) int64 point indices.
    curvature : (G,) float32, see curvature().
    neighbourhood : (G, group_size, 3) float32, xyz[idx] - xyz[centre].
    """
    pts, centres, rows, group_size = _check_group_inputs(xyz, centre_idx, knn_idx, group_size)
    k_iter = check_positive_int(k_iter, "k_iter")
    return _group(pts, centres, rows, group_size, k_iter, float(curvature_threshold))


def _group(pts, centres, rows, group_size, k_iter, threshold):
    """IPG on validated inputs; rows (G, K) are the centres' KNN entries."""
    curv = _curvature_of_rows(pts, centres, rows, group_size)
    idx = rows[:, :group_size].copy()
    curved = np.flatnonzero(curv >= threshold)
    start = min(k_iter, group_size)
    if curved.size and start < group_size:
        idx[curved] = _grow(pts, rows[curved], start, group_size, k_iter)
    neighbourhood = pts[idx] - pts[centres][:, None, :]
    return idx, curv, neighbourhood


@dataclass(frozen=True)
class Groups:
    """Local groups of one cloud.

    centre_idx : (G,) int64 indices of the centres (FPS order).
    idx : (G, gs) int64 point indices of each group.
    curvature : (G,) float32.
    neighbourhood : (G, gs, 3) float32 offsets from the centre.
    centres : (G, 3) float32 centre coordinates.
    """

    centre_idx: np.ndarray
    idx: np.ndarray
    curvature: np.ndarray
    neighbourhood: np.ndarray
    centres: np.ndarray


def group_cloud(
    points,
    n_groups: int,
    group_size: int,
    *,
    k_iter: int = 80,
    curvature_threshold: float = CURVATURE_THRESHOLD,
    ipg: bool = True,
) -> Groups:
    """FPS centres -> exact KNN of the centres (k = 2 * group_size) -> IPG.

    Only the centres' KNN rows are computed: IPG reads nothing else. When the
    cloud has fewer than 2 * group_size points, k is clamped to the cloud size.
    ``ipg=False`` keeps every group its plain KNN (curvature is still computed):
    descriptors that read the cloud around each centre themselves (FPFH) never
    look at the groups, so growing them only costs time.

    Parameters
    ----------
    points : (P, 3) float array, P >= group_size, P >= n_groups.
    n_groups : G, number of centres.
    group_size : points per group, >= 3.
    k_iter, curvature_threshold : see iterative_point_grouping.
    ipg : grow curved groups (True) or keep plain KNN groups (False).

    Returns
    -------
    Groups.
    """
    pts = check_points(points).astype(np.float32)
    group_size = check_positive_int(group_size, "group_size", minimum=3)
    n_groups = check_positive_int(n_groups, "n_groups")
    k_iter = check_positive_int(k_iter, "k_iter")
    if pts.shape[0] < group_size:
        raise ValueError(f"the cloud has {pts.shape[0]} points, fewer than group_size = {group_size}")
    centres = farthest_point_sampling(pts, n_groups)
    rows, _ = knn(pts[centres], pts, min(2 * group_size, pts.shape[0]))
    threshold = float(curvature_threshold) if ipg else np.inf  # no centre counts as curved: no growth
    idx, curv, neighbourhood = _group(pts, centres, rows, group_size, k_iter, threshold)
    return Groups(centre_idx=centres, idx=idx, curvature=curv, neighbourhood=neighbourhood, centres=pts[centres])
