"""A station with [security]: real CURVE handshakes on loopback, roles, refusals, the audit log."""
from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time

import msgpack
import pytest
import zmq
import zmq.auth

from edge_runtime.sim.generator import iter_parts
from edge_runtime.station import ctl, keys
from edge_runtime.station.config import load_station_config
from edge_runtime.station.service import Station
from edge_runtime.stream.protocol import encode_frame
from edge_runtime.stream.security import is_loopback, read_metadata, warn_if_exposed
from edge_runtime.station.keys import new_ring
from tests.station_helpers import SMALL_3D, Client, free_endpoint, merged, running, serve_command, write_station

pytestmark = pytest.mark.timeout(240)

ROLES = {"cam": "sensor", "screen": "observer", "alice": "operator"}


@pytest.fixture(scope="module")
def clouds():
    return [p.xyz for p in iter_parts("tile", 8, 0.0, seed=3, image_size=64)]


def send(push, clouds, start, n):
    for i in range(start, start + n):
        push.send_multipart(encode_frame("tile", f"tile-{i}", i, "xyz", clouds[i % len(clouds)]))


def secured(tmp_path, lines=None, **security):
    keys_dir, certs = new_ring(tmp_path, {**ROLES, "gate": "observer"})
    endpoints = {k: free_endpoint() for k in ("frames", "verdicts", "control", "reject")}
    config = load_station_config(write_station(tmp_path, lines or {"tile": SMALL_3D}, endpoints=endpoints,
                                               security={"keys_dir": str(keys_dir), **security}))
    return config, keys_dir, certs


def no_reply(client, request, key, timeout_ms=1500) -> bool:
    try:
        client.request(request, timeout_ms, key=key)
    except TimeoutError:
        return True
    return False


def outsider(tmp_path, keys_dir):
    """A well-formed client certificate the station never admitted (it knows the station's key)."""
    (tmp_path / "elsewhere").mkdir()
    station = zmq.auth.load_certificate(keys_dir / "station.key")[0].decode()
    _, secret = zmq.auth.create_certificates(tmp_path / "elsewhere", "mallory", metadata={"station": station})
    return secret


def test_keys_cli_makes_certificates_zmq_auth_reads(tmp_path, capsys):
    keys_dir, certs = tmp_path / "keys", {name: tmp_path / f"{name}.secret" for name in ROLES}
    assert keys.main(["init", "--dir", str(keys_dir)]) == 0
    for name, role in ROLES.items():
        assert keys.main(["add", "--dir", str(keys_dir), "--role", role, name, "--out", str(certs[name])]) == 0
    assert "operator alice: public key" in capsys.readouterr().out
    station_public, station_secret = zmq.auth.load_certificate(keys_dir / "station.key_secret")
    assert zmq.auth.load_certificate(keys_dir / "station.key") == (station_public, None)
    for name, role in ROLES.items():
        public, secret = zmq.auth.load_certificate(certs[name])
        assert secret and zmq.auth.load_certificate(keys_dir / f"{role}s" / f"{name}.key")[0] == public
        assert read_metadata(certs[name]) == {"name": name, "role": role, "station": station_public.decode()}
        assert stat.S_IMODE(os.stat(certs[name]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys_dir / "station.key_secret").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keys_dir).st_mode) == 0o700
    assert keys.main(["list", "--dir", str(keys_dir)]) == 0
    assert capsys.readouterr().out.split() == ["observer", "screen", "operator", "alice", "sensor", "cam"]

    def refused(argv, words):
        assert keys.main(argv) == 1
        err = capsys.readouterr().err
        assert words in err, err

    add = ["add", "--dir", str(keys_dir), "--role", "observer"]
    refused(["init", "--dir", str(keys_dir)], "locks out every client")
    refused(add + ["alice", "--out", str(tmp_path / "a2")], "exists already (operator)")
    refused(add + ["../evil", "--out", str(tmp_path / "e")], "a key name is")
    refused(add + ["a..b", "--out", str(tmp_path / "e")], "a key name is")
    refused(add + ["local", "--out", str(tmp_path / "e")], "a key name is")
    refused(add + ["bob", "--out", str(certs["cam"])], "exists; choose another")
    refused(["add", "--dir", str(tmp_path / "nokeys"), "--role", "sensor", "x", "--out", str(tmp_path / "x")],
            "musc-edge keys init")
    assert not (tmp_path / "e").exists() and not (keys_dir / "observers" / "bob.key").exists()
    assert keys.main(["remove", "--dir", str(keys_dir), "cam"]) == 0
    assert not (keys_dir / "sensors" / "cam.key").exists()


