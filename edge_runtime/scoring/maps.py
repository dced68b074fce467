"""From patch and centre scores to pixel anomaly maps, image scores and salient features."""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from edge_runtime.scoring._checks import MAP_SIGMA, as_float_array


def _corner_aligned_weights(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) float32 bilinear weights with corner alignment (align_corners=True)."""
    w = np.zeros((n_out, n_in), dtype=np.float32)
    if n_in == 1 or n_out == 1:
        w[:, 0] = 1.0
        return w
    pos = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = (pos - lo).astype(np.float32)
    w[np.arange(n_out), lo] = 1.0 - frac
    w[np.arange(n_out), lo + 1] += frac
    return w


def upsample_2d(grid_scores: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling with corner alignment.

    grid_scores : (N, h, w) or (h, w) float. size : S or (H, W).
    Returns (N, H, W) or (H, W) float32.
    """
    g = as_float_array(grid_scores, "grid_scores", (2, 3)).astype(np.float32)
    out_h, out_w = (size, size) if np.isscalar(size) else size
    wy = _corner_aligned_weights(int(out_h), g.shape[-2])
    wx = _corner_aligned_weights(int(out_w), g.shape[-1])
    return (wy @ g @ wx.T).astype(np.float32)  # two GEMMs: a three-operand einsum was ~10x slower


def point_to_patch(pixel_index: np.ndarray, image_shape: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """Patch index of each pixel: row // patch_h * grid_w + col // patch_w.

    pixel_index : (G,) int, row * W + col in an image of ``image_shape`` (H, W).
    grid : (h, w) patch grid covering the image. Returns (G,) int64.
    """
    idx = np.asarray(pixel_index, dtype=np.int64)
    h, w = image_shape
    gh, gw = grid
    if h % gh or w % gw:
        raise ValueError(f"image {image_shape} is not a whole number of patches of grid {grid}")
    if idx.size and (idx.min() < 0 or idx.max() >= h * w):
        raise ValueError(f"pixel_index outside an image of shape {image_shape}")
    rows, cols = np.divmod(idx, w)
    return rows // (h // gh) * gw + cols // (w // gw)


def idw_weights(centres: np.ndarray, points: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-distance weights of each point's k nearest centres.

    centres : (G, 3) float. points : (P, 3) float.
    Returns idx (P, k) int32 and weights (P, k) float32 whose rows sum to 1.
    """
    c = as_float_array(centres, "centres", 2)
    pts = as_float_array(points, "points", 2)
    k = min(k, c.shape[0])
    dist, nn = cKDTree(c).query(pts, k=k)
    dist, nn = dist.reshape(len(pts), k), nn.reshape(len(pts), k)
    w = 1.0 / (dist + 1e-8)
    return nn.astype(np.int32), (w / np.sum(w, axis=1, keepdims=True)).astype(np.float32)


def paint_3d(
    centre_scores: np.ndarray,
    idw_index: np.ndarray,
    idw_weight: np.ndarray,
    pixel_index: np.ndarray,
    shape: tuple[int, int],
    sigma: float = MAP_SIGMA,
) -> np.ndarray:
    """Centre scores -> (H, W) float32 map through precomputed weights (see ``idw_weights``).

    centre_scores : (G,) float. idw_index, idw_weight : (P, k). pixel_index : (P,)
    int, row * W + col of each foreground point; other pixels are 0. Then a
    Gaussian blur of ``sigma`` pixels (0 = none).
    """
    s = as_float_array(centre_scores, "centre_scores", 1)
    if np.asarray(pixel_index).shape[0] != np.asarray(idw_index).shape[0]:
        raise ValueError(f"{np.asarray(idw_index).shape[0]} weighted points but {np.asarray(pixel_index).shape[0]} pixel indices")
    out = np.zeros(shape[0] * shape[1], dtype=np.float32)
    out[np.asarray(pixel_index)] = np.sum(idw_weight * s[idw_index], axis=1)
    out = out.reshape(shape)
    return gaussian_filter(out, sigma=sigma).astype(np.float32) if sigma > 0 else out


def interpolate_3d(
    centre_scores: np.ndarray,
    centres: np.ndarray,
    points: np.ndarray,
    pixel_index: np.ndarray,
    shape: tuple[int, int],
    sigma: float = MAP_SIGMA,
) -> np.ndarray:
    """Centre scores -> pixel map.

    Every foreground point takes the inverse-distance-weighted mean of its 3
    nearest centres' scores; pixels without a point are 0; then a Gaussian blur.

    centre_scores : (G,) float. centres : (G, 3) float. points : (P, 3) float,
    the foreground points. pixel_index : (P,) int, row * W + col of each point.
    shape : (H, W). sigma : blur in pixels (0 = none).
    Returns (H, W) float32.
    """
    if as_float_array(centres, "centres", 2).shape[0] != np.asarray(centre_scores).shape[0]:
        raise ValueError(f"{np.asarray(centre_scores).shape[0]} centre scores for {np.asarray(centres).shape[0]} centres")
    idx, w = idw_weights(centres, points)
    return paint_3d(centre_scores, idx, w, pixel_index, shape, sigma)


def image_scores(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) float -> (N,) float32: the maximum of each map."""
    m = as_float_array(maps, "maps", 3)
    return m.reshape(m.shape[0], -1).max(axis=1).astype(np.float32)


def salient_features(z: np.ndarray, scores: np.ndarray, layer: int = -2) -> np.ndarray:
    """Each sample's feature at its highest-scoring patch or centre.

    z : (N, L, n_layers, C) or (N, L, C) float, normalized aggregated features.
    scores : (N, L) float. layer : which layer of z (default: second to last).
    Returns (N, C) float32.
    """
    f = as_float_array(z, "Z", (3, 4))
    s = as_float_array(scores, "scores", 2)
    if s.shape != f.shape[:2]:
        raise ValueError(f"scores shape {s.shape} does not match features {f.shape[:2]}")
    if f.ndim == 4:
        if f.shape[2] < 2 and layer == -2:
            layer = -1
        f = f[:, :, layer]
    top = np.argmax(s, axis=1)
    return f[np.arange(f.shape[0]), top].astype(np.float32)
