"""Simulated products: what a line makes, and the shape and texture of one part.

A :class:`LineSpec` fixes a product: its family (tile, cookie, bagel, dome,
foam, gland), size, palette, surface texture, the plane it stands on, the
light, the sensor noise and the defects that occur on the line.
:func:`line_spec` derives a distinct product from a class name; a name that
contains a family keyword ("bagel", "cookie", "potato", ...) gets that family.
:func:`part_layers` draws one part of a product: its height field, coverage
and albedo in the part's own coordinates.
"""
from __future__ import annotations

import dataclasses

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge_runtime.sim.render import smooth_field

# Folder name of each defect -> what it changes.
DEFECT_KINDS: dict[str, str] = {
    "stain": "appearance",
    "discolour": "appearance",
    "dent": "geometry",
    "bump": "geometry",
    "missing": "geometry",
    "crack": "both",
    "hole": "both",
    "contamination": "both",
}
DEFECTS: tuple[str, ...] = tuple(DEFECT_KINDS)

FAMILY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "tile": ("tile", "tire", "slab", "plate", "brick"),
    "cookie": ("cookie", "biscuit", "cracker", "praline"),
    "bagel": ("bagel", "donut", "doughnut", "ring", "washer"),
    "dome": ("dome", "potato", "peach", "carrot", "candy", "bean"),
    "foam": ("foam", "sponge", "rope", "pad"),
    "gland": ("gland", "cable", "nut", "bolt", "cap", "dowel"),
}
FAMILIES: tuple[str, ...] = tuple(FAMILY_KEYWORDS)

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class LineSpec:
    """A simulated product line. Lengths in metres, colours RGB in [0, 1].

    The camera looks straight down from ``camera_distance`` above a plane
    tilted by ``plane_tilt`` (slopes dz/dx, dz/dy) and sees ``field_of_view``
    metres across; so one pixel is ``field_of_view / image_size`` metres.
    ``palette`` is (base, secondary, accent) of the part. ``severity``
    scales every defect's size and how far it departs from the part (1: as
    drawn; 0.6: 0.6 times as wide and as deep or as contrasted); ``variation``
    scales the part-to-part nuisance (pose, size, tint, light, table tilt).
    Both make a line harder than the defaults, which are easier than many real
    parts (docs/ABLATION.md, "Harder lines").
    """

    class_name: str
    family: str
    image_size: int = 256
    camera_distance: float = 0.25
    field_of_view: float = 0.10
    part_size: float = 0.06
    part_height: float = 0.012
    aspect: float = 1.0
    palette: tuple[RGB, RGB, RGB] = ((0.8, 0.6, 0.35), (0.6, 0.4, 0.2), (0.25, 0.15, 0.08))
    background: RGB = (0.15, 0.15, 0.16)
    texture_scale: float = 0.005
    texture_contrast: float = 0.5
    roughness: float = 0.0001
    gloss: float = 0.1
    plane_tilt: tuple[float, float] = (0.02, -0.01)
    light_azimuth: float = 30.0
    light_elevation: float = 60.0
    depth_noise: float = 0.00015
    rgb_noise: float = 0.008
    dropout: float = 0.002
    pose_shift: float = 0.03
    pose_rotation: float = 5.0
    size_jitter: float = 0.03
    defects: tuple[str, ...] = DEFECTS
    severity: float = 1.0
    variation: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.family not in FAMILIES:
            problems.append(f"unknown family {self.family!r} (known: {', '.join(FAMILIES)})")
        if not 32 <= self.image_size <= 4096:
            problems.append(f"image_size {self.image_size} outside [32, 4096]")
        if not 0 < self.part_size < self.field_of_view:
            problems.append(f"part_size {self.part_size} m must be in (0, field_of_view={self.field_of_view})")
        if not 0 < self.part_height < self.camera_distance / 4:
            problems.append(f"part_height {self.part_height} m must be in (0, camera_distance / 4)")
        if not 0.2 <= self.aspect <= 1.0:
            problems.append(f"aspect {self.aspect} outside [0.2, 1]")
        for name in ("depth_noise", "rgb_noise", "dropout", "roughness", "gloss", "pose_shift", "pose_rotation",
                     "size_jitter"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if not 0 < self.severity <= 2:
            problems.append(f"severity {self.severity} outside (0, 2]")
        if not 0 <= self.variation <= 4:
            problems.append(f"variation {self.variation} outside [0, 4]")
        if not 10 <= self.light_elevation <= 90:
            problems.append(f"light_elevation {self.light_elevation} outside [10, 90] degrees")
        unknown = [d for d in self.defects if d not in DEFECT_KINDS]
        if unknown or not self.defects:
            problems.append(f"defects must be a non-empty subset of {', '.join(DEFECTS)}; got {list(self.defects)}")
        colours = [*self.palette, self.background]
        if len(self.palette) != 3 or any(len(c) != 3 or min(c) < 0 or max(c) > 1 for c in colours):
            problems.append("palette must be 3 RGB colours and background one RGB colour, all in [0, 1]")
        if problems:
            raise ValueError(f"invalid LineSpec for {self.class_name!r}: " + "; ".join(problems))

    @property
    def pixel_pitch(self) -> float:
        """Metres per pixel on the background plane."""
        return self.field_of_view / self.image_size

    @property
    def focal_px(self) -> float:
        """Focal length in pixels."""
        return self.image_size * self.camera_distance / self.field_of_view


@dataclass(frozen=True)
class PartLayers:
    """One part in its own frame: height (H, W) float32 metres, cover (H, W)
    float32 in [0, 1] (anti-aliased footprint), albedo (H, W, 3) float32."""

    height: np.ndarray
    cover: np.ndarray
    albedo: np.ndarray


@dataclass(frozen=True)
class _Look:
    """What a family's products can look like: palettes (base, secondary,
    accent) and ranges (metres) line_spec draws from."""

    palettes: tuple[tuple[RGB, RGB, RGB], ...]
    size: tuple[float, float]
    height: tuple[float, float]
    aspect: tuple[float, float]
    gloss: float
    texture: tuple[float, float]
    roughness: float


_FAMILY_LOOKS: dict[str, _Look] = {
    "tile": _Look(
        (((0.72, 0.38, 0.24), (0.58, 0.29, 0.19), (0.90, 0.85, 0.80)),
         ((0.86, 0.84, 0.78), (0.72, 0.70, 0.64), (0.30, 0.30, 0.32)),
         ((0.36, 0.38, 0.41), (0.27, 0.28, 0.30), (0.62, 0.62, 0.64)),
         ((0.30, 0.55, 0.45), (0.22, 0.44, 0.36), (0.85, 0.90, 0.85))),
        (0.055, 0.07), (0.008, 0.012), (0.55, 0.8), 0.25, (0.005, 0.009), 0.00005),
    "cookie": _Look(
        (((0.82, 0.62, 0.36), (0.60, 0.38, 0.18), (0.22, 0.12, 0.07)),
         ((0.42, 0.27, 0.17), (0.30, 0.18, 0.10), (0.88, 0.82, 0.70)),
         ((0.88, 0.74, 0.50), (0.70, 0.50, 0.28), (0.55, 0.15, 0.12))),
        (0.055, 0.066), (0.010, 0.014), (1.0, 1.0), 0.03, (0.003, 0.005), 0.00015),
    "bagel": _Look(
        (((0.72, 0.45, 0.20), (0.92, 0.78, 0.52), (0.96, 0.92, 0.78)),
         ((0.45, 0.28, 0.15), (0.72, 0.56, 0.36), (0.93, 0.88, 0.70)),
         ((0.80, 0.58, 0.30), (0.95, 0.86, 0.64), (0.20, 0.16, 0.12))),
        (0.06, 0.07), (0.018, 0.024), (1.0, 1.0), 0.15, (0.003, 0.005), 0.0001),
    "dome": _Look(
        (((0.78, 0.66, 0.45), (0.62, 0.50, 0.32), (0.35, 0.25, 0.15)),
         ((0.90, 0.55, 0.35), (0.80, 0.32, 0.25), (0.95, 0.80, 0.40)),
         ((0.90, 0.45, 0.12), (0.78, 0.35, 0.08), (0.50, 0.30, 0.10))),
        (0.05, 0.065), (0.020, 0.030), (0.65, 0.85), 0.06, (0.006, 0.010), 0.0001),
    "foam": _Look(
        (((0.88, 0.82, 0.55), (0.62, 0.57, 0.36), (0.75, 0.70, 0.48)),
         ((0.70, 0.70, 0.72), (0.45, 0.45, 0.48), (0.60, 0.60, 0.62)),
         ((0.35, 0.50, 0.75), (0.22, 0.34, 0.55), (0.30, 0.44, 0.66))),
        (0.055, 0.07), (0.015, 0.020), (0.6, 0.9), 0.0, (0.008, 0.012), 0.00008),
    "gland": _Look(
        (((0.13, 0.13, 0.14), (0.20, 0.20, 0.22), (0.32, 0.32, 0.33)),
         ((0.75, 0.60, 0.30), (0.62, 0.49, 0.22), (0.90, 0.80, 0.50)),
         ((0.56, 0.57, 0.59), (0.44, 0.45, 0.47), (0.70, 0.71, 0.72))),
        (0.05, 0.06), (0.020, 0.026), (1.0, 1.0), 0.5, (0.008, 0.012), 0.00003),
}
_BACKGROUNDS: tuple[RGB, ...] = ((0.07, 0.07, 0.08), (0.20, 0.20, 0.21), (0.34, 0.33, 0.32), (0.14, 0.17, 0.21))


def name_hash(name: str) -> int:
    """Stable 32-bit hash of a name (Python's ``hash`` changes between runs)."""
    return zlib.crc32(name.encode("utf-8"))


def family_of(class_name: str) -> str:
    """The family a class name asks for by keyword, else one picked by its hash."""
    lowered = class_name.lower()
    for family, keywords in FAMILY_KEYWORDS.items():
        if any(k in lowered for k in keywords):
            return family
    return FAMILIES[name_hash(class_name) % len(FAMILIES)]


def line_spec(class_name: str, seed: int = 0, image_size: int = 256) -> LineSpec:
    """A distinct product for ``class_name``; ``seed`` picks the variant.

    Deterministic in (class_name, seed). The line's defect mix is 5 to 8 of
    the known defects with at least one of each kind.
    """
    if not class_name or "/" in class_name or class_name.startswith("."):
        raise ValueError(f"class name {class_name!r} must be a plain folder name")
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([name_hash(class_name), seed, 7])))
    family = family_of(class_name)
    look = _FAMILY_LOOKS[family]
    base = look.palettes[int(rng.integers(len(look.palettes)))]
    tint = 1.0 + 0.06 * rng.standard_normal(3)
    palette = tuple(tuple(float(v) for v in np.clip(np.asarray(c) * tint, 0.0, 1.0)) for c in base)
    by_kind = {k: [d for d in DEFECTS if DEFECT_KINDS[d] == k] for k in ("appearance", "geometry", "both")}
    chosen = {str(rng.choice(names)) for names in by_kind.values()}
    extra = [d for d in DEFECTS if d not in chosen]
    chosen |= {str(d) for d in rng.choice(extra, size=int(rng.integers(2, len(extra) + 1)), replace=False)}
    return LineSpec(
        class_name=class_name,
        family=family,
        image_size=image_size,
        part_size=float(rng.uniform(*look.size)),
        part_height=float(rng.uniform(*look.height)),
        aspect=float(rng.uniform(*look.aspect)),
        palette=palette,
        background=_BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))],
        texture_scale=float(rng.uniform(*look.texture)),
        texture_contrast=float(rng.uniform(0.35, 0.7)),
        roughness=look.roughness,
        gloss=look.gloss,
        plane_tilt=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.04, 0.04))),
        light_azimuth=float(rng.uniform(0.0, 360.0)),
        light_elevation=float(rng.uniform(45.0, 70.0)),
        defects=tuple(d for d in DEFECTS if d in chosen),
    )


