"""Writing benchmark results: one JSON file, one markdown table, one PNG plot."""
from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Sequence

DEFAULT_OUT = "out/bench"  # every suite writes here unless --out says otherwise


def machine_info() -> dict:
    """What the numbers were measured on (cores, CPU, library versions)."""
    import os

    import numpy as np

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Rows of dicts as a markdown table; floats with 4 significant digits."""

    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    head = "| " + " | ".join(columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def write_report(
    out_dir: str | Path,
    name: str,
    rows: Sequence[dict],
    columns: Sequence[str],
    extra: dict | None = None,
    plot: dict | None = None,
) -> dict[str, Path]:
    """Write ``name.json``, ``name.md`` and (with ``plot``) ``name.png`` to ``out_dir``.

    ``plot``: ``{"x": column, "y": [columns], "group": column or None,
    "title": str, "xlabel": str, "ylabel": str, "logy": bool}``; one line per
    (group, y) pair. Returns the written paths by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{name}.json", "table": out / f"{name}.md"}
    doc = {"benchmark": name, "machine": machine_info(), "rows": list(rows), **(extra or {})}
    paths["json"].write_text(json.dumps(doc, indent=2, default=float))
    paths["table"].write_text(f"# {name}\n\n" + markdown_table(rows, columns))
    if plot:
        paths["plot"] = out / f"{name}.png"
        _plot(rows, plot, paths["plot"])
    return paths


def _plot(rows: Sequence[dict], spec: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    group = spec.get("group")
    groups = sorted({r.get(group) for r in rows}, key=str) if group else [None]
    for g in groups:
        sel = [r for r in rows if group is None or r.get(group) == g]
        for y in spec["y"]:
            pts = [(r[spec["x"]], r[y]) for r in sel if r.get(y) is not None]
            if pts:
                xs, ys = zip(*pts)
                label = y if g is None else f"{g} {y}"
                ax.plot(xs, ys, marker="o", label=label)
    ax.set_xlabel(spec.get("xlabel", spec["x"]))
    ax.set_ylabel(spec.get("ylabel", ""))
    ax.set_title(spec.get("title", ""))
    if spec.get("logy"):
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
