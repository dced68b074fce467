"""INT8 calibration data for TensorRT: a line's preprocessed frames, in batches, with a cache.

TensorRT's INT8 mode needs activation ranges, measured by running representative
inputs through the network. The representative inputs are a line's own frames,
preprocessed exactly as the engine will see them (resized, normalized: float32
(3, S, S) each). :func:`write_calibration_frames` stores them; :class:`CalibrationFrames`
serves them in fixed-size batches; :func:`make_int8_calibrator` wraps them as a
TensorRT ``IInt8EntropyCalibrator2`` (only where TensorRT imports).

The calibration cache that TensorRT writes is kept beside a small JSON sidecar
holding its key: a digest of the frames, the ONNX graph's sha256 and the TensorRT
version, so a cache made from other frames (another line, another preprocessing),
another graph or another TensorRT is never reused silently.

TensorRT swallows exceptions raised inside calibrator callbacks (calibration just
ends early, or the build "fails"), so every frame is validated before the build
(:meth:`CalibrationFrames.validate`) and the callbacks record what they raise
(:class:`CallbackErrors`) for the builder to re-raise after the build.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from calibration.files import write_bytes_atomic, write_text_atomic
from edge_runtime.engines import cuda


def write_calibration_frames(frames: Iterable[np.ndarray], folder: str | os.PathLike) -> int:
    """Store preprocessed frames (each (C, H, W) float32) as ``folder/NNNNNN.npy``; returns the count.

    All frames must share one shape; they are written as float32.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    shape = None
    count = 0
    for count, frame in enumerate(frames, start=1):
        arr = np.asarray(frame)
        if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"frame {count - 1}: expected a float (C, H, W) array, got {arr.dtype} {arr.shape}")
        if shape is not None and arr.shape != shape:
            raise ValueError(f"frame {count - 1}: shape {arr.shape} differs from the first frame's {shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"frame {count - 1}: NaN or infinite values")
        shape = arr.shape
        np.save(out / f"{count - 1:06d}.npy", arr.astype(np.float32, copy=False))
    if count == 0:
        raise ValueError("no frames to write")
    return count


class CalibrationFrames:
    """Preprocessed frames in batches (batch_size, C, H, W) float32, for INT8 calibration.

    ``folder``: a folder of ``.npy`` files (each one (C, H, W) frame or a stack
    (N, C, H, W), in name order), or a ``.npz`` file (one frame per array, or one
    (N, C, H, W) array), or a folder holding exactly one ``.npz``. ``input_shape``: (C, H, W) the engine
    expects. The last incomplete batch is dropped (TensorRT wants full batches).
    Iterate for batches; :meth:`next_batch` / :meth:`reset` serve the calibrator.
    """

    def __init__(self, folder: str | os.PathLike, batch_size: int, input_shape: tuple[int, int, int]):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.input_shape = tuple(int(v) for v in input_shape)
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (C, H, W), got {input_shape!r}")
        self.batch_size = int(batch_size)
        self.source = Path(folder)
        self._load = self._index(self.source)
        if self.n_frames < self.batch_size:
            raise ValueError(f"{self.source}: {self.n_frames} frames, fewer than one batch of {self.batch_size}")
        self._next = 0

    def _index(self, path: Path):
        """Set ``n_frames``; return a function frame index -> (C, H, W) array."""
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if files:
                # (file, index in its stack or None); memory-mapped to read only the shapes
                index = []
                for f in files:
                    shape = np.load(f, mmap_mode="r").shape
                    index += [(f, k) for k in range(shape[0])] if len(shape) == 4 else [(f, None)]
                self.n_frames = len(index)
                return lambda i: (np.load(index[i][0]) if index[i][1] is None
                                  else np.load(index[i][0], mmap_mode="r")[index[i][1]])
            archives = sorted(path.glob("*.npz"))
            if len(archives) != 1:
                raise ValueError(f"{path}: expected .npy frames or exactly one .npz, found {len(archives)} .npz")
            path = archives[0]
        if not path.is_file():
            raise FileNotFoundError(f"calibration frames not found: {path}")
        if path.suffix != ".npz":
            raise ValueError(f"{path}: expected a folder of .npy frames or a .npz file")
        archive = np.load(path)
        keys = sorted(archive.files)
        if len(keys) == 1 and archive[keys[0]].ndim == 4:
            stack = archive[keys[0]]
            self.n_frames = len(stack)
            return lambda i: stack[i]
        self.n_frames = len(keys)
        return lambda i: archive[keys[i]]

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` as (C, H, W) float32, checked against ``input_shape``."""
        arr = np.asarray(self._load(index))
        if arr.shape != self.input_shape:
            raise ValueError(f"{self.source}: frame {index} has shape {arr.shape}, expected {self.input_shape}")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{self.source}: frame {index} is {arr.dtype}, expected float32")
        return arr.astype(np.float32, copy=False)

    def validate(self) -> None:
        """Read every frame that calibration will use; a bad one is a ValueError naming it.

        Checks shape, dtype and finiteness up front: inside TensorRT's callbacks
        the same error would be swallowed.
        """
        for i in range(len(self) * self.batch_size):
            if not np.isfinite(self.frame(i)).all():
                raise ValueError(f"{self.source}: frame {i} contains NaN or infinite values")

    def __len__(self) -> int:
        return self.n_frames // self.batch_size

    def batch(self, index: int) -> np.ndarray:
        """Batch ``index`` (batch_size, C, H, W) float32, C-contiguous."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        start = index * self.batch_size
        return np.ascontiguousarray(np.stack([self.frame(i) for i in range(start, start + self.batch_size)]))

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.batch(i) for i in range(len(self)))

    def next_batch(self) -> np.ndarray | None:
        """The next batch, or None once all full batches were served (see :meth:`reset`)."""
        if self._next >= len(self):
            return None
        self._next += 1
        return self.batch(self._next - 1)

    def stack(self, limit: int | None = 512) -> np.ndarray:
        """The first ``limit`` frames (all with None) as one (N, C, H, W) float32 array."""
        n = self.n_frames if limit is None else min(limit, self.n_frames)
        return np.ascontiguousarray(np.stack([self.frame(i) for i in range(n)]))

    def reset(self) -> None:
        self._next = 0

    def digest(self) -> str:
        """sha256 over the shape, batch size and every frame used: identifies a calibration set."""
        h = hashlib.sha256(json.dumps([self.input_shape, self.batch_size, len(self)]).encode())
        for i in range(len(self) * self.batch_size):
            h.update(self.frame(i).tobytes())
        return h.hexdigest()


def _sidecar(cache_file: Path) -> Path:
    return cache_file.with_name(cache_file.name + ".json")


def cache_key(frames_digest: str, onnx_sha256: str, tensorrt_version: str) -> dict:
    """What a calibration cache depends on: the frames, the graph and the TensorRT that measured them."""
    return {"frames_digest": frames_digest, "onnx_sha256": onnx_sha256, "tensorrt_version": tensorrt_version}


def read_cache(cache_file: str | os.PathLike, key: dict) -> bytes | None:
    """The cached calibration bytes if ``cache_file`` exists and was made under ``key`` (see cache_key), else None."""
    cache_file = Path(cache_file)
    try:
        meta = json.loads(_sidecar(cache_file).read_text())
        data = cache_file.read_bytes()
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if meta.get("key") != key or meta.get("bytes") != len(data):
        return None
    return data


def write_cache(cache_file: str | os.PathLike, data: bytes, key: dict) -> None:
    """Store calibration bytes and their sidecar (key, size), each written atomically."""
    cache_file = Path(cache_file)
    write_bytes_atomic(cache_file, bytes(data))
    write_text_atomic(_sidecar(cache_file), json.dumps({"key": key, "bytes": len(data)}))


class CallbackErrors:
    """Exceptions raised inside callbacks that a C++ caller would swallow, kept to re-raise later.

    ``call(name, fn, *args, fallback=None)`` runs fn; on an exception it records
    it (the first one wins) and returns ``fallback``, which tells TensorRT to stop.
    ``raise_first()`` re-raises the first recorded error as a RuntimeError naming the callback.
    """

    def __init__(self):
        self.errors: list[tuple[str, BaseException]] = []

    def call(self, name: str, fn, *args, fallback=None):
        try:
            return fn(*args)
        except Exception as exc:  # anything: TensorRT would hide it
            self.errors.append((name, exc))
            return fallback

    def raise_first(self) -> None:
        if self.errors:
            name, exc = self.errors[0]
            raise RuntimeError(f"INT8 calibration failed in {name}: {exc}") from exc


def tensorrt_available() -> bool:
    """Whether the TensorRT Python package imports here."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def make_int8_calibrator(frames: CalibrationFrames, cache_file: str | os.PathLike, onnx_sha256: str):
    """A TensorRT ``IInt8EntropyCalibrator2`` serving ``frames`` and keeping its cache at ``cache_file``.

    onnx_sha256: digest of the graph being calibrated (part of the cache key with
    the frames and the TensorRT version). The calibrator's ``errors``
    (CallbackErrors) hold what its callbacks raised: call ``errors.raise_first()``
    after the build. Needs TensorRT and a GPU (device memory through
    edge_runtime.engines.cuda, no torch). Raises RuntimeError when TensorRT is
    missing or has no INT8 calibrators.
    """
    try:
        import tensorrt as trt
    except ImportError:
        raise RuntimeError("INT8 calibration needs TensorRT (the `tensorrt` Python package), "
                           "which does not import here") from None
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise RuntimeError(f"TensorRT {trt.__version__} has no IInt8EntropyCalibrator2 "
                           "(implicit INT8 calibration was removed); use explicit quantization")
    return _calibrator_class(trt)(frames, Path(cache_file), onnx_sha256)


@cache
def _calibrator_class(trt):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds batches of a line's frames to TensorRT; reuses a cache made under the same key."""

        def __init__(self, frames: CalibrationFrames, cache_file: Path, onnx_sha256: str):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.frames, self.cache_file, self.onnx_sha256 = frames, cache_file, onnx_sha256
            self.errors = CallbackErrors()
            self._buffer = None
            self._key = None
            frames.reset()

        def key(self) -> dict:
            if self._key is None:
                self._key = cache_key(self.frames.digest(), self.onnx_sha256, trt.__version__)
            return self._key

        def get_batch_size(self) -> int:
            return self.frames.batch_size

        def get_batch(self, names):
            return self.errors.call("get_batch", self._batch, names)

        def _batch(self, names):
            if len(names) != 1:
                raise ValueError(f"INT8 calibration feeds one input tensor, the engine has {list(names)}")
            batch = self.frames.next_batch()
            if batch is None:
                return None
            if self._buffer is None:
                cuda.use_device(0)
                self._buffer = cuda.DeviceBuffer(batch.nbytes)
            self._buffer.upload(batch)
            return [self._buffer.ptr]

        def read_calibration_cache(self):
            return self.errors.call("read_calibration_cache", lambda: read_cache(self.cache_file, self.key()))

        def write_calibration_cache(self, cache) -> None:
            self.errors.call("write_calibration_cache", lambda: write_cache(self.cache_file, bytes(cache), self.key()))

    return EntropyCalibrator
