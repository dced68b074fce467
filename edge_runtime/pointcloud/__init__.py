"""Point-cloud side of musc-edge: organized clouds, preprocessing, sampling,
grouping (IPG), the weight-free FPFH encoder and surface normals. Pure numpy + Open3D."""

from .fpfh import DEFAULT_RADII, fpfh_features
from .grouping import Groups, curvature, group_cloud, iterative_point_grouping
from .normals import NORMAL_SIGMA, normal_image, surface_normals
from .organized import flat_to_organized, foreground_mask, organized_to_flat, pad_to_square, resize_nearest
from .preprocess import largest_cluster, largest_component, normalize_points, preprocess_organized, remove_background_plane
from .sampling import farthest_point_sampling, knn

__all__ = [
    "DEFAULT_RADII",
    "Groups",
    "NORMAL_SIGMA",
    "curvature",
    "farthest_point_sampling",
    "flat_to_organized",
    "foreground_mask",
    "fpfh_features",
    "group_cloud",
    "iterative_point_grouping",
    "knn",
    "largest_cluster",
    "largest_component",
    "normal_image",
    "normalize_points",
    "organized_to_flat",
    "pad_to_square",
    "preprocess_organized",
    "remove_background_plane",
    "resize_nearest",
    "surface_normals",
]
