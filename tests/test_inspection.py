"""LineInspector on simulated parts with the real default encoders (ONNX Runtime + FPFH; surface normals too)."""
import dataclasses

import numpy as np
import pytest

from edge_runtime.evaluate.run import ClassData, Combination, run_batch
from edge_runtime.inspection.features import FeatureExtractor, InspectionError
from edge_runtime.inspection.inspector import LineInspector
from edge_runtime.inspection.maps import part_maps
from edge_runtime.inspection.pool import pool_distances, score_distances
from edge_runtime.inspection.settings import BOTH_3D, InspectionSettings
from edge_runtime.sim.generator import iter_parts

SETTINGS = InspectionSettings(window=10, min_window=6, groups=256, group_size=32, encoder_3d="fpfh")
N_PARTS = 12


@pytest.fixture(scope="module")
def parts():
    return list(iter_parts("tile", N_PARTS, 0.25, seed=6))  # defects: parts 0 (warm-up), 6 and 9


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor.from_settings(SETTINGS)


@pytest.fixture(scope="module")
def extracted(parts, extractor):
    return [extractor.extract(p.rgb, p.xyz) for p in parts]


def run(inspector, extracted, start=0):
    out = []
    for i, (f, pre, lat) in enumerate(extracted[start:], start):
        out += inspector.inspect_features(f"p{i}", i, f, pre, lat)
    return out


def test_features_are_pixel_aligned_and_normalized(extracted):
    f, pre, latency = extracted[0]
    assert f.z2.shape == (28 * 28, 3, 192) and f.z2.dtype == np.float16
    assert f.z3.shape == (256, 3, 33)
    np.testing.assert_allclose(np.linalg.norm(f.z2.astype(np.float32), axis=-1), 1, atol=2e-3)
    assert pre.rgb.shape == (224, 224, 3) and pre.xyz.shape == (224, 224, 3)
    assert f.point2patch.max() < 28 * 28 and f.pixel_index.max() < 224 * 224
    assert {"preprocess", "encode", "aggregate"} <= set(latency)


def test_verdicts_after_warm_up_with_threshold_and_regions(parts, extractor, extracted):
    inspector = LineInspector(SETTINGS, "tile", extractor=extractor)
    decisions = run(inspector, extracted)
    assert [d.part for d in decisions] == [f"p{i}" for i in range(N_PARTS)]
    # min_window counts references: the first min_window parts join provisionally, then the warm
    # window re-judges them; each that leaves for the quarantine leaves the window one reference
    # short, so one more part warms up
    quarantined = list(inspector.quarantine)
    assert quarantined and all(parts[int(p[1:])].defect != "good" for p in quarantined)
    assert not any(inspector.window.is_reference(p) for p in quarantined)
    warming = [d.part for d in decisions if d.error and d.error["code"] == "warming_up"]
    warm = SETTINGS.min_window + len(set(warming) & set(quarantined))
    assert warming == [f"p{i}" for i in range(warm)]
    for d in decisions[:warm]:
        assert d.verdict == "inconclusive" and d.score is None
        assert d.reference  # provisionally, until re-judged
    assert [d.part for d in decisions[warm:] if d.verdict == "ng"] == [p for p in quarantined if p not in warming]
    for d in decisions[warm:]:
        assert d.verdict in ("ok", "ng") and d.threshold_source == "mad"
        assert d.anomaly_map.shape == (224, 224) and np.isfinite(d.score)
        assert {"window", "score", "rescore"} <= set(d.latency_ms)
        assert bool(d.regions) == (d.verdict == "ng")
    scored = [(d.score, p.defect != "good") for d, p in zip(decisions[warm:], parts[warm:])]
    good = [s for s, bad in scored if not bad]
    bad = [s for s, bad in scored if bad]
    assert bad and good and min(bad) > np.median(good)


