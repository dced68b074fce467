"""Aligned matching for fixtured parts: a patch meets only the reference patches near its own place.

On a fixtured line every part sits in the same pose, so the patch at grid cell
(y, x) only needs the reference patches within ``radius`` cells of (y, x)
(Chebyshev distance, a (2r + 1)^2 neighbourhood): a defect that looks like some
other place of a normal part (a solder bridge next to a real joint) is no longer
explained away by it, and a reference costs O(L (2r + 1)^2) instead of O(L^2).
3D centres take the cell of their pixel (``point2patch``). An item with no
reference item within the radius (a 3D reference with a hole there) falls back
to the nearest item of that reference anywhere: the rule is "nearest within r
cells, else nearest".

Implementations of the one rule: ``aligned_min_distances`` (the whole block,
masked: the reference for tests and batch scoring) and the two forms the window
uses, both computing exactly the pairs in range, one product per grid cell:
``grid_squared_min_distances`` (2D patches: one item per cell, every reference in
the same layout; the cell's item in every reference against the query's
(2r + 1)^2 patches around it, batched over all cells) and
``cell_squared_min_distances`` (3D centres: any number per cell, a layout per
reference; the items of every reference in the cell against the query items
around it, a loop over the cells).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from edge_runtime.scoring.tiles import (
    DEFAULT_BUDGET,
    NORM_COLUMN,
    augment,
    default_workers,
    distances,
    one_blas_thread,
    run_workers,
)


def check_radius(radius) -> int:
    """``radius`` as an int >= 0 (the profile's ``match_radius``)."""
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"match_radius must be a whole number of patches >= 0, got {radius!r}")
    return int(radius)


