"""Running a native TensorRT engine (built by `musc-edge export --tensorrt` on this machine)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.engines import cuda
from edge_runtime.engines.manifest import EngineFile, ManifestMismatch


class EngineUnavailable(RuntimeError):
    """Native TensorRT cannot run here at all (no tensorrt package or no GPU)."""


def runtime_target() -> dict:
    """What this machine would run an engine with: TensorRT version, GPU name, compute capability.

    Raises EngineUnavailable when the tensorrt package or a GPU is missing.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineUnavailable("the tensorrt Python package is not installed") from None
    gpu = cuda.gpu_info()
    if gpu is None:
        raise EngineUnavailable("no CUDA GPU is visible")
    return {"tensorrt_version": trt.__version__, **gpu}


def check_engine_target(entry: EngineFile, target: dict) -> None:
    """Refuse an engine built for another GPU or TensorRT version (engines are not portable)."""
    differences = [
        f"{key} {getattr(entry, key)!r} (this machine: {target[key]!r})"
        for key in ("tensorrt_version", "gpu_name", "compute_capability")
        if str(getattr(entry, key)) != str(target[key])
    ]
    if differences:
        raise ManifestMismatch(f"TensorRT engine {entry.path} was built for another target: " + "; ".join(differences)
                               + ". Rebuild it on this machine with `musc-edge export ... --tensorrt`.")


class TensorRTRunner:
    """Deserializes an engine and runs it on device 0 with device buffers and a stream it owns.

    Anything that keeps the engine from running here (no tensorrt, no GPU, a CUDA
    driver error, no execution context) is an EngineUnavailable, so the caller can
    fall back to the ONNX file. ``close()`` releases the device memory and stream.
    """

    def __init__(self, path: Path, entry: EngineFile, output_names: list[str]):
        check_engine_target(entry, runtime_target())  # EngineUnavailable without tensorrt or GPU
        import tensorrt as trt

        self._trt = trt
        self._buffers: dict[str, cuda.DeviceBuffer] = {}
        self._stream = None
        try:
            cuda.use_device(0)
            self._logger = trt.Logger(trt.Logger.WARNING)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(Path(path).read_bytes())
            if self.engine is None:
                raise ManifestMismatch(f"TensorRT could not deserialize {path}; rebuild it on this machine")
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise EngineUnavailable(f"TensorRT could not create an execution context for {path} "
                                        "(device memory exhausted?)")
            self._stream = cuda.Stream()
        except cuda.CudaError as e:
            raise EngineUnavailable(f"CUDA error while loading {path}: {e}") from e
        self.max_batch = entry.max_batch
        self.provider = "tensorrt-native"
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        engine_outputs = {n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT}
        if engine_outputs != set(output_names):
            raise ManifestMismatch(f"engine {path} outputs {sorted(engine_outputs)}, manifest lists {output_names}")
        self._outputs = list(output_names)

    def _buffer(self, name: str, nbytes: int) -> cuda.DeviceBuffer:
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = self._buffers[name] = cuda.DeviceBuffer(nbytes)
        return buf

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        batch = next(iter(feeds.values())).shape[0]
        if batch > self.max_batch:
            raise ValueError(f"batch {batch} exceeds the engine's maximum batch {self.max_batch}")
        cuda.use_device(0)
        for name, array in feeds.items():
            self.context.set_input_shape(name, array.shape)
            buf = self._buffer(name, array.nbytes)
            buf.upload(array)
            self.context.set_tensor_address(name, buf.ptr)
        results = []
        for name in self._outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = np.empty(shape, self._trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._buffer(name, out.nbytes).ptr)
            results.append((name, out))
        if not self.context.execute_async_v3(self._stream.handle):
            raise RuntimeError("TensorRT execution failed")
        self._stream.synchronize()
        return [self._buffers[name].download(out) for name, out in results]

    def close(self) -> None:
        """Free the device buffers and destroy the stream (also done when collected)."""
        for buf in self._buffers.values():
            buf.free()
        self._buffers.clear()
        if self._stream is not None:
            self._stream.destroy()
            self._stream = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the driver may already be gone
            pass
