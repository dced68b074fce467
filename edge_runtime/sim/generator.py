"""Simulated product lines: parts one by one, or a whole line on disk.

Everything is deterministic in (seed, class name, part index): each part
draws from its own PCG64 streams, one for the part and its capture, one for
its defect, so a part renders identically with and without its defect except
where the defect is. A line on disk has the MVTec 3D-AD test layout::

    <root>/<class>/test/<defect>/rgb/NNN.png    8-bit RGB
    <root>/<class>/test/<defect>/xyz/NNN.tiff   float32 H x W x 3, metres, zeros = no measurement
    <root>/<class>/test/<defect>/gt/NNN.png     8-bit {0, 255} (not for "good")
    <root>/<class>/sim_meta.json                spec, burst, and per file its defect kind and arrival order

A line may carry a systematic burst (a worn tool, a bad batch): the same
defect, drawn from one random stream, at the same image site on every part of
a run of consecutive parts; the other parts keep their random defects.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import tifffile
from tqdm import tqdm

from edge_runtime.sim.defects import apply_defect
from edge_runtime.sim.products import DEFECT_KINDS, LineSpec, PartLayers, line_spec, name_hash, part_layers
from edge_runtime.sim.render import (
    PartScene, capture, grazing, pixel_rays, plane_depth, points_from_depth, smooth_field,
)

META_FILE = "sim_meta.json"
META_FORMAT = "musc-edge sim line v1"

_PART, _DEFECT, _PLAN = 0, 1, 2  # independent random streams per part


@dataclass(frozen=True)
class SimPart:
    """One captured part.

    rgb (H, W, 3) uint8; xyz (H, W, 3) float32 metres, exact zeros where not
    measured; gt (H, W) uint8 in {0, 255}; defect "good" or a defect name;
    defect_kind "none" | "appearance" | "geometry" | "both".
    """

    rgb: np.ndarray
    xyz: np.ndarray
    gt: np.ndarray
    defect: str
    defect_kind: str
    part_index: int


@dataclass(frozen=True)
class Burst:
    """A systematic defect: ``defect`` at the same place on parts [start, start + length)."""

    defect: str
    start: int
    length: int

    def __post_init__(self) -> None:
        if self.defect not in DEFECT_KINDS:
            raise ValueError(f"unknown systematic defect {self.defect!r}; known: {', '.join(DEFECT_KINDS)}")
        if self.start < 0 or self.length < 1:
            raise ValueError(f"a burst needs start >= 0 and length >= 1, got {self.start}, {self.length}")

    def covers(self, part_index: int) -> bool:
        return self.start <= part_index < self.start + self.length


def _rng(seed: int, class_name: str, part_index: int, stream: int) -> np.random.Generator:
    sequence = np.random.SeedSequence([seed, name_hash(class_name), part_index, stream])
    return np.random.Generator(np.random.PCG64(sequence))


def _part_frame(spec: LineSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Part-frame coordinates (s, t) of every pixel, metres, under this part's pose jitter."""
    size, pitch = spec.image_size, spec.pixel_pitch
    spread = spec.variation
    shift = rng.uniform(-1, 1, 2) * spec.pose_shift * spread * size
    angle = np.deg2rad(rng.uniform(-1, 1) * spec.pose_rotation * spread)
    scale = 1.0 + spec.size_jitter * spread * rng.uniform(-1, 1)  # parts differ a little in size
    centre = (size - 1) / 2.0
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = (u - centre - shift[0]) * pitch / scale, (v - centre - shift[1]) * pitch / scale
    return np.cos(angle) * x + np.sin(angle) * y, -np.sin(angle) * x + np.cos(angle) * y


def _light(spec: LineSpec, rng: np.random.Generator) -> np.ndarray:
    """Unit vector towards this capture's light, camera frame (3,) float32."""
    azimuth = np.deg2rad(spec.light_azimuth + spec.variation * rng.uniform(-15, 15))
    elevation = np.deg2rad(min(spec.light_elevation + spec.variation * rng.uniform(-5, 5), 89.0))
    return np.array(
        [np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), -np.sin(elevation)], np.float32
    )


