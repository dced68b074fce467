"""When a line falls behind nothing is lost silently: senders block, or dropped parts get `overload`.

The line is held busy by an operator command that waits on an event (it runs
in the line's worker between two parts, as every command does), so "behind"
is deterministic instead of a race against the machine's speed.
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
from tests.station_helpers import SMALL_3D, Client, merged, running, write_station

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cloud():
    return next(iter_parts("tile", 1, 0.0, seed=9, image_size=64)).xyz


def hold(worker) -> threading.Event:
    """Keep ``worker`` busy until the returned event is set."""
    release = threading.Event()
    threading.Thread(target=worker.call, args=(lambda w: release.wait(60),), daemon=True).start()
    time.sleep(0.2)
    return release


def test_drop_oldest_answers_every_dropped_part_with_overload(tmp_path, cloud):
    profile = merged(SMALL_3D, stream={"queue": 2, "queue_policy": "drop_oldest"})
    config = load_station_config(write_station(tmp_path, {"tile": profile}))
    with running(Station(config)) as station:
        c = Client(station.endpoints)
        c.wait_subscribed()
        release = hold(station.workers["tile"])
        for i in range(10):
            c.push.send_multipart(encode_frame("tile", f"p{i}", i, "xyz", cloud))
        dropped = c.verdicts(8)
        release.set()
        scored = c.verdicts(2)
        status = c.request({"cmd": "status", "line": "tile"})["lines"]["tile"]
        c.close()
    assert [h["part"] for h, _ in dropped] == [f"p{i}" for i in range(8)]  # oldest first
    assert all(h["verdict"] == "error" and h["error"]["code"] == "overload" for h, _ in dropped)
    assert [h["part"] for h, _ in scored] == ["p8", "p9"]
    assert all(h["verdict"] != "error" for h, _ in scored)
    assert status["dropped"] == 8


def test_block_policy_makes_senders_wait_and_loses_nothing(tmp_path):
    big = next(iter_parts("tile", 1, 0.0, seed=9, image_size=256)).xyz  # 786 kB frames fill buffers fast
    profile = merged(SMALL_3D, stream={"queue": 1, "queue_policy": "block"})
    config = load_station_config(write_station(tmp_path, {"tile": profile}, station={"rcvhwm": 2}))
    with running(Station(config)) as station:
        c = Client(station.endpoints)
        c.push.setsockopt(zmq.SNDHWM, 2)
        c.wait_subscribed()
        release = hold(station.workers["tile"])
        sent = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                c.push.send_multipart(encode_frame("tile", f"p{sent}", sent, "xyz", big), flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            sent += 1
            time.sleep(0.01)
        blocked = time.monotonic() < deadline
        queued = station.workers["tile"].queue.qsize()
        release.set()
        got = c.verdicts(sent, timeout=120)
        c.close()
    assert blocked, f"the sender never blocked after {sent} frames"
    assert sent < 100 and queued == 1
    assert sorted(h["part"] for h, _ in got) == sorted(f"p{i}" for i in range(sent))
    assert not [h for h, _ in got if h["verdict"] == "error"]
