"""Synthetic camera + scanner rigs with known ground truth, for validating calibration.

A rig is a camera (intrinsics + distortion), a 3D scanner (pinhole grid) at a known
rigid transform from the camera, and a printed checkerboard shown at several poses.
Every rig is deterministic by seed. Rendering is physically plain:

- camera image: each pixel is supersampled (rays through sub-pixel positions,
  undistorted exactly, intersected with the board), averaged, then Gaussian
  noise is added and the result quantized to 8 bits;
- scanner cloud: each scanner pixel's ray hits the board (or, optionally, a
  floor plane far behind it); depth gets Gaussian noise; a few pixels drop out.
  Zeros mean "nothing measured", as in MVTec 3D-AD.

Conventions shared with :mod:`calibration.sensors`: the board frame has its origin
at the first inner corner, x along the ``cols`` inner corners, y along the
``rows``, z = x cross y (away from the camera); ``X_camera = R @ X_scanner + t``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from calibration.sensors import board_object_points

_SUPERSAMPLE = 3
_BLACK, _WHITE, _BACKGROUND = 0.12, 0.88, 0.45


@dataclass(frozen=True)
class Rig:
    """A synthetic camera + scanner rig and the board poses it was shown.

    Arrays: ``K`` (3, 3) and ``dist`` (5,) of the camera; ``scanner_K`` (3, 3);
    ``R`` (3, 3), ``t`` (3,) scanner-to-camera in metres; ``poses``: list of
    (rvec (3,), tvec (3,)) board-to-camera. ``board`` = (cols, rows) inner corners,
    ``square`` in metres. Noise: ``image_noise`` in gray levels (0..255),
    ``depth_noise`` in metres (sigma along the scanner's z), ``dropout`` the
    fraction of scanner pixels with no measurement. ``floor``: whether a plane far
    behind the board is also measured by the scanner.
    """

    K: np.ndarray
    dist: np.ndarray
    width: int
    height: int
    scanner_K: np.ndarray
    scanner_width: int
    scanner_height: int
    R: np.ndarray
    t: np.ndarray
    board: tuple[int, int]
    square: float
    poses: list[tuple[np.ndarray, np.ndarray]]
    image_noise: float = 2.0
    depth_noise: float = 0.0003
    dropout: float = 0.02
    floor: bool = True
    seed: int = 0

    @cached_property
    def _camera_rays(self) -> np.ndarray:
        """Undistorted rays (H, W, s*s, 3) through the sub-pixel samples of every pixel."""
        offsets = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
        ou, ov = np.meshgrid(offsets, offsets)
        u = np.arange(self.width)[None, :, None] + ou.ravel()[None, None, :]
        v = np.arange(self.height)[:, None, None] + ov.ravel()[None, None, :]
        u, v = np.broadcast_arrays(u, v)
        pix = np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)[:, None, :]
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
        norm = cv2.undistortPoints(pix, self.K, self.dist, criteria=criteria)[:, 0, :]
        rays = np.concatenate([norm, np.ones((norm.shape[0], 1))], axis=1)
        return rays.reshape(self.height, self.width, _SUPERSAMPLE**2, 3)

    @property
    def sheet(self) -> tuple[float, float, float, float]:
        """Extent of the printed sheet in board coordinates: (x0, x1, y0, y1), metres.

        The pattern has (cols + 1) x (rows + 1) squares; a white margin of one
        square surrounds it, as findChessboardCorners needs.
        """
        cols, rows = self.board
        return (-2 * self.square, (cols + 1) * self.square, -2 * self.square, (rows + 1) * self.square)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(axis, float) / np.linalg.norm(axis) * angle)[0]


def _sheet_outline(rig: Rig) -> np.ndarray:
    x0, x1, y0, y1 = rig.sheet
    return np.array([[x0, y0, 0], [x1, y0, 0], [x1, y1, 0], [x0, y1, 0]], float)


def _inside(points_px: np.ndarray, width: int, height: int, margin: float) -> bool:
    return bool(np.all((points_px[:, 0] >= margin) & (points_px[:, 0] <= width - 1 - margin)
                       & (points_px[:, 1] >= margin) & (points_px[:, 1] <= height - 1 - margin)))


def make_rig(
    seed: int,
    n_poses: int = 8,
    board: tuple[int, int] = (9, 6),
    square: float = 0.02,
    width: int = 640,
    height: int = 480,
    scanner_size: tuple[int, int] = (320, 240),
    max_tilt_deg: float = 40.0,
    scanner_offset: tuple[float, float] = (0.05, 0.15),
    scanner_turn_deg: tuple[float, float] = (3.0, 10.0),
    image_noise: float = 2.0,
    depth_noise: float = 0.0003,
    dropout: float = 0.02,
    floor: bool = True,
) -> Rig:
    """A random rig and ``n_poses`` board poses visible in full to both sensors.

    The camera has a focal length of 0.9-1.1 image widths and mild radial and
    tangential distortion; the scanner sits ``scanner_offset`` metres from the
    camera (a range), turned by ``scanner_turn_deg`` degrees about a random axis.
    Board tilts are uniform up to ``max_tilt_deg`` about a random in-plane axis
    (``max_tilt_deg=0`` gives parallel, degenerate poses);
    distances 0.35-0.65 m. Deterministic by ``seed``.
    """
    if n_poses < 1:
        raise ValueError(f"n_poses must be >= 1, got {n_poses}")
    rng = np.random.default_rng(seed)
    f = width * rng.uniform(0.9, 1.1)
    K = np.array([[f * rng.uniform(0.995, 1.005), 0, width / 2 + rng.uniform(-10, 10)],
                  [0, f, height / 2 + rng.uniform(-10, 10)], [0, 0, 1.0]])
    dist = np.array([rng.uniform(-0.15, 0.05), rng.uniform(-0.05, 0.08),
                     rng.uniform(-1e-3, 1e-3), rng.uniform(-1e-3, 1e-3), 0.0])
    sw, sh = scanner_size
    fs = sw * rng.uniform(0.85, 1.0)
    scanner_K = np.array([[fs, 0, sw / 2 - 0.5], [0, fs, sh / 2 - 0.5], [0, 0, 1.0]])
    R = _rotation(rng.normal(size=3), np.deg2rad(rng.uniform(*scanner_turn_deg)))
    direction = rng.normal(size=3) * np.array([1.0, 1.0, 0.3])
    t = direction / np.linalg.norm(direction) * rng.uniform(*scanner_offset)

    rig = Rig(K=K, dist=dist, width=width, height=height, scanner_K=scanner_K,
              scanner_width=sw, scanner_height=sh, R=R, t=t, board=board, square=square,
              poses=[], image_noise=image_noise, depth_noise=depth_noise, dropout=dropout,
              floor=floor, seed=seed)
    outline = _sheet_outline(rig)
    centre = np.array([(board[0] - 1) / 2 * square, (board[1] - 1) / 2 * square, 0.0])
    poses: list[tuple[np.ndarray, np.ndarray]] = []
    for _ in range(20000):
        if len(poses) == n_poses:
            break
        phi = rng.uniform(0, 2 * np.pi)
        tilt = _rotation([np.cos(phi), np.sin(phi), 0.0], np.deg2rad(rng.uniform(0, 1) * max_tilt_deg))
        Rb = tilt @ _rotation([0, 0, 1.0], np.deg2rad(rng.uniform(-20, 20)))
        depth = rng.uniform(0.35, 0.65)
        c = np.array([rng.uniform(-0.25, 0.25) * depth, rng.uniform(-0.2, 0.2) * depth, depth])
        tb = c - Rb @ centre
        rvec = cv2.Rodrigues(Rb)[0].ravel()
        px = cv2.projectPoints(outline, rvec, tb, K, dist)[0][:, 0]
        if not _inside(px, width, height, margin=8):
            continue
        in_scanner = (outline @ Rb.T + tb - t) @ R  # R^T (X_c - t), row-wise
        spx = in_scanner[:, :2] / in_scanner[:, 2:] * [fs, fs] + scanner_K[:2, 2]
        if not _inside(spx, sw, sh, margin=2):
            continue
        poses.append((rvec, tb))
    if len(poses) < n_poses:
        raise ValueError(f"could not place {n_poses} board poses in view of both sensors")
    return replace(rig, poses=poses)


def render_image(rig: Rig, pose_index: int) -> np.ndarray:
    """The camera's 8-bit grayscale view (H, W) uint8 of the board at pose ``pose_index``."""
    rvec, tb = rig.poses[pose_index]
    Rb = cv2.Rodrigues(np.asarray(rvec, float))[0]
    n = Rb[:, 2]
    rays = rig._camera_rays
    depth = (n @ tb) / (rays @ n)
    local = (rays * depth[..., None] - tb) @ Rb  # board coordinates of every sample
    x0, x1, y0, y1 = rig.sheet
    on_sheet = (depth > 0) & (local[..., 0] >= x0) & (local[..., 0] <= x1) & \
        (local[..., 1] >= y0) & (local[..., 1] <= y1)
    cols, rows = rig.board
    ix = np.floor(local[..., 0] / rig.square)
    iy = np.floor(local[..., 1] / rig.square)
    in_pattern = (ix >= -1) & (ix <= cols - 1) & (iy >= -1) & (iy <= rows - 1)
    black = in_pattern & ((ix + iy) % 2 == 0)
    value = np.where(on_sheet, np.where(black, _BLACK, _WHITE), _BACKGROUND)
    image = value.mean(axis=-1) * 255.0
    rng = np.random.default_rng([rig.seed, pose_index, 1])
    image = image + rng.normal(0.0, rig.image_noise, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _floor_plane() -> tuple[np.ndarray, float]:
    """A plane about 0.9-1.2 m behind the camera's view, tilted 25 degrees (camera frame)."""
    n = np.array([0.0, -np.sin(np.deg2rad(25)), np.cos(np.deg2rad(25))])
    return n, 0.95


def render_cloud(rig: Rig, pose_index: int) -> np.ndarray:
    """The scanner's organized cloud (H', W', 3) float32, metres, scanner frame; zeros = none."""
    rvec, tb = rig.poses[pose_index]
    Rb = cv2.Rodrigues(np.asarray(rvec, float))[0]
    # board pose in the scanner frame: X_s = R^T (X_c - t)
    Rs, ts = rig.R.T @ Rb, rig.R.T @ (tb - rig.t)
    sK = rig.scanner_K
    u, v = np.meshgrid(np.arange(rig.scanner_width), np.arange(rig.scanner_height))
    rays = np.stack([(u - sK[0, 2]) / sK[0, 0], (v - sK[1, 2]) / sK[1, 1], np.ones(u.shape)], axis=-1)

    n = Rs[:, 2]
    z = (n @ ts) / (rays @ n)
    local = (rays * z[..., None] - ts) @ Rs
    x0, x1, y0, y1 = rig.sheet
    hit = (z > 0) & (local[..., 0] >= x0) & (local[..., 0] <= x1) & \
        (local[..., 1] >= y0) & (local[..., 1] <= y1)
    depth = np.where(hit, z, 0.0)
    if rig.floor:
        nf_c, df_c = _floor_plane()
        nf = rig.R.T @ nf_c
        df = df_c - nf_c @ rig.t
        zf = df / (rays @ nf)
        depth = np.where(~hit & (zf > 0) & (zf < 3.0), zf, depth)
    rng = np.random.default_rng([rig.seed, pose_index, 2])
    measured = depth > 0
    depth = depth + rng.normal(0.0, rig.depth_noise, depth.shape)
    measured &= rng.random(depth.shape) >= rig.dropout
    return np.where(measured[..., None], rays * depth[..., None], 0.0).astype(np.float32)


def truth(rig: Rig) -> dict:
    """The rig's ground truth as a JSON-ready dict (lists of floats)."""
    return {
        "seed": rig.seed,
        "camera": {"K": rig.K.tolist(), "dist": rig.dist.tolist(), "width": rig.width, "height": rig.height},
        "scanner": {"K": rig.scanner_K.tolist(), "width": rig.scanner_width, "height": rig.scanner_height},
        "scanner_to_camera": {"R": rig.R.tolist(), "t": rig.t.tolist()},
        "board": list(rig.board),
        "square": rig.square,
        "poses": [{"rvec": np.asarray(r).tolist(), "tvec": np.asarray(tv).tolist()} for r, tv in rig.poses],
        "noise": {"image_gray_levels": rig.image_noise, "depth_m": rig.depth_noise,
                  "dropout": rig.dropout, "floor": rig.floor},
    }


def write_rig(rig: Rig, out_dir: str | os.PathLike, progress: bool = False) -> Path:
    """Write ``images/NNN.png``, ``clouds/NNN.tiff`` and ``truth.json`` under ``out_dir``.

    Returns the path of ``truth.json``.
    """
    import tifffile
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "clouds").mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(len(rig.poses)), desc="rendering rig", disable=not progress):
        if not cv2.imwrite(str(out / "images" / f"{i:03d}.png"), render_image(rig, i)):
            raise OSError(f"could not write {out / 'images' / f'{i:03d}.png'}")
        tifffile.imwrite(out / "clouds" / f"{i:03d}.tiff", render_cloud(rig, i), photometric="rgb")
    path = out / "truth.json"
    path.write_text(json.dumps(truth(rig), indent=2))
    return path


