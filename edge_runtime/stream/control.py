"""The control socket (REQ/REP): one request, one reply, always.

The ``Control`` thread owns the REP socket, validates each request with
``protocol.parse_request`` and hands it, with who sent it (``Caller``: the
CURVE identity, or ``LOCAL`` without security), to the station's handler.
Whatever goes wrong (garbage, unknown command, a refusal, a failing handler)
is answered with ``{"ok": false, "code": ..., "error": ...}``, so a REQ client
never hangs on a bad request. Messages over ``MAX_REQUEST_BYTES`` never arrive:
ZeroMQ drops the connection. ``on_answer`` sees every request and its reply
(the station's audit log).
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import zmq

from edge_runtime.stream.protocol import MAX_REQUEST_BYTES, ProtocolError, pack, parse_request
from edge_runtime.stream.security import LOCAL, Caller, Guard
from edge_runtime.stream.sockets import bind

log = logging.getLogger(__name__)


class Refused(ValueError):
    """A request the handler refuses: answered ``{"ok": false, "code": code, "error": message, **fields}``."""

    def __init__(self, code: str, message: str, **fields):
        super().__init__(message)
        self.code = code
        self.fields = fields


class Control(threading.Thread):
    """handler(request, caller) -> reply map (``ok`` is added when missing).

    on_answer(caller, request or None when unreadable, raw bytes, reply): called
    after every answer, in this thread.
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, handler: Callable[[dict, Caller], dict],
                 guard: Guard | None = None,
                 on_answer: Callable[[Caller, dict | None, bytes, dict], None] | None = None):
        super().__init__(name="control", daemon=True)
        self._rep, self.endpoint = bind(ctx, zmq.REP, endpoint, "control", guard, LINGER=500,
                                        MAXMSGSIZE=MAX_REQUEST_BYTES)
        self._guard = guard
        self._handler = handler
        self._on_answer = on_answer
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                if not self._rep.poll(100):
                    continue
                frames = self._rep.recv_multipart(copy=False)
                caller = LOCAL if self._guard is None else self._guard.caller(frames[0])
                self._rep.send(pack(self.respond([f.bytes for f in frames], caller)))
        finally:
            self._rep.close()

    def respond(self, message: list[bytes], caller: Caller = LOCAL) -> dict:
        """The reply to one request, reported to ``on_answer``. Any thread may call it
        (the dashboard does); the handler is the same as for the REP socket."""
        request, reply = self.answer(message, caller)
        if self._on_answer is not None:
            try:
                self._on_answer(caller, request, b"".join(message), reply)
            except Exception:  # the reply is still due; keep serving
                log.exception("control: recording the answer to %s failed", caller)
        return reply

    def answer(self, message: list[bytes], caller: Caller = LOCAL) -> tuple[dict | None, dict]:
        """(the parsed request or None, the reply)."""
        if len(message) != 1:
            return None, {"ok": False, "code": "bad_request",
                          "error": f"a control request is one msgpack frame, got {len(message)} frames"}
        try:
            request = parse_request(message[0])
        except ProtocolError as exc:
            return None, {"ok": False, "error": str(exc), "code": exc.code}
        try:
            reply = self._handler(request, caller)
        except Refused as exc:
            return request, {"ok": False, "code": exc.code, "error": str(exc), **exc.fields}
        except (ValueError, KeyError, FileNotFoundError, TimeoutError, RuntimeError) as exc:
            return request, {"ok": False, "code": "failed", "error": str(exc)}
        except Exception as exc:  # a handler bug: answer, log, keep serving
            log.exception("control: %s failed", request.get("cmd"))
            return request, {"ok": False, "code": "internal", "error": f"internal error: {type(exc).__name__}: {exc}"}
        return request, {"ok": True, **reply}
