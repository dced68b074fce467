"""Anomaly-map pictures: size, colour scale, ground-truth outline, bad input."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime.evaluate.overlay import BAR_HEIGHT, TITLE_HEIGHT, overlay_image, overlay_png

H, W = 48, 64


def frames():
    rgb = np.full((H, W, 3), 128, np.uint8)
    amap = np.zeros((H, W), np.float32)
    amap[10:20, 40:50] = 1.0
    gt = np.zeros((H, W), np.uint8)
    gt[10:20, 40:50] = 1
    return rgb, amap, gt


def test_png_has_the_documented_size_and_colours(tmp_path):
    rgb, amap, gt = frames()
    path = overlay_png(tmp_path / "sub" / "part.png", rgb, amap, gt, 0.0, 1.0, title="cookie crack/000 score 0.9")
    picture = cv2.imread(str(path))
    assert picture.shape == (TITLE_HEIGHT + H + BAR_HEIGHT, 2 * W, 3)
    left, right = picture[TITLE_HEIGHT : TITLE_HEIGHT + H, :W], picture[TITLE_HEIGHT : TITLE_HEIGHT + H, W:]
    assert np.array_equal(left[30, 10], [128, 128, 128])  # the plain image away from the outline
    hot, cold = right[15, 45].astype(int), right[35, 10].astype(int)  # BGR
    assert hot[2] > hot[0] and cold[0] > cold[2]  # vmax red, vmin blue
    green = (left[..., 1] == 255) & (left[..., 0] == 0) & (left[..., 2] == 0)
    assert green[10, 40:50].all() and green[19, 40:50].all() and green.sum() == 36  # the gt outline only


def test_without_title_or_gt_and_with_a_flat_map():
    rgb, amap, _ = frames()
    picture = overlay_image(rgb, np.full((H, W), 0.5), None, 0.5, 0.5)
    assert picture.shape == (H + BAR_HEIGHT, 2 * W, 3)
    assert np.array_equal(picture[:H, :W], rgb[..., ::-1])
    nan_map = amap.copy()
    nan_map[0, 0] = np.nan
    assert np.array_equal(overlay_image(rgb, nan_map, None, 0.0, 1.0), overlay_image(rgb, amap, None, 0.0, 1.0))


def test_bad_input_is_named():
    rgb, amap, gt = frames()
    with pytest.raises(ValueError, match="anomaly_map"):
        overlay_image(rgb, amap[:-1], gt, 0, 1)
    with pytest.raises(ValueError, match="gt"):
        overlay_image(rgb, amap, gt[:, :-1], 0, 1)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        overlay_image(rgb.astype(np.float32), amap, gt, 0, 1)
    with pytest.raises(ValueError, match="finite"):
        overlay_image(rgb, amap, gt, 0, np.inf)
