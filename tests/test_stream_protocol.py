"""Wire protocol v1: frames, payload decoding, verdicts, control requests, map PNGs."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from edge_runtime.stream.decode import decode_payload
from edge_runtime.stream.protocol import (ProtocolError, check_verdict_header, decode_map, encode_frame, encode_map, pack,
                                          pack_verdict, parse_frame, parse_request, parse_verdict)
from edge_runtime.station.verdicts import refusal

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)
XYZ = RNG.normal(size=(12, 20, 3)).astype(np.float32)


def roundtrip(message):
    header, payload = parse_frame(message)
    return header, decode_payload(header, payload)


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_rgb_frames_come_back_exact_in_rgb_order(encoding):
    header, rgb = roundtrip(encode_frame("L1", "p-1", 3, "rgb", RGB, encoding))
    assert (header.line, header.part, header.seq, header.sensor, header.shape) == ("L1", "p-1", 3, "rgb", (12, 20, 3))
    np.testing.assert_array_equal(rgb, RGB)


def test_jpeg_frames_decode_close_to_the_original():
    smooth = np.tile(np.linspace(0, 255, 20, dtype=np.uint8)[None, :, None], (12, 1, 3))
    smooth[..., 0] = 200  # a channel-order mistake would be off by far more than JPEG loss
    _, rgb = roundtrip(encode_frame("L1", "p", 0, "rgb", smooth, "jpeg"))
    assert np.abs(rgb.astype(int) - smooth).mean() < 4


def test_mono_camera_frames_become_three_channels():
    mono = RGB[:, :, 0]
    _, rgb = roundtrip(encode_frame("L1", "p", 0, "rgb", mono, "png"))
    assert rgb.shape == (12, 20, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], mono)


def test_xyz_frames_are_exact_and_writable():
    _, xyz = roundtrip(encode_frame("L1", "p", 0, "xyz", XYZ, "raw"))
    np.testing.assert_array_equal(xyz, XYZ)
    assert xyz.dtype == np.float32 and xyz.flags.writeable


def bad_header(**changes):
    header, payload = encode_frame("L1", "p7", 5, "xyz", XYZ, "raw")
    obj = msgpack.unpackb(header)
    obj.update(changes)
    for k, v in list(obj.items()):
        if v is ...:
            del obj[k]
    return [msgpack.packb(obj), payload]


@pytest.mark.parametrize("message, code, identified", [
    ([b"\xc1\xc1garbage", b""], "not_msgpack", False),
    ([msgpack.packb([1, 2, 3]), b""], "bad_header", False),
    ([msgpack.packb({"v": 1})], "bad_message", False),
    (bad_header(part=...), "bad_header", False),
    (bad_header(line="no spaces allowed"), "bad_header", False),
    (bad_header(v=2), "version", True),
    (bad_header(ts=...), "bad_header", True),
    (bad_header(seq=-1), "bad_header", True),
    (bad_header(sensor="thermal"), "bad_header", True),
    (bad_header(encoding="bmp"), "bad_header", True),
    (bad_header(dtype="not-a-dtype"), "dtype", True),
    (bad_header(dtype=">f4"), "dtype", True),
    (bad_header(shape=[12, 20]), "shape", True),
    (bad_header(shape=[0, 20, 3]), "shape", True),
])
def test_bad_headers_are_refused_with_a_code(message, code, identified):
    with pytest.raises(ProtocolError) as err:
        parse_frame(message)
    assert err.value.code == code
    assert err.value.identified == identified
    if identified:
        assert (err.value.line, err.value.part) == ("L1", "p7")


@pytest.mark.parametrize("message, code", [
    ([encode_frame("L", "p", 0, "xyz", XYZ)[0], encode_frame("L", "p", 0, "xyz", XYZ)[1][:-7]], "truncated"),
    ([encode_frame("L", "p", 0, "xyz", XYZ)[0], encode_frame("L", "p", 0, "xyz", XYZ)[1] + b"\0" * 12], "size"),
    (encode_frame("L", "p", 0, "xyz", XYZ.astype(np.float64)), "dtype"),
    (encode_frame("L", "p", 0, "rgb", XYZ), "dtype"),
    (encode_frame("L", "p", 0, "xyz", XYZ[:, :, :1]), "shape"),
    (encode_frame("L", "p", 0, "xyz", np.where(XYZ > 2, np.nan, XYZ).astype(np.float32)), "nonfinite"),
    (encode_frame("L", "p", 0, "xyz", RGB, "png")[:1] + [b"\x89PNG not really"], "dtype"),
])
def test_bad_payloads_are_refused_with_a_code(message, code):
    header, payload = parse_frame(message)
    with pytest.raises(ProtocolError) as err:
        decode_payload(header, payload)
    assert err.value.code == code and err.value.identified


def test_png_payload_that_is_not_an_image_or_has_another_shape():
    header, payload = encode_frame("L", "p", 0, "rgb", RGB, "png")
    h, _ = parse_frame([header, b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
    with pytest.raises(ProtocolError, match="not a readable png") as err:
        decode_payload(h, b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    assert err.value.code == "decode"
    obj = msgpack.unpackb(header)
    obj["shape"] = [20, 12, 3]
    h, p = parse_frame([msgpack.packb(obj), payload])
    with pytest.raises(ProtocolError) as err:
        decode_payload(h, p)
    assert err.value.code == "shape"


def test_verdict_messages_roundtrip_and_are_checked():
    verdict = refusal("L1", "p1", 4, "overload", "queue full")
    header = verdict.to_wire()
    message = pack_verdict(verdict, b"png-bytes")
    assert message[0] == b"verdict.L1"
    back, png = parse_verdict(message)
    assert back["error"] == {"code": "overload", "message": "queue full"} and png == b"png-bytes"
    for broken in ({**header, "verdict": "maybe"}, {**header, "v": 2},
                   {k: v for k, v in header.items() if k != "window"}, {**header, "error": None}):
        with pytest.raises(ProtocolError):
            check_verdict_header(broken)


def test_control_requests_are_validated():
    assert parse_request(pack({"cmd": "status"}))["cmd"] == "status"
    assert parse_request(pack({"cmd": "set_threshold", "line": "a", "value": 0.5}))["value"] == 0.5
    for raw, code in ((b"\xc1", "not_msgpack"), (pack([1]), "bad_request"), (pack({"cmd": "dance"}), "unknown_command"),
                      (pack({"cmd": "switch", "line": "a"}), "bad_request"),
                      (pack({"cmd": "set_threshold", "line": "a", "value": float("nan")}), "bad_request"),
                      (pack({"cmd": "reset", "line": "a b"}), "bad_request")):
        with pytest.raises(ProtocolError) as err:
            parse_request(raw)
        assert err.value.code == code


def test_map_png_keeps_the_map_within_one_grey_level():
    m = RNG.gamma(2.0, size=(33, 47)).astype(np.float32)
    png, scale = encode_map(m)
    assert scale == [float(m.min()), float(m.max())]
    back = decode_map(png, scale)
    assert np.abs(back - m).max() <= (scale[1] - scale[0]) / 255 / 2 + 1e-6
    flat_png, flat_scale = encode_map(np.full((4, 4), 3.0))
    np.testing.assert_array_equal(decode_map(flat_png, flat_scale), np.full((4, 4), 3.0))
    with pytest.raises(ValueError, match="NaN"):
        encode_map(np.array([[np.nan]]))


def test_alert_messages_round_trip_and_bad_ones_are_refused():
    from edge_runtime.stream.protocol import AlertMessage, Verdict, pack_alert, parse_alert

    alert = AlertMessage(line="tile", id="ng_rate-1", kind="ng_rate", parts=("p1", "p2", "p3"),
                         message="3 of the last 10 parts of line tile are ng", ts=1.5)
    message = pack_alert(alert)
    assert message[0] == b"alert.tile" and parse_alert(message) == alert
    header = msgpack.unpackb(message[1], raw=False)
    assert set(header) == {"v", "line", "id", "kind", "parts", "message", "ts"}
    with pytest.raises(ProtocolError, match="alert kind"):
        AlertMessage(line="tile", id="x", kind="panic", parts=(), message="m", ts=1.0)
    with pytest.raises(ProtocolError, match="does not match line"):
        parse_alert([b"alert.other", message[1]])
    with pytest.raises(ProtocolError, match="exactly"):
        parse_alert([b"alert.tile", msgpack.packb({**header, "extra": 1})])
    verdict = Verdict(line="tile", part="p1", seq=1, verdict="ok", reference=True)
    assert verdict.to_wire()["reference"] is True and Verdict.from_wire(verdict.to_wire()) == verdict
    with pytest.raises(ProtocolError, match="reference must be true or false"):
        Verdict(line="tile", part="p1", seq=1, verdict="ok", reference=1)
