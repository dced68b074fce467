"""`musc-edge calibrate sensors` on bad input: a clear error, exit code 1, nothing written."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import tifffile

from calibration import cli
from calibration.rig import make_rig, write_rig


@pytest.fixture(scope="module")
def rig_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rig")
    write_rig(make_rig(7, n_poses=4), folder)
    return folder


@pytest.fixture
def views(rig_dir, tmp_path):
    """A private copy of the rig's images and clouds, to break."""
    shutil.copytree(rig_dir / "images", tmp_path / "images")
    shutil.copytree(rig_dir / "clouds", tmp_path / "clouds")
    return tmp_path


def _calibrate(folder, capsys) -> tuple[int, str]:
    out = folder / "out" / "calib.toml"
    rc = cli.main(["sensors", "--images", str(folder / "images"), "--clouds", str(folder / "clouds"),
                   "--board", "9x6", "--square", "0.02", "--out", str(out), "--overlay", str(folder / "out" / "o.png")])
    assert not (folder / "out").exists() or not any((folder / "out").iterdir()), "something was written"
    return rc, capsys.readouterr().err


def test_too_few_views(views, capsys):
    for name in ("002", "003"):
        (views / "images" / f"{name}.png").unlink()
        (views / "clouds" / f"{name}.tiff").unlink()
    rc, err = _calibrate(views, capsys)
    assert rc == 1 and "at least 3 views" in err


def test_board_not_found_names_the_image(views, capsys):
    blank = np.full((480, 640), 128, np.uint8)
    cv2.imwrite(str(views / "images" / "001.png"), blank)
    rc, err = _calibrate(views, capsys)
    assert rc == 1 and "001.png" in err and "not found" in err


def test_unpaired_files_are_named(views, capsys):
    (views / "clouds" / "002.tiff").unlink()
    shutil.copy(views / "clouds" / "000.tiff", views / "clouds" / "009.tiff")
    rc, err = _calibrate(views, capsys)
    assert rc == 1 and "images without a cloud: 002.png" in err and "clouds without an image: 009.tiff" in err


def test_clouds_without_overlap(views, capsys):
    # clouds of something 3 m to the side: planes that match no board the camera saw
    for path in (views / "clouds").glob("*.tiff"):
        cloud = tifffile.imread(path)
        cloud[cloud[..., 2] > 0] += np.float32([3.0, 0.0, 0.0])
        tifffile.imwrite(path, cloud, photometric="rgb")
    rc, err = _calibrate(views, capsys)
    assert rc == 1 and "no plane in the cloud matches the board" in err


def test_empty_cloud_is_named(views, capsys):
    tifffile.imwrite(views / "clouds" / "003.tiff", np.zeros((240, 320, 3), np.float32), photometric="rgb")
    rc, err = _calibrate(views, capsys)
    assert rc == 1 and "003.tiff" in err and "no measured points" in err


def test_swapped_pair_is_caught(views, capsys):
    a, b = views / "clouds" / "000.tiff", views / "clouds" / "001.tiff"
    a.rename(views / "tmp.tiff")
    b.rename(a)
    (views / "tmp.tiff").rename(b)
    rc, err = _calibrate(views, capsys)
    assert rc == 1 and "000.tiff" in err and "001.tiff" in err


def test_degenerate_parallel_poses(tmp_path, capsys):
    write_rig(make_rig(3, n_poses=4, max_tilt_deg=0.0), tmp_path)
    rc, err = _calibrate(tmp_path, capsys)
    assert rc == 1 and "degenerate poses" in err


def test_bad_board_argument(views, capsys):
    with pytest.raises(SystemExit):
        cli.main(["sensors", "--images", str(views / "images"), "--clouds", str(views / "clouds"),
                  "--board", "9by6", "--out", str(views / "out.toml")])
    assert "COLSxROWS" in capsys.readouterr().err
    assert not (views / "out.toml").exists()
