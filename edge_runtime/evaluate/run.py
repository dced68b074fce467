"""Evaluation of product lines: features once per part, then batch and replay scoring.

batch: the paper's protocol, every test part of a class in one pool (or pools
of a given size). replay: parts in order through the station's LineInspector
(the same window, guard, decisions, re-scoring and alerts), so the numbers are
the station's; replay also reports the verdicts (`guard_metrics`) and draws
each line's scores and threshold over time.
With ``baseline`` the plain mutual-scoring baseline (evaluate.baseline) is
scored on the same parts, and summary.md sets each run beside it.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_runtime.evaluate import datasets
from edge_runtime.evaluate.guard import PartLog, guard_metrics, timeline_png
from edge_runtime.evaluate.metrics import compute_metrics
from edge_runtime.evaluate.overlay import overlay_png
from edge_runtime.inspection.features import FeatureExtractor, InspectionError
from edge_runtime.inspection.inspector import LineInspector
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.evaluate.baseline import BASELINE, BASELINE_STAGES, minmax_fusion
from edge_runtime.inspection.pool import pool_distances, score_distances
from edge_runtime.inspection.settings import InspectionSettings

METRIC_KEYS = ("image_auroc", "image_ap", "image_f1max", "pixel_auroc", "pixel_ap", "pixel_f1max", "aupro")
READERS = {"mvtec3d": datasets.read_mvtec3d, "eyecandies": datasets.read_eyecandies}


@dataclass
class ClassData:
    """One class's parts, extracted once: features and what the metrics need."""

    name: str
    samples: list
    features: list[PartFeatures]
    rgb: list[np.ndarray]  # (S, S, 3) uint8 as the encoder saw it
    gt: np.ndarray  # (N, S, S) uint8 {0, 1}
    labels: np.ndarray  # (N,) int
    extract_ms: dict[str, float]
    distances: dict = dataclasses.field(default_factory=dict)  # (pool indices, modality, radius) -> per-layer distances

    def pool(self, idx: np.ndarray, modalities: tuple[str, ...], match_radius: int | None = None):
        """The parts ``idx`` on ``modalities`` and their distances, each pool, modality and
        matching rule computed once."""
        parts = [self.features[i].only(modalities) for i in idx]
        dist = {}
        for m in modalities:
            key = (tuple(int(i) for i in idx), m, match_radius)
            if key not in self.distances:
                self.distances[key] = pool_distances(parts, m, match_radius)
            dist[m] = self.distances[key]
        return parts, dist


@dataclass(frozen=True)
class Combination:
    modality: str  # "2d", "3d" or "2d+3d"
    mode: str  # "batch" or "replay"
    window: int | None = None

    @property
    def key(self) -> str:
        return f"{self.modality}_{self.mode}" + (f"_w{self.window}" if self.window else "")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.modality.split("+"))


def extract_class(name: str, samples: list, extractor: FeatureExtractor) -> ClassData:
    """Read and extract every part of a class (progress bar); the gt follows the frames' square padding + resize."""
    size = extractor.settings.image_size
    feats, rgbs, gts, totals = [], [], [], {}
    for sample in tqdm(samples, desc=f"features {name}", unit="part", leave=False):
        rgb, xyz, gt = datasets.read_frames(sample)
        try:
            f, pre, latency = extractor.extract(rgb, xyz)
        except InspectionError as exc:
            raise InspectionError(exc.code, f"{sample.rgb_path}: {exc}") from exc
        feats.append(f)
        rgbs.append(pre.rgb if pre.rgb is not None else np.zeros((size, size, 3), np.uint8))
        gts.append(datasets.mask_on_grid(gt, rgb.shape[:2], size))
        for k, v in latency.items():
            totals[k] = totals.get(k, 0.0) + v
    labels = np.array([s.label for s in samples], dtype=np.int64)
    per_part = {k: v / max(1, len(samples)) for k, v in totals.items()}
    return ClassData(name, samples, feats, rgbs, np.stack(gts), labels, per_part)


