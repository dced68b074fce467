"""`musc-edge serve [--config station.toml]`: run the station until SIGTERM/SIGINT.

Without a config it serves the embedded defaults: one line named "default"
(2D+3D, EfficientNet-Lite0 + FPFH) on the default endpoints of ARCHITECTURE.md.
Logs go to stderr (the journal under systemd).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from edge_runtime.station.config import load_station_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musc-edge serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="station.toml (default: embedded defaults, one line 'default')")
    p.add_argument("--state-dir", help="state directory (overrides the config; default $STATE_DIRECTORY or ./state)")
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING (overrides the config)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_station_config(args.config, state_dir=args.state_dir)
    except (OSError, ValueError) as exc:
        print(f"musc-edge serve: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=(args.log_level or config.log_level).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edge_runtime.station.service import Station

    station = Station(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: station.request_stop())
    try:
        station.run()
    except (OSError, ValueError, RuntimeError) as exc:  # bad profile, busy port, encoder not exportable
        logging.getLogger("musc-edge").error("%s", exc)
        return 1
    return 0
