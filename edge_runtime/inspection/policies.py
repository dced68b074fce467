"""Decision thresholds per product line: from unlabeled scores, a few labelled parts, or fixed.

A zero-shot anomaly score becomes a verdict only through a threshold: a part is
``ng`` when its score is above the threshold, ``ok`` otherwise. Every threshold
records where it came from (``source``) so that each verdict can carry it.

Policies and the assumption each one makes:

- ``fixed``: a value someone chose.
- ``mad``: median + k * 1.4826 * MAD of the recent window's scores. Assumes most
  recent parts are good (the median and MAD ignore a minority of defects); for
  normally distributed good scores, k = 3 rejects about 0.13 % of good parts.
  With ``margin`` m > 0 the threshold is at least (1 + m) * median: for scores on
  the window scale (a 2D+3D line's, where a typical part scores about 1), whose
  spread a median and MAD of 8-16 references estimate poorly.
- ``quantile``: the (1 - false_reject_rate) quantile of the window's scores.
  Assumes all the window's parts are good, so that the threshold rejects that
  fraction of good parts; defects in the window raise it (fewer false rejects,
  more misses). With fewer than 1 / false_reject_rate scores the quantile lies
  among the window's few largest scores and the rate is not really measured.
- ``labelled-f1``: the threshold that maximises F1 on operator-labelled parts.
- ``labelled-recall``: the highest threshold that still catches ``target_recall``
  of the labelled defective parts (fewest false rejects at that recall).

Fewer than :data:`MIN_SCORES` scores raise :class:`InsufficientScores` (the station
answers ``inconclusive``). All functions are pure, on 1-D arrays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SOURCES = ("fixed", "mad", "quantile", "labelled-f1", "labelled-recall")
MIN_SCORES = 5
# Parameters per policy with their defaults (None: required); the one place a default lives.
DEFAULTS: dict[str, dict[str, float | int | None]] = {
    "fixed": {"value": None},
    "mad": {"k": 6.0, "window": 0, "margin": 0.0},
    "quantile": {"false_reject_rate": 0.01, "window": 0},
    "labelled-f1": {},
    "labelled-recall": {"target_recall": 0.95},
}
# The defaults on scores on the window scale (a 2D+3D line's, fusion "window"), where they replace
# DEFAULTS' for the parameters a profile leaves out: replayed on 64 generated lines at windows 16
# and 39 they caught 65% of the defects against k = 6's 53-54%, with 0.6% of good parts ng against
# 0.7-0.8% (docs/ABLATION.md, "The threshold of a 2D+3D line"). Raw distances (one modality) keep
# DEFAULTS: there a 30% margin is about 10 of their spreads.
WINDOW_SCALE_DEFAULTS: dict[str, dict[str, float]] = {"mad": {"k": 4.0, "margin": 0.3}}
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


class InsufficientScores(ValueError):
    """Too few scores (or labelled parts) to set a threshold."""


@dataclass(frozen=True)
class Threshold:
    """A decision threshold: ``ng`` when score > ``value``.

    ``source``: one of :data:`SOURCES`; ``params``: how it was set (policy
    parameters, the number of scores it saw, ...), numbers or strings only.
    """

    value: float
    source: str
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float, np.floating, np.integer)) \
                or not math.isfinite(self.value):
            raise ValueError(f"threshold value must be a finite number, got {self.value!r}")
        if self.source not in SOURCES:
            raise ValueError(f"unknown threshold source {self.source!r}; expected one of {', '.join(SOURCES)}")
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "params", dict(self.params))

    def verdict(self, score: float) -> str:
        """``"ng"`` if ``score`` is above the threshold, else ``"ok"``."""
        return verdict_for(score, self.value)


def verdict_for(score: float, threshold: float) -> str:
    """The one ok/ng rule: ``"ng"`` when ``score`` > ``threshold``."""
    return "ng" if score > threshold else "ok"


def _scores(scores, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values")
    if len(arr) < MIN_SCORES:
        raise InsufficientScores(f"need at least {MIN_SCORES} {name} to set a threshold, got {len(arr)}")
    return arr


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _margin(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 10:
        raise ValueError(f"margin must be a number in [0, 10) (a share of the median score), got {value!r}")
    return float(value)


def _fraction(value, name: str, allow_one: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (0 < value < 1 or (allow_one and value == 1)):
        raise ValueError(f"{name} must be in (0, {'1]' if allow_one else '1)'}, got {value!r}")
    return float(value)


def fixed(value: float) -> Threshold:
    """A fixed threshold."""
    return Threshold(value, "fixed", {"value": float(value)})


def from_mad(scores, k: float = DEFAULTS["mad"]["k"], margin: float = DEFAULTS["mad"]["margin"]) -> Threshold:
    """max(median + k * 1.4826 * MAD, (1 + margin) * median) of ``scores`` (N,), >= 0;
    assumes most of them are good parts.

    With all scores equal (MAD 0) and no margin the threshold is their value.
    """
    s = _scores(scores)
    k, margin = _positive(k, "k"), _margin(margin)
    median = float(np.median(s))
    mad = float(np.median(np.abs(s - median)))
    value = max(median + k * MAD_TO_SIGMA * mad, (1.0 + margin) * median)
    return Threshold(value, "mad", {"k": k, "margin": margin, "median": median, "mad": mad, "n": len(s)})


def from_quantile(scores, false_reject_rate: float = DEFAULTS["quantile"]["false_reject_rate"]) -> Threshold:
    """The (1 - false_reject_rate) quantile of ``scores`` (N,); assumes they are all good parts."""
    s = _scores(scores)
    frr = _fraction(false_reject_rate, "false_reject_rate")
    return Threshold(float(np.quantile(s, 1.0 - frr)), "quantile", {"false_reject_rate": frr, "n": len(s)})


def _labels(labels, n: int) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) like the scores, got {arr.shape}")
    if arr.dtype != bool and not np.all(np.isin(arr, (0, 1))):
        raise ValueError("labels must be 0 (good) or 1 (defective)")
    return arr.astype(bool)


def _candidates(s: np.ndarray) -> np.ndarray:
    """Thresholds that realise every distinct split of the sorted scores: below all, midpoints, at the top."""
    u = np.unique(s)
    below = u[0] - max(0.01 * (u[-1] - u[0]), 1e-9 * max(abs(u[0]), 1.0))
    return np.concatenate([[below], (u[:-1] + u[1:]) / 2, [u[-1]]])


def _confusion(s: np.ndarray, defective: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(caught defects, false rejects) for each threshold (T,): counts of score > threshold."""
    good_sorted = np.sort(s[~defective])
    bad_sorted = np.sort(s[defective])
    caught = len(bad_sorted) - np.searchsorted(bad_sorted, thresholds, side="right")
    rejected = len(good_sorted) - np.searchsorted(good_sorted, thresholds, side="right")
    return caught, rejected


