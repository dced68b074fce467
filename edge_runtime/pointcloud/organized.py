"""Organized clouds: an (H, W, 3) image of xyz coordinates, 0 meaning no measurement.

Conversions between the organized image and the flat list of foreground
points, and the pixel-exact geometry (square padding, nearest resizing) that
keeps the cloud aligned with images and masks of the same frame.
"""

from __future__ import annotations

import numpy as np

from ._validation import check_index, check_organized, check_points, check_positive_int


def foreground_mask(xyz) -> np.ndarray:
    """Pixels that hold a measurement.

    Parameters
    ----------
    xyz : (H, W, 3) float array, organized cloud.

    Returns
    -------
    (H, W) bool: True where no coordinate is exactly 0 (a point with any
    coordinate exactly 0 is background, as in MVTec 3D-AD and MuSc).
    """
    arr = check_organized(xyz)
    return np.all(arr != 0, axis=-1)


def organized_to_flat(xyz) -> tuple[np.ndarray, np.ndarray]:
    """Foreground points of an organized cloud, in raster order.

    Parameters
    ----------
    xyz : (H, W, 3) float array.

    Returns
    -------
    points : (P, 3) float32, the foreground points.
    pixel_index : (P,) int64, row * W + col of each point.
    """
    arr = check_organized(xyz)
    pixel_index = np.flatnonzero(np.all(arr != 0, axis=-1)).astype(np.int64)
    points = arr.reshape(-1, 3)[pixel_index].astype(np.float32)
    return points, pixel_index


def flat_to_organized(points, pixel_index, shape) -> np.ndarray:
    """Scatter flat points back into an organized image.

    Parameters
    ----------
    points : (P, 3) float array.
    pixel_index : (P,) int, distinct values row * W + col in [0, H*W).
    shape : (H, W).

    Returns
    -------
    (H, W, 3) float32, the points at their pixels and zeros elsewhere.
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {shape!r}")
    h = check_positive_int(shape[0], "shape[0]")
    w = check_positive_int(shape[1], "shape[1]")
    pts = np.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points must have shape (P, 3), got {pts.shape}")
    if pts.shape[0]:
        pts = check_points(pts)
    index = check_index(pixel_index, h * w, "pixel_index")
    if index.shape[0] != pts.shape[0]:
        raise ValueError(f"pixel_index has {index.shape[0]} entries for {pts.shape[0]} points")
    if np.unique(index).size != index.size:
        raise ValueError("pixel_index repeats a pixel")
    out = np.zeros((h * w, 3), dtype=np.float32)
    out[index] = pts
    return out.reshape(h, w, 3)


def pad_to_square(image) -> np.ndarray:
    """Pad an image with zeros to a square of its larger side, content centred.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array (cloud, mask or RGB of one frame).

    Returns
    -------
    (L, L[, C]) array of the same dtype, L = max(H, W); the extra row/column
    of an odd padding goes to the bottom/right (as MuSc's preprocessing does).
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image must have shape (H, W) or (H, W, C) with H, W > 0, got {arr.shape}")
    h, w = arr.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = [(top, side - h - top), (left, side - w - left)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, mode="constant")


def resize_nearest(image, size: int) -> np.ndarray:
    """Nearest-neighbour resize to size x size; every output pixel is a copy of one input pixel.

    Source pixel of output (r, c) is (floor(r * H / size), floor(c * W / size)),
    computed exactly in integers (torch's interpolate(mode="nearest"), which
    MuSc applies to clouds, uses the same rule in float32). Zeros (no
    measurement) stay zeros and coordinates of different pixels never mix.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array.
    size : output side in pixels.

    Returns
    -------
    (size, size[, C]) array of the input dtype.
    """
    arr = np.asarray(image)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image must have shape (H, W) or (H, W, C) with H, W > 0, got {arr.shape}")
    size = check_positive_int(size, "size")
    h, w = arr.shape[:2]
    rows = np.minimum((np.arange(size) * h) // size, h - 1)
    cols = np.minimum((np.arange(size) * w) // size, w - 1)
    return arr[rows[:, None], cols[None, :]]