def _yx(cells: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return np.divmod(np.asarray(cells, dtype=np.int64), grid[1])


def match_mask(cells_a: np.ndarray, cells_b: np.ndarray, grid: tuple[int, int], radius: int) -> np.ndarray:
    """(La,) and (Lb,) cell indices (row * w + col) -> (La, Lb) bool: within ``radius`` cells of each other."""
    ya, xa = _yx(cells_a, grid)
    yb, xb = _yx(cells_b, grid)
    return (np.abs(ya[:, None] - yb[None]) <= radius) & (np.abs(xa[:, None] - xb[None]) <= radius)


def aligned_min_distances(query: np.ndarray, query_cells: np.ndarray, refs: np.ndarray, ref_cells: np.ndarray,
                          grid: tuple[int, int], radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-reference minimum distances under the aligned rule, from whole blocks (the batch form).

    query : (L, C) float; query_cells : (L,) int. refs : (M, L2, C) float;
    ref_cells : (M, L2) int. Returns to_refs (L, M) and from_refs (M, L2) float32.
    """
    left, right = augment(query, "left"), augment(refs, "right")
    to_refs = np.empty((left.shape[0], refs.shape[0]), np.float32)
    from_refs = np.empty(refs.shape[:2], np.float32)
    for j in range(refs.shape[0]):
        d = left @ right[j].T
        near = match_mask(query_cells, ref_cells[j], grid, radius)
        masked = np.where(near, d, np.inf)
        to_refs[:, j] = np.where(near.any(axis=1), masked.min(axis=1), d.min(axis=1))
        from_refs[j] = np.where(near.any(axis=0), masked.min(axis=0), d.min(axis=0))
    return distances(to_refs, from_refs)


class CellLayout(NamedTuple):
    """Where each item goes in ``cell_squared_min_distances`` (``cell_layout``); the same for every layer."""

    shape: tuple[int, int, int]  # (M', L, L2): selected references, query items, items per reference
    items: np.ndarray  # (M' L2,) rows of refs.reshape(-1, D), sorted by cell, then rank, then longer runs first
    order: np.ndarray  # (M' L2,) sorted row i is item order[i] of from_refs (M', L2)
    row_ref: np.ndarray  # (M' L2,) the (selected) reference of each sorted row
    cell_rank: np.ndarray  # (H W depth + 1,) first sorted row of each (cell, rank)
    depth: int  # 1 + the most items one reference has in one cell
    query: np.ndarray  # query items listed under the (2r + 1)^2 cells around their own, by cell
    cell_queries: np.ndarray  # (H W + 1,) first entry of each cell in ``query``


def _lexicographic_order(*keys: np.ndarray) -> np.ndarray:
    """The stable order sorting by keys[0], then keys[1], ... (small non-negative ints): one stable pass per key
    from the last, each in the narrowest dtype (16-bit keys sort by radix)."""
    order = np.arange(keys[0].size)
    for key in reversed(keys):
        k = key[order]
        order = order[np.argsort(k.astype(np.min_scalar_type(int(k.max(initial=0)))), kind="stable")]
    return order


def cell_layout(left_cells: np.ndarray, ref_cells: np.ndarray, grid: tuple[int, int], radius: int,
                select=None) -> CellLayout:
    """The layout of one arrival for ``cell_squared_min_distances``.

    left_cells : (L,) int, the query items' cells. ref_cells : (M, L2) int, the
    references' items' cells; only the references in ``select`` ((M',) int,
    default all) take part, in that order.
    """
    h, w = grid
    ref_cells = np.asarray(ref_cells, np.int64)
    select = np.arange(ref_cells.shape[0]) if select is None else np.asarray(select, dtype=np.int64)
    m, l2, l = select.size, ref_cells.shape[1], len(left_cells)
    # In a cell: the first item of every reference present, then the second of those with two or more, ...,
    # longer runs first; each rank's rows are then a prefix of rank 0's, so a reference's minimum over its
    # items in the cell is a few slice minima
    cell = ref_cells[select].ravel()
    ref = np.repeat(np.arange(m), l2)
    by_run = _lexicographic_order(cell)  # items come reference by reference: this sorts by (cell, reference)
    run_key = (cell * m + ref)[by_run]
    starts = np.flatnonzero(np.r_[True, run_key[1:] != run_key[:-1]])
    length = np.diff(np.r_[starts, run_key.size])
    rank, length_of = np.empty_like(by_run), np.empty_like(by_run)
    rank[by_run] = np.arange(run_key.size) - np.repeat(starts, length)
    length_of[by_run] = np.repeat(length, length)
    depth = int(length.max(initial=1))
    order = _lexicographic_order(cell, rank, depth - length_of)  # then by reference, as they come
    cell_rank = np.searchsorted(cell[order] * depth + rank[order], np.arange(h * w * depth + 1))
    # Every query item listed under the (2r + 1)^2 cells around its own
    y, x = _yx(left_cells, grid)
    off = np.arange(-radius, radius + 1)
    ny, nx = y[:, None, None] + off[None, :, None], x[:, None, None] + off[None, None, :]
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    around = (ny * w + nx)[inside]
    by_cell = _lexicographic_order(around)
    query = np.broadcast_to(np.arange(l)[:, None, None], inside.shape)[inside][by_cell]
    cell_queries = np.searchsorted(around[by_cell], np.arange(h * w + 1))
    return CellLayout((m, l, l2), select[order // l2] * l2 + order % l2, order, ref[order],
                      cell_rank, depth, query, cell_queries)


def cell_squared_min_distances(left: np.ndarray, refs: np.ndarray, layout: CellLayout,
                               budget: int = DEFAULT_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """Squared minimum distances under the aligned rule for items with any number per cell (3D centres).

    Parameters
    ----------
    left : (L, D) float32, ``augment(query, "left")``.
    refs : (M, L2, D) float32, ``augment(refs, "right")``; only the references
        the layout selected are read.
    layout : ``cell_layout`` of the query's and the references' cells.
    budget : bytes of reference items gathered at once (a run of cells).

    Returns
    -------
    to_refs (L, M') and from_refs (M', L2) float32 squared distances (may round
    slightly below 0); +inf marks an item with no counterpart within the radius
    (the caller applies the fallback, ``fill_unmatched``).

    Per grid cell, the items of every reference there meet the query items of
    the (2r + 1)^2 cells around it: one product of exactly the pairs in range.
    The cells are a Python loop (a few hundred small products), so the gain
    over global matching grows with the width.
    """
    (m, l, l2), depth, cell_rank = layout.shape, layout.depth, layout.cell_rank
    d = refs.shape[-1]
    flat = refs.reshape(-1, d)
    to_refs = np.full(m * l, np.inf, np.float32)  # (M', L) flat: one index per (reference, query item)
    from_sorted = np.full(m * l2, np.inf, np.float32)  # in the layout's row order
    cell_rows, cell_queries = cell_rank[::depth], layout.cell_queries
    busy = np.flatnonzero((np.diff(cell_rows) > 0) & (np.diff(cell_queries) > 0))
    # runs of cells whose reference items fit the budget: one gather each (a gather per cell waits on memory)
    runs = np.split(busy, np.flatnonzero(np.diff((cell_rows[busy] - cell_rows[busy[:1]]) // max(1, budget // (4 * d))))
                    + 1) if busy.size else []
    with one_blas_thread():
        for run in runs:
            ra, qa = cell_rows[run[0]], cell_queries[run[0]]
            here = flat[layout.items[ra : cell_rows[run[-1] + 1]]]
            around = left[layout.query[qa : cell_queries[run[-1] + 1]]]
            for c in run:
                r0, r1, q0, q1 = cell_rows[c], cell_rows[c + 1], cell_queries[c], cell_queries[c + 1]
                block = here[r0 - ra : r1 - ra] @ around[q0 - qa : q1 - qa].T  # (items here, query items around)
                np.min(block, axis=1, out=from_sorted[r0:r1])
                bounds = cell_rank[c * depth : (c + 1) * depth + 1] - r0
                per_ref = block[: bounds[1]]  # rank 0: one row per reference present
                for k in range(1, depth):
                    if bounds[k + 1] == bounds[k]:
                        break
                    n = bounds[k + 1] - bounds[k]
                    np.minimum(per_ref[:n], block[bounds[k] : bounds[k + 1]], out=per_ref[:n])
                at = layout.row_ref[r0 : r0 + bounds[1], None] * l + layout.query[q0:q1][None]
                to_refs[at] = np.minimum(to_refs[at], per_ref)
    from_refs = np.empty(m * l2, np.float32)
    from_refs[layout.order] = from_sorted
    return to_refs.reshape(m, l).T, from_refs.reshape(m, l2)


def grid_squared_min_distances(left: np.ndarray, refs: np.ndarray, grid: tuple[int, int], radius: int,
                               budget: int = DEFAULT_BUDGET, workers: int | None = None
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Squared minimum distances under the aligned rule when every item is one grid cell (2D patches).

    Parameters
    ----------
    left : (L, D) float32, ``augment(query, "left")``, L = H * W patches in row-major order.
    refs : (L, M, D) float32, the references right-augmented, cell-major; a transposed
        view of (M, L, D) serves (each cell's M rows need one common stride, not contiguity).
    budget : bytes of products one worker holds at once (whole grid rows of cells).
    workers : threads sharing the grid rows (default: this process's cores).

    Returns
    -------
    to_refs (L, M) and from_refs (M, L) float32 squared distances (may round
    slightly below 0). Every patch has a counterpart in range (its own cell),
    so nothing is left unmatched.

    Why this shape: per cell the M reference items there meet the (2r + 1)^2
    query patches around it, exactly the pairs the rule needs. A product with
    so few rows (2r + 1 per grid row) would spend its time packing operands;
    (2r + 1)^2 x M keeps both sides of each product wide enough. The query is
    copied 2r + 1 times (each cell's neighbourhood contiguous per column);
    the references are read in place.
    """
    h, w = grid
    l, m, d = refs.shape
    if l != h * w or left.shape != (l, d):
        raise ValueError(f"left {left.shape} and refs {refs.shape} must hold one item per cell of {grid}")
    k = 2 * radius + 1
    # Off the grid: a query item farther than anything from every reference item (its |z|^2 slot meets the
    # references' 1); finite, as a slot not yet filled (zeros) would make inf * 0 = nan
    padded = np.zeros((h + 2 * radius, w + 2 * radius, d), np.float32)
    padded[..., NORM_COLUMN] = np.finfo(np.float32).max
    padded[radius : radius + h, radius : radius + w] = left.reshape(h, w, d)
    columns = np.ascontiguousarray(sliding_window_view(padded, k, axis=1).transpose(1, 0, 3, 2))  # (W, H+2r, k, D)
    s = columns.strides
    around = as_strided(columns, (h, w, k * k, d), (s[1], s[0], s[2], s[3]))  # cell -> its k x k neighbours
    by_cell = refs.reshape(h, w, m, d)
    # (H, k * k, W, M): the neighbour axis outside the grid columns, so every minimum below runs over long rows
    block = np.empty((h, k * k, w, m), np.float32)
    products = block.transpose(0, 2, 1, 3)
    step = max(1, budget // (4 * k * k * w * m))  # grid rows per product
    chunks = list(range(0, h, step))
    workers = max(1, min(workers or default_workers(), len(chunks)))
    to_pad = np.full((workers, h + 2 * radius, w + 2 * radius, m), np.inf, np.float32)
    from_refs = np.empty((h, w, m), np.float32)

    def work(i: int) -> None:
        for y0 in chunks[i::workers]:
            y1 = min(h, y0 + step)
            np.matmul(around[y0:y1], by_cell[y0:y1].transpose(0, 1, 3, 2), out=products[y0:y1])
            np.min(block[y0:y1], axis=1, out=from_refs[y0:y1])
            for j in range(k * k):  # reference cell (y, x) seen from query cell (y + dy - r, x + dx - r)
                dy, dx = divmod(j, k)
                to = to_pad[i, y0 + dy : y1 + dy, dx : dx + w]
                np.minimum(to, block[y0:y1, j], out=to)

    run_workers(work, workers)
    to_refs = to_pad.min(axis=0)[radius : radius + h, radius : radius + w].reshape(l, m)
    return to_refs, from_refs.reshape(l, m).T


def fill_unmatched(to_refs: np.ndarray, from_refs: np.ndarray, left: np.ndarray, reference) -> None:
    """Apply the fallback in place: +inf entries get the reference's nearest item anywhere.

    to_refs (L, M) and from_refs (M, L2) squared, from ``cell_squared_min_distances``;
    left (L, D) the query, augmented; reference(j) -> (L2, D) reference j right-augmented
    (only called for references with unmatched items). Costs O(unmatched items * L).
    """
    lost_rows, lost_cols = np.isinf(to_refs), np.isinf(from_refs)
    for j in np.flatnonzero(lost_rows.any(axis=0) | lost_cols.any(axis=1)):
        right = reference(int(j))
        rows, cols = np.flatnonzero(lost_rows[:, j]), np.flatnonzero(lost_cols[j])
        if rows.size:
            to_refs[rows, j] = (left[rows] @ right.T).min(axis=1)
        if cols.size:
            from_refs[j, cols] = (left @ right[cols].T).min(axis=0)