def test_roles_refusals_and_the_audit_log_over_real_handshakes(tmp_path, clouds, caplog):
    config, keys_dir, certs = secured(tmp_path)
    (tmp_path / "lines" / "tile_b.toml").write_text((tmp_path / "lines" / "tile.toml").read_text()
                                                    .replace("window = 8", "window = 9"))
    (tmp_path / "lines" / "rigged.toml").write_text((tmp_path / "lines" / "tile.toml").read_text()
                                                    + '\n[threshold]\npolicy = "fixed"\nvalue = 1e9\n')
    caplog.set_level(logging.WARNING, logger="edge_runtime.stream.security")
    with running(Station(config)) as station:
        eps = station.endpoints
        c = Client(eps, {"frames": certs["cam"], "verdicts": certs["screen"], "control": certs["alice"]})
        assert c.request({"cmd": "status"})["ok"]  # operator
        observer = c.request({"cmd": "status"}, key=certs["screen"])
        assert observer["ok"] and "tile" in observer["lines"]
        assert observer["station"]["security"] == {"curve": True, "keys_dir": str(keys_dir)}

        # the whole path with keys: sensor -> station -> observer
        c.wait_subscribed()
        send(c.push, clouds, 0, 6)
        verdicts = c.verdicts(6)
        assert [h["part"] for h, _ in verdicts] == [f"tile-{i}" for i in range(6)]

        # no key, an unknown key, a key on a socket its role may not use: no connection at all
        assert no_reply(c, {"cmd": "status"}, key=None)
        assert no_reply(c, {"cmd": "status"}, key=outsider(tmp_path, keys_dir))
        assert no_reply(c, {"cmd": "status"}, key=certs["cam"])
        intruders = zmq.Context()
        try:
            for cert in (None, certs["screen"]):  # plain and observer frames never reach the station
                push = intruders.socket(zmq.PUSH)
                push.setsockopt(zmq.LINGER, 0)
                if cert:
                    push.curve_publickey, push.curve_secretkey = zmq.auth.load_certificate(cert)
                    push.curve_serverkey = zmq.auth.load_certificate(keys_dir / "station.key")[0]
                push.connect(eps["frames"])
                send(push, clouds, 100, 1)
            subs = []
            for cert in (None, certs["cam"]):  # a plain or sensor subscriber hears nothing
                sub = intruders.socket(zmq.SUB)
                subs.append(sub)
                sub.setsockopt(zmq.SUBSCRIBE, b"")
                if cert:
                    sub.curve_publickey, sub.curve_secretkey = zmq.auth.load_certificate(cert)
                    sub.curve_serverkey = zmq.auth.load_certificate(keys_dir / "station.key")[0]
                sub.connect(eps["verdicts"])
            send(c.push, clouds, 6, 1)
            ((h, _),) = c.verdicts(1)
            assert h["part"] == "tile-6"  # not tile-100: the intruders' frames never arrived
            assert not any(sub.poll(300) for sub in subs)
            assert c.request({"cmd": "verdicts", "line": "tile", "parts": ["tile-100"]})["verdicts"] == []
        finally:
            intruders.destroy(linger=0)

        # observer: read-only
        for request in ({"cmd": "set_threshold", "line": "tile", "value": 0.5}, {"cmd": "shutdown"},
                        {"cmd": "switch", "line": "tile", "profile": "tile_b"}, {"cmd": "reset", "line": "tile"}):
            reply = c.request(request, key=certs["screen"])
            assert (reply["ok"], reply["code"]) == (False, "forbidden"), reply
            assert "screen (observer) may not" in reply["error"]
        assert c.request({"cmd": "verdicts", "line": "tile", "last": 2}, key=certs["screen"])["ok"]

        # operator: thresholds within range, back to the policy, profiles by name only
        before = c.request({"cmd": "status"})["lines"]["tile"]
        for value in (1e9, 1.8e19, -0.1, 100.5):
            reply = c.request({"cmd": "set_threshold", "line": "tile", "value": value})
            assert (reply["ok"], reply["code"]) == (False, "out_of_range") and "[0, 100]" in reply["error"]
        for value in (float("nan"), float("inf")):
            assert c.request({"cmd": "set_threshold", "line": "tile", "value": value})["code"] == "bad_request"
        long_source = c.request({"cmd": "set_threshold", "line": "tile", "value": 0.5, "source": "x" * 1000})
        assert long_source["code"] == "bad_request" and "short label" in long_source["error"]
        ok = c.request({"cmd": "set_threshold", "line": "tile", "value": 0.5, "source": "shift-2"})
        assert ok["ok"] and (ok["status"]["threshold"], ok["status"]["threshold_source"]) == (0.5, "shift-2")
        cleared = c.request({"cmd": "clear_threshold", "line": "tile"})
        assert cleared["ok"] and cleared["status"]["threshold_source"] == "mad"
        send(c.push, clouds, 7, 1)
        ((h, _),) = c.verdicts(1)
        assert h["threshold_source"] == "mad" and h["threshold"] != 0.5

        for path in (str(tmp_path / "lines" / "tile_b.toml"), "/etc/passwd", "../lines/tile_b", "lines/tile_b",
                     "..\\tile_b", "tile_b.toml", "..", ""):
            reply = c.request({"cmd": "switch", "line": "tile", "profile": path})
            assert (reply["ok"], reply["code"]) == (False, "invalid_profile"), (path, reply)
            assert "not a path" in reply["error"]
        unknown = c.request({"cmd": "switch", "line": "tile", "profile": "passwd"})
        assert unknown["code"] == "unknown_profile" and unknown["profiles"] == ["default", "rigged", "tile", "tile_b"]
        rigged = c.request({"cmd": "switch", "line": "tile", "profile": "rigged"})
        assert rigged["code"] == "invalid_profile" and "range" in rigged["error"]
        after = c.request({"cmd": "status"})["lines"]["tile"]
        assert (after["profile"], after["window"]) == (before["profile"], before["window"] + 1)  # nothing changed
        switched = c.request({"cmd": "switch", "line": "tile", "profile": "tile_b"})
        assert switched["ok"] and switched["status"]["capacity"] == 9

        # malformed and oversized requests: answered or cut off; the station keeps serving
        assert c.request(b"\xc1")["code"] == "not_msgpack"
        assert c.request({"cmd": "status", "extra": 1})["code"] == "bad_request"
        assert c.request({"cmd": ["status"]})["code"] == "unknown_command"
        assert no_reply(c, {"cmd": "status", "line": "x" * 100_000}, key="control")
        assert c.request({"cmd": "status"})["ok"]

        audit = c.request({"cmd": "audit", "last": 200}, key=certs["screen"])["audit"]
        c.close()

    def entries(**match):
        return [a for a in audit if all(a[k] == v if k != "what" else v in a[k] for k, v in match.items())]

    assert entries(who="screen", role="observer", result="forbidden", what='"set_threshold"')
    assert entries(who="screen", result="forbidden", what='"shutdown"')
    assert entries(who="cam", role="sensor", result="refused", what="control socket", address="127.0.0.1")
    assert entries(who="screen", result="refused", what="frames socket")
    assert entries(who="cam", result="refused", what="verdicts socket")
    assert entries(who="unknown key", result="refused", what="control socket")
    assert entries(who="alice", role="operator", result="out_of_range", what='"value": 1000000000.0')
    assert entries(who="alice", result="ok", what='"shift-2"')
    assert entries(who="alice", result="ok", what='"clear_threshold"')
    assert entries(who="alice", result="invalid_profile", what="/etc/passwd")
    assert entries(who="alice", result="unknown_profile", what="passwd")
    assert entries(who="alice", result="ok", what='"tile_b"')
    assert entries(who="alice", result="not_msgpack", what="unreadable request")
    assert not entries(result="ok", what='"status"')  # reads are not audited
    assert all(a["ts"] > 0 and a["address"] for a in audit if a["who"] != "local")

    refusals = [r.getMessage() for r in caplog.records if "refused a connection" in r.getMessage()]
    assert any("control socket from 127.0.0.1: cam (sensor)" in m for m in refusals), refusals
    assert any("control socket from" in m and "unknown key" in m for m in refusals), refusals
    assert any("handshake failed" in m for m in refusals), refusals


