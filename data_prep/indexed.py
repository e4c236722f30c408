"""Write Megatron-Core indexed datasets (`.bin` + `.idx`) without importing Megatron (or torch).

The bytes are exactly those of `megatron.core.datasets.indexed_dataset.IndexedDatasetBuilder`
with `add_document(tokens, [prompt_len, target_len])` per example and `finalize()` (checked in
tests/data_prep/test_indexed.py): a `.bin` of the concatenated tokens, and an `.idx` of

    b"MMIDIDX\\x00\\x00", <Q version 1, <B dtype code, <Q sequence count, <Q document count,
    int32 sequence lengths, int64 sequence byte offsets, int64 document indices

where every document (example) is two sequences (prompt, target + `</s>`). Importing Megatron
costs seconds and its builder walks every length in Python; this writer appends whole chunks.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

INDEX_HEADER = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int32): 4, np.dtype(np.uint16): 8}
SEQUENCES_PER_DOCUMENT = 2


class IndexedWriter:
    """One indexed dataset written to temp names, renamed to `<prefix>.{bin,idx}` by `finish`."""

    def __init__(self, prefix: str | os.PathLike, dtype=np.uint16) -> None:
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"dtype={self.dtype} is not one of {sorted(map(str, DTYPE_CODES))}")
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._tmp_bin = Path(f"{self.prefix}.bin.tmp")
        self._bin = open(self._tmp_bin, "wb")
        self._lengths: list[np.ndarray] = []

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        """Append examples: `tokens` concatenated, `lengths` two per example (prompt, target)."""
        if len(lengths) % SEQUENCES_PER_DOCUMENT:
            raise ValueError(f"lengths has {len(lengths)} entries, expected 2 per example")
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        self._lengths.append(np.asarray(lengths, dtype=np.int32))

    def finish(self) -> None:
        """Write the index and move both files to their final names."""
        self._bin.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1] * self.dtype.itemsize, dtype=np.int64, out=pointers[1:])
        documents = np.arange(0, len(lengths) + 1, SEQUENCES_PER_DOCUMENT, dtype=np.int64)
        tmp_idx = Path(f"{self.prefix}.idx.tmp")
        with open(tmp_idx, "wb") as f:
            f.write(INDEX_HEADER)
            f.write(struct.pack("<Q", INDEX_VERSION))
            f.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", len(lengths)))
            f.write(struct.pack("<Q", len(documents)))
            f.write(lengths.tobytes())
            f.write(pointers.tobytes())
            f.write(documents.tobytes())
        os.replace(self._tmp_bin, f"{self.prefix}.bin")
        os.replace(tmp_idx, f"{self.prefix}.idx")

    def abort(self) -> None:
        """Close and remove the temp files (a failed build)."""
        self._bin.close()
        self._tmp_bin.unlink(missing_ok=True)
