"""`IndexedWriter` (chunks of examples into Megatron-Core's `IndexedDatasetBuilder`) writes the
bytes of one `add_document` per example, under temp names until `finish`."""

import numpy as np
import pytest

from data_prep.indexed import IndexedWriter


def _megatron(prefix, examples):
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16)
    for prompt, target in examples:
        builder.add_document(np.array(prompt + target), [len(prompt), len(target)])
    builder.finalize(f"{prefix}.idx")


def _ours(prefix, examples, chunk):
    writer = IndexedWriter(prefix)
    for s in range(0, len(examples), chunk):
        part = examples[s : s + chunk]
        tokens = [tok for p, t in part for tok in p + t]
        lengths = [n for p, t in part for n in (len(p), len(t))]
        writer.add(np.array(tokens, dtype=np.uint16), np.array(lengths, dtype=np.int32))
    writer.finish()


@pytest.mark.parametrize("n", [0, 1, 37])
def test_same_bytes_as_megatron_builder(tmp_path, n):
    rng = np.random.default_rng(n)
    examples = [
        (rng.integers(3, 50265, rng.integers(0, 9)).tolist(), [*rng.integers(3, 50265, 3), 2])
        for _ in range(n)
    ]
    _megatron(tmp_path / "ref", examples)
    _ours(tmp_path / "ours", examples, chunk=5)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"ours{ext}").read_bytes() == (tmp_path / f"ref{ext}").read_bytes()
    assert not list(tmp_path.glob("*.tmp"))


def test_megatron_reads_it(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    _ours(tmp_path / "d", [([5, 6], [7, 2]), ([], [8, 9, 2])], chunk=1)
    ds = IndexedDataset(str(tmp_path / "d"))
    assert [ds[i].tolist() for i in range(len(ds))] == [[5, 6], [7, 2], [], [8, 9, 2]]
    assert ds.document_indices.tolist() == [0, 2, 4]


def test_abort_and_bad_lengths(tmp_path):
    writer = IndexedWriter(tmp_path / "x")
    with pytest.raises(ValueError, match="2 per example"):
        writer.add(np.array([1, 2, 3], dtype=np.uint16), np.array([3], dtype=np.int32))
    with pytest.raises(ValueError, match="sum to 4 but there are 3 tokens"):
        writer.add(np.array([1, 2, 3], dtype=np.uint16), np.array([1, 3], dtype=np.int32))
    writer.abort()
    assert not list(tmp_path.iterdir())