def test_ctl_with_a_key_and_a_revoked_key(tmp_path, capsys):
    config, keys_dir, certs = secured(tmp_path)
    with running(Station(config)) as station:
        ep = ["--endpoint", station.endpoints["control"], "--timeout", "3"]
        assert ctl.main(ep + ["--key", str(certs["alice"]), "set-threshold", "tile", "0.3", "--source", "op"]) == 0
        assert '"threshold": 0.3' in capsys.readouterr().out
        assert ctl.main(ep + ["--key", str(certs["screen"]), "clear-threshold", "tile"]) == 1
        assert "forbidden" in capsys.readouterr().err
        config_ep = ["--config", config.source, "--timeout", "3"]  # the station key from the keys folder
        assert ctl.main(config_ep + ["--key", str(certs["screen"]), "--json", "audit", "--last", "5"]) == 0
        out = capsys.readouterr().out
        assert '"who": "screen"' in out and '"result": "forbidden"' in out and '"who": "alice"' in out
        assert ctl.main(ep + ["status"]) == 1 and "need a --key" in capsys.readouterr().err
        assert keys.main(["remove", "--dir", str(keys_dir), "screen"]) == 0
        capsys.readouterr()
        assert ctl.main(ep + ["--key", str(certs["screen"]), "status"]) == 1  # revoked: no connection
        assert "no reply" in capsys.readouterr().err
        assert ctl.main(ep + ["--key", str(certs["alice"]), "shutdown"]) == 0
        assert station.wait(10)


