"""`musc-edge ablate`: which parts of MuSc-V2 pay for EfficientNet-Lite + FPFH (docs/ABLATION.md).

On generated lines (`musc-edge synth`, several seeds and products) it measures
one change at a time against the embedded defaults and against the plain
mutual-scoring baseline: 2D stages, SNAMD degrees, 3D centres and group size,
FPFH radii and normals, IPG, CAE, RsCon and the fusion scale.

CPU is the limit, so nothing is computed twice. Per class and extractor
configuration the raw features of every part are cached (.npz under
``--cache``): the encoder's stage grids (stages 1..5 on the stride-8 grid) and
the FPFH histograms at five radii with each group size's curvature. Per layer
(stage or radius, with its SNAMD degrees) the per-reference minimum distances
of the whole pool are cached too; a configuration then only picks layers and
runs the cheap tail (interval mean, CAE, maps, fusion, RsCon) through the same
functions as a batch evaluation (`inspection.pool.score_distances`).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_runtime import pointcloud
from edge_runtime.engines.catalog import DEFAULT_2D_ENCODER, encoder_spec
from edge_runtime.evaluate import datasets
from edge_runtime.engines.preprocess import resize_frame
from edge_runtime.evaluate.baseline import minmax_fusion
from edge_runtime.evaluate.metrics import aupro, image_auroc
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.pool import score_distances
from edge_runtime.inspection.settings import GROUPS_3D_ALONE, InspectionSettings
from edge_runtime.scoring import aggregate_2d, aggregate_3d, idw_weights, l2_normalize, point_to_patch

STAGES = (1, 2, 3, 4, 5)  # exported once; a configuration picks three
RADII = (0.0125, 0.025, 0.05, 0.1, 0.2)  # FPFH layer radii computed once; a configuration picks three
GROUPS = (512, 784, 1024)
GROUP_SIZES = (32, 64, 128)
FINE_NORMALS = 0.025  # the "fixed normals" variant: every layer's normals at this radius
ENCODERS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
SIZE = 224


@dataclass(frozen=True)
class Cloud3D:
    """Which 3D extraction a cache holds: centres and normals."""

    groups: int = 1024
    normals: str = "layer"  # "layer" (at each layer's radius) or "fine" (all at FINE_NORMALS)

    @property
    def tag(self) -> str:
        return f"g{self.groups}_{self.normals}"


# -- raw features, once per class and extractor configuration ----------------


def export_encoders(models: Path, encoders=ENCODERS) -> dict[str, Path]:
    """Manifests of the ablation's encoders (stages 1..5, 224 px), exported on first use."""
    out = {}
    for name in encoders:
        target = models / f"{name}-stages12345"
        if not (target / "manifest.json").is_file():
            cmd = [sys.executable, "-m", "export.cli", "--encoder", name, "--image-size", str(SIZE),
                   "--layers", *map(str, STAGES), "--precision", "fp32", "--out", str(target)]
            subprocess.run(cmd, check=True, capture_output=True)
        out[name] = target / "manifest.json"
    return out


def _cache_2d(path: Path, samples, manifest: Path) -> None:
    from edge_runtime.engines import load_engine

    engine = load_engine(manifest, threads=1)
    grids = {s: [] for s in STAGES}
    ms = []
    for sample in tqdm(samples, desc=f"2d {path.stem}", unit="part", leave=False):
        rgb, _, _ = datasets.read_frames(sample)
        shown = resize_frame(pointcloud.pad_to_square(rgb), SIZE)
        t = time.perf_counter()
        out = engine.run(engine.preprocess_rgb(shown))
        ms.append((time.perf_counter() - t) * 1e3)
        for s, g in zip(STAGES, out):
            grids[s].append(g[0].astype(np.float16))
    np.savez(path, encode_ms=np.array(ms), **{f"stage{s}": np.stack(v) for s, v in grids.items()})


