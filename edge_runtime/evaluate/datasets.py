"""Readers for the MVTec 3D-AD and Eyecandies layouts.

MVTec 3D-AD (and every line written by ``musc-edge synth``)::

    <root>/<class>/<split>/<defect>/rgb/NNN.png
    <root>/<class>/<split>/<defect>/xyz/NNN.tiff    float32 H x W x 3, metres, zeros = no measurement
    <root>/<class>/<split>/<defect>/gt/NNN.png      required for every defect but "good"
    <root>/<class>/sim_meta.json                    optional (simulated lines): defect kinds, arrival order

Eyecandies (as distributed; see :func:`read_eyecandies` for what is assumed)::

    <root>/<Class>/<split>/data/<id>_image_<light>.png, <id>_depth.png, <id>_info_depth.yaml,
                               <id>_pose.txt, <id>_mask.png (test_public), ...

A reader lists samples and checks that every file they need is there and not
empty; a damaged dataset raises one :class:`DatasetError` listing every
problem. :func:`read_frames` reads one sample's frames (raw size), naming the
file that cannot be read; :func:`load_sample` also pads them to a square and
resizes them for an encoder, keeping rgb, cloud and ground truth pixel-aligned.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from edge_runtime import pointcloud
from edge_runtime.engines.preprocess import resize_frame

SIM_META_FILE = "sim_meta.json"
SIM_META_FORMAT = "musc-edge sim line v1"  # what edge_runtime.sim writes

# Eyecandies: one camera for every image; focal length in pixels at 512 x 512
# and the axis order/scale of the official conversion (M3DM's preprocess_eyecandies).
EYECANDIES_FOCAL_512 = 711.11
EYECANDIES_AXES = (0, 2, 1)
EYECANDIES_SCALE = (0.1, -0.1, 0.1)


# File types per frame folder of the MVTec 3D-AD layout (its own are .png and .tiff).
_SUFFIXES = {"rgb": (".png", ".jpg", ".jpeg", ".bmp"), "xyz": (".tiff", ".tif"), "gt": (".png", ".bmp")}


class DatasetError(ValueError):
    """A dataset that cannot be read as asked: missing or unreadable files, unknown classes."""


@dataclass(frozen=True)
class Sample:
    """One part of a dataset.

    index: arrival order within its class (a simulated line's part index, else
    the listing order). label: 0 good, 1 defective. defect_kind: "none",
    "appearance", "geometry" or "both" when the line's sim_meta.json says so,
    else None; systematic: the part belongs to the line's systematic burst. For the Eyecandies layout ``xyz_path`` is the 16-bit depth PNG,
    converted to a cloud with ``depth_info_path`` and ``pose_path``.
    """

    class_name: str
    split: str
    defect: str
    name: str
    index: int
    rgb_path: Path
    xyz_path: Path
    gt_path: Path | None
    label: int
    defect_kind: str | None = None
    systematic: bool = False
    layout: str = "mvtec3d"
    depth_info_path: Path | None = None
    pose_path: Path | None = None


def _natural_key(name: str) -> tuple:
    """Sort "2" before "10"."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def _subdirs(folder: Path) -> list[str]:
    return sorted((p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_natural_key)


def _check_file(path: Path, problems: list[str]) -> None:
    """Record ``path`` as missing or empty."""
    if not path.is_file():
        problems.append(f"missing {path}")
    elif path.stat().st_size == 0:
        problems.append(f"empty file {path}")


def _raise_problems(what: str, problems: list[str]) -> None:
    if problems:
        shown = problems[:200]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise DatasetError(f"{what}: {len(problems)} problem(s)\n  " + "\n  ".join(shown) + more)


def _select_classes(root: Path, available: list[str], classes, layout: str) -> list[str]:
    if not available:
        raise DatasetError(f"no {layout} classes under {root}")
    if classes is None:
        return available
    unknown = [c for c in classes if c not in available]
    if unknown:
        raise DatasetError(f"unknown class(es) {unknown} under {root}; available: {', '.join(available)}")
    return list(dict.fromkeys(classes))


def _root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a folder")
    return root


def _sim_meta(class_dir: Path) -> dict[tuple[str, str], dict]:
    """(defect, name) -> that file's entry in a simulated line's sim_meta.json ({} when absent or foreign)."""
    path = class_dir / SIM_META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != SIM_META_FORMAT:
        return {}
    try:
        return {(p["defect"], p["name"]): p for p in meta["parts"]}
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"{path}: malformed parts list ({exc!r})") from exc