def test_reject_gate_only_and_keys_revoked_while_connected(tmp_path, clouds):
    config, keys_dir, certs = secured(tmp_path, reject_gate=["gate"])
    with running(Station(config)) as station:
        eps = station.endpoints
        c = Client(eps, {"frames": certs["cam"], "verdicts": certs["screen"], "control": certs["alice"]})
        pulls = {}
        for name in ("gate", "screen", "alice"):  # an operator, too, is kept off a named gate
            pulls[name] = c.ctx.socket(zmq.PULL)
            pulls[name].curve_publickey, pulls[name].curve_secretkey = zmq.auth.load_certificate(certs[name])
            pulls[name].curve_serverkey = station.guard.public
            pulls[name].connect(eps["reject"])
        kept = c.ctx.socket(zmq.REQ)  # one connection that outlives its key
        kept.curve_publickey, kept.curve_secretkey = zmq.auth.load_certificate(certs["screen"])
        kept.curve_serverkey = station.guard.public
        kept.connect(eps["control"])
        kept.send(msgpack.packb({"cmd": "status"}))
        assert kept.poll(10_000) and msgpack.unpackb(kept.recv())["ok"]
        c.wait_subscribed()
        send(c.push, clouds, 0, 3)
        c.verdicts(3)
        got = []
        while pulls["gate"].poll(2000) and len(got) < 3:
            got.append(msgpack.unpackb(pulls["gate"].recv_multipart()[1])["part"])
        assert got == ["tile-0", "tile-1", "tile-2"]  # the gate got every verdict: nobody took a share
        assert not pulls["screen"].poll(200) and not pulls["alice"].poll(200)

        assert keys.main(["remove", "--dir", str(keys_dir), "screen"]) == 0
        assert keys.main(["add", "--dir", str(keys_dir), "--role", "observer", "screen",  # a new key, same name
                          "--out", str(tmp_path / "screen-2.secret")]) == 0
        kept.send(msgpack.packb({"cmd": "status"}))
        assert kept.poll(10_000)
        reply = msgpack.unpackb(kept.recv())
        assert (reply["ok"], reply["code"]) == (False, "forbidden") and "screen (revoked)" in reply["error"]
        audit = c.request({"cmd": "audit", "last": 50})["audit"]
        c.close()
    assert [a for a in audit if a["who"] == "alice" and a["result"] == "refused" and "reject socket" in a["what"]]
    assert [a for a in audit if a["who"] == "screen" and a["role"] == "revoked" and a["result"] == "forbidden"]