def _background(spec: LineSpec, part: PartLayers, light: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Albedo (H, W, 3) of the plane: its own faint texture and the part's soft shadow."""
    size, pitch = spec.image_size, spec.pixel_pitch
    standing = part.height[part.height > 0]
    # The shadow falls away from the light, as far as a typical height over the light's slope.
    reach = float(np.percentile(standing, 75)) / pitch if standing.size else 0.0
    along = -light[:2] / max(float(-light[2]), 1e-3) * reach
    offset = np.float32([[1, 0, along[0]], [0, 1, along[1]]])
    shadow = cv2.GaussianBlur(cv2.warpAffine(part.cover, offset, (size, size)), (0, 0), max(1.0, 0.02 * size))
    texture = 1.0 + 0.06 * smooth_field(rng, (size, size), 0.01 / pitch)
    texture += 0.05 * smooth_field(rng, (size, size), 0.0008 / pitch)
    return np.asarray(spec.background, np.float32) * (texture * (1.0 - 0.5 * shadow))[..., None]


def part_scene(spec: LineSpec, part_index: int, seed: int) -> PartScene:
    """The defect-free scene of part ``part_index``: pose, texture, light and sensor noise."""
    rng = _rng(seed, spec.class_name, part_index, _PART)
    size = spec.image_size
    part = part_layers(spec, *_part_frame(spec, rng), rng)
    rays = pixel_rays(size, spec.focal_px)
    spread = spec.variation
    tilt = (spec.plane_tilt[0] + 0.004 * spread * rng.standard_normal(),
            spec.plane_tilt[1] + 0.004 * spread * rng.standard_normal())
    plane = plane_depth(rays, spec.camera_distance, tilt)
    light = _light(spec, rng)
    background = _background(spec, part, light, rng)
    tint = (1.0 + 0.03 * spread * rng.standard_normal()) * (1.0 + 0.01 * spread * rng.standard_normal(3))
    albedo = background + (np.clip(part.albedo * tint.astype(np.float32), 0, 1) - background) * part.cover[..., None]
    unmeasured = grazing(points_from_depth(plane - part.height, rays)) | (rng.random((size, size)) < spec.dropout)
    return PartScene(
        height=part.height,
        albedo=np.clip(albedo, 0.0, 1.0).astype(np.float32),
        plane_depth=plane,
        rays=rays,
        light=light,
        light_gain=float(1.0 + spread * rng.uniform(-0.08, 0.08)),
        gloss=spec.gloss,
        depth_noise=spec.depth_noise * rng.standard_normal((size, size), dtype=np.float32),
        rgb_noise=spec.rgb_noise * rng.standard_normal((size, size, 3), dtype=np.float32),
        no_measurement=unmeasured,
    )


@lru_cache(maxsize=8)
def _burst_site(spec: LineSpec, seed: int, burst: Burst) -> tuple[float, float]:
    """Where the burst's defect sits: the site drawn for it on the burst's first part."""
    scene = part_scene(spec, burst.start, seed)
    rng = _rng(seed, spec.class_name, burst.start, _DEFECT)
    return apply_defect(scene, burst.defect, rng, spec.pixel_pitch, severity=spec.severity)[2]


def defective_scene(spec: LineSpec, part_index: int, seed: int, defect: str | None,
                    burst: Burst | None = None) -> tuple[PartScene, np.ndarray]:
    """Part ``part_index`` with ``defect`` (a name of ``DEFECT_KINDS``, or None)
    and its ground truth (H, W) bool; the same part as ``part_scene`` elsewhere.
    A part the ``burst`` covers gets the burst's defect, drawn alike, at the burst's site."""
    scene = part_scene(spec, part_index, seed)
    if burst is not None and burst.covers(part_index):
        rng = _rng(seed, spec.class_name, burst.start, _DEFECT)
        return apply_defect(scene, burst.defect, rng, spec.pixel_pitch, _burst_site(spec, seed, burst),
                            spec.severity)[:2]
    if defect is None:
        return scene, np.zeros(scene.height.shape, bool)
    rng = _rng(seed, spec.class_name, part_index, _DEFECT)
    return apply_defect(scene, defect, rng, spec.pixel_pitch, severity=spec.severity)[:2]


def render_part(spec: LineSpec, part_index: int, seed: int, defect: str | None = None,
                burst: Burst | None = None) -> SimPart:
    """Capture part ``part_index`` of ``spec``'s line, with ``defect`` (a name of
    ``DEFECT_KINDS``) or defect-free (None); a part ``burst`` covers carries the burst's defect."""
    if burst is not None and burst.covers(part_index):
        defect = burst.defect
    scene, gt = defective_scene(spec, part_index, seed, defect, burst)
    rgb, xyz = capture(scene)
    return SimPart(
        rgb=rgb,
        xyz=xyz,
        gt=gt.astype(np.uint8) * 255,
        defect=defect or "good",
        defect_kind=DEFECT_KINDS.get(defect, "none"),
        part_index=part_index,
    )


def defect_plan(spec: LineSpec, n_parts: int, defect_rate: float, seed: int,
                burst: Burst | None = None) -> list[str | None]:
    """Which parts are defective and how: the burst's parts carry its defect;
    of the others exactly round(defect_rate * their number), the line's defects
    dealt in turn (balanced), positions shuffled."""
    if n_parts < 0:
        raise ValueError(f"n_parts must be >= 0, got {n_parts}")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in [0, 1], got {defect_rate}")
    if burst is not None and burst.start + burst.length > n_parts:
        raise ValueError(f"the burst (parts {burst.start}..{burst.start + burst.length - 1}) "
                         f"does not fit in {n_parts} parts")
    rng = _rng(seed, spec.class_name, 0, _PLAN)
    free = [i for i in range(n_parts) if burst is None or not burst.covers(i)]
    n_bad = int(round(defect_rate * len(free)))
    dealt = [spec.defects[i % len(spec.defects)] for i in range(n_bad)]
    dealt = [dealt[i] for i in rng.permutation(n_bad)]
    plan: list[str | None] = [burst.defect if burst is not None and burst.covers(i) else None for i in range(n_parts)]
    for position, defect in zip(sorted(free[j] for j in rng.permutation(len(free))[:n_bad]), dealt):
        plan[position] = defect
    return plan


def iter_parts(
    class_name: str,
    n_parts: int | None,
    defect_rate: float,
    seed: int,
    image_size: int = 256,
    spec: LineSpec | None = None,
    burst: Burst | None = None,
) -> Iterator[SimPart]:
    """Parts of a line in arrival order.

    With ``n_parts`` the defect mix follows :func:`defect_plan`; with None the
    stream is endless and each part is defective with probability
    ``defect_rate`` (the live sensors' mode). ``spec`` defaults to
    ``line_spec(class_name, seed, image_size)``; ``burst``: a systematic defect.
    """
    spec = spec or line_spec(class_name, seed, image_size)
    if n_parts is not None:
        for index, defect in enumerate(defect_plan(spec, n_parts, defect_rate, seed, burst)):
            yield render_part(spec, index, seed, defect, burst)
        return
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in [0, 1], got {defect_rate}")
    index = 0
    while True:
        rng = _rng(seed, spec.class_name, index, _PLAN)
        defect = str(rng.choice(spec.defects)) if rng.random() < defect_rate else None
        yield render_part(spec, index, seed, defect, burst)
        index += 1


def write_tiff(path: str | Path, xyz: np.ndarray) -> None:
    """An organized cloud (H, W, 3) float32 as an MVTec 3D-AD TIFF."""
    tifffile.imwrite(path, np.ascontiguousarray(xyz, np.float32), photometric="rgb")


def _write_png(path: Path, image: np.ndarray) -> None:
    bgr = image[..., ::-1] if image.ndim == 3 else image
    if not cv2.imwrite(str(path), np.ascontiguousarray(bgr)):
        raise OSError(f"could not write {path}")


def write_line(
    root: str | Path,
    class_name: str,
    n_parts: int,
    defect_rate: float,
    seed: int,
    image_size: int = 256,
    spec: LineSpec | None = None,
    overwrite: bool = False,
    progress: bool = False,
    burst: Burst | None = None,
) -> dict:
    """Write a line in the MVTec 3D-AD test layout under ``root/class_name``.

    The line is written to a hidden sibling folder and renamed into place, so
    ``root/class_name`` is either complete or absent. Returns a summary:
    class, path, parts, per-defect and per-kind counts, seconds.
    """
    spec = spec or line_spec(class_name, seed, image_size)
    root = Path(root)
    final = root / class_name
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists; pass overwrite=True (--overwrite) to replace it")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{class_name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    files = []
    try:
        parts = iter_parts(class_name, n_parts, defect_rate, seed, spec=spec, burst=burst)
        for part in tqdm(parts, total=n_parts, desc=class_name, unit="part", disable=not progress):
            name = f"{counts[part.defect]:03d}"
            counts[part.defect] += 1
            folder = staging / "test" / part.defect
            for sub in ("rgb", "xyz") + (("gt",) if part.defect != "good" else ()):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            _write_png(folder / "rgb" / f"{name}.png", part.rgb)
            write_tiff(folder / "xyz" / f"{name}.tiff", part.xyz)
            if part.defect != "good":
                _write_png(folder / "gt" / f"{name}.png", part.gt)
            files.append({
                "defect": part.defect, "name": name, "defect_kind": part.defect_kind,
                "part_index": part.part_index, "gt_pixels": int(np.count_nonzero(part.gt)),
                "systematic": burst is not None and burst.covers(part.part_index),
            })
        meta = {
            "format": META_FORMAT, "class_name": class_name, "seed": seed, "n_parts": n_parts,
            "defect_rate": defect_rate, "spec": asdict(spec), "burst": asdict(burst) if burst else None,
            "parts": files,
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=1))
        if final.exists():
            retired = root / f".{class_name}.old-{os.getpid()}"
            os.rename(final, retired)
            os.rename(staging, final)
            shutil.rmtree(retired)
        else:
            os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    kinds = Counter(f["defect_kind"] for f in files)
    return {
        "class": class_name, "path": str(final), "family": spec.family, "parts": len(files),
        "by_defect": dict(sorted(counts.items())), "by_kind": dict(sorted(kinds.items())),
        "seconds": time.perf_counter() - started,
    }
