"""The scoring API against vectors recorded from the official MuSc-V2 code
(tolerances from tests/conformance/README.md)."""
import numpy as np
import pytest

from conftest import load_case
from edge_runtime.scoring import (
    aggregate_2d,
    aggregate_3d,
    image_scores,
    l2_normalize,
    mutual_scores,
    mutual_scores_multimodal,
    rescore,
    salient_features,
    upsample_2d,
)


def _vit_grids(tokens_by_layer):
    """Tokens (B, 1 + H*W, C) per layer -> patch grids without the class token."""
    grids = []
    for t in tokens_by_layer:
        b, n, c = t.shape
        h = int(round(np.sqrt(n - 1)))
        grids.append(t[:, 1:].reshape(b, h, h, c))
    return grids


def test_msm_single():
    a, _ = load_case("msm_single_N7_L16_C32")
    np.testing.assert_allclose(mutual_scores(a["Z"]), a["out"], atol=1e-5, rtol=0)


def test_msm_single_small_budget_same_result():
    a, _ = load_case("msm_single_N7_L16_C32")
    one_block = 16 * 16 * 4 * 2
    np.testing.assert_allclose(mutual_scores(a["Z"], budget=one_block), a["out"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["snamd_2d_r135", "snamd_2d_r1"])
def test_snamd_2d(case):
    a, side = load_case(case)
    out = aggregate_2d(_vit_grids(list(a["tokens"])), side["params"]["r_list"])
    np.testing.assert_allclose(out, a["out_nohalf"], atol=1e-5, rtol=0)
    # The reference stores float16; compare on that grid, one float16 step apart at most.
    ulp = np.spacing(np.abs(a["out"]).astype(np.float16)).astype(np.float32)
    assert np.all(np.abs(out.astype(np.float16).astype(np.float32) - a["out"].astype(np.float32)) <= np.maximum(2e-3, ulp))


def test_snamd_3d_reference_pooling():
    a, side = load_case("snamd_3d_r135")
    feats = [t[0] for t in a["tokens"]]
    out = aggregate_3d(feats, a["centers"][0].T, a["curvatures"], side["params"]["r_list"], pooling="reference")
    np.testing.assert_allclose(out, a["out"][0].astype(np.float32), atol=2e-3, rtol=0)
    np.testing.assert_allclose(out, a["out_nohalf"][0], atol=1e-5, rtol=0)


def test_snamd_3d_curvature_at_threshold_keeps_own_feature():
    a, _ = load_case("snamd_3d_r135")
    feats = [t[0] for t in a["tokens"]]
    out = aggregate_3d(feats, a["centers"][0].T, a["curvatures"], pooling="channel")
    high = a["dbg_high_branch"]
    assert high[7] and a["curvatures"][7] == np.float32(0.01)
    for layer, f in enumerate(feats):
        np.testing.assert_array_equal(out[high, layer], f[high])


@pytest.mark.parametrize("k_list,key", [((1, 7), "out_k1_7"), ((1, 3, 7), "out_k1_3_7")])
def test_rscon(k_list, key):
    a, _ = load_case("rscon")
    passed = list(k_list)
    out = rescore(a["ac_score"], a["feats"], passed)
    np.testing.assert_allclose(out, a[key], atol=1e-5, rtol=0)
    assert passed == list(k_list), "rescore must not mutate its k_list"


def test_msm_multiple_cae():
    a, _ = load_case("msm_multiple")
    s2, s3 = mutual_scores_multimodal(a["Z_2d"], a["Z_3d"], a["point2patch"])
    for got, want in ((s2, a["out_2d_stablesort"]), (s3, a["out_3d_stablesort"])):
        err = np.abs(got - want)
        assert (err <= 1e-5).mean() >= 0.99
        assert err.max() <= 1e-3


def test_pipeline_2d():
    a, side = load_case("pipeline_2d")
    p = side["params"]
    tokens = a["tokens"]  # (N, layers, 1 + L, C)
    z = l2_normalize(aggregate_2d(_vit_grids(list(tokens.transpose(1, 0, 2, 3))), p["r_list"]))
    patch_scores = mutual_scores(z)
    maps = upsample_2d(patch_scores.reshape(p["N"], p["H"], p["H"]), p["image_size"])
    scores = rescore(image_scores(maps), salient_features(z, patch_scores), p["k_list_passed"])
    np.testing.assert_allclose(maps, a["nohalf_maps"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores, a["nohalf_scores"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(maps, a["maps"], atol=5e-3, rtol=0)
    np.testing.assert_allclose(scores, a["scores"], atol=5e-3, rtol=0)