def calibration_errors(calib, truth_doc: dict) -> dict:
    """How far a :class:`~calibration.sensors.SensorCalibration` is from a rig's ``truth.json`` dict.

    Returns rotation error (degrees), translation error (mm), focal length error
    (%), principal point error (px), and the pixel alignment error: every true
    board corner of every pose, seen by the scanner, projected with the estimated
    calibration against its true pixel (RMS and max, px).
    """
    R_true = np.asarray(truth_doc["scanner_to_camera"]["R"], float)
    t_true = np.asarray(truth_doc["scanner_to_camera"]["t"], float)
    K_true = np.asarray(truth_doc["camera"]["K"], float)
    dist_true = np.asarray(truth_doc["camera"]["dist"], float)
    cos = (np.trace(calib.R @ R_true.T) - 1) / 2
    corners = board_object_points(tuple(truth_doc["board"]), float(truth_doc["square"]))
    errors = []
    for pose in truth_doc["poses"]:
        Rb = cv2.Rodrigues(np.asarray(pose["rvec"], float))[0]
        camera = corners @ Rb.T + np.asarray(pose["tvec"], float)
        scanner = (camera - t_true) @ R_true  # R^T (X_c - t), row-wise
        true_px = cv2.projectPoints(camera, np.zeros(3), np.zeros(3), K_true, dist_true)[0].reshape(-1, 2)
        estimated = scanner @ calib.R.T + calib.t
        est_px = cv2.projectPoints(estimated, np.zeros(3), np.zeros(3), calib.K, calib.dist)[0].reshape(-1, 2)
        errors.append(np.linalg.norm(est_px - true_px, axis=1))
    errors = np.concatenate(errors)
    return {
        "rotation_error_deg": float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))),
        "translation_error_mm": float(1000 * np.linalg.norm(calib.t - t_true)),
        "focal_error_pct": float(100 * (calib.K[0, 0] / K_true[0, 0] - 1)),
        "principal_point_error_px": float(np.linalg.norm(calib.K[:2, 2] - K_true[:2, 2])),
        "alignment_rms_px": float(np.sqrt(np.mean(errors**2))),
        "alignment_max_px": float(errors.max()),
    }
