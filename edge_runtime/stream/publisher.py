"""Verdicts out: headers from decisions, the 8-bit map PNG, the PUB and reject-gate sockets.

The PUB socket (topic ``verdict.<line>``) is fire-and-forget, as PUB is; the
optional reject-gate PUSH output is reliable: a verdict the gate cannot take
yet waits in a backlog and is sent when the gate is back.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque

import cv2
import numpy as np
import zmq

from edge_runtime.stream.protocol import VERSION, pack_verdict
from edge_runtime.stream.security import Guard, bind_server

log = logging.getLogger(__name__)

# Subscribers send only subscriptions (a topic prefix); anything bigger drops the connection.
_MAX_INBOUND_BYTES = 4096


def encode_map(anomaly_map: np.ndarray) -> tuple[bytes, list[float]]:
    """(H, W) float map -> (8-bit grayscale PNG, [vmin, vmax]).

    Pixel p stands for vmin + p / 255 * (vmax - vmin); a flat map encodes as zeros.
    """
    m = np.asarray(anomaly_map, dtype=np.float32)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"anomaly map must be a non-empty (H, W) array, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("anomaly map holds NaN or inf")
    vmin, vmax = float(m.min()), float(m.max())
    scaled = np.zeros(m.shape, np.uint8) if vmax <= vmin else np.rint((m - vmin) / (vmax - vmin) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", scaled)
    if not ok:
        raise ValueError("OpenCV could not encode the anomaly map as PNG")
    return buf.tobytes(), [vmin, vmax]


def decode_map(png: bytes, scale: list[float]) -> np.ndarray:
    """Inverse of ``encode_map`` (up to 8-bit quantization): (H, W) float32."""
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError("verdict map is not a readable PNG")
    vmin, vmax = scale
    return (vmin + img.astype(np.float32) / 255.0 * (vmax - vmin)).astype(np.float32)


def decision_header(line: str, decision, model: str | None, profile: str | None,
                    stream_latency_ms: dict[str, float], with_map: bool) -> tuple[dict, bytes | None]:
    """A verdict header (+ map PNG) from an inspection ``Decision``.

    stream_latency_ms: the station's own stages (decode, pair_wait, queue, total)
    merged over the decision's stages.
    """
    header = {
        "v": VERSION, "line": line, "part": decision.part, "seq": int(decision.seq),
        "verdict": decision.verdict,
        "score": None if decision.score is None else float(decision.score),
        "threshold": None if decision.threshold is None else float(decision.threshold),
        "threshold_source": decision.threshold_source,
        "modalities": list(decision.modalities), "window": int(decision.window),
        "latency_ms": {**{k: float(v) for k, v in decision.latency_ms.items()}, **stream_latency_ms},
        "model": model, "profile": profile,
        "regions": [[float(v) for v in r] for r in decision.regions],
        "ts": time.time(),
    }
    if decision.error is not None:
        header["error"] = {"code": str(decision.error.get("code")), "message": str(decision.error.get("message"))}
    png = None
    if with_map and decision.anomaly_map is not None:
        png, header["map_scale"] = encode_map(decision.anomaly_map)
        header["map_shape"] = list(decision.anomaly_map.shape)
    return header, png


def station_header(line: str, part: str, seq: int | None, code: str, message: str, verdict: str = "error",
                   model: str | None = None, profile: str | None = None, latency_ms: dict | None = None,
                   modalities: list[str] | None = None) -> dict:
    """A verdict the stream decides without scoring (bad frame, unknown line, overload, timeout)."""
    return {
        "v": VERSION, "line": line, "part": part, "seq": -1 if seq is None else int(seq), "verdict": verdict,
        "score": None, "threshold": None, "threshold_source": None, "modalities": list(modalities or []),
        "window": 0, "latency_ms": dict(latency_ms or {}), "model": model, "profile": profile,
        "regions": [], "ts": time.time(), "error": {"code": code, "message": message},
    }


class Publisher(threading.Thread):
    """Owns the PUB socket and the optional reject-gate PUSH socket.

    Sockets are bound in the constructor (so a busy port fails at start-up) and
    used only by this thread afterwards. ``publish`` may be called from any thread.
    guard: CURVE for both sockets (``edge_runtime.stream.security``), or None.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, reject_endpoint: str | None = None,
                 backlog: int = 100_000, guard: Guard | None = None):
        super().__init__(name="publisher", daemon=True)
        self._pub = ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 1000)
        self._pub.setsockopt(zmq.MAXMSGSIZE, _MAX_INBOUND_BYTES)
        self.endpoint = bind_server(self._pub, endpoint, guard, "verdicts")
        self._reject = None
        self.reject_endpoint = None
        if reject_endpoint:
            self._reject = ctx.socket(zmq.PUSH)
            self._reject.setsockopt(zmq.LINGER, 2000)
            self._reject.setsockopt(zmq.MAXMSGSIZE, _MAX_INBOUND_BYTES)
            self.reject_endpoint = bind_server(self._reject, reject_endpoint, guard, "reject")
        self._queue: queue.Queue = queue.Queue()
        self._backlog: deque = deque()
        self._backlog_max = backlog
        self._stopping = threading.Event()
        self.published = 0
        self.reject_dropped = 0

    @property
    def reject_backlog(self) -> int:
        return len(self._backlog)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def publish(self, header: dict, map_png: bytes | None) -> None:
        self._queue.put((header, map_png))

    def stop(self) -> None:
        """Send what is queued, then close (the thread ends)."""
        self._stopping.set()

    def run(self) -> None:
        try:
            while True:
                try:
                    header, png = self._queue.get(timeout=0.05)
                except queue.Empty:
                    self._flush_reject()
                    if self._stopping.is_set() and self._queue.empty():
                        break
                    continue
                self._send(header, png)
            deadline = time.monotonic() + 2.0
            while self._backlog and time.monotonic() < deadline:
                self._flush_reject()
                time.sleep(0.01)
            if self._backlog:
                log.error("reject gate did not take %d verdicts before shutdown", len(self._backlog))
        finally:
            self._pub.close()
            if self._reject is not None:
                self._reject.close()

    def _send(self, header: dict, png: bytes | None) -> None:
        self._pub.send_multipart(pack_verdict(header, png))
        self.published += 1
        if self._reject is not None:
            if len(self._backlog) >= self._backlog_max:
                self._backlog.popleft()
                self.reject_dropped += 1
                log.error("reject-gate backlog full (%d): oldest verdict dropped", self._backlog_max)
            self._backlog.append(pack_verdict(header))
            self._flush_reject()

    def _flush_reject(self) -> None:
        while self._backlog:
            try:
                self._reject.send_multipart(self._backlog[0], flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self._backlog.popleft()
