"""Real faults: a full disk (tmpfs), damaged state files, decompression bombs, a byte
bound on waiting frames, the reject gate's backlog across a restart, hostile part ids."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from edge_runtime.sim.generator import iter_parts
from edge_runtime.station.config import load_station_config
from edge_runtime.station.ctl import status_table
from edge_runtime.station.service import Station
from edge_runtime.station.store import StorageError, Store
from edge_runtime.station.verdicts import refusal
from edge_runtime.stream.decode import image_header
from edge_runtime.stream.protocol import FrameHeader, encode_frame
from tests.station_helpers import SMALL_3D, Client, free_endpoint, running, serve_command, write_station

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def clouds():
    return [p.xyz for p in iter_parts("tile", 8, 0.0, seed=5, image_size=64)]


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (root only), unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the full-disk test fills a real file system)")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a ballast file until the file system is full (0 bytes free)."""
    ballast = directory / "ballast"
    with ballast.open("wb", buffering=0) as fh:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError:
                pass
    return ballast


def codes(verdicts) -> list[tuple[str, str]]:
    return [(h["part"], h["error"]["code"] if h["verdict"] == "error" else h["verdict"]) for h, _ in verdicts]


# --- 1. a full disk -----------------------------------------------------------

def wait_ready(client: Client, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "station exited during start-up"
        with contextlib.suppress(TimeoutError):
            client.request({"cmd": "status"}, timeout_ms=1000)
            time.sleep(0.3)  # the subscription joins asynchronously
            return
    raise TimeoutError("station did not start")


def test_full_disk_answers_every_part_degrades_recovers_and_a_failed_save_fails_the_exit(tmp_path, clouds):
    state = tmp_path / "state"
    with tmpfs(state, "24m"):
        config = write_station(tmp_path, {"tile": SMALL_3D}, station={"min_free_bytes": 1 << 20})
        log = (tmp_path / "serve.log").open("wb")
        proc = subprocess.Popen(serve_command(config), stdout=log, stderr=subprocess.STDOUT)
        cfg = load_station_config(config)
        client = Client({"frames": cfg.frames, "verdicts": cfg.verdicts, "control": cfg.control})
        try:
            wait_ready(client, proc)
            sent = [f"warm-{i}" for i in range(6)]
            for i, part in enumerate(sent):
                client.push.send_multipart(encode_frame("tile", part, i, "xyz", clouds[i]))
            assert len(client.verdicts(6)) == 6

            ballast = fill(state)
            full = [f"full-{i}-é" for i in range(12)]
            for i, part in enumerate(full):
                client.push.send_multipart(encode_frame("tile", part, 100 + i, "xyz", clouds[i % 8]))
            got = client.verdicts(len(full))
            reply = client.request({"cmd": "status"})
            status = reply["station"]
            assert sorted(h["part"] for h, _ in got) == sorted(full)  # one each
            assert {c for _, c in codes(got)} == {"storage"}, codes(got)
            assert "min_free_bytes" in got[0][0]["error"]["message"]
            assert status["degraded"] and "disk_space" in status["reasons"], status
            assert "DEGRADED (disk_space)" in status_table(reply)

            ballast.unlink()
            back = [f"back-{i}" for i in range(4)]
            for i, part in enumerate(back):
                client.push.send_multipart(encode_frame("tile", part, 200 + i, "xyz", clouds[i]))
            got_back = client.verdicts(len(back))
            assert {c for _, c in codes(got_back)} <= {"ok", "ng"}, codes(got_back)
            status = client.request({"cmd": "status"})["station"]
            assert not status["degraded"], status["reasons"]

            fill(state)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) != 0  # the window could not be saved
            assert not client.sub.poll(500), "a part got a second verdict"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            client.close()
            log.close()
        assert b"window not saved" in (tmp_path / "serve.log").read_bytes()


def test_a_store_that_cannot_write_raises_storage_errors_and_keeps_one_verdict_per_part(tmp_path):
    state = tmp_path / "state"
    with tmpfs(state, "4m"):
        store = Store(state)
        try:
            fill(state)
            verdict = refusal("L", "p1", 1, "x", "y")
            with pytest.raises(StorageError, match="frame of line L part p1: .*No space left"):
                store.add_frame("L", "p1", "xyz", b"h", b"\0" * 300_000)
            assert list((state / "frames").iterdir()) == [] and store.stored_parts() == []
            with pytest.raises(StorageError, match="window of line L"):
                store.save_window("L", "k", {"x": np.zeros(200_000)}, parts=[])
            assert not any(p.name.endswith(".tmp") for p in (state / "windows").iterdir())
            (state / "ballast").unlink()
            assert store.log_verdict(verdict, "station", True).vseq == 1
            assert store.log_verdict(verdict, "station", True) is None
        finally:
            store.close()


