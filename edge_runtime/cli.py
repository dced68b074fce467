"""The `musc-edge` command: one dispatcher, subcommands live beside their code.

Each entry names a module and a function taking the remaining argv; modules are
imported only when their subcommand runs, so `musc-edge serve` never imports
torch through `musc-edge export`.
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "bench": ("edge_runtime.bench", "run bench scoring | arrival | encoders | station | isolation | faults (JSON, table, plot)"),
    "export": ("export.cli", "export an encoder to ONNX (+TensorRT) with its manifest"),
    "synth": ("edge_runtime.sim.cli", "generate product lines in the MVTec 3D-AD layout"),
    "eval": ("edge_runtime.evaluate.cli", "evaluate on MVTec 3D-AD / Eyecandies layouts (batch, replay)"),
    "ablate": ("edge_runtime.evaluate.ablation", "ablation of the embedded defaults on generated lines (docs/ABLATION.md)"),
    "serve": ("edge_runtime.station.cli", "run the station (ZeroMQ ingest, windows, verdicts)"),
    "demo": ("edge_runtime.station.demo", "simulated sensors + station + subscriber, then a summary"),
    "keys": ("edge_runtime.station.keys", "CURVE keys: the station's pair, admitted clients per role (init, add, list, remove)"),
    "control": ("edge_runtime.station.ctl", "operator commands to a running station: status, switch, reset, set-threshold, clear-threshold, snapshot, verdicts, audit, shutdown"),
    "calibrate": ("calibration.cli", "camera/scanner calibration, decision thresholds"),
}


def usage() -> str:
    lines = ["usage: musc-edge <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"musc-edge: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
