"""The incremental window against the batch functions recomputed on its contents."""
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.inspection.part import PartFeatures
from edge_runtime.inspection.window import LineWindow
from edge_runtime.scoring import l2_normalize, mutual_scores, mutual_scores_multimodal

GRID, G, LAYERS = (3, 4), 10, 2


def make_part(rng: np.random.Generator, modalities) -> PartFeatures:
    kw = {}
    if "2d" in modalities:
        kw["z2"] = l2_normalize(rng.normal(size=(GRID[0] * GRID[1], LAYERS, 6))).astype(np.float16)
    if "3d" in modalities:
        kw["z3"] = l2_normalize(rng.normal(size=(G, LAYERS, 5))).astype(np.float16)
        kw["point2patch"] = rng.integers(0, GRID[0] * GRID[1], size=G).astype(np.int32)
        kw["pixel_index"] = np.arange(20, dtype=np.int32)
        kw["idw_index"] = rng.integers(0, G, size=(20, 3)).astype(np.int32)
        kw["idw_weight"] = np.full((20, 3), 1 / 3, dtype=np.float32)
    if "3n" in modalities:  # the normals stream: on the patch grid, its own width
        kw["zn"] = l2_normalize(rng.normal(size=(GRID[0] * GRID[1], LAYERS, 4))).astype(np.float16)
    return PartFeatures(image_size=16, grid=GRID, **kw)


def batch_scores(window: LineWindow) -> dict[str, dict[str, np.ndarray]]:
    parts = [window.part(p) for p in window.members]
    match = {"match_radius": window.match_radius, "grid": GRID}
    if len(window.modalities) > 1:
        z2 = np.stack([p.z2 for p in parts])
        s2, s3 = mutual_scores_multimodal(z2, np.stack([p.z3 for p in parts]), np.stack([p.point2patch for p in parts]),
                                          **match)
        out = {name: {"2d": s2[i], "3d": s3[i]} for i, name in enumerate(window.members)}
        if "3n" in window.modalities:  # paired with 2D again, patch by patch: its own 2D scores, "2n"
            cells = np.broadcast_to(np.arange(z2.shape[1]), z2.shape[:2])
            s2n, s3n = mutual_scores_multimodal(z2, np.stack([p.zn for p in parts]), cells, **match)
            for i, name in enumerate(window.members):
                out[name] |= {"2n": s2n[i], "3n": s3n[i]}
        return out
    (m,) = window.modalities
    cells = np.stack([p.point2patch for p in parts]) if m == "3d" else None
    s = mutual_scores(np.stack([p.features(m) for p in parts]), cells=cells, **match)
    return {name: {m: s[i]} for i, name in enumerate(window.members)}


