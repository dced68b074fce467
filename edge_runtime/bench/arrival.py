"""`musc-edge bench arrival`: what one new 2D+3D part costs the window, stage by stage.

Per pair of feature widths (2D:3D, each one width or one per layer: narrower
layers zero-padded to the widest, as aggregation does), one new part of L
patches and G centres (``--layers`` layers) arrives in a window holding N others: the whole cost
(`LineWindow.add` + `scores`, global matching, cross-modal enhancement), and
the same work split into its stages, each timed alone on the same features:
- distances_2d, distances_3d: the fused kernel (`squared_min_distances`) and
  the square roots, every layer, against every member; with ``--normals``
  also distances_3n, the default's second 3D stream (the surface normals
  picture, on the patch grid at the 2D widths);
- enhance: `enhance` on the part's per-reference rows, every layer (each 3D stream with 2D);
- other: whole minus the stages (row bookkeeping, augmenting the new part, the
  gathers of its rows).
And ``plain``: the per-part recompute, the whole distance block materialised
and read twice for the minima (as `bench scoring`'s plain), then the same
enhancement. Cases run round-robin; each figure is the best of ``--repeats``.
"""
from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from edge_runtime.bench.report import write_report
from edge_runtime.bench.scoring import plain, round_robin
from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.window import LineWindow
from edge_runtime.scoring import augment, enhance, l2_normalize
from edge_runtime.scoring.tiles import (
    DEFAULT_BUDGET,
    active_width,
    default_workers,
    distances,
    squared_min_distances,
)



def _features(rng: np.random.Generator, n: int, widths: list[int]) -> np.ndarray:
    """(n, layers, max width) float16 normalized features, layer l zero beyond widths[l]."""
    z = np.zeros((n, len(widths), max(widths)), np.float32)
    for layer, c in enumerate(widths):
        z[:, layer, :c] = l2_normalize(rng.standard_normal((n, c), dtype=np.float32))
    return z.astype(np.float16)


def _part(rng: np.random.Generator, grid: tuple[int, int], g: int, c2: list[int], c3: list[int],
          normals: bool) -> PartFeatures:
    """Random features of one part (per-layer widths c2, c3; with ``normals`` a normals stream at c2),
    its centres in random patches."""
    p = grid[0] * grid[1]
    z2, z3 = _features(rng, p, c2), _features(rng, g, c3)
    p2p = rng.integers(0, p, g).astype(np.int32)
    nearest = np.repeat(np.arange(g, dtype=np.int32)[:, None], 3, axis=1)
    return PartFeatures(grid[0] * 8, grid, z2, z3, p2p, rng.integers(0, (grid[0] * 8) ** 2, g).astype(np.int32),
                        nearest, np.full((g, 3), 1 / 3, np.float32), _features(rng, p, c2) if normals else None)


