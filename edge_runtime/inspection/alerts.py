"""Alerts of one product line: what its verdicts say about the line, beyond single parts.

Kinds:

- ``ng_rate``: at least ``ng_count`` of the last ``ng_last`` decided parts are ``ng``.
- ``recurring_defect``: at least ``recurring_count`` of the ``ng`` parts among the
  last ``recurring_last`` decided parts have their strongest anomaly region
  centred within ``recurring_distance`` (a fraction of the image side) of each
  other: the same place on the part, as a worn tool or a bad batch leaves it.
- ``drift``: the references' score level (median of their re-scored values)
  has moved more than ``drift`` (relative) away from where it settled over
  the first ``settle`` decisions after warm-up (or after an operator's
  ``accept_shift``).

An alert stays active (latched) until an operator acknowledges it: ``ng_rate``
and ``drift`` are not raised again while one of their kind is active, and a
``recurring_defect`` not again for the same place (a burst at another place
of the part is news). After an acknowledgement a kind needs fresh evidence:
parts decided after it.
"""
from __future__ import annotations

import dataclasses
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

KINDS = ("ng_rate", "recurring_defect", "drift")


@dataclass(frozen=True)
class AlertSettings:
    """A profile's ``[alerts]`` table; every default of the alert rules lives here."""

    ng_count: int = 3
    ng_last: int = 10
    recurring_count: int = 3
    recurring_last: int = 10
    recurring_distance: float = 0.1
    drift: float = 0.25
    settle: int = 16

    def __post_init__(self) -> None:
        for name in ("ng_count", "ng_last", "recurring_count", "recurring_last", "settle"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"[alerts] {name} must be an integer >= 1, got {value!r}")
        if self.ng_count > self.ng_last:
            raise ValueError(f"[alerts] ng_count ({self.ng_count}) cannot exceed ng_last ({self.ng_last})")
        if self.recurring_count < 2 or self.recurring_count > self.recurring_last:
            raise ValueError(f"[alerts] recurring_count must be in [2, recurring_last], got {self.recurring_count}")
        if not 0 < self.recurring_distance <= 1:
            raise ValueError(f"[alerts] recurring_distance must be in (0, 1], got {self.recurring_distance}")
        if not self.drift > 0:
            raise ValueError(f"[alerts] drift must be > 0, got {self.drift}")

    @classmethod
    def from_table(cls, table: dict) -> "AlertSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ValueError(f"[alerts] unknown keys {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**table)


@dataclass
class Alert:
    """One alert; ``header`` is what goes on the wire under ``alert.<line>``."""

    id: str
    line: str
    kind: str
    parts: list[str]
    message: str
    ts: float = field(default_factory=time.time)
    place: list[float] | None = None  # recurring_defect: (x, y) as fractions of the image side


    def header(self) -> dict:
        return {"v": 1, "line": self.line, "id": self.id, "kind": self.kind, "parts": list(self.parts),
                "message": self.message, "ts": self.ts}


def region_centre(region: list[float], image_size: int) -> tuple[float, float]:
    """Centre (x, y) of a region [x0, y0, x1, y1, peak], as fractions of the image side."""
    x0, y0, x1, y1 = region[:4]
    return (x0 + x1) / 2 / image_size, (y0 + y1) / 2 / image_size