FIXTURE_GRID = 28  # patches across the encoder's input (EfficientNet-Lite0 at 224 px, stride 8)


def fixtured(spec: LineSpec, grid: int = FIXTURE_GRID) -> LineSpec:
    """The same product held in a fixture: pose jitter below one patch of a ``grid``-wide patch grid.

    Budget per part, in patches, at the image corner: shift up to 0.35 per axis,
    rotation 0.35, size 0.1; together under one patch.
    """
    corner = grid / np.sqrt(2.0)  # patches from the centre to a corner
    return dataclasses.replace(spec, pose_shift=0.35 / grid, pose_rotation=float(np.rad2deg(0.35 / corner)),
                               size_jitter=0.1 / corner)


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Cubic ramp from 0 at ``e0`` to 1 at ``e1`` (float32, same shape as x)."""
    u = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return (u * u * (3.0 - 2.0 * u)).astype(np.float32)


def _wobble(rng: np.random.Generator, theta: np.ndarray, amplitude: float) -> np.ndarray:
    """A smooth random function of the angle (orders 2..6), peak ~ amplitude."""
    out = np.zeros_like(theta)
    for k in range(2, 7):
        a, phase = rng.normal(0.0, amplitude / k), rng.uniform(0.0, 2 * np.pi)
        out += a * np.cos(k * theta + phase)
    return out


def _rounded_rect_sdf(s: np.ndarray, t: np.ndarray, hx: float, hy: float, r: float) -> np.ndarray:
    """Signed distance (metres, negative inside) to a rounded rectangle."""
    qx, qy = np.abs(s) - (hx - r), np.abs(t) - (hy - r)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0) - r


def _cover(sdf: np.ndarray, pitch: float) -> np.ndarray:
    """Anti-aliased footprint from a signed distance: ~1 px wide edge."""
    return np.clip(0.5 - sdf / pitch, 0.0, 1.0).astype(np.float32)


def _mix(a: np.ndarray, b, w: np.ndarray) -> np.ndarray:
    """Per-pixel blend a*(1-w) + b*w of colour images/colours, w (H, W)."""
    return a + (np.asarray(b, np.float32) - a) * w[..., None]


def _mottled(spec: LineSpec, rng, shape, pitch) -> np.ndarray:
    """Base colour mottled with the secondary colour at the product's texture scale."""
    blotch = smooth_field(rng, shape, spec.texture_scale / pitch)
    grain = smooth_field(rng, shape, 0.0006 / pitch)
    w = spec.texture_contrast * smoothstep(-1.2, 1.6, blotch + 0.25 * grain)
    base = np.broadcast_to(np.asarray(spec.palette[0], np.float32), (*shape, 3))
    return _mix(base, spec.palette[1], w) * (1.0 + 0.03 * grain)[..., None]


