"""Camera intrinsics, camera <-> scanner extrinsics, and scanner clouds in the camera's pixel grid.

MuSc-V2's cross-modal step needs, for every scanner point, the camera pixel it lands
on. This module finds that mapping from a checkerboard shown to both sensors:

1. intrinsics and distortion of the camera from the board's inner corners
   (OpenCV ``calibrateCamera`` with sub-pixel corner refinement);
2. per view, the board plane in the camera frame (from the board pose) and the
   same plane in the scanner frame (robust plane fit in the cloud);
3. the scanner-to-camera rigid transform from these plane pairs: rotation from
   the normals (SVD), translation from the offsets (least squares), then a
   nonlinear refinement of point-to-plane distances of the scanner's board points.

The plane method needs only geometry from the scanner, so it works with any
scanner; it needs three or more views whose board normals are not parallel. A
corner-based method (board corners found in the scanner's intensity image) is not
implemented.

Conventions: a plane is (n, d) with unit normal n, ``n . X = d`` and ``d >= 0``
(the normal points away from the sensor); ``X_camera = R @ X_scanner + t`` in metres;
pixel (0, 0) is the centre of the top-left pixel, as in OpenCV.
"""
from __future__ import annotations

import itertools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from calibration.files import toml_value, write_text_atomic

_DIST_LENGTHS = (4, 5, 8, 12, 14)
# below this normal spread (see normal_spread) the translation is off by millimetres (3 poses, spread 0.02: 3 mm)
MIN_NORMAL_SPREAD = 0.03


class CalibrationError(ValueError):
    """The views cannot give a calibration (board not found, degenerate poses, ...)."""


# --------------------------------------------------------------------------- file


@dataclass(frozen=True)
class SensorCalibration:
    """Camera intrinsics and the scanner-to-camera transform, validated on creation.

    ``K`` (3, 3) float64 camera matrix, ``dist`` (k,) OpenCV distortion coefficients
    (k in 4, 5, 8, 12, 14), ``width``/``height`` of the calibrated image in pixels,
    ``R`` (3, 3) rotation and ``t`` (3,) translation in metres with
    ``X_camera = R @ X_scanner + t``; ``residuals``: how well the data fit
    (numbers or strings, written as they are).
    """

    K: np.ndarray
    dist: np.ndarray
    width: int
    height: int
    R: np.ndarray
    t: np.ndarray
    residuals: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        K = _finite_array(self.K, (3, 3), "camera K")
        if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
            raise ValueError(f"camera K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got {K.tolist()}")
        dist = _finite_array(self.dist, None, "camera dist").ravel()
        if dist.size not in _DIST_LENGTHS:
            raise ValueError(f"camera dist must have {_DIST_LENGTHS} coefficients, got {dist.size}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"camera {name} must be a positive integer, got {value!r}")
        R = _finite_array(self.R, (3, 3), "scanner_to_camera R")
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-6) or np.linalg.det(R) <= 0:
            raise ValueError("scanner_to_camera R must be a rotation (orthonormal, det +1)")
        t = _finite_array(self.t, (3,), "scanner_to_camera t")
        for key, value in self.residuals.items():
            if not isinstance(key, str) or not isinstance(value, (int, float, str)) or isinstance(value, bool):
                raise ValueError(f"residual {key!r} must be a number or a string, got {value!r}")
        for name, value in (("K", K), ("dist", dist), ("R", R), ("t", t),
                            ("width", int(self.width)), ("height", int(self.height)),
                            ("residuals", dict(self.residuals))):
            object.__setattr__(self, name, value)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SensorCalibration":
        """Read a ``calib.toml`` written by :meth:`save` (or by hand)."""
        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"calibration file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML: {exc}") from None
        try:
            camera, extrinsics = doc["camera"], doc["scanner_to_camera"]
            args = dict(K=camera["K"], dist=camera["dist"], width=camera["width"], height=camera["height"],
                        R=extrinsics["R"], t=extrinsics["t"], residuals=doc.get("residuals", {}))
        except KeyError as exc:
            raise ValueError(f"{path}: missing key {exc.args[0]!r} (needs [camera] K, dist, width, height "
                             "and [scanner_to_camera] R, t)") from None
        try:
            return cls(**args)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def to_toml(self) -> str:
        """The calibration as TOML text (what :meth:`save` writes)."""
        lines = [
            "# camera <-> scanner calibration (musc-edge calibrate sensors)",
            "# X_camera = R @ X_scanner + t, metres; pixel (0, 0) = centre of the top-left pixel",
            "",
            "[camera]",
            f"width = {self.width}",
            f"height = {self.height}",
            f"K = {toml_value(self.K)}",
            f"dist = {toml_value(self.dist)}",
            "",
            "[scanner_to_camera]",
            f"R = {toml_value(self.R)}",
            f"t = {toml_value(self.t)}",
        ]
        if self.residuals:
            lines += ["", "[residuals]"] + [f"{k} = {toml_value(v)}" for k, v in self.residuals.items()]
        return "\n".join(lines) + "\n"

    def save(self, path: str | os.PathLike) -> Path:
        """Write the TOML atomically (temporary file, then rename): never a partial file."""
        path = Path(path)
        write_text_atomic(path, self.to_toml())
        return path


