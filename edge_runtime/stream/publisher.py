"""Verdicts out: the PUB socket and the optional reject-gate PUSH socket.

The PUB socket (topics ``verdict.<line>`` and ``alert.<line>``) is
fire-and-forget, as PUB is; the
optional reject-gate PUSH output is reliable: a verdict the gate cannot take
yet waits in a backlog and is sent, in order, when the gate is (back) connected.
The owner keeps the backlog across restarts: ``restore`` puts verdicts back
before the thread starts, and ``on_leave`` is told of each verdict that leaves
the backlog (taken by the gate, or dropped when the backlog is full).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from typing import Callable

import zmq

from edge_runtime.stream.protocol import AlertMessage, Verdict, pack_alert, pack_verdict
from edge_runtime.stream.security import Guard
from edge_runtime.stream.sockets import bind

log = logging.getLogger(__name__)

# Subscribers send only subscriptions (a topic prefix); anything bigger drops the connection.
_MAX_INBOUND_BYTES = 4096


class Publisher(threading.Thread):
    """Owns the PUB socket and the optional reject-gate PUSH socket.

    Sockets are bound in the constructor (so a busy port fails at start-up) and
    used only by this thread afterwards. ``publish`` may be called from any thread
    and never blocks. guard: CURVE for both sockets (``edge_runtime.stream.security``), or None.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, reject_endpoint: str | None = None,
                 backlog: int = 100_000, guard: Guard | None = None,
                 on_leave: Callable[[Verdict], None] | None = None):
        super().__init__(name="publisher", daemon=True)
        self._pub, self.endpoint = bind(ctx, zmq.PUB, endpoint, "verdicts", guard, LINGER=1000,
                                        MAXMSGSIZE=_MAX_INBOUND_BYTES)
        self._reject = None
        self.reject_endpoint = None
        if reject_endpoint:
            self._reject, self.reject_endpoint = bind(ctx, zmq.PUSH, reject_endpoint, "reject", guard, LINGER=2000,
                                                      MAXMSGSIZE=_MAX_INBOUND_BYTES)
        self._queue: queue.Queue = queue.Queue()
        self._backlog: deque[tuple[Verdict, list[bytes]]] = deque()
        self._backlog_max = backlog
        self._on_leave = on_leave or (lambda verdict: None)
        self._stopping = threading.Event()
        self.published = 0
        self.reject_dropped = 0

    @property
    def reject_backlog(self) -> int:
        return len(self._backlog)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def publish(self, verdict: Verdict, map_png: bytes | None) -> None:
        self._queue.put((verdict, map_png))

    def restore(self, verdicts: list[Verdict]) -> None:
        """Verdicts the gate had not taken when the station last stopped (before ``start``;
        they were published on PUB then and only go to the gate now)."""
        if self._reject is not None:
            for verdict in verdicts:
                self._queue_for_gate(verdict)

    def publish_alert(self, alert: AlertMessage) -> None:
        """An alert goes out on PUB only (the reject gate takes verdicts)."""
        self._queue.put((alert, None))

    def stop(self) -> None:
        """Send what is queued, then close (the thread ends)."""
        self._stopping.set()

    def run(self) -> None:
        try:
            while True:
                try:
                    verdict, png = self._queue.get(timeout=0.05)
                except queue.Empty:
                    self._flush_reject()
                    if self._stopping.is_set() and self._queue.empty():
                        break
                    continue
                self._send(verdict, png)
            deadline = time.monotonic() + 2.0
            while self._backlog and time.monotonic() < deadline:
                self._flush_reject()
                time.sleep(0.01)
            if self._backlog:
                log.warning("reject gate did not take %d verdicts before shutdown", len(self._backlog))
        finally:
            self._pub.close()
            if self._reject is not None:
                self._reject.close()

    def _send(self, verdict: Verdict | AlertMessage, png: bytes | None) -> None:
        if isinstance(verdict, AlertMessage):
            self._pub.send_multipart(pack_alert(verdict))
            return
        self._pub.send_multipart(pack_verdict(verdict, png))
        self.published += 1
        if self._reject is not None:
            self._queue_for_gate(verdict)
            self._flush_reject()

    def _queue_for_gate(self, verdict: Verdict) -> None:
        if len(self._backlog) >= self._backlog_max:
            dropped, _ = self._backlog.popleft()
            self.reject_dropped += 1
            log.error("reject-gate backlog full (%d): oldest verdict (line %s part %s) dropped",
                      self._backlog_max, dropped.line, dropped.part)
            self._on_leave(dropped)
        self._backlog.append((verdict, pack_verdict(verdict)))

    def _flush_reject(self) -> None:
        while self._backlog:
            verdict, message = self._backlog[0]
            try:
                self._reject.send_multipart(message, flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            self._backlog.popleft()
            self._on_leave(verdict)
