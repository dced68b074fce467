"""Where every verdict leaves the station: logged first, then published.

Logging before publishing means a crash can hide a verdict from subscribers
(they ask the control socket for it) but never produce two verdicts for a part.
One lock keeps the log order (``vseq``) and the publish order the same.
"""
from __future__ import annotations

import logging
import threading

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

    def emit(self, header: dict, map_png: bytes | None, origin: str, drop_frames: bool) -> bool:
        """Log and publish one verdict; False (nothing sent) when the part already has one."""
        check_verdict_header(header)
        line_metrics = self.metrics.line(header["line"])
        with self._lock:
            logged = self.store.log_verdict(header, origin, drop_frames)
            if logged is None:
                line_metrics.count("duplicate_verdicts_suppressed")
                return False
            self.publisher.publish(logged, map_png)
        line_metrics.verdict(header["verdict"], header["latency_ms"].get("total"))
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