def _mvtec3d_class(root: Path, class_name: str, split: str, problems: list[str]) -> list[Sample]:
    split_dir = root / class_name / split
    meta = _sim_meta(root / class_name)
    found: list[Sample] = []
    for defect in _subdirs(split_dir):
        folder = split_dir / defect
        stems: dict[str, dict[str, Path]] = {}
        for sub, suffixes in _SUFFIXES.items():
            for path in (folder / sub).glob("*"):
                if path.suffix.lower() in suffixes and not path.name.startswith("."):
                    stems.setdefault(path.stem, {})[sub] = path
        if not stems:
            problems.append(f"no samples in {folder} (expected rgb/*.png and xyz/*.tiff)")
        for stem in sorted(stems, key=_natural_key):
            have = stems[stem]
            needed = ("rgb", "xyz") if defect == "good" else ("rgb", "xyz", "gt")
            default = {"rgb": f"{stem}.png", "xyz": f"{stem}.tiff", "gt": f"{stem}.png"}
            paths = {sub: have.get(sub, folder / sub / default[sub]) for sub in needed}
            for path in paths.values():
                _check_file(path, problems)
            gt = paths.get("gt") or have.get("gt")
            entry = meta.get((defect, stem), {})
            found.append(Sample(
                class_name=class_name, split=split, defect=defect, name=stem,
                index=int(entry.get("part_index", len(found))), rgb_path=paths["rgb"], xyz_path=paths["xyz"],
                gt_path=gt, label=int(defect != "good"), defect_kind=entry.get("defect_kind"),
                systematic=bool(entry.get("systematic", False)),
            ))
    listed = {(s.defect, s.name) for s in found}
    problems += [f"missing {split_dir / d / 'rgb' / (n + '.png')} (listed in {SIM_META_FILE})"
                 for d, n in sorted(set(meta) - listed)]
    if not found and not problems:
        problems.append(f"no samples in {split_dir}")
    if meta:  # a simulated line: the order the parts came off the line
        found.sort(key=lambda s: s.index)
    return found


def read_mvtec3d(root: str | Path, classes: list[str] | None = None, split: str = "test") -> dict[str, list[Sample]]:
    """Samples of an MVTec 3D-AD-layout dataset, per class, in arrival order.

    A class is a folder of ``root`` holding ``split``. Every rgb needs its xyz
    (``.tiff`` or ``.tif``) and, but for "good", its gt, and vice versa. Raises
    DatasetError listing every missing or empty file, or naming the unknown
    classes and the available ones.
    """
    root = _root(root)
    available = [c for c in _subdirs(root) if (root / c / split).is_dir()]
    chosen = _select_classes(root, available, classes, f"MVTec 3D-AD ('<class>/{split}/')")
    problems: list[str] = []
    out = {c: _mvtec3d_class(root, c, split, problems) for c in chosen}
    _raise_problems(f"dataset {root} is incomplete", problems)
    return out


