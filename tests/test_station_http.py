"""The station's HTTP server: /healthz, /readyz, /metrics (parsed with the Prometheus parser),
the event stream, ng pictures, operator actions; busy ports and HTTP turned off."""
from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_runtime.sim.generator import iter_parts
from edge_runtime.station.config import load_station_config
from edge_runtime.station.service import Station, load_inspector
from edge_runtime.stream.protocol import encode_frame
from tests.station_helpers import SMALL_3D, Client, running, write_station

pytestmark = pytest.mark.timeout(240)

TOKEN = "s3cret-operator-token-0123"
DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
# families a station exports once its status reports them (alerts, references: the guarded window)
REPORTED_WHEN_PRESENT = {"musc_edge_alerts_active", "musc_edge_window_references", "musc_edge_degraded"}


@pytest.fixture(scope="module")
def clouds():
    return [p.xyz for p in iter_parts("tile", 12, 0.2, seed=3, image_size=64)]


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as reply:
            return reply.status, reply.read(), reply.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def post(url: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def samples(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    status, body, ctype = get(url + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def send(client: Client, line: str, clouds, start: int, n: int) -> None:
    for i in range(start, start + n):
        client.push.send_multipart(encode_frame(line, f"{line}-{i}", i, "xyz", clouds[i % len(clouds)]))


def test_metrics_count_the_parts_sent(tmp_path, clouds):
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D, "gland": SMALL_3D}))
    sent = {"tile": 9, "gland": 6}
    with running(Station(config)) as station:
        url = station.endpoints["http"]
        c = Client(station.endpoints)
        c.wait_subscribed()
        for line, n in sent.items():
            send(c, line, clouds, 0, n)
        send(c, "nope", clouds, 0, 1)  # a line this station does not serve: an error verdict
        c.push.send_multipart([b"\xc1 not a header", b""])  # malformed: names no line, counted station-wide
        got = c.verdicts(sum(sent.values()) + 1)
        send(c, "tile", clouds, 0, 1)  # tile-0 again: a duplicate frame, dropped
        c.push.send_multipart(encode_frame("tile", "tile-99", 99, "rgb", np.zeros((64, 64, 3), np.uint8)))  # unused
        by_line = Counter((h["line"], h["verdict"]) for h, _ in got)
        # the counters and the status follow the published verdicts by a moment
        wait_for(lambda: samples(url).get(("musc_edge_published_total", ())) == len(got)
                 and station.status()["lines"]["tile"]["counts"].get("unused_frames")
                 and all(station.status()["lines"][line]["window"] == min(n, 8) for line, n in sent.items()),
                 "/metrics to catch up")
        m = samples(url)
        status = station.status()

        assert get(url + "/healthz")[:2] == (200, b"ok\n")
        code, body, _ = get(url + "/readyz")
        assert code == 200 and json.loads(body) == {"ready": True, "reasons": []}
        for line, n in sent.items():
            labels = lambda **kw: tuple(sorted({"line": line, **kw}.items()))  # noqa: E731
            counted = {v: m[("musc_edge_verdicts_total", labels(verdict=v))] for v in ("ok", "ng", "inconclusive", "error")}
            assert counted == {v: by_line[(line, v)] for v in counted} and sum(counted.values()) == n
            assert m[("musc_edge_frames_total", labels())] == n + 2 * (line == "tile")
            assert m[("musc_edge_stage_latency_seconds_count", labels(stage="total"))] == n
            assert m[("musc_edge_stage_latency_seconds_bucket", labels(stage="total", le="+Inf"))] == n
            assert m[("musc_edge_stage_latency_seconds_sum", labels(stage="total"))] > 0
            # until min_window (5) references are held the window answers inconclusive, with the code warming_up
            assert m[("musc_edge_verdict_codes_total", labels(verdict="inconclusive", code="warming_up"))] \
                == by_line[(line, "inconclusive")] == 5
            assert m[("musc_edge_window_parts", labels())] == status["lines"][line]["window"] == min(n, 8)
            assert m[("musc_edge_window_capacity", labels())] == 8
            assert m[("musc_edge_threshold", labels())] == pytest.approx(status["lines"][line]["threshold"])
            assert m[("musc_edge_queue_parts", labels())] == 0 and m[("musc_edge_queue_bytes", labels())] == 0
        # lines a sender makes up share one label and one feed, marked as not served here
        unserved = (("code", "unknown_line"), ("line", "_unserved"), ("verdict", "error"))
        assert m[("musc_edge_verdict_codes_total", unserved)] == 1
        nope = json.loads(get(url + "/api/state")[1])["lines"]["_unserved"]
        assert nope["served"] is False and [v["code"] for v in nope["feed"]] == ["unknown_line"]
        assert "'nope'" in nope["feed"][0]["message"]
        assert m[("musc_edge_malformed_total", (("code", "not_msgpack"),))] == 1
        assert m[("musc_edge_dropped_total", (("line", "tile"), ("reason", "duplicate_frame")))] == 1
        assert m[("musc_edge_dropped_total", (("line", "tile"), ("reason", "unused_frame")))] == 1

        # the Prometheus rules and the Grafana dashboard in deploy/ ask only for what a station exports
        named = set()
        for path in (DEPLOY / "monitoring").iterdir():
            named |= set(re.findall(r"\bmusc_edge_[a-z_]+", path.read_text()))
        exported = {name for name, _ in m}
        assert named - exported <= REPORTED_WHEN_PRESENT, named - exported
        c.close()