@pytest.mark.parametrize("cae", [False, True])
def test_fused_map_is_on_the_windows_own_scale(extractor, extracted, cae):
    # a window that never evicts: the members at the end are those the last part was decided against
    settings = dataclasses.replace(SETTINGS, fusion="window", cae=cae, window=N_PARTS)
    inspector = LineInspector(settings, "tile", extractor=extractor)
    last = run(inspector, extracted)[-1]
    # The scale: the decided window members' median patch score and median image score, per modality.
    members = [inspector._scored[n] for n in inspector.window.members]
    maps = part_maps(inspector.window.part(last.part), inspector.window.scores(last.part), settings.map_sigma)
    want = 0
    for m in ("2d", "3d"):
        floor = np.median([sc.floor[m] for sc in members])
        want = want + (maps[m] - floor) / (np.median([sc.image[m] for sc in members]) - floor)
    np.testing.assert_allclose(last.anomaly_map, want, rtol=1e-5, atol=1e-5)
    plain = sum(maps.values())
    assert not np.allclose(last.anomaly_map, plain)


def test_decision_delay_and_flush(extractor, extracted):
    delayed = dataclasses.replace(SETTINGS, decision_delay=2)
    inspector = LineInspector(delayed, "tile", extractor=extractor)
    decisions = run(inspector, extracted)
    assert [d.part for d in decisions] == [f"p{i}" for i in range(N_PARTS - 2)]
    assert [d.part for d in inspector.flush()] == [f"p{N_PARTS - 2}", f"p{N_PARTS - 1}"]
    assert inspector.flush() == []
    # Under the guard the later parts are undecided candidates, not references: the delay changes nothing.
    undelayed = run(LineInspector(SETTINGS, "tile", extractor=extractor), extracted)
    assert [d.verdict for d in decisions] == [d.verdict for d in undelayed[:N_PARTS - 2]]
    np.testing.assert_allclose([d.score or 0 for d in decisions], [d.score or 0 for d in undelayed[:N_PARTS - 2]],
                               atol=1e-5)
    # Without it a delayed decision sees the later parts: the window had 2 more members.
    plain = LineInspector(dataclasses.replace(delayed, guard=False), "tile", extractor=extractor)
    assert run(plain, extracted)[-1].window == min(SETTINGS.window, N_PARTS) - 1


def test_state_resumes_warm_with_identical_decisions(extractor, extracted):
    first = LineInspector(SETTINGS, "tile", extractor=extractor)
    run(first, extracted[:9])
    saved = first.state()
    resumed = LineInspector(SETTINGS, "tile", extractor=extractor)
    resumed.load_state(saved)
    assert resumed.status() == first.status()
    a, b = run(first, extracted, 9), run(resumed, extracted, 9)
    assert [(d.verdict, d.score, d.threshold) for d in a] == [(d.verdict, d.score, d.threshold) for d in b]
    other = LineInspector(dataclasses.replace(SETTINGS, window=11), "tile", extractor=extractor)
    with pytest.raises(ValueError, match="profile"):
        other.load_state(saved)


def test_partial_part_is_scored_on_what_it_has_without_joining(extractor, extracted):
    inspector = LineInspector(SETTINGS, "tile", extractor=extractor)
    run(inspector, extracted[:9])
    members = list(inspector.window.members)
    f, pre, lat = extracted[9]
    (d,) = inspector.inspect_features("only2d", 99, f.only(("2d",)), pre, lat)
    assert d.modalities == ["2d"] and d.verdict in ("ok", "ng") and d.threshold_source == "mad"
    assert inspector.window.members == members
    strict = LineInspector(dataclasses.replace(SETTINGS, allow_partial=False), "tile", extractor=extractor)
    (d,) = strict.inspect_features("only3d", 1, f.only(("3d",)))
    assert d.verdict == "inconclusive" and d.error["code"] == "missing_modality"


def test_operator_threshold_overrides_policy(extractor, extracted):
    inspector = LineInspector(SETTINGS, "tile", extractor=extractor)
    warm = SETTINGS.min_window + 3  # warm and re-judged (see the warm-up test)
    run(inspector, extracted[:warm])
    inspector.set_threshold(0.0, "operator")
    decisions = run(inspector, extracted[:warm + 2], warm)
    assert [d.verdict for d in decisions] == ["ng", "ng"] and decisions[-1].threshold == 0.0
    assert decisions[-1].threshold_source == "operator" and not decisions[-1].reference


