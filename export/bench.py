"""`musc-edge bench encoders`: ONNX Runtime vs torch eager on the CPU, same run, same threads.

For each encoder and batch size: median latency and images per second of the
exported graph on ONNX Runtime (CPU provider, ORT_ENABLE_ALL) and of the same
torch module in eager mode (inference mode), measured in alternating blocks
so that load from other processes hits both alike. Writes encoders.json / .md / .png.

EfficientNet-Lite runs its real weights; encoders whose official checkpoints
are not installed run random weights in the official layout (speed does not
depend on the values). Target: ONNX Runtime >= 1.3x torch eager for
EfficientNet-Lite0 and DINO ViT-S/16 at 224 px.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

from edge_runtime.bench.report import write_report
from edge_runtime.engines.catalog import CATALOG, encoder_spec
from edge_runtime.engines.manifest import Manifest
from edge_runtime.engines.onnx_runtime import OnnxRunner
from export.checkpoints import write_random_checkpoint
from export.exporter import ExportRequest, build_model, example_inputs, export_encoder

TARGETS = {"efficientnet-lite0": 1.3, "dino-vits16": 1.3}
ROUNDS = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="musc-edge bench encoders", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoders", default="efficientnet-lite0,dino-vits16",
                   help="comma-separated catalogue names, or 'all'")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=10, help="timed runs per backend and batch size")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both backends")
    p.add_argument("--out", type=Path, default=Path("out/bench"))
    return p


def _request(name: str, image_size: int, folder: Path) -> tuple[ExportRequest, str]:
    spec = encoder_spec(name)
    weights = None
    if spec.family != "efficientnet-lite":
        weights = write_random_checkpoint(spec, folder / f"{name}.pth")
    sizes = {"image_size": image_size} if spec.modality == "2d" else {}
    return (ExportRequest(encoder=name, out=folder / name, weights=weights, **sizes),
            "official" if weights is None else "random, official layout")


def measure(name: str, batch_sizes: list[int], repeats: int, warmup: int, image_size: int,
            threads: int, folder: Path) -> list[dict]:
    """Rows (one per batch size) of median latencies and throughputs of both backends."""
    request, weights = _request(name, image_size, folder)
    manifest_path = export_encoder(request)
    manifest = Manifest.read(manifest_path)
    model, _ = build_model(request)
    runner = OnnxRunner(manifest_path.parent / manifest.onnx.path, ["CPUExecutionProvider"],
                        manifest.output_names, threads)
    rows = []
    for batch in batch_sizes:
        inputs = example_inputs(request, batch)
        feeds = dict(zip(manifest.input_names, (t.numpy() for t in inputs)))
        times = {"torch": [], "onnxruntime": []}
        runs = {"torch": lambda: model(*inputs), "onnxruntime": lambda: runner.run(feeds)}
        # Blocks, not alternate calls: each backend's thread pool spins after a call
        # and would slow the other one down. Two rounds so slow drift hits both.
        with torch.inference_mode():
            for _ in tqdm(range(ROUNDS), desc=f"{name} batch {batch}", leave=False):
                for backend, run in runs.items():
                    for i in range(warmup + -(-repeats // ROUNDS)):
                        t0 = time.perf_counter()
                        run()
                        if i >= warmup:
                            times[backend].append(time.perf_counter() - t0)
        torch_ms = 1e3 * statistics.median(times["torch"])
        ort_ms = 1e3 * statistics.median(times["onnxruntime"])
        rows.append({"encoder": name, "modality": manifest.modality, "weights": weights, "batch": batch,
                     "torch_ms": torch_ms, "ort_ms": ort_ms,
                     "torch_per_s": 1e3 * batch / torch_ms, "ort_per_s": 1e3 * batch / ort_ms,
                     "speedup": torch_ms / ort_ms})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    names = list(CATALOG) if args.encoders == "all" else [n.strip() for n in args.encoders.split(",") if n.strip()]
    for n in names:
        encoder_spec(n)
    if args.repeats < 1 or args.threads < 1 or any(b < 1 for b in args.batch_sizes):
        print("musc-edge bench encoders: repeats, threads and batch sizes must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="musc-bench-") as tmp:
        for name in tqdm(names, desc="encoders"):
            rows += measure(name, args.batch_sizes, args.repeats, args.warmup, args.image_size, args.threads,
                            Path(tmp))
    targets = {f"{r['encoder']} batch {r['batch']}": {"speedup": r["speedup"], "target": TARGETS[r["encoder"]],
                                                      "met": r["speedup"] >= TARGETS[r["encoder"]]}
               for r in rows if r["encoder"] in TARGETS}
    extra = {"threads": args.threads, "repeats": args.repeats, "image_size": args.image_size,
             "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
             "targets": targets}
    columns = ["encoder", "batch", "weights", "torch_ms", "ort_ms", "torch_per_s", "ort_per_s", "speedup"]
    paths = write_report(args.out, "encoders", rows, columns, extra=extra,
                         plot={"x": "batch", "y": ["torch_per_s", "ort_per_s"], "group": "encoder",
                               "title": f"encoders on CPU ({args.threads} threads, {args.image_size} px)",
                               "xlabel": "batch size", "ylabel": "inputs per second", "logy": True})
    print(paths["table"].read_text())
    for key, t in targets.items():
        print(f"{key}: ONNX Runtime {t['speedup']:.2f}x torch eager (target {t['target']}x) "
              f"{'met' if t['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
