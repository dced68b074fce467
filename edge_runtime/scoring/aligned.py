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
around it, batched over groups of cells padded to one shape).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from edge_runtime.scoring._order import lexicographic_order
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


# Cells per batched product: PAD_CHANNELS // channels, within [1, MAX_CELLS]. Cells of one product share one
# padded shape, and the pads cost in proportion to the width, a product's call does not (measured on one core:
# at 35 channels 16 cells per product are 1.5x faster than 1, at 1026 channels 1 is 1.1x faster than 8)
PAD_CHANNELS = 1024
MAX_CELLS = 16


class CellGroup(NamedTuple):
    """Cells of one padded shape in a ``CellLayout``: n cells, each R = sum(ranks) reference rows x Q query items."""

    cells: int  # n
    ranks: tuple[int, ...]  # rows of each rank, non-increasing (rank k: a reference's (k + 1)-th item in the cell)
    width: int  # Q, query items around each cell (padded)
    rows: int  # first entry of the group in ``CellLayout.rows`` and ``row_items`` (n R entries)
    query: int  # first entry in ``CellLayout.query`` (n Q)
    first: int  # first entry in ``CellLayout.first`` (n ranks[0])


class CellLayout(NamedTuple):
    """Where each item goes in ``cell_squared_min_distances`` (``cell_layout``); the same for every layer.

    The occupied cells come in groups of similar size, each group padded to one shape so that a group is one
    batched product. A pad repeats a real item of its cell (reference rows: the same reference's first item
    there, or the cell's first reference's; query: the cell's first), which leaves every minimum unchanged.
    """

    shape: tuple[int, int, int]  # (M', L, L2): selected references, query items, items per reference
    groups: tuple[CellGroup, ...]
    rows: np.ndarray  # per group cell, its R reference rows, rank by rank: rows of refs.reshape(-1, D)
    row_items: np.ndarray  # the same rows as entries of from_refs (M', L2) flat
    query: np.ndarray  # per group cell, the Q query items within the radius
    first: np.ndarray  # per group cell, its rank-0 rows' references j as j L (their row of to_refs (M', L) flat)


def _positions(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K,) non-negative counts -> (owner, index) of each of their sum(counts) slots: slot i is index-th of owner's."""
    owner = np.repeat(np.arange(counts.size), counts)
    return owner, np.arange(owner.size) - (np.cumsum(counts) - counts)[owner]