def test_bad_frames_raise_inspection_errors_naming_the_problem(parts, extractor):
    inspector = LineInspector(SETTINGS, "tile", extractor=extractor)
    p = parts[0]
    cases = [
        (p.rgb[:, :, :2], p.xyz, "shape"),
        (p.rgb.astype(np.float32), p.xyz, "shape"),
        (p.rgb, p.xyz[:100], "shape"),
        (p.rgb, np.zeros_like(p.xyz), "cloud"),
        (None, None, "no_modality"),
    ]
    for rgb, xyz, code in cases:
        with pytest.raises(InspectionError) as info:
            inspector.inspect("bad", 0, rgb, xyz)
        assert info.value.code == code and str(info.value)
    inspector.inspect("good", 1, p.rgb, p.xyz)
    with pytest.raises(InspectionError, match="already"):
        inspector.inspect("good", 2, p.rgb, p.xyz)


@pytest.fixture(scope="module")
def normals_line(parts):
    settings = dataclasses.replace(SETTINGS, encoder_3d="normals")
    extractor = FeatureExtractor.from_settings(settings)
    return settings, extractor, [extractor.extract(p.rgb, p.xyz) for p in parts]


def test_surface_normals_sit_on_the_patch_grid(parts, normals_line):
    settings, extractor, extracted = normals_line
    assert extractor.model_digest.endswith("+normals")
    f, pre, _ = extracted[0]
    assert f.z3.shape == f.z2.shape == (28 * 28, 3, 192) and f.z3.dtype == np.float16 and f.on_grid_3d
    np.testing.assert_array_equal(f.point2patch, np.arange(28 * 28))
    assert f.pixel_index is None and f.idw_index is None
    np.testing.assert_allclose(np.linalg.norm(f.z3.astype(np.float32), axis=-1), 1, atol=2e-3)
    assert not np.allclose(f.z3.astype(np.float32), f.z2.astype(np.float32), atol=0.1)  # the cloud, not the photo
    # the 3D features come from the cloud alone: a part's photograph does not change them
    other, _, _ = extractor.extract(parts[1].rgb, parts[0].xyz)
    np.testing.assert_array_equal(other.z3, f.z3)
    # the 3D map is drawn as the 2D one: the patch scores upsampled
    scores = {"3d": np.linspace(0, 1, 28 * 28, dtype=np.float32)}
    np.testing.assert_allclose(part_maps(f, scores, 4.0)["3d"], part_maps(f, {"2d": scores["3d"]}, 4.0)["2d"])
    # and it survives the window's persistence
    back = type(f).from_arrays(f.to_arrays("m."), "m.")
    assert back.on_grid_3d and np.array_equal(back.z3, f.z3)


def test_normals_rank_relief_defects_above_every_good_part():
    # seed 2: a stain (part 2, decided in the warm-up, unscored), a bump (9) and a dent (11)
    parts = list(iter_parts("tile", 14, 0.2, seed=2))
    settings = InspectionSettings(modalities=("3d",), encoder_3d="normals", window=10, min_window=6)
    inspector = LineInspector(settings, "tile", extractor=FeatureExtractor.from_settings(settings))
    decided = [(d.score, p.defect) for d, p in zip(
        [d for i, p in enumerate(parts) for d in inspector.inspect(f"p{i}", i, None, p.xyz)], parts)]
    scored = [(s, kind) for s, kind in decided if s is not None]
    good = [s for s, kind in scored if kind == "good"]
    assert len(good) >= 3 and sorted(kind for s, kind in scored if s > max(good)) == ["bump", "dent"]


@pytest.fixture(scope="module")
def both_line(parts):
    settings = dataclasses.replace(SETTINGS, encoder_3d=BOTH_3D)
    extractor = FeatureExtractor.from_settings(settings)
    return settings, extractor, [extractor.extract(p.rgb, p.xyz) for p in parts]


