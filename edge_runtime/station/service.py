"""The station: sockets, one worker per line, recovery after a crash, control commands.

Threads and what each one owns:

- intake: the frame sockets, the pairer, admission (``edge_runtime.station.intake``);
- one worker per line: its LineInspector and queue (``edge_runtime.station.worker``);
- publisher: the PUB and reject-gate PUSH sockets (``edge_runtime.stream.publisher``);
- control: the REP socket; commands that touch a line run in its worker;
- http (``[http]``, on by default): health, metrics, the dashboard (``edge_runtime.station.http``).
- with ``[security]``: pyzmq's ZAP thread and a socket monitor (``edge_runtime.stream.security``).

Every verdict, whoever decides it, leaves through ``station.verdicts.VerdictSink``.

Start-up binds every socket first (a busy port fails fast) and starts the
HTTP server (``/readyz`` answers 503 until the lines are up), loads the lines
(windows come back from the state directory), starts the workers, replays the
parts a crash left in the store through the intake, then starts reading
frames. ``stop`` drains in order: intake (parts still waiting for a frame are
decided on what they have), workers (queues, pending decisions, window
snapshots), publisher, control, http; what could not be saved on the way
makes it raise ``StorageError`` after everything is closed (a non-zero exit of
``musc-edge serve``). ``phase`` says where it is: stopped, starting, serving,
stopping.

Faults degrade the station without stopping it: ``health()`` says whether it is
degraded and why (``edge_runtime.station.health``); ``status`` carries the same.

Control requests arrive with their ``Caller`` (from the control socket, or a
dashboard operator); ``access`` says which roles may run which command, and the
store's audit log records every request that changes something, every refused
one, and every refused connection.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable

import zmq

from edge_runtime.inspection.threshold import check_threshold
from edge_runtime.station.access import COMMAND_ROLES, READ_ONLY, SOCKET_ROLES, may
from edge_runtime.station.config import LineProfile, StationConfig
from edge_runtime.station.health import Health
from edge_runtime.station.http import HttpServer
from edge_runtime.station.intake import Intake
from edge_runtime.station.metrics import Metrics
from edge_runtime.station.observe import Observer
from edge_runtime.station.store import StorageError, Store
from edge_runtime.station.verdicts import VerdictSink
from edge_runtime.station.worker import LineWorker
from edge_runtime.stream.control import Control, Refused
from edge_runtime.stream.protocol import pack
from edge_runtime.stream.publisher import Publisher
from edge_runtime.stream.security import LOCAL, Caller, Guard, check_private

log = logging.getLogger(__name__)

_MAX_VERDICTS_REPLY = 1000  # verdicts or audit entries in one reply

# An operator's feedback on a line's references: (inspector, request) -> reply fields.
_FEEDBACK: dict[str, Callable[[object, dict], dict]] = {
    "ack_alert": lambda i, r: {"alert": i.ack_alert(r["id"]).id},
    "label": lambda i, r: {"part": r["part"], "reference": i.label(r["part"], r["label"])},
    "accept_shift": lambda i, r: {"references": i.accept_shift()},
    "pin": lambda i, r: {"part": r["part"], "pinned": i.pin(r["part"])},
}


def load_inspector(profile: LineProfile, line: str):
    """The real inspector of a line (loads its encoders)."""
    from edge_runtime.inspection.inspector import LineInspector

    return LineInspector(profile.settings, line)


class Station:
    """A running station for ``config``.

    inspector_factory(profile, line) -> LineInspector; the default loads the
    profile's encoders.
    """

    def __init__(self, config: StationConfig,
                 inspector_factory: Callable[[LineProfile, str], object] = load_inspector):
        self.config = config
        self._factory = inspector_factory
        self.metrics = Metrics()
        self.health_state = Health()
        self.observer = Observer(served=lambda line: line in self.workers)
        self.observer.watch(lambda: self.status() if self.phase == "serving" else None)
        self.http: HttpServer | None = None
        self.phase = "stopped"
        self.workers: dict[str, LineWorker] = {}
        self._stop_requested = threading.Event()
        self._switch_lock = threading.Lock()
        self._started = False

    # --- life cycle ----------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        self.store = Store(cfg.state_dir, cfg.synchronous)
        self.health_state.notices = self.store.quarantined  # the store appends what it moves aside
        self.ctx = zmq.Context()
        self.guard = None
        try:
            if cfg.keys_dir is not None:
                self.guard = Guard(self.ctx, cfg.keys_dir, SOCKET_ROLES, self._refused_connection,
                                   names={"reject": cfg.reject_gate} if cfg.reject_gate else None)
                if cfg.reject and not cfg.reject_gate:
                    log.warning("any observer key may connect to the reject-gate socket and take verdicts away "
                                "from the gate: name the gate's key in [security] reject_gate")
                if cfg.profiles_dir is not None and cfg.profiles_dir.is_dir():
                    try:
                        check_private(cfg.profiles_dir, "profiles folder")
                    except PermissionError as exc:
                        log.warning("%s: whoever writes there chooses what a switch loads", exc)
            self.publisher = Publisher(self.ctx, cfg.verdicts, cfg.reject, guard=self.guard, on_leave=self._gate_took)
            self.sink = VerdictSink(self.store, self.publisher, self.metrics, self.health_state)
            self.intake = Intake(self.ctx, cfg, self.workers.get, lambda: list(self.workers), self.store,
                                 self.sink, self.metrics, guard=self.guard)
            self.control = Control(self.ctx, cfg.control, self.handle, guard=self.guard, on_answer=self._audit)
            self.sink.listeners.append(self.observer.on_verdict)
            if cfg.http.enabled:
                # the control socket's own validation, dispatch and audit; a token names an operator
                self.http = HttpServer(self, cfg.http, self.observer, lambda request, name: self.control.respond(
                    [pack(request)], Caller(name, "operator", "dashboard")))
        except (zmq.ZMQError, OSError, ValueError) as exc:
            self._close()
            what = "bind the station's sockets" if isinstance(exc, zmq.ZMQError) else "secure the station"
            raise OSError(f"cannot {what}: {exc}") from None
        self.phase = "starting"
        try:
            if self.http is not None:
                self.http.start()
            self._load_lines()
        except BaseException:
            self._close()
            raise
        self.started_at = time.time()
        self._audit_entry(str(LOCAL), None, None, "start",
                          "ok", "CURVE on, keys " + str(cfg.keys_dir) if self.guard else "no [security]")
        if self.publisher.reject_endpoint is not None:
            backlog = self.store.gate_backlog()
            if backlog:
                log.info("reject gate: %d verdicts from before the restart wait for it", len(backlog))
            self.publisher.restore(backlog)
        self.publisher.start()
        for worker in self.workers.values():
            worker.start()
        self._recover()
        self.intake.start()
        self.control.start()
        self._started = True
        self.phase = "serving"
        log.info("station up%s: frames %s, verdicts %s, control %s%s%s; lines %s; state %s",
                 f" with CURVE (keys {cfg.keys_dir})" if self.guard else "",
                 self.intake.endpoint, self.publisher.endpoint, self.control.endpoint,
                 f", dashboard {self.http.url}" if self.http else "",
                 f", reject gate {self.publisher.reject_endpoint}" if self.publisher.reject_endpoint else "",
                 ", ".join(f"{n} ({w.status['window']}/{w.status['capacity']} warm)" for n, w in self.workers.items()),
                 cfg.state_dir)

    def _load_lines(self) -> None:
        """A worker per configured line, on the profile it was last switched to."""
        cfg = self.config
        switched = self.store.line_profiles()
        for line, profile in cfg.lines.items():
            if line in switched and switched[line] != profile.name:
                try:
                    profile = cfg.resolve_profile(switched[line])
                    log.info("line %s resumes the profile it was switched to: %s", line, profile.source)
                except (OSError, ValueError) as exc:
                    log.warning("line %s: switched profile %s unusable (%s); using %s",
                                line, switched[line], exc, profile.source)
            self.workers[line] = self._new_worker(line, profile)

    @property
    def endpoints(self) -> dict[str, str | None]:
        """The bound endpoints (real ports when the config asked for ``:*``)."""
        return {"frames": self.intake.endpoint, "verdicts": self.publisher.endpoint,
                "control": self.control.endpoint, "reject": self.publisher.reject_endpoint,
                "http": self.http.url if self.http else None,
                **{f"frames.{line}": ep for line, ep in self.intake.line_endpoints.items()}}

    def request_stop(self) -> None:
        """Ask for a graceful shutdown (signal handlers, the control socket)."""
        self._stop_requested.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a shutdown is requested; True if it was."""
        return self._stop_requested.wait(timeout)

    def run(self) -> None:
        """start, serve until a shutdown is requested, stop."""
        self.start()
        try:
            while not self._stop_requested.wait(0.2):
                pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Graceful shutdown: drain, decide, persist, close. Raises StorageError (after
        closing everything) when a window or a verdict could not be saved."""
        if not self._started:
            return
        self._started = False
        self.phase = "stopping"
        log.info("station stopping: draining in-flight parts")
        self.intake.stop()
        self.intake.join()
        for worker in self.workers.values():
            worker.finish()
        for worker in self.workers.values():
            worker.join()
        self.publisher.stop()
        self.publisher.join()
        self.control.stop()
        self.control.join()
        failures = [f"line {w.line}: window not saved: {w.save_error}" for w in self.workers.values() if w.save_error]
        unlogged = self.sink.log_unlogged()
        if unlogged:
            failures.append(f"{unlogged} published verdicts are not in the verdict log (after a restart "
                            "their parts may be answered again)")
        backlog = len(self.store.gate_backlog()) if self.publisher.reject_endpoint else 0
        if self.http is not None:
            self.http.stop()
        self.phase = "stopped"
        if self.guard is not None:
            self.guard.stop()
        self.store.close()
        self.ctx.term()
        if backlog:
            log.warning("%d verdicts wait for the reject gate in %s; sent when it connects after a restart",
                        backlog, self.store.path)
        if failures:
            raise StorageError("station stopped, but not everything was saved: " + "; ".join(failures))
        log.info("station stopped; windows saved in %s", self.config.state_dir)

    def _gate_took(self, verdict) -> None:
        """A verdict left the reject gate's backlog (publisher thread): forget it in the store."""
        try:
            self.store.gate_taken(verdict.line, verdict.part)
        except StorageError as exc:  # it will be sent to the gate again after a restart
            self.health_state.set("storage.gate", str(exc))
        else:
            self.health_state.clear("storage.gate")

    def health(self) -> dict:
        """{"degraded": bool, "reasons": {key: message}, "since": {key: epoch s}, "notices": [...]}
        (see ``edge_runtime.station.health``); looks at the free space and retries the
        verdicts waiting to be logged first, so a station that recovered says so."""
        if self._started:
            self.intake.floor.refusal()
            self.sink.log_unlogged()
        return self.health_state.snapshot()

    def _close(self) -> None:
        """Undo a start that failed half-way."""
        self.phase = "stopped"
        if self.http is not None:
            self.http.stop()
        if self.guard is not None:
            self.guard.stop()
        self.ctx.destroy(linger=0)
        self.store.close()

    # --- lines -------------------------------------------------------------

    def _new_worker(self, line: str, profile: LineProfile) -> LineWorker:
        inspector = self._load_line(line, profile)
        return LineWorker(line, profile, inspector, self.store, self.sink, self.metrics.line(line),
                          self.config.snapshot_every)

    def _load_line(self, line: str, profile: LineProfile):
        """An inspector for ``profile``, with the line's saved window for it when there is one."""
        t = time.perf_counter()
        inspector = self._factory(profile, line)
        state = self.store.load_window(line, profile.window_key)
        if state is not None:
            try:
                inspector.load_state(state)
            except (ValueError, KeyError, TypeError) as exc:
                self.store.quarantine_window(line, profile.window_key, f"not usable ({exc})")
                inspector.reset()
        log.info("line %s: profile %s loaded in %.1f s, window %d/%d", line, profile.source,
                 time.perf_counter() - t, inspector.status()["window"], inspector.status()["capacity"])
        return inspector

    def _recover(self) -> None:
        """Parts a crash left in the store go through the intake again."""
        scored, waiting = self.intake.replay(self.store.stored_parts())
        if scored or waiting:
            log.info("recovery: %d stored parts re-scored, %d wait for their missing frames", scored, waiting)

    # --- control -------------------------------------------------------------

    def handle(self, request: dict, caller: Caller = LOCAL) -> dict:
        """Answer one validated control request from ``caller`` (runs in the control thread)."""
        cmd = request["cmd"]
        if not may(caller, cmd):
            raise Refused("forbidden", f"{caller} may not run {cmd!r} (needs the role "
                                       f"{' or '.join(sorted(COMMAND_ROLES[cmd]))})")
        if cmd == "status":
            return self.status(request.get("line"))
        if cmd == "shutdown":
            self.request_stop()
            return {"message": "shutting down: draining in-flight parts, then saving windows"}
        if cmd == "switch":
            return self.switch(request["line"], request["profile"])
        if cmd == "verdicts":
            parts = request.get("parts")
            if parts is not None and (not isinstance(parts, list) or len(parts) > _MAX_VERDICTS_REPLY
                                      or not all(isinstance(p, str) for p in parts)):
                raise ValueError(f"parts must be a list of at most {_MAX_VERDICTS_REPLY} part ids")
            return {"verdicts": self.store.verdicts(request["line"], _last(request), parts)}
        if cmd == "audit":
            return {"audit": self.store.audit_log(_last(request))}
        if cmd == "snapshot":
            names = [request["line"]] if request.get("line") else list(self.workers)
            return {"snapshots": {n: self._worker(n).call(LineWorker.snapshot) for n in names}}
        worker = self._worker(request["line"])
        if cmd == "reset":
            worker.call(LineWorker.reset)
        elif cmd == "clear_threshold":
            worker.call(LineWorker.clear_threshold)
        elif cmd == "set_threshold":
            try:
                value = check_threshold(request["value"])
            except ValueError as exc:
                raise Refused("out_of_range", str(exc)) from None
            source = request.get("source", "manual")
            worker.call(lambda w: w.set_threshold(value, source))
        elif cmd in _FEEDBACK:
            answer = worker.call(lambda w: w.operate(lambda inspector: _FEEDBACK[cmd](inspector, request)))
            return {"line": worker.line, **answer, "status": worker.status}
        return {"line": worker.line, "status": worker.status}

    def _audit(self, caller: Caller, request: dict | None, raw: bytes, reply: dict) -> None:
        """Record a control request that changed something or was refused."""
        cmd = request["cmd"] if request is not None else None
        if reply["ok"] and cmd in READ_ONLY:
            return
        what = json.dumps(request, default=str) if request is not None else f"unreadable request, {len(raw)} bytes"
        result = "ok" if reply["ok"] else reply.get("code", "failed")
        self._audit_entry("local" if caller.local else caller.name, None if caller.local else caller.role,
                          caller.address, what, result, "" if reply["ok"] else str(reply.get("error", "")))

    def _refused_connection(self, socket: str, address: str, caller: Caller | None, reason: str) -> None:
        self._audit_entry(caller.name if caller else "unknown key", caller.role if caller else None, address,
                          f"connect to the {socket} socket", "refused", reason)

    def _free_bytes(self) -> int | None:
        try:
            return self.store.free_bytes()
        except OSError:  # the state directory cannot be read: /readyz says so
            return None

    def _audit_entry(self, who: str, role: str | None, address: str | None, what: str, result: str,
                     detail: str = "") -> None:
        """One audit entry; a store that cannot write degrades the station rather than fail the caller."""
        try:
            self.store.audit(who, role, address, what, result, detail)
        except StorageError as exc:
            self.health_state.set("storage.audit", str(exc))
        else:
            self.health_state.clear("storage.audit")

    def _worker(self, line: str) -> LineWorker:
        worker = self.workers.get(line)
        if worker is None:
            raise ValueError(f"unknown line {line!r}; lines: {', '.join(sorted(self.workers))}")
        return worker

    def switch(self, line: str, name: str) -> dict:
        """Serve ``line`` with the profile named ``name`` (in profiles_dir); a new line
        starts serving. A path, an unknown name or an invalid profile is refused before
        anything changes. Other lines keep running: the new inspector is loaded here,
        then swapped in between two parts."""
        with self._switch_lock:
            try:
                profile = self.config.resolve_profile(name)
            except FileNotFoundError as exc:
                raise Refused("unknown_profile", str(exc), profiles=self.config.profile_names()) from None
            except ValueError as exc:
                raise Refused("invalid_profile", str(exc)) from None
            worker = self.workers.get(line)
            if worker is None:
                worker = self._new_worker(line, profile)
                worker.start()
                self.workers[line] = worker
                self.store.set_line_profile(line, profile.name)
            else:
                inspector = self._load_line(line, profile)
                worker.call(lambda w: w.swap(profile, inspector))
        log.info("line %s switched to %s (%s)", line, profile.source, worker.inspector.profile_digest)
        return {"line": line, "source": profile.source, "profile": worker.inspector.profile_digest,
                "status": worker.status}

    def status(self, line: str | None = None) -> dict:
        names = [line] if line else list(self.workers)
        lines = {}
        for name in names:
            w = self._worker(name)
            m = w.metrics.snapshot()
            lines[name] = {
                **w.status, "product": w.profile.product, "profile_source": w.profile.source,
                "model": w.inspector.model_digest, "profile": w.inspector.profile_digest,
                "queue": w.queue.qsize(), "queue_capacity": w.queue.maxsize, "queue_bytes": w.queued_bytes,
                "queue_policy": w.profile.stream.queue_policy,
                "awaiting_frames": self.intake.pending_counts.get(name, 0), "held": self.intake.held(name),
                "busy_ms": None if w.busy_since is None else (time.monotonic() - w.busy_since) * 1e3,
                "parts_per_s": m["parts_per_s"], "latency_ms": m["latency_ms"],
                "late": m["counts"].get("late_frames", 0), "dropped": m["counts"].get("dropped_overload", 0),
                "counts": m["counts"],
            }
        station = self.metrics.station.snapshot()["counts"]
        health = self.health()  # first: it may log what waited, which the counts below then show
        return {"lines": lines, "station": {
            "uptime_s": time.time() - self.started_at, "endpoints": self.endpoints,
            "state_dir": str(self.config.state_dir), "malformed": station.get("malformed", 0),
            "counts": station, "published": self.publisher.published, "publish_queue": self.publisher.queued,
            "reject_backlog": self.publisher.reject_backlog, "pending_bytes": self.intake.pending_bytes(),
            "free_bytes": self._free_bytes(), "unlogged": len(self.sink.unlogged),
            "security": {"curve": self.guard is not None,
                         "keys_dir": None if self.config.keys_dir is None else str(self.config.keys_dir)},
            **health,
        }}


def _last(request: dict) -> int:
    last = request.get("last", 20)
    if isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= _MAX_VERDICTS_REPLY:
        raise ValueError(f"last must be an integer in [1, {_MAX_VERDICTS_REPLY}], got {str(last)[:32]}")
    return last
