"""`musc-edge bench scoring`: the cost of mutual scoring against this machine's GEMM rate.

Two measurements, one layer of L patches x C channels:
- per part: score one part against a pool of N others, both directions (what the
  station pays per arrival: `min_distances` + interval mean);
- batch: `mutual_scores` over a whole pool of N.
Each is reported as GFLOP/s of its distance GEMMs (2 L^2 C per pair of parts)
against the float32 matrix-product rate measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from tqdm import tqdm

from edge_runtime.bench.report import write_report
from edge_runtime.scoring import DEFAULT_BUDGET, interval_mean, l2_normalize, min_distances, mutual_scores


def _best_time(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-product rate in GFLOP/s (best of ``repeats``)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    return 2 * size**3 / _best_time(lambda: a @ b, repeats) / 1e9


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="musc-edge bench scoring", description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=784, help="L, patches per part (28 x 28)")
    ap.add_argument("--channels", type=int, default=768, help="C, feature channels")
    ap.add_argument("--pool", type=int, nargs="+", default=[10, 25, 50, 100, 200], help="N for the per-part cost")
    ap.add_argument("--batch", type=int, nargs="+", default=[10, 25, 50], help="N for whole-batch scoring")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-mib", type=int, default=DEFAULT_BUDGET // 2**20)
    ap.add_argument("--out", default="out/bench")
    args = ap.parse_args(argv)

    l, c, budget = args.patches, args.channels, args.budget_mib * 2**20
    rng = np.random.default_rng(0)
    pool = l2_normalize(rng.standard_normal((max(args.pool + args.batch) + 1, l, c), dtype=np.float32))
    peak = matmul_rate()
    rows = []
    jobs = [("per_part", n) for n in args.pool] + [("batch", n) for n in args.batch]
    for kind, n in tqdm(jobs, desc="bench scoring", unit="case"):
        if kind == "per_part":
            def run(n=n):
                to_refs, _ = min_distances(pool[0], pool[1 : n + 1], budget)
                interval_mean(to_refs)
            pairs = n
        else:
            def run(n=n):
                mutual_scores(pool[:n], budget=budget)
            pairs = n * (n - 1) // 2
        seconds = _best_time(run, args.repeats)
        gflops = 2 * l * l * c * pairs / seconds / 1e9
        rows.append({
            "kind": kind, "N": n, "seconds": seconds, "ms": seconds * 1e3, "gflops": gflops,
            "matmul_gflops": peak, "fraction_of_matmul": gflops / peak,
            "target_met": (gflops / peak >= 0.5) if n >= 50 else None,
        })
    paths = write_report(
        args.out, "bench_scoring", rows,
        ["kind", "N", "ms", "gflops", "matmul_gflops", "fraction_of_matmul", "target_met"],
        extra={"L": l, "C": c, "budget_bytes": budget, "target": ">= 0.5 of the matmul rate for N >= 50"},
        plot={"x": "N", "y": ["fraction_of_matmul"], "group": "kind", "xlabel": "pool size N",
              "ylabel": "fraction of float32 matmul rate", "title": f"mutual scoring, L={l}, C={c}"},
    )
    print(paths["table"].read_text())
    print(f"matmul rate: {peak:.1f} GFLOP/s; written: " + ", ".join(str(p) for p in paths.values()))
    return 0