def test_readyz_waits_for_every_line_and_a_writable_state_dir(tmp_path, clouds):
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D}))
    release = threading.Event()

    def slow_factory(profile, line):  # the real inspector, after the test has looked at /readyz
        release.wait(60)
        return load_inspector(profile, line)

    station = Station(config, inspector_factory=slow_factory)
    starting = threading.Thread(target=station.start)
    starting.start()
    try:
        url = wait_for(lambda: station.http and station.http.url, "the HTTP server to bind")
        code, body, _ = get(url + "/readyz")
        assert code == 503 and json.loads(body) == {"ready": False, "reasons": ["station is starting"]}
        assert get(url + "/healthz")[0] == 200  # alive while loading
        assert get(url + "/api/state")[0] == 503
        release.set()
        starting.join(60)
        assert get(url + "/readyz")[0] == 200

        state = config.state_dir
        state.rename(state.with_name("state-away"))  # the state directory is gone: not ready
        try:
            code, body, _ = get(url + "/readyz")
            reasons = json.loads(body)["reasons"]
            assert code == 503 and len(reasons) == 1 and "not writable" in reasons[0] and str(state) in reasons[0]
        finally:
            state.with_name("state-away").rename(state)
        assert get(url + "/readyz")[0] == 200
    finally:
        release.set()
        starting.join(60)
        station.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=5)


def test_a_busy_port_fails_clearly_and_http_can_be_turned_off(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D}, http={"port": port}))
        assert config.http.url == f"http://127.0.0.1:{port}"
        with pytest.raises(OSError, match=rf"cannot serve HTTP on http://127.0.0.1:{port}: .*in use.*\[http\] port"):
            Station(config).start()
    # the ZeroMQ sockets of the failed start were released: the same endpoints bind again
    (tmp_path / "station.toml").write_text((tmp_path / "station.toml").read_text()
                                           .replace(f"port = {port}", "enabled = false"))
    config = load_station_config(tmp_path / "station.toml")
    with running(Station(config)) as station:
        assert station.endpoints["http"] is None and station.http is None
    with pytest.raises(ValueError, match=r"\[http\] port"):
        load_station_config(write_station(tmp_path, {"tile": SMALL_3D}, http={"port": 70000}))


