"""Plane removal, cleaning, normalization and the whole 3D preprocessing on synthetic scenes."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_runtime.pointcloud import (
    foreground_mask,
    largest_cluster,
    largest_component,
    normalize_points,
    preprocess_organized,
    remove_background_plane,
)

SIZE = 64


def _scene(seed=0, h=SIZE, w=SIZE):
    """Camera at the origin looking along +z at a tilted table; a smooth part
    (up to 20 mm high) sits in the middle. Metres, 0.3 mm noise, 2% dropouts.

    Returns the organized cloud and each pixel's true height above the table.
    """
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:h, 0:w]
    x = (u - w / 2) * 0.0015
    y = (v - h / 2) * 0.0015
    table = 0.5 + 0.15 * x + 0.08 * y
    r2 = (u - w / 2) ** 2 + (v - h / 2) ** 2
    radius = 0.3 * min(h, w)
    height = np.where(r2 < radius**2, 0.02 * np.cos(np.sqrt(r2) / radius * np.pi / 2) + 0.008, 0.0)
    # The table normal (0.15, 0.08, -1) normalized: "up" points towards the camera.
    normal = np.array([0.15, 0.08, -1.0]) / np.linalg.norm([0.15, 0.08, -1.0])
    xyz = np.stack([x, y, table], -1) + height[..., None] * normal
    xyz += rng.normal(0, 0.0003, xyz.shape)
    xyz[rng.random((h, w)) < 0.02] = 0
    return xyz.astype(np.float32), height


def test_plane_removed_part_kept():
    xyz, height = _scene()
    before = xyz.copy()
    out = remove_background_plane(xyz)
    np.testing.assert_array_equal(xyz, before)
    assert out.dtype == np.float32 and out.shape == xyz.shape
    fg_in, fg_out = foreground_mask(xyz), foreground_mask(out)
    table = fg_in & (height == 0)
    part = fg_in & (height > 0.007)
    assert not fg_out[table].any()
    assert fg_out[part].all()
    np.testing.assert_array_equal(out[fg_out], xyz[fg_out])


def test_plane_removal_is_deterministic_and_rejects_bad_border():
    xyz, _ = _scene(1)
    np.testing.assert_array_equal(remove_background_plane(xyz, seed=3), remove_background_plane(xyz, seed=3))
    with pytest.raises(ValueError, match="border"):
        remove_background_plane(xyz, border=40)
    empty_border = xyz.copy()
    empty_border[:5] = empty_border[-5:] = 0
    empty_border[:, :5] = empty_border[:, -5:] = 0
    with pytest.raises(ValueError, match="border band"):
        remove_background_plane(empty_border, border=5)


@pytest.mark.parametrize("clean", [largest_cluster, largest_component])
def test_cleaning_removes_floating_speck(clean):
    xyz, height = _scene()
    part = remove_background_plane(xyz)
    speck_mask = np.zeros((SIZE, SIZE), dtype=bool)
    speck_mask[2:9, 2:9] = True  # 49 pixels, a dense blob 5 cm nearer the camera
    part[speck_mask] = np.array([-0.03, -0.03, 0.40]) + np.random.default_rng(0).normal(0, 0.0008, (49, 3))
    before = part.copy()
    cleaned = clean(part)
    np.testing.assert_array_equal(part, before)
    assert not foreground_mask(cleaned)[speck_mask].any()
    kept = foreground_mask(part) & ~speck_mask
    np.testing.assert_array_equal(foreground_mask(cleaned), kept)


def test_grid_cleaning_bridges_small_gaps_and_splits_far_pieces():
    xyz, _ = _scene(2)
    part = remove_background_plane(xyz)
    part[:, SIZE // 2 : SIZE // 2 + 2] = 0  # a 2-pixel unmeasured seam across the part
    np.testing.assert_array_equal(foreground_mask(largest_component(part, reach=3)), foreground_mask(part))
    far = part.copy()
    far[:, SIZE // 2 + 2 :] += np.float32(0.05)  # the right half 5 cm away: a separate piece
    kept = foreground_mask(largest_component(far, reach=3))
    assert kept.sum() < foreground_mask(far).sum()


def test_largest_cluster_needs_foreground():
    with pytest.raises(ValueError, match="empty foreground"):
        largest_cluster(np.zeros((8, 8, 3)))
    sparse = np.zeros((8, 8, 3))
    sparse[0, 0] = (1, 1, 1)
    with pytest.raises(ValueError, match="no cluster"):
        largest_cluster(sparse)


@settings(max_examples=30, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 40), st.just(3)), elements=st.floats(-1e3, 1e3)))
def test_normalize_points_unit_radius(points):
    assume(np.ptp(points, axis=0).max() > 1e-3)
    normalized, centre, scale = normalize_points(points)
    assert normalized.dtype == np.float32 and normalized.shape == points.shape
    radius = np.linalg.norm(normalized.astype(np.float64), axis=1)
    assert radius.max() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(normalized.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(normalized * scale + centre, points, atol=1e-5 * scale)


def test_normalize_points_rejects_degenerate():
    with pytest.raises(ValueError, match="identical"):
        normalize_points(np.ones((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        normalize_points([[0, 0, np.nan]])


def test_preprocess_organized_shape_and_zeros():
    xyz, height = _scene(2, h=48, w=SIZE)
    cleaned = largest_component(remove_background_plane(xyz))
    out = preprocess_organized(xyz, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    fg = foreground_mask(out)
    assert fg.any()
    # Every output pixel is a zero or a whole point of the cleaned cloud.
    cleaned_points = {tuple(p) for p in cleaned[foreground_mask(cleaned)]}
    assert all(tuple(p) in cleaned_points for p in out[fg])
    assert (out[~fg] == 0).all()
    # 48 rows padded to 64: 8 empty rows on top and bottom, 4 after resizing to 32.
    assert not fg[:4].any() and not fg[-4:].any()
    plain = preprocess_organized(xyz, 32, remove_plane=False, clean=False)
    assert foreground_mask(plain).sum() > fg.sum()
    dbscan = largest_cluster(remove_background_plane(xyz))
    dbscan_points = {tuple(p) for p in dbscan[foreground_mask(dbscan)]}
    out_dbscan = preprocess_organized(xyz, 32, cleaning="dbscan")
    assert all(tuple(p) in dbscan_points for p in out_dbscan[foreground_mask(out_dbscan)])
    with pytest.raises(ValueError, match="cleaning"):
        preprocess_organized(xyz, 32, cleaning="magic")


def test_preprocess_organized_rejects_empty():
    with pytest.raises(ValueError, match="empty foreground"):
        preprocess_organized(np.zeros((16, 16, 3)), 8)
    with pytest.raises(ValueError, match="image_size"):
        preprocess_organized(_scene()[0], 0)
