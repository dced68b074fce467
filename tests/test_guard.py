"""The guarded reference window on a simulated line with a systematic burst (real encoders, LineInspector).

The line: 44 tiles, parts 16..31 carry the same contamination at the same place.
With the guard the burst stays ng and the threshold stays put; without it the
window learns the burst (the collapse the guard exists to prevent).
"""
import dataclasses

import cv2
import numpy as np
import pytest

from edge_runtime.inspection.features import FeatureExtractor
from edge_runtime.inspection.inspector import LineInspector
from edge_runtime.inspection.settings import InspectionSettings
from edge_runtime.sim.generator import Burst, iter_parts, render_part, write_tiff
from edge_runtime.sim.products import line_spec

# Plain-sum fusion: on a window of only 16 the window-scaled fusion's own turnover noise moves the
# MAD threshold by up to ~22% after the burst (measured; flat during it), which is not the burst's doing.
SETTINGS = InspectionSettings(window=16, min_window=8, groups=256, group_size=32, fusion="sum")
BURST = Burst("contamination", 16, 16)
N_PARTS = 44
BURST_PARTS = range(BURST.start, BURST.start + BURST.length)


@pytest.fixture(scope="module")
def extractor():
    return FeatureExtractor.from_settings(SETTINGS)


@pytest.fixture(scope="module")
def extracted(extractor):
    return [extractor.extract(p.rgb, p.xyz)[0] for p in iter_parts("tile", N_PARTS, 0.0, seed=5, burst=BURST)]


def replay(inspector, extracted, start=0, stop=None):
    out = []
    for i in range(start, len(extracted) if stop is None else stop):
        out += inspector.inspect_features(f"p{i}", i, extracted[i])
    return out


def rates(decisions):
    by = {int(d.part[1:]): d for d in decisions}
    recall = np.mean([by[i].verdict == "ng" for i in BURST_PARTS])
    good = [d for i, d in by.items() if i not in BURST_PARTS and d.verdict in ("ok", "ng")]
    false_ng = np.mean([d.verdict == "ng" for d in good])
    before = np.median([by[i].threshold for i in range(BURST.start - 6, BURST.start)])
    return by, recall, false_ng, before


def test_the_guard_rejects_a_burst_alerts_early_and_keeps_the_threshold(extractor, extracted):
    inspector = LineInspector(SETTINGS, "tile", extractor=extractor)
    decisions = replay(inspector, extracted)
    by, recall, false_ng, before = rates(decisions)
    alerts = [(int(d.part[1:]), a) for d in decisions for a in d.alerts]
    first = min(i for i, _ in alerts if i >= BURST.start)
    during = [by[i].threshold for i in range(BURST.start, N_PARTS)]
    print(f"guard on: burst recall {recall:.2f}, false ng {false_ng:.3f}, first alert +{first - BURST.start}, "
          f"threshold {before:.3f} -> {min(during):.3f}..{max(during):.3f}")
    assert recall >= 0.95 and false_ng <= 0.05
    assert first - BURST.start <= 5
    assert max(abs(t / before - 1) for t in during) <= 0.15
    # the burst never joined the references: it waits in the quarantine; ok parts joined
    assert not any(by[i].reference for i in BURST_PARTS if by[i].verdict == "ng")
    assert all(d.reference == (d.verdict in ("ok", "inconclusive")) for d in decisions)
    assert not set(inspector.window.reference_ids) & {f"p{i}" for i in BURST_PARTS}
    assert [f"p{i}" for i in BURST_PARTS if by[i].verdict == "ng"] == list(inspector.quarantine)
    kinds = {a.kind for _, a in alerts}
    assert {"ng_rate", "recurring_defect"} <= kinds
    status = inspector.status()
    assert {a["id"] for a in status["alerts"]} == {a.id for _, a in alerts}
    assert status["threshold_history"][-1] == [N_PARTS - 1, by[N_PARTS - 1].threshold]
    assert status["window"] == SETTINGS.window and status["quarantine"] == list(inspector.quarantine)


