"""Camera frames to encoder input: resize and normalize as the manifest says."""
from __future__ import annotations

import cv2
import numpy as np


def resize_frame(rgb: np.ndarray, image_size: int) -> np.ndarray:
    """One uint8 (H, W, 3) frame -> uint8 (image_size, image_size, 3), as the encoder input is resized:
    INTER_AREA when shrinking (averages like an anti-aliased resize), INTER_LINEAR when enlarging."""
    h, w = rgb.shape[:2]
    shrink = h >= image_size and w >= image_size
    return cv2.resize(rgb, (image_size, image_size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def preprocess_rgb(rgb: np.ndarray, image_size: int, mean, std) -> np.ndarray:
    """RGB uint8 frames -> normalized encoder input.

    rgb: uint8 (H, W, 3) or (B, H, W, 3), channels in RGB order (convert OpenCV's
    BGR before calling). Each frame is resized to image_size x image_size with
    OpenCV (INTER_AREA when shrinking, which averages like an anti-aliased
    resize; INTER_LINEAR when enlarging), scaled to [0, 1], then
    ``(x - mean) / std`` per channel. The aspect ratio is not kept: the whole
    frame is the part. Returns float32 (B, 3, image_size, image_size). The input
    is not modified.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"rgb frames must be uint8, got {rgb.dtype}")
    if rgb.ndim == 3:
        rgb = rgb[None]
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.shape[1] < 1 or rgb.shape[2] < 1:
        raise ValueError(f"rgb frames must be (H, W, 3) or (B, H, W, 3), got shape {rgb.shape}")
    out = np.empty((rgb.shape[0], image_size, image_size, 3), np.float32)
    for i in range(rgb.shape[0]):
        out[i] = resize_frame(rgb[i], image_size)
    scale = np.float32(1.0 / 255.0)
    mean = np.asarray(mean, np.float32)
    inv_std = np.float32(1.0) / np.asarray(std, np.float32)
    out = (out * scale - mean) * inv_std
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
