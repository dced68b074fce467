"""Lines on disk: exactly the MVTec 3D-AD test layout, deterministic bytes, all-or-nothing writes."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

import edge_runtime.sim.generator as generator
from edge_runtime.cli import main as musc_edge
from edge_runtime.sim.generator import render_part, write_line
from edge_runtime.sim.products import DEFECT_KINDS, line_spec

SIZE = 64


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("lines")
    return root, write_line(root, "bagel", 12, 0.5, 7, image_size=SIZE)


def test_layout_is_mvtec3d_test_split(line):
    root, summary = line
    class_dir = root / "bagel"
    assert sorted(p.name for p in root.iterdir()) == ["bagel"]  # no staging left behind
    assert sorted(p.name for p in class_dir.iterdir()) == ["sim_meta.json", "test"]
    defects = sorted(p.name for p in (class_dir / "test").iterdir())
    assert "good" in defects and set(defects) - {"good"} <= set(DEFECT_KINDS)
    total = 0
    for defect in defects:
        folder = class_dir / "test" / defect
        subs = sorted(p.name for p in folder.iterdir())
        assert subs == (["rgb", "xyz"] if defect == "good" else ["gt", "rgb", "xyz"])
        names = sorted(p.stem for p in (folder / "rgb").iterdir())
        assert names == [f"{i:03d}" for i in range(len(names))]
        assert sorted(p.name for p in (folder / "xyz").iterdir()) == [f"{n}.tiff" for n in names]
        for n in names:
            rgb = cv2.imread(str(folder / "rgb" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
            xyz = tifffile.imread(folder / "xyz" / f"{n}.tiff")
            assert rgb.shape == (SIZE, SIZE, 3) and rgb.dtype == np.uint8
            assert xyz.shape == (SIZE, SIZE, 3) and xyz.dtype == np.float32
            assert (xyz == 0).all(axis=-1).any() and 0.15 < xyz[..., 2].max() < 0.3
            if defect != "good":
                gt = cv2.imread(str(folder / "gt" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
                assert gt.shape == (SIZE, SIZE) and gt.dtype == np.uint8
                assert set(np.unique(gt)) == {0, 255}
        total += len(names)
    assert total == summary["parts"] == 12 and summary["by_defect"]["good"] == 6


def test_files_are_the_rendered_parts_and_meta_records_them(line):
    root, _ = line
    meta = json.loads((root / "bagel" / "sim_meta.json").read_text())
    spec = line_spec("bagel", 7, SIZE)
    assert meta["spec"]["family"] == spec.family and len(meta["parts"]) == 12
    assert sorted(p["part_index"] for p in meta["parts"]) == list(range(12))
    entry = next(p for p in meta["parts"] if p["defect"] != "good")
    part = render_part(spec, entry["part_index"], 7, entry["defect"])
    folder = root / "bagel" / "test" / entry["defect"]
    assert entry["defect_kind"] == DEFECT_KINDS[entry["defect"]]
    assert np.array_equal(cv2.imread(str(folder / "rgb" / f"{entry['name']}.png"))[..., ::-1], part.rgb)
    assert np.array_equal(tifffile.imread(folder / "xyz" / f"{entry['name']}.tiff"), part.xyz)
    assert np.array_equal(cv2.imread(str(folder / "gt" / f"{entry['name']}.png"), cv2.IMREAD_GRAYSCALE), part.gt)
    assert entry["gt_pixels"] == int((part.gt > 0).sum()) > 0


def test_same_seed_same_bytes_other_seed_other_bytes(line, tmp_path):
    root, _ = line
    write_line(tmp_path / "a", "bagel", 12, 0.5, 7, image_size=SIZE)
    write_line(tmp_path / "b", "bagel", 12, 0.5, 8, image_size=SIZE)
    assert tree(tmp_path / "a" / "bagel") == tree(root / "bagel")
    assert tree(tmp_path / "b" / "bagel") != tree(root / "bagel")


def test_an_interrupted_write_leaves_nothing_and_existing_lines_need_overwrite(tmp_path, monkeypatch):
    write_line(tmp_path, "tile", 4, 0.5, 0, image_size=SIZE)
    before = tree(tmp_path / "tile")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_line(tmp_path, "tile", 4, 0.5, 1, image_size=SIZE)
    calls = []

    def failing_tiff(path, xyz):  # the disk fills up on the third cloud
        calls.append(path)
        if len(calls) % 3 == 0:
            raise OSError("No space left on device")
        tifffile.imwrite(path, xyz, photometric="rgb")

    monkeypatch.setattr(generator, "write_tiff", failing_tiff)
    with pytest.raises(OSError, match="No space"):
        write_line(tmp_path, "tile", 4, 0.5, 1, image_size=SIZE, overwrite=True)
    with pytest.raises(OSError, match="No space"):
        write_line(tmp_path, "foam", 4, 0.5, 1, image_size=SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tile"]  # no foam, no staging
    assert tree(tmp_path / "tile") == before  # the old line is untouched
    monkeypatch.undo()
    write_line(tmp_path, "tile", 4, 0.5, 1, image_size=SIZE, overwrite=True)
    assert tree(tmp_path / "tile") != before and sorted(p.name for p in tmp_path.iterdir()) == ["tile"]


def test_synth_command_writes_lines_preview_and_summary(tmp_path, capsys):
    out = tmp_path / "lines"
    code = musc_edge(["synth", "--out", str(out), "--classes", "cookie", "widget", "--parts", "10",
                      "--defect-rate", "0.4", "--seed", "3", "--image-size", str(SIZE), "--preview"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "cookie (cookie): 10 parts" in printed and "ms/part" in printed
    for name in ("cookie", "widget"):
        assert (out / name / "test" / "good" / "rgb" / "000.png").is_file()
        sheet = cv2.imread(str(out / f"{name}_preview.png"))
        assert sheet is not None and sheet.shape[1] == 6 * 160
    with pytest.raises(SystemExit):
        musc_edge(["synth", "--out", str(out), "--classes", "x", "--defects", "scratch"])
