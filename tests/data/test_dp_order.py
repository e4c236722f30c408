"""The sample order on 2 gloo DP ranks (rank-0-first build, shared cache) is the DP=1 order."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from megatron_optiml.data import (
    PackedBatchSampler,
    PackedInstructionDatasetConfig,
    blend_per_split,
    build_packed_datasets,
    collate_packed,
    load_blend,
)
from megatron_optiml.testing.data import dp_order_worker
from megatron_optiml.testing.distributed import run_distributed

NUM_PACKS, SEQ, MBS, SEED = 24, 64, 2, 11


def dp1_tokens(blend_path, consumed=0):
    config = PackedInstructionDatasetConfig(
        random_seed=SEED,
        sequence_length=SEQ,
        blend_per_split=blend_per_split(load_blend(blend_path)),
        pack_window=64,
    )
    train, _, _ = build_packed_datasets(config, [NUM_PACKS, None, None])
    sampler = PackedBatchSampler(
        total_samples=NUM_PACKS,
        consumed_samples=consumed,
        micro_batch_size=2 * MBS,
        data_parallel_rank=0,
        data_parallel_size=1,
    )
    loader = torch.utils.data.DataLoader(
        train, batch_sampler=sampler, collate_fn=partial(collate_packed, attention="local")
    )
    return np.concatenate([b["tokens"].numpy() for b in loader])


def test_resume_from_k_equals_the_tail(blend_path):
    full = dp1_tokens(blend_path)
    assert full.shape == (NUM_PACKS, SEQ)
    assert np.array_equal(dp1_tokens(blend_path, consumed=8), full[8:])


@pytest.mark.distributed
def test_dp2_union_equals_dp1(blend_path, tmp_path):
    ranks = run_distributed(
        dp_order_worker, 2, str(blend_path), str(tmp_path / "cache"), NUM_PACKS, SEQ, MBS, SEED
    )
    assert (tmp_path / "cache").is_dir() and any((tmp_path / "cache").glob("*pack_offsets.npy"))
    union = []
    for (idx0, tok0), (idx1, tok1) in zip(*ranks, strict=True):
        assert not set(idx0) & set(idx1)
        union.extend([tok0, tok1])
    assert np.array_equal(np.concatenate(union), dp1_tokens(blend_path))
