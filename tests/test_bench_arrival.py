"""`musc-edge bench arrival` on a tiny case: it runs the window, every stage and the plain recompute (no timing asserted)."""
import json

from edge_runtime.bench.arrival import main


def test_bench_arrival_writes_stages_per_width_pair(tmp_path):
    assert main(["--widths", "3,6:4", "10:5", "--grid", "4", "--centres", "20", "--layers", "2", "--refs", "4",
                 "--repeats", "1", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "bench_arrival.json").read_text())
    assert [r["widths"] for r in doc["rows"]] == ["3,6:4", "10:5"] and doc["N"] == 4 and doc["L"] == 16
    for row in doc["rows"]:
        assert row["whole_ms"] > 0 and row["enhance_ms"] > 0 and row["speedup_vs_plain"] > 0
        assert row["distances_2d_ms"] > 0 and row["distances_3d_ms"] > 0
    assert (tmp_path / "bench_arrival.png").stat().st_size > 0


def test_bench_arrival_times_the_normals_stream_when_asked(tmp_path):
    assert main(["--widths", "3,6:4", "--grid", "4", "--centres", "20", "--layers", "2", "--refs", "4",
                 "--repeats", "1", "--normals", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "bench_arrival.json").read_text())
    (row,) = doc["rows"]
    assert doc["normals"] and row["distances_3n_ms"] > 0 and row["whole_ms"] > 0 and row["speedup_vs_plain"] > 0
