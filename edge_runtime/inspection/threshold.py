"""The decision threshold of one line: its profile's policy, or an operator's value.

Unlabeled policies ("mad", "quantile") are refitted on the window's re-scored
values at every decision, so the threshold follows the line. Policies with a
stored value ("fixed", and "labelled-*" values written by `musc-edge calibrate
threshold`) apply as they are. An operator's `set_threshold` overrides both
until `clear_threshold` (or the next `set_threshold`).

A threshold someone sets (an operator's value, a profile's stored value) must
lie in ``THRESHOLD_RANGE``: a part's score is the maximum of its anomaly map,
whose pixels are interval means of distances between L2-normalized features
(each in [0, 2]); the 2D+3D map is the sum of the two, and re-scoring maps
scores back into the range they came from. A value beyond 4 would pass every
part, a negative one fail every part.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from edge_runtime.inspection.policies import WINDOW_SCALE_DEFAULTS, ThresholdPolicy

log = logging.getLogger(__name__)

UNLABELED = ("mad", "quantile")
# Scores are >= 0: with fusion "sum" a map value is an interval-mean distance between unit vectors
# (at most 2) summed over two modalities (<= 4); with the window-scaled fusion a typical part's peak
# is 1 per modality and a strong defect a few times that. 100 is far above any real score.
THRESHOLD_RANGE = (0.0, 100.0)


def check_threshold(value, what: str = "threshold") -> float:
    """``value`` as a float, or ValueError unless it is a finite number in THRESHOLD_RANGE."""
    lo, hi = THRESHOLD_RANGE
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{what} must be a finite number in [{lo:g}, {hi:g}] (the range of scores), "
                         f"got {str(value)[:32]}")
    return float(value)


def check_threshold_table(table: dict) -> ThresholdPolicy:
    """A profile's [threshold] table as a policy; its stored values must be in THRESHOLD_RANGE."""
    policy = ThresholdPolicy.from_table(table)
    for value in (policy.value, policy.params.get("value")):
        if value is not None:
            check_threshold(value, "[threshold] value")
    return policy


class LineThreshold:
    """table : the profile's [threshold] table, e.g. {"policy": "mad", "k": 6}.

    window_scaled : the line's full parts score on the window scale (InspectionSettings.window_scaled);
    their policy then takes WINDOW_SCALE_DEFAULTS for the parameters the table leaves out, while a
    partial part (one modality, raw distances) is judged with the table as given, without a margin.
    """

    def __init__(self, table: dict, window_scaled: bool = False):
        self.raw_policy = check_threshold_table({k: v for k, v in table.items() if k != "margin"})
        scaled = {**WINDOW_SCALE_DEFAULTS.get(table.get("policy"), {}), **table} if window_scaled else table
        self.policy = check_threshold_table(scaled)
        self._override: tuple[float, str] | None = None
        self._last: tuple[float | None, str] = (None, self.policy.policy)

    def override(self, value: float, source: str = "fixed") -> None:
        self._override = (check_threshold(value), str(source))

    def clear(self) -> None:
        """Back to the profile's policy."""
        self._override = None
        self._last = (None, self.policy.policy)

    def current(self) -> tuple[float | None, str]:
        """The threshold last used (or set) and its source."""
        return self._override or self._last

    def decide(self, scores: np.ndarray, unlabeled_only: bool = False) -> tuple[float, str]:
        """The threshold for a decision among ``scores`` (the window's re-scored values, (N,)).

        unlabeled_only : the scores are on another scale than stored values
        (a partial part scored on one modality: raw distances, so no ``mad`` margin);
        only a policy fitted on them applies.
        Raises ValueError when no threshold applies (too few scores, or a stored
        value on another scale).
        """
        if unlabeled_only and (self._override or self.policy.policy not in UNLABELED):
            raise ValueError("a stored threshold applies to the line's full-modality scores, not to this partial part")
        if self._override:
            return self._override
        policy = self.raw_policy if unlabeled_only else self.policy
        t = policy.fit(np.asarray(scores, dtype=np.float64))
        self._last = (float(t.value), t.source)
        return self._last

    def state(self) -> dict:
        return {"override": list(self._override) if self._override else None, "last": list(self._last)}

    def load_state(self, state: dict) -> None:
        override = tuple(state["override"]) if state.get("override") else None
        if override is not None:
            try:
                check_threshold(override[0], "saved operator threshold")
            except ValueError as exc:  # written before the range was enforced: the policy applies
                log.warning("%s; dropped, the profile's policy applies", exc)
                override = None
        self._override = override
        self._last = tuple(state.get("last") or (None, self.policy.policy))
