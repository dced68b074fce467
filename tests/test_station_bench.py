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
    assert all(row[f"latency_p{q}_ms"] > 0 for q in (50, 95, 99))
    assert row["bytes_per_window_part"] > 0
    assert (out / "station.md").is_file() and (out / "station.png").is_file()
    (inc,) = doc["incremental"]
    # the ratio itself is a benchmark figure (timed on a shared machine), not a unit-test bound
    assert inc["window"] == 24 and inc["speedup"] == pytest.approx(inc["recompute_ms"] / inc["incremental_ms"])
    assert (out / "station_incremental.md").is_file()


def test_bench_isolation_reports_the_steady_line_beside_a_flooded_one(tmp_path):
    from edge_runtime.bench.isolation import main as isolation_main

    assert isolation_main(["--flood", "30", "--steady", "5", "--period-ms", "50", "--queue", "2",
                           "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "isolation.json").read_text())
    assert [r["phase"] for r in doc["rows"]] == ["alone", "beside_flooded"]
    assert all(r["steady_sends_full"] == 0 for r in doc["rows"])  # a drop_oldest sender never blocks
    assert doc["busy_scored"] + doc["busy_overload"] == 30  # every flooded part answered
    assert doc["busy_overload"] > 0  # the shared-socket block line refused past its hold
    assert (tmp_path / "isolation.md").is_file() and (tmp_path / "isolation.png").is_file()
