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
uses. ``grid_squared_min_distances`` (2D patches: one item per cell, every
reference in the same layout) computes exactly the needed pairs: per cell, its
(2r + 1)^2 neighbours in the query against that cell's item in every reference,
one (2r + 1)^2 x M product. ``aligned_squared_min_distances`` (3D centres: any
number of items per cell, a layout per reference) cuts the grid into square
tiles; each tile's items meet, in one matrix product per tile, the reference
items of its halo (the tile grown by ``radius``) laid out per tile by
``halo_members``, and a mask drops the pairs out of range.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from edge_runtime.scoring.tiles import DEFAULT_BUDGET, augment, default_workers, distances, run_workers


def check_radius(radius) -> int:
    """``radius`` as an int >= 0 (the profile's ``match_radius``)."""
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"match_radius must be a whole number of patches >= 0, got {radius!r}")
    return int(radius)


def tile_size(radius: int) -> int:
    """Cells per tile side: a halo of 2 * radius around it costs at most 4x the tile's own items."""
    return max(4, 2 * radius)


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


def halo_side(radius: int) -> int:
    """Cells per side of a tile's halo: the tile grown by radius on every side."""
    return tile_size(radius) + 2 * radius


def _tiles(grid: tuple[int, int], radius: int) -> tuple[int, int, int]:
    b = tile_size(radius)
    return b, -(-grid[0] // b), -(-grid[1] // b)


def _padded(groups: list[np.ndarray], k: int | None) -> np.ndarray:
    width = max([len(g) for g in groups] + [k or 1])
    out = np.full((len(groups), width), -1, dtype=np.int32)
    for t, g in enumerate(groups):
        out[t, : len(g)] = g
    return out


def tile_members(cells: np.ndarray, grid: tuple[int, int], radius: int) -> np.ndarray:
    """(L,) cells -> (T, K) int32: the items whose cell lies in each tile, -1 padded."""
    b, _, tw = _tiles(grid, radius)
    y, x = _yx(cells, grid)
    tile = (y // b) * tw + x // b
    return _padded([np.flatnonzero(tile == t) for t in range(_tiles(grid, radius)[1] * tw)], None)


def _positions(cells: np.ndarray, members: np.ndarray, grid: tuple[int, int], radius: int, halo: bool) -> np.ndarray:
    b, _, tw = _tiles(grid, radius)
    side = b + 2 * radius if halo else b
    ty, tx = np.divmod(np.arange(members.shape[0]), tw)
    y, x = _yx(gather(np.asarray(cells), members), grid)
    origin_y = (ty * b - (radius if halo else 0))[:, None]
    origin_x = (tx * b - (radius if halo else 0))[:, None]
    pos = (y - origin_y) * side + (x - origin_x)
    return np.where(members >= 0, pos, side * side).astype(np.int16)


def halo_positions(cells: np.ndarray, members: np.ndarray, grid: tuple[int, int], radius: int) -> np.ndarray:
    """(L,) cells and (T, K) halo_members -> (T, K) int16: each item's cell within its tile's halo
    (row * (b + 2r) + col), (b + 2r)^2 where padded. What the kernel's mask is looked up by."""
    return _positions(cells, members, grid, radius, halo=True)


def _penalty(radius: int) -> np.ndarray:
    """(b * b, h * h + 1) float32: 0 where a tile cell and a halo cell are within radius, else +inf
    (the last column: padding)."""
    b, h = tile_size(radius), halo_side(radius)
    qy, qx = np.divmod(np.arange(b * b), b)
    hy, hx = np.divmod(np.arange(h * h), h)
    near = (np.abs(qy[:, None] + radius - hy[None]) <= radius) & (np.abs(qx[:, None] + radius - hx[None]) <= radius)
    return np.concatenate([np.where(near, 0.0, np.inf), np.full((b * b, 1), np.inf)], axis=1).astype(np.float32)


def halo_members(cells: np.ndarray, grid: tuple[int, int], radius: int, k: int | None = None) -> np.ndarray:
    """(L,) cells -> (T, K) int32: the items within ``radius`` cells of each tile, -1 padded to at least k."""
    b, th, tw = _tiles(grid, radius)
    y, x = _yx(cells, grid)
    groups = []
    for ty in range(th):
        for tx in range(tw):
            inside = ((y >= ty * b - radius) & (y < (ty + 1) * b + radius)
                      & (x >= tx * b - radius) & (x < (tx + 1) * b + radius))
            groups.append(np.flatnonzero(inside))
    return _padded(groups, k)


HALO_COPIES = 4  # tiles whose halo holds one cell: at most 2 per axis, as tile_size >= 2 * radius


def halo_slots(halo: np.ndarray, n_items: int) -> np.ndarray:
    """(T, K) halo_members -> (L2, HALO_COPIES) int32: flat positions t * K + k of each item in the halo
    layout, padded with T * K (a slot that holds +inf). Turns the column minima back into items."""
    t, k = halo.shape
    flat = np.flatnonzero(halo.ravel() >= 0)
    items = halo.ravel()[flat]
    order = np.argsort(items, kind="stable")
    items, flat = items[order], flat[order]
    rank = np.arange(items.size) - np.searchsorted(items, items)  # 0.. copies - 1 within each item
    out = np.full((n_items, HALO_COPIES), t * k, dtype=np.int32)
    out[items, rank] = flat
    return out


def gather(x: np.ndarray, index: np.ndarray, fill=0) -> np.ndarray:
    """x (L, ...) at index (...) with ``fill`` where index is -1."""
    out = x[np.maximum(index, 0)]
    out[index < 0] = fill
    return out


def aligned_squared_min_distances(left: np.ndarray, left_cells: np.ndarray, halo: np.ndarray,
                                  halo_pos: np.ndarray, slots: np.ndarray, grid: tuple[int, int], radius: int,
                                  workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Squared minimum distances under the aligned rule, tile by tile; +inf where nothing is in range.

    Parameters
    ----------
    left : (L, D) float32, ``augment(query, "left")``; left_cells : (L,) int.
    halo : (T, M, K, D) float32, each reference's right-augmented items per tile
        halo (``gather(augment(z, "right"), halo_members(...))``, zeros where padded).
    halo_pos : (T, M, K) int (or (T, 1, K) when all references share one layout,
        as 2D patches do), their ``halo_positions``.
    slots : (M, L2, HALO_COPIES) int, ``halo_slots`` of each reference.
    workers : threads sharing the tiles (default: this process's cores).

    Returns
    -------
    to_refs (L, M) and from_refs (M, L2) float32 squared distances; +inf marks
    an item with no counterpart within ``radius`` (the caller applies the
    fallback, ``fill_unmatched``).
    """
    t, m, k, d = halo.shape
    members = tile_members(left_cells, grid, radius)  # (T, Kq)
    query_pos = _positions(left_cells, members, grid, radius, halo=False)
    penalty = _penalty(radius)  # the mask as a table: one gather per tile instead of comparisons
    to_refs = np.full((left.shape[0], m), np.inf, np.float32)
    cols = np.full((t, m, k), np.inf, np.float32)
    workers = max(1, min(workers or default_workers(), t))

    def work(w: int) -> None:
        buffer = np.empty((members.shape[1], m * k), np.float32)  # one tile's distances: stays in cache
        for i in range(w, t, workers):
            nq = int((members[i] >= 0).sum())
            if not nq:
                continue
            block = buffer[:nq]
            np.matmul(left[members[i, :nq]], halo[i].reshape(m * k, d).T, out=block)
            block = block.reshape(nq, m, k)
            block += penalty[query_pos[i, :nq, None, None], halo_pos[i][None]]
            to_refs[members[i, :nq]] = block.min(axis=2)
            np.min(block, axis=0, out=cols[i])

    run_workers(work, workers)
    flat = np.concatenate([cols.transpose(1, 0, 2).reshape(m, t * k), np.full((m, 1), np.inf, np.float32)], axis=1)
    from_refs = np.take_along_axis(flat, slots.reshape(m, -1), axis=1).reshape(slots.shape).min(axis=2)
    return to_refs, from_refs


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
