"""A line with a systematic burst streamed part by part through the real station (sockets,
encoders, SQLite, windows on disk): one line with the guard, one with it off in its profile.

With the guard the burst stays ng, an alert comes within 5 parts of its start and
the threshold stays within 15 % of its level before the burst; without it the
window learns the burst. Alerts are persisted, and the operator's commands
(ack_alert, label, accept_shift, pin) work over the control socket.
"""
from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest
import zmq

from edge_runtime.sim.generator import Burst, iter_parts
from edge_runtime.station.config import load_station_config
from edge_runtime.station.service import Station
from edge_runtime.stream.protocol import AlertMessage, encode_frame, parse_alert
from tests.station_helpers import Client, merged, running, write_station

pytestmark = pytest.mark.timeout(1500)

PROFILE = {
    "line": {"modalities": ["2d", "3d"], "window": 16, "min_window": 8},
    "pointcloud": {"groups": 256, "group_size": 32},
    # as in test_guard: on a window of 16 the window-scaled fusion's turnover noise alone moves the
    # MAD threshold by up to ~22% after the burst (flat during it)
    "scoring": {"fusion": "sum"},
    "stream": {"pair_timeout_ms": 10000, "queue": 8},
}
LINES = {"guarded": PROFILE, "plain": merged(PROFILE, guard={"enabled": False})}
BURST = Burst("contamination", 16, 16)
N_PARTS = 44
BURST_PARTS = range(BURST.start, BURST.start + BURST.length)


def stream(client: Client, sub, parts) -> tuple[dict[str, dict[int, dict]], list[tuple[int, AlertMessage]]]:
    """Send each part to every line, one part at a time; its verdicts and the alerts on the way."""
    verdicts: dict[str, dict[int, dict]] = {line: {} for line in LINES}
    alerts = []
    for i, part in enumerate(parts):
        for line in LINES:
            client.push.send_multipart(encode_frame(line, f"p{i}", i, "rgb", part.rgb, encoding="png"))
            client.push.send_multipart(encode_frame(line, f"p{i}", i, "xyz", part.xyz))
        deadline = time.monotonic() + 300
        while any(i not in v for v in verdicts.values()):
            assert sub.poll(int(max(0.0, deadline - time.monotonic()) * 1000)), f"no verdict for part {i}"
            message = sub.recv_multipart()
            if message[0].startswith(b"alert."):
                alerts.append((i, parse_alert(message)))
            else:
                header = msgpack.unpackb(message[1], raw=False)
                verdicts[header["line"]][header["seq"]] = header
    return verdicts, alerts


def summary(by: dict[int, dict]) -> tuple[float, float, float, list[float]]:
    recall = np.mean([by[i]["verdict"] == "ng" for i in BURST_PARTS])
    good = [h for i, h in by.items() if i not in BURST_PARTS and h["verdict"] in ("ok", "ng")]
    false_ng = np.mean([h["verdict"] == "ng" for h in good])
    before = float(np.median([by[i]["threshold"] for i in range(BURST.start - 6, BURST.start)]))
    return recall, false_ng, before, [by[i]["threshold"] for i in range(BURST.start, N_PARTS)]


