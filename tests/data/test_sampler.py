"""DP sharding and resume of the packed sample stream."""

from __future__ import annotations

import pytest

from megatron_optiml.data import PackedBatchSampler


def order(total, consumed, mbs, dp):
    """Per step, the union over DP ranks of what they read (rank order)."""
    per_rank = [
        list(
            PackedBatchSampler(
                total_samples=total,
                consumed_samples=consumed,
                micro_batch_size=mbs,
                data_parallel_rank=r,
                data_parallel_size=dp,
            )
        )
        for r in range(dp)
    ]
    out = []
    for step in zip(*per_rank):
        for batch in step:
            out.extend(batch)
    return out, per_rank


def test_union_of_ranks_is_the_dp1_order():
    dp1, _ = order(48, 0, 4, 1)
    dp2, ranks = order(48, 0, 2, 2)
    assert dp1 == dp2 == list(range(48))
    assert not set(sum(ranks[0], [])) & set(sum(ranks[1], []))  # never read twice


def test_resume_from_k_is_the_tail():
    full, _ = order(50, 0, 2, 2)
    tail, _ = order(50, 12, 2, 2)
    assert tail == full[12:]
    assert (
        len(
            PackedBatchSampler(
                total_samples=50,
                consumed_samples=12,
                micro_batch_size=2,
                data_parallel_rank=1,
                data_parallel_size=2,
            )
        )
        == 9
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(
            total_samples=0,
            consumed_samples=0,
            micro_batch_size=1,
            data_parallel_rank=0,
            data_parallel_size=1,
        ),
        dict(
            total_samples=8,
            consumed_samples=9,
            micro_batch_size=1,
            data_parallel_rank=0,
            data_parallel_size=1,
        ),
        dict(
            total_samples=8,
            consumed_samples=0,
            micro_batch_size=0,
            data_parallel_rank=0,
            data_parallel_size=1,
        ),
        dict(
            total_samples=8,
            consumed_samples=0,
            micro_batch_size=1,
            data_parallel_rank=2,
            data_parallel_size=2,
        ),
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        PackedBatchSampler(**kwargs)
