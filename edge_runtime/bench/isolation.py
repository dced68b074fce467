"""`musc-edge bench isolation`: does a line that falls behind hold up the line beside it?

One station, two lines on one frame socket: "steady" (``drop_oldest``) gets a
part every ``--period-ms``; "busy" (``block``, queue ``--queue``) is flooded
with ``--flood`` parts at once, far more than it can score. Both run the same
small 3D profile (FPFH on 64 x 64 clouds), so the difference between the phases
is the neighbour, not the model. Measured for the steady line, in one run:

- alone: its verdict latency (send of the frame to arrival of the verdict);
- beside the flooded busy line: the same latency, the sends that found its
  socket full (ZeroMQ EAGAIN at a send high-water mark of 4), and the time the
  control socket takes to answer ``status``;
- the busy line's parts: how many were scored, how many answered ``overload``.

With ``--own-socket`` the busy line gets a frame socket of its own: then its
sender is slowed down (block) and no part of it is refused.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import zmq
from tqdm import tqdm

from edge_runtime.bench.report import DEFAULT_OUT, write_report

PROFILE = {
    "line": {"modalities": ["3d"], "window": 8, "min_window": 5, "image_size": 64},
    "pointcloud": {"groups": 48, "group_size": 16},
    "stream": {"pair_timeout_ms": 2000},
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musc-edge bench isolation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flood", type=int, default=150, help="parts sent at once to the busy line (default 150)")
    p.add_argument("--steady", type=int, default=40, help="parts of the steady line per phase (default 40)")
    p.add_argument("--period-ms", type=float, default=100.0, help="steady line: one part every ... ms")
    p.add_argument("--queue", type=int, default=4, help="queue size of both lines (default 4)")
    p.add_argument("--own-socket", action="store_true", help="give the busy line its own frame socket")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (JSON, markdown, PNG; default {DEFAULT_OUT})")
    return p


def _config(state: Path, queue: int, own_socket: bool):
    from edge_runtime.station.config import HttpSettings, StationConfig, parse_profile

    def profile(policy: str):
        return parse_profile({**PROFILE, "stream": {**PROFILE["stream"], "queue": queue, "queue_policy": policy}},
                             f"<bench {policy}>")

    return StationConfig(lines={"steady": profile("drop_oldest"), "busy": profile("block")},
                         frames="tcp://127.0.0.1:*", verdicts="tcp://127.0.0.1:*", control="tcp://127.0.0.1:*",
                         line_frames={"busy": "tcp://127.0.0.1:*"} if own_socket else {},
                         state_dir=state, snapshot_every=10**9, http=HttpSettings(port=0))


class _Probe:
    """The sensors and the subscriber of both lines, and a control client."""

    def __init__(self, endpoints: dict):
        self.ctx = zmq.Context()
        self.steady = self._push(endpoints["frames"])
        self.busy = self._push(endpoints.get("frames.busy", endpoints["frames"]))
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"verdict.")
        self.sub.connect(endpoints["verdicts"])
        self.control = endpoints["control"]
        self.arrived: dict[tuple[str, str], tuple[float, dict]] = {}
        time.sleep(0.3)

    def _push(self, endpoint: str) -> zmq.Socket:
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, 4)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        return sock

    def send(self, sock: zmq.Socket, message: list[bytes], deadline: float) -> int:
        """Send without waiting in ZeroMQ; the number of attempts that found the socket full."""
        full = 0
        while True:
            try:
                sock.send_multipart(message, flags=zmq.NOBLOCK)
                return full
            except zmq.Again:
                full += 1
                if time.monotonic() > deadline:
                    raise TimeoutError("a sender stayed blocked for the whole phase") from None
                self.collect(0.001)

    def collect(self, wait_s: float) -> None:
        if self.sub.poll(int(wait_s * 1000)):
            while True:
                try:
                    msg = self.sub.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    return
                header = msgpack.unpackb(msg[1], raw=False)
                self.arrived[(header["line"], header["part"])] = (time.perf_counter(), header)

    def status_ms(self) -> float:
        req = self.ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(self.control)
        t = time.perf_counter()
        req.send(msgpack.packb({"cmd": "status"}))
        if not req.poll(60_000):
            raise TimeoutError("the control socket did not answer status within 60 s")
        req.recv()
        req.close()
        return (time.perf_counter() - t) * 1e3

    def wait_for(self, keys: list[tuple[str, str]], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not all(k in self.arrived for k in keys):
            if time.monotonic() > deadline:
                missing = [k for k in keys if k not in self.arrived]
                raise TimeoutError(f"{len(missing)} verdicts missing, e.g. {missing[:3]}")
            self.collect(0.05)


def _send_all(sock: zmq.Socket, messages: list[list[bytes]]) -> int:
    """The busy line's sensor: every message as fast as its socket takes them (own thread,
    own socket); the number of attempts that found the socket full."""
    full = 0
    for message in messages:
        while True:
            try:
                sock.send_multipart(message, flags=zmq.NOBLOCK)
                break
            except zmq.Again:
                full += 1
                time.sleep(0.001)
    return full


def run(args) -> dict:
    from edge_runtime.sim.generator import iter_parts
    from edge_runtime.station.service import Station
    from edge_runtime.stream.protocol import encode_frame

    clouds = [p.xyz for p in iter_parts("tile", 12, 0.0, seed=5, image_size=64)]
    with tempfile.TemporaryDirectory(prefix="musc-edge-bench-") as state:
        station = Station(_config(Path(state), args.queue, args.own_socket))
        station.start()
        probe = _Probe(station.endpoints)
        try:
            def steady_phase(name: str, busy_parts: list[str]) -> dict:
                sent, full, controls = {}, 0, []
                for i in tqdm(range(args.steady), desc=name, unit="part", leave=False):
                    part = f"{name}-{i}"
                    t = time.perf_counter()
                    full += probe.send(probe.steady, encode_frame("steady", part, i, "xyz", clouds[i % 12]),
                                       time.monotonic() + 60)
                    sent[part] = t
                    if i % 5 == 0:
                        controls.append(probe.status_ms())
                    until = t + args.period_ms / 1e3
                    while time.perf_counter() < until:
                        probe.collect(max(0.0, until - time.perf_counter()))
                probe.wait_for([("steady", p) for p in sent], 120)
                latency = [(probe.arrived[("steady", p)][0] - t) * 1e3 for p, t in sent.items()]
                busy_left = sum(("busy", p) not in probe.arrived for p in busy_parts)
                return {"phase": name, "steady_p50_ms": float(np.percentile(latency, 50)),
                        "steady_p95_ms": float(np.percentile(latency, 95)), "steady_sends_full": full,
                        "control_p95_ms": float(np.percentile(controls, 95)), "busy_unanswered_at_end": busy_left}

            for i in range(6):  # both windows warm: the phases measure scoring, not warm-up
                probe.send(probe.steady, encode_frame("steady", f"warm-{i}", i, "xyz", clouds[i]), time.monotonic() + 60)
                probe.send(probe.busy, encode_frame("busy", f"warm-{i}", i, "xyz", clouds[i]), time.monotonic() + 60)
            probe.wait_for([(line, f"warm-{i}") for i in range(6) for line in ("steady", "busy")], 120)
            alone = steady_phase("alone", [])
            busy_parts = [f"flood-{i}" for i in range(args.flood)]
            flood = [encode_frame("busy", part, i, "xyz", clouds[i % 12]) for i, part in enumerate(busy_parts)]
            busy_full = []
            sender = threading.Thread(target=lambda: busy_full.append(_send_all(probe.busy, flood)), daemon=True)
            sender.start()
            beside = steady_phase("beside_flooded", busy_parts)
            sender.join(600)
            probe.wait_for([("busy", p) for p in busy_parts], 600)
            verdicts = [probe.arrived[("busy", p)][1] for p in busy_parts]
            overload = sum(v["verdict"] == "error" and v["error"]["code"] == "overload" for v in verdicts)
            answered = sum(v["verdict"] in ("ok", "ng", "inconclusive") for v in verdicts)  # by the line's inspector
            busy = {"busy_parts": args.flood, "busy_scored": answered,
                    "busy_overload": overload, "busy_sends_full": busy_full[0] if busy_full else None}
        finally:
            probe.ctx.destroy(linger=0)
            station.request_stop()
            station.stop()
    return {"rows": [alone, beside], "busy": busy,
            "steady_p95_ratio": beside["steady_p95_ms"] / alone["steady_p95_ms"]}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    if min(args.flood, args.steady, args.queue) < 1 or args.period_ms <= 0:
        print("musc-edge bench isolation: --flood, --steady, --queue and --period-ms must be positive",
              file=sys.stderr)
        return 2
    result = run(args)
    name = "isolation_own_socket" if args.own_socket else "isolation"
    extra = {**result["busy"], "steady_p95_ratio": result["steady_p95_ratio"], "own_socket": args.own_socket,
             "flood": args.flood, "period_ms": args.period_ms, "queue": args.queue}
    paths = write_report(args.out, name, result["rows"],
                         ["phase", "steady_p50_ms", "steady_p95_ms", "steady_sends_full", "control_p95_ms",
                          "busy_unanswered_at_end"], extra=extra,
                         plot={"x": "phase", "y": ["steady_p50_ms", "steady_p95_ms", "control_p95_ms"],
                               "title": "steady line alone vs beside a flooded line", "xlabel": "phase",
                               "ylabel": "ms"})
    print(open(paths["table"]).read())
    print(", ".join(f"{k} {v}" for k, v in result["busy"].items())
          + f"; steady p95 beside / alone: {result['steady_p95_ratio']:.2f}")
    return 0
