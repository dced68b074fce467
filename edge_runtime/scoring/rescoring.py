"""Re-scoring with a constrained neighbourhood (RsCon).

A part's image score is smoothed with the scores of the parts most similar to
it, judged by their salient features: a normal part that happens to score high
is pulled down by its normal look-alikes, while a defect's salient feature
resembles few parts and keeps its score.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_runtime.scoring._checks import as_float_array


def rescore(scores: np.ndarray, salient: np.ndarray, k_list: Sequence[int] = (1, 7)) -> np.ndarray:
    """Re-score image scores over the k most similar samples.

    Parameters
    ----------
    scores : (N,) float, image scores before re-scoring.
    salient : (N, C) float, each sample's salient feature (unit L2 rows).
    k_list : neighbour counts (each >= 1, clamped to N); the result is the
        mean over k of the similarity-weighted mean of the min-max normalized
        scores of the k most similar samples (the sample itself included).
        Not mutated. A sample whose top-k similarities sum to <= 0 (a zero
        salient feature) keeps its own normalized score for that k.

    Returns
    -------
    (N,) float32 re-scored image scores in [0, 1].
    """
    s = as_float_array(scores, "scores", 1).astype(np.float32)
    f = as_float_array(salient, "salient", 2).astype(np.float32)
    n = s.shape[0]
    if f.shape[0] != n:
        raise ValueError(f"salient has {f.shape[0]} rows for {n} scores")
    ks = [int(k) for k in k_list]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"k_list must hold neighbour counts >= 1, got {list(k_list)}")
    span = s.max() - s.min()
    norm = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    sim = f @ f.T
    order = np.argsort(-sim, axis=1, kind="stable")
    out = np.zeros(n, dtype=np.float32)
    for k in ks:
        k = min(k, n)
        top = order[:, :k]
        w = np.take_along_axis(sim, top, axis=1)
        total = np.sum(w, axis=1)
        # A zero salient feature (e.g. an empty descriptor) has no similar
        # samples to borrow from: it keeps its own score instead of 0 / 0.
        safe = total > 0
        out += np.where(safe, np.sum(w * norm[top], axis=1) / np.where(safe, total, 1), norm)
    return out / np.float32(len(ks))
