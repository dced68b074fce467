"""Running an exported ONNX graph with ONNX Runtime (CPU, CUDA or TensorRT execution provider)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

# Preferred order when the caller names none: fastest first, CPU always last.
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def choose_providers(requested: list[str] | tuple[str, ...]) -> list[str]:
    """The requested execution providers that this ONNX Runtime build has, in order.

    Unavailable ones are dropped with a warning; none left is a ValueError
    naming what is available.
    """
    available = ort.get_available_providers()
    chosen = [p for p in requested if p in available]
    dropped = [p for p in requested if p not in available]
    if dropped:
        log.info("execution providers not in this onnxruntime build, skipped: %s", dropped)
    if not chosen:
        raise ValueError(f"none of the execution providers {list(requested)} is available; "
                         f"this onnxruntime has {available}")
    return chosen


class OnnxRunner:
    """One ONNX Runtime session over a graph file.

    threads: intra-op threads (None = ONNX Runtime's default, all cores);
    stations that pin cores set it to the cores they own. Graph optimization
    is ORT_ENABLE_ALL. The TensorRT provider caches its engines beside the graph
    and, with ``trt_fp16``, builds them in fp16 (a float32 graph kept as the
    fallback of an fp16/int8 export).
    """

    def __init__(self, path: Path, providers: list[str], output_names: list[str], threads: int | None = None,
                 trt_fp16: bool = False):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        provider_args = []
        for p in providers:
            if p == "TensorrtExecutionProvider":
                cache = path.parent / "trt_cache"
                provider_args.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
                                          "trt_fp16_enable": trt_fp16}))
            else:
                provider_args.append(p)
        self.session = ort.InferenceSession(str(path), options, providers=provider_args)
        self.provider = self.session.get_providers()[0]
        self.output_names = list(output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, feeds)
