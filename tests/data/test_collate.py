"""Micro-batch dicts for forward_step: block-diagonal causal mask (local) and cu_seqlens (thd)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_optiml.data import block_causal_mask, collate_packed


def sample(lengths, s):
    seg = np.concatenate([np.full(n, k) for k, n in enumerate(lengths)])
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    assert cu[-1] == s
    pos = np.concatenate([np.arange(n) for n in lengths])
    return {
        "tokens": np.arange(s, dtype=np.int64) + 3,
        "labels": np.arange(s, dtype=np.int64) + 4,
        "loss_mask": np.ones(s, dtype=np.float32),
        "position_ids": pos,
        "segment_ids": seg,
        "cu_seqlens": cu,
    }


def test_local_mask_is_block_diagonal_causal():
    x = sample([3, 1, 4], 8)
    batch = collate_packed([x, sample([8], 8)], attention="local")
    mask = batch["attention_mask"]
    assert mask.shape == (2, 1, 8, 8) and mask.dtype == torch.bool
    seg = x["segment_ids"]
    for i in range(8):
        for j in range(8):
            assert bool(mask[0, 0, i, j]) == (j > i or seg[i] != seg[j])  # True = masked out
    assert torch.equal(mask[1, 0], torch.ones(8, 8, dtype=torch.bool).triu(1))
    assert batch["tokens"].shape == (2, 8) and "packed_seq_params" not in batch


def test_thd_lays_the_batch_end_to_end_with_offset_boundaries():
    batch = collate_packed([sample([3, 1, 4], 8), sample([6, 2], 8)], attention="thd")
    params = batch["packed_seq_params"]
    assert params.qkv_format == "thd"
    assert params.cu_seqlens_q.tolist() == [0, 3, 4, 8, 14, 16]
    assert params.cu_seqlens_q.dtype == torch.int32 and params.max_seqlen_q == 6
    assert batch["tokens"].shape == (1, 16) and batch["attention_mask"] is None
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 0, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 0, 1]


def test_unknown_attention_format_raises():
    with pytest.raises(ValueError, match="attention"):
        collate_packed([sample([8], 8)], attention="sbhd")


def test_mask_helper_matches_collate():
    seg = torch.tensor([[0, 0, 1, 1]])
    assert torch.equal(
        block_causal_mask(seg)[0, 0],
        torch.tensor(
            [
                [False, True, True, True],
                [False, False, True, True],
                [True, True, False, True],
                [True, True, False, False],
            ]
        ),
    )
