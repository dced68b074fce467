"""Torch module -> ONNX graph (dynamic batch), precision variants, and parity against torch."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_runtime.engines.onnx_runtime import OnnxRunner

OPSET = 17  # LayerNormalization is native from 17; TensorRT 8.6+ parses it
# Largest error allowed, as a fraction of the output's scale (its max |value| in torch fp32).
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}


class HalfPrecision(nn.Module):
    """Runs a module in float16 between float32 inputs and outputs, so every graph
    has the same float32 interface whatever its inner precision."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(module).half()

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(out.float() for out in self.module(*(x.half() for x in inputs)))


def export_onnx(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], input_names: list[str],
                output_names: list[str], path: str | Path, precision: str = "fp32", opset: int = OPSET) -> Path:
    """Trace ``model`` on ``example_inputs`` into an ONNX file with a dynamic batch axis.

    precision "fp32" or "fp16" (float16 weights and arithmetic inside, float32
    at the graph's inputs and outputs). Uses the TorchScript exporter
    (``dynamo=False``), which needs no extra packages.
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"export_onnx makes fp32 or fp16 graphs, got {precision!r} (int8: quantize_int8)")
    module = HalfPrecision(model) if precision == "fp16" else model
    module.eval()
    path = Path(path)
    dynamic = {name: {0: "batch"} for name in [*input_names, *output_names]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(module, tuple(example_inputs), str(path), dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=dynamic, do_constant_folding=True)
    return path


def quantize_int8(fp32_path: str | Path, out_path: str | Path, input_name: str, frames: np.ndarray,
                  batch: int = 8) -> Path:
    """Static int8 quantization (QDQ, per-channel weights) of a 2D graph with ONNX Runtime,
    calibrated on ``frames`` float32 (N, 3, S, S) preprocessed like the station's input."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(frames), batch))

        def get_next(self):
            start = next(self.starts, None)
            return None if start is None else {input_name: frames[start:start + batch]}

    quantize_static(str(fp32_path), str(out_path), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return Path(out_path)


def run_onnx_cpu(path: str | Path, feeds: dict[str, np.ndarray], output_names: list[str],
                 threads: int | None = None) -> list[np.ndarray]:
    """Outputs of an ONNX file on ONNX Runtime's CPU provider."""
    return OnnxRunner(Path(path), ["CPUExecutionProvider"], output_names, threads).run(feeds)


def parity(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict:
    """Per output: max |candidate - reference| and the scale max |reference|.

    reference, candidate: lists of equally shaped float arrays. Returns
    ``{"max_abs_error": [...], "scale": [...]}`` (floats).
    """
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference outputs, {len(candidate)} candidate outputs")
    errors, scales = [], []
    for ref, got in zip(reference, candidate):
        if ref.shape != got.shape:
            raise ValueError(f"output shapes differ: reference {ref.shape}, candidate {got.shape}")
        errors.append(float(np.max(np.abs(got.astype(np.float64) - ref))))
        scales.append(float(np.max(np.abs(ref))))
    return {"max_abs_error": errors, "scale": scales}


def check_parity(report: dict, precision: str, what: str) -> None:
    """Raise ValueError when an output's error exceeds TOLERANCE[precision] x its scale."""
    tol = TOLERANCE[precision]
    for i, (err, scale) in enumerate(zip(report["max_abs_error"], report["scale"])):
        if not err <= tol * scale:
            raise ValueError(f"{what}: output {i} differs from torch by {err:.3g}, more than "
                             f"{tol:g} x scale {scale:.3g} ({precision})")
