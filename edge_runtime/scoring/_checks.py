"""Input checks shared by the scoring functions: one place, messages that name the problem."""
from __future__ import annotations

# MuSc-V2's published values: the one place the library and the profiles take them from.
INTERVAL = 0.3  # fraction of the references whose smallest distances are averaged
MAP_SIGMA = 4.0  # Gaussian blur (pixels) of the painted 3D map

import numpy as np


def as_float_array(x, name: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Return ``x`` as a float16/32/64 array after checking rank and finiteness.

    The array is not copied when it already is one; callers never write to it.
    """
    a = np.asarray(x)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        want = " or ".join(str(d) for d in dims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        if not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
        a = a.astype(np.float32)
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def check_interval(interval: float) -> float:
    if not 0.0 < float(interval) <= 1.0:
        raise ValueError(f"interval must be in (0, 1], got {interval}")
    return float(interval)


def interval_k(n_references: int, interval: float) -> int:
    """How many of the smallest per-reference distances are averaged: max(1, floor(interval * R))."""
    return max(1, int(np.floor(interval * n_references + 1e-9)))
