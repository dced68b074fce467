"""`musc-edge bench station`: the station end to end, and the window's incremental update.

End to end (per window size N): a station on loopback TCP with one line on the
given profile (default: the embedded default, EfficientNet-Lite0 + FPFH and normals on the
CPU); simulated parts, camera frames as PNG and clouds as raw float32, sent
through PUSH; verdicts read from SUB. After N parts fill the window:

- parts/s: ``--parts`` parts sent as fast as the station takes them;
- latency p50/p95/p99: ``--parts`` parts sent one at a time, from the send of a
  part's first frame to the arrival of its verdict;
- memory per window part: bytes of the line's saved window / its parts; and the
  time one window snapshot takes.

With ``--secure`` (or --keys-dir and client keys) every socket runs CURVE, as
a secured station does; rows say ``curve``.

Incremental (per N in ``--incremental``): the window's cost of one arrival
(``LineWindow.add`` + its scores) against recomputing every member's scores from
scratch (``mutual_scores_multimodal`` / ``mutual_scores`` on the window's features).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq
from tqdm import tqdm

from edge_runtime.bench.report import DEFAULT_OUT, write_report
from edge_runtime.station.keys import add_client_options, client_keys_of
from edge_runtime.stream.security import STATION_KEY, secure_client

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musc-edge bench station", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", help="line profile TOML (default: the embedded default profile)")
    p.add_argument("--windows", type=int, nargs="+", default=[16, 64, 200], help="window sizes N end to end")
    p.add_argument("--incremental", type=int, nargs="*", default=[64, 200],
                   help="window sizes for incremental-vs-recompute (none: skip)")
    p.add_argument("--parts", type=int, default=30, help="measured parts per phase (default 30)")
    p.add_argument("--distinct", type=int, default=24, help="distinct simulated parts, sent in turn (default 24)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (JSON, markdown, PNG; default {DEFAULT_OUT})")
    add_client_options(p)
    return p


def _sim_parts(settings, n: int, seed: int = 0) -> list:
    from edge_runtime.sim.generator import iter_parts

    return list(iter_parts("tile", n, 0.0, seed, image_size=settings.image_size))


def _frames(settings, sim, part: str, seq: int) -> list[list[bytes]]:
    from edge_runtime.stream.protocol import encode_frame

    out = []
    if "2d" in settings.modalities:
        out.append(encode_frame("bench", part, seq, "rgb", sim.rgb, "png"))
    if "3d" in settings.modalities:
        out.append(encode_frame("bench", part, seq, "xyz", sim.xyz, "raw"))
    return out


def end_to_end(profile, window: int, parts: int, sims: list, keys: tuple = (None, None, None)) -> dict:
    """One station, one line with window N; warm-up, throughput, latency, memory.
    keys: (keys folder, sensor certificate, subscriber certificate), or Nones for no CURVE."""
    from edge_runtime.station.config import HttpSettings, StationConfig, StreamSettings
    from edge_runtime.station.service import Station
    from edge_runtime.station.worker import LineWorker

    settings = dataclasses.replace(profile.settings, window=window, min_window=min(profile.settings.min_window, window),
                                   decision_delay=0)
    line = dataclasses.replace(profile, settings=settings, stream=StreamSettings(pair_timeout_ms=30000, queue=8))
    with tempfile.TemporaryDirectory(prefix="musc-edge-bench-") as state:
        keys_dir, sensor_key, subscriber_key = keys
        config = StationConfig(lines={"bench": line}, frames="tcp://127.0.0.1:*", verdicts="tcp://127.0.0.1:*",
                               control="tcp://127.0.0.1:*", state_dir=Path(state), snapshot_every=10**9,
                               http=HttpSettings(port=0), keys_dir=keys_dir)
        station_key = keys_dir / STATION_KEY if keys_dir else None
        station = Station(config)
        station.start()
        ctx = zmq.Context()
        push, sub = ctx.socket(zmq.PUSH), ctx.socket(zmq.SUB)
        secure_client(push, sensor_key, station_key)
        secure_client(sub, subscriber_key, station_key)
        push.connect(station.endpoints["frames"])
        sub.setsockopt(zmq.SUBSCRIBE, b"verdict.bench")
        sub.connect(station.endpoints["verdicts"])
        time.sleep(0.3)
        counter = iter(range(10**9))

        def send() -> tuple[str, float]:
            i = next(counter)
            part = f"b{i:06d}"
            t = time.perf_counter()
            for message in _frames(settings, sims[i % len(sims)], part, i):
                push.send_multipart(message)
            return part, t

        def receive(n: int, what: str) -> dict[str, float]:
            got = {}
            while len(got) < n:
                if not sub.poll(600_000):
                    raise TimeoutError(f"no verdict for 10 min during {what} (window {window})")
                msg = sub.recv_multipart()
                got[msgpack_part(msg[1])] = time.perf_counter()
            return got

        try:
            # Sending blocks at the PUSH high-water mark while the station catches up;
            # the verdicts wait in the SUB socket meanwhile.
            for _ in range(window):
                send()
            for _ in tqdm(range(window), desc=f"N={window} warm-up", unit="part", leave=False):
                receive(1, "warm-up")
            t0 = time.perf_counter()
            for _ in range(parts):
                send()
            done = receive(parts, "throughput")
            rate = parts / (max(done.values()) - t0)
            latency = []
            for _ in tqdm(range(parts), desc=f"N={window} latency", unit="part", leave=False):
                part, t = send()
                latency.append((receive(1, "latency")[part] - t) * 1e3)
            worker = station.workers["bench"]
            t = time.perf_counter()
            worker.call(LineWorker.snapshot)
            snapshot_ms = (time.perf_counter() - t) * 1e3
            window_bytes = worker.call(lambda w: sum(a.nbytes for a in w.inspector.state().values()))
            fill = worker.status["window"]
        finally:
            ctx.destroy(linger=0)
            station.request_stop()
            station.stop()
    return {"window": window, "curve": keys_dir is not None, "parts_per_s": rate, "latency_p50_ms": float(np.percentile(latency, 50)),
            "latency_p95_ms": float(np.percentile(latency, 95)), "latency_p99_ms": float(np.percentile(latency, 99)),
            "bytes_per_window_part": window_bytes / max(fill, 1), "snapshot_ms": snapshot_ms}


def msgpack_part(header: bytes) -> str:
    import msgpack

    return msgpack.unpackb(header, raw=False)["part"]


def incremental(settings, window: int, sims: list, repeats: int = 5) -> dict:
    """One arrival into a full window vs recomputing the whole window's scores."""
    from edge_runtime.inspection.features import FeatureExtractor
    from edge_runtime.inspection.window import LineWindow
    from edge_runtime.scoring import mutual_scores, mutual_scores_multimodal

    extractor = FeatureExtractor.from_settings(settings)
    base = [extractor.extract(s.rgb if "2d" in settings.modalities else None,
                              s.xyz if "3d" in settings.modalities else None)[0] for s in sims]
    rng = np.random.default_rng(0)

    def variant(i: int):
        f = base[i % len(base)]
        jitter = {k: (getattr(f, k) + rng.normal(0, 1e-3, getattr(f, k).shape)).astype(np.float16)
                  for k in ("z2", "z3", "zn") if getattr(f, k) is not None}
        return dataclasses.replace(f, **jitter)

    win = LineWindow(window, settings.window_modalities(), settings.interval)
    for i in tqdm(range(window + 1), desc=f"N={window} fill", unit="part", leave=False):
        win.add(f"p{i}", variant(i))  # one more than N: timed arrivals all evict, as in steady state
    arrivals = []
    for r in range(repeats):
        f = variant(window + r)
        t = time.perf_counter()
        win.add(f"q{r}", f)
        win.scores(f"q{r}")
        arrivals.append((time.perf_counter() - t) * 1e3)
    members = [win.part(p) for p in win.members]
    t = time.perf_counter()
    if settings.modalities == ("2d", "3d"):
        z2 = np.stack([m.z2 for m in members])
        for m3 in ("3d", "3n") if settings.normals_stream() else ("3d",):  # each 3D stream pairs with 2D
            mutual_scores_multimodal(z2, np.stack([m.features(m3) for m in members]),
                                     np.stack([m.cells(m3) for m in members]), settings.interval)
    else:
        (mod,) = settings.modalities
        mutual_scores(np.stack([m.features(mod) for m in members]), settings.interval)
    recompute = (time.perf_counter() - t) * 1e3
    incremental_ms = float(np.median(arrivals))
    return {"window": window, "incremental_ms": incremental_ms, "recompute_ms": recompute,
            "speedup": recompute / incremental_ms}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from edge_runtime.station.config import embedded_profile, load_profile

    try:
        profile = load_profile(args.profile) if args.profile else embedded_profile()
    except (OSError, ValueError) as exc:
        print(f"musc-edge bench station: {exc}", file=sys.stderr)
        return 2
    if any(n < 5 for n in args.windows + args.incremental):
        print("musc-edge bench station: window sizes must be >= 5", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="musc-edge-bench-keys-") as scratch:
        try:
            keys = client_keys_of(args, Path(scratch))
        except (OSError, ValueError) as exc:
            print(f"musc-edge bench station: {exc}", file=sys.stderr)
            return 2
        return measure(args, profile, keys)