def _pools(n: int, subset: int | None, seed: int) -> list[np.ndarray]:
    """Index sets of the batch pools: all parts, or shuffled pools of ``subset`` (a tail of < 3 joins the last)."""
    order = np.arange(n) if not subset else np.random.default_rng(seed).permutation(n)
    size = subset or n
    return [order[start : start + size] if len(order[start : start + size]) >= 3 else order[max(0, n - size):]
            for start in range(0, n, size)]


def run_batch(data: ClassData, combo: Combination, settings: InspectionSettings, subset: int | None, seed: int):
    """(maps (N, S, S), scores (N,), scored (N,)) with every part scored in one pool or in pools of ``subset``."""
    n = len(data.features)
    key = "fused" if len(combo.modalities) == 2 else combo.modality
    maps = np.zeros((n,) + data.gt.shape[1:], np.float32)
    scores = np.zeros(n, np.float32)
    # the line's own feature sets (its window's: the normals stream too) when the run scores its modalities
    mods = settings.window_modalities() if combo.modalities == settings.modalities else combo.modalities
    for idx in _pools(n, subset, seed):
        parts, dist = data.pool(idx, mods, settings.match_radius)
        maps[idx], scores[idx] = score_distances(parts, dist, settings)[key]
    return maps, scores, np.ones(n, bool)


def run_baseline(data: ClassData, combo: Combination, subset: int | None, seed: int):
    """The plain baseline (evaluate.baseline) on ``data`` extracted with its settings: like run_batch."""
    n = len(data.features)
    maps = np.zeros((n,) + data.gt.shape[1:], np.float32)
    scores = np.zeros(n, np.float32)
    for idx in _pools(n, subset, seed):
        parts, dist = data.pool(idx, combo.modalities)
        single = score_distances(parts, dist, BASELINE)
        if len(combo.modalities) == 2:
            maps[idx], scores[idx] = minmax_fusion({m: single[m][0] for m in combo.modalities})
        else:
            maps[idx], scores[idx] = single[combo.modality]
    return maps, scores, np.ones(n, bool)



def run_replay(data: ClassData, combo: Combination, settings: InspectionSettings, extractor: FeatureExtractor):
    """Parts in order through a LineInspector; parts decided before the window is warm have no score.

    Returns ((maps, scores, scored), per-part PartLog list)."""
    line = dataclasses.replace(settings, modalities=combo.modalities, window=combo.window,
                               min_window=min(settings.min_window, combo.window), decision_delay=0)
    inspector = LineInspector(line, data.name, extractor=extractor)
    n = len(data.features)
    maps = np.zeros((n,) + data.gt.shape[1:], np.float32)
    scores = np.zeros(n, np.float32)
    scored = np.zeros(n, bool)
    logs: list[PartLog | None] = [None] * n
    for i, f in enumerate(data.features):
        for d in inspector.inspect_features(str(i), i, f.only(combo.modalities)):
            j = int(d.part)
            logs[j] = PartLog(d.verdict, d.score, d.threshold, d.reference, [a.kind for a in d.alerts])
            if d.score is not None:
                maps[j], scores[j], scored[j] = d.anomaly_map, d.score, True
    return (maps, scores, scored), logs


def metrics_for(data: ClassData, maps: np.ndarray, scores: np.ndarray, scored: np.ndarray) -> dict:
    m = compute_metrics(data.labels[scored], scores[scored], data.gt[scored], maps[scored])
    m = {k: float(m[k]) for k in METRIC_KEYS}
    kinds = [getattr(s, "defect_kind", None) for s in data.samples]
    by_kind = {}
    for kind in sorted({k for k in kinds if k and k != "none"}):
        sel = scored & np.array([(lab == 0) or (k == kind) for lab, k in zip(data.labels, kinds)])
        if len(set(data.labels[sel])) == 2:
            by_kind[kind] = float(compute_metrics(data.labels[sel], scores[sel], data.gt[sel], maps[sel])["image_auroc"])
    m["image_auroc_by_kind"] = by_kind
    m["parts_scored"] = int(scored.sum())
    return m