def from_labels(scores, labels, objective: str = "f1",
                target_recall: float = DEFAULTS["labelled-recall"]["target_recall"]) -> Threshold:
    """Threshold from labelled parts: ``scores`` (N,), ``labels`` (N,) 0 = good, 1 = defective.

    ``objective="f1"`` maximises F1 (ties: the higher threshold, fewer false
    rejects); ``objective="recall"`` takes the highest threshold whose recall on
    the labelled defects is at least ``target_recall``. Thresholds sit midway
    between neighbouring scores. Needs at least one defective part.
    """
    s = _scores(scores)
    defective = _labels(labels, len(s))
    n_bad = int(defective.sum())
    if n_bad == 0:
        raise InsufficientScores("labelled thresholds need at least one defective part among the labels")
    candidates = _candidates(s)
    caught, rejected = _confusion(s, defective, candidates)
    counts = {"n": len(s), "defective": n_bad}
    if objective == "f1":
        f1 = 2 * caught / (2 * caught + rejected + (n_bad - caught))
        best = int(np.flatnonzero(f1 == f1.max())[-1])
        return Threshold(candidates[best], "labelled-f1", {**counts, "f1": float(f1[best])})
    if objective == "recall":
        target = _fraction(target_recall, "target_recall", allow_one=True)
        ok = np.flatnonzero(caught >= math.ceil(target * n_bad - 1e-9))
        best = int(ok[-1])  # the lowest candidate catches every defect, so ok is never empty
        return Threshold(candidates[best], "labelled-recall",
                         {**counts, "target_recall": target, "recall": float(caught[best] / n_bad)})
    raise ValueError(f"unknown objective {objective!r}; expected 'f1' or 'recall'")


