"""Decision thresholds: the policies' math, their parsing from a profile, and `calibrate threshold`."""
from __future__ import annotations

import json
import sqlite3
import tomllib

import numpy as np
import pytest

from calibration import cli
from edge_runtime.inspection import policies as th
from edge_runtime.inspection.settings import InspectionSettings
from edge_runtime.inspection.threshold import LineThreshold
from calibration.synthetic_scores import LINES, generated_line, write_scores_csv

# --------------------------------------------------------------------------- policies


def test_mad_by_hand():
    found = th.from_mad([1.0, 2.0, 3.0, 4.0, 100.0], k=3.0)
    # median 3, absolute deviations 2, 1, 0, 1, 97 -> MAD 1
    assert found.value == pytest.approx(3.0 + 3.0 * 1.4826)
    assert found.source == "mad" and found.params["n"] == 5 and found.params["k"] == 3.0


def test_mad_false_reject_rate_on_normal_good_parts():
    rng = np.random.default_rng(0)
    window = rng.normal(1.0, 0.1, 20000)
    found = th.from_mad(window, k=3.0)
    fresh = rng.normal(1.0, 0.1, 200000)
    # a normal's upper 3-sigma tail holds 0.135 % of it
    assert (fresh > found.value).mean() == pytest.approx(0.00135, abs=0.0004)


def test_mad_ignores_a_minority_of_defects():
    rng = np.random.default_rng(1)
    clean = rng.normal(1.0, 0.1, 950)
    dirty = np.concatenate([clean, rng.normal(5.0, 0.5, 50)])
    assert th.from_mad(dirty).value == pytest.approx(th.from_mad(clean).value, rel=0.05)


def test_mad_margin_is_a_floor_relative_to_the_median():
    tight = [0.98, 0.99, 1.0, 1.01, 1.02, 1.0, 0.99, 1.01]  # MAD 0.01: median + 4 sigma = 1.059
    found = th.from_mad(tight, k=4.0, margin=0.3)
    assert found.value == pytest.approx(1.3) and found.params["margin"] == 0.3
    assert th.from_mad(tight, k=4.0).value == pytest.approx(1.0 + 4 * 1.4826 * 0.01)
    wide = [0.6, 0.8, 1.0, 1.2, 1.4, 1.0, 0.9, 1.1]  # MAD 0.15: the spread rule is above the floor
    assert th.from_mad(wide, k=4.0, margin=0.3).value == pytest.approx(th.from_mad(wide, k=4.0).value)


def test_mad_margin_skipped_on_raw_scores():
    """A partial part (one modality, raw distances) on a 2D+3D line: its threshold has no margin."""
    line = LineThreshold({"policy": "mad", "k": 4.0, "margin": 0.3})
    scores = np.array([0.50, 0.51, 0.49, 0.50, 0.52, 0.48, 0.50, 0.51])
    assert line.decide(scores)[0] == pytest.approx(1.3 * 0.50)
    assert line.decide(scores, unlabeled_only=True)[0] == pytest.approx(th.from_mad(scores, 4.0).value)
    assert line.raw_policy.fit(scores).params["margin"] == 0.0


def test_window_scaled_line_takes_its_own_mad_defaults():
    scores = np.array([0.95, 1.0, 1.05, 0.98, 1.02, 1.0, 0.97, 1.03])
    scaled, raw = LineThreshold({"policy": "mad"}, window_scaled=True), LineThreshold({"policy": "mad"})
    assert scaled.policy.params["k"] == th.WINDOW_SCALE_DEFAULTS["mad"]["k"] != raw.policy.params["k"]
    floor = 1 + th.WINDOW_SCALE_DEFAULTS["mad"]["margin"]
    assert scaled.decide(scores)[0] == pytest.approx(max(floor * 1.0, th.from_mad(scores, scaled.policy.params["k"]).value))
    assert raw.decide(scores)[0] == pytest.approx(th.from_mad(scores).value)
    # a partial part's raw scores: the table as given, DEFAULTS' k, no margin
    assert scaled.decide(scores, unlabeled_only=True)[0] == pytest.approx(th.from_mad(scores).value)
    # what a profile sets wins over the window-scale defaults
    given = LineThreshold({"policy": "mad", "k": 6.0, "margin": 0.0}, window_scaled=True)
    assert given.decide(scores)[0] == pytest.approx(th.from_mad(scores, 6.0).value)