def _cases(parts: list[PartFeatures], budget: int, workers: int) -> dict:
    """{name: callable} for the whole arrival, each stage, and the plain recompute."""
    new, others = parts[-1], parts[:-1]
    mods = ("2d", "3d") + (("3n",) if new.zn is not None else ())
    window = LineWindow(len(parts), mods, budget=budget)
    for i, p in enumerate(others):
        window.add(f"p{i}", p)
    # each layer at the width it uses, as the window multiplies it
    width = {m: [active_width(np.stack([p.features(m)[:, layer] for p in parts])) for layer in range(new.z2.shape[1])]
             for m in mods}
    right = {m: [augment(np.stack([p.features(m)[:, layer, :w] for p in others]), "right")
                 for layer, w in enumerate(width[m])] for m in mods}
    query = {m: [augment(new.features(m)[:, layer, :w], "left") for layer, w in enumerate(width[m])]
             for m in mods}
    pairs = [(m, new.cells(m)) for m in mods[1:]]
    rows = {}

    def whole():
        window.add("new", new)
        window.scores("new")
        window.remove("new")

    def fused(m):
        def run():
            rows[m] = [distances(*squared_min_distances(q, r, budget=budget, workers=workers))[0]
                       for q, r in zip(query[m], right[m])]
        return run

    def cae():
        for m3, p2p in pairs:
            for o2, o3 in zip(rows["2d"], rows[m3]):
                enhance(o2, o3, p2p)

    def recompute():
        for layer in range(new.z2.shape[1]):
            o = {m: distances(plain(query[m][layer], right[m][layer])[0])[0] for m in mods}
            for m3, p2p in pairs:
                enhance(o["2d"], o[m3], p2p)

    for m in mods:
        fused(m)()  # the rows enhance reads
    return {"whole": whole, **{f"distances_{m}": fused(m) for m in mods}, "enhance": cae, "plain": recompute}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="musc-edge bench arrival", description=__doc__.splitlines()[0])
    ap.add_argument("--widths", nargs="+", default=["40,80,192:33", "768:384"],
                    help="2D:3D channels, one width or one per layer (default: EfficientNet-Lite0 + FPFH, "
                         "ViT-B/8 + Point-MAE)")
    ap.add_argument("--grid", type=int, default=28, help="2D patch grid side (L = side^2)")
    ap.add_argument("--centres", type=int, default=1024, help="G, 3D centres per part")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--refs", type=int, default=63, help="N, the window's other parts")
    ap.add_argument("--normals", action="store_true",
                    help="add the embedded default's second 3D stream (normals picture, at the 2D widths)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-kib", type=int, default=DEFAULT_BUDGET // 2**10, help="distance tile per worker")
    ap.add_argument("--out", default="out/bench")
    args = ap.parse_args(argv)
    try:
        pairs = [[[int(c) for c in side.split(",")] for side in w.split(":")] for w in args.widths]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or len(side) not in (1, args.layers) or min(side) < 1
                        for p in pairs for side in p):
        ap.error(f"--widths takes 2D:3D channels (one width or {args.layers}, comma-separated), got {args.widths}")
    pairs = [[side * args.layers if len(side) == 1 else side for side in p] for p in pairs]
    if args.refs < 2:
        ap.error("--refs must be >= 2 (cross-modal enhancement needs two references)")
    budget, workers, grid = args.budget_kib * 2**10, default_workers(), (args.grid, args.grid)
    rng = np.random.default_rng(0)
    stages = ["distances_2d", "distances_3d"] + (["distances_3n"] if args.normals else []) + ["enhance"]
    rows = []
    for spec, (c2, c3) in tqdm(list(zip(args.widths, pairs)), desc="bench arrival", unit="widths"):
        parts = [_part(rng, grid, args.centres, c2, c3, args.normals) for _ in range(args.refs + 1)]
        cases = _cases(parts, budget, workers)
        ms = {k: v * 1e3 for k, v in round_robin(cases, args.repeats).items()}
        rows.append({"widths": spec, "whole_ms": ms["whole"], **{f"{s}_ms": ms[s] for s in stages},
                     "other_ms": ms["whole"] - sum(ms[s] for s in stages), "plain_ms": ms["plain"],
                     "speedup_vs_plain": ms["plain"] / ms["whole"]})
    columns = ["widths", "whole_ms", *[f"{s}_ms" for s in stages], "other_ms", "plain_ms", "speedup_vs_plain"]
    paths = write_report(
        args.out, "bench_arrival", rows, columns,
        extra={"L": grid[0] * grid[1], "G": args.centres, "layers": args.layers, "N": args.refs, "normals": args.normals,
               "budget_bytes": budget, "workers": workers},
        plot={"x": "widths", "y": ["whole_ms", *[f"{s}_ms" for s in stages], "plain_ms"], "xlabel": "2D:3D widths",
              "ylabel": "ms", "logy": True, "title": f"one 2D+3D arrival against {args.refs} parts, {workers} workers"},
    )
    print(paths["table"].read_text())
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
