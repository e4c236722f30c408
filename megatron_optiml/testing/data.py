"""Data workloads that tests run in spawned gloo ranks (``run_distributed`` needs module-level
functions): packed-vs-alone logits on ``opt-debug``, and the DP sample order."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from megatron_optiml.data.collate import collate_packed


def _debug_model(seed: int) -> torch.nn.Module:
    from megatron_optiml.conversion.sharding import Layout, load_shard_into_model, shard_state_dict
    from megatron_optiml.models.opt import build_opt_model, build_transformer_config, get_flavor
    from megatron_optiml.models.opt.init import random_canonical_state_dict

    arch = get_flavor("opt-debug")
    model = build_opt_model(arch, build_transformer_config(arch), transformer_impl="local")
    full = random_canonical_state_dict(arch, seed=seed, std=0.2)
    load_shard_into_model(model, shard_state_dict(full, Layout(), arch.num_layers))
    return model.eval()


def packed_logits_worker(
    rank: int, world_size: int, samples: Sequence[dict[str, np.ndarray]], seed: int = 0
) -> dict[str, Any]:
    """Run packed samples through ``opt-debug`` (local spec) and each example alone.

    Returns the largest |difference| of logits and of summed target losses between packed and
    alone, and the same logits difference when the document mask is replaced by the causal one
    or the positions do not restart (both must be large for the test to mean anything).
    """
    from megatron_optiml.parallel import init_distributed
    from megatron_optiml.training.step import forward_step, masked_token_loss

    init_distributed(seed=seed)
    torch.manual_seed(seed)
    model = _debug_model(seed)
    batch = collate_packed(samples, attention="local")
    tokens, positions = batch["tokens"], batch["position_ids"]
    b, s = tokens.shape
    with torch.no_grad():
        packed = model(tokens, positions, batch["attention_mask"])
        packed_loss = model(tokens, positions, batch["attention_mask"], labels=batch["labels"])
        causal_only = model(tokens, positions, None)
        no_reset = model(tokens, torch.arange(s).expand(b, s), batch["attention_mask"])
        loss_sum, num_tokens, _ = masked_token_loss(batch["loss_mask"], packed_loss)
        # The same micro-batch dict through the training forward step and its loss function.
        output, loss_func = forward_step(iter([batch]), model)
        step_sum, step_tokens, _ = loss_func(output)
        diff = causal_diff = reset_diff = 0.0
        alone_sum, alone_tokens, num_examples = 0.0, 0, 0
        for row, sample in enumerate(samples):
            cu = np.asarray(sample["cu_seqlens"])
            labels, mask = sample["labels"], sample["loss_mask"]
            for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True):
                if float(mask[lo:hi].sum()) == 0 and int(sample["tokens"][lo]) == 1:
                    continue  # the padding tail
                ids = torch.from_numpy(sample["tokens"][None, lo:hi])
                pos = torch.arange(hi - lo)[None]
                alone = model(ids, pos, None)
                diff = max(diff, float((packed[row, lo:hi] - alone[0]).abs().max()))
                causal_diff = max(
                    causal_diff, float((causal_only[row, lo:hi] - alone[0]).abs().max())
                )
                reset_diff = max(reset_diff, float((no_reset[row, lo:hi] - alone[0]).abs().max()))
                alone_loss = model(ids, pos, None, labels=torch.from_numpy(labels[None, lo:hi]))
                m = torch.from_numpy(mask[None, lo:hi])
                alone_sum += float((alone_loss * m).sum())
                alone_tokens += int(m.sum())
                num_examples += 1
    return {
        "max_abs_diff": diff,
        "causal_only_diff": causal_diff,
        "no_reset_diff": reset_diff,
        "packed_loss": float(loss_sum) / int(num_tokens),
        "forward_step_loss": float(step_sum) / int(step_tokens),
        "alone_loss": alone_sum / alone_tokens,
        "num_tokens": int(num_tokens),
        "alone_tokens": alone_tokens,
        "num_examples": num_examples,
    }


def dp_order_worker(
    rank: int,
    world_size: int,
    blend_path: str,
    cache_dir: str,
    num_packs: int,
    sequence_length: int,
    micro_batch_size: int,
    seed: int,
) -> list[tuple[list[int], np.ndarray]]:
    """Build the train split on every rank (rank 0 first, shared cache) and read this DP rank's
    micro-batches; returns ``(sample indices, tokens)`` per micro-batch."""
    from megatron.core import parallel_state

    from megatron_optiml.data.blend import blend_per_split, load_blend
    from megatron_optiml.data.config import PackedInstructionDatasetConfig
    from megatron_optiml.data.packed import build_packed_datasets
    from megatron_optiml.data.sampler import PackedBatchSampler
    from megatron_optiml.parallel import init_distributed

    init_distributed(seed=seed)
    config = PackedInstructionDatasetConfig(
        random_seed=seed,
        sequence_length=sequence_length,
        blend_per_split=blend_per_split(load_blend(blend_path)),
        path_to_cache=cache_dir,
        pack_window=64,
    )
    train, _, _ = build_packed_datasets(config, [num_packs, None, None])
    sampler = PackedBatchSampler(
        total_samples=num_packs,
        consumed_samples=0,
        micro_batch_size=micro_batch_size,
        data_parallel_rank=parallel_state.get_data_parallel_rank(),
        data_parallel_size=parallel_state.get_data_parallel_world_size(),
    )
    loader = torch.utils.data.DataLoader(
        train, batch_sampler=sampler, collate_fn=partial(collate_packed, attention="local")
    )
    return [(idx, batch["tokens"].numpy()) for idx, batch in zip(sampler, loader, strict=True)]
