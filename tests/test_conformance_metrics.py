"""Conformance of the metrics with the official MuSc-V2 evaluation (tests/conformance)."""


import numpy as np
import pytest

from edge_runtime.evaluate import compute_metrics, pro_thresholds
from conftest import load_case

# The reference's output order -> this library's keys.
ORDER = {
    "auroc_sp": "image_auroc",
    "f1_sp": "image_f1max",
    "ap_sp": "image_ap",
    "auroc_px": "pixel_auroc",
    "f1_px": "pixel_f1max",
    "ap_px": "pixel_ap",
    "aupro": "aupro",
}


@pytest.fixture(scope="module")
def vector():
    return load_case("metrics")[0]


def test_metrics_match_reference(vector):
    got = compute_metrics(vector["gt_sp"], vector["pr_sp"], vector["gt_px"], vector["pr_px"])
    assert all(isinstance(value, float) for value in got.values())
    for position, name in enumerate(vector["param_out_order"]):
        assert got[ORDER[str(name)]] == pytest.approx(vector["out"][position], abs=1e-6), name


def test_pro_threshold_count_matches_reference(vector):
    assert pro_thresholds(vector["pr_px"]).size == int(vector["param_n_pro_thresholds"])


def test_degenerate_labels_give_zero(vector):
    got = compute_metrics(
        np.zeros_like(vector["gt_sp"]), vector["pr_sp"], np.zeros_like(vector["gt_px"]), vector["pr_px"]
    )
    np.testing.assert_array_equal([got[ORDER[str(n)]] for n in vector["param_out_order"]], vector["out_degenerate"])