class AlertMonitor:
    """Watches one line's decisions; ``observe`` returns the alerts they raise."""

    def __init__(self, line: str, settings: AlertSettings):
        self.line = line
        self.settings = settings
        self.active: dict[str, Alert] = {}
        self._count = 0
        # decided parts, newest last: (part, ng?, centre of its strongest region or None)
        self._recent: deque = deque(maxlen=max(settings.ng_last, settings.recurring_last))
        self._since: dict[str, int] = {k: 0 for k in KINDS}  # evidence counts from this observation on
        self._seen = 0
        self._levels: list[float] = []  # reference levels while settling
        self.baseline: float | None = None

    def observe(self, part: str, verdict: str, centre: tuple[float, float] | None,
                reference_level: float | None) -> list[Alert]:
        """One decided part (``ok`` or ``ng``); ``centre``: its strongest region's, for ``ng``."""
        if verdict not in ("ok", "ng"):
            return []
        self._seen += 1
        self._recent.append((self._seen, part, verdict == "ng", centre))
        raised = [a for a in (self._ng_rate(), self._recurring(), self._drift(part, reference_level)) if a]
        for alert in raised:
            self.active[alert.id] = alert
        return raised

    def ack(self, alert_id: str) -> Alert:
        if alert_id not in self.active:
            known = ", ".join(self.active) or "none"
            raise KeyError(f"line {self.line!r} has no active alert {alert_id!r} (active: {known})")
        alert = self.active.pop(alert_id)
        # fresh evidence: parts after this one; a level needs a settling period to be seen again
        self._since[alert.kind] = self._seen + (self.settings.settle if alert.kind == "drift" else 1)
        return alert

    def resettle(self) -> None:
        """Forget the settled reference level (the operator declared a new normal, or a reset)."""
        self._levels, self.baseline = [], None

    def _raise(self, kind: str, parts: list[str], message: str, place: list[float] | None = None) -> Alert:
        self._count += 1
        return Alert(f"{kind}-{self._count}", self.line, kind, parts, message, place=place)

    def _fresh(self, kind: str, last: int) -> list:
        return [r for r in list(self._recent)[-last:] if r[0] >= self._since[kind]]

    def _is_active(self, kind: str) -> bool:
        return any(a.kind == kind for a in self.active.values())

    def _ng_rate(self) -> Alert | None:
        s = self.settings
        if self._is_active("ng_rate"):
            return None
        ng = [r[1] for r in self._fresh("ng_rate", s.ng_last) if r[2]]
        if len(ng) < s.ng_count:
            return None
        return self._raise("ng_rate", ng, f"{len(ng)} of the last {s.ng_last} parts of line {self.line} are ng")

    def _recurring(self) -> Alert | None:
        s = self.settings
        known = [a.place for a in self.active.values() if a.kind == "recurring_defect"]
        close = lambda a, b: float(np.hypot(a[0] - b[0], a[1] - b[1])) <= s.recurring_distance  # noqa: E731
        ng = [r for r in self._fresh("recurring_defect", s.recurring_last)
              if r[2] and r[3] is not None and not any(close(r[3], k) for k in known)]
        if len(ng) < s.recurring_count:
            return None
        near = [r for r in ng if close(r[3], ng[-1][3])]
        if len(near) < s.recurring_count:
            return None
        x, y = (float(v) for v in np.mean([r[3] for r in near], axis=0))
        return self._raise("recurring_defect", [r[1] for r in near],
                           f"{len(near)} ng parts of line {self.line} have their defect at the same place "
                           f"(x {x:.2f}, y {y:.2f} of the image)", place=[x, y])

    def _drift(self, part: str, level: float | None) -> Alert | None:
        s = self.settings
        if level is None:
            return None
        if self.baseline is None:
            self._levels.append(level)
            if len(self._levels) >= s.settle:
                self.baseline = float(np.median(self._levels))
            return None
        if self._is_active("drift") or self._seen < self._since["drift"]:
            return None
        change = (level - self.baseline) / abs(self.baseline) if self.baseline else 0.0
        if abs(change) <= s.drift:
            return None
        return self._raise("drift", [part], f"the references' score level of line {self.line} moved "
                           f"{100 * change:+.0f}% from where it settled ({self.baseline:.3f} -> {level:.3f})")

    def state(self) -> dict:
        return {"active": [dataclasses.asdict(a) for a in self.active.values()], "count": self._count,
                "recent": [list(r) for r in self._recent], "since": dict(self._since), "seen": self._seen,
                "levels": list(self._levels), "baseline": self.baseline}

    def load_state(self, state: dict) -> None:
        self.active = {a["id"]: Alert(**a) for a in state["active"]}
        self._count, self._seen = state["count"], state["seen"]
        self._recent.clear()
        self._recent.extend((r[0], r[1], r[2], tuple(r[3]) if r[3] is not None else None) for r in state["recent"])
        self._since = dict(state["since"])
        self._levels, self.baseline = list(state["levels"]), state["baseline"]