def _finite_array(value, shape: tuple | None, name: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got {value!r}") from None
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} has NaN or infinite entries")
    return arr


# --------------------------------------------------------------------------- geometry


def rigid(points: np.ndarray, A: np.ndarray, b: np.ndarray, R: np.ndarray | None = None) -> np.ndarray:
    """``A @ (R @ p) + b`` for every row p of (P, 3) points -> (P, 3) float64 (``R`` optional).

    einsum rather than ``@``: BLAS threads on 3-wide matrices are slower than one
    plain loop, by far on a busy machine.
    """
    M = A if R is None else A @ R
    return np.einsum("pk,jk->pj", points, M) + b


def _dot(points: np.ndarray, n: np.ndarray) -> np.ndarray:
    """(P,) row-wise dot products of (P, 3) points with one (3,) vector, without BLAS threads."""
    return np.einsum("pk,k->p", points, n)


# --------------------------------------------------------------------------- camera


def board_object_points(board: tuple[int, int], square: float) -> np.ndarray:
    """Inner corners of a ``board = (cols, rows)`` checkerboard in its own frame: (cols*rows, 3).

    Row by row, x along the columns, z = 0; the order findChessboardCorners reports.
    """
    cols, rows = board
    gx, gy = np.meshgrid(np.arange(cols), np.arange(rows))
    return np.stack([gx.ravel(), gy.ravel(), np.zeros(cols * rows)], axis=1).astype(np.float64) * square


def find_board_corners(gray: np.ndarray, board: tuple[int, int]) -> np.ndarray | None:
    """Sub-pixel inner corners (cols*rows, 2) float64 of ``board`` in an 8-bit gray image (H, W); None if absent."""
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"expected an 8-bit grayscale image (H, W), got {gray.dtype} {gray.shape}")
    found, corners = cv2.findChessboardCorners(gray, tuple(board),
                                               flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not found:  # the sector-based detector copes better with blur, glare and steep views
        found, corners = cv2.findChessboardCornersSB(gray, tuple(board),
                                                     flags=cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_NORMALIZE_IMAGE)
        if not found:
            return None
    corners = corners.reshape(-1, 2).astype(np.float32)
    # cornerSubPix relies on the grid lines through a corner: its window may reach
    # most of the way to the next corner, not beyond. A slight blur first spreads
    # sharp (box-filtered) edges over several pixels, which halves its error.
    cols, rows = board
    grid = corners.reshape(rows, cols, 2)
    spacing = min(np.linalg.norm(np.diff(grid, axis=0), axis=-1).min(),
                  np.linalg.norm(np.diff(grid, axis=1), axis=-1).min())
    half = int(np.clip(spacing * 0.6, 2, 15))
    smooth = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), float(np.clip(spacing / 12, 0.7, 2.0)))
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    refined = cv2.cornerSubPix(smooth, corners.copy(), (half, half), (-1, -1), criteria)
    return refined.reshape(-1, 2).astype(np.float64)


def camera_plane(rvec: np.ndarray, tvec: np.ndarray) -> tuple[np.ndarray, float]:
    """The board plane (n (3,), d) in the camera frame from a board pose (rvec (3,), tvec (3,))."""
    n = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3, 1))[0][:, 2]
    d = float(n @ np.asarray(tvec, np.float64).ravel())
    return (n, d) if d >= 0 else (-n, -d)


# --------------------------------------------------------------------------- scanner planes


def _lsq_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    centre = points.mean(axis=0)
    offsets = points - centre
    n = np.linalg.eigh(np.einsum("pi,pj->ij", offsets, offsets))[1][:, 0]  # least-variance direction
    d = float(n @ centre)
    return (n, d) if d >= 0 else (-n, -d)


