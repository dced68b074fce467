"""`musc-edge demo`: simulated camera and scanner, the station, a subscriber, a summary.

Two product lines alternate on one conveyor. A sensor process renders parts
with the synthetic generator (a few percent defective) and sends them as a
real station would receive them: the camera's frames as PNG on one PUSH
socket, the scanner's clouds as raw float32 on another. The station (in this
process, on free local ports and a fresh state directory) scores them; the
subscriber prints one line per verdict, a running tally against the
generator's ground truth, writes a few anomaly-map pictures, and ends with a
summary once every part has its verdict. The station's dashboard is served
while the demo runs (its URL is printed first; ``--keep-open`` keeps it up
after the last verdict until Ctrl-C).

With ``--secure`` (or a config with [security], or --keys-dir) every socket
runs CURVE: the sensors use a sensor key, the subscriber an observer key.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing as mp
import queue
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import zmq

from edge_runtime.station.keys import add_client_options, client_keys_of
from edge_runtime.stream.security import STATION_KEY, secure_client

log = logging.getLogger("musc-edge.demo")

REPO_DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "station.toml"
_SILENCE_S = 180.0  # no verdict for this long: the demo gives up and says so


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musc-edge demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO_DEPLOY), help="station.toml whose lines the sensors feed "
                   "(default: deploy/station.toml); its endpoints and state_dir are replaced")
    p.add_argument("--parts", type=int, default=80, help="parts in total, lines alternating (default 80)")
    p.add_argument("--defect-rate", type=float, default=0.05, help="share of defective parts (default 0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.8,
                   help="parts per second the sensors send, lines together (default 0.8, what two CPU cores "
                        "sustain; 0: as fast as possible: the 'tile' line then blocks the senders and the "
                        "'washer' line answers parts it cannot queue with overload errors)")
    p.add_argument("--out", default="demo-out", help="folder for anomaly-map pictures and summary.json")
    p.add_argument("--maps", type=int, default=4, help="anomaly-map pictures to write (default 4)")
    p.add_argument("--state-dir", help="keep windows here (default: a fresh temporary folder, cold start)")
    p.add_argument("--quiet", action="store_true", help="no line per verdict, only tallies and the summary")
    p.add_argument("--http-port", type=int, help="the dashboard's port (default: the config's [http] port; "
                   "0: any free port)")
    p.add_argument("--keep-open", action="store_true",
                   help="after the last verdict keep the station and its dashboard up until Ctrl-C")
    add_client_options(p)
    return p


# --- the sensors (their own process, as real sensors are other machines) -----

def run_sensors(frames_endpoint: str, lines: list[str], n_parts: int, defect_rate: float, seed: int,
                image_size: int, rate: float, truth: mp.Queue, key: Path | None = None,
                station_key: Path | None = None) -> None:
    """Render ``n_parts`` parts, lines alternating; camera and scanner threads send
    their frames on their own PUSH sockets (CURVE with ``key`` when given). Ground
    truth goes to ``truth``."""
    from edge_runtime.sim.generator import iter_parts
    from edge_runtime.stream.protocol import encode_frame

    ctx = zmq.Context()
    feeds = {"rgb": queue.Queue(maxsize=4), "xyz": queue.Queue(maxsize=4)}

    def sensor(kind: str) -> None:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 5000)
        secure_client(sock, key, station_key)
        sock.connect(frames_endpoint)
        encoding = "png" if kind == "rgb" else "raw"
        while (item := feeds[kind].get()) is not None:
            line, part, seq, array = item
            sock.send_multipart(encode_frame(line, part, seq, kind, array, encoding))
        sock.close()

    threads = [threading.Thread(target=sensor, args=(k,), name=f"{k}-sensor") for k in feeds]
    for t in threads:
        t.start()
    per_line = -(-n_parts // len(lines))
    streams = {line: iter_parts(line, per_line, defect_rate, seed, image_size=image_size) for line in lines}
    t0 = time.time()
    for i in range(n_parts):
        line = lines[i % len(lines)]
        sim = next(streams[line])
        part, seq = f"{line}-{sim.part_index:04d}", sim.part_index
        if rate > 0:
            time.sleep(max(0.0, t0 + i / rate - time.time()))
        truth.put({"line": line, "part": part, "defect": sim.defect, "kind": sim.defect_kind,
                   "sent": time.time(), "rgb": sim.rgb, "gt": sim.gt})
        feeds["rgb"].put((line, part, seq, sim.rgb))
        feeds["xyz"].put((line, part, seq, sim.xyz))
    for q in feeds.values():
        q.put(None)
    for t in threads:
        t.join()
    ctx.term()


# --- the subscriber's bookkeeping ------------------------------------------

@dataclasses.dataclass
class Tally:
    """Verdicts against ground truth, latencies, throughput."""

    expected: int
    t0: float = dataclasses.field(default_factory=time.time)
    verdicts: Counter = dataclasses.field(default_factory=Counter)
    confusion: Counter = dataclasses.field(default_factory=Counter)  # (verdict, "defect"|"good")
    station_ms: list = dataclasses.field(default_factory=list)
    e2e_ms: list = dataclasses.field(default_factory=list)
    last: float = 0.0
    seen: set = dataclasses.field(default_factory=set)

    def add(self, header: dict, truth: dict | None, received: float) -> None:
        self.seen.add((header["line"], header["part"]))
        self.verdicts[header["verdict"]] += 1
        label = "unknown" if truth is None else ("good" if truth["defect"] == "good" else "defect")
        self.confusion[(header["verdict"], label)] += 1
        total = header["latency_ms"].get("total")
        if total is not None:
            self.station_ms.append(total)
        if truth is not None:
            self.e2e_ms.append((received - truth["sent"]) * 1e3)
        self.last = received

    @property
    def count(self) -> int:
        return sum(self.verdicts.values())

    def rate(self) -> float:
        return self.count / (self.last - self.t0) if self.last > self.t0 else 0.0

    @staticmethod
    def _pct(values: list, q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    def summary(self) -> dict:
        c = self.confusion
        return {
            "parts": self.count, "expected": self.expected, "seconds": self.last - self.t0,
            "parts_per_s": self.rate(),
            "latency_ms": {"station_p50": self._pct(self.station_ms, 50), "station_p95": self._pct(self.station_ms, 95),
                           "end_to_end_p50": self._pct(self.e2e_ms, 50), "end_to_end_p95": self._pct(self.e2e_ms, 95)},
            "verdicts": dict(self.verdicts),
            "detection": {"true_ng": c[("ng", "defect")], "missed": c[("ok", "defect")],
                          "false_ng": c[("ng", "good")], "true_ok": c[("ok", "good")],
                          "inconclusive_defect": c[("inconclusive", "defect")],
                          "inconclusive_good": c[("inconclusive", "good")],
                          "error": self.verdicts["error"]},
        }

    def line(self) -> str:
        s = self.summary()
        d, lat = s["detection"], s["latency_ms"]
        fmt = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
        return (f"-- {self.count}/{self.expected} verdicts | {s['parts_per_s']:.2f} parts/s | latency p50 "
                f"{fmt(lat['end_to_end_p50'])} ms, p95 {fmt(lat['end_to_end_p95'])} ms | defects found "
                f"{d['true_ng']}/{d['true_ng'] + d['missed']} | false NG {d['false_ng']} | "
                f"inconclusive {s['verdicts'].get('inconclusive', 0)} | errors {d['error']}")


def verdict_line(header: dict, truth: dict | None, t0: float, received: float) -> str:
    v = header["verdict"]
    if header.get("score") is not None and header.get("threshold") is not None:
        cmp = ">" if header["score"] > header["threshold"] else "<="
        detail = f"score {header['score']:.4g} {cmp} {header['threshold']:.4g} ({header['threshold_source']})"
    elif header.get("error"):
        detail = f"{header['error']['code']}: {header['error']['message']}"
    else:
        detail = ""
    if truth is None:
        fact = ""
    elif truth["defect"] == "good":
        fact = "| good" + ("  << false alarm" if v == "ng" else "")
    else:
        outcome = {"ng": "  detected", "ok": "  << missed"}.get(v, "")
        fact = f"| DEFECT {truth['defect']} ({truth['kind']}){outcome}"
    ms = header["latency_ms"].get("total")
    return (f"{received - t0:7.1f}s {header['line']:<8} {header['part']:<12} {v.upper():<12} {detail:<44} "
            f"{'+'.join(header['modalities']) or '-':<6} win {header['window']:>3} "
            f"{'' if ms is None else f'{ms:5.0f} ms'} {fact}")


def write_picture(out: Path, header: dict, png: bytes, truth: dict | None) -> Path | None:
    """The part beside its anomaly map (ground truth outlined in green)."""
    import cv2

    from edge_runtime.evaluate.overlay import overlay_png
    from edge_runtime.stream.protocol import decode_map

    if truth is None:
        return None
    amap = decode_map(png, header["map_scale"])
    rgb = truth["rgb"]
    if amap.shape != rgb.shape[:2]:
        amap = cv2.resize(amap, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    title = f"{header['part']} {header['verdict'].upper()} (truth: {truth['defect']})"
    return overlay_png(out / f"{header['part']}.png", rgb, amap, truth["gt"], *header["map_scale"], title=title)


# --- the run -------------------------------------------------------------------

def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.parts < 1:
        print("musc-edge demo: --parts must be >= 1", file=sys.stderr)
        return 2
    from edge_runtime.station.config import load_station_config
    from edge_runtime.station.service import Station
    from edge_runtime.stream.protocol import parse_verdict

    tmp = tempfile.TemporaryDirectory(prefix="musc-edge-demo-")
    try:
        config = load_station_config(args.config, state_dir=args.state_dir or Path(tmp.name) / "state")
        keys_dir, sensor_key, subscriber_key = client_keys_of(args, Path(tmp.name), config.keys_dir)
    except (OSError, ValueError) as exc:
        print(f"musc-edge demo: {exc}", file=sys.stderr)
        return 2
    config = dataclasses.replace(config, frames="tcp://127.0.0.1:*", verdicts="tcp://127.0.0.1:*",
                                 control="tcp://127.0.0.1:*", reject=None, keys_dir=keys_dir)
    station_key = keys_dir / STATION_KEY if keys_dir else None
    if args.http_port is not None:
        try:
            config = dataclasses.replace(config, http=dataclasses.replace(config.http, port=args.http_port))
        except ValueError as exc:
            print(f"musc-edge demo: --http-port: {exc}", file=sys.stderr)
            return 2
    lines = list(config.lines)
    sizes = {p.settings.image_size for p in config.lines.values()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print(f"musc-edge demo: {args.parts} parts on lines {', '.join(lines)} "
          f"(defect rate {args.defect_rate:.0%}), profiles from {config.source}"
          + (f"; CURVE on every socket, keys {keys_dir}" if keys_dir else ""))
    print("loading the lines' encoders (the first run exports EfficientNet-Lite0 to ONNX, about a minute)...",
          flush=True)
    station = Station(config)
    t = time.time()
    try:
        station.start()
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"musc-edge demo: the station did not start: {exc}", file=sys.stderr)
        return 1
    print(f"station up in {time.time() - t:.1f} s: frames {station.endpoints['frames']}, "
          f"verdicts {station.endpoints['verdicts']}, control {station.endpoints['control']}", flush=True)
    if station.endpoints["http"]:
        print(f"dashboard {station.endpoints['http']}/ (open it in a browser while the demo runs)", flush=True)

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    secure_client(sub, subscriber_key, station_key)
    sub.connect(station.endpoints["verdicts"])
    time.sleep(0.3)  # let the subscription reach the PUB socket before the first verdict
    spawn = mp.get_context("spawn")
    truth_queue = spawn.Queue()
    sensors = spawn.Process(target=run_sensors, name="sensors", daemon=True,
                            args=(station.endpoints["frames"], lines, args.parts, args.defect_rate, args.seed,
                                  max(sizes), args.rate, truth_queue, sensor_key, station_key))
    sensors.start()

    tally = Tally(args.parts)
    truths: dict[tuple[str, str], dict] = {}
    pictures: list[Path] = []
    code = 0
    try:
        while tally.count < args.parts:
            if not sub.poll(int(_SILENCE_S * 1000)):
                print(f"musc-edge demo: no verdict for {_SILENCE_S:.0f} s; stopping "
                      f"({tally.count} of {args.parts} parts answered)", file=sys.stderr)
                code = 1
                break
            message = sub.recv_multipart()
            received = time.time()
            header, png = parse_verdict(message)
            while True:  # ground truth of every part sent so far
                try:
                    record = truth_queue.get_nowait()
                except queue.Empty:
                    break
                truths[(record["line"], record["part"])] = record
            truth = truths.pop((header["line"], header["part"]), None)
            if truth is None:  # its record may still be in the pipe
                try:
                    record = truth_queue.get(timeout=2.0)
                    truths[(record["line"], record["part"])] = record
                    truth = truths.pop((header["line"], header["part"]), None)
                except queue.Empty:
                    pass
            tally.add(header, truth, received)
            if not args.quiet:
                print(verdict_line(header, truth, tally.t0, received), flush=True)
            want_picture = header["verdict"] == "ng" or (truth is not None and truth["defect"] != "good")
            if png is not None and want_picture and len(pictures) < args.maps:
                path = write_picture(out, header, png, truth)
                if path is not None:
                    pictures.append(path)
            if tally.count % 10 == 0 or tally.count == args.parts:
                print(tally.line(), flush=True)
        if args.keep_open and station.endpoints["http"]:
            print(f"all parts answered; the dashboard stays at {station.endpoints['http']}/ until Ctrl-C", flush=True)
            try:
                station.wait()
            except KeyboardInterrupt:  # the way out of --keep-open, not a failure
                pass
    except KeyboardInterrupt:
        code = 130
    finally:
        station_status = station.status()
        station.request_stop()
        station.stop()
        sensors.join(timeout=10)
        if sensors.is_alive():
            sensors.terminate()
        ctx.destroy(linger=0)
        tmp.cleanup()

    summary = tally.summary()
    summary["lines"] = {n: {k: s[k] for k in ("window", "capacity", "threshold", "threshold_source", "model",
                                              "profile", "parts_per_s", "latency_ms")}
                        for n, s in station_status["lines"].items()}
    summary["pictures"] = [str(p) for p in pictures]
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print_summary(summary, out)
    if summary["parts"] < args.parts and code == 0:
        code = 1
    return code


def print_summary(s: dict, out: Path) -> None:
    d, lat = s["detection"], s["latency_ms"]
    fmt = lambda v: "-" if v is None else f"{v:.0f} ms"  # noqa: E731
    print("\n=== musc-edge demo summary ===")
    print(f"parts answered      {s['parts']} of {s['expected']} in {s['seconds']:.1f} s "
          f"({s['parts_per_s']:.2f} parts/s)")
    print(f"latency end to end  p50 {fmt(lat['end_to_end_p50'])}, p95 {fmt(lat['end_to_end_p95'])} "
          f"(inside the station: p50 {fmt(lat['station_p50'])}, p95 {fmt(lat['station_p95'])})")
    print("verdicts            " + ", ".join(f"{k} {v}" for k, v in sorted(s["verdicts"].items())))
    print(f"against the truth   defects detected {d['true_ng']}, missed {d['missed']}, "
          f"inconclusive {d['inconclusive_defect']}; good parts passed {d['true_ok']}, "
          f"false NG {d['false_ng']}, inconclusive {d['inconclusive_good']}")
    for name, line in s["lines"].items():
        thr = line["threshold"]
        print(f"line {name:<14} window {line['window']}/{line['capacity']}, threshold "
              f"{'-' if thr is None else f'{thr:.4g}'} ({line['threshold_source']}), profile {line['profile']}")
    if s["pictures"]:
        print(f"anomaly maps        {', '.join(s['pictures'])}")
    print(f"summary             {out / 'summary.json'}")