@pytest.mark.parametrize("line", [{"modalities": ("2d",)}, {"modalities": ("3d",)}, {"fusion": "sum"},
                                  {"fused_score": "map"}])
def test_margin_refused_where_scores_are_raw(line):
    with pytest.raises(ValueError, match="margin applies to scores on the window scale"):
        InspectionSettings(**line, threshold={"policy": "mad", "margin": 0.3})
    InspectionSettings(**line, threshold={"policy": "mad", "margin": 0.0})  # 0 = off: allowed


def test_quantile_meets_its_false_reject_rate_on_good_parts():
    rng = np.random.default_rng(2)
    found = th.from_quantile(rng.lognormal(0, 0.3, 50000), false_reject_rate=0.02)
    fresh = rng.lognormal(0, 0.3, 200000)
    assert (fresh > found.value).mean() == pytest.approx(0.02, abs=0.002)
    assert th.from_quantile(np.arange(101.0), 0.1).value == pytest.approx(90.0)


def _brute_force_f1(scores, labels):
    best = (-1.0, None)
    for t in sorted(set(scores)) + [min(scores) - 1]:
        ng = scores > t
        tp, fp, fn = (ng & labels).sum(), (ng & ~labels).sum(), (~ng & labels).sum()
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best[0]:
            best = (f1, t)
    return best[0]


def test_labelled_f1_matches_brute_force():
    rng = np.random.default_rng(3)
    for trial in range(5):
        scores, labels = generated_line(trial, 80, defect_rate=0.2, separation=0.6)
        found = th.from_labels(scores, labels, "f1")
        assert found.params["f1"] == pytest.approx(_brute_force_f1(scores, labels.astype(bool)))
        assert found.source == "labelled-f1"
    separable = np.r_[rng.uniform(0, 1, 20), rng.uniform(2, 3, 5)]
    labels = np.r_[np.zeros(20), np.ones(5)].astype(int)
    found = th.from_labels(separable, labels, "f1")
    assert separable[:20].max() < found.value < separable[20:].min() and found.params["f1"] == 1.0


def test_labelled_recall_is_the_highest_threshold_reaching_the_target():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    labels = np.array([0, 0, 1, 0, 0, 1, 0, 1, 1, 1])
    found = th.from_labels(scores, labels, "recall", target_recall=0.8)
    # 4 of the 5 defects (0.6, 0.8, 0.9, 1.0) are caught above 0.55, not above 0.65
    assert found.value == pytest.approx(0.55)
    assert found.params["recall"] == pytest.approx(0.8)
    every = th.from_labels(scores, labels, "recall", target_recall=1.0)
    assert every.value == pytest.approx(0.25)


def test_hindsight_and_error_rates():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.4, 0.95])
    labels = np.array([0, 0, 0, 0, 1, 1])
    # between 0.3 and 0.4: one good part of four rejected, no miss; above 0.9: half the defects missed
    assert th.best_in_hindsight(scores, labels, "min-error") == pytest.approx(0.35)
    assert th.error_rates(scores, labels, 0.35) == (0.25, 0.0)
    assert th.error_rates(scores, labels, 0.925) == (0.0, 0.5)
    # F1 at 0.35: tp 2, fp 1 -> 0.8; at 0.925: tp 1, fn 1 -> 0.667
    assert th.best_in_hindsight(scores, labels, "max-f1") == pytest.approx(0.35)


