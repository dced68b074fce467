"""The synthetic rig renders what its ground truth says (so calibration tests measure the solver)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import tifffile

from calibration import cli
from calibration.rig import make_rig, render_cloud, render_image
from calibration.sensors import board_object_points, find_board_corners


def test_detected_corners_match_the_true_projection():
    rig = make_rig(2, n_poses=3)
    objp = board_object_points(rig.board, rig.square)
    for i, (rvec, tvec) in enumerate(rig.poses):
        found = find_board_corners(render_image(rig, i), rig.board)
        true = cv2.projectPoints(objp, rvec, tvec, rig.K, rig.dist)[0].reshape(-1, 2)
        if np.linalg.norm(found[0] - true[0]) > 5:  # the detector may start from the opposite corner
            found = found[::-1]
        assert np.sqrt(np.mean(np.sum((found - true) ** 2, axis=1))) < 0.15


def test_cloud_lies_on_the_true_board_plane_with_the_stated_noise():
    rig = make_rig(4, n_poses=2, depth_noise=0.0004, dropout=0.05, floor=False)
    for i, (rvec, tvec) in enumerate(rig.poses):
        cloud = render_cloud(rig, i)
        assert cloud.shape == (rig.scanner_height, rig.scanner_width, 3) and cloud.dtype == np.float32
        points = cloud[np.any(cloud != 0, axis=-1)].astype(np.float64)
        Rb = cv2.Rodrigues(rvec)[0]
        n_scanner = rig.R.T @ Rb[:, 2]  # the board normal in the scanner frame
        d_scanner = Rb[:, 2] @ tvec - Rb[:, 2] @ rig.t
        distance = points @ n_scanner - d_scanner
        # a depth error e moves a point along its ray (x/z, y/z, 1), so its distance to
        # the plane changes by e * d / z: undo that scale to recover the depth noise
        depth_error = distance * points[:, 2] / d_scanner
        assert abs(depth_error.std() / 0.0004 - 1) < 0.05
        assert abs(depth_error.mean()) < 2e-5


def test_floor_behind_the_board_and_dropouts():
    rig = make_rig(4, n_poses=1, dropout=0.1)
    cloud = render_cloud(rig, 0)
    z = cloud[..., 2]
    assert 0.05 < (z == 0).mean() < 0.2  # dropouts, nothing else missing with a floor
    assert z.max() > 0.8  # the floor is far behind the board (0.35-0.65 m)


def test_rig_is_deterministic_by_seed():
    a, b, c = make_rig(9, n_poses=2), make_rig(9, n_poses=2), make_rig(10, n_poses=2)
    np.testing.assert_array_equal(render_image(a, 1), render_image(b, 1))
    np.testing.assert_array_equal(render_cloud(a, 1), render_cloud(b, 1))
    assert not np.array_equal(a.K, c.K)


def test_synth_rig_cli_writes_images_clouds_and_truth(tmp_path):
    assert cli.main(["synth-rig", "--out", str(tmp_path), "--poses", "3", "--seed", "1", "--no-floor"]) == 0
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert len(truth["poses"]) == 3 and truth["board"] == [9, 6] and not truth["noise"]["floor"]
    images = sorted((tmp_path / "images").glob("*.png"))
    clouds = sorted((tmp_path / "clouds").glob("*.tiff"))
    assert [p.stem for p in images] == [p.stem for p in clouds] == ["000", "001", "002"]
    image = cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (480, 640) and image.dtype == np.uint8
    cloud = tifffile.imread(clouds[0])
    assert cloud.shape == (240, 320, 3) and cloud.dtype == np.float32
    assert (cloud[..., 2] == 0).any() and np.all(cloud[cloud[..., 2] == 0] == 0)
