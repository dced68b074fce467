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

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from edge_runtime.scoring.tiles import (
    DEFAULT_BUDGET,
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


def cell_squared_min_distances(left: np.ndarray, left_cells: np.ndarray, refs: np.ndarray, ref_cells: np.ndarray,
                               grid: tuple[int, int], radius: int, select=None) -> tuple[np.ndarray, np.ndarray]:
    """Squared minimum distances under the aligned rule for items with any number per cell (3D centres).

    Parameters
    ----------
    left : (L, D) float32, ``augment(query, "left")``; left_cells : (L,) int.
    refs : (M, L2, D) float32, ``augment(refs, "right")``; ref_cells : (M, L2) int.
        Only the references in ``select`` are read.
    select : (M',) int indices into ``refs`` (default: all M), in output order.

    Returns
    -------
    to_refs (L, M') and from_refs (M', L2) float32 squared distances (may round
    slightly below 0); +inf marks an item with no counterpart within ``radius``
    (the caller applies the fallback, ``fill_unmatched``).

    Per grid cell, the items of every reference there meet the query items of
    the (2r + 1)^2 cells around it: one product of exactly the pairs in range.
    The cells are a Python loop (a few hundred products), so the gain over
    global matching grows with the width.
    """
    h, w = grid
    _, l2, d = refs.shape
    select = np.arange(refs.shape[0]) if select is None else np.asarray(select, dtype=np.int64)
    m, l = select.size, left.shape[0]
    # The selected references' items sorted by (cell, reference): each cell one run of rows, each reference a run in it
    key = np.asarray(ref_cells, np.int64)[select].ravel() * m + np.repeat(np.arange(m), l2)
    order = np.argsort(key, kind="stable")
    key = key[order]
    items = select[order // l2] * l2 + order % l2  # rows of refs.reshape(-1, D)
    runs = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    run_ref = key[runs] % m
    cell_rows = np.searchsorted(key // m, np.arange(h * w + 1))
    cell_runs = np.searchsorted(key[runs] // m, np.arange(h * w + 1))
    # The query items around each cell: every query item listed under the (2r + 1)^2 cells around its own
    y, x = _yx(left_cells, grid)
    off = np.arange(-radius, radius + 1)
    ny, nx = y[:, None, None] + off[None, :, None], x[:, None, None] + off[None, None, :]
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    around = (ny * w + nx)[inside]
    query = np.broadcast_to(np.arange(l)[:, None, None], inside.shape)[inside]
    by_cell = np.argsort(around, kind="stable")
    query = query[by_cell]
    cell_queries = np.searchsorted(around[by_cell], np.arange(h * w + 1))

    flat = refs.reshape(-1, d)
    to_refs = np.full((m, l), np.inf, np.float32).ravel()  # (M', L) flat: one index per (reference, query item)
    from_refs = np.full((m, l2), np.inf, np.float32)
    rows_from = from_refs.ravel()  # row order[i] of it: sorted item i
    busy = (np.diff(cell_rows) > 0) & (np.diff(cell_queries) > 0)
    with one_blas_thread():
        for c in np.flatnonzero(busy):
            r0, r1 = cell_rows[c], cell_rows[c + 1]
            qs = query[cell_queries[c] : cell_queries[c + 1]]
            block = flat[items[r0:r1]] @ left[qs].T  # (items here, query items around)
            rows_from[order[r0:r1]] = block.min(axis=1)
            per_ref = np.minimum.reduceat(block, runs[cell_runs[c] : cell_runs[c + 1]] - r0, axis=0)
            at = run_ref[cell_runs[c] : cell_runs[c + 1], None] * l + qs[None]
            to_refs[at] = np.minimum(to_refs[at], per_ref)
    return to_refs.reshape(m, l).T, from_refs


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
    padded[..., d - 2] = np.finfo(np.float32).max
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

    to_refs (L, M) and from_refs (M, L2) squared, from ``aligned_squared_min_distances``;
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