def fit_plane(points: np.ndarray, threshold: float, rng: np.random.Generator,
              iterations: int = 300) -> tuple[np.ndarray, float, np.ndarray]:
    """RANSAC plane through (P, 3) points, refined by least squares on its inliers.

    ``threshold``: inlier distance in the points' unit. Returns (n (3,), d, inliers (P,) bool).
    """
    if len(points) < 3:
        raise ValueError(f"a plane needs at least 3 points, got {len(points)}")
    probe = points if len(points) <= 4000 else points[rng.choice(len(points), 4000, replace=False)]
    triples = probe[rng.integers(0, len(probe), size=(iterations, 3))]
    normals = np.cross(triples[:, 1] - triples[:, 0], triples[:, 2] - triples[:, 0])
    norms = np.linalg.norm(normals, axis=1)
    keep = norms > 1e-12
    if not keep.any():
        raise ValueError("the points are collinear: no plane")
    normals = normals[keep] / norms[keep, None]
    offsets = np.einsum("ij,ij->i", normals, triples[keep, 0])
    support = (np.abs(np.einsum("pk,hk->ph", probe, normals) - offsets) < threshold).sum(axis=0)
    best = int(np.argmax(support))
    n, d = normals[best], offsets[best]
    for _ in range(3):
        inliers = np.abs(_dot(points, n) - d) < threshold
        if inliers.sum() < 3:
            break
        n, d = _lsq_plane(points[inliers])
    inliers = np.abs(_dot(points, n) - d) < threshold
    return n, float(d), inliers


def planar_segments(cloud: np.ndarray, rng: np.random.Generator, threshold: float = 0.004,
                    min_points: int = 200, max_segments: int = 4) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """The largest connected planar patches of an organized cloud (H, W, 3), largest first.

    Sequential RANSAC; each plane's inliers are cut to their largest 8-connected
    component in the grid so that a board and a coplanar-looking background
    stay apart. Returns [(n (3,), d, mask (H, W) bool)].
    """
    from scipy import ndimage

    remaining = measured(cloud)
    segments: list[tuple[np.ndarray, float, np.ndarray]] = []
    for _ in range(3 * max_segments):
        if len(segments) == max_segments or remaining.sum() < min_points:
            break
        n, d, inliers = fit_plane(cloud[remaining].astype(np.float64), threshold, rng)
        mask = np.zeros_like(remaining)
        mask[remaining] = inliers
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        if count == 0:
            break
        component = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
        remaining &= ~mask  # the same plane again would only be another piece of it
        if component.sum() >= min_points:
            n, d = _lsq_plane(cloud[component].astype(np.float64))
            segments.append((n, d, component))
    return segments


