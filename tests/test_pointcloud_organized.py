"""Organized <-> flat conversions and the pixel geometry of organized clouds."""

import numpy as np
import pytest

from edge_runtime.pointcloud import (
    flat_to_organized,
    foreground_mask,
    organized_to_flat,
    pad_to_square,
    resize_nearest,
)


def _cloud(h=6, w=5, seed=0):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(0.1, 1.0, (h, w, 3)).astype(np.float32)
    xyz[0, 0] = 0  # no measurement
    xyz[2, 3, 1] = 0  # one zero coordinate is enough to be background
    return xyz


def test_foreground_mask_any_zero_coordinate_is_background():
    mask = foreground_mask(_cloud())
    assert mask.shape == (6, 5) and mask.dtype == bool
    assert not mask[0, 0] and not mask[2, 3]
    assert mask.sum() == 6 * 5 - 2


def test_flat_round_trip_and_pixel_index():
    xyz = _cloud()
    before = xyz.copy()
    points, pixel = organized_to_flat(xyz)
    assert points.dtype == np.float32 and pixel.dtype == np.int64
    assert points.shape == (28, 3)
    np.testing.assert_array_equal(points, xyz[pixel // 5, pixel % 5])
    back = flat_to_organized(points, pixel, (6, 5))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back[foreground_mask(xyz)], xyz[foreground_mask(xyz)])
    assert (back[~foreground_mask(xyz)] == 0).all()
    np.testing.assert_array_equal(xyz, before)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 4)), "shape"),
        (np.zeros((4, 4, 2)), "shape"),
        (np.zeros((0, 4, 3)), "empty"),
        (np.full((2, 2, 3), np.nan), "NaN"),
    ],
)
def test_bad_organized_cloud_is_named(bad, message):
    with pytest.raises(ValueError, match=message):
        foreground_mask(bad)


def test_flat_to_organized_rejects_bad_index():
    points = np.ones((2, 3))
    with pytest.raises(ValueError, match="outside"):
        flat_to_organized(points, [0, 30], (5, 5))
    with pytest.raises(ValueError, match="repeats"):
        flat_to_organized(points, [1, 1], (5, 5))
    with pytest.raises(ValueError, match="entries"):
        flat_to_organized(points, [1], (5, 5))


def test_pad_to_square_centres_content():
    image = np.arange(2 * 5, dtype=np.float32).reshape(2, 5) + 1
    square = pad_to_square(image)
    assert square.shape == (5, 5)
    np.testing.assert_array_equal(square[1:3], image)  # (5 - 2) // 2 = 1 row on top, 2 below
    assert (square[[0, 3, 4]] == 0).all()


def test_resize_nearest_copies_pixels_and_keeps_zeros():
    xyz = _cloud(7, 7)
    small = resize_nearest(xyz, 4)
    assert small.shape == (4, 4, 3)
    # Every output pixel is one whole input pixel: the source rule is floor(r * 7 / 4).
    src = (np.arange(4) * 7) // 4
    np.testing.assert_array_equal(small, xyz[src[:, None], src[None, :]])
    big = resize_nearest(xyz, 21)
    np.testing.assert_array_equal(big[::3, ::3], xyz)
    assert (big[0:3, 0:3] == 0).all()
