"""Farthest point sampling and exact KNN against brute-force definitions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge_runtime.pointcloud import farthest_point_sampling, knn

# Small integer coordinates make exact distance ties frequent.
grid_points = arrays(np.float32, st.tuples(st.integers(1, 60), st.just(3)), elements=st.integers(-4, 4).map(float))
real_points = arrays(
    np.float32, st.tuples(st.integers(2, 60), st.just(3)), elements=st.floats(-10, 10, width=32), unique=True
)


@settings(max_examples=60, deadline=None)
@given(real_points, st.data())
def test_fps_max_min_property(points, data):
    distinct = np.unique(points, axis=0).shape[0]
    n = data.draw(st.integers(1, distinct))
    start = data.draw(st.integers(0, points.shape[0] - 1))
    picks = farthest_point_sampling(points, n, start=start)
    assert picks.dtype == np.int64 and picks.shape == (n,)
    assert picks[0] == start
    assert np.unique(picks).size == n
    p = points.astype(np.float32)
    nearest = np.full(p.shape[0], np.inf, dtype=np.float32)
    for i in range(1, n):
        d = p - p[picks[i - 1]]
        nearest = np.minimum(nearest, d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2])
        # The pick is the farthest point from the picks so far, the lowest index on ties.
        assert picks[i] == np.flatnonzero(nearest == nearest.max())[0]


def test_fps_rejects_bad_arguments():
    points = np.random.default_rng(0).random((5, 3))
    with pytest.raises(ValueError, match="cannot sample"):
        farthest_point_sampling(points, 6)
    with pytest.raises(ValueError, match="start"):
        farthest_point_sampling(points, 2, start=5)
    with pytest.raises(ValueError, match="shape"):
        farthest_point_sampling(points[:, :2], 2)


def _brute_knn(query, points, k):
    d2 = ((query[:, None, :].astype(np.float64) - points[None].astype(np.float64)) ** 2).sum(-1)
    order = np.stack([np.lexsort((np.arange(points.shape[0]), row))[:k] for row in d2])
    return order, np.sqrt(np.take_along_axis(d2, order, axis=1))


@settings(max_examples=80, deadline=None)
@given(grid_points, st.data())
def test_knn_matches_brute_force_with_ties(points, data):
    k = data.draw(st.integers(1, points.shape[0]))
    rows = data.draw(st.lists(st.integers(0, points.shape[0] - 1), min_size=1, max_size=10))
    query = points[rows] + data.draw(st.sampled_from([0.0, 0.5]))
    idx, dist = knn(query, points, k)
    want_idx, want_dist = _brute_knn(query, points, k)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(dist, want_dist, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(real_points)
def test_knn_self_first_for_distinct_points(points):
    idx, dist = knn(points, points, min(4, points.shape[0]))
    np.testing.assert_array_equal(idx[:, 0], np.arange(points.shape[0]))
    assert (dist[:, 0] == 0).all()
    assert (np.diff(dist, axis=1) >= 0).all()


def test_knn_is_chunked_consistently_over_many_queries():
    rng = np.random.default_rng(1)
    points = rng.random((3000, 3)).astype(np.float32)
    idx, _ = knn(points, points, 8)
    want, _ = _brute_knn(points[2040:2060], points, 8)
    np.testing.assert_array_equal(idx[2040:2060], want)


def test_knn_rejects_bad_k():
    points = np.zeros((4, 3))
    with pytest.raises(ValueError, match="exceeds"):
        knn(points, points, 5)
    with pytest.raises(ValueError, match="k must be"):
        knn(points, points, 0)
