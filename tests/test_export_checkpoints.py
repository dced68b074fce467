"""Official checkpoint layouts and strict loading: every variant, every refusal."""
from __future__ import annotations

import pytest
import torch

from edge_runtime.engines import CATALOG, encoder_spec
from export.checkpoints import (
    SOURCES,
    default_weights_path,
    lite_package_file,
    load_weights,
    official_layout,
    random_state,
    release_state,
    write_random_checkpoint,
)
from export.models import build_trunk

WRITTEN_LAYOUTS = [n for n, s in CATALOG.items() if s.family != "efficientnet-lite"]


def meta_trunk(name: str, image_size: int = 224):
    with torch.device("meta"):
        return build_trunk(encoder_spec(name), image_size)


@pytest.mark.parametrize("name", WRITTEN_LAYOUTS)
def test_written_layout_fits_the_torch_definition(name):
    """Every key the release file carries, minus the documented ignored ones, is a trunk
    parameter of the same shape, and every trunk parameter is in the file (shapes only, no memory)."""
    spec = encoder_spec(name)
    layout = {k: torch.empty(shape, device="meta") for k, shape in official_layout(spec).items()}
    release = {"base_model": layout} if spec.family == "point-mae" else layout
    state = release_state(spec, release, "layout")
    trunk = {k: tuple(v.shape) for k, v in meta_trunk(name).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == trunk


def test_layout_sizes_match_published_parameter_counts():
    """Independent check of the written layouts: parameter counts of the released
    backbones (DINO paper: ViT-S 21M, ViT-B 85M; DINOv2: ViT-L 300M; Point-MAE encoder ~22M)."""
    def millions(name):
        spec = encoder_spec(name)
        prefixes = ("MAE_decoder.", "increase_dim.", "decoder_pos_embed.", "mask_token")
        return sum(torch.Size(s).numel() for k, s in official_layout(spec).items()
                   if not k.startswith(prefixes) and not k.endswith(("running_mean", "running_var"))) / 1e6
    assert 21 < millions("dino-vits16") < 22.5
    assert 85 < millions("dino-vitb16") < 87
    assert 300 < millions("dinov2-vitl14") < 306
    assert 21 < millions("point-mae") < 23


@pytest.mark.parametrize("name", ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"])
def test_lite_weights_found_in_installed_package(name):
    path = default_weights_path(encoder_spec(name))
    assert path == lite_package_file(name) and path.is_file()
    weights = load_weights(encoder_spec(name), meta_trunk(name))
    assert len(weights.sha256) == 64 and weights.source == str(path)


def test_missing_checkpoint_names_file_and_where_to_get_it(tmp_path):
    spec = encoder_spec("dino-vitb8")
    with pytest.raises(FileNotFoundError) as e:
        load_weights(spec, meta_trunk("dino-vitb8"), tmp_path / "dino_vitbase8_pretrain.pth")
    msg = str(e.value)
    assert str(tmp_path / "dino_vitbase8_pretrain.pth") in msg
    assert "dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain" in msg
    with pytest.raises(FileNotFoundError, match="--weights"):
        default_weights_path(spec)
    with pytest.raises(FileNotFoundError, match="Pang-Yatian/Point-MAE"):
        default_weights_path(encoder_spec("point-mae"))


@pytest.fixture(scope="module")
def small_layout():
    spec = encoder_spec("dino-vits16")
    return spec, random_state(official_layout(spec), seed=2)


def test_missing_and_unexpected_keys_are_listed(small_layout, tmp_path):
    spec, state = small_layout
    broken = dict(state)
    del broken["blocks.4.attn.qkv.bias"]
    broken["head.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(ValueError) as e:
        load_weights(spec, meta_trunk(spec.name), path)
    msg = str(e.value)
    assert "1 missing: blocks.4.attn.qkv.bias" in msg
    assert "1 unexpected: head.weight" in msg


def test_wrong_shapes_are_listed(small_layout, tmp_path):
    spec, state = small_layout
    path = tmp_path / "wrong.pth"
    torch.save({**state, "pos_embed": torch.zeros(1, 50, 384)}, path)
    with pytest.raises(ValueError, match=r"pos_embed \(1, 50, 384\) \(expected \(1, 197, 384\)\)"):
        load_weights(spec, meta_trunk(spec.name), path)


def test_loaded_weights_are_the_file_values(small_layout, tmp_path):
    spec, state = small_layout
    path = tmp_path / "ok.pth"
    torch.save(state, path)
    trunk = meta_trunk(spec.name)
    load_weights(spec, trunk, path)
    loaded = trunk.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_point_mae_decoder_ignored_but_other_keys_refused(tmp_path):
    spec = encoder_spec("point-mae")
    path = write_random_checkpoint(spec, tmp_path / "pretrain.pth")
    trunk = meta_trunk("point-mae")
    load_weights(spec, trunk, path)  # decoder keys present and ignored
    release = torch.load(path, weights_only=True)
    assert any(k.startswith("MAE_decoder.") for k in release["base_model"])
    # DataParallel-saved files carry "module." prefixes.
    torch.save({"base_model": {f"module.{k}": v for k, v in release["base_model"].items()}}, tmp_path / "dp.pth")
    load_weights(spec, meta_trunk("point-mae"), tmp_path / "dp.pth")
    # A fine-tuning head is not part of the encoder: refused, named.
    release["base_model"]["cls_head_finetune.0.weight"] = torch.zeros(2)
    torch.save(release, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="unexpected: cls_head_finetune.0.weight"):
        load_weights(spec, meta_trunk("point-mae"), tmp_path / "extra.pth")
    torch.save(release["base_model"], tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="no 'base_model' entry"):
        load_weights(spec, meta_trunk("point-mae"), tmp_path / "bare.pth")


def test_dinov2_mask_token_is_ignored(tmp_path):
    spec = encoder_spec("dinov2-vits14")
    assert "mask_token" in official_layout(spec)
    path = write_random_checkpoint(spec, tmp_path / "dinov2_vits14_pretrain.pth")
    trunk = meta_trunk(spec.name)
    load_weights(spec, trunk, path)
    assert "mask_token" not in trunk.state_dict()
    assert tuple(trunk.pos_embed.shape) == (1, 1 + 37 * 37, 384)  # released at 518 px


def test_every_written_layout_names_its_source():
    assert set(WRITTEN_LAYOUTS) <= set(SOURCES)
