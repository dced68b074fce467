"""Anomaly-map pictures: the part beside its map blended over it, ground truth outlined.

Layout of the PNG (width 2 W): an optional title strip (``TITLE_HEIGHT``),
then the plain image and the overlay side by side (H), then a colour bar from
``vmin`` to ``vmax`` (``BAR_HEIGHT``). Ground-truth regions are outlined in
green on both halves.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

TITLE_HEIGHT = 22
BAR_HEIGHT = 18
_GT_BGR = (0, 255, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _strip(width: int, height: int, text: str, scale: float) -> np.ndarray:
    strip = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, height - 6), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def overlay_image(
    rgb: np.ndarray, anomaly_map: np.ndarray, gt: np.ndarray | None, vmin: float, vmax: float, title: str | None = None
) -> np.ndarray:
    """The picture as a BGR uint8 array ((TITLE_HEIGHT if title) + H + BAR_HEIGHT, 2 W, 3).

    rgb (H, W, 3) uint8; anomaly_map (H, W) float (non-finite values shown as
    vmin); gt (H, W), non-zero = defect, or None. The map is scaled linearly
    from vmin (blue) to vmax (red), so pictures of one run share a scale.
    """
    rgb = np.asarray(rgb)
    amap = np.asarray(anomaly_map, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if amap.shape != rgb.shape[:2]:
        raise ValueError(f"anomaly_map {amap.shape} does not match the image {rgb.shape[:2]}")
    if gt is not None and np.shape(gt) != rgb.shape[:2]:
        raise ValueError(f"gt {np.shape(gt)} does not match the image {rgb.shape[:2]}")
    if not (np.isfinite(vmin) and np.isfinite(vmax)):
        raise ValueError(f"vmin and vmax must be finite, got {vmin}, {vmax}")
    h, w = amap.shape
    span = vmax - vmin if vmax > vmin else 1.0
    level = np.clip((np.nan_to_num(amap, nan=vmin, posinf=vmax, neginf=vmin) - vmin) / span, 0.0, 1.0)
    heat = cv2.applyColorMap(np.round(level * 255).astype(np.uint8), cv2.COLORMAP_JET)
    plain = np.ascontiguousarray(rgb[..., ::-1])
    blended = cv2.addWeighted(plain, 0.5, heat, 0.5, 0.0)
    if gt is not None:
        contours, _ = cv2.findContours((np.asarray(gt) > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for panel in (plain, blended):
            cv2.drawContours(panel, contours, -1, _GT_BGR, 1)
    scale = max(0.3, min(0.5, w / 500))
    ramp = cv2.applyColorMap(np.linspace(0, 255, 2 * w).astype(np.uint8)[None].repeat(BAR_HEIGHT, 0), cv2.COLORMAP_JET)
    for text, x in ((f"{vmin:.3g}", 3), (f"{vmax:.3g}", 2 * w - 9 * len(f"{vmax:.3g}") - 3)):
        cv2.putText(ramp, text, (x, BAR_HEIGHT - 5), _FONT, scale * 0.8, (255, 255, 255), 1, cv2.LINE_AA)
    rows = [np.concatenate([plain, blended], axis=1), ramp]
    if title is not None:
        rows.insert(0, _strip(2 * w, TITLE_HEIGHT, title, scale))
    return np.concatenate(rows, axis=0)


def overlay_png(
    path: str | Path,
    rgb: np.ndarray,
    anomaly_map: np.ndarray,
    gt: np.ndarray | None,
    vmin: float,
    vmax: float,
    title: str | None = None,
) -> Path:
    """Write :func:`overlay_image` as a PNG at ``path`` (folders created); returns the path."""
    path = Path(path)
    picture = overlay_image(rgb, anomaly_map, gt, vmin, vmax, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), picture):
        raise OSError(f"could not write {path}")
    return path