def error_rates(scores, labels, threshold: float) -> tuple[float, float]:
    """(false-reject rate, miss rate) of ``threshold`` on labelled ``scores`` (N,); NaN where a class is empty."""
    s = np.asarray(scores, dtype=np.float64)
    defective = _labels(labels, len(s))
    ng = s > threshold
    frr = float(ng[~defective].mean()) if (~defective).any() else math.nan
    miss = float((~ng[defective]).mean()) if defective.any() else math.nan
    return frr, miss


def best_in_hindsight(scores, labels, criterion: str = "min-error") -> float:
    """The threshold a perfect judge would pick on these labelled ``scores`` (N,).

    ``criterion="min-error"``: minimum false-reject rate + miss rate (balanced error);
    ``"max-f1"``: maximum F1. Needs both good and defective parts.
    """
    s = _scores(scores)
    defective = _labels(labels, len(s))
    n_bad, n_good = int(defective.sum()), int((~defective).sum())
    if n_bad == 0 or n_good == 0:
        raise InsufficientScores("the best threshold in hindsight needs both good and defective parts")
    candidates = _candidates(s)
    caught, rejected = _confusion(s, defective, candidates)
    if criterion == "min-error":
        error = rejected / n_good + (n_bad - caught) / n_bad
        return float(candidates[np.flatnonzero(error == error.min())[-1]])
    if criterion == "max-f1":
        f1 = 2 * caught / (2 * caught + rejected + (n_bad - caught))
        return float(candidates[np.flatnonzero(f1 == f1.max())[-1]])
    raise ValueError(f"unknown criterion {criterion!r}; expected 'min-error' or 'max-f1'")


# --------------------------------------------------------------------------- policy

# keys a profile's [threshold] table may carry besides the parameters
_INFO = ("policy", "value", "fitted_on", "line")


@dataclass(frozen=True)
class ThresholdPolicy:
    """How a line sets its threshold: a policy name, its parameters, maybe a stored value.

    ``policy``: one of :data:`SOURCES`; ``params``: the policy's parameters
    (``fixed``: value; ``mad``: k, window, margin; ``quantile``: false_reject_rate,
    window; ``labelled-recall``: target_recall; ``window`` = 0 means all scores
    given); ``value``: a threshold fitted earlier (by ``musc-edge calibrate
    threshold``), which the labelled policies return when no labels are given.
    """

    policy: str
    params: dict = field(default_factory=dict)
    value: float | None = None

    def __post_init__(self) -> None:
        if self.policy not in DEFAULTS:
            raise ValueError(f"unknown threshold policy {self.policy!r}; expected one of {', '.join(DEFAULTS)}")
        allowed = DEFAULTS[self.policy]
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(f"threshold policy {self.policy!r} takes {', '.join(allowed) or 'no parameters'}; "
                             f"unknown: {', '.join(unknown)}")
        params = {k: v for k, v in allowed.items() if v is not None}
        params.update(self.params)
        if self.policy == "fixed" and "value" not in params:
            if self.value is None:
                raise ValueError("threshold policy 'fixed' needs a value")
            params["value"] = self.value
        for key, val in params.items():
            if key == "window":
                if isinstance(val, bool) or not isinstance(val, int) or (val != 0 and val < MIN_SCORES):
                    raise ValueError(f"window must be 0 (all scores) or an integer >= {MIN_SCORES}, got {val!r}")
            elif key == "false_reject_rate":
                _fraction(val, key)
            elif key == "target_recall":
                _fraction(val, key, allow_one=True)
            elif key == "k":
                _positive(val, key)
            elif key == "margin":
                _margin(val)
            elif key == "value":
                Threshold(val, "fixed")  # validates a finite number
        if self.value is not None:
            Threshold(self.value, self.policy)
        object.__setattr__(self, "params", params)

    @classmethod
    def from_table(cls, table: dict) -> "ThresholdPolicy":
        """Parse a profile's ``[threshold]`` table: ``policy = "mad"``, its parameters, optional ``value``."""
        if not isinstance(table, dict) or "policy" not in table:
            raise ValueError("a [threshold] table needs a 'policy' key (one of " + ", ".join(DEFAULTS) + ")")
        params = {k: v for k, v in table.items() if k not in _INFO}
        value = table.get("value")
        if table["policy"] == "fixed" and value is not None:
            params.setdefault("value", value)
        return cls(str(table["policy"]), params, value)

    def fit(self, scores=None, labels=None) -> Threshold:
        """The threshold for these ``scores`` (N,) (and ``labels`` (N,) for the labelled policies).

        ``mad``/``quantile`` use the last ``window`` scores. The labelled policies
        without labels return the stored ``value``; without one they raise.
        """
        name, p = self.policy, self.params
        if name == "fixed":
            return fixed(p["value"])
        if name in ("mad", "quantile"):
            if scores is None:
                raise InsufficientScores(f"threshold policy {name!r} needs the line's recent scores")
            s = np.asarray(scores, dtype=np.float64)
            s = s[-p["window"]:] if p["window"] else s
            found = from_mad(s, p["k"], p["margin"]) if name == "mad" else from_quantile(s, p["false_reject_rate"])
            return Threshold(found.value, found.source, {**found.params, "window": p["window"]})
        if labels is None:
            if self.value is None:
                raise InsufficientScores(f"threshold policy {name!r} needs labelled parts, or a value fitted by "
                                         "`musc-edge calibrate threshold`")
            return Threshold(self.value, name, {**p, "stored": "true"})
        if scores is None:
            raise ValueError(f"threshold policy {name!r} got labels without scores")
        if name == "labelled-f1":
            return from_labels(scores, labels, "f1")
        return from_labels(scores, labels, "recall", p["target_recall"])

    def to_table(self, value: float | None = None, **info) -> dict:
        """The ``[threshold]`` table for a profile: policy, parameters, ``value`` (if any), ``info``."""
        table: dict = {"policy": self.policy, **self.params}
        stored = self.value if value is None else value
        if stored is not None:
            table["value"] = float(stored)
        table.update(info)
        return table


