"""`musc-edge bench faults`: what a decompression bomb costs the station, and what decoding it would.

A PNG bomb: a valid RGB PNG of zeros, side x side pixels, a few MB on the wire
(``png_bomb``). Sent with a frame header that claims 64 x 64, the station reads
its size from the PNG header and refuses it before decoding. Measured, each in a
fresh interpreter (so its peak memory is that step's alone), per side:

- checked: ``decode_payload`` on the bomb (refused from the header bytes);
- decoded: ``cv2.imdecode`` on it, what the decoder would do without the check;

and, in one station, the intake stall: from sending the bomb to the verdict of
the next part (a real cloud, scored), which the intake reads after it. The ratios decoded / checked
are the figures; absolute times depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge_runtime.bench.report import DEFAULT_OUT, write_report

_CLAIMED = (64, 64, 3)  # what the bomb's frame header says


def png_bomb(height: int, width: int) -> bytes:
    """A valid RGB PNG of zeros, ``height`` x ``width``, a few MB: the compressed rows
    repeat, because a full flush makes identical input compress to identical bytes."""
    row = b"\0" * (1 + 3 * width)  # filter byte + pixels
    rows_per_block = max(1, (1 << 22) // len(row))
    blocks, rest = divmod(height, rows_per_block)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = [z.compress(row * rows_per_block) + z.flush(zlib.Z_FULL_FLUSH)] if blocks else []
    if blocks > 1:
        data.append((z.compress(row * rows_per_block) + z.flush(zlib.Z_FULL_FLUSH)) * (blocks - 1))
    data.append(z.compress(row * rest) + z.flush())
    adler = 1
    for _ in range(blocks):
        adler = zlib.adler32(row * rows_per_block, adler)
    adler = zlib.adler32(row * rest, adler)
    idat = b"\x78\xda" + b"".join(data) + struct.pack(">I", adler)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musc-edge bench faults", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int, nargs="+", default=[2000, 4000, 8000],
                   help="bomb sides in pixels (default 2000 4000 8000; the decoded column needs side^2 x 3 bytes)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (JSON, markdown, PNG; default {DEFAULT_OUT})")
    p.add_argument("--one", nargs=2, metavar=("MODE", "SIDE"), help=argparse.SUPPRESS)  # a child measurement
    return p


def _measure_here(mode: str, side: int) -> dict:
    """One measurement in this interpreter: ms and peak memory growth (MB) of one step."""
    import cv2

    from edge_runtime.stream.decode import decode_payload
    from edge_runtime.stream.protocol import FrameHeader, ProtocolError

    bomb = png_bomb(side, side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if mode == "checked":
        try:
            decode_payload(FrameHeader("bench", "bomb", 0, "rgb", 0.0, "png", "uint8", _CLAIMED), bomb)
            outcome = "decoded"
        except ProtocolError as exc:
            outcome = exc.code
    else:
        outcome = "decoded" if cv2.imdecode(np.frombuffer(bomb, np.uint8), cv2.IMREAD_UNCHANGED) is not None else "failed"
    ms = (time.perf_counter() - t) * 1e3
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"ms": ms, "peak_mb": (peak - before) / 1024, "outcome": outcome, "png_mb": len(bomb) / 1e6}


def _measure(mode: str, side: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "edge_runtime.bench.faults", "--one", mode, str(side)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stall(side: int) -> dict:
    """In one station: seconds from sending the bomb to the verdicts of it and of the part after it."""
    import msgpack
    import zmq

    from edge_runtime.bench.isolation import PROFILE
    from edge_runtime.sim.generator import iter_parts
    from edge_runtime.station.config import StationConfig, parse_profile
    from edge_runtime.station.service import Station
    from edge_runtime.stream.protocol import FrameHeader, encode_frame, pack_frame

    with tempfile.TemporaryDirectory() as state:
        config = StationConfig(lines={"bench": parse_profile(PROFILE, "<bench faults>")},
                               frames="tcp://127.0.0.1:*", verdicts="tcp://127.0.0.1:*",
                               control="tcp://127.0.0.1:*", state_dir=Path(state))
        station = Station(config)
        station.start()
        ctx = zmq.Context()
        try:
            push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
            push.connect(station.endpoints["frames"])
            sub.setsockopt(zmq.SUBSCRIBE, b"verdict.")
            sub.connect(station.endpoints["verdicts"])
            time.sleep(0.3)
            bomb = pack_frame(FrameHeader("bench", "bomb", 0, "rgb", 0.0, "png", "uint8", _CLAIMED), png_bomb(side, side))
            cloud = next(iter_parts("bench", 1, 0.0, seed=1, image_size=64)).xyz
            t0 = time.perf_counter()
            push.send_multipart(bomb)
            push.send_multipart(encode_frame("bench", "next", 1, "xyz", cloud))
            arrived = {}
            while len(arrived) < 2 and sub.poll(600_000):
                header = msgpack.unpackb(sub.recv_multipart()[1])
                arrived[header["part"]] = (time.perf_counter() - t0, (header.get("error") or {}).get("code"))
        finally:
            ctx.destroy(linger=0)
            station.stop()
    return {"side": side, "bomb_verdict_s": arrived["bomb"][0], "bomb_code": arrived["bomb"][1],
            "next_part_verdict_s": arrived["next"][0]}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.one:
        print(json.dumps(_measure_here(args.one[0], int(args.one[1]))))
        return 0
    rows = []
    for side in tqdm(args.sides, desc="bombs"):
        checked, decoded = _measure("checked", side), _measure("decoded", side)
        rows.append({"side": side, "png_mb": checked["png_mb"], "pixels_mb": side * side * 3 / 1e6,
                     "checked_ms": checked["ms"], "checked_peak_mb": checked["peak_mb"],
                     "checked_outcome": checked["outcome"], "decoded_ms": decoded["ms"],
                     "decoded_peak_mb": decoded["peak_mb"],
                     "time_ratio": decoded["ms"] / max(checked["ms"], 1e-3)})
    stall = _stall(max(args.sides))
    paths = write_report(args.out, "faults", rows,
                         ["side", "png_mb", "pixels_mb", "checked_ms", "checked_peak_mb", "checked_outcome",
                          "decoded_ms", "decoded_peak_mb", "time_ratio"],
                         extra={"stall": stall},
                         plot={"x": "side", "y": ["checked_peak_mb", "decoded_peak_mb"], "logy": False,
                               "title": "PNG bomb: peak memory, refused from its header vs decoded",
                               "xlabel": "bomb side (pixels)", "ylabel": "peak memory growth (MB)"})
    print(Path(paths["table"]).read_text())
    print(f"intake stall, bomb of side {stall['side']}: its verdict ({stall['bomb_code']}) after "
          f"{stall['bomb_verdict_s']:.3f} s, the next part's after {stall['next_part_verdict_s']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
