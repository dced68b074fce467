"""Eyecandies layout reader on a tiny synthetic copy of the official format.

The fixture renders a known scene (a tilted table with a bump) from a known
camera pose, stores it the way Eyecandies does (16-bit depth normalized by
info_depth.yaml, 4 x 4 pose, six lights, masks) and checks that the reader
gives back the scene's world points in the official conversion's axes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.evaluate.datasets import (
    EYECANDIES_FOCAL_512, DatasetError, eyecandies_depth_range, read_eyecandies, read_frames,
)

SIZE = 64
FOCAL = EYECANDIES_FOCAL_512 * SIZE / 512  # the same camera at 64 px


def pose_world_to_camera(tilt_deg: float) -> np.ndarray:
    a = np.deg2rad(tilt_deg)
    pose = np.eye(4)
    pose[:3, :3] = [[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]
    pose[:3, 3] = [0.05, -0.1, 0.3]
    return pose


def scene(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(depth (H, W), pose, expected cloud (H, W, 3)) of sample ``index``."""
    v, u = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    depth = 4.0 + 0.01 * v - 0.3 * np.exp(-((u - 30) ** 2 + (v - 34) ** 2) / 60.0) + 0.05 * index
    pose = pose_world_to_camera(10.0 + 5 * index)
    camera = np.stack([(u - SIZE / 2) / FOCAL * depth, (v - SIZE / 2) / FOCAL * depth, depth, np.ones_like(u)], -1)
    world = camera @ np.linalg.inv(pose).T  # the pose maps world to camera
    expected = np.stack([world[..., 0], world[..., 2], world[..., 1]], -1) * [0.1, -0.1, 0.1]
    return depth, pose, expected


def write_sample(data: Path, sid: str, index: int, defective: bool) -> np.ndarray:
    depth, pose, expected = scene(index)
    lo, hi = float(depth.min()), float(depth.max())
    cv2.imwrite(str(data / f"{sid}_depth.png"), np.round((depth - lo) / (hi - lo) * 65535).astype(np.uint16))
    (data / f"{sid}_info_depth.yaml").write_text(f"normalization:\n  max: {hi!r}\n  min: {lo!r}\n")
    np.savetxt(data / f"{sid}_pose.txt", pose)
    rng = np.random.default_rng(index)
    for light in range(6):
        cv2.imwrite(str(data / f"{sid}_image_{light}.png"), rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    cv2.imwrite(str(data / f"{sid}_normals.png"), np.full((SIZE, SIZE, 3), 128, np.uint8))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if defective:
        mask[30:38, 26:34] = 255
    cv2.imwrite(str(data / f"{sid}_mask.png"), mask)
    return expected


@pytest.fixture(scope="module")
def eyecandies(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("eyecandies")
    expected = {}
    for name, n in (("CandyCane", 4), ("GummyBear", 2)):
        data = root / name / "test_public" / "data"
        data.mkdir(parents=True)
        for i in range(n):
            expected[(name, f"{i:02d}")] = write_sample(data, f"{i:02d}", i, defective=i % 2 == 1)
    (root / "CandyCane" / "train" / "data").mkdir(parents=True)
    return root, expected


def test_lists_classes_and_labels_from_masks(eyecandies):
    root, _ = eyecandies
    found = read_eyecandies(root)
    assert list(found) == ["CandyCane", "GummyBear"]
    candy = found["CandyCane"]
    assert [s.name for s in candy] == ["00", "01", "02", "03"] and [s.index for s in candy] == [0, 1, 2, 3]
    assert [s.label for s in candy] == [0, 1, 0, 1] and [s.defect for s in candy] == ["good", "bad", "good", "bad"]
    assert all(s.layout == "eyecandies" and s.rgb_path.name.endswith("_image_4.png") for s in candy)
    assert read_eyecandies(root, light=2)["GummyBear"][0].rgb_path.name == "00_image_2.png"


def test_depth_becomes_the_official_organized_cloud(eyecandies):
    root, expected = eyecandies
    for name, samples in read_eyecandies(root).items():
        for s in samples:
            rgb, xyz, gt = read_frames(s)
            assert rgb.shape == (SIZE, SIZE, 3) and xyz.shape == (SIZE, SIZE, 3) and xyz.dtype == np.float32
            want = expected[(name, s.name)]
            step = 0.1 * np.ptp(scene(0)[0]) / 65535 * 4  # a few 16-bit depth steps, scaled
            np.testing.assert_allclose(xyz, want, atol=max(step, 2e-6))
            assert gt.shape == (SIZE, SIZE) and bool(gt.any()) == bool(s.label)
            assert np.array_equal(rgb, cv2.imread(str(s.rgb_path))[..., ::-1])


def test_missing_files_and_unknown_classes_are_listed(eyecandies, tmp_path):
    root, _ = eyecandies
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    data = copy / "CandyCane" / "test_public" / "data"
    (data / "01_pose.txt").unlink()
    (data / "02_image_4.png").unlink()
    (data / "03_mask.png").unlink()
    with pytest.raises(DatasetError) as err:
        read_eyecandies(copy)
    for name in ("01_pose.txt", "02_image_4.png", "03_mask.png"):
        assert f"missing {data / name}" in str(err.value)
    assert "3 problem(s)" in str(err.value)
    with pytest.raises(DatasetError, match=r"unknown class.*'Lollipop'.*available: CandyCane, GummyBear"):
        read_eyecandies(root, ["Lollipop"])


def test_unreadable_depth_info_pose_are_named(eyecandies, tmp_path):
    root, _ = eyecandies
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    a, b, c = read_eyecandies(copy, ["CandyCane"])["CandyCane"][:3]
    a.depth_info_path.write_text("something: else\n")
    with pytest.raises(DatasetError, match=rf"{a.depth_info_path}: no 'normalization"):
        read_frames(a)
    np.savetxt(b.pose_path, np.eye(3))
    with pytest.raises(DatasetError, match=rf"{b.pose_path}: expected a 4 x 4 matrix"):
        read_frames(b)
    cv2.imwrite(str(c.xyz_path), np.zeros((SIZE, SIZE), np.uint8))
    with pytest.raises(DatasetError, match=rf"{c.xyz_path}: expected a 16-bit single-channel depth PNG"):
        read_frames(c)


def test_depth_range_reads_block_and_flow_yaml():
    assert eyecandies_depth_range("normalization:\n  max: 5.5\n  min: 0.25\n") == (0.25, 5.5)
    assert eyecandies_depth_range("other: 1\nnormalization: {min: -1e-2, max: 3}\n") == (-0.01, 3.0)
    with pytest.raises(ValueError, match="normalization"):
        eyecandies_depth_range("min: 1\nmax: 2\n")