def test_station_refuses_keys_others_can_read_or_write(tmp_path, caplog):
    config, keys_dir, certs = secured(tmp_path)
    os.chmod(keys_dir / "station.key_secret", 0o644)
    with pytest.raises(OSError, match="chmod 600"):
        Station(config).start()
    os.chmod(keys_dir / "station.key_secret", 0o600)
    os.chmod(keys_dir / "operators", 0o777)
    with pytest.raises(OSError, match="writable by group or others"):
        Station(config).start()
    os.chmod(keys_dir / "operators", 0o700)
    os.chmod(tmp_path / "lines", 0o777)
    with caplog.at_level(logging.WARNING), running(Station(config)) as station:  # failed starts left nothing bound
        assert any("profiles folder" in r.getMessage() and "chooses what a switch loads" in r.getMessage()
                   for r in caplog.records)
        c = Client(station.endpoints, {"control": certs["alice"]})
        assert c.request({"cmd": "status"})["ok"]
        os.chmod(keys_dir / "operators", 0o777)  # someone could add a key now: admit nobody
        assert no_reply(c, {"cmd": "status"}, key="control")
        os.chmod(keys_dir / "operators", 0o700)
        assert c.request({"cmd": "status"})["ok"]
        c.close()
    (keys_dir / "station.key_secret").unlink()
    with pytest.raises(OSError, match="keys init"):
        Station(config).start()


def test_without_security_local_caller_and_exposure_warning(tmp_path, caplog):
    assert all(is_loopback(e) for e in ("tcp://127.0.0.1:5555", "tcp://[::1]:5", "tcp://localhost:1",
                                         "ipc:///tmp/x", "inproc://a", "tcp://127.0.0.2:*"))
    assert not any(is_loopback(e) for e in ("tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://eth0:5555",
                                             "tcp://192.168.1.5:5555", "tcp://[::]:5555"))
    caplog.set_level(logging.WARNING)
    config = load_station_config(write_station(tmp_path, {"tile": merged(SMALL_3D)}))
    with running(Station(config)) as station:
        c = Client(station.endpoints)
        assert c.request({"cmd": "set_threshold", "line": "tile", "value": 0.2})["ok"]
        assert c.request({"cmd": "set_threshold", "line": "tile", "value": 700.0})["code"] == "out_of_range"
        audit = c.request({"cmd": "audit"})["audit"]
        c.close()
    assert [(a["who"], a["role"], a["result"]) for a in audit] == [
        ("local", None, "ok"), ("local", None, "ok"), ("local", None, "out_of_range")]
    assert audit[0]["what"] == "start" and audit[0]["detail"] == "no [security]"
    assert not [r for r in caplog.records if "without [security]" in r.getMessage()]  # loopback: no warning
    warn_if_exposed("tcp://0.0.0.0:5557", "control")  # what sockets.bind says before such a bind
    (warning,) = [r for r in caplog.records if "without [security]" in r.getMessage()]
    assert warning.levelname == "WARNING" and "tcp://0.0.0.0:5557" in warning.getMessage()
    assert "run every control command" in warning.getMessage()


