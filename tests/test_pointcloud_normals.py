"""Surface normals of organized clouds and their picture (pointcloud.normals)."""
import numpy as np
import pytest

from edge_runtime.pointcloud import normal_image, surface_normals


def _plane(normal, size=40, depth=0.3, pitch=0.001):
    """An organized cloud of the plane through (0, 0, depth) with ``normal``, seen from the origin."""
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    x, y = (cols - size / 2 + 0.5) * pitch, (rows - size / 2 + 0.5) * pitch  # no coordinate exactly 0
    z = depth - (n[0] * x + n[1] * y) / n[2]
    return np.stack([x, y, z], -1).astype(np.float32)


@pytest.mark.parametrize("normal", [(0, 0, -1), (0.3, 0, -1), (0, -0.4, -1), (0.2, 0.25, -1)])
def test_plane_normals_face_the_sensor(normal):
    cloud = _plane(normal)
    expected = np.asarray(normal, float) / np.linalg.norm(normal)
    got = surface_normals(cloud, sigma=1.0)
    inner = got[3:-3, 3:-3].reshape(-1, 3)
    np.testing.assert_allclose(inner, np.broadcast_to(expected, inner.shape), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)
    # the same surface seen with its coordinates' orientation reversed still faces the sensor
    flipped = surface_normals(cloud[:, ::-1].copy(), sigma=0)
    assert (np.sum(flipped * cloud[:, ::-1], axis=-1) < 0).all()


def test_bump_bends_the_normals_around_it_only():
    cloud = _plane((0, 0, -1), size=60)
    rows, cols = np.mgrid[0:60, 0:60]
    bump = np.exp(-((rows - 30) ** 2 + (cols - 30) ** 2) / (2 * 4.0 ** 2)) * 0.004
    bumped = cloud.copy()
    bumped[..., 2] -= bump
    flat, bent = surface_normals(cloud), surface_normals(bumped)
    tilt = np.degrees(np.arccos(np.clip(np.sum(flat * bent, -1), -1, 1)))
    assert tilt[30, 24] > 20 and tilt[30, 36] > 20  # the bump's flanks
    assert tilt[30, 30] < 2  # its top is level again
    assert tilt[5, 5] < 0.5 and tilt[55, 50] < 0.5  # the plane around it untouched


def test_background_and_rim():
    cloud = _plane((0, 0, -1))
    cloud[:, :10] = 0  # no measurement
    before = cloud.copy()
    got = surface_normals(cloud, sigma=1.5)
    np.testing.assert_array_equal(cloud, before)  # the input is not mutated
    np.testing.assert_allclose(got[:, :10].reshape(-1, 3), np.broadcast_to((0, 0, -1), (400, 3)))
    # normalized smoothing: the background's zeros do not bend the rim
    np.testing.assert_allclose(got[5:-5, 11:-2].reshape(-1, 3), np.broadcast_to((0, 0, -1), (30 * 27, 3)), atol=1e-4)


def test_picture_encodes_components():
    cloud = _plane((0.3, 0, -1))
    picture = normal_image(cloud)
    assert picture.dtype == np.uint8 and picture.shape == cloud.shape
    n = np.array([0.3, 0, -1]) / np.linalg.norm([0.3, 0, -1])
    np.testing.assert_array_equal(picture[20, 20], np.rint((n + 1) * 127.5).astype(np.uint8))
    empty = np.zeros((8, 8, 3), np.float32)
    assert (normal_image(empty) == np.array([128, 128, 0], np.uint8)).all()  # facing the sensor


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        surface_normals(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="NaN"):
        surface_normals(np.full((4, 4, 3), np.nan))
    with pytest.raises(ValueError, match="sigma"):
        surface_normals(np.zeros((4, 4, 3)), sigma=-1)
