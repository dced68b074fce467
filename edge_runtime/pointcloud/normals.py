"""Surface normals of an organized cloud, drawn as an RGB image.

A 2D encoder reads the picture of a part's surface orientation as it reads a
photograph: a dent, a bump or a crack bends the normals around it whatever
the part's colour. The image keeps the cloud's pixel grid, so its patches are
the photograph's patches (docs/ALGORITHM.md section 9, step 4n).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ._validation import check_organized

# Smoothing of the coordinates before differencing, in pixels: enough that the scanner's
# noise does not decide the normals, little enough to keep a chip's rim (3D AUROC on a
# cookie/bagel set: 3 px 12 points below 1.5 px; docs/ABLATION.md, "3D on the patch grid").
NORMAL_SIGMA = 1.0
# What a pixel without a measurement shows: a surface facing the sensor.
_FACING = np.array([0.0, 0.0, -1.0], dtype=np.float32)


def surface_normals(xyz, sigma: float = NORMAL_SIGMA) -> np.ndarray:
    """Unit normals of an organized cloud, facing the sensor.

    The coordinates are smoothed with a Gaussian of ``sigma`` pixels over the
    measured pixels only (normalized convolution, so the background's zeros do
    not pull the rim inwards), then differenced across each pixel's row and
    column neighbours; the cross product, flipped where it points away from
    the sensor (the origin), is the normal.

    Parameters
    ----------
    xyz : (H, W, 3) float array, organized cloud, 0 = no measurement.
    sigma : smoothing in pixels, >= 0 (0 = none).

    Returns
    -------
    (H, W, 3) float32 unit normals; (0, 0, -1), facing the sensor, where there
    is no measurement or too little surface to span a plane.
    """
    cloud = check_organized(xyz).astype(np.float32)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be >= 0 pixels, got {sigma}")
    measured = np.all(cloud != 0, axis=-1)
    if sigma > 0:
        weight = gaussian_filter(measured.astype(np.float32), sigma, mode="constant")
        smooth = np.stack([gaussian_filter(cloud[..., k] * measured, sigma, mode="constant") for k in range(3)], -1)
        cloud = smooth / np.maximum(weight, 1e-12)[..., None]
    along_rows = np.zeros_like(cloud)
    along_cols = np.zeros_like(cloud)
    along_cols[:, 1:-1] = cloud[:, 2:] - cloud[:, :-2]
    along_rows[1:-1] = cloud[2:] - cloud[:-2]
    normals = np.cross(along_cols, along_rows)
    length = np.linalg.norm(normals, axis=-1)
    valid = measured & (length > 0)
    normals = np.where(valid[..., None], normals / np.maximum(length, 1e-30)[..., None], _FACING)
    away = np.sum(normals * cloud, axis=-1) > 0  # the sensor sits at the origin
    normals[away & valid] *= -1
    return normals.astype(np.float32)


def normal_image(xyz, sigma: float = NORMAL_SIGMA) -> np.ndarray:
    """The cloud's surface normals as an RGB picture: each component in [-1, 1] mapped to [0, 255].

    Parameters
    ----------
    xyz : (H, W, 3) float array, organized cloud, 0 = no measurement.
    sigma : smoothing in pixels (see ``surface_normals``).

    Returns
    -------
    (H, W, 3) uint8; pixels without a measurement show a surface facing the sensor.
    """
    n = surface_normals(xyz, sigma)
    return np.clip(np.rint((n + 1.0) * 127.5), 0, 255).astype(np.uint8)
