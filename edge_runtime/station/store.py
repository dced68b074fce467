"""What survives a restart: received frames, the verdict log, windows, line switches,
the audit log, verdicts the reject gate has not taken yet.

One SQLite database (WAL) in the state directory, one ``.npz`` file per saved
window, and one file per received frame's payload in ``frames/`` (its row in
the database names it): a frame's space is given back the moment it is deleted,
without rewriting the database. The rules that make a SIGKILL lose no part:

- a frame is stored (its file written, then its row committed) before it is
  paired, so a part received but not yet decided is found again at start-up
  and scored then; a frame file no row names was never stored and is removed;
- a verdict is committed before it is published, and (line, part) is unique
  in the log, so a part never gets a second verdict;
- a window is written to a new file first, then one transaction points the line
  at it and deletes the frames of the parts it contains; a crash on either side
  of that transaction leaves a consistent pair (window file, remaining frames);
- a verdict for the reject gate is queued (table ``gate_backlog``) in the same
  transaction that logs it and leaves the queue once the gate has taken it.

Space is given back: frame files are unlinked with their rows; the database
runs with ``auto_vacuum = INCREMENTAL`` (an older database is converted once at
start-up) and frees the pages of deleted rows (payloads an older version kept
inside it) after each transaction that deletes frames; the WAL is truncated
back to ``_WAL_KEEP`` after checkpoints.

Damaged state is moved aside, never deleted: a ``station.db`` SQLite cannot read
(zero bytes, a foreign header, truncated) goes to ``quarantine/`` with the frame
files it named, and a new one starts (its windows are adopted again from their
file names); an unreadable
window file goes there too and its line starts cold. Failures to write (a full
disk) raise ``StorageError``.

Columns ``line, part, seq, verdict, score, threshold, threshold_source, ts`` of
table ``verdicts`` are read by ``musc-edge calibrate threshold --db``.

Table ``audit`` holds who asked the station for what and how it ended: every
control request that changes something, every refused one, every refused
connection (the last ``AUDIT_KEEP`` rows).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import shutil
import sqlite3
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import msgpack
import numpy as np

from edge_runtime.stream.protocol import Verdict

log = logging.getLogger(__name__)

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
CREATE TABLE IF NOT EXISTS gate_backlog (
    id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL, part TEXT NOT NULL, header BLOB NOT NULL,
    UNIQUE (line, part)
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, who TEXT NOT NULL, role TEXT,
    address TEXT, what TEXT NOT NULL, result TEXT NOT NULL, detail TEXT
);
"""
AUDIT_KEEP = 100_000  # rows; a caller retrying bad requests cannot fill the disk
_AUDIT_TEXT = 512  # characters kept of a request or a reason
# Columns added since the first schema: (table, column, declaration), added to older databases at start-up.
_ADDED_COLUMNS = (
    ("frames", "file", "TEXT"),  # the payload's file in frames/ (NULL: the payload is in the row)
)
_SQLITE_MAGIC = b"SQLite format 3\x00"
_WAL_KEEP = 16 * 1024 * 1024  # bytes of WAL kept after a checkpoint (the rest is truncated)


class StorageError(OSError):
    """The state directory could not be written (full disk, I/O error); names what failed."""


