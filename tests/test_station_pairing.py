"""Pairing camera and scanner frames by (line, part): completion, deadlines, limits."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.station.intake import Frame, Pairer
from edge_runtime.stream.protocol import FrameHeader

BOTH = frozenset({"rgb", "xyz"})


def frame(part: str, sensor: str, line: str = "L", rx: int = 0) -> Frame:
    header = FrameHeader(line, part, 1, sensor, 0.0, "raw", "uint8" if sensor == "rgb" else "float32", (2, 2, 3))
    return Frame(header, np.zeros((2, 2, 3)), rx, 0.0)


def test_a_part_leaves_when_its_second_frame_arrives():
    p = Pairer()
    assert p.add(frame("a", "xyz"), BOTH, 1.0, now=0.0) == []
    assert ("L", "a") in p and p.counts() == {"L": 1}
    (done,) = p.add(frame("a", "rgb"), BOTH, 1.0, now=0.3)
    assert done.reason == "complete" and done.complete and sorted(done.frames) == ["rgb", "xyz"]
    assert (done.t_first, done.t_left) == (0.0, 0.3)
    assert len(p) == 0


def test_one_sensor_lines_complete_on_one_frame():
    (done,) = Pairer().add(frame("a", "xyz"), frozenset({"xyz"}), 1.0, now=0.0)
    assert done.reason == "complete"


def test_parts_of_different_lines_never_pair():
    p = Pairer()
    p.add(frame("a", "rgb", line="L1"), BOTH, 1.0, 0.0)
    assert p.add(frame("a", "xyz", line="L2"), BOTH, 1.0, 0.0) == []
    assert p.counts() == {"L1": 1, "L2": 1}


def test_deadlines_release_parts_with_what_they_have():
    p = Pairer()
    p.add(frame("a", "rgb"), BOTH, 1.0, now=0.0)
    p.add(frame("b", "xyz"), BOTH, 0.5, now=0.2)
    assert p.next_deadline() == pytest.approx(0.7)
    assert p.expire(now=0.69) == []
    (b,) = p.expire(now=0.7)
    assert b.part == "b" and b.reason == "timeout" and b.missing == ["rgb"]
    (a,) = p.expire(now=5.0)
    assert a.missing == ["xyz"] and p.next_deadline() is None


def test_duplicate_frames_are_refused_and_overflow_releases_the_oldest():
    p = Pairer(max_pending=2)
    p.add(frame("a", "rgb"), BOTH, 1.0, 0.0)
    with pytest.raises(ValueError, match="already has a rgb frame"):
        p.add(frame("a", "rgb"), BOTH, 1.0, 0.1)
    p.add(frame("b", "rgb"), BOTH, 1.0, 0.2)
    (oldest,) = p.add(frame("c", "rgb"), BOTH, 1.0, 0.3)
    assert oldest.part == "a" and oldest.reason == "overflow"
    assert [q.part for q in p.drain(0.4)] == ["b", "c"]
    assert len(p) == 0
