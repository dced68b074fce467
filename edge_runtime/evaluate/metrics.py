"""Detection and segmentation metrics of MuSc-V2's evaluation (ALGORITHM.md "Metrics").

Image level over parts, pixel level over every pixel of every map: AUROC,
average precision (AP) and F1-max, plus AUPRO. Definitions follow the
reference (scikit-learn's roc_auc_score, average_precision_score and
precision_recall_curve; cflow-ad's PRO with FPR < 0.3 rescaled to [0, 1]),
computed with numpy from one sort per level. When the labels hold one class
only, every metric of that level is 0, as the reference returns.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _check_labels(labels, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype != bool:
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise ValueError(f"{name} must be binary (0/1 or bool), got dtype {arr.dtype}")
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must be binary (0/1 or bool); found other values")
        arr = arr != 0
    return arr


def _check_scores(scores, name: str, shape: tuple) -> np.ndarray:
    arr = np.asarray(scores)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape} like its labels, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_image_level(gt_image, image_scores):
    labels = _check_labels(gt_image, "gt_image")
    if labels.ndim != 1:
        raise ValueError(f"gt_image must have shape (N,), got {labels.shape}")
    return labels, _check_scores(image_scores, "image_scores", labels.shape)


def _check_pixel_level(gt_masks, maps):
    masks = _check_labels(gt_masks, "gt_masks")
    if masks.ndim != 3:
        raise ValueError(f"gt_masks must have shape (N, H, W), got {masks.shape}")
    return masks, _check_scores(maps, "maps", masks.shape)


def _one_class(labels: np.ndarray) -> bool:
    positives = np.count_nonzero(labels)
    return positives == 0 or positives == labels.size


def _ranking(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    """(AUROC, AP, F1-max) of 1D bool labels against scores, both classes present."""
    order = np.argsort(scores, kind="stable")[::-1]
    ranked = scores[order]
    # The curves step at each distinct score, from the highest down.
    ends = np.r_[np.flatnonzero(ranked[1:] != ranked[:-1]), ranked.size - 1]
    tps = np.cumsum(labels[order], dtype=np.float64)[ends]
    fps = (ends + 1) - tps
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    auroc = float(np.trapezoid(tpr, fpr))
    precision = tps / (tps + fps)
    recall = tpr[1:]
    ap = float(np.sum(np.diff(tpr) * precision))
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    f1max = float(np.max(f1[np.isfinite(f1)], initial=0.0))
    return auroc, ap, f1max


def _level(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float, float]:
    if _one_class(labels):
        return 0.0, 0.0, 0.0
    return _ranking(labels.ravel(), scores.ravel())


def image_auroc(gt_image, image_scores) -> float:
    """Area under the ROC curve of part labels (N,) against part scores (N,)."""
    return _level(*_check_image_level(gt_image, image_scores))[0]


def image_ap(gt_image, image_scores) -> float:
    """Average precision sum_n (R_n - R_{n-1}) P_n of part labels (N,) against scores (N,)."""
    return _level(*_check_image_level(gt_image, image_scores))[1]


def image_f1max(gt_image, image_scores) -> float:
    """Best F1 over all thresholds of part labels (N,) against scores (N,)."""
    return _level(*_check_image_level(gt_image, image_scores))[2]


def pixel_auroc(gt_masks, maps) -> float:
    """AUROC over every pixel of masks (N, H, W) against maps (N, H, W)."""
    return _level(*_check_pixel_level(gt_masks, maps))[0]


def pixel_ap(gt_masks, maps) -> float:
    """Average precision over every pixel of masks (N, H, W) against maps (N, H, W)."""
    return _level(*_check_pixel_level(gt_masks, maps))[1]


def pixel_f1max(gt_masks, maps) -> float:
    """F1-max over every pixel of masks (N, H, W) against maps (N, H, W)."""
    return _level(*_check_pixel_level(gt_masks, maps))[2]


def pro_thresholds(maps, n_steps: int = 200) -> np.ndarray:
    """Thresholds of the PRO curve: arange(min, max, (max - min) / n_steps) in the maps' dtype.

    Built like the reference (np.arange on the maps' own scalar type), so for
    float32 maps rounding can give n_steps or n_steps + 1 thresholds.

    Parameters
    ----------
    maps : (N, H, W) float array.
    n_steps : number of steps over the score range.

    Returns
    -------
    (T,) array of the maps' dtype, ascending; empty for constant maps.
    """
    arr = np.asarray(maps)
    low, high = arr.min(), arr.max()
    if high == low:
        return np.empty(0, dtype=arr.dtype)
    return np.arange(low, high, (high - low) / n_steps)


def aupro(gt_masks, maps, n_steps: int = 200, max_fpr: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to max_fpr, FPR rescaled to [0, 1].

    For each threshold t of pro_thresholds(maps, n_steps): PRO = mean over every
    8-connected ground-truth region of every image of the fraction of its
    pixels with score > t; FPR = fraction of all negative pixels with score > t.
    Keep the thresholds with FPR < max_fpr, rescale those FPRs min-max to
    [0, 1] and integrate PRO over FPR with the trapezoid rule (what the
    published tables use). Counting uses one histogram of pixels over the
    thresholds, so memory stays O(pixels + regions * thresholds).

    Parameters
    ----------
    gt_masks : (N, H, W) binary.
    maps : (N, H, W) float scores.

    Returns
    -------
    float in [0, 1]; 0 when the masks hold one class, or fewer than two
    distinct FPR values lie below max_fpr (no curve to integrate).
    """
    masks, scores = _check_pixel_level(gt_masks, maps)
    if _one_class(masks):
        return 0.0
    return _aupro(masks, scores, n_steps, max_fpr)


def _aupro(masks: np.ndarray, scores: np.ndarray, n_steps: int, max_fpr: float) -> float:
    thresholds = pro_thresholds(scores, n_steps)
    n_thr = thresholds.size
    if n_thr == 0:
        return 0.0
    regions, offset = [], 0
    for mask in masks:
        labelled, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        regions.append(labelled[mask] + (offset - 1))
        offset += count
    region = np.concatenate(regions)
    # A pixel is above threshold j exactly when j < (number of thresholds below its score).
    above_pos = np.searchsorted(thresholds, scores[masks], side="left")
    above_neg = np.searchsorted(thresholds, scores[~masks], side="left")
    hist = np.bincount(region * (n_thr + 1) + above_pos, minlength=offset * (n_thr + 1)).reshape(offset, n_thr + 1)
    area = hist.sum(axis=1)
    inside = area[:, None] - np.cumsum(hist, axis=1)[:, :n_thr]
    pro = (inside / area[:, None]).mean(axis=0)
    neg = np.bincount(above_neg, minlength=n_thr + 1)
    fpr = (above_neg.size - np.cumsum(neg)[:n_thr]) / above_neg.size
    keep = fpr < max_fpr
    fpr, pro = fpr[keep], pro[keep]
    if fpr.size < 2 or fpr.max() == fpr.min():
        return 0.0
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min())
    # FPR falls as the threshold rises: integrate in rising FPR.
    return float(np.trapezoid(pro[::-1], fpr[::-1]))


