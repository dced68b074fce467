"""`musc-edge bench <suite>`: benchmarks that write JSON, a markdown table and a plot.

Suites live beside this dispatcher; each exposes ``main(argv) -> int``.
"""
from __future__ import annotations

import importlib
import sys

SUITES = {
    "scoring": "edge_runtime.bench.scoring",
    "arrival": "edge_runtime.bench.arrival",
    "encoders": "export.bench",
    "station": "edge_runtime.bench.station",
    "isolation": "edge_runtime.bench.isolation",
    "faults": "edge_runtime.bench.faults",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in SUITES:
        print("usage: musc-edge bench {" + "|".join(SUITES) + "} [options]", file=sys.stderr)
        return 2
    return int(importlib.import_module(SUITES[argv[0]]).main(argv[1:]) or 0)
