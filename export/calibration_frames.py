"""Reading an int8 calibration folder: preprocessed frames saved as .npy files.

Format: any number of ``*.npy`` files, each float32 (3, S, S) or (N, 3, S, S),
already resized and normalized as the encoder's input (what
``Engine.preprocess_rgb`` returns). Files are read in name order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def read_calibration_frames(folder: str | Path, image_size: int, limit: int | None = 512) -> np.ndarray:
    """All frames of a calibration folder as float32 (N, 3, S, S), at most ``limit`` of them.

    Missing folder, no .npy files, a wrong shape or non-finite values are a
    ValueError naming the folder or file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"calibration folder {folder} does not exist")
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise ValueError(f"calibration folder {folder} holds no .npy frames")
    frames = []
    count = 0
    for f in files:
        a = np.load(f, allow_pickle=False)
        a = a[None] if a.ndim == 3 else a
        if a.ndim != 4 or a.shape[1:] != (3, image_size, image_size):
            raise ValueError(f"calibration frame {f} has shape {a.shape}, expected (3, {image_size}, {image_size}) "
                             f"or (N, 3, {image_size}, {image_size})")
        if not np.isfinite(a).all():
            raise ValueError(f"calibration frame {f} contains NaN or infinite values")
        frames.append(a.astype(np.float32))
        count += len(a)
        if limit is not None and count >= limit:
            break
    out = np.concatenate(frames)
    return np.ascontiguousarray(out[:limit] if limit is not None else out)
