"""A packed sequence's logits equal those of each example run alone (opt-debug, local spec, CPU)."""

from __future__ import annotations

import pytest

from megatron_optiml.data import (
    PackedInstructionDatasetConfig,
    blend_per_split,
    build_packed_datasets,
    load_blend,
)
from megatron_optiml.testing.data import packed_logits_worker
from megatron_optiml.testing.distributed import run_distributed


@pytest.fixture(scope="module")
def result(blend_path):
    config = PackedInstructionDatasetConfig(
        random_seed=3,
        sequence_length=96,
        blend_per_split=blend_per_split(load_blend(blend_path)),
        pack_window=32,
    )
    train, _, _ = build_packed_datasets(config, [3, None, None])
    samples = [train[p] for p in range(3)]
    (out,) = run_distributed(packed_logits_worker, 1, samples, 0, timeout=180)
    return out


def test_packed_logits_equal_examples_alone(result):
    assert result["num_examples"] >= 6  # several examples per pack, so neighbours exist
    assert result["max_abs_diff"] < 1e-5, result


def test_the_check_would_catch_a_causal_only_mask_or_unreset_positions(result):
    assert result["causal_only_diff"] > 1e-2, result
    assert result["no_reset_diff"] > 1e-2, result


def test_loss_is_the_mean_over_target_tokens(result):
    # Summed packed loss / target tokens == summed per-example losses / their tokens.
    assert result["num_tokens"] == result["alone_tokens"]
    assert result["packed_loss"] == pytest.approx(result["alone_loss"], rel=1e-6)
    assert result["forward_step_loss"] == pytest.approx(result["packed_loss"], rel=1e-6)