def test_both_3d_encoders_keep_fpfh_and_the_normals_picture(extracted, normals_line, both_line):
    settings, extractor, both = both_line
    assert extractor.model_digest.endswith("+fpfh+normals")
    f, fpfh, normals = both[0][0], extracted[0][0], normals_line[2][0][0]
    np.testing.assert_array_equal(f.z3, fpfh.z3)  # FPFH at the centres, as FPFH alone gives them
    np.testing.assert_array_equal(f.pixel_index, fpfh.pixel_index)
    np.testing.assert_array_equal(f.zn, normals.z3)  # and the normals encoder's picture on the patch grid
    assert f.zn.shape == (28 * 28, 3, 192) and not f.on_grid_3d and f.modalities == ("2d", "3d")
    # each stream's items sit on the patch grid: the centres at their patch, 2D and the picture one per patch
    np.testing.assert_array_equal(f.cells("3d"), f.point2patch)
    np.testing.assert_array_equal(f.cells("3n"), np.arange(28 * 28))
    np.testing.assert_array_equal(f.cells("2d"), np.arange(28 * 28))
    assert f.only(("3d",)).zn is not None and f.only(("2d",)).zn is None
    back = type(f).from_arrays(f.to_arrays("m."), "m.")
    np.testing.assert_array_equal(back.zn, f.zn)
    with pytest.raises(ValueError, match="zn"):
        dataclasses.replace(f, zn=f.zn[:10])


def test_both_3d_encoders_score_the_normals_as_a_second_stream(parts, both_line):
    settings, extractor, both = both_line
    inspector = LineInspector(settings, "tile", extractor=extractor)
    assert inspector.window.modalities == ("2d", "3d", "3n")
    decisions = run(inspector, both)
    assert [d.part for d in decisions] == [f"p{i}" for i in range(N_PARTS)]
    scored = [(d.score, p.defect) for d, p in zip(decisions, parts) if d.score is not None]
    good, bad = ([s for s, kind in scored if (kind == "good") == want] for want in (True, False))
    assert len(good) >= 3 and bad and min(bad) > max(good)  # the stain (part 9) above every good part
    last = inspector.window.members[-1]
    streams = inspector.window.scores(last)
    assert set(streams) == {"2d", "3d", "2n", "3n"} and streams["3n"].shape == (28 * 28,)
    # a warm line resumes from its state with the normals stream
    again = LineInspector(settings, "tile", extractor=extractor)
    again.load_state(inspector.state())
    assert again.window.modalities == ("2d", "3d", "3n")
    np.testing.assert_allclose(again.window.scores(last)["3n"], streams["3n"])


def test_a_3d_only_line_with_both_encoders_scores_fpfh_alone(parts):
    settings = InspectionSettings(modalities=("3d",), encoder_3d=BOTH_3D, window=10, min_window=6)
    extractor = FeatureExtractor.from_settings(settings)
    assert extractor.engine_2d is None and settings.window_modalities() == ("3d",)
    f, _, _ = extractor.extract(None, parts[0].xyz)
    assert f.zn is None and f.z3.shape[0] == settings.centres()


def test_a_3d_only_normals_line_loads_the_2d_encoder_for_its_pictures(parts):
    settings = InspectionSettings(modalities=("3d",), encoder_3d="normals", window=10, min_window=6)
    extractor = FeatureExtractor.from_settings(settings)
    assert extractor.engine_2d is not None and settings.centres() == 1024
    f, pre, _ = extractor.extract(None, parts[0].xyz)
    assert f.modalities == ("3d",) and f.on_grid_3d and pre.rgb is None
    with pytest.raises(ValueError, match="normals"):
        FeatureExtractor(settings)


def test_batch_evaluation_scores_the_normals_stream_as_the_line_does(both_line):
    settings, _, both = both_line
    feats = [f for f, _, _ in both]
    n = len(feats)
    data = ClassData("tile", [], feats, [], np.zeros((n, 224, 224), np.uint8), np.zeros(n, np.int64), {})
    maps, scores, _ = run_batch(data, Combination("2d+3d", "batch"), settings, None, 0)
    want = score_distances(feats, {m: pool_distances(feats, m) for m in ("2d", "3d", "3n")}, settings)["fused"]
    np.testing.assert_allclose(maps, want[0], atol=1e-6)
    np.testing.assert_allclose(scores, want[1], atol=1e-6)
    fpfh_only = score_distances(feats, {m: pool_distances(feats, m) for m in ("2d", "3d")}, settings)["fused"]
    assert not np.allclose(maps, fpfh_only[0], atol=1e-3)
