"""Torch definitions of the encoders, keyed by catalogue name.

`build_trunk` makes the module whose state-dict keys are the official
checkpoint's; `build_features` wraps it into the module that is exported: its
outputs are the selected layers as the manifest describes them.
"""
from __future__ import annotations

from torch import nn

from edge_runtime.engines.catalog import EncoderSpec
from export.models.efficientnet_lite import EfficientNetLite, EfficientNetLiteFeatures
from export.models.point_mae import PointMAEEncoder, PointMAEFeatures
from export.models.vit import VisionTransformer, ViTFeatures

# Side of the positional-embedding grid in the release checkpoints: DINO was
# trained at 224 px, DINOv2's released weights carry 518 px (37 x 37 patches).
DINOV2_CHECKPOINT_GRID = 37


def checkpoint_grid(spec: EncoderSpec) -> int:
    """Positional-embedding grid side stored in a ViT release checkpoint."""
    return DINOV2_CHECKPOINT_GRID if spec.family == "dinov2" else 224 // spec.patch_size


def build_trunk(spec: EncoderSpec, image_size: int | None = None) -> nn.Module:
    """The encoder trunk (random weights) for ``spec``; EfficientNet-Lite needs ``image_size``
    because its TensorFlow "SAME" padding is fixed at construction."""
    if spec.family in ("dino", "dinov2"):
        return VisionTransformer(spec.patch_size, spec.width, spec.depth, spec.heads, checkpoint_grid(spec),
                                 dinov2=spec.family == "dinov2")
    if spec.family == "efficientnet-lite":
        if image_size is None:
            raise ValueError(f"{spec.name} needs an image size")
        return EfficientNetLite(spec.name, image_size)
    if spec.family == "point-mae":
        return PointMAEEncoder(spec.width, spec.depth, spec.heads)
    raise ValueError(f"no torch definition for family {spec.family!r}")


def build_features(spec: EncoderSpec, trunk: nn.Module, layers: tuple[int, ...], image_size: int | None = None,
                   final_norm: bool = True) -> nn.Module:
    """The exported module. Attributes ``channels`` (per output) and, for 2D,
    ``grid`` (h, w) and ``patch_size`` (pixels per grid cell).

    final_norm: ViT only (Point-MAE always applies its final norm, as MuSc-V2 does).
    """
    if spec.family in ("dino", "dinov2"):
        model = ViTFeatures(trunk, image_size, layers, final_norm)
        model.channels = [spec.width] * len(layers)
        model.patch_size = spec.patch_size
        return model
    if spec.family == "efficientnet-lite":
        model = EfficientNetLiteFeatures(trunk, image_size, layers, spec.patch_size)
        model.patch_size = model.stride
        return model
    model = PointMAEFeatures(trunk, layers)
    model.channels = [spec.width] * len(layers)
    return model