def measured(cloud: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of an organized cloud (H, W, 3) that hold a finite, non-zero point."""
    return np.all(np.isfinite(cloud), axis=-1) & np.any(cloud != 0, axis=-1)


# --------------------------------------------------------------------------- extrinsics


def rotation_from_normals(n_camera: np.ndarray, n_scanner: np.ndarray) -> np.ndarray:
    """Rotation R (3, 3) best mapping scanner normals (N, 3) onto camera normals (N, 3) (SVD)."""
    U, _, Vt = np.linalg.svd(n_camera.T @ n_scanner)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def extrinsics_from_planes(camera_planes: np.ndarray, scanner_planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form scanner-to-camera (R (3, 3), t (3,)) from plane pairs (N, 4) = [n, d] each.

    A plane n_s . X_s = d_s in the scanner is n_c . X_c = d_s + n_c . t in the camera
    with n_c = R n_s, so t solves n_c . t = d_c - d_s in the least-squares sense.
    """
    R = rotation_from_normals(camera_planes[:, :3], scanner_planes[:, :3])
    t = np.linalg.lstsq(camera_planes[:, :3], camera_planes[:, 3] - scanner_planes[:, 3], rcond=None)[0]
    return R, t


def normal_spread(normals: np.ndarray) -> float:
    """Smallest over largest singular value of the (N, 3) normals.

    0 when they are all parallel or coplanar (the translation is then undetermined);
    about 0.1-0.3 for boards tilted at random by up to 40 degrees.
    """
    s = np.linalg.svd(normals, compute_uv=False)
    return float(s[2] / s[0]) if len(s) == 3 else 0.0


def _match_planes(camera_planes: np.ndarray, candidates: list[list[tuple[np.ndarray, float]]],
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find which scanner plane is the board in each view: hypothesize from triples, verify on all.

    ``camera_planes`` (N, 4); ``candidates[i]``: plane candidates [(n, d)] of view i.
    Returns the initial (R (3, 3), t (3,)) and, per view, the (angle in degrees,
    offset in mm) between its camera plane and its best matching scanner plane (N, 2).
    """
    n_views = len(camera_planes)
    triples = list(itertools.combinations(range(n_views), 3))
    if len(triples) > 2000:  # many views: a fixed random subset is plenty
        picked = np.random.default_rng(0).choice(len(triples), 2000, replace=False)
        triples = [triples[i] for i in picked]
    # the best conditioned triples give the most reliable hypotheses
    triples = sorted(triples, key=lambda tr: -normal_spread(camera_planes[list(tr), :3]))[:40]
    scan = [np.array([np.r_[n, d] for n, d in views]) for views in candidates]

    def mismatch(R: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(N, 2): angle (deg) and offset (mm) of each view's best candidate under (R, t)."""
        out = np.empty((n_views, 2))
        for i in range(n_views):
            nc = scan[i][:, :3] @ R.T
            angle = np.degrees(np.arccos(np.clip(nc @ camera_planes[i, :3], -1, 1)))
            offset = np.abs(scan[i][:, 3] + nc @ t - camera_planes[i, 3]) * 1000
            # truncated costs: a view whose board was not measured must not sway the vote
            cost = np.minimum(angle / 2.0, 1) ** 2 + np.minimum(offset / 10.0, 1) ** 2
            out[i] = angle[np.argmin(cost)], offset[np.argmin(cost)]
        return out

    def vote(m: np.ndarray) -> float:
        return float(np.sum(np.minimum(m[:, 0] / 2.0, 1) ** 2 + np.minimum(m[:, 1] / 10.0, 1) ** 2))

    best = (np.inf, np.eye(3), np.zeros(3))
    for triple in triples:
        for choice in itertools.product(*(range(len(scan[i])) for i in triple)):
            picked = np.array([scan[i][c] for i, c in zip(triple, choice)])
            R, t = extrinsics_from_planes(camera_planes[list(triple)], picked)
            total = vote(mismatch(R, t))
            if total < best[0]:
                best = (total, R, t)
    _, R, t = best
    return R, t, mismatch(R, t)


def _board_points(cloud_points: np.ndarray, R: np.ndarray, t: np.ndarray, pose: tuple[np.ndarray, np.ndarray],
                  board: tuple[int, int], square: float, gate: float) -> np.ndarray:
    """Scanner points (P, 3) that fall on the board's inner area and within ``gate`` of its plane.

    The area is the inner corners' rectangle grown by half a square: still on the
    printed pattern (it runs a full square further), away from the board's edges,
    where scanners mix board and background.
    """
    Rb = cv2.Rodrigues(pose[0].reshape(3, 1))[0]
    local = rigid(cloud_points, Rb.T, Rb.T @ (t - pose[1]), R=R)
    cols, rows = board
    keep = (np.abs(local[:, 2]) < gate) \
        & (local[:, 0] > -0.5 * square) & (local[:, 0] < (cols - 0.5) * square) \
        & (local[:, 1] > -0.5 * square) & (local[:, 1] < (rows - 0.5) * square)
    return cloud_points[keep]


def refine_extrinsics(R: np.ndarray, t: np.ndarray, camera_planes: np.ndarray,
                      board_points: list[np.ndarray], scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimise point-to-plane distances of scanner board points against the camera planes.

    ``board_points[i]``: (P_i, 3) scanner points on view i's board; ``scale``: the
    expected point noise in metres (soft-L1 loss beyond it). Returns refined
    (R (3, 3), t (3,), residuals (sum P_i,) in metres).
    """
    from scipy.optimize import least_squares

    normals = np.concatenate([np.repeat(camera_planes[i:i + 1, :3], len(p), 0) for i, p in enumerate(board_points)])
    offsets = np.concatenate([np.full(len(p), camera_planes[i, 3]) for i, p in enumerate(board_points)])
    points = np.concatenate(board_points)

    def residuals(x: np.ndarray) -> np.ndarray:
        Rx = cv2.Rodrigues(x[:3].reshape(3, 1))[0]
        return np.einsum("ij,ij->i", rigid(points, Rx, x[3:]), normals) - offsets

    x0 = np.r_[cv2.Rodrigues(R)[0].ravel(), t]
    fit = least_squares(residuals, x0, loss="soft_l1", f_scale=scale, x_scale=np.full(6, 0.01))
    return cv2.Rodrigues(fit.x[:3].reshape(3, 1))[0], fit.x[3:].copy(), residuals(fit.x)


def refine_jointly(K: np.ndarray, dist: np.ndarray, poses: list[tuple[np.ndarray, np.ndarray]],
                   corners: list[np.ndarray], objp: np.ndarray, board_points: list[np.ndarray],
                   R: np.ndarray, t: np.ndarray, sigma_px: np.ndarray, sigma_m: float) -> dict:
    """Bundle adjustment of intrinsics, board poses and extrinsics over both sensors' data.

    Residuals: corner reprojection errors (pixels / ``sigma_px[i]``, view i's corner
    noise) and distances of the scanner's board points (``board_points[i]`` (P_i, 3),
    scanner frame) to view i's board plane (metres / ``sigma_m``). Corners alone
    leave the depth scale soft (focal length against distance); the scanner's
    metric planes pin it down. ``K`` (3, 3), ``dist`` (k,), ``poses`` [(rvec (3,),
    tvec (3,))], ``corners`` [(n, 2)], ``objp`` (n, 3).
    Returns {"K", "dist", "poses", "R", "t", "rotation_sigma_deg", "translation_sigma_mm"}
    (the sigmas: predicted 1-sigma errors of the extrinsics along their worst direction).
    """
    from scipy.optimize import least_squares

    n_views, n_dist = len(poses), len(dist)
    n_intr = 4 + n_dist
    ext = n_intr + 6 * n_views

    def unpack(x: np.ndarray):
        Kx = np.array([[x[0], 0, x[2]], [0, x[1], x[3]], [0, 0, 1.0]])
        views = x[n_intr:ext].reshape(n_views, 6)
        return Kx, x[4:n_intr], views, cv2.Rodrigues(x[ext:ext + 3].reshape(3, 1))[0], x[ext + 3:]

    def residuals(x: np.ndarray) -> np.ndarray:
        Kx, dx, views, Rx, tx = unpack(x)
        out = []
        for i, view in enumerate(views):
            px = cv2.projectPoints(objp, view[:3], view[3:], Kx, dx)[0].reshape(-1, 2)
            out.append(((px - corners[i]) / sigma_px[i]).ravel())
        for i, view in enumerate(views):
            n = cv2.Rodrigues(view[:3].reshape(3, 1))[0][:, 2]
            out.append((_dot(rigid(board_points[i], Rx, tx), n) - n @ view[3:]) / sigma_m)
        return np.concatenate(out)

    # a view's residuals depend on the intrinsics (corners) or the extrinsics (planes)
    # and on that view's pose only, so one step of the k-th pose parameter of every
    # view at once differences all views together: 4 + k + 6 + 6 evaluations per Jacobian
    rows = np.concatenate([np.full(2 * len(objp), i) for i in range(n_views)]
                          + [np.full(len(p), i) for i, p in enumerate(board_points)])

    groups = [[j] for j in range(n_intr)] \
        + [[n_intr + 6 * i + k for i in range(n_views)] for k in range(6)] \
        + [[ext + k] for k in range(6)]

    def jacobian(x: np.ndarray) -> np.ndarray:
        f0 = residuals(x)
        J = np.zeros((len(f0), len(x)))
        for cols in groups:
            step = 1e-7 * np.maximum(np.abs(x[cols]), 1e-2)
            xs = x.copy()
            xs[cols] += step
            delta = residuals(xs) - f0
            if len(cols) == 1:
                J[:, cols[0]] = delta / step[0]
            else:  # the column of view i holds the rows of view i
                J[np.arange(len(f0)), np.asarray(cols)[rows]] = delta / step[rows]
        return J

    x0 = np.concatenate([[K[0, 0], K[1, 1], K[0, 2], K[1, 2]], np.ravel(dist),
                         np.concatenate([np.r_[r, tv] for r, tv in poses]), cv2.Rodrigues(R)[0].ravel(), t])
    fit = least_squares(residuals, x0, jac=jacobian, x_scale="jac", method="lm")
    Kx, dx, views, Rx, tx = unpack(fit.x)
    # 1-sigma of the extrinsics along their worst direction, from the Gauss-Newton
    # covariance scaled by the residuals actually left
    dof = max(len(fit.fun) - len(fit.x), 1)
    cov = np.linalg.pinv(fit.jac.T @ fit.jac)[-6:, -6:] * (2 * fit.cost / dof)
    return {"K": Kx, "dist": dx.copy(), "poses": [(v[:3].copy(), v[3:].copy()) for v in views],
            "R": Rx, "t": tx.copy(),
            "rotation_sigma_deg": float(np.degrees(np.sqrt(np.linalg.eigvalsh(cov[:3, :3]).max()))),
            "translation_sigma_mm": float(1000 * np.sqrt(np.linalg.eigvalsh(cov[3:, 3:]).max()))}


# --------------------------------------------------------------------------- whole calibration


def calibrate_sensors(images: Sequence[np.ndarray], clouds: Sequence[np.ndarray], board: tuple[int, int],
                      square: float, image_names: Sequence[str] | None = None,
                      cloud_names: Sequence[str] | None = None, seed: int = 0) -> SensorCalibration:
    """Intrinsics and scanner-to-camera extrinsics from paired views of a checkerboard.

    ``images[i]``: the camera's 8-bit view (H, W) gray or (H, W, 3) BGR of pose i; ``clouds[i]``: the
    scanner's organized cloud (H', W', 3) of the same pose, metres, zeros for no
    measurement; ``board`` = (cols, rows) inner corners, ``square`` in metres;
    ``image_names``/``cloud_names`` (file names, say) label them in error messages;
    ``seed`` drives the plane fits' sampling. Raises :class:`CalibrationError` for
    too few views, a board not found, degenerate poses or clouds without the board.
    """
    image_names = list(image_names or (f"image {i}" for i in range(len(images))))
    cloud_names = list(cloud_names or (f"cloud {i}" for i in range(len(clouds))))
    if not (len(images) == len(clouds) == len(image_names) == len(cloud_names)):
        raise ValueError(f"got {len(images)} images, {len(clouds)} clouds, {len(image_names)} image names "
                         f"and {len(cloud_names)} cloud names")
    if len(images) < 3:
        raise CalibrationError(f"need at least 3 views of the board, got {len(images)}")
    if len(board) != 2 or min(board) < 2:
        raise ValueError(f"board must be (cols, rows) inner corners, each >= 2, got {board}")
    if not square > 0:
        raise ValueError(f"square must be a positive length in metres, got {square}")
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise CalibrationError(f"the images differ in size: {sorted(shapes)}")
    height, width = images[0].shape[:2]

    corners = []
    for name, image in zip(image_names, images):
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        found = find_board_corners(image, board)
        if found is None:
            raise CalibrationError(f"{name}: checkerboard with {board[0]}x{board[1]} inner corners not found")
        corners.append(found)
    objp = board_object_points(board, square)
    _, K, dist, rvecs, tvecs = cv2.calibrateCamera(
        [objp.astype(np.float32)] * len(images), [c.astype(np.float32) for c in corners],
        (width, height), None, None, criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12))
    poses = [(np.asarray(r, np.float64).ravel(), np.asarray(tv, np.float64).ravel()) for r, tv in zip(rvecs, tvecs)]
    camera_planes = np.array([np.r_[camera_plane(*pose)] for pose in poses])
    spread = normal_spread(camera_planes[:, :3])
    if spread < MIN_NORMAL_SPREAD:
        raise CalibrationError(
            f"degenerate poses: the board normals of the {len(images)} views are nearly parallel or coplanar "
            f"(spread {spread:.3f} < {MIN_NORMAL_SPREAD}); tilt the board in at least 3 clearly different directions")

    rng = np.random.default_rng(seed)
    candidates, points = [], []
    for name, cloud in zip(cloud_names, clouds):
        cloud = np.asarray(cloud)
        if cloud.ndim != 3 or cloud.shape[2] != 3:
            raise CalibrationError(f"{name}: cloud must be organized (H, W, 3), got shape {cloud.shape}")
        valid = cloud[measured(cloud)].astype(np.float64)
        if len(valid) == 0:
            raise CalibrationError(f"{name}: the cloud has no measured points")
        segments = planar_segments(cloud, rng)
        if not segments:
            raise CalibrationError(f"{name}: no planar patch of 200 or more points in the cloud")
        candidates.append([(n, d) for n, d, _ in segments])
        # the board needs a few thousand points at most: bound memory for large scanners
        points.append(valid if len(valid) <= 200_000 else valid[rng.choice(len(valid), 200_000, replace=False)])

    R, t, mismatch = _match_planes(camera_planes, candidates)
    off = [f"{name} ({a:.1f} deg, {o:.1f} mm)" for name, (a, o) in zip(cloud_names, mismatch) if a > 3 or o > 20]
    if off:
        raise CalibrationError(
            "no plane in the cloud matches the board seen in the image (angle, offset to the best plane) for "
            + ", ".join(off) + ": do the clouds overlap the images, and is each pair the same board pose?")

    def on_board(R: np.ndarray, t: np.ndarray, gate: float) -> list[np.ndarray]:
        found = [_board_points(p, R, t, pose, board, square, gate) for p, pose in zip(points, poses)]
        for name, bp in zip(cloud_names, found):
            if len(bp) < 50:
                raise CalibrationError(f"{name}: only {len(bp)} scanner points on the board seen by the camera "
                                       "(does the cloud overlap the image? is it the same board pose?)")
        return found

    def subsample(sets: list[np.ndarray], most: int) -> list[np.ndarray]:
        return [p if len(p) <= most else p[rng.choice(len(p), most, replace=False)] for p in sets]

    # plane method: gate the board points ever tighter around the current estimate
    gate = 0.01
    for _ in range(3):
        sample = subsample(on_board(R, t, gate), 2000)
        scale = max(1.4826 * _mad_of(sample, R, t, camera_planes), 1e-4)
        R, t, res = refine_extrinsics(R, t, camera_planes, sample, scale)
        gate = max(6 * 1.4826 * float(np.median(np.abs(res))), 0.001)
    # then everything at once: the scanner's metric planes also correct the intrinsics
    fit = refine_jointly(K, np.ravel(dist), poses, corners, objp, subsample(on_board(R, t, gate), 500), R, t,
                         sigma_px=np.maximum(_view_rms(K, dist, poses, corners, objp) / np.sqrt(2), 0.01),
                         sigma_m=max(1.4826 * float(np.median(np.abs(res))), 5e-5))
    K, dist, poses, R, t = fit["K"], fit["dist"], fit["poses"], fit["R"], fit["t"]
    camera_planes = np.array([np.r_[camera_plane(*pose)] for pose in poses])
    res = np.concatenate([_dot(rigid(bp, R, t), camera_planes[i, :3]) - camera_planes[i, 3]
                          for i, bp in enumerate(on_board(R, t, gate))])

    per_view = _view_rms(K, dist, poses, corners, objp)
    residuals = {
        "method": "plane",
        "views": len(images),
        "reprojection_rms_px": float(np.sqrt(np.mean(np.square(per_view)))),
        "reprojection_max_view_rms_px": float(per_view.max()),
        "plane_rms_mm": float(np.sqrt(np.mean(res**2)) * 1000),
        "plane_points": int(len(res)),
        "normal_spread": spread,
        "rotation_sigma_deg": fit["rotation_sigma_deg"],
        "translation_sigma_mm": fit["translation_sigma_mm"],
    }
    return SensorCalibration(K=K, dist=np.asarray(dist).ravel(), width=width, height=height, R=R, t=t,
                             residuals=residuals)


def _view_rms(K: np.ndarray, dist: np.ndarray, poses: list[tuple[np.ndarray, np.ndarray]],
              corners: list[np.ndarray], objp: np.ndarray) -> np.ndarray:
    """(N,) RMS reprojection error in pixels of each view's corners."""
    return np.array([np.sqrt(np.mean(np.sum((cv2.projectPoints(objp, *pose, K, dist)[0].reshape(-1, 2) - c) ** 2,
                                            axis=1))) for pose, c in zip(poses, corners)])


def _mad_of(board_points: list[np.ndarray], R: np.ndarray, t: np.ndarray, camera_planes: np.ndarray) -> float:
    res = np.concatenate([_dot(rigid(p, R, t), camera_planes[i, :3]) - camera_planes[i, 3]
                          for i, p in enumerate(board_points)])
    return float(np.median(np.abs(res - np.median(res))))


# --------------------------------------------------------------------------- projection


def project_to_camera(xyz: np.ndarray, calib: SensorCalibration, width: int | None = None,
                      height: int | None = None) -> np.ndarray:
    """Scanner points in the camera's pixel grid: organized (height, width, 3) float32, CAMERA frame.

    ``xyz``: scanner-frame points, organized (H', W', 3) or a list (P, 3), metres;
    zeros and non-finite entries are "no measurement". Each point is moved into
    the camera frame (``R @ p + t``), projected with the camera's distortion and
    written to the nearest pixel; where several land on one pixel the nearest to
    the camera wins (z-buffer). Pixels where nothing lands stay zero. ``width``,
    ``height`` default to the calibrated image size; another size is the same
    field of view resampled (the camera matrix scaled). Raises ValueError when no
    point lands in the image.
    """
    width = calib.width if width is None else int(width)
    height = calib.height if height is None else int(height)
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    xyz = np.asarray(xyz)
    if xyz.shape[-1] != 3 or xyz.ndim not in (2, 3):
        raise ValueError(f"xyz must be (H, W, 3) or (P, 3), got shape {xyz.shape}")
    points = xyz.reshape(-1, 3).astype(np.float64)
    points = points[np.all(np.isfinite(points), axis=1) & np.any(points != 0, axis=1)]
    if len(points) == 0:
        raise ValueError("the cloud has no measured points (all zeros or non-finite)")
    K = calib.K.copy()
    sx, sy = width / calib.width, height / calib.height
    K[0] *= sx
    K[1] *= sy
    K[0, 2] += 0.5 * sx - 0.5  # keep pixel centres on pixel centres when resampling
    K[1, 2] += 0.5 * sy - 0.5

    camera = rigid(points, calib.R, calib.t)
    # distortion polynomials fold back far outside the field of view: keep only rays
    # inside (a margin around) the image's undistorted footprint
    fov = _undistorted_bounds(K, calib.dist, width, height)
    with np.errstate(divide="ignore", invalid="ignore"):
        nx, ny = camera[:, 0] / camera[:, 2], camera[:, 1] / camera[:, 2]
    keep = (camera[:, 2] > 1e-6) & (nx >= fov[0]) & (nx <= fov[1]) & (ny >= fov[2]) & (ny <= fov[3])
    camera = camera[keep]
    out = np.zeros((height, width, 3), np.float32)
    if len(camera):
        px = cv2.projectPoints(camera, np.zeros(3), np.zeros(3), K, calib.dist)[0].reshape(-1, 2)
        u, v = np.floor(px[:, 0] + 0.5).astype(np.int64), np.floor(px[:, 1] + 0.5).astype(np.int64)
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        camera, flat = camera[inside], (v * width + u)[inside]
        order = np.lexsort((camera[:, 2], flat))  # per pixel, nearest first
        first = order[np.unique(flat[order], return_index=True)[1]]
        out.reshape(-1, 3)[flat[first]] = camera[first]
    if not out.any():
        raise ValueError(f"no scanner point lands in the {width}x{height} camera image "
                         "(wrong calibration, or the cloud does not overlap the camera's view)")
    return out


def _undistorted_bounds(K: np.ndarray, dist: np.ndarray, width: int, height: int) -> tuple[float, ...]:
    """(x_min, x_max, y_min, y_max) of the normalized rays through the image border, with a 10% margin."""
    u = np.linspace(-0.5, width - 0.5, 33)
    v = np.linspace(-0.5, height - 0.5, 33)
    border = np.concatenate([np.stack([u, np.full_like(u, v[0])], 1), np.stack([u, np.full_like(u, v[-1])], 1),
                             np.stack([np.full_like(v, u[0]), v], 1), np.stack([np.full_like(v, u[-1]), v], 1)])
    norm = cv2.undistortPoints(border[:, None, :], K, dist).reshape(-1, 2)
    (x0, y0), (x1, y1) = norm.min(axis=0), norm.max(axis=0)
    mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    return x0 - mx, x1 + mx, y0 - my, y1 + my


# --------------------------------------------------------------------------- files


def read_views(images_dir: str | os.PathLike, clouds_dir: str | os.PathLike
               ) -> tuple[list[str], list[str], list[np.ndarray], list[np.ndarray]]:
    """Paired views from ``images_dir/NNN.png`` and ``clouds_dir/NNN.tiff`` (or ``.tif``).

    Returns (image paths, cloud paths, gray images (H, W) uint8, clouds (H', W', 3)
    float32), sorted by NNN. Raises CalibrationError naming the views that have an
    image but no cloud, or the reverse, and any file that cannot be read.
    """
    import tifffile

    images_dir, clouds_dir = Path(images_dir), Path(clouds_dir)
    for d in (images_dir, clouds_dir):
        if not d.is_dir():
            raise CalibrationError(f"not a folder: {d}")
    image_files = {p.stem: p for p in images_dir.iterdir() if p.suffix.lower() == ".png"}
    cloud_files = {p.stem: p for p in clouds_dir.iterdir() if p.suffix.lower() in (".tiff", ".tif")}
    if image_files.keys() != cloud_files.keys():
        problems = []
        if lonely := sorted(image_files.keys() - cloud_files.keys()):
            problems.append(f"images without a cloud: {', '.join(image_files[k].name for k in lonely)}")
        if lonely := sorted(cloud_files.keys() - image_files.keys()):
            problems.append(f"clouds without an image: {', '.join(cloud_files[k].name for k in lonely)}")
        raise CalibrationError(f"images in {images_dir} and clouds in {clouds_dir} do not pair up by name: "
                               + "; ".join(problems))
    stems = sorted(image_files)
    images, clouds = [], []
    for stem in stems:
        image = cv2.imread(str(image_files[stem]), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise CalibrationError(f"{image_files[stem]}: not a readable image")
        try:
            cloud = np.asarray(tifffile.imread(cloud_files[stem]), dtype=np.float32)
        except Exception as exc:  # tifffile raises several types for broken files
            raise CalibrationError(f"{cloud_files[stem]}: not a readable TIFF ({exc})") from None
        images.append(image)
        clouds.append(cloud)
    return ([str(image_files[s]) for s in stems], [str(cloud_files[s]) for s in stems], images, clouds)
