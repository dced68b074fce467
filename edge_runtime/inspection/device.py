"""Where a line's window lives: the host (NumPy) or a CUDA GPU (CuPy).

The profile's ``device`` ("cpu", "cuda" or "cuda:N") picks the array module of
the window's features and per-reference rows. Either CuPy build works
(``cupy-cuda12x``, ``cupy-cuda13x``: the `gpu` / `gpu-cuda13` extras); without
one, or without a GPU, a CUDA device is a clear error, never a silent CPU run.
"""
from __future__ import annotations

import contextlib

import numpy as np


def parse_device(device: str) -> tuple[str, int]:
    """"cpu" -> ("cpu", 0); "cuda" / "cuda:N" -> ("cuda", N). Anything else is a ValueError."""
    kind, _, index = str(device).partition(":")
    if kind == "cpu" and not index:
        return "cpu", 0
    if kind == "cuda" and (not index or index.isdigit()):
        return "cuda", int(index or 0)
    raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def cupy_or_reason():
    """(cupy, None) when CuPy imports and sees a GPU, else (None, why not)."""
    try:
        import cupy
    except ImportError as e:
        return None, f"CuPy is not installed (install the `gpu` or `gpu-cuda13` extra): {e}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError without a driver
        return None, f"CuPy sees no CUDA GPU: {e}"
    if count < 1:
        return None, "CuPy sees no CUDA GPU"
    return cupy, None


def array_module(device: str):
    """The array module for ``device``: numpy, or cupy (RuntimeError saying why it cannot run here)."""
    kind, index = parse_device(device)
    if kind == "cpu":
        return np
    cupy, reason = cupy_or_reason()
    if cupy is None:
        raise RuntimeError(f"device {device!r} requested but the GPU path cannot run here: {reason}")
    if index >= cupy.cuda.runtime.getDeviceCount():
        raise RuntimeError(f"device {device!r} requested but only {cupy.cuda.runtime.getDeviceCount()} GPU(s) exist")
    return cupy


def on_device(xp, device: str):
    """Context that makes ``device`` current for CuPy calls (nothing on the host)."""
    return contextlib.nullcontext() if xp is np else xp.cuda.Device(parse_device(device)[1])


def to_host(x) -> np.ndarray:
    """A NumPy array of x (a copy from the GPU for a CuPy array; x itself on the host)."""
    return x.get() if hasattr(x, "get") and not isinstance(x, np.ndarray) else np.asarray(x)
