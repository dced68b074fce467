"""The Point-MAE encoder, with the parameter names of its ``pretrain.pth``.

Official checkpoint (Pang-Yatian/Point-MAE release ``pretrain.pth``): a dict
whose ``base_model`` entry is the state dict of the whole masked autoencoder
(keys possibly prefixed ``module.`` when saved from DataParallel). The encoder
part, under ``MAE_encoder.``:

    encoder.first_conv.0.weight / bias      (128, 3, 1) / (128,)    Conv1d 3 -> 128
    encoder.first_conv.1.*                  (128,)                  BatchNorm1d
    encoder.first_conv.3.weight / bias      (256, 128, 1) / (256,)  Conv1d 128 -> 256
    encoder.second_conv.0.weight / bias     (512, 512, 1) / (512,)  Conv1d 512 -> 512
    encoder.second_conv.1.*                 (512,)                  BatchNorm1d
    encoder.second_conv.3.weight / bias     (384, 512, 1) / (384,)  Conv1d 512 -> 384
    pos_embed.0.weight / bias               (128, 3) / (128,)       Linear, GELU, Linear
    pos_embed.2.weight / bias               (384, 128) / (384,)
    blocks.blocks.{i}.norm1.weight / bias   (384,)                  i = 0..11
    blocks.blocks.{i}.attn.qkv.weight       (1152, 384)             no qkv bias
    blocks.blocks.{i}.attn.proj.weight / bias (384, 384) / (384,)
    blocks.blocks.{i}.norm2.weight / bias   (384,)
    blocks.blocks.{i}.mlp.fc1.weight / bias (1536, 384) / (1536,)
    blocks.blocks.{i}.mlp.fc2.weight / bias (384, 1536) / (384,)
    norm.weight / bias                      (384,)
    (BatchNorm ``*`` = weight, bias, running_mean, running_var, num_batches_tracked)

Ignored on purpose (the decoder, used only for pre-training): keys starting
``MAE_decoder.``, ``increase_dim.``, ``decoder_pos_embed.`` and the key
``mask_token``. Any other key outside ``MAE_encoder.`` is an error.

Forward, as MuSc-V2's PointTransformer: mini-PointNet per group (shared
Conv1d, max-pool, concatenated global feature, Conv1d, max-pool) -> tokens;
positional embedding of the centres is added before EVERY block
(``x = block(x + pos)``); features of blocks 3, 7, 11 (0-based) after the
final LayerNorm (eps 1e-5), as (B, G, 384).
"""
from __future__ import annotations

import torch
from torch import nn

from export.models.vit import Attention, Mlp

WIDTH = 384
DEPTH = 12
HEADS = 6


class MiniPointNet(nn.Module):
    """Groups (B, G, M, 3) -> one token per group (B, G, C)."""

    def __init__(self, width: int = WIDTH):
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(),
                                        nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(),
                                         nn.Conv1d(512, width, 1))
        self.width = width

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        b, g, m, _ = groups.shape
        x = self.first_conv(groups.reshape(-1, m, 3).transpose(1, 2))  # (B*G, 256, M)
        pooled = x.max(dim=2, keepdim=True).values
        x = torch.cat([pooled.expand(-1, -1, m), x], dim=1)
        x = self.second_conv(x).max(dim=2).values
        return x.reshape(-1, g, self.width)


class PointBlock(nn.Module):
    """Point-MAE's transformer block: pre-norm, LayerNorm eps 1e-5, qkv without bias."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, qkv_bias=False)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, 4 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BlockList(nn.Module):
    """Holds ``blocks`` so the keys read ``blocks.blocks.{i}`` as in the checkpoint."""

    def __init__(self, width: int, depth: int, heads: int):
        super().__init__()
        self.blocks = nn.ModuleList(PointBlock(width, heads) for _ in range(depth))


class PointMAEEncoder(nn.Module):
    """The trunk whose ``state_dict`` keys are the checkpoint's ``MAE_encoder.*`` keys without the prefix."""

    def __init__(self, width: int = WIDTH, depth: int = DEPTH, heads: int = HEADS):
        super().__init__()
        self.encoder = MiniPointNet(width)
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, width))
        self.blocks = BlockList(width, depth, heads)
        self.norm = nn.LayerNorm(width)


class PointMAEFeatures(nn.Module):
    """(neighbourhood (B, G, M, 3), centres (B, G, 3)) -> tuple over ``layers`` of (B, G, C)."""

    def __init__(self, trunk: PointMAEEncoder, layers: tuple[int, ...]):
        super().__init__()
        self.trunk = trunk
        self.layers = tuple(layers)

    def forward(self, neighbourhood: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t = self.trunk
        x = t.encoder(neighbourhood)
        pos = t.pos_embed(centres)
        outputs = []
        for i, block in enumerate(t.blocks.blocks[: self.layers[-1] + 1]):
            x = block(x + pos)
            if i in self.layers:
                outputs.append(t.norm(x))
        return tuple(outputs)
