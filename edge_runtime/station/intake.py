"""Frames in, parts out: the station's admission of every part, in the order it happens.

One ``Intake`` thread owns the frame socket(s). A message goes through:

1. parse and decode (``stream.protocol`` / ``stream.decode``); a bad message is
   answered with an ``error`` verdict when it names a line and a part, else
   logged and counted;
2. the line: a frame for a line this station does not serve is refused;
3. duplicates and late frames: a second frame of a sensor, or a frame for a part
   already answered, is counted and dropped;
4. the store: the frame is committed before pairing, so a crash cannot lose it;
5. pairing by (line, part): a part leaves complete, at its deadline with what
   it has, or when too many parts wait;
6. admission: a part without all its frames is scored on what it has (when
   the profile allows partial parts) or answered ``inconclusive``; a complete
   one goes to its line's queue under the line's queue policy.

Crash recovery replays the stored frames through the same steps (``replay``).

Lines are isolated: this thread never waits for a line. A full ``drop_oldest``
line answers its oldest queued part with ``overload``. A full ``block`` line
holds its parts here, in order, up to one more queue's worth; a socket stops
being read only while every line it feeds is a full ``block`` line, so a sender
is slowed down only by its own line (a line gets a socket of its own through
``[endpoints.lines]``). Past its hold a shared ``block`` line answers new parts
with ``overload``.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import zmq

from edge_runtime.station.config import StationConfig
from edge_runtime.station.metrics import Metrics
from edge_runtime.station.store import StoredPart, Store
from edge_runtime.station.verdicts import VerdictSink
from edge_runtime.stream.decode import decode_payload
from edge_runtime.stream.protocol import SENSORS, FrameHeader, ProtocolError, parse_frame
from edge_runtime.stream.security import Guard
from edge_runtime.stream.sockets import bind

log = logging.getLogger(__name__)

_BATCH = 64  # messages read per wake-up before deadlines and holds are looked at again
_DONE_MEMORY = 65536  # parts remembered as answered, to name late and duplicate frames
_DRAIN_S = 2.0  # at shutdown, frames already queued are read for at most this long
_IDLE_MS = 100  # longest sleep of the thread when nothing is due
_HELD_MS = 5  # how often a line's held parts try its queue again


# --- parts being collected ------------------------------------------------

@dataclass
class Frame:
    """One decoded frame: header, array, its row in the frame store (rx), when it
    arrived (monotonic seconds) and how long decoding took (ms)."""

    header: FrameHeader
    array: np.ndarray
    rx: int
    t_rx: float
    decode_ms: float = 0.0


@dataclass
class PendingPart:
    """A part whose frames are being collected.

    required: the sensors its line needs; reason: why it left the pairer
    (None while pending, else "complete" | "timeout" | "overflow" | "shutdown"
    | "recovered").
    """

    line: str
    part: str
    seq: int
    required: frozenset[str]
    t_first: float
    deadline: float
    frames: dict[str, Frame] = field(default_factory=dict)
    t_left: float | None = None
    reason: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.line, self.part

    @property
    def complete(self) -> bool:
        return self.required <= self.frames.keys()

    @property
    def missing(self) -> list[str]:
        return sorted(self.required - self.frames.keys())


class Pairer:
    """Pending parts by (line, part); at most ``max_pending`` at a time. Time is passed
    in, so this is plain logic."""

    def __init__(self, max_pending: int = 1024):
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._pending: dict[tuple[str, str], PendingPart] = {}

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, key: tuple[str, str]) -> PendingPart | None:
        return self._pending.get(key)

    def discard(self, key: tuple[str, str]) -> PendingPart | None:
        """Remove a pending part without a reason (it was answered otherwise)."""
        return self._pending.pop(key, None)

    def counts(self) -> dict[str, int]:
        """Pending parts per line."""
        out: dict[str, int] = {}
        for p in self._pending.values():
            out[p.line] = out.get(p.line, 0) + 1
        return out

    def add(self, frame: Frame, required: frozenset[str], timeout_s: float, now: float) -> list[PendingPart]:
        """Add a frame; return the parts that left the pairer because of it (its own part
        when complete, the oldest pending part on overflow). A second frame of the same
        sensor is the caller's to refuse first: here it raises ValueError."""
        h = frame.header
        key = (h.line, h.part)
        part = self._pending.get(key)
        if part is None:
            part = PendingPart(h.line, h.part, h.seq, frozenset(required), now, now + timeout_s)
            self._pending[key] = part
        elif h.sensor in part.frames:
            raise ValueError(f"part {h.part} of line {h.line} already has a {h.sensor} frame")
        part.frames[h.sensor] = frame
        left = []
        if part.complete:
            left.append(self._leave(key, "complete", now))
        while len(self._pending) > self.max_pending:
            left.append(self._leave(next(iter(self._pending)), "overflow", now))
        return left

    def expire(self, now: float) -> list[PendingPart]:
        """Parts whose deadline has passed, oldest first."""
        due = [k for k, p in self._pending.items() if p.deadline <= now]
        return [self._leave(k, "timeout", now) for k in due]

    def drain(self, now: float) -> list[PendingPart]:
        """Every pending part, oldest first (the station is stopping)."""
        return [self._leave(k, "shutdown", now) for k in list(self._pending)]

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def _leave(self, key: tuple[str, str], reason: str, now: float) -> PendingPart:
        part = self._pending.pop(key)
        part.reason = reason
        part.t_left = now
        return part


