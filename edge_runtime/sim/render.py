"""The simulated station camera: a pinhole looking down at a part on a plane.

A part is described as a :class:`PartScene`: a height field over the
background plane, an albedo image and everything random about the capture
(light, sensor noise, dropout), all drawn before any defect is applied. So the
same part can be captured with and without a defect and differ only where the
defect changed it. :func:`capture` turns a scene into what an MVTec 3D-AD
station records: an 8-bit RGB image and an organized float32 cloud in metres
with exact zeros where nothing was measured.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Surfaces seen at more than this angle from the viewing ray return no
# measurement, as on a real structured-light scanner.
MAX_VIEW_ANGLE_DEG = 75.0


@dataclass(frozen=True)
class PartScene:
    """One part in front of the camera, before capture.

    height: (H, W) float32, metres above the background plane (0 off the part).
    albedo: (H, W, 3) float32 in [0, 1], RGB reflectance (part and background).
    plane_depth: (H, W) float32, metres from the camera to the plane along the optical axis.
    rays: (H, W, 2) float32, normalized image coordinates ((u - c) / f, (v - c) / f).
    light: (3,) float32, unit vector towards the light in the camera frame (z < 0).
    light_gain: exposure factor of this capture.
    gloss: strength of the specular highlight.
    depth_noise: (H, W) float32, metres added along each ray.
    rgb_noise: (H, W, 3) float32, added to the [0, 1] image.
    no_measurement: (H, W) bool, pixels the scanner returns as zeros.
    """

    height: np.ndarray
    albedo: np.ndarray
    plane_depth: np.ndarray
    rays: np.ndarray
    light: np.ndarray
    light_gain: float
    gloss: float
    depth_noise: np.ndarray
    rgb_noise: np.ndarray
    no_measurement: np.ndarray


def pixel_rays(size: int, focal: float) -> np.ndarray:
    """Normalized image coordinates of every pixel centre: (size, size, 2) float32 (x, y)."""
    c = (size - 1) / 2.0
    v, u = np.mgrid[0:size, 0:size].astype(np.float32)
    return np.stack([(u - c) / focal, (v - c) / focal], axis=-1)


def plane_depth(rays: np.ndarray, distance: float, tilt: tuple[float, float]) -> np.ndarray:
    """Depth (H, W) float32 of the plane z = distance + tx * X + ty * Y along each ray."""
    tx, ty = tilt
    return (distance / (1.0 - tx * rays[..., 0] - ty * rays[..., 1])).astype(np.float32)


def points_from_depth(depth: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Organized cloud (H, W, 3) float32 from depth (H, W) and rays (H, W, 2)."""
    return np.concatenate([rays * depth[..., None], depth[..., None]], axis=-1).astype(np.float32)


def surface_normals(points: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) float32 of an organized cloud, oriented towards the camera."""
    du = np.gradient(points, axis=1)
    dv = np.gradient(points, axis=0)
    n = np.cross(du, dv)
    n *= -np.sign(n[..., 2:3] + 1e-30)  # the camera looks along +z: normals point back (-z)
    return (n / np.linalg.norm(n, axis=-1, keepdims=True).clip(1e-12)).astype(np.float32)


def grazing(points: np.ndarray) -> np.ndarray:
    """(H, W) bool: surfaces seen too obliquely for the scanner to measure."""
    n = surface_normals(points)
    view = points / np.linalg.norm(points, axis=-1, keepdims=True)
    return np.abs(np.sum(n * view, axis=-1)) < np.cos(np.deg2rad(MAX_VIEW_ANGLE_DEG))


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    """Gaussian-smoothed white noise (H, W) float32, zero mean and unit std.

    Large correlation lengths are drawn on a coarse grid and upsampled, which
    costs the same at every sigma.
    """
    h, w = shape
    step = max(1, int(sigma_px // 2))
    hc, wc = -(-h // step) + 1, -(-w // step) + 1
    field = rng.standard_normal((hc, wc), dtype=np.float32)
    field = cv2.GaussianBlur(field, (0, 0), max(sigma_px / step, 0.3), borderType=cv2.BORDER_REFLECT)
    if step > 1:
        field = cv2.resize(field, (wc * step, hc * step), interpolation=cv2.INTER_CUBIC)
    field = field[:h, :w]
    return ((field - field.mean()) / max(float(field.std()), 1e-12)).astype(np.float32)


def surface_points(scene: PartScene) -> np.ndarray:
    """Noise-free organized cloud (H, W, 3) float32 of the scene's surface."""
    return points_from_depth(scene.plane_depth - scene.height, scene.rays)


def shading(normals: np.ndarray, light: np.ndarray, gloss: float) -> tuple[np.ndarray, np.ndarray]:
    """Lambertian term plus ambient (H, W) and a Blinn-Phong highlight (H, W), float32."""
    diffuse = np.clip(normals @ light, 0.0, None)
    halfway = light + np.array([0.0, 0.0, -1.0], np.float32)
    halfway = halfway / np.linalg.norm(halfway)
    spec = gloss * np.clip(normals @ halfway, 0.0, None) ** 40
    return (0.3 + 0.8 * diffuse).astype(np.float32), spec.astype(np.float32)


def capture(scene: PartScene) -> tuple[np.ndarray, np.ndarray]:
    """What the station records of a scene.

    Returns rgb (H, W, 3) uint8 and xyz (H, W, 3) float32 in metres, exact
    zeros where ``scene.no_measurement``.
    """
    points = surface_points(scene)
    diffuse, spec = shading(surface_normals(points), scene.light, scene.gloss)
    radiance = scene.albedo * (scene.light_gain * diffuse)[..., None] + spec[..., None]
    rgb = np.clip(np.rint((radiance + scene.rgb_noise) * 255.0), 0, 255).astype(np.uint8)
    depth = points[..., 2]
    xyz = points * ((depth + scene.depth_noise) / depth)[..., None]  # noise along the ray
    xyz[scene.no_measurement] = 0.0
    return rgb, xyz.astype(np.float32)
