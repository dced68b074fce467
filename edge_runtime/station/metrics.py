"""Counters and rolling latencies of a running station, per line, thread-safe.

Threads count events; the control socket reads a consistent snapshot.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np

_RATE_SPAN_S = 30.0  # parts/s is measured over the last 30 s of verdicts


class LineMetrics:
    """What happened on one line: event counters, verdict times, end-to-end latencies."""

    def __init__(self, history: int = 2048):
        self._lock = threading.Lock()
        self.counts: Counter = Counter()
        self._latency_ms: deque = deque(maxlen=history)
        self._verdict_times: deque = deque(maxlen=history)

    def count(self, event: str, n: int = 1) -> None:
        with self._lock:
            self.counts[event] += n

    def verdict(self, kind: str, total_ms: float | None) -> None:
        with self._lock:
            self.counts[f"verdict_{kind}"] += 1
            self._verdict_times.append(time.monotonic())
            if total_ms is not None:
                self._latency_ms.append(total_ms)

    def snapshot(self) -> dict:
        """{"parts_per_s", "latency_ms": {p50, p95, p99}, "counts": {...}}."""
        with self._lock:
            now = time.monotonic()
            recent = [t for t in self._verdict_times if now - t <= _RATE_SPAN_S]
            span = now - recent[0] if len(recent) > 1 else 0.0
            rate = (len(recent) - 1) / span if span > 0 else 0.0
            lat = np.array(self._latency_ms, dtype=np.float64)
            counts = dict(self.counts)
        pct = ({f"p{q}": float(np.percentile(lat, q)) for q in (50, 95, 99)} if lat.size
               else {"p50": None, "p95": None, "p99": None})
        return {"parts_per_s": rate, "latency_ms": pct, "counts": counts}


class Metrics:
    """Per-line metrics plus station-wide counters (messages that named no line)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._lines: dict[str, LineMetrics] = {}
        self.station = LineMetrics()
        self.started = time.time()

    def line(self, name: str) -> LineMetrics:
        with self._lock:
            if name not in self._lines:
                self._lines[name] = LineMetrics()
            return self._lines[name]

    def lines(self) -> dict[str, LineMetrics]:
        with self._lock:
            return dict(self._lines)