def _mask_has_defect(path: Path, problems: list[str]) -> bool:
    """Whether a ground-truth mask marks anything; an unreadable one is a problem."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        problems.append(f"unreadable image {path}")
        return False
    return bool(mask.any())


def read_eyecandies(
    root: str | Path, classes: list[str] | None = None, split: str = "test_public", light: int = 4
) -> dict[str, list[Sample]]:
    """Samples of an Eyecandies dataset, per class, in id order.

    Assumed layout (the official release): ``<root>/<Class>/<split>/data/`` with,
    per sample id, ``<id>_image_<light>.png`` (six lights, 0..5; the official
    conversion to MVTec 3D-AD uses light 4), ``<id>_depth.png`` (16-bit),
    ``<id>_info_depth.yaml`` (``normalization: {min, max}``), ``<id>_pose.txt``
    (4 x 4) and, in test_public, ``<id>_mask.png``. Normals and the per-kind
    masks are not needed. A sample is defective when its mask is not empty
    (defect "bad", else "good"), as in the official conversion.
    """
    root = _root(root)
    available = [c for c in _subdirs(root) if (root / c / split / "data").is_dir()]
    chosen = _select_classes(root, available, classes, f"Eyecandies ('<Class>/{split}/data/')")
    problems: list[str] = []
    out: dict[str, list[Sample]] = {}
    for class_name in chosen:
        data = root / class_name / split / "data"
        ids = {p.name[: -len("_depth.png")] for p in data.glob("*_depth.png")}
        ids |= {p.name[: -len(f"_image_{light}.png")] for p in data.glob(f"*_image_{light}.png")}
        if not ids:
            problems.append(f"no samples in {data} (expected <id>_depth.png and <id>_image_{light}.png)")
        samples = []
        for sid in sorted(ids, key=_natural_key):
            paths = {k: data / f"{sid}_{k}" for k in (f"image_{light}.png", "depth.png", "info_depth.yaml", "pose.txt")}
            mask = data / f"{sid}_mask.png"
            if split.startswith("test"):
                paths["mask.png"] = mask
            for path in paths.values():
                _check_file(path, problems)
            has_mask = mask.is_file() and mask.stat().st_size > 0
            label = int(has_mask and _mask_has_defect(mask, problems))
            samples.append(Sample(
                class_name=class_name, split=split, defect="bad" if label else "good", name=sid,
                index=len(samples), rgb_path=paths[f"image_{light}.png"], xyz_path=paths["depth.png"],
                gt_path=mask if has_mask else None, label=label, layout="eyecandies",
                depth_info_path=paths["info_depth.yaml"], pose_path=paths["pose.txt"],
            ))
        out[class_name] = samples
    _raise_problems(f"dataset {root} is incomplete", problems)
    return out


def eyecandies_depth_range(text: str) -> tuple[float, float]:
    """(min, max) of ``normalization`` in an info_depth.yaml text (block or flow style)."""
    at = text.find("normalization")
    found = {k: re.search(rf"\b{k}\s*:\s*([-+0-9.eE]+)", text[at:]) for k in ("min", "max")} if at >= 0 else {}
    if not found or not all(found.values()):
        raise ValueError("no 'normalization: {min, max}' entry")
    return float(found["min"].group(1)), float(found["max"].group(1))


def eyecandies_cloud(depth: np.ndarray, pose: np.ndarray, focal: float) -> np.ndarray:
    """Organized cloud (H, W, 3) float32 from an Eyecandies depth map, as the official conversion does.

    depth: (H, W) float depth along the optical axis (<= 0 or non-finite: no
    measurement, zeros out). pose: (4, 4) camera matrix of the sample. Each
    pixel (u, v) = (column, row) maps to ``depth * inv(K @ pose) @ (u, v, 1,
    1 / depth)`` with ``K`` = [[f, 0, W/2, 0], [0, f, H/2, 0], [0, 0, 1, 0],
    [0, 0, 0, 1]]; then axes (x, z, y) scaled by (0.1, -0.1, 0.1).
    """
    if depth.ndim != 2 or pose.shape != (4, 4):
        raise ValueError(f"depth must be (H, W) and pose (4, 4); got {depth.shape} and {pose.shape}")
    h, w = depth.shape
    intrinsics = np.array([[focal, 0, w / 2, 0], [0, focal, h / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float64)
    inverse = np.linalg.inv(intrinsics @ pose.astype(np.float64))
    valid = np.isfinite(depth) & (depth > 0)
    d = np.where(valid, depth, 1.0).astype(np.float64)
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    homogeneous = np.stack([u, v, np.ones_like(u), 1.0 / d], axis=-1)
    points = d[..., None] * (homogeneous @ inverse.T)[..., :3]
    cloud = points[..., list(EYECANDIES_AXES)] * np.asarray(EYECANDIES_SCALE)
    cloud[~valid] = 0.0
    return cloud.astype(np.float32)


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{path}: unreadable image")
    return np.ascontiguousarray(bgr[..., ::-1])


def _read_xyz_tiff(path: Path) -> np.ndarray:
    try:
        xyz = tifffile.imread(path)  # never cv2.imread: it reorders the channels of these files
    except Exception as exc:  # tifffile raises many types for damaged files
        raise DatasetError(f"{path}: unreadable TIFF ({exc})") from exc
    if xyz.size == 0:
        raise DatasetError(f"{path}: unreadable TIFF (no image data)")
    if xyz.ndim != 3 or xyz.shape[2] != 3 or not np.issubdtype(xyz.dtype, np.floating):
        raise DatasetError(f"{path}: expected a float H x W x 3 organized cloud, got {xyz.dtype} {xyz.shape}")
    xyz = xyz.astype(np.float32)
    xyz[~np.isfinite(xyz).all(axis=-1)] = 0.0  # NaN/inf: no measurement
    return xyz


def _read_eyecandies_xyz(sample: Sample) -> np.ndarray:
    raw = cv2.imread(str(sample.xyz_path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2 or raw.dtype != np.uint16:
        got = "unreadable" if raw is None else f"{raw.dtype} {raw.shape}"
        raise DatasetError(f"{sample.xyz_path}: expected a 16-bit single-channel depth PNG, got {got}")
    try:
        lo, hi = eyecandies_depth_range(sample.depth_info_path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{sample.depth_info_path}: {exc}") from exc
    try:
        pose = np.loadtxt(sample.pose_path, dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(f"{sample.pose_path}: unreadable pose ({exc})") from exc
    if pose.shape != (4, 4):
        raise DatasetError(f"{sample.pose_path}: expected a 4 x 4 matrix, got shape {pose.shape}")
    depth = raw.astype(np.float64) / 65535.0 * (hi - lo) + lo
    return eyecandies_cloud(depth, pose, EYECANDIES_FOCAL_512 * raw.shape[1] / 512.0)


def read_frames(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A sample's frames at their own size.

    Returns rgb (H, W, 3) uint8, xyz (H, W, 3) float32 (metres for MVTec 3D-AD,
    zeros = no measurement) and gt (H, W) uint8 in {0, 255} or None. Raises
    DatasetError naming the file that is unreadable or not pixel-aligned.
    """
    rgb = _read_rgb(sample.rgb_path)
    xyz = _read_eyecandies_xyz(sample) if sample.layout == "eyecandies" else _read_xyz_tiff(sample.xyz_path)
    if xyz.shape[:2] != rgb.shape[:2]:
        raise DatasetError(f"{sample.xyz_path}: cloud {xyz.shape[:2]} does not match image {sample.rgb_path} "
                           f"{rgb.shape[:2]}")
    gt = None
    if sample.gt_path is not None:
        mask = cv2.imread(str(sample.gt_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise DatasetError(f"{sample.gt_path}: unreadable image")
        if mask.shape != rgb.shape[:2]:
            raise DatasetError(f"{sample.gt_path}: mask {mask.shape} does not match image {rgb.shape[:2]}")
        gt = (mask > 0).astype(np.uint8) * 255
    return rgb, xyz, gt


def mask_on_grid(gt: np.ndarray | None, shape: tuple[int, int], image_size: int) -> np.ndarray:
    """A frame's ground truth (H, W) (None: no defect) on the encoders' square grid:
    the cloud's padding and nearest resize, so it stays pixel-aligned. (S, S) uint8 in {0, 1}."""
    mask = np.zeros(shape, np.uint8) if gt is None else (gt > 0).astype(np.uint8)
    return pointcloud.resize_nearest(pointcloud.pad_to_square(mask), image_size)


def load_sample(sample: Sample, image_size: int, **preprocess) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A sample ready for the encoders, every frame on the same square grid.

    The cloud goes through ``pointcloud.preprocess_organized`` (plane removal
    on the frame's own border, cleaning, centred zero padding to a square,
    nearest resize; ``preprocess`` are its keyword arguments). rgb and gt get
    the same padding (``pointcloud.pad_to_square``; MVTec 3D-AD frames are
    square already) and are resized to ``image_size``: rgb as the station resizes
    a frame (``engines.preprocess.resize_frame``), gt with the cloud's nearest rule (``pointcloud.resize_nearest``). Returns rgb (S, S, 3)
    uint8, xyz (S, S, 3) float32, gt (S, S) uint8 in {0, 1} (zeros for a
    sample without gt).
    """
    rgb, xyz, gt = read_frames(sample)
    rgb_s = resize_frame(pointcloud.pad_to_square(rgb), image_size)
    gt_s = mask_on_grid(gt, rgb.shape[:2], image_size)
    xyz_s = pointcloud.preprocess_organized(xyz, image_size, **preprocess)
    return rgb_s, xyz_s.astype(np.float32), gt_s


def read_good_parts(folder: str | Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Known-good parts in the MVTec 3D-AD ``train/good`` layout: ``folder/rgb/*.png`` with ``folder/xyz/*.tiff``.

    Returns [(name, rgb (H, W, 3) uint8, xyz (H, W, 3) float32)], in natural
    name order. Raises DatasetError naming a missing folder or unpaired file.
    """
    folder = Path(folder)
    if not (folder / "rgb").is_dir() or not (folder / "xyz").is_dir():
        raise DatasetError(f"reference folder {folder} needs rgb/ and xyz/ sub-folders (MVTec 3D-AD train/good layout)")
    rgb = {p.stem: p for p in (folder / "rgb").iterdir() if p.suffix.lower() in _SUFFIXES["rgb"]}
    xyz = {p.stem: p for p in (folder / "xyz").iterdir() if p.suffix.lower() in _SUFFIXES["xyz"]}
    problems = [f"{folder / 'rgb'} has {n} without its xyz" for n in sorted(set(rgb) - set(xyz))]
    problems += [f"{folder / 'xyz'} has {n} without its rgb" for n in sorted(set(xyz) - set(rgb))]
    if not rgb and not problems:
        problems.append(f"no parts in {folder / 'rgb'}")
    _raise_problems(f"reference folder {folder}", problems)
    return [(name, _read_rgb(rgb[name]), _read_xyz_tiff(xyz[name])) for name in sorted(rgb, key=_natural_key)]
