"""The part generator: determinism, defects confined to their ground truth, plausible sizes."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edge_runtime.sim.defects import APPEARANCE_THRESHOLD, GEOMETRY_THRESHOLD
from edge_runtime.sim import cli as synth_cli
from edge_runtime.sim.generator import Burst, defect_plan, defective_scene, iter_parts, part_scene, render_part
from edge_runtime.sim.products import DEFECT_KINDS, DEFECTS, FAMILIES, LineSpec, family_of, line_spec

SIZE = 96


@pytest.fixture(scope="module", params=FAMILIES)
def spec(request) -> LineSpec:
    return dataclasses.replace(line_spec(request.param, seed=3, image_size=SIZE), defects=DEFECTS)


def test_same_seed_same_bytes_and_other_seeds_differ():
    spec = line_spec("cookie", 1, SIZE)
    a, b = render_part(spec, 4, 1, "crack"), render_part(spec, 4, 1, "crack")
    for field in ("rgb", "xyz", "gt"):
        assert getattr(a, field).tobytes() == getattr(b, field).tobytes()
    other_seed, other_part = render_part(spec, 4, 2, "crack"), render_part(spec, 5, 1, "crack")
    assert not np.array_equal(a.rgb, other_seed.rgb) and not np.array_equal(a.xyz, other_seed.xyz)
    assert not np.array_equal(a.rgb, other_part.rgb)


def test_line_spec_is_deterministic_and_distinct_per_name():
    assert line_spec("gear_box", 0) == line_spec("gear_box", 0)
    assert line_spec("gear_box", 0) != line_spec("gear_box", 1)
    assert line_spec("gear_box", 0).palette != line_spec("gear_cap", 0).palette
    assert family_of("Bagel") == "bagel" and family_of("small_potato") == "dome" and family_of("x") in FAMILIES
    for name in ("a", "bb", "ccc", "dddd"):
        kinds = {DEFECT_KINDS[d] for d in line_spec(name).defects}
        assert kinds == {"appearance", "geometry", "both"}


def test_line_spec_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown family"):
        LineSpec(class_name="x", family="spaceship")
    with pytest.raises(ValueError, match="defects"):
        LineSpec(class_name="x", family="tile", defects=("scratch",))
    with pytest.raises(ValueError, match="plain folder name"):
        line_spec("a/b")


def test_capture_is_an_organized_metric_cloud(spec):
    part = render_part(spec, 0, 0)
    assert part.rgb.shape == (SIZE, SIZE, 3) and part.rgb.dtype == np.uint8
    assert part.xyz.shape == (SIZE, SIZE, 3) and part.xyz.dtype == np.float32
    assert part.gt.shape == (SIZE, SIZE) and not part.gt.any() and part.defect == "good"
    unmeasured = (part.xyz == 0).all(axis=-1)
    assert ((part.xyz == 0).any(axis=-1) == unmeasured).all()  # a point is all zeros or none
    assert 0 < unmeasured.mean() < 0.2
    z = part.xyz[..., 2][~unmeasured]
    assert 0.15 < z.min() and z.max() < 0.3  # metres in front of the camera
    # The part stands out of the plane by about its height.
    assert np.percentile(z, 99) - np.percentile(z, 1) > 0.6 * spec.part_height


@pytest.mark.parametrize("defect", DEFECTS)
def test_defect_changes_only_its_ground_truth(spec, defect):
    good, bad = render_part(spec, 7, 5), render_part(spec, 7, 5, defect)
    gt = bad.gt > 0
    assert bad.defect == defect and bad.defect_kind == DEFECT_KINDS[defect]
    assert 0.0005 < gt.mean() < 0.04, f"{defect} covers {100 * gt.mean():.2f}% of the image"
    dz = np.abs(bad.xyz - good.xyz).max(axis=-1)
    if bad.defect_kind == "appearance":
        assert np.array_equal(bad.xyz, good.xyz)
    else:
        # Outside the ground truth the cloud moves by less than the change that counts as a defect.
        assert dz[~gt].max() <= GEOMETRY_THRESHOLD * 1.01
        assert dz[gt].max() > 3 * GEOMETRY_THRESHOLD
    drgb = np.abs(bad.rgb.astype(int) - good.rgb.astype(int)).max(axis=-1)
    if bad.defect_kind == "appearance":  # (shape changes also shade the surroundings a little)
        assert drgb[~gt].max() <= np.ceil(APPEARANCE_THRESHOLD * 255 * 1.2) + 1
    if bad.defect_kind != "geometry":
        assert drgb[gt].max() >= 25  # noticeable to a person


@pytest.mark.parametrize("defect", DEFECTS)
def test_geometry_defects_keep_albedo_and_appearance_defects_keep_shape(defect):
    spec = line_spec("tile", 0, SIZE)
    scene = part_scene(spec, 2, 9)
    after, gt = defective_scene(spec, 2, 9, defect)
    kind = DEFECT_KINDS[defect]
    assert np.array_equal(after.albedo, scene.albedo) == (kind == "geometry")
    assert np.array_equal(after.height, scene.height) == (kind == "appearance")
    # The noise of the capture is the part's, not the defect's.
    assert np.array_equal(after.depth_noise, scene.depth_noise) and np.array_equal(after.rgb_noise, scene.rgb_noise)
    changed = (np.abs(after.height - scene.height) > GEOMETRY_THRESHOLD) | (
        np.abs(after.albedo - scene.albedo).max(axis=-1) > APPEARANCE_THRESHOLD
    )
    assert changed[gt].mean() > 0.9 and not changed[~gt].any()


def test_defects_are_the_same_size_in_metres_at_every_image_size():
    fractions = {}
    for size in (64, 192):
        spec = dataclasses.replace(line_spec("bagel", 0, size), defects=DEFECTS)
        fractions[size] = np.mean([(render_part(spec, i, 0, d).gt > 0).mean() for i, d in enumerate(DEFECTS)])
    assert 0.5 < fractions[64] / fractions[192] < 2.0


def test_defect_plan_is_exact_and_balanced():
    spec = line_spec("foam", 0, SIZE)
    plan = defect_plan(spec, 40, 0.25, 0)
    defects = [d for d in plan if d]
    assert len(plan) == 40 and len(defects) == 10
    counts = [defects.count(d) for d in spec.defects]
    assert max(counts) - min(counts) <= 1
    assert plan == defect_plan(spec, 40, 0.25, 0) and plan != defect_plan(spec, 40, 0.25, 1)
    with pytest.raises(ValueError, match="defect_rate"):
        defect_plan(spec, 10, 1.5, 0)


def test_iter_parts_finite_follows_the_plan_and_endless_keeps_going():
    spec = line_spec("gland", 0, 48)
    parts = list(iter_parts("gland", 6, 0.5, 0, image_size=48))
    assert [p.defect if p.defect != "good" else None for p in parts] == defect_plan(spec, 6, 0.5, 0)
    assert [p.part_index for p in parts] == list(range(6))
    stream = iter_parts("gland", None, 1.0, 0, image_size=48)
    endless = [next(stream) for _ in range(3)]
    assert all(p.defect in spec.defects for p in endless)


def test_systematic_burst_puts_the_same_defect_at_the_same_place(tmp_path):
    burst = Burst("contamination", 3, 3)
    spec = line_spec("tile", 0, SIZE)
    plan = defect_plan(spec, 10, 0.2, 0, burst)
    assert plan[3:6] == ["contamination"] * 3
    others = [d for i, d in enumerate(plan) if not burst.covers(i)]
    assert sum(d is not None for d in others) == round(0.2 * 7)
    assert defect_plan(spec, 10, 0.2, 0, None) == defect_plan(spec, 10, 0.2, 0)
    parts = [render_part(spec, i, 0, plan[i], burst) for i in range(3, 6)]
    centres = [np.argwhere(p.gt).mean(axis=0) for p in parts]
    sizes = [np.count_nonzero(p.gt) for p in parts]
    # the parts differ (pose, texture, light) but the defect stays where it was, as large as it was
    assert not np.array_equal(parts[0].rgb, parts[1].rgb)
    assert max(np.abs(c - centres[0]).max() for c in centres) <= 1.0 and max(sizes) - min(sizes) <= 0.1 * sizes[0]
    other = render_part(spec, 8, 0, "contamination")
    assert np.abs(np.argwhere(other.gt).mean(axis=0) - centres[0]).max() > 1.0
    with pytest.raises(ValueError, match="does not fit"):
        defect_plan(spec, 5, 0.2, 0, burst)
    with pytest.raises(ValueError, match="unknown systematic defect"):
        Burst("rust", 0, 3)
    assert synth_cli.main(["--out", str(tmp_path), "--classes", "tile", "--parts", "8", "--image-size", "48",
                           "--systematic", "dent", "--burst-start", "2", "--burst-len", "4"]) == 0
    meta = json.loads((tmp_path / "tile" / "sim_meta.json").read_text())
    assert meta["burst"] == {"defect": "dent", "start": 2, "length": 4}
    assert [p["part_index"] for p in meta["parts"] if p["systematic"]] == [2, 3, 4, 5]
    with pytest.raises(SystemExit):
        synth_cli.main(["--out", str(tmp_path), "--classes", "x", "--systematic", "dent", "--burst-start", "2"])


def test_fixtured_parts_move_less_than_one_patch():
    import dataclasses

    from edge_runtime.sim.generator import _part_frame
    from edge_runtime.sim.products import FIXTURE_GRID, fixtured, line_spec

    spec = fixtured(line_spec("tile", 0, 224))
    still = dataclasses.replace(spec, pose_shift=0.0, pose_rotation=0.0, size_jitter=0.0)
    s0, t0 = _part_frame(still, np.random.default_rng(0))
    patch = spec.image_size / FIXTURE_GRID
    worst = 0.0
    for seed in range(30):
        s, t = _part_frame(spec, np.random.default_rng(seed))
        worst = max(worst, float(np.hypot(s - s0, t - t0).max() / spec.pixel_pitch))
    assert 0.3 * patch < worst < patch  # jitter there, but below one patch
    loose = line_spec("tile", 0, 224)
    s, t = _part_frame(loose, np.random.default_rng(1))
    assert np.hypot(s - s0, t - t0).max() / spec.pixel_pitch > patch  # an unfixtured line moves more


def test_severity_draws_smaller_fainter_defects_from_the_same_numbers():
    spec = dataclasses.replace(line_spec("cookie", 4, 128), defects=DEFECTS)
    faint = dataclasses.replace(spec, severity=0.5)
    for i, defect in enumerate(DEFECTS):
        scene = part_scene(spec, i, 2)
        full, gt_full = defective_scene(spec, i, 2, defect)
        half, gt_half = defective_scene(faint, i, 2, defect)
        assert np.array_equal(part_scene(faint, i, 2).albedo, scene.albedo)  # the part itself is unchanged
        assert 0 < gt_half.sum() < 0.6 * gt_full.sum(), defect
        moved = {k: [np.abs(getattr(s, k) - getattr(scene, k)).max() for s in (full, half)]
                 for k in ("height", "albedo")}
        for k, (a, b) in moved.items():
            assert b <= 0.75 * a or a == b == 0, (defect, k, a, b)
    assert np.array_equal(defective_scene(dataclasses.replace(spec, severity=1.0), 3, 2, "crack")[1],
                          defective_scene(spec, 3, 2, "crack")[1])


def test_variation_scales_the_part_to_part_nuisance():
    from edge_runtime.sim.generator import _part_frame

    spec = line_spec("tile", 0, 128)

    def spread(v: float) -> float:
        s = dataclasses.replace(spec, variation=v)
        frames = [_part_frame(s, np.random.default_rng(k)) for k in range(12)]
        gains = [part_scene(s, k, 0).light_gain for k in range(12)]
        return float(np.std([f[0][64, 64] for f in frames])), float(np.std(gains))

    none, usual, wide = spread(0.0), spread(1.0), spread(2.0)
    assert none == pytest.approx((0.0, 0.0), abs=1e-12)
    assert wide[0] == pytest.approx(2 * usual[0], rel=0.05) and wide[1] == pytest.approx(2 * usual[1], rel=1e-6)


def test_synth_rejects_a_severity_out_of_range(tmp_path, capsys):
    with pytest.raises(SystemExit):
        synth_cli.main(["--out", str(tmp_path), "--classes", "tile", "--parts", "2", "--severity", "0"])
    assert "severity 0.0 outside (0, 2]" in capsys.readouterr().err
