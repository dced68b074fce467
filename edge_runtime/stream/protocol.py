"""Wire protocol version 1: the one place where messages are built and checked.

Sensor frame ``[header, payload]``, verdict ``[topic, header, map?]``, alert
``[topic, header]`` and control request/reply, all msgpack (see ARCHITECTURE.md, "Wire protocol").
Everything that arrives from the network passes through a ``parse_*`` function
here, which either returns a validated value or raises ``ProtocolError`` with a
code and a message naming the problem.
"""
from __future__ import annotations

import math
import re
import time
import unicodedata
from dataclasses import dataclass, field, fields

import msgpack
import numpy as np

VERSION = 1
SENSORS = {"rgb": "2d", "xyz": "3d"}  # sensor -> modality it feeds
ENCODINGS = ("png", "jpeg", "raw")
VERDICTS = ("ok", "ng", "inconclusive", "error")
# Each control command and the fields it takes (other fields are refused); required ones first.
COMMANDS = {
    "status": ((), ("line",)),
    "verdicts": (("line",), ("last", "parts")),
    "audit": ((), ("last",)),
    "switch": (("line", "profile"), ()),
    "reset": (("line",), ()),
    "set_threshold": (("line", "value"), ("source",)),
    "clear_threshold": (("line",), ()),
    "snapshot": ((), ("line",)),
    "shutdown": ((), ()),
    "ack_alert": (("line", "id"), ()),
    "label": (("line", "part", "label"), ()),
    "accept_shift": (("line",), ()),
    "pin": (("line", "part"), ()),
}
MAX_REQUEST_BYTES = 64 * 1024  # a control request is a few fields; bigger ones are cut off by ZeroMQ
ALERT_KINDS = ("ng_rate", "recurring_defect", "drift")
LABELS = ("good", "defect")

# Line names travel in ZeroMQ topics and file names: keep them plain.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Part ids are the sender's: any text, but bounded and printable (they go into logs).
MAX_PART_CHARS = 128
_SHOWN_PART_CHARS = 1024  # a longer invalid id is echoed cut to this, with "..."
# A threshold's source travels in every verdict: a short label.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}$")
_MAX_SIDE = 16384


class ProtocolError(ValueError):
    """A message that breaks protocol v1.

    code: short machine-readable reason ("not_msgpack", "bad_header", "version",
    "truncated", "dtype", "shape", ...); line / part / seq: what the message
    identified before it failed, None where unknown (then no verdict can name it).
    """

    def __init__(self, code: str, message: str, line: str | None = None,
                 part: str | None = None, seq: int | None = None):
        super().__init__(message)
        self.code = code
        self.line = line
        self.part = part
        self.seq = seq

    @property
    def identified(self) -> bool:
        """True when the message named a line and a part, so a verdict can answer it."""
        return self.line is not None and self.part is not None


@dataclass(frozen=True)
class FrameHeader:
    """The header of one sensor frame (protocol v1)."""

    line: str
    part: str
    seq: int
    sensor: str
    ts: float
    encoding: str
    dtype: str
    shape: tuple[int, int, int]
    v: int = VERSION

    def to_wire(self) -> dict:
        return {"v": self.v, "line": self.line, "part": self.part, "seq": self.seq,
                "sensor": self.sensor, "ts": self.ts, "encoding": self.encoding,
                "dtype": self.dtype, "shape": list(self.shape)}

    @property
    def expected_bytes(self) -> int:
        """Payload size of a raw frame with this dtype and shape."""
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def _unpack(raw: bytes, what: str, lenient: bool = False) -> object:
    """msgpack -> object; ``lenient`` keeps strings that are not UTF-8 (surrogate-escaped),
    so a frame header with such a part id still names its line and gets a verdict."""
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=False,
                               unicode_errors="surrogateescape" if lenient else "strict")
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError("not_msgpack", f"{what} is not msgpack ({type(exc).__name__}: {exc})") from None


def _name(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) and NAME.match(value) else None


def part_id_problem(part: str) -> str | None:
    """Why ``part`` (a decoded str) is not a valid part id, or None: 1 to 128
    characters of valid UTF-8, no control characters."""
    if not part:
        return "part id is empty"
    try:
        part.encode("utf-8")
    except UnicodeEncodeError:
        return "part id is not valid UTF-8"
    if len(part) > MAX_PART_CHARS:
        return f"part id has {len(part)} characters, more than {MAX_PART_CHARS}"
    if any(unicodedata.category(ch) == "Cc" for ch in part):
        return "part id holds control characters"
    return None


