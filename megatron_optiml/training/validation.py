"""Validation loss per benchmark: each benchmark's packs (up to a limit) forward-only through
Megatron-Core's pipeline schedule, reported as the mean over target tokens."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from megatron.core.pipeline_parallel import get_forward_backward_func

from megatron_optiml.data.loading import ZeroLossPadded
from megatron_optiml.training.step import forward_step, global_loss_sum


@torch.no_grad()
def validation_losses(
    model: list[torch.nn.Module],
    val_sets: dict[str, Any],
    *,
    batches: Callable[[Any, int, int], Any],
    num_microbatches: int,
    micro_batch_size: int,
    data_parallel_size: int,
    seq_length: int,
    max_samples: int,
) -> dict[str, float]:
    """Loss per benchmark of ``val_sets`` and over all of them (``'all'``).

    ``batches(dataset, consumed, total)`` is the trainer's micro-batch stream of a dataset.
    Every pack up to ``max_samples`` counts; the last DP chunk is padded with zero-loss copies
    so small benchmarks are still evaluated.
    """
    for c in model:
        c.eval()
    out: dict[str, float] = {}
    total = [0.0, 0]
    try:
        chunk = micro_batch_size * data_parallel_size
        for bench, ds in val_sets.items():
            n = min(math.ceil(len(ds) / chunk) * chunk, max_samples)
            if n == 0:
                continue
            it = batches(ZeroLossPadded(ds, n), 0, n)
            steps = n // chunk  # micro-batches per rank
            s, k = 0.0, 0
            while steps > 0:
                micro = min(num_microbatches, steps)
                reports = get_forward_backward_func()(
                    forward_step_func=forward_step,
                    data_iterator=it,
                    model=model,
                    num_microbatches=micro,
                    seq_length=seq_length,
                    micro_batch_size=micro_batch_size,
                    forward_only=True,
                )
                ls, lt = global_loss_sum(reports)
                s, k = s + ls, k + lt
                steps -= micro
            if k:
                out[bench] = s / k
                total = [total[0] + s, total[1] + k]
    finally:
        for c in model:
            c.train()
    if total[1]:
        out["all"] = total[0] / total[1]
    return out