def _cache_3d(path: Path, samples, cloud: Cloud3D) -> None:
    keys: dict[str, list] = {}
    put = lambda k, v: keys.setdefault(k, []).append(v)  # noqa: E731
    grid = (SIZE // 8,) * 2
    for i, sample in enumerate(tqdm(samples, desc=f"3d {path.stem}", unit="part", leave=False)):
        _, xyz, _ = datasets.read_frames(sample)
        organized = pointcloud.preprocess_organized(xyz, SIZE)
        points, pixel_index = pointcloud.organized_to_flat(organized)
        points, _, _ = pointcloud.normalize_points(points)
        for gs in GROUP_SIZES:
            t = time.perf_counter()
            groups = pointcloud.group_cloud(points, cloud.groups, gs, ipg=False)
            put(f"plain_ms{gs}", (time.perf_counter() - t) * 1e3)
            put(f"curvature{gs}", groups.curvature)
            if gs == 64 and i < 4:  # IPG's cost, on a few parts (its groups are never read by FPFH)
                t = time.perf_counter()
                pointcloud.group_cloud(points, cloud.groups, gs)
                put("ipg_ms64", (time.perf_counter() - t) * 1e3)
        normal_radius = FINE_NORMALS if cloud.normals == "fine" else None
        t = time.perf_counter()
        feats = pointcloud.fpfh_features(points, groups.centre_idx, RADII, normal_radius=normal_radius)
        put("fpfh_ms", (time.perf_counter() - t) * 1e3 / len(RADII))
        for r, f in zip(RADII, feats):
            put(f"fpfh{r}", f)
        idx, wgt = idw_weights(groups.centres, points)
        put("centres", groups.centres)
        put("point2patch", point_to_patch(pixel_index[groups.centre_idx], (SIZE, SIZE), grid).astype(np.int32))
        put("pixel_index", pixel_index.astype(np.int32))
        put("idw_index", idx)
        put("idw_weight", wgt)
    ragged = ("pixel_index", "idw_index", "idw_weight")
    arrays = {k: np.stack(v) if k not in ragged else np.concatenate(v) for k, v in keys.items()}
    arrays["offsets"] = np.cumsum([0] + [len(p) for p in keys["pixel_index"]])
    np.savez(path, **arrays)


def _cache_meta(path: Path, samples) -> None:
    gts = [datasets.mask_on_grid(datasets.read_frames(s)[2], datasets.read_frames(s)[0].shape[:2], SIZE)
           for s in samples]
    np.savez(path, gt=np.stack(gts), labels=np.array([s.label for s in samples]),
             kinds=np.array([s.defect_kind or "none" for s in samples]))


def cache_class(folder: Path, samples, manifests: dict[str, Path], clouds) -> Path:
    """Fill ``folder`` with a class's raw features (whatever is missing); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "meta.npz").is_file():
        _cache_meta(folder / "meta.npz", samples)
    for name, manifest in manifests.items():
        if not (folder / f"2d_{name}.npz").is_file():
            _cache_2d(folder / f"2d_{name}.npz", samples, manifest)
    for cloud in clouds:
        if not (folder / f"3d_{cloud.tag}.npz").is_file():
            _cache_3d(folder / f"3d_{cloud.tag}.npz", samples, cloud)
    return folder


# -- configurations, scored from cached distances ------------------------------


@dataclass(frozen=True)
class Variant:
    """One configuration of the embedded pipeline (see InspectionSettings for the scoring fields)."""

    encoder: str = "efficientnet-lite0"
    stages: tuple[int, ...] = (2, 3, 4)
    r2: tuple[int, ...] = (1, 3, 5)
    prenorm2: bool = False  # L2-normalize each stage before SNAMD (CNN features are far from unit length)
    cloud: Cloud3D = Cloud3D()
    group_size: int = 64
    radii: tuple[float, ...] = (0.025, 0.05, 0.1)
    r3: tuple[int, ...] = (1, 3, 5)
    cae: bool = True
    rscon: bool = True
    fusion: str = "sum"  # "sum", "window", or "minmax" (the baseline's, over the test pool)
    fused_score: str = "map"  # the fused image score, as when the tables were recorded
    interval: float = 0.3


class ClassCache:
    """One class's cached raw features, and its per-layer distances (memoized, also on disk)."""

    def __init__(self, folder: Path):
        self.folder = folder
        meta = np.load(folder / "meta.npz")
        self.gt, self.labels, self.kinds = meta["gt"], meta["labels"], meta["kinds"]
        self._npz: dict[str, dict] = {}
        self._dist: dict[tuple, np.ndarray] = {}
        self._memo: dict[tuple, np.ndarray] = {}

    def memo(self, key: tuple, make) -> np.ndarray:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def raw(self, name: str) -> dict:
        if name not in self._npz:
            with np.load(self.folder / f"{name}.npz") as d:
                self._npz[name] = {k: d[k] for k in d.files}
        return self._npz[name]

    def layer_2d(self, encoder: str, stage: int, r2, prenorm: bool) -> np.ndarray:
        grids = self.raw(f"2d_{encoder}")[f"stage{stage}"].astype(np.float32)
        return l2_normalize(aggregate_2d([l2_normalize(grids) if prenorm else grids], r2))[:, :, 0]  # (N, P, C)

    def layers_3d(self, v: Variant) -> np.ndarray:
        """(N, G, n_radii, 33) aggregated FPFH at every cached radius (one neighbour search per part)."""
        d = self.raw(f"3d_{v.cloud.tag}")
        feats = np.stack([d[f"fpfh{r}"] for r in RADII], axis=1)  # (N, n_radii, G, 33)
        return np.stack([aggregate_3d([l2_normalize(f) for f in per_part], c, k, v.r3)
                         for per_part, c, k in zip(feats, d["centres"], d[f"curvature{v.group_size}"])])

    def distances(self, key: tuple, features) -> np.ndarray:
        """(N, L, N - 1) per-reference minimum distances of one layer, memoized by ``key``."""
        if key not in self._dist:
            path = self.folder / "dist" / ("_".join(map(str, key)).replace(" ", "") + ".npy")
            if path.is_file():
                self._dist[key] = np.load(path)
            else:
                from edge_runtime.scoring import pairwise_min_distances, references_only

                self._dist[key] = references_only(pairwise_min_distances(features()))
                path.parent.mkdir(exist_ok=True)
                np.save(path, self._dist[key])
        return self._dist[key]


def _ragged(d: dict, key: str, i: int) -> np.ndarray:
    return d[key][d["offsets"][i] : d["offsets"][i + 1]]


def pool_of(cache: ClassCache, v: Variant) -> tuple[list[PartFeatures], dict[str, list[np.ndarray]]]:
    """The class as PartFeatures under ``v``, and its per-layer distances per modality."""
    key2 = (v.encoder, v.r2) + (("prenorm",) if v.prenorm2 else ())
    z2 = [cache.memo(("z2", s) + key2, lambda s=s: cache.layer_2d(v.encoder, s, v.r2, v.prenorm2)) for s in v.stages]
    key3 = (v.cloud.tag, v.group_size if max(v.r3) > 1 else 0, v.r3)
    all3 = cache.memo(("z3",) + key3, lambda: cache.layers_3d(v))
    z3 = [all3[:, :, RADII.index(r)] for r in v.radii]
    dist = {
        "2d": [cache.distances(("2d", v.encoder, s, v.r2) + key2[2:], lambda z=z: z) for s, z in zip(v.stages, z2)],
        "3d": [cache.distances(("3d",) + key3 + (r,), lambda z=z: z) for r, z in zip(v.radii, z3)],
    }
    d3 = cache.raw(f"3d_{v.cloud.tag}")
    c2 = max(z.shape[2] for z in z2)
    stack2 = np.zeros(z2[0].shape[:2] + (len(z2), c2), np.float16)
    for li, z in enumerate(z2):
        stack2[:, :, li, : z.shape[2]] = z
    stack3 = np.stack(z3, axis=2).astype(np.float16)
    parts = [PartFeatures(SIZE, (SIZE // 8,) * 2, stack2[i], stack3[i], d3["point2patch"][i],
                          _ragged(d3, "pixel_index", i), _ragged(d3, "idw_index", i), _ragged(d3, "idw_weight", i))
             for i in range(len(cache.labels))]
    return parts, dist


def _metrics(cache: ClassCache, maps: np.ndarray, scores: np.ndarray) -> dict:
    out = {"auroc": image_auroc(cache.labels, scores), "aupro": aupro(cache.gt, maps)}
    for kind in ("appearance", "geometry", "both"):
        sel = (cache.labels == 0) | (cache.kinds == kind)
        if (cache.kinds[sel] == kind).any():
            out[kind] = image_auroc(cache.labels[sel], scores[sel])
    return out


def score_variant(cache: ClassCache, v: Variant) -> dict[str, dict]:
    """{"2d" | "3d" | "fused": {"auroc", "aupro", per kind auroc}} of one class under ``v``."""
    parts, dist = pool_of(cache, v)
    # A row's RsCon re-scores every image score, single modalities too, as when the tables were recorded
    settings = InspectionSettings(interval=v.interval, cae=v.cae, rscon=v.rscon, rscon_alone=v.rscon,
                                  fusion="sum" if v.fusion == "minmax" else v.fusion, fused_score=v.fused_score)
    # Without CAE the fused run's 2D and 3D entries are the single modalities; with it they are enhanced.
    single = score_distances(parts, dist, replace(settings, cae=False))
    out = {m: single[m] for m in ("2d", "3d")}
    if v.fusion == "minmax":
        out["fused"] = minmax_fusion({m: out[m][0] for m in ("2d", "3d")})
    else:
        out["fused"] = (score_distances(parts, dist, settings) if v.cae else single)["fused"]
    key = ("single", v.encoder, v.stages, v.r2, v.prenorm2, v.cloud, v.group_size, v.radii, v.r3, v.rscon, v.interval)
    result = {m: cache.memo(key + (m,), lambda m=m: _metrics(cache, *out[m])) for m in ("2d", "3d")}
    result["fused"] = _metrics(cache, *out["fused"])
    return result


# -- the table ------------------------------------------------------------------

OLD = Variant()  # the embedded defaults before this ablation
_D = InspectionSettings()
# The embedded defaults as they are now (InspectionSettings and the catalogue's stages), FPFH's
# 3D stream only: the second one, the normals picture (BOTH_3D), is measured with `musc-edge eval`.
NEW = Variant(stages=encoder_spec(DEFAULT_2D_ENCODER).default_layers, r2=_D.r_list, cloud=Cloud3D(_D.centres()),
              group_size=_D.group_size, radii=_D.fpfh_radii, r3=_D.r_list_3d, cae=_D.cae, rscon=_D.rscon,
              fusion=_D.fusion, fused_score=_D.fused_score, interval=_D.interval)
BASE = Variant(stages=(1, 2, 3), r2=(1,), cloud=Cloud3D(GROUPS_3D_ALONE), r3=(1,), cae=False, rscon=False, fusion="minmax")


def variants() -> dict[str, Variant]:
    """The rows of docs/ABLATION.md, in the order they are measured (cheap and decisive first):
    one change at a time from the old defaults, then changes on top of the window-scaled fusion."""
    one = {
        "CAE off": dict(cae=False),
        "RsCon off": dict(rscon=False),
        "fusion: window scale": dict(fusion="window"),
        "fusion: test min-max": dict(fusion="minmax"),
        "3D SNAMD r=1": dict(r3=(1,)),
        "2D SNAMD r=1": dict(r2=(1,)),
        "2D SNAMD r=1,3": dict(r2=(1, 3)),
        "2D SNAMD r=1,3 on unit features": dict(r2=(1, 3), prenorm2=True),
        "2D stages 2,3,5": dict(stages=(2, 3, 5)),
        "2D stages 1,2,3 (stride 4 in)": dict(stages=(1, 2, 3)),
        "2D stages 1,2,4": dict(stages=(1, 2, 4)),
        "3D centres 784": dict(cloud=Cloud3D(784)),
        "FPFH radii .05/.1/.2": dict(radii=(0.05, 0.1, 0.2)),
        "FPFH radii .0125/.025/.05": dict(radii=(0.0125, 0.025, 0.05)),
        "3D group size 32": dict(group_size=32),
        "3D group size 128": dict(group_size=128),
        "3D centres 512": dict(cloud=Cloud3D(512)),
        "FPFH normals at .025 for every layer": dict(cloud=Cloud3D(1024, "fine")),
    }
    window = replace(OLD, fusion="window")
    path = {
        "W: window scale, CAE off": dict(cae=False),
        "W: window scale, RsCon off": dict(rscon=False),
        "W: window scale, CAE off, RsCon off": dict(cae=False, rscon=False),
        "W: window scale, 3D SNAMD r=1": dict(r3=(1,)),
        "W: window scale, 2D stages 2,3,5": dict(stages=(2, 3, 5)),
        "W: window scale, 2D SNAMD r=1,3 on unit features": dict(r2=(1, 3), prenorm2=True),
    }
    rows = {"old defaults": OLD, "plain baseline": BASE}
    rows.update({k: replace(NEW, **kw) for k, kw in {
        "new defaults": {}, "new, plain sum": dict(fusion="sum"),
        "new, plain sum, on Lite1": dict(encoder="efficientnet-lite1", fusion="sum"),
        "new, plain sum, on Lite2": dict(encoder="efficientnet-lite2", fusion="sum")}.items()})
    rows.update({k: replace(OLD, **kw) for k, kw in list(one.items())[:4]})
    rows.update({k: replace(window, **kw) for k, kw in path.items()})
    rows.update({k: replace(OLD, **kw) for k, kw in list(one.items())[4:]})
    # Why 2D loses to the baseline: one change at a time from the new defaults towards it
    # (the baseline's 2D is stages 1,2,3 with the map maximum as image score, i.e. RsCon off).
    # Single-stage rows run without CAE, which pairs the 2D and 3D layers one to one.
    diag = {
        "new, RsCon off": dict(rscon=False),
        "new, CAE off": dict(cae=False),
        "new, 2D stages 1,2,3": dict(stages=(1, 2, 3)),
        "new, 2D stages 1,2,3, RsCon off": dict(stages=(1, 2, 3), rscon=False),
        "new, 2D stages 2,3,4": dict(stages=(2, 3, 4)),
        "new, 2D stages 2,3,4, RsCon off": dict(stages=(2, 3, 4), rscon=False),
        "new, 2D stages 1,3,5": dict(stages=(1, 3, 5)),
        "new, 2D stages 1,3,5, RsCon off": dict(stages=(1, 3, 5), rscon=False),
        "new, 2D stages 1,2,5": dict(stages=(1, 2, 5)),
        "new, 2D stages 1,2,5, RsCon off": dict(stages=(1, 2, 5), rscon=False),
        "new, 2D stages 1,2,4": dict(stages=(1, 2, 4)),
        # four 2D stages need four FPFH radii: CAE pairs them one to one
        "new, 2D stages 1,2,3,5, FPFH radii .025/.05/.1/.2": dict(stages=(1, 2, 3, 5), radii=(0.025, 0.05, 0.1, 0.2)),
        **{f"new, 2D stage {s} only, CAE off, RsCon off": dict(stages=(s,), cae=False, rscon=False) for s in STAGES},
    }
    rows.update({k: replace(NEW, **kw) for k, kw in diag.items()})
    return rows


def select_rows(rows: dict[str, Variant], patterns: list[str]) -> dict[str, Variant]:
    """The rows whose name matches one of the shell ``patterns`` (case-sensitive), in table order;
    a pattern that matches no row is a ValueError naming it."""
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(k, p) for k in rows)]
    if unmatched:
        raise ValueError(f"no row matches {unmatched}; rows: {list(rows)}")
    return {k: v for k, v in rows.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def evaluate_variants(cache_root: Path, rows: dict[str, Variant], classes: list[str]) -> dict:
    """{row: {class: score_variant(...)}} over the cached classes (progress bar)."""
    out: dict = {name: {} for name in rows}
    for cls in tqdm(classes, desc="classes", unit="class"):
        cache = ClassCache(cache_root / cls)
        for name, v in tqdm(rows.items(), desc=cls, unit="variant", leave=False):
            out[name][cls] = score_variant(cache, v)
    return out


def mean_row(per_class: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Mean over classes of each key's metrics (a kind absent from a class is left out of its mean)."""
    out: dict = {}
    for res in per_class.values():
        for key, m in res.items():
            for metric, value in m.items():
                out.setdefault(key, {}).setdefault(metric, []).append(value)
    return {k: {m: float(np.mean(v)) for m, v in ms.items()} for k, ms in out.items()}


def costs(cache_root: Path, classes: list[str]) -> dict[str, float]:
    """Mean ms per part of each extraction stage measured while caching."""
    acc: dict[str, list] = {}
    for cls in classes:
        for f in sorted((cache_root / cls).glob("*.npz")):
            with np.load(f) as d:
                for k in d.files:
                    if "_ms" in k:
                        acc.setdefault(f"{f.stem} {k}", []).append(float(np.mean(d[k])))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _cell(m: dict, metric: str) -> str:
    return "-" if metric not in m else f"{100 * m[metric]:.1f}"


def table(results: dict[str, dict], rows: dict[str, Variant]) -> str:
    """Markdown: per row, mean image AUROC / AUPRO of 2D, 3D, 2D+3D and the fused AUROC per kind."""
    head = ("| configuration | 2D AUROC | 2D AUPRO | 3D AUROC | 3D AUPRO | 2D+3D AUROC | 2D+3D AUPRO "
            "| appearance | geometry | both |")
    lines = [head, "|---" * 11 + "|"]
    for name in rows:
        m = mean_row(results[name])
        cells = [_cell(m["2d"], "auroc"), _cell(m["2d"], "aupro"), _cell(m["3d"], "auroc"), _cell(m["3d"], "aupro"),
                 _cell(m["fused"], "auroc"), _cell(m["fused"], "aupro")]
        cells += [_cell(m["fused"], k) for k in ("appearance", "geometry", "both")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="musc-edge ablate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("out/ablation"), help="lines, encoders and caches live here")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--classes", nargs="+", default=["bagel", "cookie", "dome", "foam", "gland", "tile"])
    ap.add_argument("--parts", type=int, default=40)
    ap.add_argument("--defect-rate", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=Path("out/ablation/ablation.md"), help="table (markdown; + .json)")
    ap.add_argument("--rows", nargs="+", metavar="PATTERN",
                    help="only the rows whose name (as printed) matches one of these shell patterns, e.g. 'new, 2D*'")
    args = ap.parse_args(argv)
    from edge_runtime.sim.generator import write_line

    started = time.perf_counter()
    rows = variants()
    if args.rows:
        try:
            rows = select_rows(rows, args.rows)
        except ValueError as exc:
            ap.error(str(exc))
    manifests = export_encoders(args.work / "models", sorted({v.encoder for v in rows.values()}))
    clouds = sorted({v.cloud for v in rows.values()}, key=lambda c: c.tag)
    names = []
    for seed in args.seeds:
        for cls in args.classes:
            if not (args.work / "lines" / f"s{seed}" / cls).is_dir():
                write_line(args.work / "lines" / f"s{seed}", cls, args.parts, args.defect_rate, seed, image_size=SIZE)
            samples = datasets.read_mvtec3d(args.work / "lines" / f"s{seed}", [cls])[cls]
            cache_class(args.work / "cache" / f"s{seed}" / cls, samples, manifests, clouds)
            names.append(f"s{seed}/{cls}")
    results = evaluate_variants(args.work / "cache", rows, names)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"results": results, "costs": costs(args.work / "cache", names)},
                                                        indent=1))
    minutes = (time.perf_counter() - started) / 60
    args.out.write_text(f"Mean over {len(names)} generated lines ({', '.join(names)}), image AUROC / AUPRO in %, "
                        f"fused AUROC per defect kind; {minutes:.0f} min.\n\n{table(results, rows)}\n")
    print(args.out.read_text())
    return 0
