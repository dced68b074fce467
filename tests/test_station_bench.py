"""`musc-edge bench station` at toy sizes: it runs end to end and writes its report."""
from __future__ import annotations

import json

import pytest

from edge_runtime.bench.station import main
from tests.station_helpers import SMALL_3D, toml_doc

pytestmark = pytest.mark.timeout(300)


def test_bench_station_writes_json_table_and_plot(tmp_path):
    """With --secure: sender and subscriber speak CURVE with throwaway keys."""
    profile = tmp_path / "small.toml"
    profile.write_text(toml_doc({k: v for k, v in SMALL_3D.items() if k != "stream"}))
    out = tmp_path / "out"
    assert main(["--profile", str(profile), "--windows", "6", "--incremental", "24", "--parts", "4",
                 "--distinct", "6", "--out", str(out), "--secure"]) == 0
    doc = json.loads((out / "station.json").read_text())
    (row,) = doc["rows"]
    assert row["window"] == 6 and row["curve"] is True and row["parts_per_s"] > 0
    assert row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
    assert row["bytes_per_window_part"] > 0
    assert (out / "station.md").is_file() and (out / "station.png").is_file()
    (inc,) = doc["incremental"]
    # one arrival touches N distance blocks, a recompute N^2: at N = 24 the ratio is well above 1
    assert inc["window"] == 24 and inc["speedup"] > 2
    assert (out / "station_incremental.md").is_file()