# --- 2. bounded disk use ------------------------------------------------------

def used(state: Path) -> int:
    return sum(p.stat().st_size for p in state.rglob("*") if p.is_file())


def test_deleted_frames_give_their_space_back(tmp_path):
    store = Store(tmp_path)
    payload = np.random.default_rng(0).bytes(4 << 20)
    for i in range(6):
        store.add_frame("L", f"p{i}", "xyz", b"h", payload)
    grown = used(tmp_path)
    assert [p.frames[0][2] == payload for p in store.stored_parts()] == [True] * 6
    for i in range(3):
        store.log_verdict(refusal("L", f"p{i}", i, "x", "y"), "station", drop_frames=True)
    store.save_window("L", "k", {"x": np.zeros(4)}, parts=["p3", "p4", "p5"])
    store.close()
    assert grown > 24 << 20 and used(tmp_path) < 1 << 20, (grown, used(tmp_path))
    assert list((tmp_path / "frames").iterdir()) == []


def test_an_old_database_is_converted_and_its_frames_still_read_and_give_space_back(tmp_path):
    db = sqlite3.connect(tmp_path / "station.db")  # the first schema: payloads inside the database
    db.execute("CREATE TABLE frames (rx INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL, part TEXT NOT NULL,"
               " sensor TEXT NOT NULL, ts_rx REAL NOT NULL, header BLOB NOT NULL, payload BLOB NOT NULL,"
               " UNIQUE (line, part, sensor))")
    payload = np.random.default_rng(1).bytes(8 << 20)
    db.execute("INSERT INTO frames (line, part, sensor, ts_rx, header, payload) VALUES ('L', 'old', 'xyz', 0, x'00', ?)",
               (payload,))
    db.commit()
    db.close()
    store = Store(tmp_path)
    assert [(p.part, p.frames[0][2] == payload) for p in store.stored_parts()] == [("old", True)]
    store.log_verdict(refusal("L", "old", 0, "x", "y"), "station", drop_frames=True)
    store.close()
    assert sqlite3.connect(tmp_path / "station.db").execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    assert used(tmp_path) < 1 << 20


# --- 3. damaged state ---------------------------------------------------------

@pytest.fixture(scope="module")
def saved_state(tmp_path_factory, clouds):
    """A state directory with warm windows of two lines (tile, press)."""
    root = tmp_path_factory.mktemp("saved")
    config = load_station_config(write_station(root, {"tile": SMALL_3D, "press": SMALL_3D}))
    with running(Station(config)) as station:
        client = Client(station.endpoints)
        client.wait_subscribed()
        for i in range(6):
            for line in ("tile", "press"):
                client.push.send_multipart(encode_frame(line, f"{line}-{i}", i, "xyz", clouds[i]))
        client.verdicts(12)
        client.close()
    return root


def restart(saved: Path, tmp_path: Path):
    root = tmp_path / "copy"
    shutil.copytree(saved, root)
    config = write_station(root, {"tile": SMALL_3D, "press": SMALL_3D})
    return root, Station(load_station_config(config))


def window_file(root: Path, line: str) -> Path:
    (path,) = (root / "state" / "windows").glob(f"{line}--*.npz")
    return path