def measure(args: argparse.Namespace, profile, keys: tuple) -> int:
    """The runs ``main`` asked for; writes and prints the report."""
    sims = _sim_parts(profile.settings, args.distinct)
    rows = []
    for n in args.windows:
        rows.append(end_to_end(profile, n, args.parts, sims, keys))
        print(f"N={n}: {rows[-1]['parts_per_s']:.2f} parts/s, latency p50 {rows[-1]['latency_p50_ms']:.0f} ms",
              flush=True)
    inc = []
    for n in args.incremental:
        inc.append(incremental(profile.settings, n, sims[: min(len(sims), 8)]))
        print(f"N={n}: incremental {inc[-1]['incremental_ms']:.1f} ms vs recompute "
              f"{inc[-1]['recompute_ms']:.0f} ms ({inc[-1]['speedup']:.0f}x)", flush=True)
    extra = {"profile": profile.source, "settings": profile.settings.to_dict(), "incremental": inc,
             "parts_per_phase": args.parts, "note": "station in-process, sender/subscriber on loopback TCP"}
    paths = write_report(args.out, "station", rows,
                         ["window", "curve", "parts_per_s", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
                          "bytes_per_window_part", "snapshot_ms"], extra=extra,
                         plot={"x": "window", "y": ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"],
                               "title": "station end to end (CPU)", "xlabel": "window N", "ylabel": "ms"})
    if inc:
        write_report(args.out, "station_incremental", inc, ["window", "incremental_ms", "recompute_ms", "speedup"],
                     plot={"x": "window", "y": ["incremental_ms", "recompute_ms"], "logy": True,
                           "title": "one arrival: incremental vs recompute", "xlabel": "window N", "ylabel": "ms"})
    print(open(paths["table"]).read())
    if inc:
        print(open(Path(args.out) / "station_incremental.md").read())
    return 0