def test_without_the_guard_the_window_learns_the_burst(extractor, extracted):
    inspector = LineInspector(dataclasses.replace(SETTINGS, guard=False), "tile", extractor=extractor)
    by, recall, _, before = rates(replay(inspector, extracted))
    late = np.mean([by[i].verdict == "ng" for i in BURST_PARTS[len(BURST_PARTS) // 2:]])
    highest = max(by[i].threshold for i in BURST_PARTS)
    print(f"guard off: burst recall {recall:.2f}, second half {late:.2f}, threshold {before:.3f} -> {highest:.3f}")
    assert late <= 0.25 and recall < 0.6
    assert highest > 1.15 * before
    assert all(by[i].reference for i in BURST_PARTS)


def test_operator_feedback_moves_parts_between_quarantine_and_references(extractor, extracted):
    inspector = LineInspector(dataclasses.replace(SETTINGS, quarantine=6), "tile", extractor=extractor)
    replay(inspector, extracted, 0, BURST.start + 8)
    quarantined = list(inspector.quarantine)
    assert len(quarantined) == 6 and quarantined[-1] == f"p{BURST.start + 7}"  # bounded: the oldest went first
    first, second = quarantined[:2]
    assert inspector.label(first, "good") and inspector.window.is_reference(first)
    assert not inspector.label(second, "defect") and second in inspector.quarantine
    reference = inspector.window.reference_ids[-1]
    assert not inspector.label(reference, "defect") and reference not in inspector.window
    with pytest.raises(ValueError, match="neither a reference nor quarantined"):
        inspector.label("p999", "good")
    with pytest.raises(ValueError, match="label must be"):
        inspector.label(first, "maybe")
    inspector.pin(inspector.window.reference_ids[0])
    pinned = inspector.status()["pinned"]
    saved = inspector.state()
    resumed = LineInspector(inspector.settings, "tile", extractor=extractor)
    resumed.load_state(saved)
    assert resumed.status() == inspector.status()
    # without an operator the burst keeps being rejected; accept_shift declares it the new normal
    assert all(d.verdict == "ng" for d in replay(resumed, extracted, BURST.start + 8, BURST.start + 10))
    accepted = inspector.accept_shift()
    assert second not in accepted and len(accepted) == 4
    assert all(inspector.window.is_reference(p) for p in accepted)
    after = replay(inspector, extracted, BURST.start + 8, N_PARTS)
    assert np.mean([d.verdict == "ok" for d in after[:BURST.length - 8]]) >= 0.75
    assert inspector.status()["pinned"] == pinned and pinned[0] in inspector.window.reference_ids


def test_golden_references_give_the_first_part_a_verdict_and_stay(tmp_path, extractor, extracted):
    folder = tmp_path / "train" / "good"
    (folder / "rgb").mkdir(parents=True)
    (folder / "xyz").mkdir()
    spec = line_spec("tile", 5, 256)
    for i in range(SETTINGS.min_window):
        part = render_part(spec, 200 + i, 5)
        cv2.imwrite(str(folder / "rgb" / f"{i:03d}.png"), part.rgb[..., ::-1])
        write_tiff(folder / "xyz" / f"{i:03d}.tiff", part.xyz)
    golden = dataclasses.replace(SETTINGS, references=str(folder))
    inspector = LineInspector(golden, "tile", extractor=extractor)
    pinned = inspector.status()["pinned"]
    assert len(pinned) == SETTINGS.min_window and pinned[0] == "golden:000"
    decisions = replay(inspector, extracted, 0, SETTINGS.window + 4)
    assert decisions[0].verdict == "ok" and decisions[0].window == SETTINGS.min_window
    assert all(d.verdict in ("ok", "ng") for d in decisions)
    assert set(pinned) <= set(inspector.window.reference_ids)  # never evicted
    inspector.reset()
    assert inspector.window.reference_ids == pinned
    (folder / "xyz" / "003.tiff").unlink()
    with pytest.raises(ValueError, match="003 without its xyz"):
        LineInspector(golden, "tile", extractor=extractor)
