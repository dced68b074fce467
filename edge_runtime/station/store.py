"""What survives a restart: received frames, the verdict log, windows, line switches, the audit log.

One SQLite database (WAL) in the state directory plus one ``.npz`` file per
saved window. The rules that make a SIGKILL lose no part:

- a frame is stored (committed) before it is paired, so a part received but
  not yet decided is found again at start-up and scored then;
- a verdict is committed before it is published, and (line, part) is unique
  in the log, so a part never gets a second verdict;
- a window is written to a new file first, then one transaction points the line
  at it and deletes the frames of the parts it contains; a crash on either side
  of that transaction leaves a consistent pair (window file, remaining frames).

Columns ``line, part, seq, verdict, score, threshold, threshold_source, ts`` of
table ``verdicts`` are read by ``musc-edge calibrate threshold --db``.

Table ``audit`` holds who asked the station for what and how it ended: every
control request that changes something, every refused one, every refused
connection (the last ``AUDIT_KEEP`` rows).
"""
from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np

from edge_runtime.stream.protocol import Verdict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    line TEXT NOT NULL, part TEXT NOT NULL, seq INTEGER, verdict TEXT NOT NULL,
    score REAL, threshold REAL, threshold_source TEXT, ts REAL NOT NULL,
    header BLOB NOT NULL, origin TEXT NOT NULL, vseq INTEGER NOT NULL,
    UNIQUE (line, part)
);
CREATE INDEX IF NOT EXISTS verdicts_line_vseq ON verdicts (line, vseq);
CREATE TABLE IF NOT EXISTS frames (
    rx INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL, part TEXT NOT NULL,
    sensor TEXT NOT NULL, ts_rx REAL NOT NULL, header BLOB NOT NULL, payload BLOB NOT NULL,
    UNIQUE (line, part, sensor)
);
CREATE TABLE IF NOT EXISTS windows (
    line TEXT NOT NULL, key TEXT NOT NULL, path TEXT NOT NULL, parts INTEGER NOT NULL, ts REAL NOT NULL,
    PRIMARY KEY (line, key)
);
CREATE TABLE IF NOT EXISTS line_profiles (
    line TEXT PRIMARY KEY, profile TEXT NOT NULL, ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, who TEXT NOT NULL, role TEXT,
    address TEXT, what TEXT NOT NULL, result TEXT NOT NULL, detail TEXT
);
"""
AUDIT_KEEP = 100_000  # rows; a caller retrying bad requests cannot fill the disk
_AUDIT_TEXT = 512  # characters kept of a request or a reason


@dataclass
class StoredPart:
    """Frames of one part found in the store: rows of (rx, header bytes, payload)."""

    line: str
    part: str
    frames: list[tuple[int, bytes, bytes]]
    decided: bool

    @property
    def last_rx(self) -> int:
        return max(rx for rx, _, _ in self.frames)


class Store:
    """The station's state directory. Thread-safe: one connection behind a lock."""

    def __init__(self, state_dir: str | Path, synchronous: str = "normal"):
        self.dir = Path(state_dir)
        self.windows_dir = self.dir / "windows"
        self.windows_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "station.db"
        self._full = synchronous == "full"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if self._full else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        self._remove_orphan_windows()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- frames -----------------------------------------------------------

    def add_frame(self, line: str, part: str, sensor: str, header: bytes, payload: bytes) -> int:
        """Store a received frame (committed on return); its rx number."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO frames (line, part, sensor, ts_rx, header, payload) VALUES (?, ?, ?, ?, ?, ?)",
                (line, part, sensor, time.time(), header, payload))
            return int(cur.lastrowid)

    def stored_parts(self) -> list[StoredPart]:
        """Every part that still has frames, in the order its last frame arrived."""
        with self._lock:
            rows = self._db.execute("SELECT rx, line, part, header, payload FROM frames ORDER BY rx").fetchall()
            decided = set(self._db.execute(
                "SELECT v.line, v.part FROM verdicts v JOIN frames f ON v.line = f.line AND v.part = f.part"
            ).fetchall())
        parts: dict[tuple[str, str], StoredPart] = {}
        for rx, line, part, header, payload in rows:
            key = (line, part)
            if key not in parts:
                parts[key] = StoredPart(line, part, [], key in decided)
            parts[key].frames.append((rx, bytes(header), bytes(payload)))
        return sorted(parts.values(), key=lambda p: p.last_rx)

    # --- verdicts ---------------------------------------------------------

    def has_verdict(self, line: str, part: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM verdicts WHERE line = ? AND part = ?",
                                    (line, part)).fetchone() is not None

    def log_verdict(self, verdict: Verdict, origin: str, drop_frames: bool) -> Verdict | None:
        """Commit a verdict; return it with ``vseq`` (the line's verdict counter) set,
        or None when the part already has a verdict (nothing written).

        origin: "inspector" (the part went through its window) or "station"
        (decided by the station: errors, timeouts, overload). drop_frames: delete the
        part's stored frames in the same transaction (they will never be needed).
        """
        line, part = verdict.line, verdict.part
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT 1 FROM verdicts WHERE line = ? AND part = ?", (line, part)).fetchone():
                    db.execute("ROLLBACK")
                    return None
                (vseq,) = db.execute("SELECT COALESCE(MAX(vseq), 0) + 1 FROM verdicts WHERE line = ?",
                                     (line,)).fetchone()
                verdict = dataclasses.replace(verdict, vseq=int(vseq))
                db.execute(
                    "INSERT INTO verdicts (line, part, seq, verdict, score, threshold, threshold_source, ts,"
                    " header, origin, vseq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (line, part, verdict.seq, verdict.verdict, verdict.score, verdict.threshold,
                     verdict.threshold_source, verdict.ts, msgpack.packb(verdict.to_wire(), use_bin_type=True),
                     origin, verdict.vseq))
                if drop_frames:
                    db.execute("DELETE FROM frames WHERE line = ? AND part = ?", (line, part))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return verdict

    def verdicts(self, line: str, last: int = 20, parts: list[str] | None = None) -> list[dict]:
        """Logged verdict headers of a line, oldest first: the last ``last``, or those of ``parts``."""
        with self._lock:
            if parts is not None:
                marks = ",".join("?" * len(parts))
                rows = self._db.execute(f"SELECT header FROM verdicts WHERE line = ? AND part IN ({marks})"
                                        " ORDER BY vseq", (line, *parts)).fetchall()
            else:
                rows = self._db.execute("SELECT header FROM verdicts WHERE line = ? ORDER BY vseq DESC LIMIT ?",
                                        (line, int(last))).fetchall()[::-1]
        return [msgpack.unpackb(h, raw=False) for (h,) in rows]

    # --- windows ----------------------------------------------------------

    def save_window(self, line: str, key: str, state: dict[str, np.ndarray], parts: list[str]) -> Path:
        """Persist a window (``LineInspector.state()``) and forget the frames of ``parts``,
        the parts it now contains. Atomic: see the module docstring."""
        path = self.windows_dir / f"{line}--{key}--{time.time_ns()}.npz"
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as fh:
            np.savez(fh, **state)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        if self._full:
            _fsync_dir(self.windows_dir)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                old = db.execute("SELECT path FROM windows WHERE line = ? AND key = ?", (line, key)).fetchone()
                db.execute("INSERT OR REPLACE INTO windows (line, key, path, parts, ts) VALUES (?, ?, ?, ?, ?)",
                           (line, key, path.name, len(parts), time.time()))
                db.executemany("DELETE FROM frames WHERE line = ? AND part = ?", [(line, p) for p in parts])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                path.unlink(missing_ok=True)
                raise
        if old and old[0] != path.name:
            (self.windows_dir / old[0]).unlink(missing_ok=True)
        return path

    def load_window(self, line: str, key: str) -> dict[str, np.ndarray] | None:
        """The saved window of ``line`` under profile ``key``, or None."""
        with self._lock:
            row = self._db.execute("SELECT path FROM windows WHERE line = ? AND key = ?", (line, key)).fetchone()
        if row is None:
            return None
        with np.load(self.windows_dir / row[0], allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def _remove_orphan_windows(self) -> None:
        """Files a crash left behind: temporaries and windows no row points at."""
        with self._lock:
            kept = {p for (p,) in self._db.execute("SELECT path FROM windows")}
        for path in self.windows_dir.iterdir():
            if path.name not in kept:
                path.unlink(missing_ok=True)

    # --- line switches ----------------------------------------------------

    def set_line_profile(self, line: str, profile: str) -> None:
        """Remember that ``line`` was switched to ``profile`` (kept across restarts)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO line_profiles (line, profile, ts) VALUES (?, ?, ?)",
                             (line, profile, time.time()))

    def line_profiles(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT line, profile FROM line_profiles"))

    # --- audit ------------------------------------------------------------

    def audit(self, who: str, role: str | None, address: str | None, what: str, result: str,
              detail: str = "") -> None:
        """Append one audit entry (committed on return); texts are cut to a few hundred characters."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO audit (ts, who, role, address, what, result, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), who, role, address, what[:_AUDIT_TEXT], result, detail[:_AUDIT_TEXT]))
            self._db.execute("DELETE FROM audit WHERE id <= ?", (cur.lastrowid - AUDIT_KEEP,))

    def audit_log(self, last: int = 20) -> list[dict]:
        """The last ``last`` audit entries, oldest first."""
        with self._lock:
            cur = self._db.execute("SELECT id, ts, who, role, address, what, result, detail FROM audit"
                                   " ORDER BY id DESC LIMIT ?", (int(last),))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()[::-1]]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
