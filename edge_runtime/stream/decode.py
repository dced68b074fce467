"""Frame payloads to arrays: PNG/JPEG through OpenCV, raw little-endian arrays.

``decode_payload`` returns what the inspection expects, or raises
``ProtocolError`` naming what is wrong with the payload against its header.
Decoding is bounded before it starts: a PNG's or JPEG's size, channels and
bit depth are read from its header bytes (``image_header``) and must match the
frame header (whose pixel count ``parse_frame`` bounds); a 3 MB PNG that
inflates to 30000 x 30000 is refused without allocating its pixels.
"""
from __future__ import annotations

import struct

import cv2
import numpy as np

from edge_runtime.stream.protocol import FrameHeader, ProtocolError

# What each sensor may send: the dtype its array must have and its channel counts.
_SENSOR_DTYPE = {"rgb": "uint8", "xyz": "float32"}
_SENSOR_CHANNELS = {"rgb": (1, 3), "xyz": (3,)}


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels OpenCV decodes it to (IMREAD_UNCHANGED; a palette becomes BGR)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}
# JPEG start-of-frame markers (SOF0..SOF15 but DHT, JPG and DAC, which share the range)
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def image_header(encoding: str, payload: bytes) -> tuple[int, int, int, int]:
    """(height, width, channels, bits per sample) of a PNG or JPEG payload, read from
    its header bytes only. Raises ValueError when the header is missing or malformed."""
    if encoding == "png":
        if payload[:8] != _PNG_SIGNATURE or payload[12:16] != b"IHDR" or len(payload) < 29:
            raise ValueError("no PNG signature and IHDR chunk at its start")
        width, height, depth, colour = struct.unpack(">IIBB", payload[16:26])
        if colour not in _PNG_CHANNELS:
            raise ValueError(f"PNG colour type {colour} is not defined")
        return height, width, _PNG_CHANNELS[colour], depth
    if payload[:2] != b"\xff\xd8":
        raise ValueError("no JPEG start-of-image marker at its start")
    at = 2
    while at + 4 <= len(payload):
        if payload[at] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {at}")
        marker = payload[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", payload[at + 2:at + 4])
        if marker in _JPEG_SOF:
            if at + 10 > len(payload):
                break
            depth, height, width, components = struct.unpack(">BHHB", payload[at + 4:at + 10])
            return height, width, components, depth
        if marker == 0xDA:  # scan data before any frame header
            break
        at += 2 + length
    raise ValueError("no JPEG frame header (SOF) before the image data")


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
        try:
            height, width, channels, depth = image_header(header.encoding, payload)
        except ValueError as exc:
            raise fail("decode", f"payload ({len(payload)} bytes) is not a readable {header.encoding} image: {exc}")
        if (height, width, channels) != header.shape:
            raise fail("shape", f"{header.encoding} header says {[height, width, channels]}, "
                       f"frame header says {list(header.shape)} (not decoded)")
        if depth != 8:
            raise fail("dtype", f"{header.encoding} has {depth}-bit samples, header says uint8 (not decoded)")
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
