"""Where every verdict leaves the station: logged first, then published.

Logging before publishing means a crash can hide a verdict from subscribers
(they ask the control socket for it) but never produce two verdicts for a part.
One lock keeps the log order (``vseq``) and the publish order the same.
Listeners (the HTTP server's observer) see each published verdict after that,
outside the lock; a failing listener is logged and never costs a verdict.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from edge_runtime.station.metrics import Metrics
from edge_runtime.station.store import Store
from edge_runtime.stream.protocol import check_verdict_header
from edge_runtime.stream.publisher import Publisher, station_header

log = logging.getLogger(__name__)


class VerdictSink:
    """Log + publish + count, for every thread that decides parts."""

    def __init__(self, store: Store, publisher: Publisher, metrics: Metrics):
        self.store = store
        self.publisher = publisher
        self.metrics = metrics
        self._lock = threading.Lock()
        # listener(logged header, map PNG or None, the part's Preprocessed frames or None)
        self.listeners: list[Callable[[dict, bytes | None, object], None]] = []

    def emit(self, header: dict, map_png: bytes | None, origin: str, drop_frames: bool,
             preprocessed=None) -> bool:
        """Log and publish one verdict; False (nothing sent) when the part already has one.
        preprocessed: the part as the encoders saw it, for listeners."""
        check_verdict_header(header)
        line_metrics = self.metrics.line(header["line"])
        with self._lock:
            logged = self.store.log_verdict(header, origin, drop_frames)
            if logged is None:
                line_metrics.count("duplicate_verdicts_suppressed")
                return False
            self.publisher.publish(logged, map_png)
        line_metrics.verdict(header["verdict"], header["latency_ms"].get("total"))
        for listener in self.listeners:
            try:
                listener(logged, map_png, preprocessed)
            except Exception:  # observing must not stop a line
                log.exception("verdict listener %r failed on part %s", listener, header["part"])
        if header["verdict"] == "error":
            log.warning("line %s part %s: error %s: %s", header["line"], header["part"],
                        header["error"]["code"], header["error"]["message"])
        return True

    def reject(self, line: str, part: str, seq: int | None, code: str, message: str,
               verdict: str = "error", **fields) -> bool:
        """A verdict decided by the stream itself (the part never reached its window);
        the part's stored frames go with it."""
        return self.emit(station_header(line, part, seq, code, message, verdict, **fields), None,
                         origin="station", drop_frames=True)
