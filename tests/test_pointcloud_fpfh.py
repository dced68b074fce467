"""FPFH encoder: shapes, per-layer behaviour and rotation invariance."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from edge_runtime.pointcloud import farthest_point_sampling, fpfh_features, normalize_points, organized_to_flat


def _part(size=72, seed=0):
    """Flat points of a wavy part seen by a camera at the origin looking along +z (metres)."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
    z = 0.5 - 0.004 * np.sin(9 * u) * np.cos(7 * v) - 0.01 * np.exp(-(u**2 + v**2) * 20)
    xyz = np.stack([0.1 * u, 0.1 * v, z + rng.normal(0, 2e-5, z.shape)], -1)
    return organized_to_flat(xyz)[0]


def _cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_fpfh_shapes_and_histograms():
    points = _part()
    centres = farthest_point_sampling(points, 64)
    before = points.copy()
    features = fpfh_features(points, centres)
    np.testing.assert_array_equal(points, before)
    assert len(features) == 3
    for layer in features:
        assert layer.shape == (64, 33) and layer.dtype == np.float32
        # Three 11-bin histograms; each is the centre's own (sum 100 in Open3D)
        # plus the weighted mean of its neighbours' (sum 100): 200 per histogram.
        np.testing.assert_allclose(layer.reshape(64, 3, 11).sum(-1), 200, rtol=1e-3)
    # Layers differ: they see different scales.
    assert np.abs(features[0] - features[2]).mean() > 1.0
    # A repeated centre gets the same feature twice.
    twice = fpfh_features(points, np.r_[centres[:3], centres[:1]], radii=(0.05,))[0]
    np.testing.assert_array_equal(twice[0], twice[3])


def test_fpfh_invariant_to_rotation_and_normalization():
    points = _part()
    centres = farthest_point_sampling(points, 64)
    rotation = Rotation.from_rotvec([0.15, -0.1, 0.4]).as_matrix()
    turned = (points.astype(np.float64) @ rotation.T).astype(np.float32)
    for a, b in zip(fpfh_features(points, centres), fpfh_features(turned, centres)):
        # The layers thin the cloud on an axis-aligned voxel grid, so rotated
        # clouds keep slightly different points: invariance is approximate.
        assert _cosine(a, b).mean() > 0.99
    # Without thinning (a voxel far below the point spacing) it is exact up to rounding.
    full_a = fpfh_features(points, centres, radii=(0.05,), density=100)[0]
    full_b = fpfh_features(turned, centres, radii=(0.05,), density=100)[0]
    np.testing.assert_allclose(full_a, full_b, atol=1e-3)
    # Radii are relative to the unit-radius cloud and normals face the view
    # direction, so a normalized cloud gives the same features.
    normalized = normalize_points(points)[0]
    np.testing.assert_allclose(fpfh_features(normalized, centres, radii=(0.05,), density=100)[0], full_a, atol=1e-3)


def test_fpfh_rejects_bad_arguments():
    points = _part(24)
    with pytest.raises(ValueError, match="radii"):
        fpfh_features(points, [0], radii=(0.1, -1))
    with pytest.raises(ValueError, match="centre_idx"):
        fpfh_features(points, [points.shape[0]])
    with pytest.raises(ValueError, match="view_direction"):
        fpfh_features(points, [0], view_direction=(0, 0))
    with pytest.raises(ValueError, match="identical"):
        fpfh_features(np.ones((10, 3)), [0])


def test_normals_at_one_radius_change_only_the_coarse_layers():
    points, _, _ = normalize_points(_part())
    centres = farthest_point_sampling(points, 48)
    per_layer = fpfh_features(points, centres, (0.05, 0.2))
    fixed = fpfh_features(points, centres, (0.05, 0.2), normal_radius=0.05)
    np.testing.assert_allclose(fixed[0], per_layer[0], atol=1e-4)  # the same normals at the fine layer
    assert not np.allclose(fixed[1], per_layer[1], atol=1e-3)
    with pytest.raises(ValueError, match="normal_radius"):
        fpfh_features(points, centres, normal_radius=0.0)
