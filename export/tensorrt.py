"""Building native TensorRT engines from exported ONNX graphs, on the machine that will run them.

Engines are specific to a GPU model (compute capability) and a TensorRT
version, so they are built where they run: on the Jetson itself, or on the
x86 RTX station. fp16 sets the builder's FP16 flag on the float32 graph;
int8 calibrates on a folder of preprocessed frames (entropy calibrator,
cache file beside the engine) with FP16 allowed for layers TensorRT keeps
out of int8. Both are weakly typed builds, which TensorRT 11 removed: the
`tensorrt` extra pins 10.x and an 11.x install is refused with that reason.
"""
from __future__ import annotations

from pathlib import Path

from calibration.int8 import CalibrationFrames, make_int8_calibrator
from edge_runtime.engines import cuda
from edge_runtime.engines.manifest import sha256_file
from edge_runtime.engines.tensorrt_runtime import runtime_target

SUPPORTED_TENSORRT = (8, 10)  # major versions with BuilderFlag.FP16/INT8 and implicit INT8 calibration


def check_tensorrt_version(version: str) -> None:
    """Refuse a TensorRT whose builder API this module does not speak (a RuntimeError saying what to install)."""
    major = int(version.split(".")[0])
    if not SUPPORTED_TENSORRT[0] <= major <= SUPPORTED_TENSORRT[1]:
        raise RuntimeError(
            f"TensorRT {version} is not supported for building engines: TensorRT 11 removed BuilderFlag.FP16/INT8, "
            f"int8_calibrator and set_calibration_profile, which the fp16 and int8 builds use. "
            f"Install TensorRT 10 (`pip install 'tensorrt>=10,<11'`, the `tensorrt` extra) or use JetPack's.")


def require_tensorrt():
    """The tensorrt module, or a RuntimeError that says how to get a build environment."""
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeError(
            "building a TensorRT engine (--tensorrt, --engine-for) needs the TensorRT Python package and an "
            "NVIDIA GPU on this machine: on a Jetson it "
            "comes with JetPack (python3-libnvinfer), on x86 `pip install tensorrt` matching the CUDA driver. "
            "Without it, export ONNX only and run it with ONNX Runtime.") from None
    check_tensorrt_version(trt.__version__)
    if cuda.gpu_info() is None:
        raise RuntimeError("building a TensorRT engine needs a visible NVIDIA GPU "
                           "(engines are built on the GPU that runs them)")
    return trt


def build_engine(onnx_path: str | Path, engine_path: str | Path, input_shapes: dict[str, tuple[int, ...]],
                 precision: str, max_batch: int = 8, frames=None,
                 workspace_gib: float = 2.0) -> dict:
    """Build and write a serialized engine for batches 1..max_batch, tuned for batch 1 (the station's).

    input_shapes: graph input name -> shape at batch 1. precision: "fp32",
    "fp16" or "int8" (int8 needs ``frames``, a calibration.int8.CalibrationFrames,
    and a single input). Returns the target it was built
    for: ``{"tensorrt_version", "gpu_name", "compute_capability"}``.
    """
    trt = require_tensorrt()
    engine_path = Path(engine_path)
    if precision == "int8":
        if frames is None or len(input_shapes) != 1:
            raise ValueError("int8 engines need calibration frames and a single image input")
        frames.validate()  # a bad frame inside TensorRT's callback would only end calibration early
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 8 needs explicit batch requested; from 10 it is the only mode.
    legacy = int(trt.__version__.split(".")[0]) < 10
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if legacy else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    for name, shape in input_shapes.items():
        profile.set_shape(name, shape, shape, (max_batch, *shape[1:]))  # min, opt = batch 1, max
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if precision == "int8":
        batch = frames.batch_size
        name, shape = next(iter(input_shapes.items()))
        calibration_profile = builder.create_optimization_profile()
        calibration_profile.set_shape(name, (batch, *shape[1:]), (batch, *shape[1:]), (batch, *shape[1:]))
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_int8_calibrator(frames, engine_path.with_suffix(".calib.cache"), sha256_file(onnx_path))
        config.int8_calibrator = calibrator
        config.set_calibration_profile(calibration_profile)
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None:
        calibrator.errors.raise_first()  # what TensorRT swallowed inside the callbacks
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    engine_path.write_bytes(bytes(serialized))
    return runtime_target()


def add_engine(manifest_path: str | Path, precision: str, max_batch: int = 8,
               calibration: str | Path | None = None) -> Path:
    """Build a native engine for an existing export and record it in its manifest.

    Torch-free: this is how a Jetson gets its engine from an export made on
    any machine (copy the folder over, run this there). The ONNX file must be
    the one the manifest lists (sha256) and not quantized already.
    """
    from dataclasses import replace

    from edge_runtime.engines.manifest import EngineFile, Manifest, ManifestMismatch, sha256_file

    require_tensorrt()
    manifest_path = Path(manifest_path)
    manifest = Manifest.read(manifest_path)
    onnx_path = manifest_path.parent / manifest.onnx.path
    if not onnx_path.is_file() or sha256_file(onnx_path) != manifest.onnx.sha256:
        raise ManifestMismatch(f"{onnx_path} is missing or does not match {manifest_path}; re-export it")
    if manifest.onnx.precision == "int8":
        raise ValueError(f"{onnx_path} is already int8-quantized; export it again in fp32 to build an engine")
    if precision == "int8" and calibration is None:
        raise ValueError("an int8 engine needs a calibration folder of preprocessed .npy frames")
    frames = None
    if precision == "int8":
        frames = CalibrationFrames(calibration, max_batch, (3, manifest.image_size, manifest.image_size))
    engine_path = onnx_path.with_suffix(".engine")
    target = build_engine(onnx_path, engine_path, manifest.input_shapes(1), precision, max_batch, frames)
    engine = EngineFile(path=engine_path.name, sha256=sha256_file(engine_path), precision=precision,
                        max_batch=max_batch, **target)
    return replace(manifest, engine=engine, precision=precision).write(manifest_path)
