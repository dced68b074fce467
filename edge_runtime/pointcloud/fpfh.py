"""Weight-free 3D encoder: FPFH descriptors at the group centres, one radius per layer.

The three radii play the role of three encoder layers (fine, group, context),
stated relative to the cloud normalized to unit radius (normalize_points).

Default radii, for a 224 x 224 organized cloud (~30k foreground points) with
~1024 groups of 128: normalized to unit radius, a part covers about 2 square
units, so points lie ~0.008 apart and centres ~0.045 apart, and a group of 128
points reaches ~0.05 from its centre. Layer radii 0.025 (local detail, finer
than a group), 0.05 (the group itself) and 0.1 (its surroundings).

Every layer costs about the same: before the layer at radius r, the cloud is
thinned to one point per voxel of side r / density (the centres are always
kept, at their exact coordinates), so ~pi * density**2 points fall within r
on a surface at every scale, and never more than the voxels a ball of radius
r meets. That bounds the cost without a neighbour cap (Open3D's capped hybrid
search is several times slower than its plain radius search). Normals are
estimated per layer at the layer radius (PCA over the same neighbourhood) and
turned to face the camera: against `view_direction`, the camera's viewing
direction (+z for an organized cloud in the sensor frame). A direction rather
than a camera position keeps the orientation valid after normalize_points,
which moves and scales the cloud but keeps directions.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d

from ._validation import check_index, check_points

DEFAULT_RADII = (0.025, 0.05, 0.1)


def _thin(points: np.ndarray, voxel: float, keep: np.ndarray) -> np.ndarray:
    """Indices of the first point of every voxel, united with `keep`, sorted."""
    cells = np.floor((points - points.min(axis=0)) / voxel).astype(np.int64)
    span = cells.max(axis=0) + 1
    if np.prod(span.astype(np.float64)) < 2**62:
        _, first = np.unique((cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2], return_index=True)
    else:  # a voxel tiny against the extent: the packed key would overflow
        _, first = np.unique(cells, axis=0, return_index=True)
    return np.union1d(first, keep)


def _normals(pts: np.ndarray, radius: float, view: np.ndarray) -> np.ndarray:
    """(P, 3) float64 unit normals of every point (PCA within ``radius``), facing against ``view``."""
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamRadius(radius=radius))
    cloud.orient_normals_to_align_with_direction(-view)
    return np.asarray(cloud.normals)


def fpfh_features(
    points,
    centre_idx,
    radii=DEFAULT_RADII,
    density: float = 3.0,
    view_direction=(0.0, 0.0, 1.0),
    normal_radius: float | None = None,
) -> list[np.ndarray]:
    """FPFH (Open3D compute_fpfh_feature) of the centres at each radius.

    Parameters
    ----------
    points : (P, 3) float array, sensor frame or normalized (normalize_points).
    centre_idx : (G,) int indices of the centres into points.
    radii : layer radii relative to the unit-radius normalized cloud; the
        absolute radius is r * max distance of a point from the mean point.
    density : points per radius after thinning (voxel side = radius / density).
    view_direction : (3,) direction the camera looks along; normals point against it.
    normal_radius : None = normals at each layer's radius; a number = normals of
        every layer at this one radius (same units as ``radii``), on the full cloud.

    Returns
    -------
    list over radii of (G, 33) float32 FPFH histograms (not normalized).
    """
    pts = check_points(points).astype(np.float64)
    centres = check_index(centre_idx, pts.shape[0], "centre_idx")
    if centres.size == 0:
        raise ValueError("centre_idx is empty")
    radii = tuple(float(r) for r in radii)
    if not radii or min(radii) <= 0:
        raise ValueError(f"radii must be a non-empty sequence of positive numbers, got {radii}")
    if not density > 0:
        raise ValueError(f"density must be > 0, got {density}")
    view = np.asarray(view_direction, dtype=np.float64)
    if view.shape != (3,) or not np.isfinite(view).all() or not view.any():
        raise ValueError(f"view_direction must be 3 finite coordinates, not all 0, got {view_direction!r}")
    scale = float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1)).max())
    if scale == 0:
        raise ValueError("points are all identical: the cloud has no extent")
    if normal_radius is not None and not normal_radius > 0:
        raise ValueError(f"normal_radius must be > 0 or None, got {normal_radius!r}")
    unique_centres, back = np.unique(centres, return_inverse=True)
    normals = None if normal_radius is None else _normals(pts, normal_radius * scale, view)
    features = []
    for r in radii:
        radius = r * scale
        kept = _thin(pts, radius / density, unique_centres)
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts[kept]))
        search = o3d.geometry.KDTreeSearchParamRadius(radius=radius)
        if normals is None:
            cloud.estimate_normals(search)
            cloud.orient_normals_to_align_with_direction(-view)
        else:
            cloud.normals = o3d.utility.Vector3dVector(normals[kept])
        at = np.searchsorted(kept, unique_centres)
        fpfh = o3d.pipelines.registration.compute_fpfh_feature(cloud, search, at.tolist())
        features.append(np.asarray(fpfh.data, dtype=np.float32).T[back])
    return features
