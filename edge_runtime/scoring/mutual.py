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

from edge_runtime.scoring._checks import as_float_array, check_interval, interval_k
from edge_runtime.scoring.tiles import DEFAULT_BUDGET, squared_min_distances


def augment(z: np.ndarray, side: str) -> np.ndarray:
    """(..., L, C) -> (..., L, C + 2) float32 such that left @ right.T = squared distances.

    side : "left" ([z, |z|^2, 1], the query) or "right" ([-2z, 1, |z|^2], the references).
    Keeping references augmented lets a window reuse them on every arrival.
    """
    z = np.asarray(z).astype(np.float32, copy=False)
    sq = np.einsum("...c,...c->...", z, z)[..., None]
    one = np.ones_like(sq)
    if side == "left":
        return np.concatenate([z, sq, one], axis=-1)
    if side == "right":
        return np.concatenate([-2.0 * z, one, sq], axis=-1)
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")


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


def distances(*squared: np.ndarray) -> tuple[np.ndarray, ...]:
    """sqrt(max(d, 0)) of each fresh array of squared distances, in place (the GEMM can round below 0)."""
    for d in squared:
        np.sqrt(np.maximum(d, 0.0, out=d), out=d)
    return squared


def pairwise_min_distances(z: np.ndarray, budget: int = DEFAULT_BUDGET) -> np.ndarray:
    """All per-reference minimum distances of a pool, one layer.

    z : (N, L, C) float. Returns d (N, L, N) float32 with d[i, p, j] =
    min_q ||z[i, p] - z[j, q]|| and d[i, :, i] = +inf (a sample is not its own reference).
    """
    n, l, _ = z.shape
    d = np.full((n, l, n), np.inf, dtype=np.float32)
    for i in range(n - 1):
        to_refs, from_refs = min_distances(z[i], z[i + 1 :], budget)
        d[i, :, i + 1 :] = to_refs
        d[i + 1 :, :, i] = from_refs
    return d


def references_only(d: np.ndarray) -> np.ndarray:
    """(N, L, N) with +inf self entries -> (N, L, N - 1): each sample's references in original order."""
    n = d.shape[0]
    keep = ~np.eye(n, dtype=bool)
    return d.transpose(0, 2, 1)[keep].reshape(n, n - 1, -1).transpose(0, 2, 1)


def interval_mean(o: np.ndarray, interval: float = 0.3) -> np.ndarray:
    """Mean of the k smallest per-reference distances, k = max(1, floor(interval * R)).

    o : (..., R) float. Returns (...) float32.
    """
    k = interval_k(o.shape[-1], interval)
    part = np.partition(o, k - 1, axis=-1)[..., :k] if k < o.shape[-1] else o
    return np.mean(part, axis=-1, dtype=np.float32)


def mutual_scores(z: np.ndarray, interval: float = 0.3, budget: int = DEFAULT_BUDGET) -> np.ndarray:
    """Mutual scores of a pool of samples.

    Parameters
    ----------
    z : (N, L, C) or (N, L, n_layers, C) float16/float32, L2-normalized per
        patch and layer. N >= 2.
    interval : fraction of the N - 1 references whose smallest distances are averaged.
    budget : bytes of distance tile one worker holds at once.

    Returns
    -------
    (N, L) float32: per-layer scores averaged over layers.
    """
    layers = _check_features(z, "Z")
    check_interval(interval)
    n = layers.shape[1]
    if n < 2:
        raise ValueError(f"mutual scoring needs at least 2 samples, got {n}")
    total = np.zeros(layers.shape[1:3], dtype=np.float32)
    for layer in layers:
        total += interval_mean(references_only(pairwise_min_distances(layer, budget)), interval)
    return total / np.float32(layers.shape[0])
