"""Conformance of FPS, KNN and IPG with the official MuSc-V2 code (tests/conformance)."""


import numpy as np
import pytest

from edge_runtime.pointcloud import curvature, farthest_point_sampling, iterative_point_grouping, knn
from conftest import load_case


@pytest.fixture(scope="module")
def vector():
    return load_case("ipg_gs128_stepbump")[0]


def test_fps_reproduces_centres(vector):
    centres = farthest_point_sampling(vector["xyz"][0], int(vector["param_Nc"]))
    np.testing.assert_array_equal(centres, vector["center_idx"][0])


def test_knn_reproduces_reference_table(vector):
    idx, dist = knn(vector["xyz"][0], vector["xyz"][0], int(vector["param_knn_k"]))
    np.testing.assert_array_equal(idx, vector["idx_all"][0])
    np.testing.assert_allclose(dist, vector["knn_dist"][0], atol=1e-6)


def test_ipg_reproduces_reference(vector):
    gs = int(vector["param_group_size"])
    xyz, centres, table = vector["xyz"][0], vector["center_idx"][0], vector["idx_all"][0]
    idx, curv, neighbourhood = iterative_point_grouping(xyz, centres, table, gs)
    np.testing.assert_array_equal(idx, vector["out_idx"][0])
    np.testing.assert_allclose(curv, vector["out_curvatures"], atol=1e-5)
    np.testing.assert_allclose(neighbourhood, vector["out_neighborhood"][0], atol=1e-5)
    # The reference's repeats inside a group are part of the target.
    repeats = np.array([gs - np.unique(row).size for row in idx])
    np.testing.assert_array_equal(repeats, vector["dbg_duplicates_per_group"])
    np.testing.assert_array_equal(curv >= vector["param_Cthr"], vector["dbg_high_curvature"])


def test_curvature_alone_matches(vector):
    curv = curvature(vector["xyz"][0], vector["center_idx"][0], vector["idx_all"][0], int(vector["param_group_size"]))
    np.testing.assert_allclose(curv, vector["out_curvatures"], atol=1e-5)