def mean_metrics(per_class: dict[str, dict]) -> dict:
    out = {k: float(np.mean([m[k] for m in per_class.values()])) for k in METRIC_KEYS}
    if all("batch_same_parts" in m for m in per_class.values()):
        out["batch_same_parts"] = {k: float(np.mean([m["batch_same_parts"][k] for m in per_class.values()]))
                                   for k in METRIC_KEYS}
    kinds = sorted({k for m in per_class.values() for k in m["image_auroc_by_kind"]})
    out["image_auroc_by_kind"] = {
        k: float(np.mean([m["image_auroc_by_kind"][k] for m in per_class.values() if k in m["image_auroc_by_kind"]]))
        for k in kinds
    }
    return out


def markdown(per_class: dict[str, dict], mean: dict, title: str) -> str:
    cols = list(METRIC_KEYS)
    lines = [f"# {title}", "", "| class | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, m in list(per_class.items()) + [("mean", mean)]:
        lines.append(f"| {name} | " + " | ".join(f"{100 * m[c]:.2f}" for c in cols) + " |")
    kinds = mean.get("image_auroc_by_kind", {})
    if kinds:
        lines += ["", "Image AUROC by defect kind (good parts + that kind):", ""]
        lines += ["| kind | image AUROC |", "|---|---|"] + [f"| {k} | {100 * v:.2f} |" for k, v in kinds.items()]
    guarded = {n: m["guard"] for n, m in per_class.items() if "guard" in m}
    if guarded:
        lines += ["", "Verdicts (replay): ng recall on defective parts, false ng on good parts; a burst's recall, "
                  "first alert (parts after its start), threshold before / highest during / after:", "",
                  "| class | ng recall | false ng | inconclusive | burst recall | first alert | threshold |",
                  "|---|---|---|---|---|---|---|"]
        for name, g in guarded.items():
            b = g.get("burst", {})
            thr = " / ".join("-" if b.get(k) is None else f"{b[k]:.3f}"
                             for k in ("threshold_before", "threshold_during_max", "threshold_after")) if b else "-"
            lines.append(f"| {name} | {_pct(g['ng_recall'])} | {_pct(g['false_ng'])} | {g['inconclusive']} | "
                         f"{_pct(b.get('recall'))} | {b.get('first_alert_delay', '-')} | {thr} |")
    if "batch_same_parts" in mean:
        lines += ["", "Replay against batch on the same parts (the parts the replay scored), image AUROC / AUPRO:",
                  ""] + same_parts_rows({title: (per_class, mean)})
    return "\n".join(lines) + "\n"


def same_parts_rows(runs: dict[str, tuple[dict, dict]]) -> list[str]:
    """Table rows: per replay run {key: (per class, mean)} and class, the replay beside batch on its parts."""
    rows = ["| run | class | parts | replay | batch, same parts | difference |", "|---|---|---|---|---|---|"]
    for key, (per_class, mean) in runs.items():
        for name, m in list(per_class.items()) + [("mean", mean)]:
            b = m["batch_same_parts"]
            parts = m.get("parts_scored", sum(c["parts_scored"] for c in per_class.values()))
            rows.append(f"| {key} | {name} | {parts} | {100 * m['image_auroc']:.2f} / {100 * m['aupro']:.2f} | "
                        f"{100 * b['image_auroc']:.2f} / {100 * b['aupro']:.2f} | "
                        f"{100 * (m['image_auroc'] - b['image_auroc']):+.2f} / {100 * (m['aupro'] - b['aupro']):+.2f} |")
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def write_outputs(out: Path, key: str, per_class: dict, config: dict, timing: dict,
                  results: dict[str, tuple], data: dict[str, ClassData], overlays: int,
                  logs: dict[str, list[PartLog]]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    mean = mean_metrics(per_class)
    doc = {"classes": per_class, "mean": mean, "config": config, "timing": timing}
    (out / "metrics.json").write_text(json.dumps(doc, indent=2))
    (out / "metrics.md").write_text(markdown(per_class, mean, key))
    rows = ["class,part,defect,label,score,scored" + (",verdict,threshold,reference,alerts" if logs else "")]
    for name, (maps, scores, scored) in results.items():
        d = data[name]
        for i, (s, score, ok) in enumerate(zip(d.samples, scores, scored)):
            row = f"{name},{s.name},{s.defect},{s.label},{float(score):.6f},{int(ok)}"
            if logs:
                g = logs[name][i]
                threshold = "" if g.threshold is None else f"{g.threshold:.6f}"
                row += f",{g.verdict},{threshold},{int(g.reference)}," + " ".join(g.alerts)
            rows.append(row)
        _write_overlays(out / "overlays" / name, d, maps, scores, scored, overlays)
        if logs:
            timeline_png(out / "timeline" / f"{name}.png", logs[name], d.labels, _systematic(d),
                         f"{name} {key}: scores (hollow = not a reference), threshold, alerts")
    (out / "scores.csv").write_text("\n".join(rows) + "\n")
    return doc


def _systematic(d: ClassData) -> np.ndarray:
    return np.array([s.systematic for s in d.samples], dtype=bool)


def _write_overlays(folder: Path, d: ClassData, maps, scores, scored, count: int) -> None:
    """A sample of parts: the defective ones with the highest and lowest scores, and the top good ones."""
    if count <= 0:
        return
    idx = [i for i in np.argsort(-scores) if scored[i]]
    bad = [i for i in idx if d.labels[i] == 1]
    good = [i for i in idx if d.labels[i] == 0]
    picks = list(dict.fromkeys(bad[: count // 2] + bad[-(count // 4 or 1):] + good[: max(1, count // 4)]))[:count]
    vmin, vmax = float(np.min(maps[scored])), float(np.max(maps[scored]))
    folder.mkdir(parents=True, exist_ok=True)
    for i in picks:
        s = d.samples[i]
        overlay_png(folder / f"{s.defect}_{s.name}.png", d.rgb[i], maps[i], d.gt[i], vmin, vmax,
                    title=f"{d.name} {s.defect}/{s.name} score {scores[i]:.3f}")


def _baseline_extractor(settings: InspectionSettings) -> FeatureExtractor:
    """The baseline's extractor: its settings on the line's modalities, Lite0 at its stages."""
    from edge_runtime.engines import ensure_default_encoders

    encoder = str(ensure_default_encoders(layers=BASELINE_STAGES)) if "2d" in settings.modalities else "default"
    return FeatureExtractor.from_settings(dataclasses.replace(
        BASELINE, modalities=settings.modalities, image_size=settings.image_size, encoder_2d=encoder))


def evaluate(dataset: str, root: str, classes: Sequence[str] | None, combos: Sequence[Combination],
             settings: InspectionSettings, out: str | Path, subset: int | None = None, overlays: int = 6,
             seed: int = 0, baseline: bool = False) -> dict[str, dict]:
    """Run every combination on every class (and, with ``baseline``, the baseline on every
    batch combination's modality); returns {run key: metrics document}."""
    if dataset not in READERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(READERS)}")
    found = READERS[dataset](root, classes)
    # Feature sets: name -> (output prefix, the settings its runs score with, their extractor).
    # A single-modality run scores as a line of that modality alone would, whose defaults differ
    # (default_stages, centres): where the line has both, it gets features of its own.
    sets = {"musc-edge": ("", settings, FeatureExtractor.from_settings(settings))}
    for m in settings.modalities if len(settings.modalities) == 2 else ():
        if any(c.modalities == (m,) for c in combos):
            alone = dataclasses.replace(settings, modalities=(m,))
            sets[f"musc-edge {m}"] = ("", alone, FeatureExtractor.from_settings(alone))
    if baseline:
        sets["baseline"] = ("baseline_", BASELINE, _baseline_extractor(settings))
    runs = [(f"musc-edge {c.modality}" if f"musc-edge {c.modality}" in sets else "musc-edge", c) for c in combos]
    runs += [("baseline", c) for c in combos if baseline and c.mode == "batch"]
    out = Path(out)
    docs = {}
    for set_name, (prefix, line_settings, extractor) in sets.items():
        t0 = time.perf_counter()
        data = {name: extract_class(name, samples, extractor) for name, samples in
                tqdm(found.items(), desc=f"{set_name} features", unit="class")}
        extract_s = time.perf_counter() - t0
        batch_of = {}  # (class, modality) -> run_batch's result: the batch run's, and beside each replay
        for _, combo in tqdm([r for r in runs if r[0] == set_name], desc=f"{set_name} scoring", unit="run"):
            per_class, results, seconds, logs = {}, {}, {}, {}
            for name, d in data.items():
                t = time.perf_counter()
                if prefix:
                    results[name] = run_baseline(d, combo, subset, seed)
                elif combo.mode == "batch":
                    results[name] = batch_of[name, combo.modality] = run_batch(d, combo, line_settings, subset, seed)
                else:
                    results[name], logs[name] = run_replay(d, combo, line_settings, extractor)
                seconds[name] = time.perf_counter() - t
                per_class[name] = metrics_for(d, *results[name])
                if name in logs:
                    per_class[name]["guard"] = guard_metrics(logs[name], d.labels, _systematic(d))
                    # a replay leaves out the parts decided while its window warms up: batch on the same parts
                    if (name, combo.modality) not in batch_of:
                        batch_of[name, combo.modality] = run_batch(d, Combination(combo.modality, "batch"),
                                                                   line_settings, subset, seed)
                    maps, scores, _ = batch_of[name, combo.modality]
                    per_class[name]["batch_same_parts"] = metrics_for(d, maps, scores, results[name][2])
            config = {"dataset": dataset, "root": str(root), "modality": combo.modality, "mode": combo.mode,
                      "window": combo.window, "subset": subset, "settings": extractor.settings.to_dict(),
                      "model": extractor.model_digest, "baseline": bool(prefix)}
            timing = {"extract_seconds_total": extract_s,
                      "extract_ms_per_part": {n: d.extract_ms for n, d in data.items()},
                      "score_seconds": seconds}
            key = prefix + combo.key
            target = out if len(runs) == 1 else out / key
            docs[key] = write_outputs(target, key, per_class, config, timing, results, data, overlays, logs)
    if len(runs) > 1:
        _write_summary(out, docs)
    return docs


def _write_summary(out: Path, docs: dict[str, dict]) -> None:
    """summary.md: every run; image AUROC per defect kind side by side (fusion next to each
    modality); and, with a baseline, each batch run against the baseline on the same parts."""
    lines = ["# Evaluation summary (mean over classes, %)", "",
             "| run | " + " | ".join(METRIC_KEYS) + " |", "|---" * (len(METRIC_KEYS) + 1) + "|"]
    for key, doc in docs.items():
        lines.append(f"| {key} | " + " | ".join(f"{100 * doc['mean'][k]:.2f}" for k in METRIC_KEYS) + " |")
    kinds = sorted({k for doc in docs.values() for k in doc["mean"]["image_auroc_by_kind"]})
    if kinds:
        lines += ["", "## Image AUROC by defect kind (good parts + that kind, %)", "",
                  "| kind | " + " | ".join(docs) + " |", "|---" * (len(docs) + 1) + "|"]
        for kind in kinds:
            cells = [doc["mean"]["image_auroc_by_kind"].get(kind) for doc in docs.values()]
            lines.append(f"| {kind} | " + " | ".join("-" if c is None else f"{100 * c:.2f}" for c in cells) + " |")
    pairs = [(k, "baseline_" + k) for k in docs if "baseline_" + k in docs]
    if pairs:
        lines += ["", "## Against the plain baseline on the same parts (image AUROC / AUPRO, %)", "",
                  "| run | musc-edge | baseline | difference |", "|---|---|---|---|"]
        for key, base in pairs:
            m, b = docs[key]["mean"], docs[base]["mean"]
            lines.append(f"| {key} | {100 * m['image_auroc']:.2f} / {100 * m['aupro']:.2f} | "
                         f"{100 * b['image_auroc']:.2f} / {100 * b['aupro']:.2f} | "
                         f"{100 * (m['image_auroc'] - b['image_auroc']):+.2f} / {100 * (m['aupro'] - b['aupro']):+.2f} |")
    replays = {k: (d["classes"], d["mean"]) for k, d in docs.items() if "batch_same_parts" in d["mean"]}
    if replays:
        lines += ["", "## Replay against batch on the same parts (image AUROC / AUPRO, %)", "",
                  "A replay does not score the parts decided while its window warms up; batch is scored on the "
                  "parts the replay scored.", ""] + same_parts_rows(replays)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps({k: d["mean"] for k, d in docs.items()}, indent=2))
