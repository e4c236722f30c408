"""Bin-packing of whole examples into fixed-length sequences, from their lengths alone.

Pure functions over a lengths array: no tokens are read, so the pack plan of a whole training
run is computed (and cached) once, before the first step. Examples are never split across packs.
"""

from __future__ import annotations

import bisect
from typing import Literal

import numpy as np

PackingAlgorithm = Literal["best_fit_decreasing", "greedy"]


def _check(lengths: np.ndarray, capacity: int) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1, got {capacity}")
    if lengths.size and (lengths.min() < 1 or lengths.max() > capacity):
        raise ValueError(
            f"example lengths must lie in [1, {capacity}] (truncate first), got "
            f"[{lengths.min()}, {lengths.max()}]"
        )
    return lengths


def _best_fit_decreasing_window(
    lengths: np.ndarray, ids: np.ndarray, capacity: int
) -> list[list[int]]:
    """Best-fit decreasing on one window: longest example first, each into the fullest pack
    that still has room for it (a new pack when none has)."""
    order = ids[np.argsort(-lengths[ids], kind="stable")]
    bins: list[list[int]] = []
    # (remaining capacity, bin id), kept sorted so the best fit is one bisect away.
    open_bins: list[tuple[int, int]] = []
    for i, length in zip(order.tolist(), lengths[order].tolist(), strict=True):
        k = bisect.bisect_left(open_bins, (length, -1))
        if k == len(open_bins):
            b, remaining = len(bins), capacity - length
            bins.append([i])
        else:
            remaining, b = open_bins.pop(k)
            remaining -= length
            bins[b].append(i)
        if remaining > 0:
            bisect.insort(open_bins, (remaining, b))
    return bins


def pack_examples(
    lengths: np.ndarray,
    capacity: int,
    *,
    algorithm: PackingAlgorithm = "best_fit_decreasing",
    window: int = 8192,
) -> tuple[np.ndarray, np.ndarray]:
    """Pack examples (by index into ``lengths``) into packs of total length <= ``capacity``.

    ``best_fit_decreasing`` runs BFD over consecutive windows of ``window`` examples, so an
    example lands in a pack at most one window away from its place in the input order (the
    input order carries the shuffle and the blend). ``greedy`` is metaseq's
    ``yield_src_tgt_blocks``: fill a pack in input order, start a new one when the next example
    does not fit.

    Returns ``(offsets, members)``: pack ``p`` holds examples ``members[offsets[p]:offsets[p+1]]``
    in ascending index order; packs are ordered by their first example, so the pack stream
    follows the input order. Deterministic: a function of ``lengths`` and the arguments only.
    """
    lengths = _check(lengths, capacity)
    n = lengths.size
    packs: list[list[int]] = []
    if algorithm == "greedy":
        current: list[int] = []
        used = 0
        for i, length in enumerate(lengths.tolist()):
            if used + length > capacity:
                packs.append(current)
                current, used = [], 0
            current.append(i)
            used += length
        if current:
            packs.append(current)
    elif algorithm == "best_fit_decreasing":
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        for start in range(0, n, window):
            ids = np.arange(start, min(n, start + window), dtype=np.int64)
            window_packs = [sorted(p) for p in _best_fit_decreasing_window(lengths, ids, capacity)]
            window_packs.sort(key=lambda p: p[0])
            packs.extend(window_packs)
    else:
        raise ValueError(f"unknown packing algorithm {algorithm!r}")
    sizes = np.fromiter((len(p) for p in packs), dtype=np.int64, count=len(packs))
    offsets = np.zeros(len(packs) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    members = np.fromiter((i for p in packs for i in p), dtype=np.int64, count=int(offsets[-1]))
    return offsets, members


def pack_fill(
    lengths: np.ndarray, offsets: np.ndarray, members: np.ndarray, capacity: int
) -> float:
    """Fraction of non-pad tokens over all packs."""
    if offsets.size <= 1:
        return 0.0
    return float(np.asarray(lengths, dtype=np.int64)[members].sum()) / (
        (offsets.size - 1) * capacity
    )
