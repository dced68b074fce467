"""Running an exported ONNX graph with ONNX Runtime (CPU, CUDA or TensorRT execution provider)."""
from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

# Preferred order when the caller names none: fastest first, CPU always last.
PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
# The PyPI distributions that all install the one `onnxruntime` module: exactly one may be present.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")


def installed_ort_distributions() -> list[str]:
    """Which of ORT_DISTRIBUTIONS pip has installed here (a Jetson's system build may be neither)."""
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            importlib.metadata.distribution(name)
            found.append(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def missing_gpu_reason(distributions: list[str], available: list[str]) -> str:
    """Why no GPU execution provider is available, and what to install: for the warning."""
    if set(ORT_DISTRIBUTIONS) <= set(distributions):
        return ("both onnxruntime and onnxruntime-gpu are installed; they share one module and the CPU build "
                "wins. Keep one: `pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu` "
                "(scripts/setup.sh gpu)")
    if "onnxruntime-gpu" in distributions:
        return (f"onnxruntime-gpu is installed but offers only {available}: its CUDA/cuDNN libraries "
                "or the NVIDIA driver are missing or do not match")
    if "onnxruntime" in distributions:
        return ("the CPU build `onnxruntime` is installed; install onnxruntime-gpu instead "
                "(scripts/setup.sh gpu), or on a Jetson use JetPack's (scripts/setup.sh jetson)")
    return f"this onnxruntime (not from pip: a system build) offers only {available}"


def choose_providers(requested: list[str] | tuple[str, ...], gpu_expected: bool = False) -> list[str]:
    """The requested execution providers that this ONNX Runtime build has, in order.

    Unavailable ones are dropped; with ``gpu_expected`` (the profile asked for a
    GPU) losing every GPU provider is a WARNING saying why and what to install.
    None left is a ValueError naming what is available.
    """
    available = ort.get_available_providers()
    chosen = [p for p in requested if p in available]
    dropped = [p for p in requested if p not in available]
    if gpu_expected and not any(p in GPU_PROVIDERS for p in chosen):
        log.warning("GPU requested but ONNX Runtime will run on %s: %s", chosen or "nothing",
                    missing_gpu_reason(installed_ort_distributions(), available))
    elif dropped:
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

    def run_bound(self, feeds: dict[str, np.ndarray], xp=np, device_type: str = "cpu", device_id: int = 0) -> list:
        """Run with I/O binding: ONNX Runtime allocates the outputs on the device and hands them over
        through DLPack, without a copy through the host.

        xp : the array module receiving them (cupy for ``device_type="cuda"``, numpy for "cpu").
        Each output is copied once on its device: a DLPack view would share memory
        with an OrtValue that this call does not keep alive.
        """
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, array)
        for name in self.output_names:
            binding.bind_output(name, device_type, device_id)
        self.session.run_with_iobinding(binding)
        return [xp.from_dlpack(value).copy() for value in binding.get_outputs()]