def assert_scores_equal_batch(window: LineWindow) -> None:
    expect = batch_scores(window)
    for name in window.members:
        got_all = window.scores(name)
        assert set(got_all) == set(expect[name])
        for m, got in got_all.items():
            np.testing.assert_allclose(got, expect[name][m], atol=1e-5)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    capacity=st.integers(3, 7),
    arrivals=st.integers(3, 14),
    modalities=st.sampled_from([("2d",), ("3d",), ("2d", "3d"), ("2d", "3d", "3n")]),
    removals=st.lists(st.integers(0, 13), max_size=3),
)
def test_incremental_scores_equal_batch_after_any_arrivals_and_evictions(seed, capacity, arrivals, modalities, removals):
    rng = np.random.default_rng(seed)
    window = LineWindow(capacity, modalities)
    for t in range(arrivals):
        window.add(f"p{t}", make_part(rng, modalities))
        if t in removals and len(window) > 3:
            window.remove(window.members[int(rng.integers(len(window)))])
        assert len(window) <= capacity
        if len(window) >= 3:
            assert_scores_equal_batch(window)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    capacity=st.integers(3, 6),
    arrivals=st.integers(3, 10),
    modalities=st.sampled_from([("2d",), ("3d",), ("2d", "3d"), ("2d", "3d", "3n")]),
    radius=st.integers(0, 2),
)
def test_aligned_window_equals_the_batch_rule(seed, capacity, arrivals, modalities, radius):
    """Aligned matching: the window's per-cell kernels against whole masked blocks (scoring.aligned), 3D fallbacks included."""
    rng = np.random.default_rng(seed)
    window = LineWindow(capacity, modalities, match_radius=radius)
    for t in range(arrivals):
        window.add(f"p{t}", make_part(rng, modalities))
        if len(window) >= 3:
            assert_scores_equal_batch(window)
    outsider = make_part(rng, modalities)
    pool = [outsider] + [window.part(p) for p in window.members]
    m = modalities[0]
    if m == "2d":
        np.testing.assert_allclose(window.query(outsider, m),
                                   mutual_scores(np.stack([p.z2 for p in pool]), match_radius=radius, grid=GRID)[0],
                                   atol=1e-5)
    restored = LineWindow.from_state(window.state())
    assert restored.match_radius == radius
    restored.add("late", make_part(rng, modalities))
    window.add("late", restored.part("late"))
    for name in window.members:
        for mod, s in window.scores(name).items():
            np.testing.assert_allclose(restored.scores(name)[mod], s, atol=1e-6)


def test_aligned_matching_is_local_and_global_matching_is_not():
    """A patch that matches a reference only far from its own place: found by aligned matching, hidden by global."""
    rng = np.random.default_rng(3)
    base = l2_normalize(rng.normal(size=(12, 1, 6)))
    refs = np.stack([base + 0.01 * rng.normal(size=base.shape) for _ in range(5)])
    part = base.copy()
    part[0] = base[11]  # patch (0, 0) looks like patch (2, 3) of every reference
    pool = l2_normalize(np.concatenate([part[None], refs])).astype(np.float32)
    glob = mutual_scores(pool)[0]
    aligned = mutual_scores(pool, match_radius=1, grid=GRID)[0]
    assert aligned[0] > 10 * glob[0] and aligned[0] == aligned.max()
    np.testing.assert_allclose(aligned[1:], glob[1:], atol=0.05)


def test_eviction_is_oldest_first_and_state_round_trips():
    rng = np.random.default_rng(0)
    window = LineWindow(4, ("2d", "3d"))
    evicted = [window.add(f"p{t}", make_part(rng, ("2d", "3d"))) for t in range(6)]
    assert evicted == [None, None, None, None, "p0", "p1"]
    assert window.members == ["p2", "p3", "p4", "p5"]
    restored = LineWindow.from_state(window.state())
    assert restored.members == window.members
    for name in window.members:
        for m, s in window.scores(name).items():
            np.testing.assert_array_equal(restored.scores(name)[m], s)
    restored.add("p6", make_part(rng, ("2d", "3d")))
    assert restored.members == ["p3", "p4", "p5", "p6"]


def test_query_scores_a_part_without_adding_it():
    rng = np.random.default_rng(1)
    window = LineWindow(8, ("2d",))
    for t in range(5):
        window.add(f"p{t}", make_part(rng, ("2d",)))
    outsider = make_part(rng, ("2d",))
    got = window.query(outsider, "2d")
    pool = np.stack([outsider.z2] + [window.part(p).z2 for p in window.members])
    np.testing.assert_allclose(got, mutual_scores(pool)[0], atol=1e-5)
    assert len(window) == 5


