"""The control socket (REQ/REP): one request, one reply, always.

The ``Control`` thread owns the REP socket, validates each request with
``protocol.parse_request`` and hands it to the station's handler. Whatever goes
wrong (garbage, unknown command, a failing handler) is answered with
``{"ok": false, "error": ...}``, so a REQ client never hangs on a bad request.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import zmq

from edge_runtime.stream.protocol import ProtocolError, pack, parse_request
from edge_runtime.stream.sockets import bind

log = logging.getLogger(__name__)


class Control(threading.Thread):
    """handler(request) -> reply map (``ok`` is added when missing)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, handler: Callable[[dict], dict]):
        super().__init__(name="control", daemon=True)
        self._rep, self.endpoint = bind(ctx, zmq.REP, endpoint, LINGER=500)
        self._handler = handler
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                if not self._rep.poll(100):
                    continue
                message = self._rep.recv_multipart()
                self._rep.send(pack(self.answer(message)))
        finally:
            self._rep.close()

    def answer(self, message: list[bytes]) -> dict:
        if len(message) != 1:
            return {"ok": False, "error": f"a control request is one msgpack frame, got {len(message)} frames"}
        try:
            request = parse_request(message[0])
        except ProtocolError as exc:
            return {"ok": False, "error": str(exc), "code": exc.code}
        try:
            reply = self._handler(request)
        except (ValueError, KeyError, FileNotFoundError, TimeoutError, RuntimeError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a handler bug: answer, log, keep serving
            log.exception("control: %s failed", request.get("cmd"))
            return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        return {"ok": True, **reply}
