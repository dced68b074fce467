"""Is the station healthy? Reasons it is degraded, set and cleared by the threads that see them.

A reason is a key and a message. Keys in use:

- ``disk_space``: free space in the state directory is below ``min_free_bytes``
  (new frames are refused with ``storage`` errors until it is back);
- ``storage.frames``, ``storage.verdicts``, ``storage.gate``: the last write of
  that kind failed (a full disk, an I/O error);
- ``storage.window.<line>``: the last window snapshot of that line failed;
- ``storage.audit``: the last audit entry could not be written.

Each is cleared by the next success of the same kind, so the station recovers
by itself when space returns. ``Station.health()`` returns ``snapshot()``.
"""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Health:
    """Degradation reasons by key; thread-safe. ``notices`` are things an operator
    should know that do not degrade the station (damaged state moved aside)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._reasons: dict[str, tuple[str, float]] = {}
        self.notices: list[str] = []

    def set(self, key: str, message: str) -> None:
        with self._lock:
            new = key not in self._reasons
            self._reasons[key] = (message, self._reasons[key][1] if not new else time.time())
        if new:
            log.error("station degraded (%s): %s", key, message)

    def clear(self, key: str) -> None:
        with self._lock:
            gone = self._reasons.pop(key, None)
        if gone is not None:
            log.warning("station recovered (%s) after %.1f s", key, time.time() - gone[1])

    @property
    def degraded(self) -> bool:
        with self._lock:
            return bool(self._reasons)

    def snapshot(self) -> dict:
        """{"degraded": bool, "reasons": {key: message}, "since": {key: epoch s}, "notices": [...]}."""
        with self._lock:
            reasons = dict(self._reasons)
        return {"degraded": bool(reasons), "reasons": {k: m for k, (m, _) in reasons.items()},
                "since": {k: t for k, (_, t) in reasons.items()}, "notices": list(self.notices)}


class SpaceFloor:
    """The free-space floor of the state directory: below ``floor`` bytes new frames are refused.

    free_bytes: a callable returning the free space now (``Store.free_bytes``).
    """

    def __init__(self, free_bytes, floor: int, health: Health):
        self._free = free_bytes
        self.floor = floor
        self._health = health

    def refusal(self, incoming: int = 0) -> str | None:
        """Why a frame of ``incoming`` bytes cannot be stored now, or None (the floor then
        no longer degrades the station)."""
        try:
            free = self._free()
        except OSError:  # no answer (the folder is gone?): the write itself will say what is wrong
            return None
        if free - incoming >= self.floor:
            self._health.clear("disk_space")
            return None
        message = (f"{free} bytes free in the state directory, below the min_free_bytes floor "
                   f"{self.floor} with this {incoming}-byte frame")
        self._health.set("disk_space", message)
        return message
