"""MVTec 3D-AD layout reader on real files: listing, damage reports, frame reading, alignment."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from edge_runtime.evaluate.datasets import DatasetError, load_sample, read_frames, read_mvtec3d
from edge_runtime.sim.generator import write_line

SIZE = 64


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    write_line(root, "cookie", 10, 0.4, 1, image_size=SIZE)
    write_line(root, "tile", 6, 0.5, 1, image_size=SIZE)
    (root / "readme.txt").write_text("not a class")
    (root / "calibration").mkdir()  # a folder without test/ is not a class
    return root


@pytest.fixture
def copy(dataset, tmp_path) -> Path:
    shutil.copytree(dataset, tmp_path / "d")
    return tmp_path / "d"


def test_lists_every_class_in_arrival_order_with_kinds(dataset):
    found = read_mvtec3d(dataset)
    assert list(found) == ["cookie", "tile"]
    cookie = found["cookie"]
    assert [s.index for s in cookie] == list(range(10))
    parts = json.loads((dataset / "cookie" / "sim_meta.json").read_text())["parts"]
    meta = {(p["defect"], p["name"]): p for p in parts}
    for s in cookie:
        assert s.defect_kind == meta[(s.defect, s.name)]["defect_kind"]
        assert s.label == int(s.defect != "good") and (s.gt_path is None) == (s.defect == "good")
        assert s.rgb_path.is_file() and s.xyz_path.suffix == ".tiff"
    assert sum(s.label for s in cookie) == 4
    assert list(read_mvtec3d(dataset, ["tile"])) == ["tile"]


def test_without_sim_meta_order_is_by_folder_and_kind_unknown(copy):
    (copy / "tile" / "sim_meta.json").unlink()
    samples = read_mvtec3d(copy, ["tile"])["tile"]
    keys = [(s.defect, s.name) for s in samples]
    assert keys == sorted(keys) and all(s.defect_kind is None for s in samples)


def test_unknown_class_lists_the_available_ones(dataset):
    with pytest.raises(DatasetError, match=r"unknown class.*'bagel'.*available: cookie, tile"):
        read_mvtec3d(dataset, ["bagel"])
    with pytest.raises(DatasetError, match="not a folder"):
        read_mvtec3d(dataset / "nothing_here")
    with pytest.raises(DatasetError, match=r"no MVTec 3D-AD .* classes under"):
        read_mvtec3d(dataset, split="train")


def test_a_damaged_copy_lists_every_problem(copy):
    test = copy / "cookie" / "test"
    bad = next(p for p in sorted(test.iterdir()) if p.name != "good")
    (test / "good" / "xyz" / "001.tiff").unlink()
    (bad / "gt" / "000.png").unlink()
    (test / "good" / "rgb" / "002.png").write_bytes(b"")
    (test / "good" / "rgb" / "003.png").unlink()
    with pytest.raises(DatasetError) as err:
        read_mvtec3d(copy)
    message = str(err.value)
    assert "4 problem(s)" in message
    for expected in (f"missing {test / 'good' / 'xyz' / '001.tiff'}", f"missing {bad / 'gt' / '000.png'}",
                     f"empty file {test / 'good' / 'rgb' / '002.png'}", f"missing {test / 'good' / 'rgb' / '003.png'}"):
        assert expected in message
    assert list(read_mvtec3d(copy, ["tile"])) == ["tile"]  # the intact class still reads


def test_a_file_named_in_sim_meta_but_gone_is_reported(copy):
    folder = copy / "tile" / "test" / "good"
    for sub, ext in (("rgb", "png"), ("xyz", "tiff")):
        (folder / sub / f"000.{ext}").unlink()
    with pytest.raises(DatasetError, match=r"000\.png \(listed in sim_meta\.json\)"):
        read_mvtec3d(copy, ["tile"])


def test_frames_read_back_as_written(dataset):
    sample = next(s for s in read_mvtec3d(dataset)["cookie"] if s.label)
    rgb, xyz, gt = read_frames(sample)
    assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
    assert np.array_equal(xyz, tifffile.imread(sample.xyz_path))
    measured = (xyz != 0).all(axis=-1)
    # Channels stay x, y, z: z is the camera distance, x grows to the right.
    assert 0.15 < xyz[..., 2][measured].min()
    assert np.median(np.diff(xyz[..., 0], axis=1)[measured[:, 1:] & measured[:, :-1]]) > 0
    assert gt.dtype == np.uint8 and set(np.unique(gt)) == {0, 255}


def test_corrupt_or_misshapen_files_are_named(copy):
    samples = read_mvtec3d(copy, ["cookie"])["cookie"]
    garbage, flat, nan, short_gt = samples[0], samples[1], samples[2], next(s for s in samples[4:] if s.label)
    garbage.xyz_path.write_bytes(b"II*\x00garbage")
    with pytest.raises(DatasetError, match=rf"{garbage.xyz_path}: unreadable TIFF"):
        read_frames(garbage)
    tifffile.imwrite(flat.xyz_path, np.zeros((SIZE, SIZE), np.float32))
    with pytest.raises(DatasetError, match=rf"{flat.xyz_path}: expected a float H x W x 3"):
        read_frames(flat)
    cloud = tifffile.imread(nan.xyz_path)
    cloud[5, 7, 2] = np.nan
    tifffile.imwrite(nan.xyz_path, cloud, photometric="rgb")
    assert (read_frames(nan)[1][5, 7] == 0).all()  # NaN: no measurement
    cv2.imwrite(str(short_gt.gt_path), np.zeros((SIZE // 2, SIZE), np.uint8))
    with pytest.raises(DatasetError, match=rf"{short_gt.gt_path}: mask"):
        read_frames(short_gt)
    samples[3].rgb_path.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=rf"{samples[3].rgb_path}: unreadable image"):
        read_frames(samples[3])


def test_load_sample_keeps_a_non_square_frame_aligned(tmp_path):
    # A 60 x 40 frame: a plane, and a raised block that is red in rgb and marked in gt.
    h, w = 60, 40
    folder = tmp_path / "widget" / "test" / "bad"
    for sub in ("rgb", "xyz", "gt"):
        (folder / sub).mkdir(parents=True)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    block = (v >= 20) & (v < 44) & (u >= 8) & (u < 28)
    z = 0.25 - 0.02 * block
    # (no coordinate is exactly 0: a zero marks "no measurement")
    xyz = np.stack([(u - w / 2 + 0.5) * 0.0005, (v - h / 2 + 0.5) * 0.0005, z], axis=-1).astype(np.float32)
    rgb = np.full((h, w, 3), 90, np.uint8)
    rgb[block] = (255, 0, 0)
    tifffile.imwrite(folder / "xyz" / "000.tiff", xyz, photometric="rgb")
    cv2.imwrite(str(folder / "rgb" / "000.png"), rgb[..., ::-1])
    cv2.imwrite(str(folder / "gt" / "000.png"), block.astype(np.uint8) * 255)
    sample = read_mvtec3d(tmp_path)["widget"][0]
    rgb_s, xyz_s, gt_s = load_sample(sample, 30)
    assert rgb_s.shape == (30, 30, 3) and xyz_s.shape == (30, 30, 3) and gt_s.shape == (30, 30)
    red = (rgb_s[..., 0] > 200) & (rgb_s[..., 1] < 50)
    foreground = (xyz_s != 0).all(axis=-1)
    assert gt_s.sum() > 20
    assert (red == (gt_s > 0)).mean() > 0.97 and (foreground == (gt_s > 0)).mean() > 0.97