# --- the intake thread -------------------------------------------------------

class Intake(threading.Thread):
    """The frame-receiving thread.

    lines: line name -> its LineWorker (``.profile``, ``.queue``, ``.inspector``,
    ``.metrics``), or None; served: the names of the lines served now.
    guard: CURVE for the frame sockets (``edge_runtime.stream.security``), or None.
    """

    def __init__(self, ctx: zmq.Context, config: StationConfig, lines: Callable[[str], object],
                 served: Callable[[], list[str]], store: Store, sink: VerdictSink, metrics: Metrics,
                 guard: Guard | None = None):
        super().__init__(name="intake", daemon=True)
        options = {"RCVHWM": config.rcvhwm, "MAXMSGSIZE": config.max_frame_bytes, "LINGER": 0}
        self._shared, self.endpoint = bind(ctx, zmq.PULL, config.frames, "frames", guard, **options)
        self._own: dict[str, zmq.Socket] = {}  # line -> its own socket
        self.line_endpoints: dict[str, str] = {}
        try:
            for line, endpoint in config.line_frames.items():
                self._own[line], self.line_endpoints[line] = bind(ctx, zmq.PULL, endpoint, "frames", guard,
                                                                  **options)
        except BaseException:
            self._close_sockets()
            raise
        self._lines = lines
        self._served = served
        self._store = store
        self._sink = sink
        self._metrics = metrics
        self.pairer = Pairer(config.max_pending)
        self._held: dict[str, deque[PendingPart]] = {}  # block lines' parts waiting for queue room
        self._done: OrderedDict[tuple[str, str], str] = OrderedDict()
        self.pending_counts: dict[str, int] = {}  # parts waiting for a frame, per line (read by status)
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Read what has arrived, decide parts still waiting for a frame, close."""
        self._stopping.set()

    def held(self, line: str) -> int:
        """Parts of ``line`` held here because its queue is full."""
        return len(self._held.get(line, ()))

    # --- the loop ---------------------------------------------------------

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._release_held()
                readable = [s for s in self._sockets() if not self._paused(s)]
                poller = zmq.Poller()
                for sock in readable:
                    poller.register(sock, zmq.POLLIN)
                for sock, _ in poller.poll(self._wait_ms()):
                    self._read(sock)
                for part in self.pairer.expire(time.monotonic()):
                    self._admit(part)
                self.pending_counts = self.pairer.counts()
            until = time.monotonic() + _DRAIN_S
            for sock in self._sockets():
                self._read(sock, until)
            for part in self.pairer.drain(time.monotonic()):
                self._admit(part)
            self._hand_over_held()
        finally:
            self._close_sockets()

    def _sockets(self) -> list[zmq.Socket]:
        return [self._shared, *self._own.values()]

    def _close_sockets(self) -> None:
        for sock in self._sockets():
            sock.close(linger=0)

    def _feeds(self, sock: zmq.Socket) -> list[str]:
        """The lines whose senders use ``sock``."""
        if sock is self._shared:
            return [n for n in self._served() if n not in self._own]
        return [n for n, s in self._own.items() if s is sock]

    def _paused(self, sock: zmq.Socket) -> bool:
        """Not read while every line it feeds is a block line with parts held: pausing
        then slows down those lines' senders and nobody else."""
        feeds = self._feeds(sock)
        return bool(feeds) and all(self._held.get(n) for n in feeds)

    def _wait_ms(self) -> int:
        if any(self._held.values()):
            return _HELD_MS
        deadline = self.pairer.next_deadline()
        if deadline is None:
            return _IDLE_MS
        return min(_IDLE_MS, max(0, int((deadline - time.monotonic()) * 1e3) + 1))

    def _read(self, sock: zmq.Socket, until: float | None = None) -> None:
        """Read up to a batch of waiting messages, or (``until``) all of them until then."""
        n = 0
        while n < _BATCH if until is None else time.monotonic() < until:
            if until is None and self._paused(sock):
                return
            try:
                message = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            n += 1
            try:
                self._on_message(message)
            except Exception:  # never let one message stop the station
                self._metrics.station.count("internal_errors")
                log.exception("intake: unexpected failure on a message")

    # --- one message --------------------------------------------------------

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
        worker.metrics.count("frames")
        if self._answered_or_duplicate((header.line, header.part), header.sensor, worker.metrics):
            return
        try:
            array = decode_payload(header, payload)
        except ProtocolError as exc:
            self._refuse(exc)
            return
        if header.sensor not in worker.profile.sensors:  # valid, but this line does not use that sensor
            worker.metrics.count("unused_frames")
            return
        rx = self._store.add_frame(header.line, header.part, header.sensor, message[0], payload)
        self._pair(Frame(header, array, rx, now, (time.perf_counter() - t0) * 1e3), worker, now)

    def _pair(self, frame: Frame, worker, now: float) -> None:
        timeout = worker.profile.stream.pair_timeout_ms / 1e3
        for part in self.pairer.add(frame, worker.profile.sensors, timeout, now):
            self._admit(part)

    def _answered_or_duplicate(self, key: tuple[str, str], sensor: str, metrics) -> bool:
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

    def _remember(self, key: tuple[str, str], reason: str) -> None:
        """Mark a part as answered (or on its way to its window)."""
        self._done[key] = reason
        while len(self._done) > _DONE_MEMORY:
            self._done.popitem(last=False)

    def _refuse(self, exc: ProtocolError) -> None:
        """A bad message: an error verdict for its part, or a log line and a count."""
        if not exc.identified:
            self._metrics.station.count("malformed")
            self._metrics.station.count(f"malformed_{exc.code}")
            log.warning("intake: message dropped (%s): %s", exc.code, exc)
            return
        key = (exc.line, exc.part)
        pending = self.pairer.discard(key)
        self._remember(key, "error")
        self._metrics.line(exc.line).count(f"refused_{exc.code}")
        fields = {}
        if pending is not None:
            fields["latency_ms"] = {"total": (time.monotonic() - pending.t_first) * 1e3}
        self._answer(exc.line, exc.part, exc.seq, exc.code, str(exc), **fields)

    def _answer(self, line: str, part: str, seq: int | None, code: str, message: str, **fields) -> None:
        """A verdict for a part that does not reach its window (with the line's digests)."""
        worker = self._lines(line)
        if worker is not None:
            fields.update(model=worker.inspector.model_digest, profile=worker.inspector.profile_digest)
        self._sink.refuse(line, part, seq, code, message, **fields)

    # --- admission ----------------------------------------------------------

    def _admit(self, part: PendingPart, replayed: bool = False) -> None:
        """A part left the pairer: to its line's queue, or a verdict now."""
        self._remember(part.key, part.reason)
        worker = self._lines(part.line)
        if worker is None:  # the line went away while the part waited
            self._answer(part.line, part.part, part.seq, "unknown_line",
                         f"no profile for line {part.line!r} at this station")
            return
        profile = worker.profile
        usable = profile.sensors & part.frames.keys()
        if part.reason not in ("complete", "recovered"):
            worker.metrics.count(f"incomplete_{part.reason}")
            if not usable or not profile.settings.allow_partial:
                waited = ((part.t_left or time.monotonic()) - part.t_first) * 1e3
                self._answer(
                    part.line, part.part, part.seq, "missing_frames",
                    f"no {' / '.join(part.missing)} frame after {waited:.0f} ms ({part.reason}); "
                    + ("the profile does not allow partial parts" if usable else "nothing the line can score"),
                    verdict="inconclusive", latency_ms={"total": waited},
                    modalities=sorted(SENSORS[s] for s in usable))
                return
        if replayed:  # nothing is read while the store is replayed: waiting holds up no sender
            worker.queue.put(part)
        elif profile.stream.queue_policy == "drop_oldest":
            self._put_dropping_oldest(worker, part)
        else:
            self._hold_or_queue(worker, part)

    def _put_dropping_oldest(self, worker, part: PendingPart) -> None:
        while True:
            try:
                worker.queue.put_nowait(part)
                return
            except queue.Full:
                pass
            try:
                oldest = worker.queue.get_nowait()
            except queue.Empty:
                continue
            worker.queue.task_done()
            worker.metrics.count("dropped_overload")
            self._answer(oldest.line, oldest.part, oldest.seq, "overload",
                         f"line {oldest.line} queue full ({worker.queue.maxsize} parts): dropped, oldest first",
                         latency_ms={"total": (time.monotonic() - oldest.t_first) * 1e3})

    def _hold_or_queue(self, worker, part: PendingPart) -> None:
        held = self._held.setdefault(part.line, deque())
        if not held:
            try:
                worker.queue.put_nowait(part)
                return
            except queue.Full:
                pass
        if len(held) >= worker.queue.maxsize:
            worker.metrics.count("dropped_overload")
            self._answer(part.line, part.part, part.seq, "overload",
                         f"line {part.line} is {len(held) + worker.queue.maxsize} parts behind and shares its "
                         "frame socket with other lines: refused rather than stall them")
            return
        worker.metrics.count("held")
        held.append(part)

    def _release_held(self) -> None:
        """Held parts into their queues as room frees up, oldest first."""
        for line, held in self._held.items():
            worker = self._lines(line)
            while held:
                if worker is None:
                    part = held.popleft()
                    self._answer(part.line, part.part, part.seq, "unknown_line",
                                 f"no profile for line {line!r} at this station")
                    continue
                try:
                    worker.queue.put_nowait(held[0])
                except queue.Full:
                    break
                held.popleft()

    def _hand_over_held(self) -> None:
        """At shutdown: every held part waits for room (the workers are still running)."""
        for line, held in self._held.items():
            worker = self._lines(line)
            while held:
                part = held.popleft()
                if worker is None or not worker.is_alive():
                    self._answer(part.line, part.part, part.seq, "shutdown",
                                 f"line {line} stopped before the part could be scored")
                else:
                    worker.queue.put(part)

    # --- crash recovery -----------------------------------------------------

    def replay(self, stored: list[StoredPart]) -> tuple[int, int]:
        """Parts a crash left in the store, through the same steps as live frames
        (before this thread starts; the line workers are running). A part already
        decided, or complete, is scored again (its window needs it; a logged verdict
        is not sent twice); one missing a frame waits for it. Returns (scored, waiting)
        once every replayed part is scored, so new frames come after them."""
        now = time.monotonic()
        scored = waiting = 0
        for part in stored:
            worker = self._lines(part.line)
            if worker is None:
                self._sink.refuse(part.line, part.part, None, "unknown_line",
                                  f"line {part.line!r} is no longer served by this station")
                continue
            frames = []
            try:
                for rx, header_bytes, payload in part.frames:
                    header, payload = parse_frame([header_bytes, payload])
                    frames.append(Frame(header, decode_payload(header, payload), rx, now))
            except ProtocolError as exc:
                self._answer(part.line, part.part, exc.seq, exc.code, f"stored frame unreadable: {exc}")
                continue
            timeout = worker.profile.stream.pair_timeout_ms / 1e3
            left = []
            for frame in frames:
                left += self.pairer.add(frame, worker.profile.sensors, timeout, now)
            if part.decided and not left:  # decided on what it had: score it so again
                left = [self.pairer.discard((part.line, part.part))]
                left[0].t_left = now
            for pending in left:
                pending.reason = "recovered"
                self._admit(pending, replayed=True)
                scored += 1
            if not left:
                self._remember((part.line, part.part), "recovered")
                waiting += 1
        for line in self._served():
            self._lines(line).queue.join()
        return scored, waiting
