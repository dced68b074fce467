"""The state directory: verdict log, stored frames, window snapshots, line switches."""
from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pytest

from edge_runtime.station.store import Store
from edge_runtime.stream.protocol import Verdict
from edge_runtime.station.verdicts import refusal


def header(part: str, verdict: str = "ok", line: str = "L") -> Verdict:
    error = refusal(line, part, 3, "x", "y").error if verdict == "error" else None
    return dataclasses.replace(refusal(line, part, 3, "x", "y"), verdict=verdict, score=0.5, threshold=0.7,
                               threshold_source="mad", error=error)


def test_a_part_has_at_most_one_verdict_and_vseq_counts_per_line(tmp_path):
    store = Store(tmp_path)
    assert store.log_verdict(header("a"), "inspector", False).vseq == 1
    assert store.log_verdict(header("a", "ng"), "inspector", False) is None
    assert store.log_verdict(header("b"), "inspector", False).vseq == 2
    assert store.log_verdict(header("a", line="M"), "inspector", False).vseq == 1
    assert [h["part"] for h in store.verdicts("L", last=5)] == ["a", "b"]
    assert store.verdicts("L", parts=["b", "zz"])[0]["vseq"] == 2
    assert store.has_verdict("L", "a") and not store.has_verdict("L", "c")
    store.close()
    # the columns `musc-edge calibrate threshold --db` reads
    rows = sqlite3.connect(tmp_path / "station.db").execute(
        "SELECT line, part, seq, verdict, score, threshold, threshold_source, ts FROM verdicts ORDER BY rowid").fetchall()
    assert rows[0][:7] == ("L", "a", 3, "ok", 0.5, 0.7, "mad") and len(rows) == 3


def test_frames_stay_until_a_verdict_or_snapshot_takes_them(tmp_path):
    store = Store(tmp_path)
    for part in ("a", "b", "c"):
        store.add_frame("L", part, "xyz", b"h-" + part.encode(), b"payload")
    store.add_frame("L", "a", "rgb", b"h-a2", b"png")
    store.log_verdict(header("b", "error"), "station", drop_frames=True)
    store.log_verdict(header("c"), "inspector", drop_frames=False)
    parts = store.stored_parts()
    assert [(p.part, len(p.frames), p.decided) for p in parts] == [("c", 1, True), ("a", 2, False)]
    store.save_window("L", "k1", {"x": np.arange(3)}, parts=["a", "c"])
    assert store.stored_parts() == []
    store.close()


def test_window_snapshots_replace_each_other_and_orphans_are_cleaned(tmp_path):
    store = Store(tmp_path)
    assert store.load_window("L", "k1") is None
    first = store.save_window("L", "k1", {"x": np.arange(3)}, parts=[])
    second = store.save_window("L", "k1", {"x": np.arange(4), "meta": np.array('{"a": 1}')}, parts=[])
    assert not first.exists() and second.exists()
    got = store.load_window("L", "k1")
    np.testing.assert_array_equal(got["x"], np.arange(4))
    assert str(got["meta"]) == '{"a": 1}'
    store.save_window("L", "k2", {"x": np.zeros(1)}, parts=[])
    np.testing.assert_array_equal(store.load_window("L", "k1")["x"], np.arange(4))  # per profile key
    store.close()
    # a crash between writing a window file and committing it leaves an orphan
    (tmp_path / "windows" / "L--k1--1.npz.tmp").write_bytes(b"half")
    (tmp_path / "windows" / "L--k1--2.npz").write_bytes(b"never committed")
    store = Store(tmp_path)
    assert sorted(p.name for p in (tmp_path / "windows").iterdir()) == sorted(
        [second.name, next(p.name for p in (tmp_path / "windows").iterdir() if "k2" in p.name)])
    np.testing.assert_array_equal(store.load_window("L", "k1")["x"], np.arange(4))
    store.close()


def test_line_switches_are_remembered(tmp_path):
    store = Store(tmp_path)
    store.set_line_profile("L", "/etc/lines/a.toml")
    store.set_line_profile("L", "/etc/lines/b.toml")
    store.close()
    assert Store(tmp_path).line_profiles() == {"L": "/etc/lines/b.toml"}


def test_a_failed_transaction_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(sqlite3.Error):  # an origin SQLite cannot bind fails inside the transaction
        store.log_verdict(header("a"), object(), False)
    assert store.log_verdict(header("a"), "inspector", False).vseq == 1
    store.close()
