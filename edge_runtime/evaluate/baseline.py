"""The plain mutual-scoring baseline the embedded defaults must beat (issue 14).

EfficientNet-Lite0 stages at strides 4, 8 and 16 on the stride-8 grid, each
layer L2-normalized, no SNAMD; FPFH at three radii on 784 farthest-point
centres of the foreground (table plane removed), no IPG, no SNAMD; patch score
= mean of the lowest 30 % of the per-reference minimum distances, averaged over
layers; image score = map maximum; no CAE, no RsCon. 2D+3D = the sum of each
modality's maps min-max normalized over the whole test pool: a scale a line
never has, which only an offline evaluation can afford.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.inspection.settings import GROUPS_3D_ALONE, STAGES_2D_ALONE, InspectionSettings

BASELINE_STAGES = STAGES_2D_ALONE  # a 2D-only line takes the baseline's stages
BASELINE = InspectionSettings(encoder_3d="fpfh", r_list=(1,), r_list_3d=(1,), groups=GROUPS_3D_ALONE,
                              fpfh_radii=(0.025, 0.05, 0.1), cae=False, rscon=False, fusion="sum")


def minmax_fusion(maps: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Fused maps (N, S, S) float32 and image scores (N,): each modality's (N, S, S)
    maps min-max normalized over the pool, summed; image score = fused map maximum."""
    fused = np.zeros_like(next(iter(maps.values())), dtype=np.float32)
    for m in maps.values():
        lo, hi = float(m.min()), float(m.max())
        fused += (m - lo) / max(hi - lo, 1e-12)
    return fused, fused.reshape(len(fused), -1).max(axis=1)
