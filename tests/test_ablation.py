"""`musc-edge ablate`: which rows a run computes, and that its baseline rows are the baseline."""
import pytest

from edge_runtime.evaluate.ablation import BASE, select_rows, variants
from edge_runtime.evaluate.baseline import BASELINE, BASELINE_STAGES


def test_row_patterns_select_in_table_order():
    rows = variants()
    picked = select_rows(rows, ["new, 2D stage ? only*", "plain baseline"])
    assert list(picked) == [k for k in rows if k == "plain baseline" or
                            (k.startswith("new, 2D stage ") and " only" in k)]
    assert len(picked) == 6 and all(len(v.stages) == 1 for k, v in picked.items() if k != "plain baseline")
    with pytest.raises(ValueError, match="no row matches"):
        select_rows(rows, ["new defaults", "no such row*"])


def test_the_baseline_rows_score_2d_as_the_baseline():
    # docs/ABLATION.md reads "new, 2D stages 1,2,3, RsCon off" as the baseline's 2D.
    two_d = lambda v: (v.encoder, v.stages, v.r2, v.prenorm2, v.rscon, v.interval)  # noqa: E731
    row = variants()["new, 2D stages 1,2,3, RsCon off"]
    assert two_d(row) == two_d(BASE) == ("efficientnet-lite0", BASELINE_STAGES, BASELINE.r_list, False,
                                         BASELINE.rscon, BASELINE.interval)
