"""Stable orders by radix: numpy sorts keys of at most 16 bits stably by radix, about twice as fast
as its comparison sorts of the same items, so a wider key is sorted as several 16-bit ones."""
from __future__ import annotations

import numpy as np


def lexicographic_order(*keys: np.ndarray) -> np.ndarray:
    """The stable order sorting by keys[0], then keys[1], ... (non-negative ints of equal length): one stable
    pass per key from the last, each in the narrowest dtype (16-bit keys sort by radix). Returns (n,) intp."""
    order = None
    for key in reversed(keys):
        k = key if order is None else key[order]
        step = np.argsort(k.astype(np.min_scalar_type(int(k.max(initial=0)))), kind="stable")
        order = step if order is None else order[step]
    return order


def stable_order(x: np.ndarray) -> np.ndarray:
    """``np.argsort(x, kind="stable")`` of a 1-D float32 array without NaN, about twice as fast.

    Each value becomes an order-preserving unsigned 32-bit key, sorted as its
    two 16-bit halves. Returns (n,) intp.
    """
    if x.ndim != 1 or x.dtype != np.float32:
        raise ValueError(f"stable_order needs a 1-D float32 array, got {x.dtype} {x.shape}")
    bits = (x + np.float32(0.0)).view(np.uint32)  # + 0: -0.0 becomes 0.0, a tie as in the comparison sort
    # IEEE order as unsigned order: negatives flip every bit, non-negatives only the sign bit
    key = np.where(bits >= np.uint32(2**31), ~bits, bits | np.uint32(2**31))
    return lexicographic_order((key >> np.uint32(16)).astype(np.uint16), key.astype(np.uint16))
