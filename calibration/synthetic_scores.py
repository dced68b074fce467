"""Generated product lines of anomaly scores with known labels, for comparing threshold policies.

A line is a stream of parts: good parts' scores are log-normal; defective parts'
scores are log-normal shifted up by ``separation`` (in log units) and wider.
Defects arrive at random with probability ``defect_rate``. Real lines come from
``musc-edge eval`` (its scores.csv has the same columns as :func:`write_scores_csv`).
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from calibration.files import write_text_atomic

# name -> (defect rate, separation in log units): from easy to hard
LINES = {
    "clean": (0.02, 1.2),
    "typical": (0.05, 0.8),
    "subtle": (0.05, 0.4),
    "dirty": (0.20, 0.8),
}


def generated_line(seed: int, n_parts: int = 1000, defect_rate: float = 0.05, separation: float = 0.8,
                   spread: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(scores (n_parts,) float64, labels (n_parts,) int8: 1 = defective), deterministic by seed.

    log(score) of a good part ~ N(0, spread); of a defective part ~ N(separation, 1.5 * spread).
    """
    if n_parts < 1 or not 0 <= defect_rate <= 1 or spread <= 0:
        raise ValueError(f"need n_parts >= 1, 0 <= defect_rate <= 1, spread > 0; got {n_parts}, "
                         f"{defect_rate}, {spread}")
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_parts) < defect_rate).astype(np.int8)
    log_scores = np.where(labels == 1, rng.normal(separation, 1.5 * spread, n_parts), rng.normal(0.0, spread, n_parts))
    return np.exp(log_scores), labels


def write_scores_csv(path: str | os.PathLike, lines: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write ``class,part,defect,label,score`` rows (the evaluation's scores.csv layout), parts in stream order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["class", "part", "defect", "label", "score"])
    for line, (scores, labels) in lines.items():
        for i, (score, label) in enumerate(zip(scores, labels)):
            writer.writerow([line, f"{i:05d}", "defect" if label else "good", int(label), repr(float(score))])
    return write_text_atomic(path, buffer.getvalue())
