"""Shared test fixtures: the conformance vectors recorded from the official MuSc-V2 code."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "conformance" / "vectors"


def load_case(name: str) -> tuple[dict, dict]:
    """(arrays, sidecar) of one conformance case; fails loudly when the vectors are missing."""
    npz = VECTORS / f"{name}.npz"
    if not npz.is_file():
        pytest.fail(f"conformance vector {npz} is missing: the recorded vectors belong in tests/conformance/vectors")
    with np.load(npz) as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads((VECTORS / f"{name}.json").read_text())