def test_too_few_scores_and_bad_input():
    with pytest.raises(th.InsufficientScores, match="at least 5"):
        th.from_mad([1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="NaN"):
        th.from_quantile([1.0, 2.0, np.nan, 4.0, 5.0])
    with pytest.raises(ValueError, match="false_reject_rate"):
        th.from_quantile(np.arange(10.0), 1.5)
    with pytest.raises(th.InsufficientScores, match="defective"):
        th.from_labels(np.arange(10.0), np.zeros(10, int))
    with pytest.raises(ValueError, match="0 \\(good\\) or 1"):
        th.from_labels(np.arange(10.0), np.full(10, 2))
    with pytest.raises(ValueError, match="unknown threshold source"):
        th.Threshold(1.0, "guess")


# --------------------------------------------------------------------------- profile tables


def test_policy_from_profile_table():
    doc = tomllib.loads('[threshold]\npolicy = "mad"\nk = 4.0\nwindow = 50\n')
    policy = th.ThresholdPolicy.from_table(doc["threshold"])
    scores = np.r_[np.full(100, 100.0), np.random.default_rng(0).normal(1, 0.1, 50)]
    fitted = policy.fit(scores)
    assert fitted.value == pytest.approx(th.from_mad(scores[-50:], 4.0).value)
    assert fitted.source == "mad" and fitted.params["window"] == 50

    fixed = th.ThresholdPolicy.from_table({"policy": "fixed", "value": 0.7})
    assert fixed.fit().value == 0.7 and fixed.fit().source == "fixed"

    stored = th.ThresholdPolicy.from_table({"policy": "labelled-f1", "value": 1.5, "fitted_on": 40, "line": "a"})
    assert stored.fit([1.0] * 10).value == 1.5 and stored.fit().source == "labelled-f1"
    with pytest.raises(th.InsufficientScores, match="labelled parts"):
        th.ThresholdPolicy("labelled-recall").fit(np.arange(10.0))


@pytest.mark.parametrize("table, message", [
    ({"policy": "median"}, "unknown threshold policy"),
    ({"policy": "mad", "q": 0.1}, "unknown: q"),
    ({"policy": "quantile", "false_reject_rate": 0.0}, "false_reject_rate"),
    ({"policy": "fixed"}, "needs a value"),
    ({"policy": "mad", "window": 3}, "window"),
    ({"policy": "mad", "k": -1.0}, "positive"),
    ({"policy": "mad", "margin": -0.1}, "margin"),
    ({"policy": "mad", "margin": True}, "margin"),
    ({"policy": "mad", "margin": "0.3"}, "margin"),
    ({"k": 3.0}, "'policy'"),
])
def test_policy_table_errors(table, message):
    with pytest.raises(ValueError, match=message):
        th.ThresholdPolicy.from_table(table)


def test_policy_table_round_trip():
    policy = th.ThresholdPolicy("labelled-recall", {"target_recall": 0.9})
    table = policy.to_table(1.25, fitted_on=30, line="bolts")
    again = th.ThresholdPolicy.from_table(table)
    assert again.policy == "labelled-recall" and again.params["target_recall"] == 0.9 and again.value == 1.25


# --------------------------------------------------------------------------- comparison on generated lines


def test_no_policy_beats_the_hindsight_threshold():
    for i, (name, (rate, separation)) in enumerate(LINES.items()):
        scores, labels = generated_line(100 + i, 2000, rate, separation)
        rows = th.compare_policies(th.DEFAULT_COMPARISON, scores[:1000], labels[:1000].astype(float),
                                   scores[1000:], labels[1000:])
        hindsight = next(r for r in rows if r["policy"] == "hindsight min(FRR+miss)")
        for row in rows:
            if row["threshold"] is not None:
                assert row["frr_plus_miss"] >= hindsight["frr_plus_miss"] - 1e-12, (name, row)


def test_mad_on_a_clean_line_keeps_false_rejects_low():
    scores, labels = generated_line(7, 4000, defect_rate=0.02, separation=1.2)
    rows = th.compare_policies({"mad": th.ThresholdPolicy("mad", {"k": 3.0})}, scores[:2000], None,
                               scores[2000:], labels[2000:])
    # log-normal good scores (sigma 0.25): k=3 on the raw scale rejects ~1 % of good parts
    assert rows[0]["false_reject_rate"] < 0.02 and rows[0]["miss_rate"] < 0.1


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    write_scores_csv(path, {name: generated_line(i, 400, rate, sep) for i, (name, (rate, sep)) in enumerate(LINES.items())})
    return path


def test_cli_threshold_from_eval_csv(scores_csv, tmp_path, capsys):
    out = tmp_path / "threshold.toml"
    assert cli.main(["threshold", "--line", "typical", "--policy", "quantile", "--false-reject-rate", "0.05",
                     "--scores", str(scores_csv), "--out", str(out)]) == 0
    table = tomllib.loads(out.read_text())["threshold"]
    scores, _ = generated_line(1, 400, *LINES["typical"])
    expected = th.from_quantile(scores, 0.05).value
    assert table["policy"] == "quantile" and table["value"] == pytest.approx(expected, rel=1e-12)
    assert table["fitted_on"] == 400 and table["line"] == "typical"
    assert th.ThresholdPolicy.from_table(table).fit(scores).value == pytest.approx(expected)
    assert "source quantile" in capsys.readouterr().out


def test_cli_labelled_policy_with_separate_labels(tmp_path):
    scores, labels = generated_line(5, 60, 0.2, 1.0)
    (tmp_path / "s.csv").write_text("part,score\n" + "".join(f"p{i},{s}\n" for i, s in enumerate(scores)))
    (tmp_path / "l.csv").write_text("part,label\n" + "".join(
        f"p{i},{'ng' if lab else 'ok'}\n" for i, lab in enumerate(labels) if i < 40))
    out = tmp_path / "t.toml"
    assert cli.main(["threshold", "--line", "x", "--policy", "labelled-f1", "--scores", str(tmp_path / "s.csv"),
                     "--labels", str(tmp_path / "l.csv"), "--out", str(out)]) == 0
    value = tomllib.loads(out.read_text())["threshold"]["value"]
    assert value == pytest.approx(th.from_labels(scores[:40], labels[:40], "f1").value)


def test_cli_threshold_from_sqlite_verdict_log(tmp_path):
    db = tmp_path / "station.sqlite"
    rng = np.random.default_rng(0)
    scores = rng.lognormal(0, 0.2, 30)
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE verdicts(line TEXT, part TEXT, seq INTEGER, verdict TEXT, score REAL, "
                    "threshold REAL, threshold_source TEXT, ts REAL)")
        con.executemany("INSERT INTO verdicts VALUES (?, ?, ?, ?, ?, 1.0, 'fixed', ?)",
                        [("a", f"p{i}", i, "ok", float(s), float(i)) for i, s in enumerate(scores)]
                        + [("a", "x", 99, "inconclusive", None, 99.0), ("b", "y", 1, "ok", 50.0, 1.0)])
    out = tmp_path / "t.toml"
    assert cli.main(["threshold", "--line", "a", "--policy", "mad", "--k", "2.5", "--db", str(db),
                     "--last", "20", "--out", str(out)]) == 0
    assert tomllib.loads(out.read_text())["threshold"]["value"] == pytest.approx(th.from_mad(scores[-20:], 2.5).value)
    assert cli.main(["threshold", "--line", "a", "--policy", "mad", "--k", "2.5", "--margin", "1.0", "--db", str(db),
                     "--out", str(out)]) == 0
    table = tomllib.loads(out.read_text())["threshold"]
    assert table["margin"] == 1.0 and table["value"] == pytest.approx(2.0 * np.median(scores))


def test_cli_compare_writes_table_json_and_plot(scores_csv, tmp_path, capsys):
    report = tmp_path / "report"
    assert cli.main(["threshold", "--line", "dirty", "--policy", "mad", "--scores", str(scores_csv),
                     "--compare", "--labelled", "50", "--report-dir", str(report)]) == 0
    doc = json.loads((report / "threshold_compare_dirty.json").read_text())
    policies = [r["policy"] for r in doc["rows"]]
    assert "hindsight min(FRR+miss)" in policies and "labelled-f1" in policies
    assert doc["split"]["fit_labelled"] == 50
    assert (report / "threshold_compare_dirty.md").read_text().count("|") > 20
    assert (report / "threshold_compare_dirty.png").stat().st_size > 1000
    assert "false_reject_rate" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--line", "nope", "--policy", "mad"], "no scores for line 'nope'"),
    (["--line", "typical", "--policy", "labelled-f1"], None),  # labels present in the eval csv: fine
    (["--line", "typical", "--policy", "fixed"], "needs a value"),
    (["--line", "typical", "--policy", "mad", "--false-reject-rate", "0.1"], "unknown: false_reject_rate"),
])
def test_cli_threshold_errors_write_nothing(scores_csv, tmp_path, capsys, argv, message):
    out = tmp_path / "t.toml"
    rc = cli.main(["threshold", *argv, "--scores", str(scores_csv), "--out", str(out)])
    if message is None:
        assert rc == 0 and out.exists()
        return
    assert rc == 1 and message in capsys.readouterr().err
    assert not out.exists()


def test_cli_labelled_policy_without_labels_fails(tmp_path, capsys):
    (tmp_path / "s.csv").write_text("part,score\n" + "".join(f"p{i},{i}\n" for i in range(20)))
    rc = cli.main(["threshold", "--line", "x", "--policy", "labelled-recall", "--scores", str(tmp_path / "s.csv"),
                   "--out", str(tmp_path / "t.toml")])
    assert rc == 1 and "needs labels" in capsys.readouterr().err
    assert not (tmp_path / "t.toml").exists()
