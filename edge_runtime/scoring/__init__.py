"""MuSc-V2 math on arrays: aggregation, mutual scoring, cross-modal enhancement,
re-scoring and maps. Pure functions; shapes and dtypes in each docstring."""
from edge_runtime.scoring.aggregation import aggregate_2d, aggregate_3d, l2_normalize
from edge_runtime.scoring.cross_modal import enhance, mutual_scores_multimodal, rank_replace
from edge_runtime.scoring.maps import (
    idw_weights,
    image_scores,
    interpolate_3d,
    paint_3d,
    point_to_patch,
    salient_features,
    upsample_2d,
)
from edge_runtime.scoring.mutual import (
    DEFAULT_BUDGET,
    augment,
    interval_mean,
    min_distances,
    mutual_scores,
    pairwise_min_distances,
    references_only,
)
from edge_runtime.scoring.rescoring import rescore

__all__ = [
    "DEFAULT_BUDGET",
    "aggregate_2d",
    "aggregate_3d",
    "augment",
    "enhance",
    "idw_weights",
    "image_scores",
    "interpolate_3d",
    "interval_mean",
    "l2_normalize",
    "min_distances",
    "mutual_scores",
    "mutual_scores_multimodal",
    "paint_3d",
    "pairwise_min_distances",
    "point_to_patch",
    "rank_replace",
    "references_only",
    "rescore",
    "salient_features",
    "upsample_2d",
]