def _tile(spec, s, t, pitch, rng) -> PartLayers:
    hx, hy = spec.part_size / 2, spec.part_size * spec.aspect / 2
    sdf = _rounded_rect_sdf(s, t, hx, hy, 0.15 * hy)
    bevel = 0.3 * spec.part_height
    top = smoothstep(0.0, bevel, -sdf)
    period = 2 * hx / 4
    groove = sum(np.exp(-(((s - c) / 0.0007) ** 2)) for c in (-period, 0.0, period))
    groove = (groove * smoothstep(0.0, 2 * bevel, -sdf)).astype(np.float32)
    height = spec.part_height * top - 0.1 * spec.part_height * groove
    height += spec.roughness * smooth_field(rng, s.shape, 0.0006 / pitch) * top
    albedo = _mottled(spec, rng, s.shape, pitch)
    speckle = smoothstep(2.0, 2.6, smooth_field(rng, s.shape, 0.0004 / pitch))
    albedo = _mix(albedo, spec.palette[2], 0.8 * speckle) * (1.0 - 0.35 * groove)[..., None]
    return PartLayers(np.where(sdf < 0, height, 0.0).clip(0.0), _cover(sdf, pitch), albedo)


def _cookie(spec, s, t, pitch, rng) -> PartLayers:
    radius = spec.part_size / 2 * (1.0 + _wobble(rng, np.arctan2(t, s), 0.05))
    rho = np.hypot(s, t) / radius
    inside = rho < 1
    height = spec.part_height * np.sqrt(np.clip(1.0 - rho**8, 0.0, 1.0))
    height += 0.05 * spec.part_height * smooth_field(rng, s.shape, 0.003 / pitch) * smoothstep(1.0, 0.8, rho)
    chips = smoothstep(1.5, 2.0, smooth_field(rng, s.shape, 0.0012 / pitch)) * smoothstep(0.9, 0.75, rho)
    height += 0.08 * spec.part_height * chips + spec.roughness * smooth_field(rng, s.shape, 0.0005 / pitch)
    albedo = _mix(_mottled(spec, rng, s.shape, pitch), spec.palette[1], 0.6 * smoothstep(0.6, 1.0, rho))
    albedo = _mix(albedo, spec.palette[2], 0.9 * chips)
    return PartLayers(np.where(inside, height, 0.0).clip(0.0), _cover((rho - 1) * radius, pitch), albedo)


