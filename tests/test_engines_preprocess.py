"""Frame preprocessing for 2D encoders: resize, scale, normalize, channel order."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.engines.preprocess import preprocess_rgb

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def test_uniform_frame_normalizes_per_channel_in_rgb_order():
    rgb = np.empty((50, 70, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 0, 51  # distinct per channel, exact after resizing
    out = preprocess_rgb(rgb, 32, MEAN, STD)
    assert out.shape == (1, 3, 32, 32) and out.dtype == np.float32
    expected = [(1.0 - MEAN[0]) / STD[0], (0.0 - MEAN[1]) / STD[1], (0.2 - MEAN[2]) / STD[2]]
    for c in range(3):
        np.testing.assert_allclose(out[0, c], expected[c], rtol=1e-6)


def test_batches_and_single_frames_agree_and_input_is_untouched():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 40, 60, 3), dtype=np.uint8)
    before = frames.copy()
    batch = preprocess_rgb(frames, 24, MEAN, STD)
    assert batch.shape == (2, 3, 24, 24)
    np.testing.assert_array_equal(batch[1:], preprocess_rgb(frames[1], 24, MEAN, STD))
    np.testing.assert_array_equal(frames, before)


def test_shrinking_averages_instead_of_sampling():
    """A 1-pixel checkerboard shrunk 8x becomes its mean grey, not an aliased pattern."""
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    out = preprocess_rgb(np.repeat(board[..., None], 3, axis=2), 8, (0, 0, 0), (1, 1, 1))
    np.testing.assert_allclose(out, 127.5 / 255, atol=1 / 255)


def test_enlarging_small_frames_works():
    out = preprocess_rgb(np.zeros((10, 12, 3), np.uint8), 32, (0, 0, 0), (1, 1, 1))
    assert out.shape == (1, 3, 32, 32) and not out.any()


@pytest.mark.parametrize("frame, message", [
    (np.zeros((8, 8, 3), np.float32), "uint8"),
    (np.zeros((8, 8), np.uint8), "shape"),
    (np.zeros((8, 8, 4), np.uint8), "shape"),
    (np.zeros((1, 2, 8, 8, 3), np.uint8), "shape"),
])
def test_bad_frames_are_refused(frame, message):
    with pytest.raises(ValueError, match=message):
        preprocess_rgb(frame, 16, MEAN, STD)
