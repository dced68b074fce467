"""Squared distances and their row and column minima, fused over cache-sized tiles.

One arrival in a window compares a part with every reference: per reference an
(L, L2) block of squared distances, of which only the row minima (the part's
distance to that reference) and the column minima (the reference's distance to
the part) are kept. Writing the whole (L, M * L2) block to memory and reading it
back twice costs more than the matrix product at small widths, so the block is
computed one tile at a time into a buffer that stays in cache, and both minima
are taken while it is there. Tiles are spread over worker threads, each running
its matrix products on one BLAS thread, so the minima run in parallel too.

Inputs are augmented features (``augment``: left @ right.T = squared distances). The same function runs on a GPU with CuPy as the array module:
there one block per chunk of references replaces the cache tiles.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

DEFAULT_BUDGET = 4 * 2**20  # bytes of one worker's distance tile: fits the last-level cache with room to spare
GPU_BUDGET = 2**30  # bytes of one distance block on a GPU: few, large products (launches cost more than memory)


NORM_COLUMN = 0  # augment's column holding |z|^2 on the left, meeting 1 on the right
# A tile's rows lie one cache line further apart than their width: at 1024 columns (the 3D centres) rows
# 4 KiB apart share the cache sets, and the product and the column minima then evict each other (one
# core, 33 channels: 97 -> 74 ms per 63 references; no change at 784 columns)
TILE_ROW_PAD = 16


def augment(z, side: str, xp=np):
    """(..., L, C) -> (..., L, C + 2) float32 such that left @ right.T = squared distances.

    side : "left" ([|z|^2, 1, z], the query) or "right" ([1, |z|^2, -2z], the references).
    Keeping references augmented lets a window reuse them on every arrival. The two extra
    columns come first so that the prefix ``[..., :2 + w]`` serves features whose channels
    from w on are zero (layers zero-padded to a common width, see ``active_width``).
    xp : the array module of the result (numpy, or cupy; z may be on the host).
    """
    z = xp.asarray(z).astype(xp.float32, copy=False)
    sq = (z * z).sum(axis=-1, keepdims=True)
    one = xp.ones_like(sq)
    if side == "left":
        return xp.concatenate([sq, one, z], axis=-1)
    if side == "right":
        return xp.concatenate([one, sq, -2.0 * z], axis=-1)
    raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def active_width(z: np.ndarray) -> int:
    """(..., C) -> how many leading channels hold every nonzero value (0 for all zeros).

    Narrower layers are zero-padded to the widest (``aggregate_2d``): their
    distances need only this prefix.
    """
    used = np.flatnonzero(np.any(z.reshape(-1, z.shape[-1]) != 0, axis=0))
    return int(used[-1]) + 1 if used.size else 0


def distances(*squared, xp=np) -> tuple:
    """sqrt(max(d, 0)) of each fresh array of squared distances, in place (the GEMM can round below 0)."""
    for d in squared:
        xp.sqrt(xp.maximum(d, 0.0, out=d), out=d)
    return squared


def default_workers() -> int:
    """Worker threads for the tiles: the cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # inspecting the loaded BLAS once: it takes milliseconds


