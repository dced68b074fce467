"""Camera + scanner calibration on synthetic rigs with known ground truth, and the projection.

The rigs are rendered (supersampled checkerboards with image noise, scanner clouds
with depth noise and dropouts); the solver never sees their truth. Acceptance
limits are the issue's: extrinsics within 2 mm and 0.2 degrees, reprojection
error below 0.5 px, and the organized cloud on the true pixels.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import replace

import cv2
import numpy as np
import pytest
import tifffile

from calibration import cli
from calibration.rig import calibration_errors, make_rig, render_cloud, write_rig
from calibration.sensors import (
    SensorCalibration,
    extrinsics_from_planes,
    fit_plane,
    normal_spread,
    project_to_camera,
)


def _rotation_error_deg(R_est: np.ndarray, R_true: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R_est @ R_true.T) - 1) / 2, -1, 1))))


def _true_calibration(truth: dict) -> SensorCalibration:
    cam, ext = truth["camera"], truth["scanner_to_camera"]
    return SensorCalibration(K=cam["K"], dist=cam["dist"], width=cam["width"], height=cam["height"],
                             R=ext["R"], t=ext["t"])


@pytest.fixture(scope="module", params=[
    dict(seed=11, n_poses=8),
    dict(seed=23, n_poses=6, image_noise=3.0, depth_noise=0.0005, floor=False),
    dict(seed=0, n_poses=6, scanner_offset=(0.25, 0.3), scanner_turn_deg=(15.0, 20.0)),
], ids=["8poses-floor", "6poses-noisy-nofloor", "6poses-wide-baseline"])
def calibrated(request, tmp_path_factory):
    """A rig written to disk and calibrated through the CLI: (folder, truth dict, calib, report)."""
    folder = tmp_path_factory.mktemp("rig")
    rig = make_rig(**request.param)
    write_rig(rig, folder)
    out = folder / "calib.toml"
    rc = cli.main(["sensors", "--images", str(folder / "images"), "--clouds", str(folder / "clouds"),
                   "--board", "9x6", "--square", "0.02", "--out", str(out), "--overlay", str(folder / "overlay.png")])
    assert rc == 0
    truth = json.loads((folder / "truth.json").read_text())
    return folder, truth, SensorCalibration.load(out), tomllib.loads(out.read_text())


def test_extrinsics_and_reprojection_within_limits(calibrated):
    _, truth, calib, _ = calibrated
    R_true = np.array(truth["scanner_to_camera"]["R"])
    t_true = np.array(truth["scanner_to_camera"]["t"])
    assert _rotation_error_deg(calib.R, R_true) < 0.2
    assert np.linalg.norm(calib.t - t_true) * 1000 < 2.0
    assert calib.residuals["reprojection_rms_px"] < 0.5
    errors = calibration_errors(calib, truth)
    assert errors["alignment_rms_px"] < 1.0
    K_true = np.array(truth["camera"]["K"])
    assert abs(calib.K[0, 0] / K_true[0, 0] - 1) < 0.005
    assert (calib.width, calib.height) == (truth["camera"]["width"], truth["camera"]["height"])


def test_calib_toml_layout(calibrated):
    folder, _, calib, doc = calibrated
    assert np.array(doc["camera"]["K"]).shape == (3, 3)
    assert len(doc["camera"]["dist"]) == 5
    assert np.array(doc["scanner_to_camera"]["R"]).shape == (3, 3)
    assert len(doc["scanner_to_camera"]["t"]) == 3
    assert doc["residuals"]["method"] == "plane"
    assert doc["residuals"]["views"] == len(list((folder / "images").glob("*.png")))
    overlay = cv2.imread(str(folder / "overlay.png"))
    assert overlay.shape == (calib.height, calib.width, 3)


def test_organized_cloud_lands_on_the_true_pixels(calibrated):
    folder, truth, calib, _ = calibrated
    true_calib = _true_calibration(truth)
    for path in sorted((folder / "clouds").glob("*.tiff"))[:3]:
        cloud = tifffile.imread(path)
        estimated = project_to_camera(cloud, calib)
        expected = project_to_camera(cloud, true_calib)
        assert estimated.shape == (calib.height, calib.width, 3) and estimated.dtype == np.float32
        est_hit, true_hit = estimated[..., 2] > 0, expected[..., 2] > 0
        # the scanner grid is sparser than the camera's: compare hits up to one pixel
        near = np.ones((3, 3), np.uint8)
        true_near = cv2.dilate(true_hit.astype(np.uint8), near) > 0
        est_near = cv2.dilate(est_hit.astype(np.uint8), near) > 0
        assert true_near[est_hit].mean() > 0.99 and est_near[true_hit].mean() > 0.99
        # independent of project_to_camera: the scanner point behind each landed pixel
        # (undo the estimated transform), projected by the TRUE rig, falls on that pixel up
        # to rounding (0.5 px) and the calibration's own error (a few tenths of a pixel)
        v, u = np.nonzero(est_hit)
        scanner = (estimated[est_hit].astype(np.float64) - calib.t) @ calib.R
        true_camera = scanner @ np.array(truth["scanner_to_camera"]["R"]).T + truth["scanner_to_camera"]["t"]
        px = cv2.projectPoints(true_camera, np.zeros(3), np.zeros(3), np.array(truth["camera"]["K"]),
                               np.array(truth["camera"]["dist"]))[0].reshape(-1, 2)
        offset = np.abs(px - np.stack([u, v], axis=1)).max(axis=1)
        assert np.median(offset) < 0.6 and np.percentile(offset, 99) < 1.2


def test_align_cli_writes_camera_grid_clouds(calibrated, tmp_path):
    folder, _, calib, _ = calibrated
    rc = cli.main(["align", "--calib", str(folder / "calib.toml"), "--clouds", str(folder / "clouds"),
                   "--out", str(tmp_path / "aligned")])
    assert rc == 0
    written = sorted((tmp_path / "aligned").glob("*.tiff"))
    assert len(written) == len(list((folder / "clouds").glob("*.tiff")))
    first = tifffile.imread(written[0])
    assert first.shape == (calib.height, calib.width, 3)
    np.testing.assert_array_equal(first, project_to_camera(tifffile.imread(folder / "clouds" / written[0].name), calib))


# --------------------------------------------------------------------------- projection


def _simple_calibration(dist=(0, 0, 0, 0, 0), width=64, height=48) -> SensorCalibration:
    K = [[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]
    return SensorCalibration(K=K, dist=list(dist), width=width, height=height, R=np.eye(3), t=[0, 0, 0])


def test_projection_z_buffer_keeps_the_nearest_point():
    calib = _simple_calibration()
    near, far = [0.0, 0.0, 1.0], [0.0, 0.0, 2.0]
    for points in ([near, far], [far, near]):
        out = project_to_camera(np.array(points), calib)
        hit = np.argwhere(out[..., 2] > 0)
        assert len(hit) == 1
        np.testing.assert_array_equal(out[tuple(hit[0])], np.float32(near))


def test_projection_pixel_convention_and_frame():
    calib = SensorCalibration(K=[[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]], dist=[0, 0, 0, 0, 0],
                              width=64, height=48, R=cv2.Rodrigues(np.array([0.0, 0.1, 0.0]))[0], t=[0.05, 0, 0])
    scanner_point = np.array([[0.02, -0.01, 0.8]])
    camera_point = calib.R @ scanner_point[0] + calib.t
    u = 50.0 * camera_point[0] / camera_point[2] + 31.5
    v = 50.0 * camera_point[1] / camera_point[2] + 23.5
    out = project_to_camera(scanner_point, calib)
    np.testing.assert_allclose(out[int(np.floor(v + 0.5)), int(np.floor(u + 0.5))], camera_point, rtol=1e-6)
    assert (out[..., 2] > 0).sum() == 1


def test_projection_applies_distortion():
    dist = np.array([-0.2, 0.05, 0.001, -0.002, 0.0])
    calib = _simple_calibration(dist)
    rng = np.random.default_rng(0)
    points = np.c_[rng.uniform(-0.4, 0.4, 50), rng.uniform(-0.3, 0.3, 50), np.ones(50)] * rng.uniform(0.5, 2, (50, 1))
    out = project_to_camera(points, calib)
    # Brown-Conrady by hand (OpenCV's 5-coefficient model)
    x, y = points[:, 0] / points[:, 2], points[:, 1] / points[:, 2]
    r2 = x * x + y * y
    radial = 1 + dist[0] * r2 + dist[1] * r2**2 + dist[4] * r2**3
    xd = x * radial + 2 * dist[2] * x * y + dist[3] * (r2 + 2 * x * x)
    yd = y * radial + dist[2] * (r2 + 2 * y * y) + 2 * dist[3] * x * y
    u, v = np.floor(50 * xd + 31.5 + 0.5).astype(int), np.floor(50 * yd + 23.5 + 0.5).astype(int)
    for i in range(len(points)):
        if 0 <= u[i] < 64 and 0 <= v[i] < 48 and out[v[i], u[i], 2] == np.float32(points[i, 2]):
            continue
        # another point may win the pixel; it must then be nearer
        assert 0 <= u[i] < 64 and 0 <= v[i] < 48 and out[v[i], u[i], 2] < points[i, 2]


def test_projection_resampled_grid_keeps_the_field_of_view():
    calib = _simple_calibration()
    point = np.array([[0.1, 0.05, 1.0]])
    full = np.argwhere(project_to_camera(point, calib)[..., 2] > 0)[0]
    half = np.argwhere(project_to_camera(point, calib, width=32, height=24)[..., 2] > 0)[0]
    # pixel centres: (p + 0.5) / 2 - 0.5
    np.testing.assert_allclose(half, np.floor((full + 0.5) / 2 - 0.5 + 0.5), atol=1)


def test_projection_ignores_missing_points_and_rejects_no_overlap():
    calib = _simple_calibration()
    cloud = np.zeros((4, 4, 3), np.float32)
    cloud[0, 0] = [0, 0, 1]
    cloud[1, 1] = [np.nan, 0, 1]
    out = project_to_camera(cloud, calib)
    assert (out[..., 2] > 0).sum() == 1
    with pytest.raises(ValueError, match="no scanner point lands"):
        project_to_camera(np.array([[0.0, 0.0, -1.0], [50.0, 0.0, 1.0]]), calib)  # behind, far outside
    with pytest.raises(ValueError, match="no measured points"):
        project_to_camera(np.zeros((4, 4, 3), np.float32), calib)
    with pytest.raises(ValueError, match="shape"):
        project_to_camera(np.zeros((4, 4, 2), np.float32), calib)


def test_projection_of_a_rendered_cloud_against_the_rig_truth():
    rig = make_rig(5, n_poses=1, dropout=0.0, floor=False, depth_noise=0.0)
    cloud = render_cloud(rig, 0)
    calib = SensorCalibration(K=rig.K, dist=rig.dist, width=rig.width, height=rig.height, R=rig.R, t=rig.t)
    out = project_to_camera(cloud, calib)
    hit = out[..., 2] > 0
    # every landed point lies on the true board plane, in the camera frame
    Rb = cv2.Rodrigues(rig.poses[0][0])[0]
    n, d = Rb[:, 2], Rb[:, 2] @ rig.poses[0][1]
    np.testing.assert_allclose(out[hit].astype(np.float64) @ n, d, atol=1e-5)
    # and sits on the pixel its true projection rounds to
    v, u = np.nonzero(hit)
    px = cv2.projectPoints(out[hit].astype(np.float64), np.zeros(3), np.zeros(3), rig.K, rig.dist)[0].reshape(-1, 2)
    assert np.abs(px - np.stack([u, v], axis=1)).max() <= 0.5 + 1e-4


# --------------------------------------------------------------------------- pieces


def test_fit_plane_with_outliers():
    rng = np.random.default_rng(3)
    n = np.array([0.2, -0.3, 0.93])
    n /= np.linalg.norm(n)
    basis = np.linalg.svd(n[None])[2][1:]
    on_plane = rng.uniform(-0.2, 0.2, (3000, 2)) @ basis + 0.6 * n + rng.normal(0, 3e-4, (3000, 1)) * n
    outliers = rng.uniform(-0.5, 0.5, (1000, 3)) + [0, 0, 1.0]
    normal, offset, inliers = fit_plane(np.vstack([on_plane, outliers]), 0.003, rng)
    assert np.degrees(np.arccos(abs(normal @ n))) < 0.1
    assert abs(offset - 0.6) < 2e-4
    assert inliers[:3000].mean() > 0.99


def test_extrinsics_from_noise_free_planes_are_exact():
    rng = np.random.default_rng(4)
    R = cv2.Rodrigues(np.array([0.05, -0.1, 0.08]))[0]
    t = np.array([0.1, -0.03, 0.02])
    normals = rng.normal(size=(5, 3)) * [0.4, 0.4, 1] + [0, 0, 2]
    scanner = np.c_[normals / np.linalg.norm(normals, axis=1, keepdims=True), rng.uniform(0.3, 0.7, 5)]
    camera_normals = scanner[:, :3] @ R.T
    camera = np.c_[camera_normals, scanner[:, 3] + camera_normals @ t]
    R_est, t_est = extrinsics_from_planes(camera, scanner)
    np.testing.assert_allclose(R_est, R, atol=1e-12)
    np.testing.assert_allclose(t_est, t, atol=1e-12)


def test_normal_spread_flags_parallel_and_coplanar_normals():
    parallel = np.array([[0, 0, 1.0]] * 4) + np.random.default_rng(0).normal(0, 1e-4, (4, 3))
    coplanar = np.array([[0, np.sin(a), np.cos(a)] for a in (-0.4, 0.0, 0.3, 0.5)])
    spread_out = np.array([[0.3, 0, 0.95], [-0.3, 0.2, 0.93], [0, -0.35, 0.94]])
    assert normal_spread(parallel) < 0.01
    assert normal_spread(coplanar) < 1e-9
    assert normal_spread(spread_out) > 0.1


def test_calibration_file_validation_and_round_trip(tmp_path):
    calib = _simple_calibration(dist=(-0.1, 0.01, 0, 0, 0))
    calib = replace(calib, residuals={"reprojection_rms_px": 0.1, "method": "plane"})
    path = calib.save(tmp_path / "c.toml")
    again = SensorCalibration.load(path)
    np.testing.assert_array_equal(again.K, calib.K)
    np.testing.assert_array_equal(again.dist, calib.dist)
    assert again.residuals == calib.residuals
    with pytest.raises(ValueError, match="rotation"):
        SensorCalibration(K=calib.K, dist=calib.dist, width=64, height=48, R=np.eye(3) * 1.1, t=[0, 0, 0])
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        SensorCalibration(K=np.eye(2), dist=calib.dist, width=64, height=48, R=np.eye(3), t=[0, 0, 0])
    with pytest.raises(ValueError, match="NaN"):
        SensorCalibration(K=calib.K, dist=calib.dist, width=64, height=48, R=np.eye(3), t=[0, np.nan, 0])
    broken = tmp_path / "broken.toml"
    broken.write_text(path.read_text().replace("[scanner_to_camera]", "[scanner]"))
    with pytest.raises(ValueError, match="scanner_to_camera"):
        SensorCalibration.load(broken)
    with pytest.raises(FileNotFoundError):
        SensorCalibration.load(tmp_path / "missing.toml")