def test_serve_with_security_for_a_client_written_from_operator_md(tmp_path, clouds):
    """`musc-edge keys` and `musc-edge serve` as subprocesses; the client is plain pyzmq + zmq.auth."""
    cli = [sys.executable, "-m", "edge_runtime.cli"]
    keys_dir = tmp_path / "keys"
    subprocess.run(cli + ["keys", "init", "--dir", str(keys_dir)], check=True, capture_output=True)
    for name, role in ROLES.items():
        subprocess.run(cli + ["keys", "add", "--dir", str(keys_dir), "--role", role, name,
                              "--out", str(tmp_path / f"{name}.secret")], check=True, capture_output=True)
    config = write_station(tmp_path, {"tile": SMALL_3D}, security={"keys_dir": "keys"})
    cfg = load_station_config(config)
    eps = {"frames": cfg.frames, "verdicts": cfg.verdicts, "control": cfg.control}
    proc = subprocess.Popen(serve_command(config), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ctx = zmq.Context()

    def sock(kind, name, endpoint):
        s = ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        if name:
            s.curve_publickey, s.curve_secretkey = zmq.auth.load_certificate(tmp_path / f"{name}.secret")
            s.curve_serverkey = zmq.auth.load_certificate(keys_dir / "station.key")[0]
        s.connect(endpoint)
        return s

    def ask(name, request, wait_ms=2000):
        s = sock(zmq.REQ, name, eps["control"])
        s.send(msgpack.packb(request))
        reply = msgpack.unpackb(s.recv()) if s.poll(wait_ms) else None
        s.close()
        return reply

    try:
        deadline = time.monotonic() + 120
        while ask("alice", {"cmd": "status"}, 1000) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "station did not start"
        sub = sock(zmq.SUB, "screen", eps["verdicts"])
        sub.setsockopt(zmq.SUBSCRIBE, b"verdict.")
        push = sock(zmq.PUSH, "cam", eps["frames"])
        time.sleep(0.5)
        push.send_multipart(encode_frame("tile", "p-1", 1, "xyz", clouds[0]))
        assert sub.poll(30_000) and msgpack.unpackb(sub.recv_multipart()[1])["part"] == "p-1"
        assert ask(None, {"cmd": "status"}) is None  # no key: no reply
        assert ask("cam", {"cmd": "status"}) is None  # a sensor key on the control socket
        assert ask("screen", {"cmd": "shutdown"})["code"] == "forbidden"
        assert ask("alice", {"cmd": "switch", "line": "tile", "profile": str(config)})["code"] == "invalid_profile"
        assert ask("alice", {"cmd": "shutdown"})["ok"]
        assert proc.wait(60) == 0
        log = proc.stderr.read()
        assert "refused a connection to the control socket from 127.0.0.1: cam (sensor)" in log
        assert "with CURVE" in log
    finally:
        if proc.poll() is None:
            proc.kill()
        ctx.destroy(linger=0)


def test_demo_and_bench_key_options(tmp_path):
    from edge_runtime.bench.station import build_parser as bench_parser
    from edge_runtime.station.demo import build_parser as demo_parser

    keys_dir, certs = new_ring(tmp_path, ROLES)
    for parser in (demo_parser(), bench_parser()):
        given = parser.parse_args(["--keys-dir", str(keys_dir), "--sensor-key", str(certs["cam"]),
                                   "--subscriber-key", str(certs["screen"])])
        assert keys.client_keys_of(given, tmp_path) == (keys_dir, certs["cam"], certs["screen"])
        assert keys.client_keys_of(parser.parse_args([]), tmp_path) == (None, None, None)
        with pytest.raises(ValueError, match="--sensor-key and --subscriber-key"):
            keys.client_keys_of(parser.parse_args([]), tmp_path, keys_dir)  # the config has [security]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    made, sensor, subscriber = keys.client_keys_of(demo_parser().parse_args(["--secure"]), scratch)
    ring = keys.KeyRing(made).names()
    assert ring == {sensor.stem: "sensor", subscriber.stem: "observer"} and sensor.is_file()
