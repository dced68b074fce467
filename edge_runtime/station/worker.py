"""One product line at work: its bounded queue, its inspector, its persisted window.

A ``LineWorker`` thread owns one ``LineInspector``; nothing else touches it.
Operator commands (threshold, reset, snapshot, switch, and the feedback on
the references: label, accept_shift, pin, ack_alert) run inside the worker
thread between two parts, through ``call``. Alerts a decision raises are
published and the window (which holds them) saved at once. Parts arrive on ``queue``, put
there by the station's intake under the line's queue policy.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from edge_runtime.inspection.features import InspectionError
from edge_runtime.station.config import LineProfile
from edge_runtime.station.metrics import LineMetrics
from edge_runtime.station.intake import PendingPart
from edge_runtime.station.store import StorageError, Store
from edge_runtime.station.verdicts import VerdictSink, from_decision, refusal
from edge_runtime.stream.protocol import SENSORS

log = logging.getLogger(__name__)


class LineWorker(threading.Thread):
    """Scores the parts of one line in arrival order.

    inspector: a LineInspector for ``profile`` (already loaded, window restored).
    snapshot_every: persist the window after this many parts.
    """

    def __init__(self, line: str, profile: LineProfile, inspector, store: Store, sink: VerdictSink,
                 metrics: LineMetrics, snapshot_every: int):
        super().__init__(name=f"line-{line}", daemon=True)
        self.line = line
        self.profile = profile
        self.inspector = inspector
        self.store = store
        self.sink = sink
        self.metrics = metrics
        self.snapshot_every = snapshot_every
        self.queue: queue.Queue = queue.Queue(maxsize=profile.stream.queue)
        self._commands: queue.Queue = queue.Queue()
        self._finish = threading.Event()
        self._in_window: list[str] = []  # parts scored since the last snapshot
        self._stream_ms: dict[str, tuple[float, dict]] = {}  # part -> (first frame time, stream stages)
        self.status: dict = dict(inspector.status())
        self.busy_since: float | None = None
        self.save_error: str | None = None  # why the window could not be saved at the end, if so

    # --- called from other threads ----------------------------------------

    def call(self, fn: Callable[["LineWorker"], object], timeout: float = 120.0) -> object:
        """Run ``fn(self)`` in the worker thread between two parts; its result (or exception)."""
        if not self.is_alive():
            raise RuntimeError(f"line {self.line} worker is not running")
        reply: queue.Queue = queue.Queue(maxsize=1)
        self._commands.put((fn, reply))
        try:
            ok, value = reply.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"line {self.line} did not answer within {timeout:.0f} s") from None
        if not ok:
            raise value
        return value

    def finish(self) -> None:
        """Score what is queued, decide pending parts, save the window, end."""
        self._finish.set()

    @property
    def queued_bytes(self) -> int:
        """Bytes of decoded frames waiting in the queue."""
        with self.queue.mutex:
            return sum(f.array.nbytes for part in self.queue.queue for f in part.frames.values())

    # --- the worker thread -------------------------------------------------

    def run(self) -> None:
        while True:
            self._run_commands()
            try:
                part = self.queue.get(timeout=0.05)
            except queue.Empty:
                if self._finish.is_set() and self.queue.empty():
                    break
                continue
            self.score(part)
            self.queue.task_done()  # the station waits on queue.join() for replayed parts
        self._run_commands()
        self.flush()
        try:
            self.snapshot()
        except Exception as exc:  # the station reports it (a failed save is a failed shutdown)
            self.save_error = f"{type(exc).__name__}: {exc}"
            log.error("line %s: the window was not saved at shutdown: %s", self.line, self.save_error)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, reply = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                reply.put((True, fn(self)))
            except Exception as exc:  # the caller re-raises it
                reply.put((False, exc))

    def score(self, part: PendingPart) -> None:
        """Inspect one part and emit the decisions that became ready (worker thread)."""
        now = time.monotonic()
        self.busy_since = now
        frames = {s: f for s, f in part.frames.items() if s in self.profile.sensors}
        arrays = {SENSORS[s]: f.array for s, f in frames.items()}
        self._stream_ms[part.part] = (part.t_first, {
            "decode": sum(f.decode_ms for f in frames.values()),
            "pair_wait": ((part.t_left or now) - part.t_first) * 1e3,
            "queue": (now - (part.t_left or now)) * 1e3,
        })
        try:
            decisions = self.inspector.inspect(part.part, part.seq, arrays.get("2d"), arrays.get("3d"))
        except InspectionError as exc:
            decisions = []
            self._emit_error(part, exc.code, str(exc))
        except Exception as exc:  # a bug must not stop the line: answer the part, log the trace
            log.exception("line %s part %s: inspection failed", self.line, part.part)
            decisions = []
            self._emit_error(part, "internal", f"{type(exc).__name__}: {exc}")
        self._in_window.append(part.part)
        self.status = dict(self.inspector.status())  # before the verdicts leave: who got one sees its window
        alerted = False
        for decision in decisions:
            self._emit(decision)
            alerted |= bool(decision.alerts)
        self.busy_since = None
        if alerted or len(self._in_window) >= self.snapshot_every:
            try:
                self.snapshot()
            except StorageError as exc:  # a full disk: keep scoring; the stored frames still cover these parts
                log.warning("line %s: saving the window failed: %s", self.line, exc)
            except Exception:
                log.exception("line %s: saving the window failed", self.line)

    def flush(self) -> None:
        """Decide every pending part now (decision_delay > 0)."""
        decisions = self.inspector.flush()
        self.status = dict(self.inspector.status())
        for decision in decisions:
            self._emit(decision)

    def operate(self, fn: Callable[[object], object]) -> object:
        """An operator's word on the references (``fn(inspector)``: label, accept_shift,
        pin, ack_alert); saved with the window at once. Returns what ``fn`` returns."""
        result = fn(self.inspector)
        self.snapshot()
        self.status = dict(self.inspector.status())
        return result

    def snapshot(self) -> str:
        """Persist the window; the frames of the parts it holds are then forgotten.
        A failure degrades the station until a later snapshot succeeds."""
        reason = f"storage.window.{self.line}"
        try:
            path = self.store.save_window(self.line, self.profile.window_key, self.inspector.state(), self._in_window)
        except StorageError as exc:
            self.sink.health.set(reason, str(exc))
            raise
        self.sink.health.clear(reason)
        self._in_window = []
        self.metrics.count("snapshots")
        return str(path)

    def reset(self) -> None:
        """Decide pending parts, then start the window cold (and save it so)."""
        self.flush()
        self.inspector.reset()
        self.snapshot()
        self.status = dict(self.inspector.status())

    def set_threshold(self, value: float, source: str) -> None:
        """An operator's threshold; saved with the window so a restart keeps it."""
        self.inspector.set_threshold(value, source)
        self.snapshot()
        self.status = dict(self.inspector.status())

    def clear_threshold(self) -> None:
        """Back to the profile's threshold policy (saved, like set_threshold)."""
        self.inspector.clear_threshold()
        self.snapshot()
        self.status = dict(self.inspector.status())

    def swap(self, profile: LineProfile, inspector) -> None:
        """Switch the line to another profile (worker thread): decide pending parts,
        save the old window, continue with ``inspector`` (its saved window already loaded)."""
        self.flush()
        self.snapshot()
        self.profile, self.inspector = profile, inspector
        with self.queue.mutex:
            self.queue.maxsize = profile.stream.queue
        self.store.set_line_profile(self.line, profile.name)
        self.status = dict(inspector.status())

    def _emit(self, decision) -> None:
        t_first, stages = self._stream_ms.pop(decision.part, (None, {}))
        if t_first is not None:
            stages["total"] = (time.monotonic() - t_first) * 1e3
        try:
            verdict, png = from_decision(self.line, decision, self.inspector.model_digest,
                                         self.inspector.profile_digest, stages,
                                         with_map=self.profile.settings.map_output)
        except ValueError as exc:  # a decision no verdict can carry (a bug): the part is still answered
            log.exception("line %s part %s: verdict not built", self.line, decision.part)
            verdict, png = refusal(self.line, decision.part, decision.seq, "internal", f"verdict not built: {exc}",
                                   model=self.inspector.model_digest, profile=self.inspector.profile_digest,
                                   latency_ms=stages), None
        self.sink.emit(verdict, png, origin="inspector", drop_frames=False, preprocessed=decision.preprocessed)
        for alert in decision.alerts:
            self.sink.alert(alert)

    def _emit_error(self, part: PendingPart, code: str, message: str) -> None:
        _, stages = self._stream_ms.pop(part.part, (None, {}))
        stages["total"] = (time.monotonic() - part.t_first) * 1e3
        self.sink.refuse(part.line, part.part, part.seq, code, message,
                         model=self.inspector.model_digest, profile=self.inspector.profile_digest,
                         latency_ms=stages, modalities=sorted(SENSORS[s] for s in part.frames))
