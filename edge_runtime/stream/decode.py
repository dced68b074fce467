"""Frame payloads to arrays: PNG/JPEG through OpenCV, raw little-endian arrays.

``decode_payload`` returns what the inspection expects, or raises
``ProtocolError`` naming what is wrong with the payload against its header.
"""
from __future__ import annotations

import cv2
import numpy as np

from edge_runtime.stream.protocol import FrameHeader, ProtocolError

# What each sensor may send: the dtype its array must have and its channel counts.
_SENSOR_DTYPE = {"rgb": "uint8", "xyz": "float32"}
_SENSOR_CHANNELS = {"rgb": (1, 3), "xyz": (3,)}


def decode_payload(header: FrameHeader, payload: bytes) -> np.ndarray:
    """The frame's array.

    rgb -> (H, W, 3) uint8 in RGB order (mono frames are repeated to 3 channels);
    xyz -> (H, W, 3) float32 organized cloud, zeros where nothing was measured.
    Raises ProtocolError with code "dtype", "shape", "truncated", "size",
    "encoding", "decode" or "nonfinite".
    """

    def fail(code: str, message: str) -> ProtocolError:
        return ProtocolError(code, f"{header.sensor} frame of part {header.part}: {message}",
                             header.line, header.part, header.seq)

    want = _SENSOR_DTYPE[header.sensor]
    if header.dtype != want:
        raise fail("dtype", f"dtype must be {want}, got {header.dtype}")
    if header.shape[2] not in _SENSOR_CHANNELS[header.sensor]:
        raise fail("shape", f"channels must be one of {_SENSOR_CHANNELS[header.sensor]}, got shape {list(header.shape)}")
    if header.encoding == "raw":
        expected = header.expected_bytes
        if len(payload) < expected:
            raise fail("truncated", f"raw payload has {len(payload)} bytes, shape {list(header.shape)} "
                       f"of {header.dtype} needs {expected}")
        if len(payload) > expected:
            raise fail("size", f"raw payload has {len(payload)} bytes, more than the {expected} "
                       f"of shape {list(header.shape)} {header.dtype}")
        array = np.frombuffer(payload, dtype=np.dtype(header.dtype).newbyteorder("<")).reshape(header.shape)
        array = array.astype(header.dtype, copy=False)
    else:
        if header.sensor != "rgb":
            raise fail("encoding", f"{header.encoding} is for camera frames; clouds are sent raw")
        array = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        if array is None:
            raise fail("decode", f"payload ({len(payload)} bytes) is not a readable {header.encoding} image")
        if array.dtype != np.uint8:
            raise fail("dtype", f"{header.encoding} decodes to {array.dtype}, header says uint8")
        if array.ndim == 2:
            array = array[:, :, None]
        if array.shape != header.shape:
            raise fail("shape", f"{header.encoding} decodes to {list(array.shape)}, header says {list(header.shape)}")
        if array.shape[2] == 3:
            array = array[:, :, ::-1]  # OpenCV decodes to BGR
    if header.sensor == "rgb":
        if array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        return np.ascontiguousarray(array)
    if not np.isfinite(array).all():
        raise fail("nonfinite", "cloud holds NaN or inf; mark missing points with exact zeros")
    return np.array(array, copy=True)  # own, writable memory independent of the message buffer
