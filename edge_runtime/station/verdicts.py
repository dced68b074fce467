"""Where every verdict of the station is made and leaves: built, logged, then published.

A verdict comes from one of two places: a line's inspector decided the part
(``from_decision``), or the station answered it without scoring (``refusal``:
a bad frame, an unknown line, a missing frame, overload). Either way it is a
``Verdict`` (checked once, when built) and goes through ``VerdictSink.emit``:
logged first, then published. Logging first means a crash can hide a verdict
from subscribers (they ask the control socket for it) but never produce two
verdicts for a part. One lock keeps the log order (``vseq``) and the publish
order the same. Listeners (the HTTP server's observer) see each published
verdict after that, outside the lock; a failing listener is logged and never
costs a verdict.

When the log cannot be written (a full disk), the part is still answered: an
``error`` verdict with code ``storage`` is published (the decision it replaces
is named in its message), the station is degraded (``storage.verdicts``), and
the verdict waits in memory to be logged as soon as the store writes again, so
the part still has exactly one verdict. What still waits at shutdown is a
failed save (``VerdictSink.unlogged``).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from typing import Callable

from edge_runtime.station.health import Health
from edge_runtime.station.metrics import Metrics
from edge_runtime.station.store import StorageError, Store
from edge_runtime.stream.protocol import AlertMessage, Verdict, encode_map
from edge_runtime.stream.publisher import Publisher

log = logging.getLogger(__name__)


def from_decision(line: str, decision, model: str | None, profile: str | None,
                  stream_latency_ms: dict[str, float], with_map: bool) -> tuple[Verdict, bytes | None]:
    """The verdict (+ map PNG) of an inspection ``Decision``.

    stream_latency_ms: the station's own stages (decode, pair_wait, queue, total)
    merged over the decision's stages.
    """
    png = scale = shape = None
    if with_map and decision.anomaly_map is not None:
        png, scale = encode_map(decision.anomaly_map)
        shape = tuple(decision.anomaly_map.shape)
    error = None
    if decision.error is not None:
        error = {"code": str(decision.error.get("code")), "message": str(decision.error.get("message"))}
    verdict = Verdict(
        line=line, part=decision.part, seq=int(decision.seq), verdict=decision.verdict,
        score=None if decision.score is None else float(decision.score),
        threshold=None if decision.threshold is None else float(decision.threshold),
        threshold_source=decision.threshold_source, modalities=tuple(decision.modalities),
        window=int(decision.window),
        latency_ms={**{k: float(v) for k, v in decision.latency_ms.items()}, **stream_latency_ms},
        model=model, profile=profile, regions=tuple(tuple(float(v) for v in r) for r in decision.regions),
        error=error, map_scale=None if scale is None else tuple(scale), map_shape=shape,
        reference=bool(decision.reference))
    return verdict, png


def alert_message(alert) -> AlertMessage:
    """The wire message of an inspection ``Alert``."""
    return AlertMessage(line=alert.line, id=alert.id, kind=alert.kind, parts=tuple(alert.parts),
                        message=alert.message, ts=float(alert.ts))


def refusal(line: str, part: str, seq: int | None, code: str, message: str, verdict: str = "error",
            model: str | None = None, profile: str | None = None, latency_ms: dict | None = None,
            modalities: list[str] | None = None) -> Verdict:
    """A verdict the station decides without scoring (bad frame, unknown line, overload, timeout)."""
    return Verdict(line=line, part=part, seq=-1 if seq is None else int(seq), verdict=verdict,
                   modalities=tuple(modalities or ()), latency_ms=dict(latency_ms or {}), model=model,
                   profile=profile, error={"code": code, "message": message})


def not_logged(verdict: Verdict, exc: Exception) -> Verdict:
    """The ``storage`` error verdict that replaces ``verdict`` when it cannot be logged."""
    decided = f"decided {verdict.verdict}" if verdict.error is None else verdict.error["message"]
    return dataclasses.replace(verdict, verdict="error", error={
        "code": "storage", "message": f"{decided}; verdict not logged: {exc}"})


class VerdictSink:
    """Log + publish + count, for every thread that decides parts.

    unlogged: (line, part) -> (verdict, origin, drop_frames) published while the
    store could not write, oldest first; logged by the next ``emit`` that finds the
    store writable (or ``log_unlogged``).
    """

    _UNLOGGED_MAX = 100_000  # verdicts kept for logging later; beyond, the oldest is forgotten

    def __init__(self, store: Store, publisher: Publisher, metrics: Metrics, health: Health):
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self.health = health
        self.unlogged: OrderedDict[tuple[str, str], tuple[Verdict, str, bool]] = OrderedDict()
        self._lock = threading.Lock()
        # listener(logged verdict, map PNG or None, the part's Preprocessed frames or None)
        self.listeners: list[Callable[[Verdict, bytes | None, object], None]] = []

    def emit(self, verdict: Verdict, map_png: bytes | None, origin: str, drop_frames: bool,
             preprocessed=None) -> bool:
        """Log and publish one verdict; False (nothing sent) when the part already has one.
        A verdict that cannot be logged is published as a ``storage`` error.
        preprocessed: the part as the encoders saw it, for listeners."""
        line_metrics = self.metrics.line(verdict.line)
        with self._lock:
            key = (verdict.line, verdict.part)
            try:
                if self.unlogged:
                    self._log_unlogged()
                logged = None if key in self.unlogged else self.store.log_verdict(
                    verdict, origin, drop_frames, to_gate=self.publisher.reject_endpoint is not None)
            except StorageError as exc:
                self.health.set("storage.verdicts", str(exc))
                logged, map_png = not_logged(verdict, exc), None
                self.unlogged[key] = (logged, origin, drop_frames)
                while len(self.unlogged) > self._UNLOGGED_MAX:
                    lost = self.unlogged.popitem(last=False)[0]
                    log.error("line %s part %s: verdict never logged (%d wait already)", *lost, self._UNLOGGED_MAX)
                line_metrics.count("verdicts_not_logged")
            if logged is None:
                line_metrics.count("duplicate_verdicts_suppressed")
                return False
            self.publisher.publish(logged, map_png)
        line_metrics.verdict(logged.verdict, logged.latency_ms.get("total"))
        for listener in self.listeners:
            try:
                listener(logged, map_png, preprocessed)
            except Exception:  # observing must not stop a line
                log.exception("verdict listener %r failed on part %s", listener, logged.part)
        if logged.verdict == "error":
            log.warning("line %s part %s: error %s: %s", logged.line, logged.part,
                        logged.error["code"], logged.error["message"])
        return True

    def log_unlogged(self) -> int:
        """Log what was published while the store could not write; how many still wait."""
        with self._lock:
            try:
                self._log_unlogged()
            except StorageError as exc:
                self.health.set("storage.verdicts", str(exc))
            return len(self.unlogged)

    def _log_unlogged(self) -> None:
        """Oldest first; raises StorageError at the first that still fails (lock held)."""
        while self.unlogged:
            key, (verdict, origin, drop_frames) = next(iter(self.unlogged.items()))
            self.store.log_verdict(verdict, origin, drop_frames)
            del self.unlogged[key]
        self.health.clear("storage.verdicts")

    def alert(self, alert) -> None:
        """Publish an inspection ``Alert`` under ``alert.<line>`` (its line persists it with its window)."""
        self.publisher.publish_alert(alert_message(alert))
        self.metrics.line(alert.line).count(f"alerts_{alert.kind}")
        log.warning("line %s: alert %s (%s): %s", alert.line, alert.id, alert.kind, alert.message)

    def refuse(self, line: str, part: str, seq: int | None, code: str, message: str, **fields) -> bool:
        """A verdict decided by the station itself (the part never reached its window);
        the part's stored frames go with it."""
        return self.emit(refusal(line, part, seq, code, message, **fields), None, origin="station", drop_frames=True)
