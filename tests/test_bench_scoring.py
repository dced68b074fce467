"""`musc-edge bench scoring` on a tiny case: it runs every kernel and writes its report (no timing asserted)."""
import json

from edge_runtime.bench.scoring import main


def test_bench_scoring_writes_ratios_per_width(tmp_path):
    assert main(["--patches", "16", "--widths", "5", "12", "--refs", "3", "--radius", "1", "--repeats", "1",
                 "--centres", "20", "--workers", "2", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "bench_scoring.json").read_text())
    assert [r["C"] for r in doc["rows"]] == [5, 12] and doc["radius"] == 1
    for row in doc["rows"]:
        assert row["fraction_of_gemm"] > 0 and row["speedup_vs_plain"] > 0 and row["aligned_speedup"] > 0
        assert row["aligned3d_speedup"] > 0 and row["aligned3d_speedup_shared_layout"] > 0
    assert (tmp_path / "bench_scoring.png").stat().st_size > 0
