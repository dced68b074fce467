"""The window's aligned kernels (per grid cell, exact pairs) against the batch rule's whole masked blocks."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.scoring import augment
from edge_runtime.scoring.aligned import (
    aligned_min_distances,
    cell_layout,
    cell_squared_min_distances,
    fill_unmatched,
    grid_squared_min_distances,
)
from edge_runtime.scoring.tiles import distances

grids = st.tuples(st.integers(1, 9), st.integers(1, 9))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), grid=grids, radius=st.integers(0, 3), refs=st.integers(1, 5),
       budget=st.sampled_from([1, 4096, 2**22]), workers=st.integers(1, 3))
def test_grid_kernel_equals_the_batch_rule(seed, grid, radius, refs, budget, workers):
    """2D patches (one per cell): every budget (grid rows per product) and worker count gives the batch rule."""
    rng = np.random.default_rng(seed)
    l = grid[0] * grid[1]
    z = rng.normal(size=(refs + 1, l, 5)).astype(np.float32)
    cells = np.arange(l)
    expect = aligned_min_distances(z[0], cells, z[1:], np.broadcast_to(cells, (refs, l)), grid, radius)
    right = augment(z[1:], "right")
    got = distances(*grid_squared_min_distances(augment(z[0], "left"), right.transpose(1, 2, 0), grid, radius,
                                                budget, workers))
    for g, e in zip(got, expect):
        np.testing.assert_allclose(g, e, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), grid=grids, radius=st.integers(0, 3), refs=st.integers(1, 5),
       items=st.tuples(st.integers(1, 30), st.integers(1, 30)), budget=st.sampled_from([1, 200, 2**22]),
       crowd=st.booleans(), channels=st.sampled_from([6, 300, 5000]))
def test_cell_kernel_equals_the_batch_rule(seed, grid, radius, refs, items, budget, crowd, channels):
    """3D centres (any number per cell, a layout per reference, empty cells, a selection of references):
    the per-cell kernel and the fallback give the batch rule, however many cells share one padded product
    (the layout sets that from the channels it plans for: 16, 3, 1)."""
    rng = np.random.default_rng(seed)
    l = grid[0] * grid[1]
    cells_in = max(1, l // 3) if crowd else l  # crowded: many items in few cells, most cells empty
    z = rng.normal(size=(items[0], 4)).astype(np.float32)
    refs_z = rng.normal(size=(refs, items[1], 4)).astype(np.float32)
    query_cells = rng.integers(0, cells_in, items[0])
    ref_cells = rng.integers(0, l, (refs, items[1]))
    select = rng.permutation(refs)[: rng.integers(1, refs + 1)]
    expect = aligned_min_distances(z, query_cells, refs_z[select], ref_cells[select], grid, radius)
    left, right = augment(z, "left"), augment(refs_z, "right")
    to_refs, from_refs = cell_squared_min_distances(
        left, right, cell_layout(query_cells, ref_cells, grid, radius, channels, select), budget)
    fill_unmatched(to_refs, from_refs, left, lambda j: right[select[j]])
    for g, e in zip(distances(to_refs, from_refs), expect):
        np.testing.assert_allclose(g, e, atol=1e-5)
