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
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from edge_runtime.station.metrics import Metrics
from edge_runtime.station.store import Store
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


class VerdictSink:
    """Log + publish + count, for every thread that decides parts."""

    def __init__(self, store: Store, publisher: Publisher, metrics: Metrics):
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self._lock = threading.Lock()
        # listener(logged verdict, map PNG or None, the part's Preprocessed frames or None)
        self.listeners: list[Callable[[Verdict, bytes | None, object], None]] = []

    def emit(self, verdict: Verdict, map_png: bytes | None, origin: str, drop_frames: bool,
             preprocessed=None) -> bool:
        """Log and publish one verdict; False (nothing sent) when the part already has one.
        preprocessed: the part as the encoders saw it, for listeners."""
        line_metrics = self.metrics.line(verdict.line)
        with self._lock:
            logged = self.store.log_verdict(verdict, origin, drop_frames)
            if logged is None:
                line_metrics.count("duplicate_verdicts_suppressed")
                return False
            self.publisher.publish(logged, map_png)
        line_metrics.verdict(verdict.verdict, verdict.latency_ms.get("total"))
        for listener in self.listeners:
            try:
                listener(logged, map_png, preprocessed)
            except Exception:  # observing must not stop a line
                log.exception("verdict listener %r failed on part %s", listener, verdict.part)
        if verdict.verdict == "error":
            log.warning("line %s part %s: error %s: %s", verdict.line, verdict.part,
                        verdict.error["code"], verdict.error["message"])
        return True

    def alert(self, alert) -> None:
        """Publish an inspection ``Alert`` under ``alert.<line>`` (its line persists it with its window)."""
        self.publisher.publish_alert(alert_message(alert))
        self.metrics.line(alert.line).count(f"alerts_{alert.kind}")
        log.warning("line %s: alert %s (%s): %s", alert.line, alert.id, alert.kind, alert.message)

    def refuse(self, line: str, part: str, seq: int | None, code: str, message: str, **fields) -> bool:
        """A verdict decided by the station itself (the part never reached its window);
        the part's stored frames go with it."""
        return self.emit(refusal(line, part, seq, code, message, **fields), None, origin="station", drop_frames=True)
