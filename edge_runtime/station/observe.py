"""What the station shows about itself: Prometheus metrics, the live verdict feed, the last ng parts.

``Observer.on_verdict`` listens to the ``VerdictSink``: it runs for every
published verdict, in the thread that decided it, so it only records (no
encoding, no I/O); an ng part's picture is rendered when someone asks for it.
Counters the station already keeps (verdicts, frames, drops) and its gauges
(window fill, queues, threshold, alerts) are read from ``Station.status()`` at
scrape time, so each number has one source; what only the verdicts themselves
tell (per-stage latencies, error codes) is recorded here.

Memory and label sets are bounded: per line ``FEED_LENGTH`` verdicts,
``NG_PICTURES`` ng parts (their preprocessed frames and map PNG) and
``THRESHOLD_HISTORY`` threshold changes; verdicts for lines the station does not
serve (any name a sender makes up) are recorded together as line ``UNSERVED``.
"""
from __future__ import annotations

import threading
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from edge_runtime.evaluate.overlay import overlay_image
from edge_runtime.stream.protocol import Verdict, decode_map

FEED_LENGTH = 100
NG_PICTURES = 6
THRESHOLD_HISTORY = 500
VERDICTS = ("ok", "ng", "inconclusive", "error")
UNSERVED = "_unserved"  # no line name starts with "_" (protocol NAME)
# Per-stage latencies span sub-millisecond decoding to multi-second warm-up scoring.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Line counters of frames or parts the station did not score, by reason (refused frames are
# not here: they are answered with error verdicts, counted by code).
_DROPS = {"dropped_overload": "overload", "late_frames": "late_frame", "duplicate_frames": "duplicate_frame",
          "unused_frames": "unused_frame"}