@pytest.mark.parametrize("damage", ["half", "empty", "deleted"])
def test_an_unreadable_window_starts_its_line_cold_and_is_kept_aside(saved_state, tmp_path, caplog, damage):
    root, station = restart(saved_state, tmp_path)
    path = window_file(root, "tile")
    original = path.read_bytes()
    if damage == "deleted":
        path.unlink()
    else:
        path.write_bytes(original[: len(original) // 2] if damage == "half" else b"")
    with caplog.at_level(logging.WARNING), running(station):
        status = station.status()
    assert status["lines"]["tile"]["window"] == 0
    assert status["lines"]["press"]["window"] == 6
    warning = next(r.getMessage() for r in caplog.records if path.name in r.getMessage())
    assert "cold" in warning
    if damage != "deleted":
        assert (root / "state" / "quarantine" / path.name).is_file()
    assert window_file(root, "press").is_file()


@pytest.mark.parametrize("damage", ["empty", "garbage", "half"])
def test_an_unreadable_database_is_kept_aside_and_a_new_one_starts_with_the_windows(
        saved_state, tmp_path, caplog, damage):
    root, station = restart(saved_state, tmp_path)
    db = root / "state" / "station.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = db.read_bytes()
    db.write_bytes({"empty": b"", "garbage": b"\x00garbage!" * 64 + data[576:],
                    "half": data[: len(data) // 2]}[damage])
    damaged = db.read_bytes()
    with caplog.at_level(logging.WARNING), running(station):
        status = station.status()
    assert (root / "state" / "quarantine" / "station.db").read_bytes() == damaged
    assert any("STATE DAMAGED" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert any("station.db" in n for n in status["station"]["notices"])
    assert status["lines"]["tile"]["window"] == 6 and status["lines"]["press"]["window"] == 6  # adopted


def test_frame_files_without_their_database_are_kept_aside(tmp_path):
    store = Store(tmp_path)
    store.add_frame("L", "p", "xyz", b"h", b"payload")
    store.close()
    for path in tmp_path.glob("station.db*"):
        path.unlink()
    store = Store(tmp_path)
    store.close()
    assert [p.read_bytes() for p in (tmp_path / "quarantine" / "frames").iterdir()] == [b"payload"]
    assert list((tmp_path / "frames").iterdir()) == []


# --- 4. bounded decoding --------------------------------------------------------

def rgb_header(h: int, w: int, encoding: str = "png") -> FrameHeader:
    return FrameHeader("tile", "bomb", 1, "rgb", 0.0, encoding, "uint8", (h, w, 3))


def test_image_sizes_are_read_from_header_bytes(clouds):
    rgb = np.zeros((48, 80, 3), np.uint8)
    for encoding in ("png", "jpeg"):
        payload = encode_frame("t", "p", 0, "rgb", rgb, encoding)[1]
        assert image_header(encoding, payload)[:3] == (48, 80, 3)
        mono = encode_frame("t", "p", 0, "rgb", rgb[:, :, 0], encoding)[1]
        assert image_header(encoding, mono)[:3] == (48, 80, 1)
    with pytest.raises(ValueError, match="JPEG"):
        image_header("jpeg", b"\xff\xd8\xff\xda" + b"\0" * 32)


def test_a_png_bomb_is_refused_before_its_pixels_exist():
    """In a fresh interpreter, so its peak memory is the decoder's alone."""
    script = f"""
import resource, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
from edge_runtime.bench.faults import png_bomb
from tests.test_station_faults import rgb_header
from edge_runtime.stream.decode import decode_payload
from edge_runtime.stream.protocol import ProtocolError, pack_frame, parse_frame
bomb = png_bomb(16000, 16000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
codes = []
for header, limit in ((rgb_header(64, 64), None), (rgb_header(16000, 16000), 4096 * 4096)):
    try:
        decode_payload(*parse_frame(pack_frame(header, bomb), limit))
    except ProtocolError as exc:
        codes.append(exc.code + ":" + str(exc))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(bomb), peak - before, *codes, sep="\\n")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split("\n")
    size, grown_kb, mismatch, over = int(out[0]), int(out[1]), out[2], out[3]
    assert size < 8 << 20  # 768 MB of pixels in a few MB
    assert mismatch.startswith("shape:") and "16000, 16000" in mismatch and "not decoded" in mismatch
    assert over.startswith("shape:") and "max_frame_pixels" in over
    assert grown_kb < 64 << 10, f"decoding grew the process by {grown_kb} kB"


def test_waiting_frames_are_bounded_in_bytes(tmp_path, clouds):
    per_frame = clouds[0].nbytes
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D},
                                               station={"max_pending_bytes": 3 * per_frame}))
    with running(Station(config)) as station:
        client = Client(station.endpoints)
        client.wait_subscribed()
        parts = [f"q{i}" for i in range(24)]
        for i, part in enumerate(parts):
            client.push.send_multipart(encode_frame("tile", part, i, "xyz", clouds[i % 8]))
        got = client.verdicts(len(parts))
        assert not client.sub.poll(300)
        client.close()
    assert sorted(h["part"] for h, _ in got) == sorted(parts)
    overloaded = [h for h, _ in got if h["verdict"] == "error" and h["error"]["code"] == "overload"]
    assert overloaded and all("max_pending_bytes" in h["error"]["message"] for h in overloaded)
    assert len(overloaded) < len(parts)


# --- 5. the reject gate's backlog across a restart ----------------------------

def test_the_reject_gate_gets_every_verdict_in_order_after_a_restart(tmp_path, clouds):
    gate_endpoint = free_endpoint()
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D}, endpoints={
        "frames": free_endpoint(), "verdicts": free_endpoint(), "control": free_endpoint(),
        "reject": gate_endpoint}))
    with running(Station(config)) as station:  # the gate is not connected yet
        client = Client(station.endpoints)
        client.wait_subscribed()
        for i in range(5):
            client.push.send_multipart(encode_frame("tile", f"r{i}", i, "xyz", clouds[i]))
        client.verdicts(5)
        deadline = time.monotonic() + 10  # the publisher queues for the gate just after PUB
        while station.status()["station"]["reject_backlog"] < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert station.status()["station"]["reject_backlog"] == 5
        client.close()
    with running(Station(config)) as station:
        gate = zmq.Context.instance().socket(zmq.PULL)
        gate.connect(gate_endpoint)
        client = Client(station.endpoints)
        client.wait_subscribed()
        for i in range(5, 8):
            client.push.send_multipart(encode_frame("tile", f"r{i}", i, "xyz", clouds[i]))
        client.verdicts(3)
        taken = []
        while gate.poll(5000):
            taken.append(msgpack.unpackb(gate.recv_multipart()[1]))
        gate.close(linger=0)
        client.close()
        assert station.status()["station"]["reject_backlog"] == 0
    assert [h["part"] for h in taken] == [f"r{i}" for i in range(8)]
    assert [h["vseq"] for h in taken] == list(range(1, 9))
    assert Store(config.state_dir).gate_backlog() == []


# --- 6. part ids and message sizes ----------------------------------------------

def test_any_utf8_part_id_works_and_bad_ones_are_answered_on_their_line(tmp_path, clouds):
    config = load_station_config(write_station(tmp_path, {"tile": SMALL_3D},
                                               station={"max_frame_bytes": 60_000}))
    good = ["part-é-😀", "零件/7 (a)", "x" * 128]
    long_id = "y" * 129
    with running(Station(config)) as station:
        client = Client(station.endpoints)
        client.wait_subscribed()
        for i, part in enumerate(good + [long_id]):
            client.push.send_multipart(encode_frame("tile", part, i, "xyz", clouds[i]))
        raw = msgpack.unpackb(encode_frame("tile", "z", 9, "xyz", clouds[0])[0])
        raw["part"] = b"bad-\xff\xfe"
        client.push.send_multipart([msgpack.packb(raw, use_bin_type=False), encode_frame("tile", "z", 9, "xyz", clouds[0])[1]])
        big = np.zeros((96, 96, 3), np.float32)  # 110 kB raw: over max_frame_bytes, under the transport limit
        client.push.send_multipart(encode_frame("tile", "big", 10, "xyz", big))
        got = {h["part"]: h for h, _ in client.verdicts(6)}
        huge = client.ctx.socket(zmq.PUSH)  # over twice max_frame_bytes: ZeroMQ drops it with the connection
        huge.connect(station.endpoints["frames"])
        huge.send_multipart(encode_frame("tile", "huge", 11, "xyz", np.zeros((128, 128, 3), np.float32)))
        client.push.send_multipart(encode_frame("tile", "after", 12, "xyz", clouds[5]))
        after = client.verdicts(1)[0][0]
        status = station.status()
        client.close()
    assert after["part"] == "after"  # the station kept serving
    for part in good:
        assert got[part]["verdict"] == "inconclusive", got[part]  # the window is still filling
    assert got[long_id]["error"]["code"] == "bad_part" and "129 characters" in got[long_id]["error"]["message"]
    assert got["bad-\\xff\\xfe"]["error"]["code"] == "bad_part"
    assert got["big"]["error"]["code"] == "size" and "max_frame_bytes" in got["big"]["error"]["message"]
    assert status["station"]["counts"]["oversize"] == 1