def _part(obj: dict) -> tuple[str | None, str | None]:
    """(part id as a verdict can carry it, what is wrong with it or None). Bytes that are
    not UTF-8 are shown backslash-escaped, so the error verdict still names them (an id over
    1024 characters is cut there, with "...")."""
    value = obj.get("part")
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if not isinstance(value, str):
        return None, None
    problem = part_id_problem(value)
    shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if len(shown) > _SHOWN_PART_CHARS:
        shown = shown[:_SHOWN_PART_CHARS] + "..."
    return (shown or None), problem


def _shown(value: object) -> str:
    """A header value for an error message: short, and printable even when not UTF-8."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_frame(message: list[bytes], max_pixels: int | None = None) -> tuple[FrameHeader, bytes]:
    """Validate a received sensor frame ``[header, payload]``.

    max_pixels: a frame whose shape has more pixels (h x w) is refused ("shape").
    Returns the header and the untouched payload bytes; raises ProtocolError.
    Payload contents (image decoding, sizes of raw arrays) are checked by
    ``edge_runtime.stream.decode``.
    """
    if len(message) != 2:
        raise ProtocolError("bad_message", f"a sensor frame has 2 parts [header, payload], got {len(message)}")
    obj = _unpack(message[0], "frame header", lenient=True)
    if not isinstance(obj, dict):
        raise ProtocolError("bad_header", f"frame header must be a map, got {type(obj).__name__}")
    line = _name(obj, "line")
    part, problem = _part(obj)
    seq = obj.get("seq") if isinstance(obj.get("seq"), int) and not isinstance(obj.get("seq"), bool) else None
    if line is None or part is None:
        raise ProtocolError("bad_header", "frame header needs a 'line' name (letters, digits, _.:-, at most 128) "
                            f"and a 'part' string, got line={_shown(obj.get('line'))} "
                            f"part={_shown(obj.get('part'))}", line, part, seq)
    if problem is not None:
        raise ProtocolError("bad_part", f"frame of line {line}: {problem}: {part[:160]!r}", line, part, seq)

    def fail(code: str, message: str) -> ProtocolError:
        return ProtocolError(code, f"frame of part {part} (line {line}): {message}", line, part, seq)

    if obj.get("v") != VERSION:
        raise fail("version", f"protocol version {obj.get('v')!r} is not supported (this station speaks v{VERSION})")
    missing = [k for k in ("seq", "sensor", "ts", "encoding", "dtype", "shape") if k not in obj]
    if missing:
        raise fail("bad_header", "frame header misses " + ", ".join(missing))
    if seq is None or seq < 0:
        raise fail("bad_header", f"seq must be a non-negative integer, got {obj['seq']!r}")
    sensor = obj["sensor"]
    if sensor not in SENSORS:
        raise fail("bad_header", f"sensor must be one of {sorted(SENSORS)}, got {sensor!r}")
    ts = obj["ts"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts):
        raise fail("bad_header", f"ts must be a finite number (seconds), got {ts!r}")
    encoding = obj["encoding"]
    if encoding not in ENCODINGS:
        raise fail("bad_header", f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    dtype = obj["dtype"]
    try:
        # Raw payloads are little-endian by definition: a big-endian dtype is a mistake.
        dtype = np.dtype(dtype).name if isinstance(dtype, str) and np.dtype(dtype).byteorder != ">" else None
    except (TypeError, ValueError):
        dtype = None
    if dtype is None:
        raise fail("dtype", f"dtype {obj['dtype']!r} is not a numpy dtype name")
    shape = obj["shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape)
            or not (0 < shape[0] <= _MAX_SIDE and 0 < shape[1] <= _MAX_SIDE and shape[2] in (1, 3))):
        raise fail("shape", f"shape must be [h, w, c] with 0 < h, w <= {_MAX_SIDE} and c in (1, 3), got {shape!r}")
    if max_pixels is not None and shape[0] * shape[1] > max_pixels:
        raise fail("shape", f"{shape[0]} x {shape[1]} = {shape[0] * shape[1]} pixels, more than the station's "
                   f"max_frame_pixels {max_pixels} (not decoded)")
    header = FrameHeader(line, part, seq, sensor, float(ts), encoding, dtype, (shape[0], shape[1], shape[2]))
    return header, bytes(message[1])


def pack_frame(header: FrameHeader, payload: bytes) -> list[bytes]:
    """The multipart message of one sensor frame."""
    return [msgpack.packb(header.to_wire()), payload]


def encode_frame(line: str, part: str, seq: int, sensor: str, array: np.ndarray,
                 encoding: str = "raw", ts: float | None = None, jpeg_quality: int = 95) -> list[bytes]:
    """Build the message a sensor sends for ``array``.

    rgb: (H, W, 3) uint8 in RGB order (or (H, W) / (H, W, 1) mono), any encoding.
    xyz: (H, W, 3) float32 organized cloud, encoding "raw".
    """
    import cv2

    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"frame array must be (H, W, C), got shape {arr.shape}")
    if encoding == "raw":
        payload = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    else:
        if arr.dtype != np.uint8:
            raise ValueError(f"{encoding} frames must be uint8, got {arr.dtype}")
        bgr = arr[:, :, ::-1] if arr.shape[2] == 3 else arr[:, :, 0]
        ext, params = (".png", []) if encoding == "png" else (".jpg", [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr), params)
        if not ok:
            raise ValueError(f"OpenCV could not encode a {arr.shape} frame as {encoding}")
        payload = buf.tobytes()
    header = FrameHeader(line, part, int(seq), sensor, time.time() if ts is None else float(ts),
                         encoding, arr.dtype.name, tuple(int(s) for s in arr.shape))
    return pack_frame(header, payload)


# --- verdicts -------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """The header of one verdict (protocol v1), checked when it is built.

    score / threshold: None where the part was not scored. window: the references
    it was scored against. latency_ms: stage -> ms ("total" is first frame to
    verdict). regions: [x0, y0, x1, y1, peak] boxes on the map. error: {"code",
    "message"}, required for an ``error`` verdict. vseq: the line's verdict
    counter, set when the verdict is logged. map_scale / map_shape: present when
    the map PNG travels with it (pixel p = vmin + p / 255 (vmax - vmin)).
    reference: whether the part joined the line's references.
    """

    line: str
    part: str
    seq: int
    verdict: str
    score: float | None = None
    threshold: float | None = None
    threshold_source: str | None = None
    modalities: tuple[str, ...] = ()
    window: int = 0
    latency_ms: dict = field(default_factory=dict)
    model: str | None = None
    profile: str | None = None
    regions: tuple[tuple[float, ...], ...] = ()
    ts: float = field(default_factory=time.time)
    error: dict | None = None
    vseq: int | None = None
    map_scale: tuple[float, float] | None = None
    map_shape: tuple[int, int] | None = None
    reference: bool = False
    v: int = VERSION

    def __post_init__(self) -> None:
        def bad(message: str) -> ProtocolError:
            return ProtocolError("bad_verdict", f"verdict of part {self.part!r} (line {self.line!r}): {message}")

        if not isinstance(self.reference, bool):
            raise bad(f"reference must be true or false, got {self.reference!r}")

        if self.v != VERSION:
            raise ProtocolError("version", f"verdict protocol version {self.v!r} is not v{VERSION}")
        if not all(isinstance(n, str) and n for n in (self.line, self.part)):
            raise bad("line and part must be non-empty strings")
        if self.verdict not in VERDICTS:
            raise bad(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if not _is_int(self.seq) or not _is_int(self.window) or self.window < 0:
            raise bad(f"seq and window must be integers, got {self.seq!r}, {self.window!r}")
        for name in ("score", "threshold", "ts"):
            value = getattr(self, name)
            if value is not None and not _is_number(value):
                raise bad(f"{name} must be a finite number or absent, got {value!r}")
        if not isinstance(self.latency_ms, dict) or not all(
                isinstance(k, str) and _is_number(v) for k, v in self.latency_ms.items()):
            raise bad(f"latency_ms must map stage names to ms, got {self.latency_ms!r}")
        if self.verdict == "error" and not isinstance(self.error, dict):
            raise bad("an error verdict needs an 'error' map with code and message")
        if self.error is not None and not (isinstance(self.error, dict)
                                           and isinstance(self.error.get("code"), str)
                                           and isinstance(self.error.get("message"), str)):
            raise bad(f"error must be a map with 'code' and 'message' strings, got {self.error!r}")
        if self.vseq is not None and not _is_int(self.vseq):
            raise bad(f"vseq must be an integer, got {self.vseq!r}")
        if (self.map_scale is None) != (self.map_shape is None):
            raise bad("map_scale and map_shape travel together")

    def to_wire(self) -> dict:
        """The msgpack-ready map; optional fields only when set."""
        out = {"v": self.v, "line": self.line, "part": self.part, "seq": self.seq, "verdict": self.verdict,
               "score": self.score, "threshold": self.threshold, "threshold_source": self.threshold_source,
               "modalities": list(self.modalities), "window": self.window, "latency_ms": dict(self.latency_ms),
               "model": self.model, "profile": self.profile, "regions": [list(r) for r in self.regions],
               "ts": self.ts, "reference": self.reference}
        for name in ("error", "vseq"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.map_scale is not None:
            out["map_scale"], out["map_shape"] = list(self.map_scale), list(self.map_shape)
        return out

    @classmethod
    def from_wire(cls, obj: object) -> "Verdict":
        """A received header map, checked; raises ProtocolError."""
        if not isinstance(obj, dict):
            raise ProtocolError("bad_verdict", f"verdict header must be a map, got {type(obj).__name__}")
        missing = [k for k in _VERDICT_KEYS if k not in obj]
        if missing:
            raise ProtocolError("bad_verdict", "verdict header misses " + ", ".join(missing))
        unknown = sorted(set(obj) - _VERDICT_FIELDS)
        if unknown:
            raise ProtocolError("bad_verdict", "verdict header has unknown fields " + ", ".join(unknown))
        try:
            values = {**obj, "modalities": tuple(obj["modalities"]),
                      "regions": tuple(tuple(r) for r in obj["regions"])}
            for name in ("map_scale", "map_shape"):
                if obj.get(name) is not None:
                    values[name] = tuple(obj[name])
        except TypeError as exc:
            raise ProtocolError("bad_verdict", f"verdict header: {exc}") from None
        return cls(**values)


_VERDICT_KEYS = ("v", "line", "part", "seq", "verdict", "score", "threshold", "threshold_source",
                 "modalities", "window", "latency_ms", "model", "profile", "regions")
_VERDICT_FIELDS = {f.name for f in fields(Verdict)}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def verdict_topic(line: str) -> bytes:
    return b"verdict." + line.encode()


def pack_verdict(verdict: Verdict, map_png: bytes | None = None) -> list[bytes]:
    """``[topic, header, map?]`` for the PUB socket (and the reject gate)."""
    parts = [verdict_topic(verdict.line), msgpack.packb(verdict.to_wire(), use_bin_type=True)]
    if map_png is not None:
        parts.append(map_png)
    return parts


# --- alerts ---------------------------------------------------------------

@dataclass(frozen=True)
class AlertMessage:
    """The header of one alert (protocol v1): what a line's verdicts say about the line.

    kind: one of ALERT_KINDS; parts: the parts that raised it; id: unique per
    line, what ``ack_alert`` names.
    """

    line: str
    id: str
    kind: str
    parts: tuple[str, ...]
    message: str
    ts: float
    v: int = VERSION

    def __post_init__(self) -> None:
        if self.v != VERSION:
            raise ProtocolError("version", f"alert protocol version {self.v!r} is not v{VERSION}")
        if not all(isinstance(n, str) and n for n in (self.line, self.id, self.message)):
            raise ProtocolError("bad_alert", "an alert needs non-empty line, id and message strings")
        if self.kind not in ALERT_KINDS:
            raise ProtocolError("bad_alert", f"alert kind must be one of {ALERT_KINDS}, got {self.kind!r}")
        if not all(isinstance(p, str) for p in self.parts) or not _is_number(self.ts):
            raise ProtocolError("bad_alert", "alert parts must be part ids and ts a time")

    def to_wire(self) -> dict:
        return {"v": self.v, "line": self.line, "id": self.id, "kind": self.kind, "parts": list(self.parts),
                "message": self.message, "ts": self.ts}

    @classmethod
    def from_wire(cls, obj: object) -> "AlertMessage":
        keys = {f.name for f in fields(cls)}
        if not isinstance(obj, dict) or set(obj) != keys:
            raise ProtocolError("bad_alert", f"an alert header is a map with exactly {', '.join(sorted(keys))}")
        if not isinstance(obj["parts"], (list, tuple)):
            raise ProtocolError("bad_alert", f"alert parts must be a list, got {obj['parts']!r}")
        return cls(**{**obj, "parts": tuple(obj["parts"])})


def alert_topic(line: str) -> bytes:
    return b"alert." + line.encode()


def pack_alert(alert: AlertMessage) -> list[bytes]:
    """``[topic, header]`` for the PUB socket."""
    return [alert_topic(alert.line), msgpack.packb(alert.to_wire(), use_bin_type=True)]


def parse_alert(message: list[bytes]) -> AlertMessage:
    """Validate a received alert ``[topic, header]``."""
    if len(message) != 2:
        raise ProtocolError("bad_message", f"an alert has 2 parts, got {len(message)}")
    alert = AlertMessage.from_wire(_unpack(message[1], "alert header"))
    if message[0] != alert_topic(alert.line):
        raise ProtocolError("bad_alert", f"topic {message[0]!r} does not match line {alert.line!r}")
    return alert


def check_verdict_header(header: dict) -> dict:
    """Raise ProtocolError unless ``header`` is a v1 verdict header map; return it."""
    Verdict.from_wire(header)
    return header


def parse_verdict(message: list[bytes]) -> tuple[dict, bytes | None]:
    """Validate a received verdict ``[topic, header, map?]``: (header map, map PNG or None)."""
    if len(message) not in (2, 3):
        raise ProtocolError("bad_message", f"a verdict has 2 or 3 parts, got {len(message)}")
    header = check_verdict_header(_unpack(message[1], "verdict header"))
    if message[0] != verdict_topic(header["line"]):
        raise ProtocolError("bad_verdict", f"topic {message[0]!r} does not match line {header['line']!r}")
    return header, (bytes(message[2]) if len(message) == 3 else None)


def encode_map(anomaly_map: np.ndarray) -> tuple[bytes, list[float]]:
    """(H, W) float map -> (8-bit grayscale PNG, [vmin, vmax]).

    Pixel p stands for vmin + p / 255 * (vmax - vmin); a flat map encodes as zeros.
    """
    import cv2

    m = np.asarray(anomaly_map, dtype=np.float32)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"anomaly map must be a non-empty (H, W) array, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("anomaly map holds NaN or inf")
    vmin, vmax = float(m.min()), float(m.max())
    scaled = np.zeros(m.shape, np.uint8) if vmax <= vmin else np.rint((m - vmin) / (vmax - vmin) * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", scaled)
    if not ok:
        raise ValueError("OpenCV could not encode the anomaly map as PNG")
    return buf.tobytes(), [vmin, vmax]


def decode_map(png: bytes, scale: list[float]) -> np.ndarray:
    """Inverse of ``encode_map`` (up to 8-bit quantization): (H, W) float32."""
    import cv2

    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError("verdict map is not a readable PNG")
    vmin, vmax = scale
    return (vmin + img.astype(np.float32) / 255.0 * (vmax - vmin)).astype(np.float32)


# --- control --------------------------------------------------------------

def parse_request(raw: bytes) -> dict:
    """Validate a control request; returns the map with a known ``cmd``."""
    obj = _unpack(raw, "control request")
    if not isinstance(obj, dict):
        raise ProtocolError("bad_request", f"a control request must be a map, got {type(obj).__name__}")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise ProtocolError("unknown_command", f"unknown command {str(cmd)[:64]!r}; known: {', '.join(COMMANDS)}")
    required, optional = COMMANDS[cmd]
    missing = [k for k in required if k not in obj]
    if missing:
        raise ProtocolError("bad_request", f"{cmd} needs " + ", ".join(missing))
    unknown = sorted(str(k)[:32] for k in set(obj) - {"cmd", *required, *optional})
    if unknown:
        raise ProtocolError("bad_request", f"{cmd} takes {', '.join((*required, *optional)) or 'no fields'}; "
                                           f"unknown: {', '.join(unknown)}")
    if "line" in obj and obj["line"] is not None and _name(obj, "line") is None:
        raise ProtocolError("bad_request", f"line must be a plain name, got {str(obj['line'])[:64]!r}")
    if cmd == "set_threshold":
        value = obj["value"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ProtocolError("bad_request", f"threshold value must be a finite number, got {str(value)[:64]!r}")
        source = obj.get("source", "manual")
        if not isinstance(source, str) or not LABEL.match(source):
            raise ProtocolError("bad_request", "source must be a short label (letters, digits, _.:-, at most 32), "
                                               f"got {str(source)[:40]!r}")
    if cmd in ("label", "pin") and _name(obj, "part") is None:
        raise ProtocolError("bad_request", f"part must be a part id, got {str(obj['part'])[:64]!r}")
    if cmd == "label" and obj["label"] not in LABELS:
        raise ProtocolError("bad_request", f"label must be one of {', '.join(LABELS)}, got {str(obj['label'])[:32]!r}")
    if cmd == "ack_alert" and _name(obj, "id") is None:
        raise ProtocolError("bad_request", f"id must be an alert id, got {str(obj['id'])[:64]!r}")
    if cmd == "switch" and not isinstance(obj["profile"], str):
        raise ProtocolError("bad_request", f"profile must be a profile name, got {type(obj['profile']).__name__}")
    return obj


def pack(obj: dict) -> bytes:
    """msgpack of a control request or reply."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack_reply(raw: bytes) -> dict:
    obj = _unpack(raw, "control reply")
    if not isinstance(obj, dict) or "ok" not in obj:
        raise ProtocolError("bad_reply", "a control reply must be a map with 'ok'")
    return obj