def part_picture(preprocessed) -> np.ndarray | None:
    """What a person recognises of a part: its rgb (S, S, 3) uint8 as the encoder saw it,
    else its cloud's height as grey (no measurement = black); None without either."""
    if preprocessed is None:
        return None
    if preprocessed.rgb is not None:
        return preprocessed.rgb
    if preprocessed.xyz is None:
        return None
    z = preprocessed.xyz[..., 2]
    valid = np.isfinite(preprocessed.xyz).all(axis=-1) & preprocessed.xyz.any(axis=-1)
    grey = np.zeros(z.shape, np.uint8)
    if valid.any():
        lo, hi = float(z[valid].min()), float(z[valid].max())
        grey[valid] = np.rint(48 + 207 * (z[valid] - lo) / (hi - lo if hi > lo else 1.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def feed_entry(header: dict) -> dict:
    """What the dashboard shows of a verdict's wire header (JSON-ready); fields other
    issues add (``reference``) show when present."""
    error = header.get("error") or {}
    return {
        "line": header["line"], "part": header["part"], "seq": header["seq"], "vseq": header.get("vseq"),
        "verdict": header["verdict"], "score": header.get("score"), "threshold": header.get("threshold"),
        "threshold_source": header.get("threshold_source"), "window": header.get("window"),
        "latency_ms": header["latency_ms"].get("total"), "ts": header["ts"], "code": error.get("code"),
        "message": error.get("message"), "regions": len(header.get("regions") or ()),
        "reference": header.get("reference"), "modalities": list(header.get("modalities") or ()),
        "picture": False,
    }


@dataclass
class _NgPart:
    entry: dict
    preprocessed: object
    map_png: bytes | None
    map_scale: list[float] | None
    png: bytes | None = None  # rendered on first request


class Observer:
    """Records verdicts for /metrics and the dashboard; thread-safe.

    served(line) -> bool: whether the station serves ``line`` now.
    """

    def __init__(self, served: Callable[[str], bool]):
        self._served = served
        self.registry = CollectorRegistry()
        self._latency = Histogram("musc_edge_stage_latency_seconds",
                                  "Time a part spent in each stage (total: first frame in to verdict out)",
                                  ["line", "stage"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self._codes = Counter("musc_edge_verdict_codes", "Verdicts carrying an error code, by line, verdict and code",
                              ["line", "verdict", "code"], registry=self.registry)
        self._lock = threading.Lock()
        self._feeds: dict[str, deque] = defaultdict(lambda: deque(maxlen=FEED_LENGTH))
        self._ng: dict[str, deque] = defaultdict(lambda: deque(maxlen=NG_PICTURES))
        self._thresholds: dict[str, deque] = defaultdict(lambda: deque(maxlen=THRESHOLD_HISTORY))
        self._subscribers: list[Callable[[str, dict], None]] = []

    def watch(self, status: Callable[[], dict | None]) -> None:
        """Export ``status()`` (None while the station is not serving) at every scrape."""
        self.registry.register(_StatusCollector(status))

    def subscribe(self, fn: Callable[[str, dict], None]) -> None:
        """fn(event, data) for every verdict from now on (called in the deciding thread)."""
        with self._lock:
            self._subscribers.append(fn)

    def unsubscribe(self, fn: Callable[[str, dict], None]) -> None:
        with self._lock:
            self._subscribers.remove(fn)

    def on_verdict(self, verdict: Verdict, map_png: bytes | None, preprocessed=None) -> None:
        """The VerdictSink listener. preprocessed: the part's ``Preprocessed`` frames or None."""
        header = verdict.to_wire()
        line = header["line"] if self._served(header["line"]) else UNSERVED
        for stage, ms in header["latency_ms"].items():
            self._latency.labels(line, stage).observe(ms / 1e3)
        if header.get("error"):
            self._codes.labels(line, header["verdict"], header["error"]["code"]).inc()
        entry = {**feed_entry(header), "line": line}  # an unserved line's name is in the error message
        with self._lock:
            self._feeds[line].append(entry)
            history = self._thresholds[line]
            point = [entry["ts"], entry["threshold"], entry["threshold_source"]]
            if entry["threshold"] is not None and (not history or history[-1][1:] != point[1:]):
                history.append(point)
            if entry["verdict"] == "ng" and part_picture(preprocessed) is not None:
                entry["picture"] = True
                self._ng[line].append(_NgPart(entry, preprocessed, map_png, header.get("map_scale")))
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn("verdict", entry)

    def lines(self) -> dict[str, dict]:
        """Per line seen so far: "feed" (oldest first), "ng" (entries with a picture), "thresholds"
        ([ts, value, source] changes)."""
        with self._lock:
            return {line: {"feed": list(feed), "ng": [p.entry for p in self._ng[line]],
                           "thresholds": list(self._thresholds[line])} for line, feed in self._feeds.items()}

    def picture(self, line: str, part: str) -> bytes | None:
        """PNG of a recent ng part: its image and the anomaly map over it, with the map's scale;
        None when the part is not among the line's last ng parts."""
        with self._lock:
            found = next((p for p in self._ng.get(line, ()) if p.entry["part"] == part), None)
        if found is None:
            return None
        if found.png is None:
            image = part_picture(found.preprocessed)
            if found.map_png is not None:
                amap = decode_map(found.map_png, found.map_scale)
                if amap.shape != image.shape[:2]:
                    amap = cv2.resize(amap, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
                bgr = overlay_image(image, amap, None, *found.map_scale)
            else:
                bgr = np.ascontiguousarray(image[..., ::-1])
            ok, buf = cv2.imencode(".png", bgr)
            if not ok:
                raise ValueError(f"OpenCV could not encode the picture of part {part}")
            found.png = buf.tobytes()
        return found.png


class _StatusCollector:
    """Prometheus families from one ``Station.status()`` per scrape."""

    def __init__(self, status: Callable[[], dict | None]):
        self._status = status

    def describe(self):
        return []  # families depend on the lines served; nothing to check at registration

    def collect(self):
        status = self._status()
        if status is None:
            return
        lines = status["lines"]
        verdicts = CounterMetricFamily("musc_edge_verdicts", "Verdicts published, by line and verdict",
                                       labels=["line", "verdict"])
        frames = CounterMetricFamily("musc_edge_frames", "Sensor frames received, by line", labels=["line"])
        drops = CounterMetricFamily("musc_edge_dropped", "Frames and parts not scored, by line and reason",
                                    labels=["line", "reason"])
        gauges = {key: GaugeMetricFamily(f"musc_edge_{name}", doc, labels=["line"]) for key, name, doc in (
            ("window", "window_parts", "Parts in the line's window"),
            ("capacity", "window_capacity", "Parts the line's window holds when full (N)"),
            ("min_window", "window_min_parts", "Parts the window needs before verdicts are ok/ng"),
            ("references", "window_references", "Parts in the window that serve as references"),
            ("queue", "queue_parts", "Parts waiting for scoring"),
            ("queue_capacity", "queue_capacity", "Parts the line's queue holds"),
            ("queue_bytes", "queue_bytes", "Bytes of frames waiting for scoring"),
            ("awaiting_frames", "awaiting_frames", "Parts waiting for their other sensor's frame"),
            ("held", "held_parts", "Parts the intake holds because the line's queue is full (block lines)"),
            ("threshold", "threshold", "Decision threshold (ng when score > threshold)"),
            ("parts_per_s", "parts_per_second", "Verdicts per second over the last 30 s"),
        )}
        alerts = GaugeMetricFamily("musc_edge_alerts_active", "Alerts not yet acknowledged", labels=["line"])
        for line, s in lines.items():
            counts = s["counts"]
            for verdict in VERDICTS:
                verdicts.add_metric([line, verdict], counts.get(f"verdict_{verdict}", 0))
            frames.add_metric([line], counts.get("frames", 0))
            for key, value in counts.items():
                if key in _DROPS:
                    drops.add_metric([line, _DROPS[key]], value)
            for key, family in gauges.items():
                if s.get(key) is not None:
                    family.add_metric([line], float(s[key]))
            if "alerts" in s:
                alerts.add_metric([line], len(s["alerts"]))
        yield from (verdicts, frames, drops, *gauges.values(), alerts)
        station = status["station"]
        malformed = CounterMetricFamily("musc_edge_malformed", "Messages refused before naming a line, by code",
                                        labels=["code"])
        for key, value in station["counts"].items():
            if key.startswith("malformed_"):
                malformed.add_metric([key.removeprefix("malformed_")], value)
        yield malformed
        yield CounterMetricFamily("musc_edge_published", "Verdict messages sent on the PUB socket",
                                  value=station["published"])
        yield GaugeMetricFamily("musc_edge_publish_queue", "Verdicts waiting for the publisher",
                                value=station["publish_queue"])
        yield GaugeMetricFamily("musc_edge_reject_backlog", "Verdicts the reject gate has not taken yet",
                                value=station["reject_backlog"])
        yield GaugeMetricFamily("musc_edge_uptime_seconds", "Seconds since the station started",
                                value=station["uptime_s"])
        if "degraded" in station:
            yield GaugeMetricFamily("musc_edge_degraded", "1 while the station reports itself degraded",
                                    value=float(bool(station["degraded"])))