def read_events(url: str, parts: set[str], got: list, done: threading.Event) -> None:
    """Follow /api/events until every part in ``parts`` has its verdict event."""
    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    conn.request("GET", "/api/events")
    reply = conn.getresponse()
    got.append(reply.getheader("Content-Type"))
    event = None
    while not parts <= {e["part"] for e in got[1:]}:
        line = reply.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "verdict":
            got.append(json.loads(line[6:]))
    conn.close()
    done.set()


def test_events_pictures_and_operator_actions(tmp_path, clouds):
    (tmp_path / "operators").write_text(f"# name token\nalice {TOKEN}\n")
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D}, http={"operator_tokens": "operators"}))
    with running(Station(config)) as station:
        url = station.endpoints["http"]
        c = Client(station.endpoints)
        c.wait_subscribed()
        got, done = [], threading.Event()
        follower = threading.Thread(target=read_events, args=(url, {f"tile-{i}" for i in range(8)}, got, done),
                                    daemon=True)
        follower.start()
        wait_for(lambda: station.http._clients, "the event stream to open")
        send(c, "tile", clouds, 0, 6)
        c.verdicts(6)

        assert post(url + "/api/control", {"cmd": "set_threshold", "line": "tile", "value": 0.0})[0] == 401
        assert post(url + "/api/control", {"cmd": "set_threshold", "line": "tile", "value": 0.0},
                    token="not-a-known-token-at-all")[0] == 401
        code, reply = post(url + "/api/control", {"cmd": "shutdown"}, token=TOKEN)
        assert code == 403 and reply["code"] == "forbidden" and not station.wait(0.1)
        code, reply = post(url + "/api/control", {"cmd": "switch", "line": "tile", "profile": "no-such"}, token=TOKEN)
        assert code == 400 and "no line profile named 'no-such'" in reply["error"]
        code, reply = post(url + "/api/control", {"cmd": "set_threshold", "line": "tile", "value": 0.0,
                                                  "source": "operator"}, token=TOKEN)
        assert code == 200 and reply["ok"] and reply["status"]["threshold"] == 0.0
        audit = [(a["who"], a["role"], a["address"], a["result"]) for a in station.store.audit_log(10)]
        assert audit[-2:] == [("alice", "operator", "dashboard", "unknown_profile"),
                              ("alice", "operator", "dashboard", "ok")]
        assert json.loads(get(url + "/api/whoami", {"Authorization": f"Bearer {TOKEN}"})[1])["name"] == "alice"
        assert json.loads(get(url + "/api/whoami")[1]) == {"role": "viewer", "actions": []}

        send(c, "tile", clouds, 6, 2)
        assert [h["verdict"] for h, _ in c.verdicts(2)] == ["ng", "ng"]
        assert done.wait(30), "the event stream did not bring every verdict"
        assert got[0] == "text/event-stream"
        events = {e["part"]: e for e in got[1:]}
        assert events["tile-7"]["verdict"] == "ng" and events["tile-7"]["picture"] is True
        assert events["tile-0"]["verdict"] == "inconclusive" and events["tile-0"]["code"] == "warming_up"

        state = json.loads(get(url + "/api/state")[1])
        tile = state["lines"]["tile"]
        assert [v["part"] for v in tile["feed"]] == [f"tile-{i}" for i in range(8)]
        assert [v["part"] for v in tile["ng"]] == ["tile-6", "tile-7"]
        assert tile["thresholds"][-1][1:] == [0.0, "operator"] and tile["capacity"] == 8

        code, png, ctype = get(url + "/api/lines/tile/parts/tile-7/picture.png")
        picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert code == 200 and ctype == "image/png" and picture.shape[1] == 2 * 64 and picture.shape[0] > 64
        assert get(url + "/api/lines/tile/parts/tile-1/picture.png")[0] == 404  # not ng
        code, page, ctype = get(url + "/")
        assert code == 200 and ctype.startswith("text/html") and b"/static/dashboard.js" in page
        c.close()
