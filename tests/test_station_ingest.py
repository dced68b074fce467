"""Bad frames over real sockets: each gets an error verdict (or is counted) and the station keeps serving."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from edge_runtime.sim.generator import iter_parts
from edge_runtime.station.config import load_station_config
from edge_runtime.station.service import Station
from edge_runtime.stream.protocol import encode_frame
from tests.station_helpers import SMALL_3D, Client, running, write_station

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def parts():
    return list(iter_parts("tile", 8, 0.0, seed=3, image_size=64))


def with_header(message, **changes):
    obj = msgpack.unpackb(message[0])
    obj.update(changes)
    for k in [k for k, v in obj.items() if v is ...]:
        del obj[k]
    return [msgpack.packb(obj), *message[1:]]


def test_malformed_frames_get_error_verdicts_and_the_station_keeps_serving(tmp_path, parts):
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D}))
    xyz, rgb = parts[0].xyz, parts[0].rgb
    good = encode_frame("tile", "x", 0, "xyz", xyz)
    bad = {
        "b-trunc": [good[0], good[1][: len(good[1]) // 2]],
        "b-dtype": encode_frame("tile", "b-dtype", 0, "xyz", xyz.astype(np.float64)),
        "b-shape": with_header(good, shape=[32, 64, 3]),
        "b-png-shape": with_header(encode_frame("tile", "b-png-shape", 0, "rgb", rgb, "png"), shape=[64, 32, 3]),
        "b-png-garbage": [encode_frame("tile", "b-png-garbage", 0, "rgb", rgb, "png")[0], b"\x89PNG\r\n\x1a\n garbage"],
        "b-nofield": with_header(good, ts=...),
        "b-version": with_header(good, v=7),
        "b-unknown": encode_frame("press", "b-unknown", 0, "xyz", xyz),
    }
    expected_codes = {"b-trunc": "truncated", "b-dtype": "dtype", "b-shape": "size", "b-png-shape": "shape",
                      "b-png-garbage": "decode", "b-nofield": "bad_header", "b-version": "version",
                      "b-unknown": "unknown_line"}
    anonymous = [[b"\x00\xffnot msgpack at all"], [b"\x93\x01\x02", b"", b""], [msgpack.packb({"v": 1}), b""]]
    with running(Station(config)) as station:
        client = Client(station.endpoints)
        client.wait_subscribed()
        for name, message in bad.items():
            message = with_header(message, part=name, line=("press" if name == "b-unknown" else "tile"))
            client.push.send_multipart(message)
        for message in anonymous:
            client.push.send_multipart(message)
        for i, part in enumerate(parts[:6]):
            client.push.send_multipart(encode_frame("tile", f"good-{i}", i, "xyz", part.xyz))
        got = {h["part"]: h for h, _ in client.verdicts(len(bad) + 6)}
        status = client.request({"cmd": "status"})
        client.close()
    for name, code in expected_codes.items():
        assert got[name]["verdict"] == "error", got[name]
        assert got[name]["error"]["code"] == code, got[name]
        assert name in got[name]["error"]["message"] or code == "unknown_line"
    assert "press" in got["b-unknown"]["error"]["message"]
    goods = [got[f"good-{i}"] for i in range(6)]
    assert [g["verdict"] for g in goods[:4]] == ["inconclusive"] * 4  # window below min_window = 5
    assert all(g["verdict"] in ("ok", "ng") for g in goods[5:])
    assert status["ok"] and status["station"]["malformed"] == len(anonymous)
    assert status["lines"]["tile"]["counts"]["verdict_error"] == len(bad) - 1  # "press" is not a line here
