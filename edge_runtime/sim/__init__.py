"""Simulated product lines: parts with and without defects, as a station sees them.

`iter_parts` feeds the simulated sensors of the demo; `write_line` writes a
line in the MVTec 3D-AD layout for offline evaluation (`musc-edge synth`).
"""
from edge_runtime.sim.generator import Burst, SimPart, defect_plan, iter_parts, render_part, write_line
from edge_runtime.sim.products import DEFECT_KINDS, DEFECTS, FAMILIES, LineSpec, line_spec

__all__ = [
    "Burst", "DEFECTS", "DEFECT_KINDS", "FAMILIES", "LineSpec", "SimPart",
    "defect_plan", "iter_parts", "line_spec", "render_part", "write_line",
]
