"""Fusion of 2D and 3D maps on the window's own scale, and the scoring switches of a profile."""
import dataclasses

import numpy as np
import pytest

from edge_runtime.inspection.maps import fuse, fusion_scale, part_maps
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.pool import distance_scores, pool_distances, score_distances
from edge_runtime.inspection.settings import BOTH_3D, GROUPS, GROUPS_3D_ALONE, PAPER, STAGES_2D_ALONE, InspectionSettings
from edge_runtime.scoring import l2_normalize

GRID, G, S = (4, 4), 12, 16


def make_pool(n: int = 8, seed: int = 0) -> list[PartFeatures]:
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n):
        parts.append(PartFeatures(
            image_size=S, grid=GRID,
            z2=l2_normalize(rng.normal(size=(16, 2, 6))).astype(np.float16),
            # 3D distances on a much larger scale than 2D: a plain sum would be 3D alone
            z3=(l2_normalize(rng.normal(size=(G, 2, 5))) * np.r_[1.0, 1.0, 1.0, 1.0, 40.0]).astype(np.float16),
            point2patch=rng.integers(0, 16, size=G).astype(np.int32),
            pixel_index=np.arange(0, S * S, 4, dtype=np.int32),
            idw_index=rng.integers(0, G, size=(S * S // 4, 3)).astype(np.int32),
            idw_weight=np.full((S * S // 4, 3), 1 / 3, dtype=np.float32),
        ))
    return parts


def test_window_scale_is_the_pools_median_floor_and_peak():
    parts = make_pool()
    settings = InspectionSettings(cae=False, rscon=False, fusion="window", map_sigma=0)
    dist = {m: pool_distances(parts, m) for m in ("2d", "3d")}
    scores = distance_scores(dist, parts, settings.interval, cae=False)
    maps = [part_maps(p, sc, 0) for p, sc in zip(parts, scores)]
    expected = {}
    for m in ("2d", "3d"):
        floor = np.median([np.median(sc[m]) for sc in scores])
        peak = np.median([mp[m].max() for mp in maps])
        expected[m] = (floor, peak - floor)
    out = score_distances(parts, dist, settings)
    for i, mp in enumerate(maps):
        want = sum((mp[m] - expected[m][0]) / expected[m][1] for m in ("2d", "3d"))
        np.testing.assert_allclose(out["fused"][0][i], want, rtol=1e-5, atol=1e-5)
    # the image score: the larger of the two modalities' peaks on that scale
    peaks = [max(((mp[m] - expected[m][0]) / expected[m][1]).max() for m in ("2d", "3d")) for mp in maps]
    np.testing.assert_allclose(out["fused"][1], peaks, rtol=1e-5, atol=1e-5)
    by_map = score_distances(parts, dist, dataclasses.replace(settings, fused_score="map"))
    np.testing.assert_array_equal(by_map["fused"][0], out["fused"][0])  # the same fused map
    np.testing.assert_allclose(by_map["fused"][1], out["fused"][0].reshape(len(parts), -1).max(axis=1))
    # Each modality lands on the same scale: a typical peak at 1 above a typical floor at 0.
    for m in ("2d", "3d"):
        assert np.median([(mp[m].max() - expected[m][0]) / expected[m][1] for mp in maps]) == pytest.approx(1.0)


def test_plain_sum_lets_the_larger_scale_win_and_window_scale_does_not():
    parts = make_pool()
    dist = {m: pool_distances(parts, m) for m in ("2d", "3d")}
    base = InspectionSettings(cae=False, rscon=False, map_sigma=0)
    plain = score_distances(parts, dist, dataclasses.replace(base, fusion="sum"))
    scaled = score_distances(parts, dist, dataclasses.replace(base, fusion="window"))
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731
    corr = lambda key, run: np.corrcoef(rank(run["fused"][1]), rank(plain[key][1]))[0, 1]  # noqa: E731
    assert corr("3d", plain) > 0.95  # the sum is the 3D score
    assert corr("3d", scaled) < corr("3d", plain)


def test_fusion_scale_needs_a_known_fusion_and_sum_is_no_scale():
    assert fusion_scale("sum", {"2d": [1.0]}, {"2d": [2.0]}) is None
    with pytest.raises(ValueError, match="fusion"):
        fusion_scale("minmax", {"2d": [1.0]}, {"2d": [2.0]})
    flat = fusion_scale("window", {"2d": [1.0, 1.0]}, {"2d": [1.0, 1.0]})
    assert flat["2d"][1] > 0  # a window with no spread still divides by a positive span
    m = {"2d": np.ones((2, 2), np.float32)}
    np.testing.assert_array_equal(fuse(m, None, "map")[0], m["2d"])


def test_fused_score_is_the_larger_modality_peak_or_the_fused_maps_maximum():
    # 2D sees a stain at one pixel; 3D is flat there and has ordinary noise peaks elsewhere
    two = np.zeros((4, 4), np.float32)
    two[0, 0] = 2.0
    three = np.zeros((4, 4), np.float32)
    three[3, 3] = 0.5
    maps = {"2d": two, "3d": three, "2n": two * 0.5, "3n": three}
    fused, score = fuse(maps, None, "modality")
    np.testing.assert_allclose(fused, (two + two * 0.5) / 2 + three)  # each modality the mean of its streams
    assert score == pytest.approx(1.5)  # the 2D modality's peak, not diluted and not added to
    assert fuse(maps, None, "map")[1] == pytest.approx(1.5)
    maps["3d"] = maps["3n"] = np.full((4, 4), 0.5, np.float32)  # 3D's noise under the stain too
    assert fuse(maps, None, "modality")[1] == pytest.approx(1.5)
    assert fuse(maps, None, "map")[1] == pytest.approx(2.0)  # the sum adds the other sensor's level
    scale = {"2d": (1.0, 2.0), "2n": (0.0, 1.0), "3d": (0.5, 1.0), "3n": (0.5, 1.0)}
    _, scaled = fuse(maps, scale, "modality")
    assert scaled == pytest.approx(max(((two - 1) / 2 + two * 0.5).max() / 2, 0.0))
    with pytest.raises(ValueError, match="fused_score"):
        fuse(maps, None, "mean")


@pytest.mark.parametrize("bad, match", [
    ({"fusion": "minmax"}, "fusion"), ({"fused_score": "sum"}, "fused_score"), ({"cae": 1}, "cae"), ({"rscon": "yes"}, "rscon"),
    ({"r_list_3d": ()}, "r_list_3d"), ({"fpfh_radii": (0.1, 0.05)}, "fpfh_radii"), ({"fpfh_radii": (0.0,)}, "fpfh_radii"),
])
def test_bad_scoring_settings_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        InspectionSettings(**bad)


def test_scoring_switches_change_the_profile_digest():
    base = InspectionSettings()
    for change in ({"cae": not base.cae}, {"rscon": not base.rscon}, {"fusion": "sum" if base.fusion != "sum" else "window"},
                   {"fused_score": "map"},
                   {"r_list_3d": (1, 3)}, {"fpfh_radii": (0.02, 0.04, 0.08)}):
        assert dataclasses.replace(base, **change).digest() != base.digest()


def test_a_single_modality_line_has_its_own_defaults_and_scores_by_its_maximum():
    alone, both = InspectionSettings(modalities=("2d",)), InspectionSettings()
    assert alone.default_stages() == STAGES_2D_ALONE and both.default_stages() is None
    assert InspectionSettings(modalities=("3d",)).centres() == GROUPS_3D_ALONE and both.centres() == GROUPS
    assert InspectionSettings(modalities=("3d",), encoder_3d="models/pmae/manifest.json").centres() == GROUPS
    assert InspectionSettings(modalities=("3d",), groups=512).centres() == 512
    # RsCon re-scores the fused score; a single modality's is its map maximum (on any line)
    assert both.rescores("fused") and not any(s.rescores(k) for s in (alone, both) for k in ("2d", "3d"))
    assert all(InspectionSettings(**PAPER).rescores(k) for k in ("2d", "3d", "fused"))  # MuSc-V2 re-scores all
    assert not InspectionSettings(rscon=False, rscon_alone=True).rescores("3d")


@pytest.mark.parametrize("cae", [False, True])
def test_both_3d_streams_fuse_as_the_mean_of_their_pairs(cae):
    rng = np.random.default_rng(3)
    parts = [dataclasses.replace(p, zn=l2_normalize(rng.normal(size=(16, 2, 4))).astype(np.float16))
             for p in make_pool()]
    settings = InspectionSettings(cae=cae, rscon=False, fusion="window", map_sigma=0)
    dist = {m: pool_distances(parts, m) for m in ("2d", "3d", "3n")}
    out = score_distances(parts, dist, settings)
    assert set(out) == {"2d", "3d", "2n", "3n", "fused"}
    if not cae:  # the normals' 2D partner is the 2D score itself
        np.testing.assert_array_equal(out["2n"][0], out["2d"][0])
    # each pair on its own window scale, the two fused maps averaged
    pair = {"3d": score_distances(parts, {"2d": dist["2d"], "3d": dist["3d"]}, settings)["fused"][0]}
    pair["3n"] = score_distances(  # the normals as the only 3D modality, on the patch grid
        [dataclasses.replace(p, z3=p.zn, point2patch=np.arange(16, dtype=np.int32), pixel_index=None,
                             idw_index=None, idw_weight=None) for p in parts],
        {"2d": dist["2d"], "3d": dist["3n"]}, settings)["fused"][0]
    np.testing.assert_allclose(out["fused"][0], (pair["3d"] + pair["3n"]) / 2, rtol=1e-5, atol=1e-5)


def test_both_3d_encoders_serve_a_2d_and_3d_line_and_a_3d_only_line_scores_fpfh():
    both = InspectionSettings()
    assert both.encoder_3d == BOTH_3D and both.normals_stream() and both.window_modalities() == ("2d", "3d", "3n")
    alone = InspectionSettings(modalities=("3d",))
    assert not alone.normals_stream() and alone.window_modalities() == ("3d",) and alone.centres() == GROUPS_3D_ALONE
    assert not InspectionSettings(encoder_3d="fpfh").normals_stream()
    assert not InspectionSettings(modalities=("2d",)).normals_stream()