@contextlib.contextmanager
def _writing(what: str):
    """Turn the store's write failures into StorageError; programming errors pass through."""
    try:
        yield
    except StorageError:
        raise
    except (sqlite3.OperationalError, OSError) as exc:
        raise StorageError(f"{what}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        if type(exc) is not sqlite3.DatabaseError:  # IntegrityError, ProgrammingError: bugs, not the disk
            raise
        raise StorageError(f"{what}: {exc}") from exc


def _rollback(db: sqlite3.Connection) -> None:
    """ROLLBACK if a transaction is open (SQLite ends some on its own, e.g. on a full disk)."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


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
    """The station's state directory. Thread-safe: one connection behind a lock.

    quarantined: what was moved to ``quarantine/`` since opening, one line each
    (read by the station's health).
    """

    def __init__(self, state_dir: str | Path, synchronous: str = "normal"):
        self.dir = Path(state_dir)
        self.windows_dir = self.dir / "windows"
        self.windows_dir.mkdir(parents=True, exist_ok=True)
        self.frames_dir = self.dir / "frames"
        self.quarantine_dir = self.dir / "quarantine"
        self.path = self.dir / "station.db"
        self.quarantined: list[str] = []
        self._full = synchronous == "full"
        self._lock = threading.Lock()
        self._names = itertools.count()  # frame file names: unique even within one clock tick
        with _writing(f"opening {self.path}"):
            self._db = self._open()
        self.frames_dir.mkdir(exist_ok=True)
        self._tidy_frames()
        self._tidy_windows()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def free_bytes(self) -> int:
        """Free space of the file system holding the state directory, in bytes (OSError
        when it cannot be read)."""
        return shutil.disk_usage(self.dir).free

    # --- opening ------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """The database, with the schema; an unreadable one is quarantined and a new one made."""
        problem = _db_problem(self.path)
        if problem is not None:
            moved = [self._quarantine(p, problem) for p in _db_files(self.path)]
            log.error("STATE DAMAGED: %s %s; moved to %s; starting a new database (verdict log, stored "
                      "frames and gate backlog start empty; windows are adopted from their files)",
                      self.path, problem, ", ".join(str(m) for m in moved))
        if not self.path.exists() and self.frames_dir.is_dir() and any(self.frames_dir.iterdir()):
            # frame files whose database is gone: only that database could say which part each is
            target = self._quarantine(self.frames_dir, f"frame files without their database ({problem or 'missing'})")
            log.error("STATE DAMAGED: frame files without %s moved to %s", self.path.name, target)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        try:
            fresh = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
            if fresh:
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect only before the first table
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA journal_size_limit={_WAL_KEEP}")
            db.execute(f"PRAGMA synchronous={'FULL' if self._full else 'NORMAL'}")
            db.executescript(_SCHEMA)
            for table, column, declaration in _ADDED_COLUMNS:
                if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
                log.info("%s: converting to incremental auto-vacuum (once)", self.path)
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                try:
                    db.execute("VACUUM")  # rewrites the file: needs about its size free
                except sqlite3.OperationalError as exc:
                    log.warning("%s: not converted (%s); freed pages are reused but not given back "
                                "to the file system until a later start converts it", self.path, exc)
        except BaseException:
            db.close()
            raise
        return db

    def _quarantine(self, path: Path, reason: str) -> Path:
        """Move ``path`` into ``quarantine/`` (a new name if taken) and remember why."""
        self.quarantine_dir.mkdir(exist_ok=True)
        target = self.quarantine_dir / path.name
        n = 1
        while target.exists():
            target = self.quarantine_dir / f"{path.name}.{n}"
            n += 1
        os.replace(path, target)
        self.quarantined.append(f"{path.name}: {reason} -> {target}")
        return target

    def _tidy_frames(self) -> None:
        """Frame files no row names: written, but the process stopped before their row was
        committed (the frame was never stored, nor acknowledged)."""
        with self._lock:
            named = {f for (f,) in self._db.execute("SELECT file FROM frames WHERE file IS NOT NULL")}
        for path in self.frames_dir.iterdir():
            if path.name not in named:
                path.unlink(missing_ok=True)

    def _tidy_windows(self) -> None:
        """Window files no row points at. A temporary, or a file of a line and profile
        whose row points at another existing file, is the leftover of an interrupted
        snapshot: removed. A file whose line and profile have no row (the database was
        new) is adopted, the newest one per line and profile; what remains is quarantined."""
        with self._lock:
            rows = {(line, key): path for line, key, path in self._db.execute("SELECT line, key, path FROM windows")}
        kept = {p for p in rows.values() if (self.windows_dir / p).is_file()}
        orphans: dict[tuple[str, str], list[Path]] = {}
        for path in sorted(self.windows_dir.iterdir()):
            if path.name in kept:
                continue
            owner = _window_owner(path.name)
            if path.name.endswith(".tmp") or (owner in rows and rows[owner] in kept):
                path.unlink(missing_ok=True)
            elif owner is None:
                log.warning("window folder: %s is not a window file; moved to %s", path,
                            self._quarantine(path, "not a window file name"))
            else:
                orphans.setdefault(owner, []).append(path)
        for (line, key), paths in orphans.items():
            *older, newest = sorted(paths, key=lambda p: _window_owner(p.name, stamp=True)[2])
            with self._lock, _writing(f"adopting window {newest.name}"):
                self._db.execute("INSERT OR REPLACE INTO windows (line, key, path, parts, ts) VALUES (?, ?, ?, 0, ?)",
                                 (line, key, newest.name, time.time()))
            log.warning("line %s: window %s adopted (the database had no record of it)", line, newest)
            for path in older:
                self._quarantine(path, f"older window of line {line}")

    # --- frames -----------------------------------------------------------

    def add_frame(self, line: str, part: str, sensor: str, header: bytes, payload: bytes) -> int:
        """Store a received frame (committed on return); its rx number."""
        path = self.frames_dir / f"{time.time_ns()}-{next(self._names)}.frame"
        with _writing(f"storing a {sensor} frame of line {line} part {part}"):
            try:
                with path.open("wb") as fh:
                    fh.write(payload)
                    if self._full:
                        fh.flush()
                        os.fsync(fh.fileno())
                if self._full:
                    _fsync_dir(self.frames_dir)
                with self._lock:
                    cur = self._db.execute(
                        "INSERT INTO frames (line, part, sensor, ts_rx, header, payload, file)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)", (line, part, sensor, time.time(), header, b"", path.name))
            except BaseException:
                path.unlink(missing_ok=True)
                raise
            return int(cur.lastrowid)

    def stored_parts(self) -> list[StoredPart]:
        """Every part that still has frames, in the order its last frame arrived. A frame
        whose file is gone comes back with an empty payload (its part is then refused)."""
        with self._lock:
            rows = self._db.execute("SELECT rx, line, part, header, payload, file FROM frames ORDER BY rx").fetchall()
            decided = set(self._db.execute(
                "SELECT v.line, v.part FROM verdicts v JOIN frames f ON v.line = f.line AND v.part = f.part"
            ).fetchall())
        parts: dict[tuple[str, str], StoredPart] = {}
        for rx, line, part, header, payload, file in rows:
            key = (line, part)
            if key not in parts:
                parts[key] = StoredPart(line, part, [], key in decided)
            if file is not None:
                try:
                    payload = (self.frames_dir / file).read_bytes()
                except OSError as exc:
                    log.warning("line %s part %s: stored frame %s unreadable: %s", line, part, file, exc)
                    payload = b""
            parts[key].frames.append((rx, bytes(header), bytes(payload)))
        return sorted(parts.values(), key=lambda p: p.last_rx)

    def _delete_frames(self, line: str, parts: list[str]) -> list[Path]:
        """Delete the frame rows of ``parts`` (inside the caller's transaction); the files to
        unlink once it commits."""
        files = []
        for part in parts:
            files += [self.frames_dir / f for (f,) in self._db.execute(
                "SELECT file FROM frames WHERE line = ? AND part = ? AND file IS NOT NULL", (line, part))]
            self._db.execute("DELETE FROM frames WHERE line = ? AND part = ?", (line, part))
        return files

    def _forget(self, files: list[Path]) -> None:
        """After a commit that deleted frames: their files, then the database pages they left."""
        for path in files:
            path.unlink(missing_ok=True)
        self._give_back()

    def _give_back(self) -> None:
        """Return the pages of deleted rows to the file system (lock held, no transaction).
        Best effort: on a full disk even this can fail, and the next deletion tries again."""
        try:
            # executescript steps it to the end; execute() would free one page only
            self._db.executescript("PRAGMA incremental_vacuum")
        except sqlite3.Error as exc:
            log.debug("incremental vacuum failed: %s", exc)

    # --- verdicts ---------------------------------------------------------

    def has_verdict(self, line: str, part: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM verdicts WHERE line = ? AND part = ?",
                                    (line, part)).fetchone() is not None

    def log_verdict(self, verdict: Verdict, origin: str, drop_frames: bool, to_gate: bool = False) -> Verdict | None:
        """Commit a verdict; return it with ``vseq`` (the line's verdict counter) set,
        or None when the part already has a verdict (nothing written).

        origin: "inspector" (the part went through its window) or "station"
        (decided by the station: errors, timeouts, overload). drop_frames: delete the
        part's stored frames in the same transaction (they will never be needed).
        to_gate: queue it for the reject gate in the same transaction (``gate_backlog``).
        """
        line, part = verdict.line, verdict.part
        with self._lock, _writing(f"logging the verdict of line {line} part {part}"):
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                if db.execute("SELECT 1 FROM verdicts WHERE line = ? AND part = ?", (line, part)).fetchone():
                    db.execute("ROLLBACK")
                    return None
                (vseq,) = db.execute("SELECT COALESCE(MAX(vseq), 0) + 1 FROM verdicts WHERE line = ?",
                                     (line,)).fetchone()
                verdict = dataclasses.replace(verdict, vseq=int(vseq))
                header = msgpack.packb(verdict.to_wire(), use_bin_type=True)
                db.execute(
                    "INSERT INTO verdicts (line, part, seq, verdict, score, threshold, threshold_source, ts,"
                    " header, origin, vseq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (line, part, verdict.seq, verdict.verdict, verdict.score, verdict.threshold,
                     verdict.threshold_source, verdict.ts, header, origin, verdict.vseq))
                if to_gate:
                    db.execute("INSERT INTO gate_backlog (line, part, header) VALUES (?, ?, ?)", (line, part, header))
                dropped = self._delete_frames(line, [part]) if drop_frames else []
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            if drop_frames:
                self._forget(dropped)
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

    # --- the reject gate's backlog ------------------------------------------

    def gate_backlog(self) -> list[Verdict]:
        """Verdicts queued for the reject gate and not yet taken, in the order they were logged."""
        with self._lock:
            rows = self._db.execute("SELECT header FROM gate_backlog ORDER BY id").fetchall()
        return [Verdict.from_wire(msgpack.unpackb(h, raw=False)) for (h,) in rows]

    def gate_taken(self, line: str, part: str) -> None:
        """The reject gate took the verdict of (line, part)."""
        with self._lock, _writing(f"removing line {line} part {part} from the gate backlog"):
            self._db.execute("DELETE FROM gate_backlog WHERE line = ? AND part = ?", (line, part))

    # --- windows ----------------------------------------------------------

    def save_window(self, line: str, key: str, state: dict[str, np.ndarray], parts: list[str]) -> Path:
        """Persist a window (``LineInspector.state()``) and forget the frames of ``parts``,
        the parts it now contains. Atomic: see the module docstring."""
        path = self.windows_dir / f"{line}--{key}--{time.time_ns()}.npz"
        tmp = path.with_name(path.name + ".tmp")
        with _writing(f"saving the window of line {line} to {path}"):
            try:
                with tmp.open("wb") as fh:
                    np.savez(fh, **state)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)  # a half-written temporary only takes space
                raise
            if self._full:
                _fsync_dir(self.windows_dir)
        with self._lock, _writing(f"recording the window of line {line}"):
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                old = db.execute("SELECT path FROM windows WHERE line = ? AND key = ?", (line, key)).fetchone()
                db.execute("INSERT OR REPLACE INTO windows (line, key, path, parts, ts) VALUES (?, ?, ?, ?, ?)",
                           (line, key, path.name, len(parts), time.time()))
                dropped = self._delete_frames(line, parts)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                path.unlink(missing_ok=True)
                raise
            if parts:
                self._forget(dropped)
        if old and old[0] != path.name:
            (self.windows_dir / old[0]).unlink(missing_ok=True)
        return path

    def load_window(self, line: str, key: str) -> dict[str, np.ndarray] | None:
        """The saved window of ``line`` under profile ``key``, or None (none saved, or
        its file unreadable: then moved to ``quarantine/`` with a WARNING naming it)."""
        with self._lock:
            row = self._db.execute("SELECT path FROM windows WHERE line = ? AND key = ?", (line, key)).fetchone()
        if row is None:
            return None
        path = self.windows_dir / row[0]
        if not path.is_file():
            log.warning("line %s: window file %s is missing; the line starts cold", line, path)
            self.quarantined.append(f"{path.name}: missing")
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            self.quarantine_window(line, key, f"unreadable ({type(exc).__name__}: {exc})")
            return None

    def quarantine_window(self, line: str, key: str, reason: str) -> None:
        """Move the window file of (line, key) to ``quarantine/`` with a WARNING naming it;
        the line's next snapshot records a new one."""
        with self._lock:
            row = self._db.execute("SELECT path FROM windows WHERE line = ? AND key = ?", (line, key)).fetchone()
        path = self.windows_dir / row[0]
        if path.is_file():
            target = self._quarantine(path, reason)
            log.warning("line %s: window file %s %s; moved to %s; the line starts cold", line, path, reason, target)

    # --- line switches ----------------------------------------------------

    def set_line_profile(self, line: str, profile: str) -> None:
        """Remember that ``line`` was switched to ``profile`` (kept across restarts)."""
        with self._lock, _writing(f"recording the profile of line {line}"):
            self._db.execute("INSERT OR REPLACE INTO line_profiles (line, profile, ts) VALUES (?, ?, ?)",
                             (line, profile, time.time()))

    def line_profiles(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT line, profile FROM line_profiles"))

    # --- audit ------------------------------------------------------------

    def audit(self, who: str, role: str | None, address: str | None, what: str, result: str,
              detail: str = "") -> None:
        """Append one audit entry (committed on return); texts are cut to a few hundred characters."""
        with self._lock, _writing(f"writing the audit log ({what[:40]})"):
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


def _db_problem(path: Path) -> str | None:
    """Why SQLite cannot use the database file at ``path``, or None (also when there is none)."""
    if not path.exists():
        return None
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    with path.open("rb") as fh:
        magic = fh.read(len(_SQLITE_MAGIC))
    if magic != _SQLITE_MAGIC:
        return f"is not an SQLite database (starts with {magic[:16]!r})"
    try:
        db = sqlite3.connect(path, timeout=30)
        try:
            result = db.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        # damage only: a database another process holds locked is not to be moved
        if getattr(exc, "sqlite_errorname", None) not in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
            raise
        return f"cannot be read ({exc})"
    return None if result == "ok" else f"fails its integrity check ({result})"


def _db_files(path: Path) -> list[Path]:
    """The database file and its WAL and shared-memory files, those that exist."""
    return [p for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")) if p.exists()]


def _window_owner(name: str, stamp: bool = False) -> tuple | None:
    """(line, profile key) of a window file name ``<line>--<key>--<ns>.npz`` (+ the time
    stamp with ``stamp``), or None for another name."""
    if not name.endswith(".npz"):
        return None
    parts = name[:-4].rsplit("--", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return (parts[0], parts[1], int(parts[2])) if stamp else (parts[0], parts[1])


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
