"""`musc-edge synth`: write simulated product lines in the MVTec 3D-AD layout."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from edge_runtime.sim.generator import Burst, write_line
from edge_runtime.sim.preview import preview_parts, write_preview
from edge_runtime.sim.products import DEFECTS, fixtured, line_spec


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="musc-edge synth",
        description="Generate product lines: <out>/<class>/test/<defect>/{rgb,xyz,gt}/NNN.{png,tiff,png}.",
    )
    p.add_argument("--out", required=True, type=Path, help="dataset root")
    p.add_argument("--classes", nargs="+", required=True, help="class names; a family keyword in a name "
                   "(tile, cookie, bagel, potato, foam, gland, ...) picks that kind of product")
    p.add_argument("--parts", type=int, default=60, help="parts per class (default 60)")
    p.add_argument("--defect-rate", type=float, default=0.3, help="fraction of defective parts (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--defects", nargs="+", choices=DEFECTS, help="defects that occur (default: the line's own mix)")
    p.add_argument("--systematic", choices=DEFECTS, metavar="TYPE",
                   help="a systematic burst: this defect at the same place on --burst-len consecutive parts")
    p.add_argument("--burst-start", type=int, help="index of the burst's first part (with --systematic)")
    p.add_argument("--burst-len", type=int, help="parts in the burst (with --systematic)")
    p.add_argument("--fixtured", action="store_true", help="parts held in a fixture: pose jitter below one "
                   "patch of the 28-patch grid (for aligned matching, [scoring] match_radius)")
    p.add_argument("--severity", type=float, default=1.0, help="defect size and strength, as a factor "
                   "(default 1; 0.6: smaller, fainter defects, as many real ones are)")
    p.add_argument("--variation", type=float, default=1.0, help="part-to-part nuisance as a factor: pose, size, "
                   "tint, light, table tilt (default 1; 0 none)")
    p.add_argument("--overwrite", action="store_true", help="replace existing class folders")
    p.add_argument("--preview", action="store_true", help="also write <out>/<class>_preview.png (contact sheet)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.parts < 1:
        parser().error("--parts must be >= 1")
    if not 0.0 <= args.defect_rate <= 1.0:
        parser().error("--defect-rate must be in [0, 1]")
    burst = None
    if args.systematic:
        if args.burst_start is None or args.burst_len is None:
            parser().error("--systematic needs --burst-start and --burst-len")
        try:
            burst = Burst(args.systematic, args.burst_start, args.burst_len)
        except ValueError as exc:
            parser().error(str(exc))
        if burst.start + burst.length > args.parts:
            parser().error(f"the burst (parts {burst.start}..{burst.start + burst.length - 1}) does not fit "
                           f"in --parts {args.parts}")
    elif args.burst_start is not None or args.burst_len is not None:
        parser().error("--burst-start and --burst-len need --systematic TYPE")
    for class_name in args.classes:
        spec = line_spec(class_name, args.seed, args.image_size)
        if args.defects:
            spec = dataclasses.replace(spec, defects=tuple(args.defects))
        if args.fixtured:
            spec = fixtured(spec)
        try:
            spec = dataclasses.replace(spec, severity=args.severity, variation=args.variation)
        except ValueError as exc:
            parser().error(str(exc))
        summary = write_line(args.out, class_name, args.parts, args.defect_rate, args.seed, spec=spec,
                             overwrite=args.overwrite, progress=True, burst=burst)
        kinds = ", ".join(f"{k} {n}" for k, n in summary["by_kind"].items())
        defects = ", ".join(f"{k} {n}" for k, n in summary["by_defect"].items())
        per_part = 1000.0 * summary["seconds"] / max(summary["parts"], 1)
        print(f"{class_name} ({spec.family}): {summary['parts']} parts -> {summary['path']}  "
              f"[{kinds}]  [{defects}]  {per_part:.0f} ms/part")
        if args.preview:
            sheet = write_preview(args.out / f"{class_name}_preview.png",
                                  preview_parts(spec, args.parts, args.defect_rate, args.seed, burst=burst))
            print(f"  preview: {sheet}")
    return 0
