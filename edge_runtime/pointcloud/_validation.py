"""Input checks shared by the point-cloud functions (one place for the messages)."""

from __future__ import annotations

import numpy as np


def check_points(points, name: str = "points") -> np.ndarray:
    """Return `points` as a (P, 3) real array; raise ValueError naming the problem.

    The array is not copied when it already is a real float array.
    """
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (P, 3), got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (P = 0)")
    if not np.issubdtype(arr.dtype, np.floating):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return arr


def check_organized(xyz, name: str = "xyz") -> np.ndarray:
    """Return `xyz` as an (H, W, 3) real array; raise ValueError naming the problem."""
    arr = np.asarray(xyz)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{name} must be an organized cloud of shape (H, W, 3), got {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty, shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates (use 0 for no measurement)")
    return arr


def check_index(index, size: int, name: str, ndim: int = 1) -> np.ndarray:
    """Return `index` as an int64 array of `ndim` dims with values in [0, size)."""
    arr = np.asarray(index)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= size):
        raise ValueError(f"{name} has entries outside [0, {size})")
    return arr


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Return `value` as an int >= minimum; raise ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
