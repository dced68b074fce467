"""Defects on a simulated part, and their ground truth.

Each defect edits a defect-free :class:`PartScene`: appearance defects edit
only the albedo, geometry defects only the height field, the others both (a
hole also leaves its deepest part unmeasured). The ground truth is where the
edit is noticeable: height changed by more than ``GEOMETRY_THRESHOLD`` or
albedo by more than ``APPEARANCE_THRESHOLD`` in some channel. Sizes are in
metres, so a defect looks the same at every image size.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import cv2
import numpy as np

from edge_runtime.sim.products import DEFECT_KINDS, smoothstep
from edge_runtime.sim.render import PartScene, smooth_field

GEOMETRY_THRESHOLD = 0.00015  # metres: about the scanner's noise
APPEARANCE_THRESHOLD = 0.03  # albedo units: about 8 grey levels

_CONTAMINANTS = ((0.08, 0.08, 0.09), (0.93, 0.93, 0.90), (0.20, 0.35, 0.78), (0.55, 0.50, 0.22), (0.70, 0.12, 0.10))

# height, albedo, newly unmeasured pixels, and the site (row, col) the defect was placed at
Edit = tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[float, float]]


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    return rows, cols


def _site(candidates: np.ndarray, fallback: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """A random pixel (row, col) of ``candidates``, else of ``fallback``, else the centre."""
    for mask in (candidates, fallback):
        idx = np.flatnonzero(mask)
        if idx.size:
            r, c = divmod(int(idx[rng.integers(idx.size)]), mask.shape[1])
            return float(r), float(c)
    return (mask.shape[0] - 1) / 2, (mask.shape[1] - 1) / 2


def _top_site(height: np.ndarray, margin_px: float, rng, site=None) -> tuple[float, float]:
    """A site on the upper part of the surface, ``margin_px`` away from the outline (``site`` if given)."""
    if site is not None:
        return site
    footprint = (height > 0).astype(np.uint8)
    k = 2 * int(np.ceil(margin_px)) + 1
    inner = cv2.erode(footprint, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    return _site(inner & (height >= 0.5 * height.max()), footprint > 0, rng)


def _rim_site(height: np.ndarray, inset_px: float, rng, site=None) -> tuple[float, float]:
    """A site ``inset_px`` inside the part's outline (``site`` if given)."""
    if site is not None:
        return site
    footprint = (height > 0).astype(np.uint8)
    k = 2 * int(np.ceil(inset_px)) + 1
    inner = cv2.erode(footprint, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    rim = (inner > 0) & (cv2.erode(inner, np.ones((3, 3), np.uint8)) == 0)
    return _site(rim, footprint > 0, rng)


def _ellipse_radius(shape, centre, radius_px: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Normalized elliptical radius (1 on the outline) and the polar angle around ``centre``."""
    rows, cols = _grid(shape)
    dy, dx = rows - centre[0], cols - centre[1]
    angle, aspect = rng.uniform(0, np.pi), rng.uniform(0.6, 1.0)
    c, s = np.cos(angle), np.sin(angle)
    a, b = dx * c + dy * s, (-dx * s + dy * c) / aspect
    return np.hypot(a, b) / radius_px, np.arctan2(b, a)


def _blob(shape, centre, radius_px: float, rng, irregularity: float, edge: float) -> np.ndarray:
    """Irregular blob mask (H, W) float32 in [0, 1]: 1 inside, soft ``edge`` (fraction of radius)."""
    rho, theta = _ellipse_radius(shape, centre, radius_px, rng)
    outline = 1.0
    for k in range(2, 7):
        outline = outline + rng.normal(0, irregularity / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return smoothstep(1.0, 1.0 - edge, rho / np.maximum(outline, 0.3))


def _stain(scene: PartScene, rng, pitch: float, site=None) -> Edit:
    radius = rng.uniform(0.004, 0.008) / pitch
    site = _top_site(scene.height, radius, rng, site)
    m = _blob(scene.height.shape, site, radius, rng, 0.25, 0.35)
    m *= scene.height > 0
    dark = scene.albedo * rng.uniform(0.3, 0.5) * np.array([1.0, 0.85, 0.7], np.float32)
    albedo = scene.albedo + (dark - scene.albedo) * (rng.uniform(0.6, 0.85) * m)[..., None]
    return scene.height, albedo, None, site


def _discolour(scene: PartScene, rng, pitch: float, site=None) -> Edit:
    radius = rng.uniform(0.005, 0.01) / pitch
    site = _top_site(scene.height, radius, rng, site)
    m = _blob(scene.height.shape, site, radius, rng, 0.15, 0.5)
    m *= scene.height > 0
    mean = scene.albedo[m > 0.5].mean(axis=0) if (m > 0.5).any() else scene.albedo.mean(axis=(0, 1))
    shift = rng.normal(0, 1, 3)
    shift = shift / np.linalg.norm(shift) * rng.uniform(0.16, 0.26)
    shift = np.where((mean + shift < 0.03) | (mean + shift > 0.97), -shift, shift).astype(np.float32)
    albedo = np.clip(scene.albedo + shift * m[..., None], 0.0, 1.0)
    return scene.height, albedo, None, site


def _relief(scene: PartScene, rng, pitch: float, sign: float, site=None) -> Edit:
    radius = rng.uniform(0.004, 0.007) / pitch
    centre = _top_site(scene.height, radius, rng, site)
    rho, _ = _ellipse_radius(scene.height.shape, centre, radius, rng)
    profile = np.where(rho < 1, 0.5 * (1 + np.cos(np.pi * np.minimum(rho, 1.0))), 0.0).astype(np.float32)
    profile *= scene.height > 0
    amount = rng.uniform(0.0008, 0.002)
    if sign < 0:  # a dent cannot go below the plane
        amount = min(amount, 0.6 * float(scene.height[int(centre[0]), int(centre[1])]))
    return np.maximum(scene.height + sign * amount * profile, 0.0), scene.albedo, None, centre


def _dent(scene: PartScene, rng, pitch: float, site=None) -> Edit:
    return _relief(scene, rng, pitch, -1.0, site)


def _bump(scene: PartScene, rng, pitch: float, site=None) -> Edit:
    return _relief(scene, rng, pitch, +1.0, site)


def _missing(scene: PartScene, rng, pitch: float, site=None) -> Edit:
    """A chipped edge: a few mm of material gone, at most 30 % of the local height
    (so the break stays clear of the background plane)."""
    radius = rng.uniform(0.005, 0.009) / pitch
    site = _rim_site(scene.height, 0.7 * radius, rng, site)
    m = _blob(scene.height.shape, site, radius, rng, 0.3, 0.08)
    m *= scene.height > 0
    height = scene.height - m * np.minimum(rng.uniform(0.0025, 0.0045), 0.3 * scene.height)
    return height, scene.albedo, None, site


def _crack(scene: PartScene, rng, pitch: float, site=None) -> Edit:
    length = rng.uniform(0.012, 0.022) / pitch
    site = _top_site(scene.height, 0.3 * length, rng, site)
    y, x = site
    heading, points = rng.uniform(0, 2 * np.pi), [(x, y)]
    n_segments = int(rng.integers(3, 6))
    for _ in range(n_segments):
        heading += rng.uniform(-0.7, 0.7)
        step = length / n_segments
        x, y = x + step * np.cos(heading), y + step * np.sin(heading)
        points.append((x, y))
    canvas = np.zeros(scene.height.shape, np.uint8)
    width = max(1, int(round(rng.uniform(0.0006, 0.0012) / pitch)))
    poly = np.round(np.array(points) * 16).astype(np.int32)  # 4 fractional bits
    cv2.polylines(canvas, [poly], False, 255, thickness=width, lineType=cv2.LINE_AA, shift=4)
    m = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), 0.5) * (scene.height > 0)
    m = np.clip(m * 1.5, 0.0, 1.0)
    depth = np.minimum(rng.uniform(0.0008, 0.0015), 0.7 * scene.height)
    albedo = scene.albedo * (1.0 - 0.65 * m)[..., None]
    return scene.height - depth * m, albedo, None, site


def _hole(scene: PartScene, rng, pitch: float, site=None) -> Edit:
    radius = rng.uniform(0.0025, 0.004) / pitch
    site = _top_site(scene.height, radius + 2, rng, site)
    rho, _ = _ellipse_radius(scene.height.shape, site, radius, rng)
    m = np.clip((1.0 - rho) * radius + 0.5, 0.0, 1.0).astype(np.float32) * (scene.height > 0)
    height = scene.height - m * np.minimum(rng.uniform(0.003, 0.006), scene.height)
    albedo = scene.albedo * (1.0 - 0.8 * m)[..., None]
    return height, albedo, (rho < 0.65) & (scene.height > 0), site


def _contamination(scene: PartScene, rng, pitch: float, site=None) -> Edit:
    radius = rng.uniform(0.003, 0.006) / pitch
    site = _top_site(scene.height, radius, rng, site)
    m = _blob(scene.height.shape, site, radius, rng, 0.35, 0.3)
    m *= scene.height > 0
    local = scene.albedo[m > 0.5].mean(axis=0) if (m > 0.5).any() else scene.albedo.mean(axis=(0, 1))
    far = sorted(_CONTAMINANTS, key=lambda c: -float(np.linalg.norm(np.subtract(c, local))))[:2]
    colour = np.asarray(far[int(rng.integers(2))], np.float32)
    grain = smooth_field(rng, scene.height.shape, 0.0004 / pitch)
    stuff = np.clip(colour * (1.0 + 0.12 * grain)[..., None], 0.0, 1.0)
    albedo = scene.albedo + (stuff - scene.albedo) * (0.95 * m)[..., None]
    height = scene.height + rng.uniform(0.0005, 0.0012) * np.sqrt(m)
    return height, albedo, None, site


_EDITS: dict[str, Callable[..., Edit]] = {  # (scene, rng, pitch, site) -> Edit
    "stain": _stain, "discolour": _discolour, "dent": _dent, "bump": _bump, "missing": _missing,
    "crack": _crack, "hole": _hole, "contamination": _contamination,
}


def change_mask(before: PartScene, after: PartScene) -> np.ndarray:
    """(H, W) bool: where ``after`` differs noticeably from ``before``."""
    geometry = np.abs(after.height - before.height) > GEOMETRY_THRESHOLD
    appearance = np.abs(after.albedo - before.albedo).max(axis=-1) > APPEARANCE_THRESHOLD
    return geometry | appearance | (after.no_measurement & ~before.no_measurement)


def apply_defect(scene: PartScene, defect: str, rng: np.random.Generator, pitch: float,
                 site: tuple[float, float] | None = None, severity: float = 1.0
                 ) -> tuple[PartScene, np.ndarray, tuple[float, float]]:
    """Put ``defect`` on a defect-free scene, at ``site`` (row, col) or a site drawn from ``rng``.

    ``pitch``: metres per pixel. ``severity`` scales the defect's size and the
    depth of its edit (height and albedo moved that fraction of the way), so a
    line with severity < 1 has smaller, fainter defects drawn from the same
    random numbers. Returns the defective scene, its ground truth (H, W) bool
    and the site used. Raises ValueError for an unknown defect or a part with
    no surface to put it on.
    """
    if defect not in _EDITS:
        raise ValueError(f"unknown defect {defect!r}; known: {', '.join(DEFECT_KINDS)}")
    if not (scene.height > 0).any():
        raise ValueError("the scene has no part to put a defect on")
    for _ in range(8):  # a site can land where the edit is invisible (e.g. a dent on a thin rim)
        # the edits draw sizes in metres and divide them by the pitch: pitch / severity scales them all
        height, albedo, unmeasured, used = _EDITS[defect](scene, rng, pitch / severity, site)
        if severity != 1.0:  # at 1 the edit as drawn, bit for bit (lines written before stay the same)
            height = np.maximum(scene.height + severity * (height - scene.height), 0.0)
            albedo = np.clip(scene.albedo + severity * (albedo - scene.albedo), 0.0, 1.0)
        no_measurement = scene.no_measurement if unmeasured is None else scene.no_measurement | unmeasured
        after = replace(
            scene,
            height=height.astype(np.float32),
            albedo=albedo.astype(np.float32),
            no_measurement=no_measurement,
        )
        gt = change_mask(scene, after)
        if gt.sum() >= 4:
            return after, gt, used
    raise ValueError(f"could not place a visible {defect!r} on this part")