def test_bad_parts_are_refused_with_the_reason():
    rng = np.random.default_rng(2)
    window = LineWindow(4, ("2d", "3d"))
    window.add("a", make_part(rng, ("2d", "3d")))
    with pytest.raises(ValueError, match="lacks 3d"):
        window.add("b", make_part(rng, ("2d",)))
    with pytest.raises(ValueError, match="already in the window"):
        window.add("a", make_part(rng, ("2d", "3d")))
    odd = PartFeatures(image_size=16, grid=(2, 2), z2=np.zeros((4, LAYERS, 6), np.float16), z3=make_part(rng, ("3d",)).z3,
                       point2patch=np.zeros(G, np.int32), pixel_index=np.arange(20, dtype=np.int32),
                       idw_index=np.zeros((20, 3), np.int32), idw_weight=np.full((20, 3), 1 / 3, np.float32))
    with pytest.raises(ValueError, match="do not match"):
        window.add("c", odd)


def test_candidates_are_scored_against_references_only_and_pinned_references_stay():
    rng = np.random.default_rng(3)
    window = LineWindow(4, ("2d",), spare=2)
    for t in range(4):
        window.add(f"r{t}", make_part(rng, ("2d",)), pinned=t == 0)
    window.add("c", make_part(rng, ("2d",)), reference=False)
    window.add("d", make_part(rng, ("2d",)), reference=False)
    assert window.reference_ids == ["r0", "r1", "r2", "r3"] and window.members[-2:] == ["c", "d"]
    # a candidate's scores: against the references alone, as if the other candidate were absent
    pool = np.stack([window.part("c").z2] + [window.part(p).z2 for p in window.reference_ids])
    np.testing.assert_allclose(window.scores("c")["2d"], mutual_scores(pool)[0], atol=1e-5)
    refs = np.stack([window.part(p).z2 for p in window.reference_ids])
    np.testing.assert_allclose(window.scores("r2")["2d"], mutual_scores(refs)[2], atol=1e-5)
    # admitting evicts the oldest reference that is not pinned
    assert window.admit("c") == "r1"
    assert window.reference_ids == ["r0", "r2", "r3", "c"] and window.pinned == ["r0"]
    restored = LineWindow.from_state(window.state())
    assert restored.reference_ids == window.reference_ids and restored.pinned == ["r0"]
    assert not restored.is_reference("d")
    np.testing.assert_array_equal(restored.scores("d")["2d"], window.scores("d")["2d"])
    window.remove("d")
    window.pin("r2")
    window.pin("r3")
    with pytest.raises(ValueError, match="at least one must be free"):
        window.pin("c")
    with pytest.raises(KeyError, match="not a reference"):
        LineWindow(4, ("2d",)).pin("x")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), widths=st.lists(st.integers(0, 6), min_size=LAYERS, max_size=LAYERS),
       wide_at=st.integers(0, 7), modality=st.sampled_from(["2d", "3d"]), radius=st.sampled_from([None, 1]))
def test_zero_padded_layers_score_as_batch_when_a_wider_part_arrives_or_is_queried(seed, widths, wide_at, modality,
                                                                                   radius):
    """Layers zero-padded beyond their width (narrow encoder layers): the window multiplies only the
    channels in use (global or aligned matching), and a part using more of them (arriving, or queried from
    outside) still scores as batch."""
    rng = np.random.default_rng(seed)

    def padded(wide: bool) -> PartFeatures:
        part = make_part(rng, (modality,))
        z = part.features(modality).copy()
        for layer, w in enumerate(widths):
            z[:, layer, z.shape[-1] if wide else w :] = 0
        return dataclasses.replace(part, **{"z2" if modality == "2d" else "z3": z})

    window = LineWindow(5, (modality,), match_radius=radius)
    for t in range(8):
        window.add(f"p{t}", padded(t == wide_at))
        if len(window) >= 3:
            assert_scores_equal_batch(window)
    outsider = padded(True)
    parts = [outsider] + [window.part(p) for p in window.members]
    cells = np.stack([p.point2patch for p in parts]) if modality == "3d" else None
    expect = mutual_scores(np.stack([p.features(modality) for p in parts]), match_radius=radius, grid=GRID,
                           cells=cells)[0]
    np.testing.assert_allclose(window.query(outsider, modality), expect, atol=1e-5)
