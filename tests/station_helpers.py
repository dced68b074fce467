"""Shared pieces of the station tests: small profiles, configs on disk, a socket client."""
from __future__ import annotations

import contextlib
import socket
import sys
import time
from pathlib import Path

import msgpack
import zmq

from edge_runtime.stream.security import secure_client

# A 3D-only line that the real inspector scores in tens of milliseconds (FPFH on 64 x 64 clouds).
SMALL_3D = {
    "line": {"modalities": ["3d"], "window": 8, "min_window": 5, "image_size": 64},
    "pointcloud": {"groups": 48, "group_size": 16},
    "output": {"map": True},
    "stream": {"pair_timeout_ms": 500, "queue": 8},
}


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def toml_doc(doc: dict) -> str:
    out = []
    for section, table in doc.items():
        out.append(f"[{section}]")
        out += [f"{k} = {toml_value(v)}" for k, v in table.items()]
        out.append("")
    return "\n".join(out)


def merged(base: dict, **sections) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for section, table in sections.items():
        out.setdefault(section, {}).update(table)
    return out


def write_station(root: Path, lines: dict[str, dict], station: dict | None = None,
                  endpoints: dict | None = None, line_frames: dict | None = None,
                  http: dict | None = None, security: dict | None = None) -> Path:
    """station.toml + lines/<name>.toml under ``root``; endpoints on free ports unless given;
    line_frames: line -> its own frame socket ([endpoints.lines]); the HTTP server on an
    ephemeral port (``http`` adds to or replaces ``port = 0``); security: the [security]
    table (keys_dir, reject_gate)."""
    (root / "lines").mkdir(parents=True, exist_ok=True)
    for name, profile in lines.items():
        (root / "lines" / f"{name}.toml").write_text(toml_doc(profile))
    eps = endpoints or {k: free_endpoint() for k in ("frames", "verdicts", "control")}
    doc = {"station": {"state_dir": str(root / "state"), "snapshot_every": 4, **(station or {})},
           "endpoints": eps, "lines": {"profiles_dir": "lines", "enabled": list(lines)},
           "http": {"port": 0, **(http or {})}}
    if line_frames:
        doc["endpoints.lines"] = line_frames
    if security is not None:
        doc["security"] = security
    path = root / "station.toml"
    path.write_text(toml_doc(doc))
    return path


class Client:
    """Sender (PUSH), subscriber (SUB, all lines) and control (REQ) of one station.

    keys: socket name ("frames", "verdicts", "control") -> the client certificate
    to use on it (``musc-edge keys add --out``), for a station with [security].
    """

    def __init__(self, endpoints: dict, keys: dict | None = None):
        self.keys = dict(keys or {})
        self.ctx = zmq.Context()
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 2000)
        secure_client(self.push, self.keys.get("frames"))
        self.push.connect(endpoints["frames"])
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"verdict.")
        secure_client(self.sub, self.keys.get("verdicts"))
        self.sub.connect(endpoints["verdicts"])
        self.control_endpoint = endpoints["control"]

    def request(self, obj, timeout_ms: int = 60000, key="control") -> dict:
        """One control request; a fresh REQ socket per call so a timeout cannot wedge it.
        key: "control" (the one in ``keys``), another certificate path, or None for a plain socket."""
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        secure_client(req, self.keys.get("control") if key == "control" else key)
        req.connect(self.control_endpoint)
        try:
            req.send(obj if isinstance(obj, bytes) else msgpack.packb(obj))
            if not req.poll(timeout_ms):
                raise TimeoutError(f"no control reply to {obj!r}")
            return msgpack.unpackb(req.recv(), raw=False)
        finally:
            req.close()

    def wait_subscribed(self, line: str = "default", timeout: float = 10.0) -> None:
        """PUB/SUB joins asynchronously: ask status until the station answers, then give the
        subscription a moment (there is no message to wait for)."""
        self.request({"cmd": "status"}, int(timeout * 1000))
        time.sleep(0.3)

    def verdicts(self, n: int, timeout: float = 60.0) -> list[tuple[dict, bytes | None]]:
        """The next ``n`` verdicts (header, map PNG or None)."""
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sub.poll(int(left * 1000)):
                raise TimeoutError(f"got {len(out)} of {n} verdicts: {[h['part'] for h, _ in out]}")
            msg = self.sub.recv_multipart()
            out.append((msgpack.unpackb(msg[1], raw=False), msg[2] if len(msg) > 2 else None))
        return out

    def close(self) -> None:
        self.ctx.destroy(linger=0)


@contextlib.contextmanager
def running(station):
    """A started in-process Station, stopped gracefully at the end."""
    station.start()
    try:
        yield station
    finally:
        station.stop()


def serve_command(config: Path) -> list[str]:
    """`musc-edge serve --config ...` as a subprocess command."""
    return [sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(config)]