def test_a_burst_through_the_station_with_and_without_the_guard(tmp_path):
    parts = list(iter_parts("tile", N_PARTS, 0.0, seed=5, burst=BURST))
    config = load_station_config(write_station(tmp_path, LINES, station={"snapshot_every": 8}))
    with running(Station(config)) as station:
        client = Client(station.endpoints)
        sub = client.ctx.socket(zmq.SUB)
        for topic in (b"verdict.", b"alert."):
            sub.setsockopt(zmq.SUBSCRIBE, topic)
        sub.connect(station.endpoints["verdicts"])
        client.wait_subscribed()
        verdicts, alerts = stream(client, sub, parts)
        status = client.request({"cmd": "status"})["lines"]

    guarded, plain = verdicts["guarded"], verdicts["plain"]
    recall, false_ng, before, after = summary(guarded)
    first = min(int(a.parts[-1][1:]) for _, a in alerts if a.line == "guarded") - BURST.start
    print(f"station, guard on: burst recall {recall:.2f}, false ng {false_ng:.3f}, first alert +{first}, "
          f"threshold {before:.3f} -> {min(after):.3f}..{max(after):.3f}")
    assert recall >= 0.95 and false_ng <= 0.05 and 0 <= first <= 5
    assert max(abs(t / before - 1) for t in after) <= 0.15
    assert all(h["reference"] == (h["verdict"] in ("ok", "inconclusive")) for h in guarded.values())
    assert {a.kind for _, a in alerts if a.line == "guarded"} >= {"ng_rate", "recurring_defect"}

    plain_recall, _, plain_before, plain_after = summary(plain)
    late = np.mean([plain[i]["verdict"] == "ng" for i in BURST_PARTS[len(BURST_PARTS) // 2:]])
    print(f"station, guard off: burst recall {plain_recall:.2f}, second half {late:.2f}, "
          f"threshold {plain_before:.3f} -> {max(plain_after):.3f}")
    assert late <= 0.25 and max(plain_after) > 1.15 * plain_before
    assert all(plain[i]["reference"] for i in BURST_PARTS)

    line = status["guarded"]
    assert {a["id"] for a in line["alerts"]} == {a.id for _, a in alerts if a.line == "guarded"}
    assert line["quarantine"] == [f"p{i}" for i in BURST_PARTS if guarded[i]["verdict"] == "ng"][-32:]
    assert line["threshold_history"][-1] == [N_PARTS - 1, guarded[N_PARTS - 1]["threshold"]]

    # a restart keeps the alerts and the quarantine; the operator acts over the control socket
    with running(Station(load_station_config(tmp_path / "station.toml"))) as station:
        client = Client(station.endpoints)
        line = client.request({"cmd": "status", "line": "guarded"})["lines"]["guarded"]
        assert [a["id"] for a in line["alerts"]] == [a["id"] for a in status["guarded"]["alerts"]]
        alert_id = line["alerts"][0]["id"]
        acked = client.request({"cmd": "ack_alert", "line": "guarded", "id": alert_id})
        assert acked["ok"] and alert_id not in [a["id"] for a in acked["status"]["alerts"]]
        again = client.request({"cmd": "ack_alert", "line": "guarded", "id": alert_id})
        assert not again["ok"] and "no active alert" in again["error"]
        first_q = line["quarantine"][0]
        labelled = client.request({"cmd": "label", "line": "guarded", "part": first_q, "label": "good"})
        assert labelled["ok"] and labelled["reference"] and first_q not in labelled["status"]["quarantine"]
        assert client.request({"cmd": "pin", "line": "guarded", "part": first_q})["pinned"] == [first_q]
        bad = client.request({"cmd": "label", "line": "guarded", "part": first_q, "label": "bad"})
        assert not bad["ok"] and "label must be one of good, defect" in bad["error"]
        shifted = client.request({"cmd": "accept_shift", "line": "guarded"})
        assert shifted["ok"] and shifted["references"] == line["quarantine"][1:]
        assert shifted["status"]["quarantine"] == [] and first_q in shifted["status"]["pinned"]
        client.close()


def test_control_cli_builds_the_feedback_requests_the_protocol_accepts():
    from edge_runtime.station import ctl
    from edge_runtime.stream.protocol import ProtocolError, pack, parse_request

    cases = {
        ("ack-alert", "tile", "ng_rate-3"): {"cmd": "ack_alert", "line": "tile", "id": "ng_rate-3"},
        ("label", "tile", "p7", "good"): {"cmd": "label", "line": "tile", "part": "p7", "label": "good"},
        ("accept-shift", "tile"): {"cmd": "accept_shift", "line": "tile"},
        ("pin", "tile", "p7"): {"cmd": "pin", "line": "tile", "part": "p7"},
        ("alerts",): {"cmd": "status"},
    }
    for argv, expected in cases.items():
        request = ctl.request_of(ctl.build_parser().parse_args(list(argv)))
        assert request == expected and parse_request(pack(request)) == expected
    with pytest.raises(ProtocolError, match="label must be one of"):
        parse_request(pack({"cmd": "label", "line": "tile", "part": "p7", "label": "bad"}))
    with pytest.raises(ProtocolError, match="ack_alert needs id"):
        parse_request(pack({"cmd": "ack_alert", "line": "tile"}))
    assert "no active alerts" in ctl.alerts_table({"lines": {"tile": {"alerts": []}}})
