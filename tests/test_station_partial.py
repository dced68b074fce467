"""A part missing one sensor at the pairing timeout: scored on what it has, or inconclusive.

Also the reject gate: a reliable PUSH output that delivers every verdict, even to
a gate that connects late.
"""
from __future__ import annotations

import pytest
import zmq

from edge_runtime.sim.generator import iter_parts
from edge_runtime.station.config import load_station_config
from edge_runtime.station.service import Station
from edge_runtime.stream.protocol import encode_frame, parse_verdict
from tests.station_helpers import Client, free_endpoint, merged, running, write_station

pytestmark = pytest.mark.timeout(240)

BOTH = {  # 2D+3D on the default encoders, small 3D groups and window
    "line": {"modalities": ["2d", "3d"], "window": 6, "min_window": 5, "allow_partial": True},
    "pointcloud": {"groups": 64, "group_size": 16},
    "stream": {"pair_timeout_ms": 400},
}


def test_partial_parts_and_the_reject_gate(tmp_path):
    strict = merged(BOTH, line={"allow_partial": False})
    endpoints = {k: free_endpoint() for k in ("frames", "verdicts", "control", "reject")}
    config = load_station_config(write_station(tmp_path, {"lenient": BOTH, "strict": strict}, endpoints=endpoints))
    sims = list(iter_parts("cookie", 7, 0.0, seed=4, image_size=224))
    with running(Station(config)) as station:
        c = Client(station.endpoints)
        c.wait_subscribed()
        for i, sim in enumerate(sims[:6]):
            for sensor in ("rgb", "xyz"):
                c.push.send_multipart(encode_frame("lenient", f"full-{i}", i, sensor, getattr(sim, sensor),
                                                   "png" if sensor == "rgb" else "raw"))
        warm = [h for h, _ in c.verdicts(6)]
        c.push.send_multipart(encode_frame("lenient", "only-xyz", 6, "xyz", sims[6].xyz))
        c.push.send_multipart(encode_frame("strict", "only-rgb", 7, "rgb", sims[6].rgb, "png"))
        late = {h["part"]: h for h, _ in c.verdicts(2)}
        c.push.send_multipart(encode_frame("lenient", "only-xyz", 6, "rgb", sims[6].rgb, "png"))  # too late
        gate = c.ctx.socket(zmq.PULL)  # the reject gate connects only now
        gate.connect(station.endpoints["reject"])
        delivered = []
        while len(delivered) < 8 and gate.poll(10_000):
            delivered.append(parse_verdict(gate.recv_multipart())[0]["part"])
        status = c.request({"cmd": "status"})["lines"]
        c.close()
    assert warm[-1]["verdict"] in ("ok", "ng")
    partial = late["only-xyz"]
    assert partial["modalities"] == ["3d"] and partial["verdict"] in ("ok", "ng"), partial
    assert partial["latency_ms"]["pair_wait"] >= 400
    refused = late["only-rgb"]
    assert refused["verdict"] == "inconclusive" and refused["error"]["code"] == "missing_frames"
    assert "xyz" in refused["error"]["message"] and refused["modalities"] == ["2d"]
    assert status["lenient"]["late"] == 1
    assert sorted(delivered) == sorted([f"full-{i}" for i in range(6)] + ["only-xyz", "only-rgb"])
