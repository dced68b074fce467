"""Curvature, Iterative Point Grouping and group_cloud on synthetic surfaces."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.pointcloud import curvature, group_cloud, iterative_point_grouping, knn


def _step_surface(n=600, seed=0):
    """A plate with a 0.1-high step and a bump: flat and curved centres, discontinuities."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2))
    z = 0.1 * (xy[:, 0] > 0.5) + 0.15 * np.exp(-((xy - 0.3) ** 2).sum(1) / 0.01)
    return np.column_stack([xy, z]).astype(np.float32)


def _naive_ipg(xyz, centre, row, group_size, k_iter, curv, threshold=0.01):
    """The rule of ALGORITHM.md section 3, one centre at a time, written plainly."""
    if curv < threshold:
        return list(row[:group_size])
    group = list(row[: min(k_iter, group_size)])
    while len(group) < group_size:
        take = min(k_iter, group_size - len(group))
        candidates = np.unique([p for p in row if p not in group])  # ranked by index
        pairs = [
            (float(np.sqrt(np.float32(((xyz[g] - xyz[c]) ** 2).sum()))), j, m, c)
            for j, g in enumerate(group)
            for m, c in enumerate(candidates)
        ]
        pairs.sort(key=lambda t: (t[0], t[1], t[2]))
        group = [c for *_, c in pairs[:take]] + group
    return group


@pytest.mark.parametrize("group_size", [16, 32, 64, 128])
def test_ipg_runs_for_any_group_size(group_size):
    xyz = _step_surface()
    rows, _ = knn(xyz, xyz, 2 * group_size)
    centres = np.arange(0, 600, 25)
    idx, curv, nb = iterative_point_grouping(xyz, centres, rows, group_size)
    assert idx.shape == (24, group_size) and idx.dtype == np.int64
    assert curv.shape == (24,) and curv.dtype == np.float32
    assert nb.shape == (24, group_size, 3) and nb.dtype == np.float32
    np.testing.assert_array_equal(nb, xyz[idx] - xyz[centres][:, None])
    start = min(80, group_size)
    flat = curv < 0.01
    assert flat.any() and (~flat).any()
    np.testing.assert_array_equal(idx[flat], rows[centres[flat], :group_size])
    # A curved group keeps the centre's nearest region (its first entries, itself
    # included) at its end and grows only from the centre's KNN entries.
    np.testing.assert_array_equal(idx[~flat, -start:], rows[centres[~flat], :start])
    assert all(np.isin(idx[g], rows[c]).all() for g, c in enumerate(centres))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([(12, 5), (20, 8), (24, 24), (30, 7)]))
def test_ipg_matches_the_plain_rule(seed, sizes):
    group_size, k_iter = sizes
    xyz = _step_surface(150, seed)
    rows, _ = knn(xyz, xyz, 2 * group_size)
    centres = np.arange(0, 150, 5)
    idx, curv, _ = iterative_point_grouping(xyz, centres, rows, group_size, k_iter=k_iter)
    assert (curv >= 0.01).any()  # some groups grow
    for g, c in enumerate(centres):
        assert list(idx[g]) == _naive_ipg(xyz, c, rows[c], group_size, k_iter, curv[g])


def test_curvature_plane_and_blob():
    rng = np.random.default_rng(0)
    plane = np.column_stack([rng.random((300, 2)), np.zeros(300)]) @ np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rows, _ = knn(plane, plane, 64)
    assert curvature(plane, [0, 10, 20], rows, 32).max() < 1e-6
    blob = rng.normal(size=(300, 3))
    rows, _ = knn(blob, blob, 299)
    # An isotropic neighbourhood has three equal eigenvalues: curvature near 1/3.
    assert curvature(blob, [0], rows, 299)[0] > 0.25


def test_ipg_rejects_bad_inputs():
    xyz = _step_surface(100)
    rows, _ = knn(xyz, xyz, 32)
    with pytest.raises(ValueError, match="fewer than group_size"):
        iterative_point_grouping(xyz, [0], rows, 40)
    with pytest.raises(ValueError, match="one row per point"):
        iterative_point_grouping(xyz, [0], rows[:50], 16)
    with pytest.raises(ValueError, match="centre_idx"):
        iterative_point_grouping(xyz, [100], rows, 16)
    repeated = rows.copy()
    repeated[0, 5] = repeated[0, 6]
    with pytest.raises(ValueError, match="repeats"):
        iterative_point_grouping(xyz, [0], repeated, 16)


def test_group_cloud_chain_and_small_clouds():
    xyz = _step_surface(400)
    groups = group_cloud(xyz, 32, 64)
    assert groups.idx.shape == (32, 64) and groups.neighbourhood.shape == (32, 64, 3)
    np.testing.assert_array_equal(groups.centres, xyz[groups.centre_idx])
    rows, _ = knn(xyz, xyz, 128)
    idx, curv, _ = iterative_point_grouping(xyz, groups.centre_idx, rows, 64)
    np.testing.assert_array_equal(groups.idx, idx)
    np.testing.assert_array_equal(groups.curvature, curv)
    # Fewer than 2 * group_size points: k is clamped, groups still complete.
    small = group_cloud(xyz[:100], 8, 64)
    assert small.idx.shape == (8, 64)
    with pytest.raises(ValueError, match="fewer than group_size"):
        group_cloud(xyz[:50], 8, 64)


def test_group_cloud_without_ipg_keeps_knn_groups_and_the_same_curvature():
    rng = np.random.default_rng(4)
    t = rng.uniform(0, 2 * np.pi, 3000)
    pts = np.stack([np.cos(t), np.sin(t), rng.normal(0, 0.2, t.size)], 1).astype(np.float32)  # curved: IPG grows
    grown = group_cloud(pts, 40, 96)
    plain = group_cloud(pts, 40, 96, ipg=False)
    np.testing.assert_array_equal(plain.centre_idx, grown.centre_idx)
    np.testing.assert_array_equal(plain.curvature, grown.curvature)
    rows, _ = knn(pts[plain.centre_idx], pts, 96)
    np.testing.assert_array_equal(plain.idx, rows)
    assert (grown.curvature >= 0.01).any() and not np.array_equal(grown.idx, plain.idx)
