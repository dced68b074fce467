"""The station's HTTP server: health, readiness, Prometheus metrics and the live dashboard.

aiohttp serves it: one maintained dependency that is both the server and its
streaming responses (server-sent events), run in its own thread and event loop
with no ASGI server to embed. The listening socket is bound when the station
binds its ZeroMQ sockets, so a busy port stops the start-up with a clear
message; the server answers from then on (``/readyz`` says 503 while the lines load).

Routes:

- ``GET /healthz``: 200 ``ok`` while the process answers;
- ``GET /readyz``: 200 ``{"ready": true}``, or 503 ``{"ready": false, "reasons": [...]}``
  until every configured line is loaded and running, while the state directory
  cannot be written, while the station reports itself degraded;
- ``GET /metrics``: Prometheus text format (``observe.Observer``);
- ``GET /``: the dashboard (``dashboard/``), read-only;
- ``GET /api/state``: status plus each line's recent verdicts, ng parts, threshold history;
- ``GET /api/events``: server-sent events, ``verdict`` per verdict, ``status`` every second;
- ``GET /api/lines/{line}/parts/{part}/picture.png``: a recent ng part, its map over its image;
- ``GET /api/whoami``: whom the bearer token names and which actions it unlocks;
- ``POST /api/control``: an operator action, the control socket's request as JSON, with
  ``Authorization: Bearer <token>`` (``[http] operator_tokens``); 401 without a known token.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_runtime.station.config import HttpSettings
from edge_runtime.station.observe import Observer

log = logging.getLogger(__name__)

DASHBOARD = Path(__file__).with_name("dashboard")
# What an operator can do from the dashboard; everything else stays on the control socket.
OPERATOR_ACTIONS = ("ack_alert", "label", "switch", "set_threshold", "accept_shift")
STATUS_EVERY_S = 1.0
KEEPALIVE_S = 15.0
CLIENT_BACKLOG = 1000  # events queued for one slow page before it is cut off (it reconnects)
_MAX_REQUEST_BYTES = 64 * 1024


def state_dir_writable(path: Path) -> str | None:
    """None, or why a file cannot be created in ``path`` now."""
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".ready-", delete=True) as fh:
            fh.write(b"ok")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return f"state directory {path} is not writable: {exc.strerror or exc}"
    return None


def readiness(station) -> list[str]:
    """Why ``station`` should not get traffic yet (empty: ready)."""
    if station.phase != "serving":
        return [f"station is {station.phase}"]
    reasons = [f"line {line}: {'not running' if line in station.workers else 'not loaded'}"
               for line in station.config.lines
               if line not in station.workers or not station.workers[line].is_alive()]
    unwritable = state_dir_writable(station.config.state_dir)
    if unwritable:
        reasons.append(unwritable)
    status = station.status()
    if status["station"].get("degraded"):
        reasons.append(f"station degraded: {status['station']['degraded']}")
    reasons += [f"line {n}: degraded: {s['degraded']}" for n, s in status["lines"].items() if s.get("degraded")]
    return reasons


def _json(obj, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(obj, default=str), status=status, content_type="application/json")


def _bind(settings: HttpSettings) -> socket.socket:
    if not settings.host.startswith("127.") and settings.host not in ("localhost", "::1"):
        log.warning("HTTP on %s: the dashboard and /metrics are reachable beyond this machine, without TLS; "
                    "operator tokens travel in clear (put a TLS reverse proxy in front)", settings.url)
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot serve HTTP on {settings.url}: {exc.strerror or exc} (set [http] port in "
                      "station.toml, 0 = any free port, or enabled = false)") from None
    sock.setblocking(False)
    return sock


class HttpServer:
    """Serves ``station`` (a Station) over HTTP from its own thread.

    dispatch(request, caller) -> reply: how an operator action reaches the station
    (the control socket's validation and dispatch).
    """

    def __init__(self, station, settings: HttpSettings, observer: Observer,
                 dispatch: Callable[[dict, str], dict]):
        self._station = station
        self._observer = observer
        self._dispatch = dispatch
        self._tokens = settings.operator_tokens
        self._sock = _bind(settings)
        host, port = self._sock.getsockname()[:2]
        self.url = HttpSettings(host=host, port=port).url
        self._clients: set[asyncio.Queue] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._up = threading.Event()
        self._failed: BaseException | None = None

    # --- life cycle -----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._up.wait()
        if self._failed is not None:
            raise RuntimeError(f"the HTTP server did not start: {self._failed}")

    def stop(self) -> None:
        """Close the event streams, finish the requests in flight, end the thread."""
        if not self._thread.is_alive():
            self._sock.close()
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        app.add_routes([
            web.get("/healthz", self._healthz), web.get("/readyz", self._readyz),
            web.get("/metrics", self._metrics), web.get("/", self._index),
            web.get("/api/state", self._state), web.get("/api/events", self._events),
            web.get("/api/lines/{line}/parts/{part}/picture.png", self._picture),
            web.get("/api/whoami", self._whoami), web.post("/api/control", self._control),
            web.static("/static", DASHBOARD),
        ])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        try:
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
            self._ticker = self._loop.create_task(self._tick())
            self._observer.subscribe(self._from_thread)
        except BaseException as exc:
            self._failed = exc
            self._up.set()
            self._loop.close()
            return
        self._up.set()
        try:
            self._loop.run_forever()
        finally:
            self._observer.unsubscribe(self._from_thread)
            self._loop.close()

    async def _shutdown(self) -> None:
        self._ticker.cancel()
        for client in list(self._clients):
            self._end(client)
        await self._runner.cleanup()

    # --- events -----------------------------------------------------------------

    def _from_thread(self, event: str, data: dict) -> None:
        self._loop.call_soon_threadsafe(self._broadcast, event, data)

    def _broadcast(self, event: str, data: dict) -> None:
        message = f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()
        for client in list(self._clients):
            try:
                client.put_nowait(message)
            except asyncio.QueueFull:
                log.warning("dashboard client too slow: %d events behind, disconnecting it", CLIENT_BACKLOG)
                self._end(client)

    def _end(self, client: asyncio.Queue) -> None:
        self._clients.discard(client)
        while not client.empty():
            client.get_nowait()
        client.put_nowait(None)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            if self._clients and self._station.phase == "serving":
                status = await self._loop.run_in_executor(None, self._station.status)
                self._broadcast("status", status)

    # --- handlers -----------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        reasons = await self._loop.run_in_executor(None, readiness, self._station)
        return _json({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._loop.run_in_executor(None, generate_latest, self._observer.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(DASHBOARD / "index.html")

    async def _state(self, request: web.Request) -> web.Response:
        if self._station.phase != "serving":
            return _json({"error": f"station is {self._station.phase}"}, 503)
        status = await self._loop.run_in_executor(None, self._station.status)
        seen = self._observer.lines()
        empty = {"feed": [], "ng": [], "thresholds": []}
        lines = {name: {**s, **seen.get(name, empty)} for name, s in status["lines"].items()}
        # parts sent for a line this station does not serve: their error verdicts are worth seeing
        lines.update({name: {"served": False, **s} for name, s in seen.items() if name not in lines})
        return _json({"station": status["station"], "lines": lines})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        client: asyncio.Queue = asyncio.Queue(maxsize=CLIENT_BACKLOG)
        self._clients.add(client)
        try:
            await response.write(b"retry: 2000\n\n")
            while True:
                try:
                    message = await asyncio.wait_for(client.get(), KEEPALIVE_S)
                except asyncio.TimeoutError:
                    message = b": keep-alive\n\n"
                if message is None:
                    break
                await response.write(message)
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the page went away
        finally:
            self._clients.discard(client)
        return response

    async def _picture(self, request: web.Request) -> web.Response:
        line, part = request.match_info["line"], request.match_info["part"]
        png = await self._loop.run_in_executor(None, self._observer.picture, line, part)
        if png is None:
            return _json({"error": f"part {part!r} is not among line {line!r}'s last ng parts"}, 404)
        return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "max-age=3600"})

    def _caller(self, request: web.Request) -> str | None:
        """The operator a bearer token names, or None."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = None
        for name, known in self._tokens:  # compare with every token: no early exit to time
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                found = name
        return found

    async def _whoami(self, request: web.Request) -> web.Response:
        name = self._caller(request)
        if name is None:
            return _json({"role": "viewer", "actions": []})
        return _json({"role": "operator", "name": name, "actions": list(OPERATOR_ACTIONS)})

    async def _control(self, request: web.Request) -> web.Response:
        name = self._caller(request)
        if name is None:
            return _json({"ok": False, "code": "unauthorized",
                          "error": "operator actions need 'Authorization: Bearer <token>' ([http] operator_tokens)"},
                         401)
        try:
            body = await request.json()
        except ValueError as exc:
            return _json({"ok": False, "code": "bad_request", "error": f"the body is not JSON: {exc}"}, 400)
        if not isinstance(body, dict) or body.get("cmd") not in OPERATOR_ACTIONS:
            cmd = body.get("cmd") if isinstance(body, dict) else None
            return _json({"ok": False, "code": "forbidden",
                          "error": f"{cmd!r} is not a dashboard action; actions: {', '.join(OPERATOR_ACTIONS)}"}, 403)
        reply = await self._loop.run_in_executor(None, self._dispatch, body, name)
        log.info("dashboard: operator %s: %s -> %s", name, body, "ok" if reply.get("ok") else reply.get("error"))
        return _json(reply, 200 if reply.get("ok") else 400)
