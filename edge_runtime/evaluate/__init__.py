"""Evaluation of musc-edge: metrics of the published tables."""

from .metrics import (
    METRIC_NAMES,
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

__all__ = [
    "METRIC_NAMES",
    "aupro",
    "compute_metrics",
    "image_ap",
    "image_auroc",
    "image_f1max",
    "pixel_ap",
    "pixel_auroc",
    "pixel_f1max",
    "pro_thresholds",
]