def cell_layout(left_cells: np.ndarray, ref_cells: np.ndarray, grid: tuple[int, int], radius: int, channels: int,
                select=None) -> CellLayout:
    """The layout of one arrival for ``cell_squared_min_distances``.

    left_cells : (L,) int, the query items' cells. ref_cells : (M, L2) int, the
    references' items' cells; only the references in ``select`` ((M',) int,
    default all) take part, in that order. channels : D of the augmented
    features the products will multiply (it sets how many cells share one).
    """
    group = min(MAX_CELLS, max(1, PAD_CHANNELS // channels))
    h, w = grid
    hw = h * w
    ref_cells = np.asarray(ref_cells, np.int64)
    select = np.arange(ref_cells.shape[0]) if select is None else np.asarray(select, dtype=np.int64)
    m, l2, l = select.size, ref_cells.shape[1], len(left_cells)
    cell = ref_cells[select].ravel()
    by_cell = lexicographic_order(cell)  # items come reference by reference: sorted by (cell, reference, item)
    counts = np.bincount(cell * m + np.repeat(np.arange(m), l2), minlength=hw * m)  # per (cell, reference)
    run_start = np.cumsum(counts) - counts  # its first item in by_cell
    depth = int(counts.max(initial=1))
    # Per cell its references, most items first: rank k's rows (the (k + 1)-th items) are then the first
    # nk[c, k] of rank 0's, so a reference's minimum over its items is a few slice minima. One key (cell, then
    # fewer items), so one radix pass while it fits 16 bits; ranked[c, p]: the (cell, reference) run
    ranked = lexicographic_order(np.repeat(np.arange(hw) * (depth + 1), m) + depth - counts).reshape(hw, m)
    have = counts[ranked]  # (H W, M') non-increasing per cell
    per_count = np.bincount((np.arange(hw)[:, None] * (depth + 1) + have).ravel(), minlength=hw * (depth + 1))
    nk = np.cumsum(per_count.reshape(hw, depth + 1)[:, ::-1], axis=1)[:, -2::-1]  # (H W, depth): refs with > k
    # Every query item listed under the (2r + 1)^2 cells around its own
    y, x = _yx(left_cells, grid)
    off = np.arange(-radius, radius + 1)
    ny, nx = y[:, None, None] + off[None, :, None], x[:, None, None] + off[None, None, :]
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    around = (ny * w + nx)[inside]
    by_around = lexicographic_order(around)
    query = np.broadcast_to(np.arange(l)[:, None, None], inside.shape)[inside][by_around]
    query_start = np.searchsorted(around[by_around], np.arange(hw + 1))
    near = np.diff(query_start)
    # Groups: cells sorted by query items, then reference items, so a group's cells pad little
    busy = np.flatnonzero((nk[:, 0] > 0) & (near > 0))
    busy = busy[lexicographic_order(near[busy], have[busy].sum(axis=1))]
    starts = np.arange(0, busy.size, group)
    ranks = np.maximum.reduceat(nk[busy], starts, axis=0) if busy.size else np.zeros((0, depth), np.int64)
    width = np.maximum.reduceat(near[busy], starts) if busy.size else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, busy.size])
    of_cell = np.repeat(np.arange(starts.size), sizes)
    # Reference rows: cell i, rank k, position p; a pad repeats an item that is there
    owner, p = _positions(ranks[of_cell].ravel())  # owner: (cell i, rank k) as i depth + k
    k = np.tile(np.arange(depth), busy.size)[owner]
    at = np.repeat(busy * m, depth)[owner] + p  # (cell, p) as an entry of ranked and have, flat
    n_here = have.ravel()[at]
    run = ranked.ravel()[at - p * (n_here == 0)]
    sorted_item = by_cell[run_start[run] + k * (n_here > k)]  # entry of (M', L2)
    rows = (select[:, None] * l2 + np.arange(l2)).ravel()[sorted_item]
    # Query items around each cell, padded by the first
    qcell, s = _positions(width[of_cell])
    qc = busy[qcell]
    query_rows = query[query_start[qc] + np.where(s < near[qc], s, 0)]
    groups, r0, q0, f0 = [], 0, 0, 0
    for n, rk, q in zip(sizes.tolist(), ranks.tolist(), width.tolist()):
        rk = tuple(v for v in rk if v)
        groups.append(CellGroup(n, rk, q, r0, q0, f0))
        r0, q0, f0 = r0 + n * sum(rk), q0 + n * q, f0 + n * rk[0]
    return CellLayout((m, l, l2), tuple(groups), rows, sorted_item, query_rows, run[k == 0] % m * l)


