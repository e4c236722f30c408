"""Megatron-Core indexed datasets (`.bin` + `.idx`) written a chunk of examples at a time.

`IndexedWriter` feeds Megatron-Core's own `IndexedDatasetBuilder`: every example is one
document of two sequences, `add_document(prompt + target, [prompt_len, target_len])`, so the
files are exactly the builder's (docs/architecture.md). It adds the temp-name-then-rename
discipline of the pipeline: `<prefix>.{bin,idx}.tmp` until `finish`, removed by `abort`.
Megatron (and torch) is imported on first use, in the main process only: the tokenizer
workers never need it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SEQUENCES_PER_DOCUMENT = 2


class IndexedWriter:
    """One indexed dataset written to temp names, renamed to `<prefix>.{bin,idx}` by `finish`."""

    def __init__(self, prefix: str | os.PathLike, dtype=np.uint16) -> None:
        from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        DType.code_from_dtype(self.dtype.type)  # refuses a dtype Megatron cannot index
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_bin = Path(f"{self.prefix}.bin.tmp")
        self._tmp_idx = Path(f"{self.prefix}.idx.tmp")
        self._builder = IndexedDatasetBuilder(str(self._tmp_bin), dtype=self.dtype.type)

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append examples: `tokens` concatenated, `lengths` two per example (prompt, target)."""
        if len(lengths) % SEQUENCES_PER_DOCUMENT:
            raise ValueError(f"lengths has {len(lengths)} entries, expected 2 per example")
        pairs = np.asarray(lengths, dtype=np.int64).reshape(-1, SEQUENCES_PER_DOCUMENT)
        if int(pairs.sum()) != len(tokens):
            raise ValueError(
                f"lengths sum to {int(pairs.sum())} but there are {len(tokens)} tokens"
            )
        ends = np.cumsum(pairs.sum(1)).tolist()
        begin = 0
        for (prompt, target), end in zip(pairs.tolist(), ends, strict=True):
            self._builder.add_document(tokens[begin:end], [prompt, target])
            begin = end

    def finish(self) -> None:
        """Write the index and move both files to their final names."""
        self._builder.finalize(str(self._tmp_idx))
        os.replace(self._tmp_bin, f"{self.prefix}.bin")
        os.replace(self._tmp_idx, f"{self.prefix}.idx")

    def abort(self) -> None:
        """Close and remove the temp files (a failed build)."""
        self._builder.data_file.close()
        self._tmp_bin.unlink(missing_ok=True)
        self._tmp_idx.unlink(missing_ok=True)
