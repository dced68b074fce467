"""The alert rules of a line on sequences of decided parts."""
import pytest

from edge_runtime.inspection.alerts import AlertMonitor, AlertSettings

HERE, THERE = (0.3, 0.4), (0.8, 0.7)


def feed(monitor, verdicts, centre=HERE, level=1.0, start=0):
    raised = []
    for i, v in enumerate(verdicts, start):
        raised += [(i, a.kind) for a in monitor.observe(f"p{i}", v, centre if v == "ng" else None, level)]
    return raised


def test_ng_rate_latches_until_acknowledged_then_needs_fresh_parts():
    monitor = AlertMonitor("tile", AlertSettings(recurring_count=10))
    assert feed(monitor, ["ok", "ng", "ok", "ng", "ok"]) == []
    assert feed(monitor, ["ng"], start=5) == [(5, "ng_rate")]
    (alert,) = monitor.active.values()
    assert alert.parts == ["p1", "p3", "p5"] and "3 of the last 10" in alert.message
    assert set(alert.header()) == {"v", "line", "id", "kind", "parts", "message", "ts"}
    assert feed(monitor, ["ng", "ng"], start=6) == []  # latched
    monitor.ack(alert.id)
    assert feed(monitor, ["ng", "ok"], start=8) == []  # the parts before the ack do not count again
    assert feed(monitor, ["ng", "ng"], start=10) == [(11, "ng_rate")]
    with pytest.raises(KeyError, match="no active alert"):
        monitor.ack(alert.id)


def test_recurring_defect_needs_the_same_place_and_a_new_place_is_news():
    monitor = AlertMonitor("tile", AlertSettings(ng_count=10))
    scattered = [(0.1, 0.1), (0.9, 0.9), (0.1, 0.9), (0.9, 0.1)]
    for i, c in enumerate(scattered):
        assert monitor.observe(f"s{i}", "ng", c, 1.0) == []
    assert feed(monitor, ["ng", "ok", "ng", "ng"], centre=HERE) == [(3, "recurring_defect")]
    (alert,) = monitor.active.values()
    assert alert.parts == ["p0", "p2", "p3"] and alert.place == pytest.approx(list(HERE))
    assert feed(monitor, ["ng"] * 3, centre=HERE, start=4) == []  # the same place: already said
    assert feed(monitor, ["ng"] * 3, centre=THERE, start=7) == [(9, "recurring_defect")]


def test_drift_of_the_reference_level_from_where_it_settled():
    settings = AlertSettings(settle=4, drift=0.2)
    monitor = AlertMonitor("tile", settings)
    assert feed(monitor, ["ok"] * 4, level=1.0) == [] and monitor.baseline == 1.0
    assert feed(monitor, ["ok"] * 3, level=1.15, start=4) == []
    assert feed(monitor, ["ok"], level=1.3, start=7) == [(7, "drift")]
    monitor.ack(next(iter(monitor.active)))
    # acknowledged: raised again only once the level stayed away for a settling period
    assert feed(monitor, ["ok"] * (settings.settle - 1), level=1.3, start=8) == []
    assert feed(monitor, ["ok"], level=1.3, start=11) == [(11, "drift")]
    monitor.resettle()
    assert feed(monitor, ["ok"] * 5, level=1.3, start=12) == [] and monitor.baseline == 1.3


def test_state_round_trips_and_bad_settings_name_the_key():
    monitor = AlertMonitor("tile", AlertSettings())
    feed(monitor, ["ng", "ng", "ok", "ng"])
    other = AlertMonitor("tile", AlertSettings())
    other.load_state(monitor.state())
    assert [a.header() for a in other.active.values()] == [a.header() for a in monitor.active.values()]
    assert feed(other, ["ng"] * 3, centre=THERE, start=4) == feed(monitor, ["ng"] * 3, centre=THERE, start=4)
    with pytest.raises(ValueError, match="ng_count"):
        AlertSettings(ng_count=11, ng_last=10)
    with pytest.raises(ValueError, match="unknown keys rate"):
        AlertSettings.from_table({"rate": 3})
