"""One product line at the station: frames in, verdicts out.

A part's features enter the line's window as a candidate; its verdict comes
when ``decision_delay`` later parts have arrived. The decision:

1. the part's mutual scores against the window's references (CAE for 2D+3D
   when the profile says so) -> anomaly map (2D: corner-aligned upsampling; 3D:
   inverse-distance painting + blur; summed, each first on the window's own
   scale when the profile's fusion is "window": see maps.fusion_scale, from the
   references' median patch score and image score per modality); its image
   score is the map's maximum and its salient feature the aggregated feature at
   its top patch/centre (2D+3D: both, concatenated);
2. RsCon (when the profile says so) over the references and the part: every reference's image score as
   computed when it was decided, and its salient feature (recomputing every
   member's CAE on each arrival would cost O(N) rank sorts per part); the
   re-scored value is mapped back to the raw score scale (lo + (hi - lo) * r)
   so thresholds keep their meaning from window to window;
3. the threshold (the line's policy fitted on the references' re-scored values
   only, or an operator's fixed value) -> ok / ng, and the regions of the map
   above it.

The guard (profile ``[guard] enabled``, on by default) keeps the references
to parts the station believes good: an ``ok`` part becomes a reference (the
oldest unpinned one leaves when N are held), an ``ng`` part goes to the
line's bounded quarantine, an ``inconclusive`` one leaves. Parts taken while
the window holds fewer than ``min_window`` references join provisionally and
are re-judged once it is warm: those that would be ``ng`` leave for the
quarantine. Golden references (``[guard] references``) are pinned at start.
An operator's feedback (``label``, ``accept_shift``, ``pin``) is the only way
a part the station called ``ng`` becomes a reference. With the guard off,
every part joins the window on arrival (plain streaming MuSc).

A part lacking one of the line's modalities (when the profile allows partial
parts) is scored against the references on what it has, without joining.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import cv2
import numpy as np
from tqdm import tqdm

from edge_runtime.evaluate.datasets import read_good_parts
from edge_runtime.inspection.alerts import Alert, AlertMonitor, AlertSettings, region_centre
from edge_runtime.inspection.features import FeatureExtractor, InspectionError, Preprocessed
from edge_runtime.inspection.maps import fuse, fusion_scale, part_maps, salient_feature
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.settings import InspectionSettings
from edge_runtime.inspection.policies import verdict_for
from edge_runtime.inspection.threshold import LineThreshold
from edge_runtime.inspection.window import LineWindow
from edge_runtime.scoring import rescore

__all__ = ["Decision", "InspectionError", "LineInspector"]

HISTORY = 256  # threshold values the status keeps
LABELS = ("good", "defect")


@dataclass
class Decision:
    """The verdict of one part (before it becomes a wire message).

    reference: whether the part joined the references. reference_level: the
    median of the references' re-scored values (what drift watches). alerts:
    the alerts this decision raised.
    """

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
    reference: bool = False
    reference_level: float | None = None
    alerts: list[Alert] = field(default_factory=list)


@dataclass
class _Scored:
    """What RsCon needs of a reference, per modality and fused."""

    image: dict[str, float]  # "2d", "3d", "fused" -> image score
    salient: dict[str, np.ndarray]  # same keys -> float32 feature
    floor: dict[str, float]  # "2d", "3d" -> median patch/centre score (the fusion scale's floor)


@dataclass
class _Pending:
    part: str
    seq: int
    latency: dict[str, float]
    preprocessed: Preprocessed | None


@dataclass
class Quarantined:
    """A part kept out of the references: its features, until an operator says otherwise."""

    seq: int
    features: PartFeatures
    score: float | None
    label: str | None = None  # "defect" once an operator confirmed it


class LineInspector:
    """Scores the parts of one product line against its references.

    settings : the line's InspectionSettings. name : the line's name.
    extractor : a FeatureExtractor (default: built from the settings, which
    loads the encoders and may export the default 2D encoder on first use).
    """

    def __init__(self, settings: InspectionSettings, name: str, extractor: FeatureExtractor | None = None):
        self.settings = settings
        self.name = name
        self.extractor = extractor or FeatureExtractor.from_settings(settings)
        self.threshold = LineThreshold(settings.threshold, settings.window_scaled())
        self.alerts = AlertMonitor(name, AlertSettings.from_table(settings.alerts))
        self.model_digest = self.extractor.model_digest
        self.profile_digest = settings.digest()
        self._golden = self._golden_parts()
        self.reset()

    def _golden_parts(self) -> list[tuple[str, PartFeatures]]:
        """The profile's known-good parts, extracted once (they re-seed every reset)."""
        s = self.settings
        if not s.references:
            return []
        frames = read_good_parts(s.references)
        if len(frames) >= s.window:
            raise ValueError(f"line {self.name!r}: {len(frames)} golden references in {s.references} leave no room "
                             f"in a window of {s.window}: keep fewer than {s.window}")
        golden = []
        for name, rgb, xyz in tqdm(frames, desc=f"golden references {self.name}", unit="part", leave=False):
            try:
                features = self.extractor.extract(rgb if "2d" in s.modalities else None,
                                                  xyz if "3d" in s.modalities else None)[0]
            except InspectionError as exc:
                raise ValueError(f"golden reference {s.references}/{name}: {exc}") from exc
            golden.append((f"golden:{name}", features))
        return golden

    def reset(self) -> None:
        """Forget every part (the window starts cold, but for its golden references);
        an operator's threshold and the active alerts stay."""
        s = self.settings
        self.window = LineWindow(s.window, s.window_modalities(), s.interval, match_radius=s.match_radius, device=s.device,
                                 spare=s.decision_delay + 1, cross_modal=s.cae)
        self._scored: dict[str, _Scored] = {}
        self._pending: list[_Pending] = []
        self._provisional: dict[str, int] = {}  # references taken while warming up -> seq, not yet re-judged
        self.quarantine: OrderedDict[str, Quarantined] = OrderedDict()
        self.threshold_history: deque = deque(maxlen=HISTORY)  # [seq, threshold]
        self.alerts.resettle()
        for name, features in self._golden:
            self.window.add(name, features, pinned=True)

    def set_threshold(self, value: float, source: str = "fixed") -> None:
        self.threshold.override(value, source)

    def clear_threshold(self) -> None:
        """Drop an operator's threshold: the profile's policy decides again."""
        self.threshold.clear()

    def status(self) -> dict:
        value, source = self.threshold.current()
        return {"window": len(self.window.reference_ids), "capacity": self.window.capacity,
                "min_window": self.settings.min_window, "pending": len(self._pending), "threshold": value,
                "threshold_source": source, "modalities": list(self.settings.modalities),
                "guard": self.settings.guard, "pinned": self.window.pinned, "quarantine": list(self.quarantine),
                "threshold_history": [list(h) for h in self.threshold_history],
                "alerts": [a.header() for a in self.alerts.active.values()],
                # a guarded line's references (what the dashboard's label and accept_shift act on)
                **({"references": len(self.window.reference_ids)} if self.settings.guard else {})}

    # -- arrivals -----------------------------------------------------------

    def inspect(self, part: str, seq: int, rgb: np.ndarray | None, xyz: np.ndarray | None) -> list[Decision]:
        """Take one part's frames; return the decisions that became ready.

        rgb : uint8 (H, W, 3) RGB or None; xyz : float32 (H, W, 3) organized
        cloud or None. With decision_delay = 0 the list holds this part's
        decision. Raises InspectionError for frames that cannot be scored.
        """
        if part in self.window or part in self.quarantine or any(p.part == part for p in self._pending):
            raise InspectionError("duplicate", f"part {part!r} is already in line {self.name!r}")
        return self.inspect_features(part, seq, *self.extractor.extract(rgb, xyz))

    def inspect_features(self, part: str, seq: int, features: PartFeatures, pre: Preprocessed | None = None,
                         latency: dict | None = None) -> list[Decision]:
        """`inspect` for a part whose features are already extracted (replay of cached features)."""
        latency = dict(latency or {})
        if features.modalities != self.settings.modalities:
            return [self._decide_partial(part, seq, features, pre, latency)]
        t = time.perf_counter()
        self._evicted(self.window.add(part, features, reference=not self.settings.guard))
        latency["window"] = (time.perf_counter() - t) * 1e3
        self._pending.append(_Pending(part, seq, latency, pre))
        ready = []
        while len(self._pending) > self.settings.decision_delay:
            ready.append(self._decide(self._pending.pop(0)))
        return ready

    def flush(self) -> list[Decision]:
        """Decide every pending part now (shutdown, line switch)."""
        ready = []
        while self._pending:
            ready.append(self._decide(self._pending.pop(0)))
        return ready

    # -- decisions ----------------------------------------------------------

    def _decide(self, pending: _Pending) -> Decision:
        s = self.settings
        refs = self._references_of(pending.part)
        if len(refs) >= s.min_window and (self._provisional or any(n not in self._scored for n in refs)):
            self._rejudge()
            refs = self._references_of(pending.part)
        decision = Decision(pending.part, pending.seq, "inconclusive", modalities=list(s.modalities),
                            window=len(refs), latency_ms=pending.latency, preprocessed=pending.preprocessed)
        if len(refs) < s.min_window:
            decision.error = {"code": "warming_up",
                              "message": f"window holds {len(refs)} of the {s.min_window} references scoring needs"}
            self._evicted(self.window.admit(pending.part))
            self._provisional[pending.part] = pending.seq
            decision.reference = True
            return decision
        t = time.perf_counter()
        maps, mine = self._score_member(pending.part)
        anomaly_map = self._fuse(maps, mine, self._fusion_scale([mine]))
        decision.latency_ms["score"] = (time.perf_counter() - t) * 1e3
        self._conclude(decision, refs, "fused", mine, anomaly_map)
        self._settle(decision, mine)
        return decision

    def _references_of(self, part: str) -> list[str]:
        return [n for n in self.window.reference_ids if n != part]

    def _decide_partial(self, part: str, seq: int, features: PartFeatures, pre: Preprocessed, latency: dict) -> Decision:
        (modality,) = features.modalities
        names = [n for n in self.window.reference_ids if n in self._scored]
        decision = Decision(part, seq, "inconclusive", modalities=[modality], window=len(names),
                            latency_ms=latency, preprocessed=pre)
        if not self.settings.allow_partial:
            decision.error = {"code": "missing_modality",
                              "message": f"line {self.name!r} needs {'+'.join(self.settings.modalities)}, got {modality} only"}
            return decision
        if len(names) < self.settings.min_window:
            decision.error = {"code": "warming_up",
                              "message": f"window holds {len(names)} scored references of the {self.settings.min_window} needed"}
            return decision
        t = time.perf_counter()
        scores = {modality: self.window.query(features, modality)}
        maps = self._maps(features, scores)
        mine = self._summarise(features, scores, maps)
        decision.latency_ms["score"] = (time.perf_counter() - t) * 1e3
        return self._conclude(decision, names, modality, mine, maps[modality], unlabeled_only=True)

    def _conclude(self, decision: Decision, names: list[str], key: str, mine: _Scored, anomaly_map: np.ndarray,
                  unlabeled_only: bool = False) -> Decision:
        """RsCon over the references ``names`` and this part; threshold fitted on the references; verdict, regions."""
        t = time.perf_counter()
        references = [self._scored[n] for n in names]
        final = self._rescored(references + [mine], key)
        # RsCon borrows from the most similar samples: the references' values for the threshold
        # come from the references alone, so the part being judged cannot move its own threshold
        settled = self._rescored(references, key)
        decision.latency_ms["rescore"] = (time.perf_counter() - t) * 1e3
        decision.score = float(final[-1])
        decision.reference_level = float(np.median(settled))
        decision.anomaly_map = anomaly_map
        try:
            value, source = self.threshold.decide(settled, unlabeled_only=unlabeled_only)
        except ValueError as exc:
            decision.error = {"code": "no_threshold", "message": str(exc)}
            return decision
        decision.threshold, decision.threshold_source = value, source
        decision.verdict = verdict_for(decision.score, value)
        if decision.verdict == "ng":
            decision.regions = regions_above(anomaly_map, min(value, float(anomaly_map.max())))
        return decision

    def _rescored(self, pool: list[_Scored], key: str) -> np.ndarray:
        """(len(pool),) RsCon values of ``pool``'s image scores, on the raw score scale."""
        raw = np.array([p.image[key] for p in pool], dtype=np.float32)
        salient = np.stack([p.salient[key] for p in pool])
        lo, hi = float(raw.min()), float(raw.max())
        return lo + (hi - lo) * rescore(raw, salient, self.settings.k_list) if self.settings.rescores(key) else raw

    def _settle(self, decision: Decision, mine: _Scored) -> None:
        """Membership after a full part's verdict, the threshold's history, the alerts it raises."""
        part = decision.part
        if not self.settings.guard:  # it joined on arrival
            self._scored[part] = mine
            decision.reference = True
        elif decision.verdict == "ok":
            self._evicted(self.window.admit(part))
            self._scored[part] = mine
            decision.reference = True
        else:
            if decision.verdict == "ng":
                self._to_quarantine(part, decision.seq, decision.score)
            self.window.remove(part)
        if decision.threshold is not None:
            self.threshold_history.append([decision.seq, decision.threshold])
        centre = region_centre(decision.regions[0], self.settings.image_size) if decision.regions else None
        decision.alerts = self.alerts.observe(part, decision.verdict, centre, decision.reference_level)

    def _rejudge(self) -> None:
        """The window just got warm: score the references that have no score yet; with the
        guard, the provisional ones (taken while warming up) that would be ng leave."""
        refs = self.window.reference_ids
        fresh = [(name, *self._score_member(name)) for name in refs
                 if name not in self._scored or name in self._provisional]
        for name, _, summary in fresh:
            self._scored[name] = summary
        scale = self._fusion_scale()
        for _, maps, summary in fresh:  # fused once every fresh reference's own levels count
            self._fuse(maps, summary, scale)
        if self.settings.guard and self._provisional:
            final = self._rescored([self._scored[n] for n in refs], "fused")
            try:
                value, _ = self.threshold.decide(final)
            except ValueError:
                value = None  # no threshold yet: nothing can be judged ng
            pinned = set(self.window.pinned)
            for name, score in zip(refs, final):
                if value is not None and name in self._provisional and name not in pinned and score > value:
                    self._to_quarantine(name, self._provisional[name], float(score))
                    self._drop(name)
        self._provisional = {}

    def _to_quarantine(self, part: str, seq: int, score: float | None) -> None:
        """Keep an ng part's features (bounded: the oldest go first) for an operator's feedback."""
        if self.settings.quarantine == 0:
            return
        self.quarantine[part] = Quarantined(seq, self.window.part(part), score)
        while len(self.quarantine) > self.settings.quarantine:
            self.quarantine.popitem(last=False)

    def _drop(self, part: str) -> None:
        self.window.remove(part)
        self._evicted(part)

    def _evicted(self, part: str | None) -> None:
        """Forget what was kept about a part that left the window."""
        if part is not None:
            self._scored.pop(part, None)
            self._provisional.pop(part, None)

    def _score_member(self, name: str) -> tuple[dict[str, np.ndarray], _Scored]:
        """A member's per-modality maps and summary (its fused image score comes with ``_fuse``)."""
        features = self.window.part(name)
        scores = self.window.scores(name)
        maps = self._maps(features, scores)
        summary = self._summarise(features, scores, maps)
        summary.salient["fused"] = np.concatenate(list(summary.salient.values()))  # every stream, in scores' order
        return maps, summary

    def _fusion_scale(self, extra: list[_Scored] = ()) -> dict[str, tuple[float, float]] | None:
        """The window's fusion scale from its scored references and ``extra`` (see maps.fusion_scale);
        None with one modality."""
        if len(self.settings.modalities) == 1:
            return None
        members = [self._scored[n] for n in self.window.reference_ids if n in self._scored] + list(extra)
        streams = tuple(members[0].floor)  # pool.part_scores' keys
        return fusion_scale(self.settings.fusion, {m: [sc.floor[m] for sc in members] for m in streams},
                            {m: [sc.image[m] for sc in members] for m in streams})

    def _fuse(self, maps: dict[str, np.ndarray], summary: _Scored, scale) -> np.ndarray:
        """The fused map on ``scale``; sets the summary's fused image score (``maps.fuse``)."""
        fused, summary.image["fused"] = fuse(maps, scale, self.settings.fused_score)
        return fused

    def _maps(self, features: PartFeatures, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return part_maps(features, scores, self.settings.map_sigma)

    @staticmethod
    def _summarise(features: PartFeatures, scores: dict, maps: dict) -> _Scored:
        salient = {m: salient_feature(features, m, s) for m, s in scores.items()}
        return _Scored({m: float(v.max()) for m, v in maps.items()}, salient,
                       {m: float(np.median(s)) for m, s in scores.items()})

    # -- operator feedback --------------------------------------------------

    def label(self, part: str, label: str) -> bool:
        """An operator's word on a decided part; returns whether it is a reference now.

        "good": a quarantined part joins the references (a provisional one is
        confirmed); "defect": a reference leaves them, a quarantined part stays
        out for good (``accept_shift`` leaves it). Raises ValueError for an
        unknown label or a part that is neither a reference nor quarantined.
        """
        if label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        if self.window.is_reference(part):
            if label == "defect":
                self._drop(part)
                return False
            self._provisional.pop(part, None)
            return True
        if part in self.quarantine:
            if label == "good":
                self._join(part)
                return True
            self.quarantine[part].label = "defect"
            return False
        raise ValueError(f"part {part!r} is neither a reference nor quarantined on line {self.name!r}"
                         + (" (still waiting for its verdict)" if part in self.window else ""))

    def accept_shift(self) -> list[str]:
        """The operator declares the quarantined look normal: those parts (but the ones
        labelled defect) become references, and drift settles anew. Returns them."""
        parts = [p for p, q in self.quarantine.items() if q.label != "defect"]
        for part in parts:
            self._join(part)
        self.alerts.resettle()
        return parts

    def pin(self, part: str) -> list[str]:
        """Keep a part among the references for good (a quarantined one joins first); returns the pinned parts."""
        if part in self.quarantine:
            self.label(part, "good")
        if not self.window.is_reference(part):
            raise ValueError(f"part {part!r} is not a reference of line {self.name!r}: only references can be pinned")
        self.window.pin(part)
        self._provisional.pop(part, None)
        return self.window.pinned

    def ack_alert(self, alert_id: str) -> Alert:
        try:
            return self.alerts.ack(alert_id)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None

    def _join(self, part: str) -> None:
        """A quarantined part becomes a reference (scored against the others for RsCon)."""
        q = self.quarantine.pop(part)
        self._evicted(self.window.add(part, q.features))
        if len(self._references_of(part)) >= self.settings.min_window:
            maps, summary = self._score_member(part)
            self._fuse(maps, summary, self._fusion_scale([summary]))
            self._scored[part] = summary

    # -- persistence --------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to resume warm: the window, references' summaries, pending parts,
        the quarantine, the threshold's history and the alerts."""
        out = self.window.state()
        meta = {
            "scored": {n: {"image": sc.image, "floor": sc.floor} for n, sc in self._scored.items()},
            "pending": [{"part": p.part, "seq": p.seq} for p in self._pending],
            "provisional": self._provisional,
            "quarantine": [{"part": n, "seq": q.seq, "score": q.score, "label": q.label}
                           for n, q in self.quarantine.items()],
            "threshold": self.threshold.state(),
            "threshold_history": list(self.threshold_history),
            "alerts": self.alerts.state(),
            "profile": self.profile_digest,
        }
        for i, sc in enumerate(self._scored.values()):
            for key, vec in sc.salient.items():
                out[f"salient{i}_{key}"] = vec
        for i, q in enumerate(self.quarantine.values()):
            out.update(q.features.to_arrays(f"quarantine{i}_"))
        out["inspector_meta"] = np.array(json.dumps(meta))
        return out

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        meta = json.loads(str(state["inspector_meta"]))
        if meta["profile"] != self.profile_digest:
            raise ValueError(f"saved state of line {self.name!r} was made with profile {meta['profile']}, "
                             f"not the current {self.profile_digest}: reset the line to start cold")
        self.window = LineWindow.from_state(state, self.settings.device)
        self._scored = {}
        for i, (n, sc) in enumerate(meta["scored"].items()):
            self._scored[n] = _Scored(sc["image"], {k: state[f"salient{i}_{k}"] for k in sc["image"]}, sc["floor"])
        self._pending = [_Pending(p["part"], p["seq"], {}, None) for p in meta["pending"]]
        self._provisional = dict(meta["provisional"])
        self.quarantine = OrderedDict(
            (q["part"], Quarantined(q["seq"], PartFeatures.from_arrays(state, f"quarantine{i}_"), q["score"], q["label"]))
            for i, q in enumerate(meta["quarantine"]))
        self.threshold.load_state(meta["threshold"])
        self.threshold_history = deque(meta["threshold_history"], maxlen=HISTORY)
        self.alerts.load_state(meta["alerts"])


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