METRIC_NAMES = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro")


def compute_metrics(gt_image, image_scores, gt_masks, maps, n_steps: int = 200, max_fpr: float = 0.3) -> dict:
    """Every metric of one evaluation.

    Parameters
    ----------
    gt_image : (N,) binary part labels (1 = anomalous).
    image_scores : (N,) float part scores.
    gt_masks : (N, H, W) binary defect masks.
    maps : (N, H, W) float anomaly maps.
    n_steps, max_fpr : AUPRO settings (see aupro).

    Returns
    -------
    dict of python floats (fractions, not percent) keyed by METRIC_NAMES.
    Each level whose labels hold one class reports 0 for its metrics.
    """
    labels, part_scores = _check_image_level(gt_image, image_scores)
    masks, pixel_scores = _check_pixel_level(gt_masks, maps)
    if masks.shape[0] != labels.shape[0]:
        raise ValueError(f"gt_masks holds {masks.shape[0]} images for {labels.shape[0]} part labels")
    image = _level(labels, part_scores)
    if _one_class(masks):
        pixel = (0.0, 0.0, 0.0, 0.0)
    else:
        pixel = _ranking(masks.ravel(), pixel_scores.ravel()) + (_aupro(masks, pixel_scores, n_steps, max_fpr),)
    return dict(zip(METRIC_NAMES, image + pixel))
