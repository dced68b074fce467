"""The control socket: status, thresholds, reset, snapshot, verdict history, switching, shutdown."""
from __future__ import annotations

import threading

import msgpack
import pytest

from edge_runtime.sim.generator import iter_parts
from edge_runtime.station import ctl
from edge_runtime.station.config import load_station_config
from edge_runtime.station.service import Station
from edge_runtime.stream.protocol import encode_frame
from tests.station_helpers import SMALL_3D, Client, merged, running, write_station

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def clouds():
    return {name: [p.xyz for p in iter_parts(name, 12, 0.0, seed=5, image_size=64)] for name in ("tile", "gland")}


def send(client, line, clouds, start, n, prefix=None):
    for i in range(start, start + n):
        client.push.send_multipart(encode_frame(line, f"{prefix or line}-{i}", i, "xyz", clouds[line][i % 12]))


def test_status_threshold_reset_snapshot_history(tmp_path, clouds, capsys):
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D}))
    with running(Station(config)) as station:
        c = Client(station.endpoints)
        c.wait_subscribed()
        send(c, "tile", clouds, 0, 7)
        c.verdicts(7)
        status = c.request({"cmd": "status"})
        line = status["lines"]["tile"]
        assert status["ok"] and line["window"] == 7 and line["capacity"] == 8 and line["min_window"] == 5
        assert line["latency_ms"]["p50"] > 0 and line["model"] and line["profile"] and line["queue"] == 0
        assert status["station"]["endpoints"]["frames"] == station.endpoints["frames"]

        assert c.request({"cmd": "set_threshold", "line": "tile", "value": 0.0, "source": "operator"})["ok"]
        send(c, "tile", clouds, 7, 1)
        ((h, png),) = c.verdicts(1)
        assert (h["threshold"], h["threshold_source"], h["verdict"]) == (0.0, "operator", "ng")
        assert png is not None and len(h["map_scale"]) == 2 and h["regions"]

        snap = c.request({"cmd": "snapshot"})
        assert snap["ok"] and (tmp_path / "state" / "windows").is_dir()
        assert snap["snapshots"]["tile"].endswith(".npz")

        history = c.request({"cmd": "verdicts", "line": "tile", "last": 3})
        assert [v["part"] for v in history["verdicts"]] == ["tile-5", "tile-6", "tile-7"]
        picked = c.request({"cmd": "verdicts", "line": "tile", "parts": ["tile-0", "tile-7", "nope"]})
        assert [v["part"] for v in picked["verdicts"]] == ["tile-0", "tile-7"]
        assert [v["vseq"] for v in picked["verdicts"]] == [1, 8]

        assert c.request({"cmd": "reset", "line": "tile"})["status"]["window"] == 0
        send(c, "tile", clouds, 8, 1)
        ((h, _),) = c.verdicts(1)
        assert h["verdict"] == "inconclusive" and h["error"]["code"]

        for bad in ({"cmd": "dance"}, {"cmd": "reset"}, {"cmd": "reset", "line": "nope"},
                    {"cmd": "set_threshold", "line": "tile", "value": "high"}, {"cmd": "verdicts", "line": "tile", "last": 0},
                    {"cmd": "switch", "line": "tile", "profile": "no-such-profile"}):
            reply = c.request(bad)
            assert reply["ok"] is False and reply["error"], bad
        assert c.request(b"\xc1 not msgpack")["ok"] is False
        assert c.request(msgpack.packb([1, 2]))["ok"] is False
        assert c.request({"cmd": "status"})["ok"]  # still serving

        ep = ["--endpoint", station.endpoints["control"]]
        assert ctl.main(ep + ["status"]) == 0
        table = capsys.readouterr().out
        assert table.splitlines()[0].split()[:3] == ["line", "product", "window"] and "\ntile " in table
        assert ctl.main(ep + ["set-threshold", "tile", "0.25", "--source", "operator"]) == 0
        assert '"threshold": 0.25' in capsys.readouterr().out
        assert ctl.main(ep + ["reset", "nope"]) == 1 and "unknown line" in capsys.readouterr().err

        assert c.request({"cmd": "shutdown"})["ok"]
        assert station.wait(10)
        c.close()


def test_switching_one_line_keeps_the_other_serving_and_windows_come_back(tmp_path, clouds):
    wide = merged(SMALL_3D, line={"window": 10})
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D, "gland": SMALL_3D}))
    (tmp_path / "lines" / "tile_wide.toml").write_text((tmp_path / "lines" / "tile.toml").read_text()
                                                       .replace("window = 8", "window = 10"))
    assert wide["line"]["window"] == 10
    with running(Station(config)) as station:
        c = Client(station.endpoints)
        c.wait_subscribed()
        send(c, "tile", clouds, 0, 6)
        send(c, "gland", clouds, 0, 6)
        c.verdicts(12)
        replies = {}
        switching = threading.Thread(target=lambda: replies.update(
            c.request({"cmd": "switch", "line": "tile", "profile": "tile_wide"})))
        switching.start()
        send(c, "gland", clouds, 6, 4)  # the other line is served while tile switches
        gland = c.verdicts(4)
        switching.join()
        assert replies["ok"] and replies["status"]["capacity"] == 10 and replies["status"]["window"] == 0
        assert all(h["line"] == "gland" and h["verdict"] in ("ok", "ng") for h, _ in gland)
        send(c, "tile", clouds, 6, 1)
        ((h, _),) = c.verdicts(1)
        assert h["profile"] == replies["profile"] and h["verdict"] == "inconclusive"
        back = c.request({"cmd": "switch", "line": "tile", "profile": "tile"})
        assert back["ok"] and back["status"]["window"] == 6 and back["status"]["capacity"] == 8  # warm again
        added = c.request({"cmd": "switch", "line": "press", "profile": "gland"})
        assert added["ok"] and set(c.request({"cmd": "status"})["lines"]) == {"tile", "gland", "press"}
        send(c, "press", {"press": clouds["gland"]}, 0, 1)
        ((h, _),) = c.verdicts(1)
        assert h["line"] == "press" and h["verdict"] == "inconclusive"
        assert c.request({"cmd": "switch", "line": "tile", "profile": "tile_wide"})["status"]["window"] == 1
        c.close()
    # a restart keeps the switch of a configured line; "press" is not in station.toml
    with running(Station(config)) as station:
        assert set(station.workers) == {"tile", "gland"}
        assert station.workers["tile"].profile.source.endswith("tile_wide.toml")
        assert station.workers["tile"].status["window"] == 1 and station.workers["gland"].status["window"] == 8
