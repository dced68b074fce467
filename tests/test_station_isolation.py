"""A line that falls behind never holds up another: its intake, verdicts and control answers.

The busy line is held by an operator command that waits on an event (commands
run in the line's worker between two parts), so "behind" is deterministic. The
steady line's sender sends with a send timeout: a blocked sender fails the test.
"""
from __future__ import annotations

import threading
import time

import pytest
import zmq

from edge_runtime.sim.generator import iter_parts
from edge_runtime.station.config import load_station_config
from edge_runtime.station.service import Station
from edge_runtime.stream.protocol import encode_frame
from tests.station_helpers import SMALL_3D, Client, free_endpoint, merged, running, write_station

pytestmark = pytest.mark.timeout(240)

BUSY = merged(SMALL_3D, stream={"queue": 2, "queue_policy": "block"})
STEADY = merged(SMALL_3D, stream={"queue": 2, "queue_policy": "drop_oldest"})


@pytest.fixture(scope="module")
def clouds():
    return [p.xyz for p in iter_parts("tile", 6, 0.0, seed=9, image_size=64)]


def hold(worker) -> threading.Event:
    release = threading.Event()
    threading.Thread(target=worker.call, args=(lambda w: release.wait(120),), daemon=True).start()
    time.sleep(0.2)
    return release


def steady_sender(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 1)
    push.setsockopt(zmq.SNDTIMEO, 5000)  # zmq.Again after 5 s blocked
    push.connect(endpoint)
    return push


def by_part(verdicts) -> dict[str, dict]:
    return {h["part"]: h for h, _ in verdicts}


def test_a_full_block_line_on_a_shared_socket_holds_up_nobody(tmp_path, clouds):
    config = load_station_config(write_station(tmp_path, {"busy": BUSY, "steady": STEADY}))
    with running(Station(config)) as station:
        c = Client(station.endpoints)
        c.wait_subscribed()
        steady = steady_sender(c.ctx, station.endpoints["frames"])
        release = hold(station.workers["busy"])
        for i in range(10):  # queue 2 + hold 2 wait in order; the rest is refused, not stalled
            c.push.send_multipart(encode_frame("busy", f"b{i}", i, "xyz", clouds[i % 6]))
        refused = by_part(c.verdicts(6))
        t = time.monotonic()
        served = {}
        for i in range(6):  # one at a time: the steady line keeps up with its own sender
            steady.send_multipart(encode_frame("steady", f"s{i}", i, "xyz", clouds[i]))
            served.update(by_part(c.verdicts(1)))
        status = c.request({"cmd": "status"}, timeout_ms=5000)["lines"]
        answered_while_held = time.monotonic() - t
        release.set()
        scored = by_part(c.verdicts(4))
        c.close()
    assert sorted(refused) == [f"b{i}" for i in range(4, 10)]
    assert all(h["verdict"] == "error" and h["error"]["code"] == "overload" for h in refused.values())
    assert sorted(served) == [f"s{i}" for i in range(6)]  # the steady line kept scoring beside it
    assert all(h["verdict"] != "error" for h in served.values())
    assert status["busy"]["queue"] == 2 and status["busy"]["held"] == 2 and status["steady"]["held"] == 0
    assert answered_while_held < 60
    assert sorted(scored) == [f"b{i}" for i in range(4)]
    assert all(h["verdict"] != "error" for h in scored.values())


def test_a_block_line_on_its_own_socket_slows_only_its_own_sender(tmp_path, clouds):
    busy_frames = free_endpoint()
    config = load_station_config(write_station(tmp_path, {"busy": BUSY, "steady": STEADY},
                                               station={"rcvhwm": 2}, line_frames={"busy": busy_frames}))
    big = next(iter_parts("tile", 1, 0.0, seed=9, image_size=256)).xyz  # 786 kB frames fill buffers fast
    with running(Station(config)) as station:
        assert station.endpoints["frames.busy"] == busy_frames
        c = Client(station.endpoints)
        c.wait_subscribed()
        busy = c.ctx.socket(zmq.PUSH)
        busy.setsockopt(zmq.SNDHWM, 2)
        busy.connect(busy_frames)
        steady = steady_sender(c.ctx, station.endpoints["frames"])
        release = hold(station.workers["busy"])
        sent, deadline = 0, time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                busy.send_multipart(encode_frame("busy", f"b{sent}", sent, "xyz", big), flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            sent += 1
            time.sleep(0.01)
        blocked = time.monotonic() < deadline
        served = {}
        for i in range(4):
            steady.send_multipart(encode_frame("steady", f"s{i}", i, "xyz", clouds[i]))
            served.update(by_part(c.verdicts(1)))
        release.set()
        scored = by_part(c.verdicts(sent, timeout=120))
        c.close()
    assert blocked and sent < 100, f"the busy line's sender never blocked after {sent} frames"
    assert sorted(served) == [f"s{i}" for i in range(4)]
    assert sorted(scored) == sorted(f"b{i}" for i in range(sent))
    assert all(h["verdict"] != "error" for h in scored.values())  # block on its own socket: nothing refused
