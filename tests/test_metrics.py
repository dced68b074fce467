"""Metrics against brute-force definitions on small random data."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from edge_runtime.evaluate import (
    aupro,
    compute_metrics,
    image_ap,
    image_auroc,
    image_f1max,
    pixel_ap,
    pixel_auroc,
    pixel_f1max,
    pro_thresholds,
)


def _brute_auroc(labels, scores):
    """Probability that a positive outscores a negative, ties counting half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()
    return wins / (pos.size * neg.size)


def _curve(labels, scores):
    """(precision, recall) at every distinct threshold, from the highest score down."""
    points = []
    for t in np.unique(scores)[::-1]:
        hit = scores >= t
        tp = (hit & (labels == 1)).sum()
        points.append((tp / hit.sum(), tp / (labels == 1).sum()))
    return points


def _brute_ap(labels, scores):
    total, previous = 0.0, 0.0
    for precision, recall in _curve(labels, scores):
        total += (recall - previous) * precision
        previous = recall
    return total


def _brute_f1max(labels, scores):
    return max(2 * p * r / (p + r) if p + r else 0.0 for p, r in _curve(labels, scores))


def _brute_aupro(masks, maps, max_fpr=0.3):
    regions = []
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, count + 1)]
    pros, fprs = [], []
    for t in pro_thresholds(maps):
        hit = maps > t
        pros.append(np.mean([hit[i][region].mean() for i, region in regions]))
        fprs.append((hit & (masks == 0)).sum() / (masks == 0).sum())
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < max_fpr
    fpr = (fprs[keep] - fprs[keep].min()) / (fprs[keep].max() - fprs[keep].min())
    # The curve is traced in threshold order, where FPR falls: the area is minus the trapezoid sum.
    return -np.trapezoid(pros[keep], fpr)


# Few distinct score values give ties.
scores_1d = st.integers(4, 40).flatmap(
    lambda n: st.tuples(
        arrays(np.int64, n, elements=st.integers(0, 1)),
        arrays(np.float32, n, elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]) | st.floats(0, 1, width=32)),
    )
)


@settings(max_examples=80, deadline=None)
@given(scores_1d)
def test_image_metrics_match_definitions(data):
    labels, scores = data
    assume(0 < labels.sum() < labels.size)
    assert image_auroc(labels, scores) == pytest.approx(_brute_auroc(labels, scores), abs=1e-12)
    assert image_ap(labels, scores) == pytest.approx(_brute_ap(labels, scores), abs=1e-12)
    assert image_f1max(labels, scores) == pytest.approx(_brute_f1max(labels, scores), abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_pixel_metrics_and_aupro_match_definitions(seed):
    rng = np.random.default_rng(seed)
    masks = ndimage.binary_dilation(rng.random((3, 12, 12)) < 0.04, np.ones((1, 2, 2))).astype(np.uint8)
    assume(0 < masks.sum() < masks.size)
    maps = (rng.random(masks.shape) + 0.6 * masks * rng.random(masks.shape)).astype(np.float32)
    maps = np.round(maps, 2)  # ties
    labels, scores = masks.ravel(), maps.ravel()
    assert pixel_auroc(masks, maps) == pytest.approx(_brute_auroc(labels, scores), abs=1e-12)
    assert pixel_ap(masks, maps) == pytest.approx(_brute_ap(labels, scores), abs=1e-12)
    assert pixel_f1max(masks, maps) == pytest.approx(_brute_f1max(labels, scores), abs=1e-12)
    assert aupro(masks, maps) == pytest.approx(_brute_aupro(masks, maps), abs=1e-12)


def test_perfect_separation_scores_one():
    labels = np.array([0, 0, 1, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.7])
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 2:4, 2:5] = masks[1, 5:7, 0:2] = True
    maps = np.where(masks, 0.9, 0.1).astype(np.float32) + np.linspace(0, 0.01, 64).reshape(8, 8)
    got = compute_metrics([0, 1], [0.2, 0.9], masks, maps)
    for name in ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro"):
        assert got[name] == pytest.approx(1.0), name
    assert image_auroc(labels, scores) == 1.0
    assert image_auroc(labels, -scores) == 0.0


def test_single_class_gives_zero_per_level():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[1, 1, 1] = True
    got = compute_metrics([1, 1], [0.3, 0.4], masks, np.random.default_rng(0).random((2, 4, 4)))
    assert got["image_auroc"] == got["image_ap"] == got["image_f1max"] == 0.0
    assert got["pixel_auroc"] > 0
    assert pixel_auroc(np.zeros((1, 3, 3)), np.ones((1, 3, 3))) == 0.0


def test_aupro_constant_map_is_zero():
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 2, 2] = True
    assert aupro(masks, np.ones((1, 6, 6), dtype=np.float32)) == 0.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: image_auroc([0, 1], [0.5, np.nan]), "NaN"),
        (lambda: image_auroc([0, 2], [0.5, 0.1]), "binary"),
        (lambda: image_auroc([0, 1, 1], [0.5, 0.1]), "shape"),
        (lambda: image_auroc([], []), "empty"),
        (lambda: pixel_auroc(np.zeros((4, 4)), np.zeros((4, 4))), r"\(N, H, W\)"),
        (lambda: aupro(np.zeros((1, 4, 4)), np.zeros((1, 4, 5))), "shape"),
        (lambda: compute_metrics([0, 1], [0.1, 0.2], np.zeros((3, 2, 2)), np.zeros((3, 2, 2))), "3 images for 2"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
