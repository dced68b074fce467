"""The few CUDA driver calls native TensorRT engines need, through ctypes.

No pycuda or CuPy: the driver library (``libcuda.so.1``) exists wherever a GPU
does, Jetson included, and TensorRT's runtime shares its primary context.
"""
from __future__ import annotations

import ctypes
import functools

import numpy as np

_COMPUTE_CAPABILITY_MAJOR = 75
_COMPUTE_CAPABILITY_MINOR = 76


class CudaError(RuntimeError):
    """A CUDA driver call failed (or there is no driver)."""


@functools.lru_cache(maxsize=1)
def _driver() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        raise CudaError(f"no CUDA driver (libcuda.so.1): {e}") from None
    _check(lib, lib.cuInit(0), "cuInit")
    return lib


def _check(lib: ctypes.CDLL, status: int, call: str) -> None:
    if status != 0:
        msg = ctypes.c_char_p()
        lib.cuGetErrorString(status, ctypes.byref(msg))
        raise CudaError(f"{call} failed: {msg.value.decode() if msg.value else status}")


def gpu_info(device: int = 0) -> dict | None:
    """``{"gpu_name": str, "compute_capability": "major.minor"}`` of a GPU, or None without one."""
    try:
        lib = _driver()
        dev = ctypes.c_int()
        _check(lib, lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
    except CudaError:
        return None
    name = ctypes.create_string_buffer(256)
    _check(lib, lib.cuDeviceGetName(name, 256, dev), "cuDeviceGetName")
    major, minor = ctypes.c_int(), ctypes.c_int()
    _check(lib, lib.cuDeviceGetAttribute(ctypes.byref(major), _COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute")
    _check(lib, lib.cuDeviceGetAttribute(ctypes.byref(minor), _COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute")
    return {"gpu_name": name.value.decode(), "compute_capability": f"{major.value}.{minor.value}"}


@functools.lru_cache(maxsize=None)
def _context(device: int) -> ctypes.c_void_p:
    """Make the device's primary context (the one the CUDA runtime uses) current."""
    lib = _driver()
    dev = ctypes.c_int()
    _check(lib, lib.cuDeviceGet(ctypes.byref(dev), device), "cuDeviceGet")
    ctx = ctypes.c_void_p()
    _check(lib, lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    return ctx


def use_device(device: int = 0) -> None:
    """Bind the calling thread to ``device``'s primary context."""
    lib = _driver()
    _check(lib, lib.cuCtxSetCurrent(_context(device)), "cuCtxSetCurrent")


class DeviceBuffer:
    """Device memory of ``nbytes``; freed with ``free()`` or when collected."""

    def __init__(self, nbytes: int):
        self._lib = _driver()
        self.nbytes = int(nbytes)
        self._ptr = ctypes.c_uint64()
        _check(self._lib, self._lib.cuMemAlloc_v2(ctypes.byref(self._ptr), ctypes.c_size_t(max(self.nbytes, 1))),
               "cuMemAlloc")

    @property
    def ptr(self) -> int:
        return int(self._ptr.value)

    def upload(self, array: np.ndarray) -> None:
        """Copy a C-contiguous host array (at most nbytes) to the device."""
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise ValueError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte device buffer")
        _check(self._lib, self._lib.cuMemcpyHtoD_v2(self._ptr, array.ctypes.data_as(ctypes.c_void_p),
                                                     ctypes.c_size_t(array.nbytes)), "cuMemcpyHtoD")

    def download(self, out: np.ndarray) -> np.ndarray:
        """Copy the first out.nbytes bytes into the C-contiguous host array ``out``."""
        if not out.flags.c_contiguous or out.nbytes > self.nbytes:
            raise ValueError("download target must be C-contiguous and fit the buffer")
        _check(self._lib, self._lib.cuMemcpyDtoH_v2(out.ctypes.data_as(ctypes.c_void_p), self._ptr,
                                                     ctypes.c_size_t(out.nbytes)), "cuMemcpyDtoH")
        return out

    def free(self) -> None:
        if self._ptr.value:
            self._lib.cuMemFree_v2(self._ptr)
            self._ptr = ctypes.c_uint64()

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown: the driver may already be gone
            pass


class Stream:
    """A CUDA stream (``handle`` for TensorRT's execute_async_v3)."""

    def __init__(self):
        self._lib = _driver()
        self._stream = ctypes.c_void_p()
        _check(self._lib, self._lib.cuStreamCreate(ctypes.byref(self._stream), 0), "cuStreamCreate")

    @property
    def handle(self) -> int:
        return int(self._stream.value or 0)

    def synchronize(self) -> None:
        _check(self._lib, self._lib.cuStreamSynchronize(self._stream), "cuStreamSynchronize")

    def destroy(self) -> None:
        if self._stream.value:
            self._lib.cuStreamDestroy_v2(self._stream)
            self._stream = ctypes.c_void_p()

    def __del__(self):
        try:
            self.destroy()
        except Exception:  # interpreter shutdown: the driver may already be gone
            pass
