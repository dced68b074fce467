"""Contact sheet of a simulated line: a few good parts and one of each defect.

Each tile shows the RGB image with the ground truth outlined in red above the
depth of the organized cloud (near = bright, unmeasured = black).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from edge_runtime.sim.generator import Burst, SimPart, defect_plan, render_part
from edge_runtime.sim.products import LineSpec


def depth_image(xyz: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB rendering of an organized cloud's depth; zeros stay black."""
    z = xyz[..., 2]
    measured = z != 0
    out = np.zeros((*z.shape, 3), np.uint8)
    if not measured.any():
        return out
    lo, hi = np.percentile(z[measured], [1, 99])
    near = np.clip((hi - z) / max(hi - lo, 1e-9), 0.0, 1.0)  # nearer the camera = brighter
    coloured = cv2.applyColorMap((near * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]
    out[measured] = coloured[measured]
    return out


def part_tile(part: SimPart, size: int) -> np.ndarray:
    """One part as a (2 * size + 18, size, 3) uint8 RGB tile: label, image with gt outline, depth."""
    rgb = cv2.resize(part.rgb, (size, size), interpolation=cv2.INTER_AREA)
    gt = cv2.resize(part.gt, (size, size), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours((gt > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    rgb = np.ascontiguousarray(rgb)
    cv2.drawContours(rgb, contours, -1, (255, 0, 0), 1)
    depth = cv2.resize(depth_image(part.xyz), (size, size), interpolation=cv2.INTER_NEAREST)
    label = np.full((18, size, 3), 255, np.uint8)
    cv2.putText(label, f"{part.part_index}: {part.defect}", (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                cv2.LINE_AA)
    return np.concatenate([label, rgb, depth], axis=0)


def contact_sheet(parts: Sequence[SimPart], tile: int = 160, columns: int = 6) -> np.ndarray:
    """Tiles of ``parts`` in rows of ``columns``: (rows * (2 * tile + 18), columns * tile, 3) uint8 RGB."""
    if not parts:
        raise ValueError("contact_sheet needs at least one part")
    tiles = [part_tile(p, tile) for p in parts]
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def preview_parts(spec: LineSpec, n_parts: int, defect_rate: float, seed: int, n_good: int = 4,
                  burst: Burst | None = None) -> list[SimPart]:
    """The first ``n_good`` good parts of the line and the first part of each defect in it."""
    chosen, seen, goods = [], set(), 0
    for index, defect in enumerate(defect_plan(spec, n_parts, defect_rate, seed, burst)):
        if defect is None and goods < n_good:
            goods += 1
            chosen.append((index, defect))
        elif defect is not None and defect not in seen:
            seen.add(defect)
            chosen.append((index, defect))
    return [render_part(spec, index, seed, defect, burst) for index, defect in chosen]


def write_preview(path: str | Path, parts: Sequence[SimPart], tile: int = 160, columns: int = 6) -> Path:
    """Write the contact sheet of ``parts`` as a PNG; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), contact_sheet(parts, tile, columns)[..., ::-1]):
        raise OSError(f"could not write {path}")
    return path