def _bagel(spec, s, t, pitch, rng) -> PartLayers:
    ring = 0.3 * spec.part_size
    tube = 0.2 * spec.part_size * (1.0 + _wobble(rng, np.arctan2(t, s), 0.06))
    q = (np.hypot(s, t) - ring) / tube
    rel = np.sqrt(np.clip(1.0 - q * q, 0.0, 1.0))
    height = spec.part_height * rel + 0.04 * spec.part_height * smooth_field(rng, s.shape, 0.004 / pitch) * rel
    height += spec.roughness * smooth_field(rng, s.shape, 0.0005 / pitch)
    albedo = _mix(np.broadcast_to(np.asarray(spec.palette[1], np.float32), (*s.shape, 3)),
                  spec.palette[0], smoothstep(0.25, 0.85, rel))
    albedo = _mix(albedo, _mottled(spec, rng, s.shape, pitch), 0.5 * rel)
    seeds = smoothstep(2.2, 2.6, smooth_field(rng, s.shape, 0.0005 / pitch)) * smoothstep(0.5, 0.8, rel)
    albedo = _mix(albedo, spec.palette[2], 0.85 * seeds)
    return PartLayers(np.where(np.abs(q) < 1, height, 0.0).clip(0.0), _cover((np.abs(q) - 1) * tube, pitch), albedo)


