"""Which packed samples each data-parallel rank reads, resumable at an exact sample count.

Megatron-LM's ``MegatronPretrainingSampler`` order: the global sample stream 0, 1, 2, ... is cut
into chunks of ``micro_batch_size x data_parallel_size``; rank ``r`` takes the ``r``-th
``micro_batch_size`` slice of each chunk. The union over ranks is the DP=1 order whatever the DP
size, no sample is read twice, and resuming from ``consumed_samples`` continues exactly where an
uninterrupted run would be.
"""

from __future__ import annotations

from collections.abc import Iterator


class PackedBatchSampler:
    """Yields this rank's micro-batches (lists of sample indices); a ``batch_sampler`` for
    ``torch.utils.data.DataLoader``."""

    def __init__(
        self,
        *,
        total_samples: int,
        consumed_samples: int,
        micro_batch_size: int,
        data_parallel_rank: int,
        data_parallel_size: int,
    ) -> None:
        if total_samples < 1:
            raise ValueError(f"total_samples must be >= 1, got {total_samples}")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        if data_parallel_size < 1 or not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(
                f"data_parallel_rank={data_parallel_rank} is not in [0, {data_parallel_size})"
            )
        if not 0 <= consumed_samples <= total_samples:
            raise ValueError(
                f"consumed_samples={consumed_samples} is not in [0, total_samples={total_samples}]"
            )
        self.total_samples = total_samples
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size

    @property
    def _chunk(self) -> int:
        return self.micro_batch_size * self.data_parallel_size

    def __len__(self) -> int:
        return (self.total_samples - self.consumed_samples) // self._chunk

    def __iter__(self) -> Iterator[list[int]]:
        mbs, chunk = self.micro_batch_size, self._chunk
        offset = self.data_parallel_rank * mbs
        # Incomplete last chunks are dropped, as in Megatron-LM (every rank steps together).
        for c in range(self.consumed_samples, self.total_samples - chunk + 1, chunk):
            yield list(range(c + offset, c + offset + mbs))
