"""Frames in: the PULL socket, validation, decoding, storing, pairing.

The ``Ingest`` thread owns the PULL socket. Each message is parsed and
decoded; a bad one is answered with an ``error`` verdict when it names a line
and a part, else logged and counted. A good frame is stored (so a crash cannot
lose it) and paired; a part leaves the pairer complete, or at its deadline
with what it has, and goes to its line's queue.

Backpressure: handing a part to a full "block" queue waits, so this thread
stops reading; ZeroMQ then holds at most ``rcvhwm`` frames and the senders'
PUSH sockets block at their high-water mark.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Callable

import zmq

from edge_runtime.stream.decode import decode_payload
from edge_runtime.stream.pairing import Frame, Pairer, PendingPart
from edge_runtime.stream.protocol import SENSORS, ProtocolError, parse_frame
from edge_runtime.stream.security import Guard, bind_server

log = logging.getLogger(__name__)

_BATCH = 64  # messages read per wake-up before deadlines are checked again
_DONE_MEMORY = 65536  # parts remembered as answered, to name late and duplicate frames
_DRAIN_S = 2.0  # at shutdown, frames already queued are read for at most this long


class Ingest(threading.Thread):
    """The frame-receiving thread.

    lines: line name -> its LineWorker (``.profile``, ``.offer``, ``.metrics``), or None.
    store: the Store (frames are committed before pairing); sink: the VerdictSink.
    guard: CURVE for the socket (``edge_runtime.stream.security``), or None.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, lines: Callable[[str], object], store, sink,
                 metrics, rcvhwm: int = 32, max_frame_bytes: int = 256 * 1024 * 1024, max_pending: int = 1024,
                 guard: Guard | None = None):
        super().__init__(name="ingest", daemon=True)
        self._pull = ctx.socket(zmq.PULL)
        self._pull.setsockopt(zmq.RCVHWM, rcvhwm)
        self._pull.setsockopt(zmq.MAXMSGSIZE, max_frame_bytes)
        self._pull.setsockopt(zmq.LINGER, 0)
        self.endpoint = bind_server(self._pull, endpoint, guard, "frames")
        self._lines = lines
        self._store = store
        self._sink = sink
        self._metrics = metrics
        self.pairer = Pairer(max_pending)
        self._done: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.pending_counts: dict[str, int] = {}  # parts waiting for a frame, per line (read by status)
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Read what has arrived, decide parts still waiting for a frame, close."""
        self._stopping.set()

    def resume(self, part: PendingPart, now: float) -> None:
        """Put back a part found in the store without all its frames (before ``start``)."""
        worker = self._lines(part.line)
        timeout = worker.profile.stream.pair_timeout_ms / 1e3
        for frame in part.frames.values():
            for left in self.pairer.add(frame, worker.profile.sensors, timeout, now):
                self._leave(left)

    def remember(self, line: str, part: str, reason: str) -> None:
        """Mark a part as answered (or on its way to its window)."""
        self._done[(line, part)] = reason
        while len(self._done) > _DONE_MEMORY:
            self._done.popitem(last=False)

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._pull, zmq.POLLIN)
        try:
            while not self._stopping.is_set():
                deadline = self.pairer.next_deadline()
                wait_ms = 100 if deadline is None else min(100, max(0, int((deadline - time.monotonic()) * 1e3) + 1))
                if poller.poll(wait_ms):
                    self._read_available()
                for part in self.pairer.expire(time.monotonic()):
                    self._leave(part)
                self.pending_counts = self.pairer.counts()
            self._read_available(until=time.monotonic() + _DRAIN_S)
            for part in self.pairer.drain(time.monotonic()):
                self._leave(part)
        finally:
            self._pull.close()

    def _read_available(self, until: float | None = None) -> None:
        """Read up to a batch of waiting messages, or (``until``) all of them until then."""
        n = 0
        while n < _BATCH if until is None else time.monotonic() < until:
            try:
                message = self._pull.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            n += 1
            try:
                self._on_message(message)
            except Exception:  # never let one message stop the station
                self._metrics.station.count("internal_errors")
                log.exception("ingest: unexpected failure on a message")

    def _on_message(self, message: list[bytes]) -> None:
        t0 = time.perf_counter()
        now = time.monotonic()
        try:
            header, payload = parse_frame(message)
        except ProtocolError as exc:
            self._refuse(exc)
            return
        worker = self._lines(header.line)
        if worker is None:
            self._refuse(ProtocolError("unknown_line", f"no profile for line {header.line!r} at this station",
                                       header.line, header.part, header.seq))
            return
        metrics = worker.metrics
        metrics.count("frames")
        key = (header.line, header.part)
        if self._already_answered(key, header.sensor, metrics):
            return
        try:
            array = decode_payload(header, payload)
        except ProtocolError as exc:
            self._refuse(exc)
            return
        decode_ms = (time.perf_counter() - t0) * 1e3
        profile = worker.profile
        if header.sensor not in profile.sensors:  # valid, but this line does not use that sensor
            metrics.count("unused_frames")
            return
        rx = self._store.add_frame(header.line, header.part, header.sensor, message[0], payload)
        frame = Frame(header, array, rx, now, decode_ms)
        for part in self.pairer.add(frame, profile.sensors, profile.stream.pair_timeout_ms / 1e3, now):
            self._leave(part)

    def _already_answered(self, key: tuple[str, str], sensor: str, metrics) -> bool:
        """True (and counted) for a frame whose part needs nothing more from it."""
        pending = self.pairer.get(key)
        if pending is not None:
            if sensor in pending.frames:
                metrics.count("duplicate_frames")
                log.info("line %s part %s: second %s frame ignored", *key, sensor)
                return True
            return False
        reason = self._done.get(key)
        if reason is None and self._store.has_verdict(*key):
            reason = "logged"
        if reason is None:
            return False
        if reason in ("timeout", "overflow"):
            metrics.count("late_frames")
            log.info("line %s part %s: %s frame arrived after the part left pairing (%s)", *key, sensor, reason)
        else:
            metrics.count("duplicate_frames")
            log.info("line %s part %s: %s frame for a part already answered", *key, sensor)
        return True

    def _refuse(self, exc: ProtocolError) -> None:
        """A bad message: an error verdict for its part, or a log line and a count."""
        if not exc.identified:
            self._metrics.station.count("malformed")
            self._metrics.station.count(f"malformed_{exc.code}")
            log.warning("ingest: message dropped (%s): %s", exc.code, exc)
            return
        key = (exc.line, exc.part)
        pending = self.pairer.discard(key)
        self.remember(exc.line, exc.part, "error")
        worker = self._lines(exc.line)
        fields = {}
        if worker is not None:
            fields = {"model": worker.inspector.model_digest, "profile": worker.inspector.profile_digest}
        if pending is not None:
            fields["latency_ms"] = {"total": (time.monotonic() - pending.t_first) * 1e3}
        self._metrics.line(exc.line).count(f"refused_{exc.code}")
        self._sink.reject(exc.line, exc.part, exc.seq, exc.code, str(exc), **fields)

    def _leave(self, part: PendingPart) -> None:
        """A part left the pairer: to its line's queue, or an inconclusive verdict."""
        worker = self._lines(part.line)
        self.remember(part.line, part.part, part.reason)
        if worker is None:  # the line went away while the part waited
            self._sink.reject(part.line, part.part, part.seq, "unknown_line",
                              f"no profile for line {part.line!r} at this station")
            return
        profile = worker.profile
        usable = profile.sensors & part.frames.keys()
        if part.reason != "complete":
            worker.metrics.count(f"incomplete_{part.reason}")
            if not usable or not profile.settings.allow_partial:
                waited = ((part.t_left or time.monotonic()) - part.t_first) * 1e3
                self._sink.reject(
                    part.line, part.part, part.seq, "missing_frames",
                    f"no {' / '.join(part.missing)} frame after {waited:.0f} ms ({part.reason}); "
                    + ("the profile does not allow partial parts" if usable else "nothing the line can score"),
                    verdict="inconclusive", model=worker.inspector.model_digest,
                    profile=worker.inspector.profile_digest, latency_ms={"total": waited},
                    modalities=sorted(SENSORS[s] for s in usable))
                return
        worker.offer(part)
