"""`musc-edge eval`: metrics of MuSc-V2 on MVTec 3D-AD / Eyecandies layouts, batch and replay."""
from __future__ import annotations

import argparse
import sys

from edge_runtime.evaluate.run import Combination, evaluate
from edge_runtime.inspection.settings import PAPER, InspectionSettings


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="musc-edge eval", description=__doc__)
    ap.add_argument("--dataset", choices=["mvtec3d", "eyecandies"], default="mvtec3d")
    ap.add_argument("--root", required=True, help="dataset root (one folder per class)")
    ap.add_argument("--classes", nargs="+", help="classes to evaluate (default: all found)")
    ap.add_argument("--modality", nargs="+", default=["2d", "3d", "2d+3d"], choices=["2d", "3d", "2d+3d"],
                    help="one or more (default: all three, fusion beside each modality); features are extracted once")
    ap.add_argument("--mode", nargs="+", default=["batch"], choices=["batch", "replay"])
    ap.add_argument("--window", type=int, nargs="+", default=[InspectionSettings.window], help="replay window sizes N")
    ap.add_argument("--baseline", action="store_true",
                    help="also score the plain mutual-scoring baseline on the same parts (batch), side by side in summary.md")
    ap.add_argument("--preset", choices=["embedded", "paper"], default="embedded",
                    help="scoring choices: the embedded defaults, or MuSc-V2's own (SNAMD 1/3/5, CAE, RsCon, plain sum)")
    ap.add_argument("--subset", type=int, help="batch: score pools of this many parts instead of the whole class")
    ap.add_argument("--encoder2d", default="default", help="2D encoder manifest (default: EfficientNet-Lite0)")
    ap.add_argument("--encoder3d",
                    help="3D encoder manifest, or fpfh / normals / fpfh+normals (weight-free: FPFH descriptors, "
                         "the surface normals drawn as an image for the 2D encoder, or both on a 2D+3D line); "
                         "default: the embedded one, fpfh with --preset paper (MuSc-V2 has one 3D stream)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--groups", type=int, default=InspectionSettings.groups,
                    help="3D group centres per part (default: the line's, InspectionSettings.centres)")
    ap.add_argument("--group-size", type=int, default=InspectionSettings.group_size)
    ap.add_argument("--pooling-3d", choices=["channel", "reference"], default="channel",
                    help="3D aggregation pooling: per channel, or as the official code (for reproducing its tables)")
    ap.add_argument("--guard", choices=["on", "off"], default="on",
                    help="replay: only parts decided ok become references (on), or every part joins (off)")
    ap.add_argument("--overlays", type=int, default=6, help="anomaly-map pictures per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--match-radius", type=int, help="aligned matching for fixtured parts (patches); default global")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    mods = sorted({m for spec in args.modality for m in spec.split("+")})
    encoder_3d = args.encoder3d or ("fpfh" if args.preset == "paper" else InspectionSettings.encoder_3d)
    settings = InspectionSettings(
        modalities=tuple(mods), encoder_2d=args.encoder2d, encoder_3d=encoder_3d, image_size=args.image_size,
        groups=args.groups, group_size=args.group_size, pooling_3d=args.pooling_3d, window=max(args.window + [8]),
        guard=args.guard == "on",
        match_radius=args.match_radius,
        **(PAPER if args.preset == "paper" else {}),
    )
    combos = [Combination(m, "batch") for m in args.modality if "batch" in args.mode]
    combos += [Combination(m, "replay", w) for m in args.modality if "replay" in args.mode for w in args.window]
    try:
        docs = evaluate(args.dataset, args.root, args.classes, combos, settings, args.out, args.subset,
                        args.overlays, args.seed, baseline=args.baseline)
    except (FileNotFoundError, ValueError) as exc:
        print(f"musc-edge eval: {exc}", file=sys.stderr)
        return 1
    for key, doc in docs.items():
        m = doc["mean"]
        print(f"{key:>22}: image AUROC {100 * m['image_auroc']:.2f}  AUPRO {100 * m['aupro']:.2f}  "
              f"pixel AP {100 * m['pixel_ap']:.2f}")
    print(f"written to {args.out}")
    return 0
