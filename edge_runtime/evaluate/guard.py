"""What a replayed line's verdicts say: rejects, misses, the threshold over time, alerts.

`guard_metrics` measures a replay the way a plant would: recall of the ``ng``
verdicts on defective parts, false ``ng`` on good parts, and for a line with a
systematic burst the recall on the burst, when the first alert came, and the
threshold before, during and after it. `timeline_png` draws it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR: good parts, random defects, the burst's parts, the threshold, alerts
_COLOURS = {"good": (60, 160, 60), "defect": (40, 40, 220), "burst": (0, 140, 255),
            "threshold": (0, 0, 0), "alert": (200, 0, 200)}


@dataclass
class PartLog:
    """One replayed part: its verdict, score, threshold, whether it joined the references, alerts raised."""

    verdict: str
    score: float | None
    threshold: float | None
    reference: bool
    alerts: list[str] = field(default_factory=list)  # kinds


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def guard_metrics(logs: list[PartLog], labels: np.ndarray, systematic: np.ndarray) -> dict:
    """logs: per part in arrival order; labels (N,) 0 good / 1 defective; systematic (N,) bool (the burst)."""
    decided = np.array([g.verdict in ("ok", "ng") for g in logs])
    ng = np.array([g.verdict == "ng" for g in logs])

    def rate(mask: np.ndarray) -> float | None:
        sel = mask & decided
        return float(ng[sel].mean()) if sel.any() else None

    out = {"ng_recall": rate(labels == 1), "false_ng": rate(labels == 0),
           "inconclusive": int((~decided).sum()), "references_joined": int(sum(g.reference for g in logs)),
           "alerts": [[i, kind] for i, g in enumerate(logs) for kind in g.alerts]}
    if systematic.any():
        burst = np.flatnonzero(systematic)
        start, end = int(burst[0]), int(burst[-1])
        thresholds = [g.threshold for g in logs]
        before = [t for t in thresholds[max(0, start - 10):start] if t is not None]
        during = [t for t in thresholds[start:end + 1] if t is not None]
        after = [t for t in thresholds[end + 1:] if t is not None]
        first = next((i for i, g in enumerate(logs) if g.alerts and i >= start), None)
        out["burst"] = {"start": start, "length": len(burst), "recall": rate(systematic),
                        "first_alert_delay": None if first is None else first - start,
                        "threshold_before": _median(before), "threshold_during_max": max(during, default=None),
                        "threshold_after": _median(after),
                        "random_defect_recall_after": rate((labels == 1) & ~systematic
                                                           & (np.arange(len(logs)) > end))}
    return out


def timeline_png(path: str | Path, logs: list[PartLog], labels: np.ndarray, systematic: np.ndarray,
                 title: str, height: int = 320) -> Path:
    """Scores (dots: green good, red defect, orange burst; hollow = not a reference), the
    threshold (line) and alerts (purple ticks) over the arrival order, as a PNG."""
    n = len(logs)
    step = max(4, min(12, 1600 // max(n, 1)))
    left, top, bottom = 50, 26, 20
    width = left + step * n + 20
    image = np.full((height, width, 3), 255, np.uint8)
    values = [v for g in logs for v in (g.score, g.threshold) if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    y = lambda v: int(round(height - bottom - (v - lo) / (hi - lo) * (height - top - bottom)))  # noqa: E731
    x = lambda i: left + step * i + step // 2  # noqa: E731
    if systematic.any():
        burst = np.flatnonzero(systematic)
        cv2.rectangle(image, (x(burst[0]) - step // 2, top), (x(burst[-1]) + step // 2, height - bottom),
                      (225, 240, 255), -1)
    line = [(x(i), y(g.threshold)) for i, g in enumerate(logs) if g.threshold is not None]
    if len(line) > 1:
        cv2.polylines(image, [np.array(line, np.int32)], False, _COLOURS["threshold"], 1, cv2.LINE_AA)
    for i, g in enumerate(logs):
        for _ in g.alerts:
            cv2.line(image, (x(i), top), (x(i), top + 10), _COLOURS["alert"], 2)
        if g.score is None:
            continue
        kind = "burst" if systematic[i] else "defect" if labels[i] else "good"
        cv2.circle(image, (x(i), y(g.score)), max(2, step // 3), _COLOURS[kind], -1 if g.reference else 1,
                   cv2.LINE_AA)
    for v in (lo, hi):
        cv2.putText(image, f"{v:.2f}", (2, y(v) + 4), _FONT, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, title, (left, 16), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")
    return path