def cell_squared_min_distances(left: np.ndarray, refs: np.ndarray, layout: CellLayout,
                               budget: int = DEFAULT_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """Squared minimum distances under the aligned rule for items with any number per cell (3D centres).

    Parameters
    ----------
    left : (L, D) float32, ``augment(query, "left")``.
    refs : (M, L2, D) float32, ``augment(refs, "right")``; only the references
        the layout selected are read.
    layout : ``cell_layout`` of the query's and the references' cells.
    budget : bytes of gathered reference rows, and of products, held at once
        (the products twice: as computed, and transposed).

    Returns
    -------
    to_refs (L, M') and from_refs (M', L2) float32 squared distances (may round
    slightly below 0); +inf marks an item with no counterpart within the radius
    (the caller applies the fallback, ``fill_unmatched``).

    Per grid cell, the items of every reference there meet the query items of
    the (2r + 1)^2 cells around it: exactly the pairs in range, plus the pads.
    A group's cells are one batched product, gathered into buffers reused
    across the groups (a fresh array per product would fault its pages in).
    """
    (m, l, l2), d = layout.shape, refs.shape[-1]
    flat = refs.reshape(-1, d)
    to_refs = np.full(m * l, np.inf, np.float32)  # (M', L) flat: one index per (reference, query item)
    from_refs = np.full(m * l2, np.inf, np.float32)
    # cells per product: their reference rows and their products each within the budget (at least one cell)
    steps = [max(1, min(budget // (4 * d * sum(g.ranks)), budget // (4 * sum(g.ranks) * g.width), g.cells))
             for g in layout.groups]
    held = np.array([[n * sum(g.ranks), n * g.width, n * sum(g.ranks) * g.width, n * g.ranks[0] * g.width]
                     for g, n in zip(layout.groups, steps)], np.int64).reshape(-1, 4).max(axis=0, initial=0)
    here_buf, around_buf = np.empty((held[0], d), np.float32), np.empty((held[1], d), np.float32)
    block_buf, turned_buf = np.empty(held[2], np.float32), np.empty(held[2], np.float32)
    row_min = np.empty(held[0], np.float32)
    per_ref_buf, targets_buf = np.empty(held[3], np.float32), np.empty(held[3], np.int64)
    # mode="clip" below: the layout's indices are in range, and take then skips its checking pass
    with one_blas_thread():
        for g, step in zip(layout.groups, steps):
            size, q, p0 = sum(g.ranks), g.width, g.ranks[0]
            for a in range(0, g.cells, step):
                n = min(step, g.cells - a)
                rows = slice(g.rows + a * size, g.rows + (a + n) * size)
                here = np.take(flat, layout.rows[rows], axis=0, out=here_buf[: n * size], mode="clip")
                around_index = layout.query[g.query + a * q : g.query + (a + n) * q]
                around = np.take(left, around_index, axis=0, out=around_buf[: n * q], mode="clip")
                block = block_buf[: n * size * q].reshape(n, size, q)
                np.matmul(here.reshape(n, size, d), around.reshape(n, q, d).transpose(0, 2, 1), out=block)
                # a reference row's minimum over the query items: rows of about 50 reduce slowly, while in a
                # transposed copy (in cache) the same minimum is an elementwise one over whole rows
                turned = turned_buf[: n * q * size].reshape(n, q, size)
                np.copyto(turned, block.transpose(0, 2, 1))
                np.min(turned, axis=1, out=row_min[: n * size].reshape(n, size))
                from_refs[layout.row_items[rows]] = row_min[: n * size]
                per_ref = per_ref_buf[: n * p0 * q].reshape(n, p0, q)
                np.copyto(per_ref, block[:, :p0])
                at = p0
                for rank in g.ranks[1:]:
                    np.minimum(per_ref[:, :rank], block[:, at : at + rank], out=per_ref[:, :rank])
                    at += rank
                targets = targets_buf[: n * p0 * q].reshape(n, p0, q)  # (reference, query item) -> entry of to_refs
                np.add(layout.first[g.first + a * p0 : g.first + (a + n) * p0].reshape(n, p0, 1),
                       around_index.reshape(n, 1, q), out=targets)
                np.minimum.at(to_refs, targets.ravel(), per_ref.ravel())
    return to_refs.reshape(m, l).T, from_refs.reshape(m, l2)


def grid_squared_min_distances(left: np.ndarray, refs: np.ndarray, grid: tuple[int, int], radius: int,
                               budget: int = DEFAULT_BUDGET, workers: int | None = None
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Squared minimum distances under the aligned rule when every item is one grid cell (2D patches).

    Parameters
    ----------
    left : (L, D) float32, ``augment(query, "left")``, L = H * W patches in row-major order.
    refs : (L, D, M) float32, the references right-augmented, cell by cell: each cell's M
        references as one (D, M) block with unit stride along M (a prefix of D, a view of a
        wider buffer, serves; contiguous blocks multiply about 2x faster at 33-128 channels
        than the same columns strided across references, docs/ARCHITECTURE.md).
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
    l, d, m = refs.shape
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
    by_cell = refs.reshape(h, w, d, m)
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
            np.matmul(around[y0:y1], by_cell[y0:y1], out=products[y0:y1])
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
