"""`musc-edge control`: the operator's side of the control socket.

    musc-edge control status [--line L] [--watch SECONDS]
    musc-edge control switch LINE PROFILE
    musc-edge control reset LINE
    musc-edge control set-threshold LINE VALUE [--source LABEL]
    musc-edge control clear-threshold LINE
    musc-edge control snapshot [--line L]
    musc-edge control verdicts LINE [--last N] [--part ID ...]
    musc-edge control audit [--last N]
    musc-edge control shutdown
    musc-edge control alerts [--line L]
    musc-edge control ack-alert LINE ID
    musc-edge control label LINE PART good|defect
    musc-edge control accept-shift LINE
    musc-edge control pin LINE PART

The endpoint comes from --endpoint, else from --config's [endpoints] control,
else the default tcp://127.0.0.1:5557. A station with [security] needs --key
(the certificate `musc-edge keys add` wrote; it names the station's key, or
give --station-key, or --config to read it from the keys folder). Replies print
as JSON (status as a table unless --json). Also runs as
``python -m edge_runtime.station.ctl``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import zmq

from edge_runtime.stream.protocol import ProtocolError, pack, unpack_reply
from edge_runtime.stream.security import STATION_KEY, secure_client


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musc-edge control", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", help="control endpoint (default: from --config, else tcp://127.0.0.1:5557)")
    p.add_argument("--config", help="station.toml to read the control endpoint from")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the reply")
    p.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    p.add_argument("--key", help="this client's secret certificate (musc-edge keys add --out)")
    p.add_argument("--station-key", help="the station's public certificate (station.key); default: named in --key")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("status")
    s.add_argument("--line")
    s.add_argument("--watch", type=float, metavar="SECONDS", help="repeat every SECONDS until Ctrl-C")
    s = sub.add_parser("switch")
    s.add_argument("line")
    s.add_argument("profile", help="profile name in the station's profiles_dir")
    sub.add_parser("reset").add_argument("line")
    s = sub.add_parser("set-threshold")
    s.add_argument("line")
    s.add_argument("value", type=float)
    s.add_argument("--source", default="manual", help="a short label shown in every verdict (default manual)")
    sub.add_parser("clear-threshold").add_argument("line")
    sub.add_parser("snapshot").add_argument("--line")
    s = sub.add_parser("verdicts")
    s.add_argument("line")
    s.add_argument("--last", type=int, default=20)
    s.add_argument("--part", action="append", dest="parts")
    sub.add_parser("audit").add_argument("--last", type=int, default=20)
    sub.add_parser("shutdown")
    sub.add_parser("alerts", help="the active alerts, per line").add_argument("--line")
    s = sub.add_parser("ack-alert")
    s.add_argument("line")
    s.add_argument("id")
    s = sub.add_parser("label", help="an operator's word on a part: a quarantined good part joins the references")
    s.add_argument("line")
    s.add_argument("part")
    s.add_argument("label", choices=["good", "defect"])
    sub.add_parser("accept-shift", help="the quarantined parts become references (the new look is normal)"
                   ).add_argument("line")
    s = sub.add_parser("pin", help="keep a reference for good")
    s.add_argument("line")
    s.add_argument("part")
    return p


def request_of(args: argparse.Namespace) -> dict:
    cmd = "status" if args.cmd == "alerts" else args.cmd.replace("-", "_")
    req = {"cmd": cmd}
    for key in ("line", "profile", "value", "source", "last", "parts", "id", "part", "label"):
        value = getattr(args, key, None)
        if value is not None:
            req[key] = value
    return req


def ask(endpoint: str, request: dict, timeout: float, key: str | None = None,
        station_key: str | None = None) -> dict:
    """One request, one reply (a fresh REQ socket, so a lost reply cannot wedge it).
    key / station_key: CURVE certificates for a station with [security]."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    secure_client(sock, key, station_key)
    sock.connect(endpoint)
    try:
        sock.send(pack(request))
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no reply from {endpoint} within {timeout:.0f} s (is the station running? "
                               + ("is this key admitted as observer or operator?)" if key else
                                  "does it need a --key?)"))
        return unpack_reply(sock.recv())
    finally:
        sock.close()


def status_table(reply: dict) -> str:
    def num(v, fmt="{:.3g}"):
        return "-" if v is None else fmt.format(v)

    head = (f"{'line':<12} {'product':<10} {'window':>9} {'threshold':>14} {'parts/s':>8} {'p50 ms':>7} "
            f"{'p95 ms':>7} {'queue':>6} {'waiting':>7} {'late':>5} {'dropped':>7} {'errors':>6}")
    rows = [head, "-" * len(head)]
    for name, s in reply["lines"].items():
        lat = s["latency_ms"]
        rows.append(f"{name:<12} {s['product']:<10} {s['window']:>4}/{s['capacity']:<4} "
                    f"{num(s['threshold']):>8} {(s['threshold_source'] or '')[:5]:<5} {s['parts_per_s']:>8.2f} "
                    f"{num(lat['p50'], '{:.0f}'):>7} {num(lat['p95'], '{:.0f}'):>7} "
                    f"{s['queue']:>2}/{s['queue_capacity']:<3} {s['awaiting_frames']:>7} {s['late']:>5} "
                    f"{s['dropped']:>7} {s['counts'].get('verdict_error', 0):>6}")
    st = reply["station"]
    rows.append(f"station up {st['uptime_s']:.0f} s, malformed messages {st['malformed']}, "
                f"published {st['published']}, reject backlog {st['reject_backlog']}, "
                f"CURVE {'on' if st['security']['curve'] else 'off (no [security])'}")
    rows += [f"DEGRADED ({key}): {message}" for key, message in st.get("reasons", {}).items()]
    rows += [f"moved to quarantine: {notice}" for notice in st.get("notices", [])]
    return "\n".join(rows)


def alerts_table(reply: dict) -> str:
    rows = [f"{name} {a['id']} {a['kind']} {time.strftime('%H:%M:%S', time.localtime(a['ts']))}: {a['message']} "
            f"(parts {', '.join(a['parts'])})" for name, s in reply["lines"].items() for a in s["alerts"]]
    return "\n".join(rows) or "no active alerts"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    endpoint, station_key = args.endpoint, args.station_key
    if args.config:
        from edge_runtime.station.config import load_station_config

        config = load_station_config(args.config)
        endpoint = endpoint or config.control
        if station_key is None and config.keys_dir is not None:
            station_key = str(config.keys_dir / STATION_KEY)
    endpoint = endpoint or "tcp://127.0.0.1:5557"
    request = request_of(args)
    watch = getattr(args, "watch", None)
    try:
        while True:
            reply = ask(endpoint, request, args.timeout, args.key, station_key)
            if not reply.get("ok"):
                print(f"musc-edge control: {reply.get('code', 'failed')}: {reply.get('error')}", file=sys.stderr)
                return 1
            if args.cmd == "status" and not args.json:
                print(status_table(reply), flush=True)
            elif args.cmd == "alerts" and not args.json:
                print(alerts_table(reply), flush=True)
            else:
                print(json.dumps(reply, indent=2, default=str), flush=True)
            if not watch:
                return 0
            time.sleep(watch)
            print()
    except (TimeoutError, ProtocolError, OSError, ValueError) as exc:
        print(f"musc-edge control: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