# BLAS's thread count is process-wide: kernels running at once in several threads (one per
# product line) share one limit, set by the first to start and restored by the last to end.
_blas_guard = threading.Lock()
_blas_users: list = []  # the active limiter while any kernel runs


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread for the duration (reentrant across threads)."""
    with _blas_guard:
        if not _blas_users:
            _blas_users.append(_blas_controller().limit(limits=1, user_api="blas"))
        _blas_users.append(None)
    try:
        yield
    finally:
        with _blas_guard:
            _blas_users.pop()
            if len(_blas_users) == 1:
                _blas_users.pop().restore_original_limits()


def distance_tile(rows: int, cols: int) -> np.ndarray:
    """An uninitialised (rows, cols) float32 tile, its rows ``TILE_ROW_PAD`` floats apart beyond ``cols``."""
    return np.empty((rows, cols + TILE_ROW_PAD), dtype=np.float32)[:, :cols]


def squared_min_distances(left, right, select=None, budget: int = DEFAULT_BUDGET, workers: int | None = None,
                          xp=np):
    """Row and column minima of the squared distances between one part and references.

    Parameters
    ----------
    left : (L, D) float32, ``augment(query, "left")``.
    right : (M, L2, D) float32, ``augment(refs, "right")``; only the references in
        ``select`` are read.
    select : (M',) int indices into ``right`` (default: all M), in output order.
    budget : bytes of distance tile one worker holds at once (>= 4 * L2).
    workers : threads sharing the tiles (default: this process's cores); 1 = the
        calling thread alone. Ignored on a GPU.
    xp : the array module of ``left`` and ``right`` (numpy, or cupy on a GPU).

    Returns
    -------
    to_refs : (L, M') float32, to_refs[p, j] = min_q left[p] . right[select[j], q].
    from_refs : (M', L2) float32, from_refs[j, q] = min_p of the same.
    Squared distances: may be slightly negative from rounding (callers clip).
    """
    m, l2, d = right.shape
    if left.ndim != 2 or left.shape[1] != d:
        raise ValueError(f"left must be (L, {d}), got {tuple(left.shape)}")
    select = np.arange(m) if select is None else np.asarray(select, dtype=np.int64)
    if select.size and (select.min() < 0 or select.max() >= m):
        raise ValueError(f"select holds reference indices outside [0, {m})")
    if budget < 4 * l2:
        raise ValueError(f"budget {budget} B is below one row of distances ({4 * l2} B)")
    l = left.shape[0]
    if xp is not np:
        to_refs = xp.empty((l, select.size), dtype=xp.float32)
        from_refs = xp.empty((select.size, l2), dtype=xp.float32)
        _blocks(xp, left, right, select, budget, to_refs, from_refs)
        return to_refs, from_refs
    # Rows per reference, transposed at the end: a worker's writes stay in its own rows.
    to_t = np.empty((select.size, l), dtype=np.float32)
    from_refs = np.empty((select.size, l2), dtype=np.float32)
    workers = max(1, min(workers or default_workers(), select.size))
    rows = min(l, budget // (4 * l2))  # query rows per tile: a whole reference when it fits

    def work(w: int) -> None:
        tile = distance_tile(rows, l2)
        for out in range(w, select.size, workers):
            ref = right[select[out]].T
            for s in range(0, l, rows):
                t = tile[: min(rows, l - s)]
                np.matmul(left[s : s + rows], ref, out=t)
                np.min(t, axis=1, out=to_t[out, s : s + rows])
                if s == 0:
                    np.min(t, axis=0, out=from_refs[out])
                else:
                    np.minimum(from_refs[out], t.min(axis=0), out=from_refs[out])

    run_workers(work, workers)
    return to_t.T, from_refs


def run_workers(work, workers: int) -> None:
    """Run work(w) for w in range(workers) on threads, each matrix product on one BLAS thread.

    BLAS's own threads would fight the workers for the cores; and on a busy
    machine a multi-threaded BLAS spinning for its threads is many times slower
    than one thread (measured: 20 ms against 2.4 ms for one 784 x 42 x 784 product).
    """
    with one_blas_thread():
        if workers == 1:
            work(0)
            return
        with ThreadPoolExecutor(workers) as pool:
            for f in [pool.submit(work, w) for w in range(workers)]:
                f.result()


def _blocks(xp, left, right, select, budget, to_refs, from_refs) -> None:
    """The GPU form: one matrix product per chunk of references that fits ``budget``."""
    l, (_, l2, d) = left.shape[0], right.shape
    step = max(1, budget // (4 * l * l2))
    for s in range(0, select.size, step):
        idx = select[s : s + step]
        contiguous = idx.size > 0 and bool(np.all(np.diff(idx) == 1))
        r = right[int(idx[0]) : int(idx[-1]) + 1] if contiguous else right[xp.asarray(idx)]
        block = (left @ r.reshape(-1, d).T).reshape(l, idx.size, l2)
        to_refs[:, s : s + idx.size] = block.min(axis=2)
        from_refs[s : s + idx.size] = block.min(axis=0)