def compare_policies(policies: dict[str, ThresholdPolicy], fit_scores, fit_labels, test_scores, test_labels,
                     ) -> list[dict]:
    """Fit each policy on the first parts of a line, measure it on the rest, beside the best in hindsight.

    ``fit_scores`` (N,); ``fit_labels`` (N,) float, NaN for parts nobody labelled
    (or None): unlabeled policies see all fit scores, labelled policies the
    labelled ones with their labels. Each row: policy name, source, threshold,
    false-reject and miss rates and F1 on ``test_scores``/``test_labels`` (M,).
    Two more rows hold the best thresholds in hindsight on the test parts
    (min false-reject + miss rate, max F1). A policy that cannot fit gets a
    row with a ``note`` and no threshold.
    """
    fit_s = np.asarray(fit_scores, dtype=np.float64)
    fit_l = np.full(len(fit_s), np.nan) if fit_labels is None else np.asarray(fit_labels, dtype=np.float64)
    known = ~np.isnan(fit_l)
    test_s = np.asarray(test_scores, dtype=np.float64)
    test_l = _labels(test_labels, len(test_s))

    def row(name: str, value: float, source: str) -> dict:
        frr, miss = error_rates(test_s, test_l, value)
        ng = test_s > value
        tp, fp, fn = int((ng & test_l).sum()), int((ng & ~test_l).sum()), int((~ng & test_l).sum())
        return {"policy": name, "source": source, "threshold": value, "false_reject_rate": frr,
                "miss_rate": miss, "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
                "frr_plus_miss": frr + miss}

    rows = []
    for name, policy in policies.items():
        try:
            if policy.policy.startswith("labelled"):
                found = policy.fit(fit_s[known], fit_l[known].astype(int))
            else:
                found = policy.fit(fit_s)
        except InsufficientScores as exc:
            rows.append({"policy": name, "source": policy.policy, "threshold": None, "note": str(exc)})
            continue
        rows.append(row(name, found.value, found.source))
    rows.append(row("hindsight min(FRR+miss)", best_in_hindsight(test_s, test_l, "min-error"), "hindsight"))
    rows.append(row("hindsight max F1", best_in_hindsight(test_s, test_l, "max-f1"), "hindsight"))
    return rows


DEFAULT_COMPARISON = {
    "mad k=3": ThresholdPolicy("mad", {"k": 3.0}),
    "quantile FRR=1%": ThresholdPolicy("quantile", {"false_reject_rate": 0.01}),
    "labelled-f1": ThresholdPolicy("labelled-f1"),
    "labelled-recall 95%": ThresholdPolicy("labelled-recall", {"target_recall": 0.95}),
}
