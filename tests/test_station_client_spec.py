"""A client written from ARCHITECTURE.md alone talks to `musc-edge serve`.

Everything on the client side here is plain pyzmq + msgpack + OpenCV, following
the "Wire protocol (version 1)" and "Default endpoints" sections; nothing from
edge_runtime.stream. The station runs as a subprocess, as it would in a plant.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import cv2
import msgpack
import numpy as np
import pytest
import zmq

from edge_runtime.sim.generator import iter_parts
from tests.station_helpers import serve_command, write_station

pytestmark = pytest.mark.timeout(300)

PROFILE = {  # 2D+3D on the default encoders; small groups and window keep it quick
    "line": {"modalities": ["2d", "3d"], "window": 6, "min_window": 5},
    "pointcloud": {"groups": 64, "group_size": 16},
    "output": {"map": True},
}


def request(ctx, endpoint, obj, timeout_ms=120_000):
    req = ctx.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(endpoint)
    req.send(msgpack.packb(obj))
    ready = req.poll(timeout_ms)
    reply = msgpack.unpackb(req.recv()) if ready else None
    req.close()
    return reply


def wait_ready(ctx, endpoint, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "station exited during start-up"
        reply = request(ctx, endpoint, {"cmd": "status"}, 1000)
        if reply is not None:
            return reply
    raise TimeoutError("station did not answer")


def frame(line, part, seq, sensor, array):
    if sensor == "rgb":
        ok, png = cv2.imencode(".png", np.ascontiguousarray(array[:, :, ::-1]))  # OpenCV writes BGR
        assert ok
        payload, encoding, dtype = png.tobytes(), "png", "uint8"
    else:
        payload, encoding, dtype = np.ascontiguousarray(array, "<f4").tobytes(), "raw", "float32"
    header = {"v": 1, "line": line, "part": part, "seq": seq, "sensor": sensor, "ts": time.time(),
              "encoding": encoding, "dtype": dtype, "shape": list(array.shape)}
    return [msgpack.packb(header), payload]


def test_a_spec_client_sends_frames_and_reads_verdicts(tmp_path):
    config = write_station(tmp_path, {"spec": PROFILE})
    text = config.read_text()
    endpoints = {k: text.split(f'{k} = "')[1].split('"')[0] for k in ("frames", "verdicts", "control")}
    sims = list(iter_parts("gland", 7, 0.0, seed=2, image_size=224))
    proc = subprocess.Popen(serve_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ctx = zmq.Context()
    try:
        status = wait_ready(ctx, endpoints["control"], proc)
        assert status["ok"] is True and "spec" in status["lines"]
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"verdict.spec")
        sub.connect(endpoints["verdicts"])
        push = ctx.socket(zmq.PUSH)
        push.connect(endpoints["frames"])
        time.sleep(0.5)
        for i, sim in enumerate(sims):  # scanner first for odd parts: pairing must not care
            order = ("rgb", "xyz") if i % 2 == 0 else ("xyz", "rgb")
            for sensor in order:
                push.send_multipart(frame("spec", f"part-{i}", 100 + i, sensor, getattr(sim, sensor)))
        got = []
        while len(got) < len(sims):
            assert sub.poll(120_000), f"only {len(got)} verdicts"
            got.append(sub.recv_multipart())
        for i, message in enumerate(got):
            assert message[0] == b"verdict.spec"
            header = msgpack.unpackb(message[1])
            for key in ("v", "line", "part", "seq", "verdict", "score", "threshold", "threshold_source",
                        "modalities", "window", "latency_ms", "model", "profile", "regions"):
                assert key in header, key
            assert header["v"] == 1 and header["line"] == "spec"
            assert (header["part"], header["seq"]) == (f"part-{i}", 100 + i)
            assert header["verdict"] in ("ok", "ng", "inconclusive", "error")
            assert sorted(header["modalities"]) == ["2d", "3d"]
            assert isinstance(header["latency_ms"], dict) and header["latency_ms"]
            if i >= 5:
                assert header["verdict"] in ("ok", "ng") and isinstance(header["score"], float)
                assert isinstance(header["threshold"], float) and header["model"] and header["profile"]
                assert len(message) == 3
                amap = cv2.imdecode(np.frombuffer(message[2], np.uint8), cv2.IMREAD_UNCHANGED)
                assert amap is not None and amap.dtype == np.uint8 and amap.ndim == 2
        unknown = request(ctx, endpoints["control"], {"cmd": "fly"})
        assert unknown["ok"] is False and "error" in unknown
        assert request(ctx, endpoints["control"], {"cmd": "shutdown"})["ok"] is True
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.destroy(linger=0)


def _ports_free(*ports: int) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@pytest.mark.skipif(not _ports_free(5555, 5556, 5557, 8080), reason="default ports 5555-5557, 8080 are in use on this machine")
def test_serve_without_config_uses_the_default_endpoints_and_line(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ctx = zmq.Context()
    try:
        status = wait_ready(ctx, "tcp://127.0.0.1:5557", proc)
        assert list(status["lines"]) == ["default"]
        assert status["station"]["endpoints"]["frames"] == "tcp://127.0.0.1:5555"
        assert status["station"]["endpoints"]["verdicts"] == "tcp://127.0.0.1:5556"
        assert status["station"]["endpoints"]["http"] == "http://127.0.0.1:8080"
        with urllib.request.urlopen("http://127.0.0.1:8080/healthz", timeout=10) as reply:
            assert reply.read() == b"ok\n"
        proc.terminate()  # SIGTERM: graceful
        assert proc.wait(60) == 0
        assert (tmp_path / "state" / "station.db").is_file()
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.destroy(linger=0)