def _dome(spec, s, t, pitch, rng) -> PartLayers:
    a, b = spec.part_size / 2, spec.part_size * spec.aspect / 2
    scale = 1.0 + _wobble(rng, np.arctan2(t / b, s / a), 0.07)
    rho = np.hypot(s / a, t / b) / scale
    cap = np.clip(1.0 - rho * rho, 0.0, 1.0)
    height = spec.part_height * np.sqrt(cap)
    height += 0.06 * spec.part_height * smooth_field(rng, s.shape, 0.006 / pitch) * cap
    height += spec.roughness * smooth_field(rng, s.shape, 0.0006 / pitch)
    albedo = _mottled(spec, rng, s.shape, pitch)
    spots = smoothstep(2.1, 2.6, smooth_field(rng, s.shape, 0.0008 / pitch))
    albedo = _mix(albedo, spec.palette[2], 0.8 * spots)
    return PartLayers(np.where(rho < 1, height, 0.0).clip(0.0), _cover((rho - 1) * b * scale, pitch), albedo)


def _foam(spec, s, t, pitch, rng) -> PartLayers:
    hx, hy = spec.part_size / 2, spec.part_size * spec.aspect / 2
    sdf = _rounded_rect_sdf(s, t, hx, hy, 0.25 * hy)
    top = smoothstep(0.0, 0.35 * spec.part_height, -sdf)
    bulge = np.clip(1.0 - (s / hx) ** 2, 0.0, 1.0) * np.clip(1.0 - (t / hy) ** 2, 0.0, 1.0)
    pores = smoothstep(1.3, 1.9, -smooth_field(rng, s.shape, 0.00035 / pitch)) * top
    height = spec.part_height * top + 0.04 * spec.part_height * bulge - 0.03 * spec.part_height * pores
    albedo = _mix(_mottled(spec, rng, s.shape, pitch), spec.palette[1], 0.7 * pores)
    return PartLayers(np.where(sdf < 0, height, 0.0).clip(0.0), _cover(sdf, pitch), albedo)


def _gland(spec, s, t, pitch, rng) -> PartLayers:
    apothem = 0.5 * spec.part_size * 0.87
    normals = [(np.cos(a), np.sin(a)) for a in (0.0, np.pi / 3, 2 * np.pi / 3)]
    hex_sdf = np.max([np.abs(s * c + t * n) for c, n in normals], axis=0) - apothem
    r = np.hypot(s, t)
    collar, cap = 0.36 * spec.part_size, 0.26 * spec.part_size
    h = spec.part_height
    # Bevels keep the steps measurable: a scanner sees no wall steeper than ~75 degrees.
    height = 0.35 * h * smoothstep(0.0, 0.003, -hex_sdf)
    height += 0.35 * h * smoothstep(collar, collar - 0.003, r)
    height += 0.3 * h * np.sqrt(np.clip(1.0 - (r / cap) ** 2, 0.0, 1.0))
    height -= 0.02 * h * np.exp(-(((r - 0.18 * spec.part_size) / 0.0004) ** 2))
    height += spec.roughness * smooth_field(rng, s.shape, 0.0005 / pitch)
    albedo = _mix(_mottled(spec, rng, s.shape, pitch), spec.palette[1], 0.7 * smoothstep(collar, collar + 0.0005, r))
    marks = smoothstep(2.2, 2.7, smooth_field(rng, s.shape, 0.0006 / pitch))
    albedo = _mix(albedo, spec.palette[2], 0.6 * marks)
    return PartLayers(np.where(hex_sdf < 0, height, 0.0).clip(0.0), _cover(hex_sdf, pitch), albedo)


_SHAPES: dict[str, Callable[..., PartLayers]] = {
    "tile": _tile, "cookie": _cookie, "bagel": _bagel, "dome": _dome, "foam": _foam, "gland": _gland,
}


def part_layers(spec: LineSpec, s: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> PartLayers:
    """Draw one part of ``spec`` at part-frame coordinates ``s, t`` ((H, W) float32, metres)."""
    layers = _SHAPES[spec.family](spec, s.astype(np.float32), t.astype(np.float32), spec.pixel_pitch, rng)
    return PartLayers(
        layers.height.astype(np.float32),
        layers.cover.astype(np.float32),
        np.clip(layers.albedo, 0.0, 1.0).astype(np.float32),
    )
