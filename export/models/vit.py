"""DINO and DINOv2 Vision Transformers, with parameter names of their release checkpoints.

Official key layout (facebookresearch/dino ``dino_*_pretrain.pth`` and
facebookresearch/dinov2 ``dinov2_vit*14_pretrain.pth``; bare state dicts):

    cls_token                        (1, 1, C)
    pos_embed                        (1, 1 + N, C)   N = (224/p)^2 for DINO, 37*37 (518 px) for DINOv2
    mask_token                       (1, C)          DINOv2 only; masked training, ignored here
    patch_embed.proj.weight / bias   (C, 3, p, p) / (C,)
    blocks.{i}.norm1.weight / bias   (C,)
    blocks.{i}.attn.qkv.weight / bias  (3C, C) / (3C,)
    blocks.{i}.attn.proj.weight / bias (C, C) / (C,)
    blocks.{i}.ls1.gamma             (C,)            DINOv2 only (LayerScale)
    blocks.{i}.norm2.weight / bias   (C,)
    blocks.{i}.mlp.fc1.weight / bias (4C, C) / (4C,)
    blocks.{i}.mlp.fc2.weight / bias (C, 4C) / (C,)
    blocks.{i}.ls2.gamma             (C,)            DINOv2 only
    norm.weight / bias               (C,)

LayerNorm eps 1e-6, GELU (erf), pre-norm blocks. The positional embedding is
resampled to the export grid once, at export, the way both repositories do it
at run time: bicubic, scale factor (grid + 0.1) / sqrt(N), untouched when the
grid equals the checkpoint's.

Features (what MuSc-V2 takes, see ALGORITHM.md section 1): for each selected
block index i, the output of ``blocks[i]`` passed through the final ``norm``
(both repositories' ``get_intermediate_layers``, which MuSc and MuSc-V2 call,
apply it), class token dropped, patch tokens row-major as (B, H, W, C).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block; with ``layer_scale`` the DINOv2 variant."""

    def __init__(self, width: int, heads: int, eps: float, layer_scale: bool, qkv_bias: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, 4 * width)
        self.ls1 = LayerScale(width) if layer_scale else nn.Identity()
        self.ls2 = LayerScale(width) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """The trunk whose ``state_dict`` keys are the release checkpoint's (no head).

    checkpoint_grid: side of the positional embedding grid in the checkpoint
    (224/p for DINO, 37 for DINOv2).
    """

    def __init__(self, patch: int, width: int, depth: int, heads: int, checkpoint_grid: int, dinov2: bool):
        super().__init__()
        self.patch = patch
        self.patch_embed = PatchEmbed(patch, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + checkpoint_grid**2, width))
        self.blocks = nn.ModuleList(Block(width, heads, 1e-6, layer_scale=dinov2) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=1e-6)


def resample_positions(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, 1 + M*M, C) positional embedding -> (1, 1 + h*w, C) for a (h, w) patch grid.

    Bicubic with scale factor (h + 0.1) / M, (w + 0.1) / M, as DINO and DINOv2
    do (the offset avoids a rounding error in the output size); unchanged when
    (h, w) == (M, M).
    """
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    if m * m != n:
        raise ValueError(f"checkpoint pos_embed has {n} patch positions, not a square grid")
    h, w = grid
    if (h, w) == (m, m):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:].float()
    patch_pos = patch_pos.reshape(1, m, m, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, scale_factor=((h + 0.1) / m, (w + 0.1) / m), mode="bicubic",
                              align_corners=False)
    if patch_pos.shape[-2:] != (h, w):
        raise ValueError(f"positional embedding resampled to {tuple(patch_pos.shape[-2:])}, wanted {(h, w)}")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, -1)
    return torch.cat([cls_pos, patch_pos.to(pos_embed.dtype)], dim=1)


class ViTFeatures(nn.Module):
    """Image (B, 3, S, S) -> tuple over ``layers`` of patch grids (B, S/p, S/p, C).

    final_norm: pass each selected block's tokens through the trunk's final
    LayerNorm (what MuSc-V2 does; see the module docstring).
    """

    def __init__(self, trunk: VisionTransformer, image_size: int, layers: tuple[int, ...], final_norm: bool = True):
        super().__init__()
        if image_size % trunk.patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {trunk.patch}")
        self.trunk = trunk
        self.grid = (image_size // trunk.patch, image_size // trunk.patch)
        self.layers = tuple(layers)
        self.final_norm = final_norm
        with torch.no_grad():
            positions = resample_positions(trunk.pos_embed.detach(), self.grid)
        self.register_buffer("positions", positions.clone(), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t = self.trunk
        x = t.patch_embed(image)
        x = torch.cat([t.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.positions
        outputs = []
        for i, block in enumerate(t.blocks[: self.layers[-1] + 1]):
            x = block(x)
            if i in self.layers:
                y = t.norm(x) if self.final_norm else x
                outputs.append(y[:, 1:].reshape(-1, self.grid[0], self.grid[1], x.shape[-1]))
        return tuple(outputs)
