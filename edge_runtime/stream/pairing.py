"""Pairing camera and scanner frames of the same part, with a timeout.

Frames meet by (line, part). A part leaves the pairer when every sensor its
line needs has sent a frame ("complete"), when its deadline passes
("timeout"), when the pairer is full and it is the oldest ("overflow"), or
when the station stops ("shutdown"). Time is passed in, so this is plain logic.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge_runtime.stream.protocol import FrameHeader


@dataclass
class Frame:
    """One decoded frame: header, array, its row in the frame store (rx), when it
    arrived (monotonic seconds) and how long decoding took (ms)."""

    header: FrameHeader
    array: np.ndarray
    rx: int
    t_rx: float
    decode_ms: float = 0.0


@dataclass
class PendingPart:
    """A part whose frames are being collected.

    required: the sensors its line needs; reason: why it left the pairer
    (None while pending, else "complete" | "timeout" | "overflow" | "shutdown").
    """

    line: str
    part: str
    seq: int
    required: frozenset[str]
    t_first: float
    deadline: float
    frames: dict[str, Frame] = field(default_factory=dict)
    t_left: float | None = None
    reason: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.line, self.part

    @property
    def complete(self) -> bool:
        return self.required <= self.frames.keys()

    @property
    def missing(self) -> list[str]:
        return sorted(self.required - self.frames.keys())


class DuplicateFrame(ValueError):
    """The part already holds a frame of this sensor."""


class Pairer:
    """Pending parts by (line, part); at most ``max_pending`` at a time."""

    def __init__(self, max_pending: int = 1024):
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self._pending: dict[tuple[str, str], PendingPart] = {}

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._pending

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, key: tuple[str, str]) -> PendingPart | None:
        return self._pending.get(key)

    def discard(self, key: tuple[str, str]) -> PendingPart | None:
        """Remove a pending part without a reason (it was answered otherwise)."""
        return self._pending.pop(key, None)

    def counts(self) -> dict[str, int]:
        """Pending parts per line."""
        out: dict[str, int] = {}
        for p in self._pending.values():
            out[p.line] = out.get(p.line, 0) + 1
        return out

    def add(self, frame: Frame, required: frozenset[str], timeout_s: float, now: float) -> list[PendingPart]:
        """Add a frame; return the parts that left the pairer because of it (its own part
        when complete, the oldest pending part on overflow). Raises DuplicateFrame."""
        h = frame.header
        key = (h.line, h.part)
        part = self._pending.get(key)
        if part is None:
            part = PendingPart(h.line, h.part, h.seq, frozenset(required), now, now + timeout_s)
            self._pending[key] = part
        elif h.sensor in part.frames:
            raise DuplicateFrame(f"part {h.part} of line {h.line} already has a {h.sensor} frame")
        part.frames[h.sensor] = frame
        left = []
        if part.complete:
            left.append(self._leave(key, "complete", now))
        while len(self._pending) > self.max_pending:
            left.append(self._leave(next(iter(self._pending)), "overflow", now))
        return left

    def expire(self, now: float) -> list[PendingPart]:
        """Parts whose deadline has passed, oldest first."""
        due = [k for k, p in self._pending.items() if p.deadline <= now]
        return [self._leave(k, "timeout", now) for k in due]

    def drain(self, now: float) -> list[PendingPart]:
        """Every pending part, oldest first (the station is stopping)."""
        return [self._leave(k, "shutdown", now) for k in list(self._pending)]

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def _leave(self, key: tuple[str, str], reason: str, now: float) -> PendingPart:
        part = self._pending.pop(key)
        part.reason = reason
        part.t_left = now
        return part
