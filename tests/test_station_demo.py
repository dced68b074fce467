"""`musc-edge demo` runs to its summary: sensors, station, subscriber, pictures, summary.json."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.station_helpers import SMALL_3D, write_station

pytestmark = pytest.mark.timeout(600)


def test_demo_runs_to_its_summary(tmp_path):
    out = tmp_path / "demo-out"
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "demo", "--parts", "20", "--defect-rate", "0.3",
                           "--seed", "1", "--maps", "2", "--out", str(out), "--http-port", "0"],
                          capture_output=True, text=True, timeout=580)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "=== musc-edge demo summary ===" in done.stdout
    assert re.search(r"^dashboard http://127\.0\.0\.1:\d+/ ", done.stdout, re.M)
    lines = [line for line in done.stdout.splitlines() if " tile " in line or " washer " in line]
    assert len(lines) >= 20  # one line per verdict
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parts"] == 20 and summary["verdicts"].get("error", 0) == 0
    decided = summary["verdicts"].get("ok", 0) + summary["verdicts"].get("ng", 0)
    # 10 parts per line; until min_window (8) references are held the line answers inconclusive
    assert summary["verdicts"]["inconclusive"] >= 2 * 8 and decided >= 2
    assert summary["parts_per_s"] > 0 and summary["latency_ms"]["end_to_end_p50"] > 0
    assert set(summary["lines"]) == {"tile", "washer"}
    assert summary["pictures"], "no anomaly-map picture written"
    for picture in summary["pictures"]:
        assert Path(picture).is_file() and Path(picture).parent == out


def test_demo_with_curve_on_every_socket(tmp_path):
    """--secure: the sensors send with a sensor key, the subscriber listens with an observer key."""
    config = write_station(tmp_path, {"tile": SMALL_3D, "gland": SMALL_3D})
    out = tmp_path / "demo-out"
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "demo", "--config", str(config), "--parts", "12",
                           "--rate", "0", "--quiet", "--out", str(out), "--secure"],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "CURVE on every socket" in done.stdout and "refused" not in done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parts"] == 12 and summary["verdicts"].get("error", 0) == 0
    assert set(summary["lines"]) == {"tile", "gland"}
    # a secured config without client keys is refused up front, naming what is missing
    keys_dir = tmp_path / "keys"
    secured = write_station(tmp_path / "s", {"tile": SMALL_3D}, security={"keys_dir": str(keys_dir)})
    done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "demo", "--config", str(secured), "--parts", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--sensor-key and --subscriber-key" in done.stderr
