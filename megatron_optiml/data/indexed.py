"""The on-disk example format (docs/architecture.md): one ``IndexedDataset`` per task and split,
each example one document of two sequences, ``2i`` = prompt (may be empty), ``2i+1`` = target
ending with ``</s>``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from megatron.core.datasets.indexed_dataset import (
    IndexedDataset,
    IndexedDatasetBuilder,
    get_bin_path,
    get_idx_path,
)

EOS_TOKEN_ID = 2
PAD_TOKEN_ID = 1


def write_examples(
    prefix: str,
    examples: Iterable[tuple[Sequence[int], Sequence[int]]],
    *,
    dtype: type[np.number] = np.uint16,
) -> int:
    """Write ``(prompt_ids, target_ids)`` pairs as ``prefix.bin``/``prefix.idx``; return the count.

    ``target_ids`` must already end with ``</s>`` (the format stores it; this helper does not add
    it, so a fixture can test a reader's guard).
    """
    builder = IndexedDatasetBuilder(get_bin_path(prefix), dtype=dtype)
    count = 0
    for prompt, target in examples:
        prompt = np.asarray(prompt, dtype=np.int64)
        target = np.asarray(target, dtype=np.int64)
        if target.size == 0:
            raise ValueError(f"example {count}: empty target (the format needs at least </s>)")
        builder.add_document(np.concatenate([prompt, target]), [prompt.size, target.size])
        count += 1
    builder.finalize(get_idx_path(prefix))
    return count


def check_example_format(ds: IndexedDataset, path: str | None = None) -> None:
    """Raise ``ValueError`` unless every document holds exactly two sequences with a non-empty
    second one (read from the index only)."""
    docs = ds.document_indices
    where = f" in {path}" if path else ""
    if len(ds) % 2 or docs.size != len(ds) // 2 + 1 or np.any(docs != np.arange(0, len(ds) + 1, 2)):
        raise ValueError(
            f"not an instruction-example dataset{where}: expected documents of exactly two "
            f"sequences (prompt, target), got {len(ds)} sequences in {docs.size - 1} documents"
        )
    if len(ds) and ds.sequence_lengths[1::2].min() < 1:
        raise ValueError(f"empty target sequence{where}: each target ends with </s>")


def example_lengths(ds: IndexedDataset) -> tuple[np.ndarray, np.ndarray]:
    """(prompt lengths, target lengths) per example, int64, from the index alone."""
    lengths = ds.sequence_lengths.astype(np.int64)
    return lengths[0::2], lengths[1::2]
