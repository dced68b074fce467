"""The decision threshold of one line: its profile's policy, or an operator's value.

Unlabeled policies ("mad", "quantile") are refitted on the window's re-scored
values at every decision, so the threshold follows the line. Policies with a
stored value ("fixed", and "labelled-*" values written by `musc-edge calibrate
threshold`) apply as they are. An operator's `set_threshold` overrides both
until the next one.
"""
from __future__ import annotations

import numpy as np

from calibration.thresholds import ThresholdPolicy

UNLABELED = ("mad", "quantile")


class LineThreshold:
    """table : the profile's [threshold] table, e.g. {"policy": "mad", "k": 6}."""

    def __init__(self, table: dict):
        self.policy = ThresholdPolicy.from_table(table)
        self._override: tuple[float, str] | None = None
        self._last: tuple[float | None, str] = (None, self.policy.policy)

    def override(self, value: float, source: str = "fixed") -> None:
        if not np.isfinite(value):
            raise ValueError(f"threshold must be a finite number, got {value}")
        self._override = (float(value), str(source))

    def current(self) -> tuple[float | None, str]:
        """The threshold last used (or set) and its source."""
        return self._override or self._last

    def decide(self, scores: np.ndarray, unlabeled_only: bool = False) -> tuple[float, str]:
        """The threshold for a decision among ``scores`` (the window's re-scored values, (N,)).

        unlabeled_only : the scores are on another scale than stored values
        (a partial part scored on one modality); only a policy fitted on them applies.
        Raises ValueError when no threshold applies (too few scores, or a stored
        value on another scale).
        """
        if unlabeled_only and (self._override or self.policy.policy not in UNLABELED):
            raise ValueError("a stored threshold applies to the line's full-modality scores, not to this partial part")
        if self._override:
            return self._override
        t = self.policy.fit(np.asarray(scores, dtype=np.float64))
        self._last = (float(t.value), t.source)
        return self._last

    def state(self) -> dict:
        return {"override": list(self._override) if self._override else None, "last": list(self._last)}

    def load_state(self, state: dict) -> None:
        self._override = tuple(state["override"]) if state.get("override") else None
        self._last = tuple(state.get("last") or (None, self.policy.policy))
