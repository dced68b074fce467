"""One product line at the station: frames in, verdicts out.

A part's features join the line's window; its verdict comes when
``decision_delay`` later parts have arrived. The decision:

1. the part's mutual scores against the window (CAE for 2D+3D when the profile
   says so) -> anomaly map (2D: corner-aligned upsampling; 3D: inverse-distance
   painting + blur; summed, each first on the window's own scale when the
   profile's fusion is "window": see maps.fusion_scale, from the decided
   members' median patch score and image score per modality);
   its image score is the map's maximum and its salient feature the aggregated
   feature at its top patch/centre (2D+3D: both, concatenated);
2. RsCon (when the profile says so) over the window: every member's image score as computed when that
   member was decided, and its salient feature (recomputing every member's CAE
   on each arrival would cost O(N) rank sorts per part); the re-scored value is
   mapped back to the raw score scale (lo + (hi - lo) * r) so thresholds keep
   their meaning from window to window;
3. the threshold (the line's policy fitted on the window's re-scored values, or
   an operator's fixed value) -> ok / ng, and the regions of the map above it.

A part lacking one of the line's modalities (when the profile allows partial
parts) is scored against the window on what it has, without joining it.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from edge_runtime.inspection.features import FeatureExtractor, InspectionError, Preprocessed
from edge_runtime.inspection.maps import fuse_maps, fusion_scale, part_maps, salient_feature
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.settings import InspectionSettings
from edge_runtime.inspection.threshold import LineThreshold
from edge_runtime.inspection.window import LineWindow
from edge_runtime.scoring import rescore

__all__ = ["Decision", "InspectionError", "LineInspector"]


@dataclass
class Decision:
    """The verdict of one part (before it becomes a wire message)."""

    part: str
    seq: int
    verdict: str  # "ok" | "ng" | "inconclusive" | "error"
    score: float | None = None
    threshold: float | None = None
    threshold_source: str | None = None
    modalities: list[str] = field(default_factory=list)
    window: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    anomaly_map: np.ndarray | None = None
    regions: list[list[float]] = field(default_factory=list)
    error: dict | None = None
    preprocessed: Preprocessed | None = None


@dataclass
class _Scored:
    """What RsCon needs of a decided member, per modality and fused."""

    image: dict[str, float]  # "2d", "3d", "fused" -> image score
    salient: dict[str, np.ndarray]  # same keys -> float32 feature
    references: int
    floor: dict[str, float]  # "2d", "3d" -> median patch/centre score (the fusion scale's floor)


@dataclass
class _Pending:
    part: str
    seq: int
    latency: dict[str, float]
    preprocessed: Preprocessed | None


class LineInspector:
    """Scores the parts of one product line against its rolling window.

    settings : the line's InspectionSettings. name : the line's name.
    extractor : a FeatureExtractor (default: built from the settings, which
    loads the encoders and may export the default 2D encoder on first use).
    """

    def __init__(self, settings: InspectionSettings, name: str, extractor: FeatureExtractor | None = None):
        self.settings = settings
        self.name = name
        self.extractor = extractor or FeatureExtractor.from_settings(settings)
        self.threshold = LineThreshold(settings.threshold)
        self.model_digest = self.extractor.model_digest
        self.profile_digest = settings.digest()
        self.reset()

    def reset(self) -> None:
        """Forget every part (the window starts cold); an operator's threshold stays."""
        s = self.settings
        self.window = LineWindow(s.window, s.modalities, s.interval, cross_modal=s.cae)
        self._scored: dict[str, _Scored] = {}
        self._pending: list[_Pending] = []

    def set_threshold(self, value: float, source: str = "fixed") -> None:
        self.threshold.override(value, source)

    def status(self) -> dict:
        value, source = self.threshold.current()
        return {"window": len(self.window), "capacity": self.window.capacity, "min_window": self.settings.min_window,
                "pending": len(self._pending), "threshold": value, "threshold_source": source,
                "modalities": list(self.settings.modalities)}

    # -- arrivals -----------------------------------------------------------

    def inspect(self, part: str, seq: int, rgb: np.ndarray | None, xyz: np.ndarray | None) -> list[Decision]:
        """Take one part's frames; return the decisions that became ready.

        rgb : uint8 (H, W, 3) RGB or None; xyz : float32 (H, W, 3) organized
        cloud or None. With decision_delay = 0 the list holds this part's
        decision. Raises InspectionError for frames that cannot be scored.
        """
        if part in self.window or any(p.part == part for p in self._pending):
            raise InspectionError("duplicate", f"part {part!r} is already in line {self.name!r}")
        return self.inspect_features(part, seq, *self.extractor.extract(rgb, xyz))

    def inspect_features(self, part: str, seq: int, features: PartFeatures, pre: Preprocessed | None = None,
                         latency: dict | None = None) -> list[Decision]:
        """`inspect` for a part whose features are already extracted (replay of cached features)."""
        latency = dict(latency or {})
        if features.modalities != self.settings.modalities:
            return [self._decide_partial(part, seq, features, pre, latency)]
        t = time.perf_counter()
        evicted = self.window.add(part, features)
        self._scored.pop(evicted, None)
        latency["window"] = (time.perf_counter() - t) * 1e3
        self._pending.append(_Pending(part, seq, latency, pre))
        ready = []
        while len(self._pending) > self.settings.decision_delay:
            ready.append(self._decide(self._pending.pop(0)))
        return ready

    def flush(self) -> list[Decision]:
        """Decide every pending part now (shutdown, line switch)."""
        ready = [self._decide(p) for p in self._pending]
        self._pending = []
        return ready

    # -- decisions ----------------------------------------------------------

    def _decide(self, pending: _Pending) -> Decision:
        s = self.settings
        decision = Decision(pending.part, pending.seq, "inconclusive", modalities=list(s.modalities),
                            window=len(self.window) - 1, latency_ms=pending.latency, preprocessed=pending.preprocessed)
        if len(self.window) < s.min_window:
            decision.error = {"code": "warming_up",
                              "message": f"window holds {len(self.window)} of the {s.min_window} parts scoring needs"}
            return decision
        t = time.perf_counter()
        fresh = []
        for name in self.window.members:  # parts that arrived before the window was warm get scores once
            known = self._scored.get(name)
            if name != pending.part and (known is None or known.references < s.min_window - 1):
                fresh.append(self._score_member(name))
        fresh.append(self._score_member(pending.part))
        for name, maps, summary in fresh:
            self._scored[name] = summary
        scale = self._fusion_scale()
        for name, maps, summary in fresh:  # fused once every fresh member's own levels count
            anomaly_map = fuse_maps(maps, scale)  # the last one is the pending part's
            summary.image["fused"] = float(anomaly_map.max())
        decision.latency_ms["score"] = (time.perf_counter() - t) * 1e3
        names = [n for n in self.window.members if n in self._scored]
        return self._conclude(decision, names, "fused", self._scored[pending.part], anomaly_map)

    def _decide_partial(self, part: str, seq: int, features: PartFeatures, pre: Preprocessed, latency: dict) -> Decision:
        (modality,) = features.modalities
        decision = Decision(part, seq, "inconclusive", modalities=[modality], window=len(self.window),
                            latency_ms=latency, preprocessed=pre)
        if not self.settings.allow_partial:
            decision.error = {"code": "missing_modality",
                              "message": f"line {self.name!r} needs {'+'.join(self.settings.modalities)}, got {modality} only"}
            return decision
        names = [n for n in self.window.members if n in self._scored]
        if len(names) < self.settings.min_window:
            decision.error = {"code": "warming_up",
                              "message": f"window holds {len(names)} scored parts of the {self.settings.min_window} needed"}
            return decision
        t = time.perf_counter()
        scores = {modality: self.window.query(features, modality)}
        maps = self._maps(features, scores)
        mine = self._summarise(features, scores, maps, len(names))
        decision.latency_ms["score"] = (time.perf_counter() - t) * 1e3
        return self._conclude(decision, names, modality, mine, maps[modality], unlabeled_only=True)

    def _conclude(self, decision: Decision, names: list[str], key: str, mine: _Scored, anomaly_map: np.ndarray,
                  unlabeled_only: bool = False) -> Decision:
        """RsCon over the window's decided members (+ this part if outside), threshold, verdict, regions."""
        t = time.perf_counter()
        others = [self._scored[n] for n in names if n != decision.part]
        pool = others + [mine]
        raw = np.array([p.image[key] for p in pool], dtype=np.float32)
        salient = np.stack([p.salient[key] for p in pool])
        lo, hi = float(raw.min()), float(raw.max())
        final = lo + (hi - lo) * rescore(raw, salient, self.settings.k_list) if self.settings.rscon else raw
        decision.latency_ms["rescore"] = (time.perf_counter() - t) * 1e3
        decision.score = float(final[-1])
        decision.anomaly_map = anomaly_map
        try:
            value, source = self.threshold.decide(final, unlabeled_only=unlabeled_only)
        except ValueError as exc:
            decision.error = {"code": "no_threshold", "message": str(exc)}
            return decision
        decision.threshold, decision.threshold_source = value, source
        decision.verdict = "ng" if decision.score > value else "ok"
        if decision.verdict == "ng":
            decision.regions = regions_above(anomaly_map, min(value, float(anomaly_map.max())))
        return decision

    def _score_member(self, name: str) -> tuple[str, dict[str, np.ndarray], _Scored]:
        """A member's per-modality maps and summary (its fused image score comes once the scale is known)."""
        features = self.window.part(name)
        scores = self.window.scores(name)
        maps = self._maps(features, scores)
        summary = self._summarise(features, scores, maps, len(self.window) - 1)
        summary.salient["fused"] = np.concatenate([summary.salient[m] for m in self.settings.modalities])
        return name, maps, summary

    def _fusion_scale(self) -> dict[str, tuple[float, float]] | None:
        """The window's fusion scale from its decided members (see maps.fusion_scale); None with one modality."""
        members = [self._scored[n] for n in self.window.members if n in self._scored]
        mods = self.settings.modalities
        if len(mods) == 1:
            return None
        return fusion_scale(self.settings.fusion, {m: [sc.floor[m] for sc in members] for m in mods},
                            {m: [sc.image[m] for sc in members] for m in mods})

    def _maps(self, features: PartFeatures, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return part_maps(features, scores, self.settings.map_sigma)

    @staticmethod
    def _summarise(features: PartFeatures, scores: dict, maps: dict, references: int) -> _Scored:
        salient = {m: salient_feature(features, m, s) for m, s in scores.items()}
        return _Scored({m: float(v.max()) for m, v in maps.items()}, salient, references,
                       {m: float(np.median(s)) for m, s in scores.items()})

    # -- persistence --------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume warm: the window, decided members' summaries, pending parts."""
        out = self.window.state()
        meta = {
            "scored": {n: {"image": sc.image, "references": sc.references, "floor": sc.floor}
                       for n, sc in self._scored.items()},
            "pending": [{"part": p.part, "seq": p.seq} for p in self._pending],
            "threshold": self.threshold.state(),
            "profile": self.profile_digest,
        }
        for i, (n, sc) in enumerate(self._scored.items()):
            for key, vec in sc.salient.items():
                out[f"salient{i}_{key}"] = vec
        out["inspector_meta"] = np.array(json.dumps(meta))
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        meta = json.loads(str(state["inspector_meta"]))
        if meta["profile"] != self.profile_digest:
            raise ValueError(f"saved state of line {self.name!r} was made with profile {meta['profile']}, "
                             f"not the current {self.profile_digest}: reset the line to start cold")
        self.window = LineWindow.from_state(state)
        self._scored = {}
        for i, (n, sc) in enumerate(meta["scored"].items()):
            salient = {k: state[f"salient{i}_{k}"] for k in sc["image"]}
            self._scored[n] = _Scored(sc["image"], salient, sc["references"], sc["floor"])
        self._pending = [_Pending(p["part"], p["seq"], {}, None) for p in meta["pending"]]
        self.threshold.load_state(meta["threshold"])


def regions_above(anomaly_map: np.ndarray, level: float) -> list[list[float]]:
    """Connected regions (8-connectivity) of ``anomaly_map >= level``.

    anomaly_map : (H, W) float. Returns [[x0, y0, x1, y1, peak], ...] (pixel
    bounds, inclusive), highest peak first.
    """
    mask = (anomaly_map >= level).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    regions = []
    for k in range(1, count):
        x, y, w, h = (int(v) for v in stats[k, :4])
        peak = float(anomaly_map[labels == k].max())
        regions.append([x, y, x + w - 1, y + h - 1, peak])
    return sorted(regions, key=lambda r: -r[4])
