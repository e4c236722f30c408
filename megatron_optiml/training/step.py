"""The forward step and the label-only loss handed to Megatron-Core's pipeline schedules.

The loss is a sum over target tokens plus their count; with ``calculate_per_token_loss=True``
Megatron-Core's schedules and ``finalize_model_grads`` divide the summed gradients by the
number of target tokens in the whole global batch (all micro-batches, all DP ranks) -- the
mean over target tokens that metaseq's OPT-IML criterion computes, not a per-micro-batch or
per-sequence mean.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import torch

Batch = dict[str, torch.Tensor]


def masked_token_loss(
    loss_mask: torch.Tensor, output_tensor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(sum of per-token losses on masked positions, number of such tokens, report).

    The report holds ``[loss_sum, num_tokens]`` so callers can reduce across micro-batches and
    DP ranks and divide once.
    """
    losses = output_tensor.float()
    mask = loss_mask.to(losses.dtype).view_as(losses)
    loss_sum = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach().clone(), num_tokens.detach().to(losses.dtype)])
    return loss_sum, num_tokens, {"lm loss": report}


def forward_step(data_iterator: Iterator[Batch], model: torch.nn.Module) -> tuple[Any, Any]:
    """Megatron-Core ``forward_step_func``: one micro-batch through (a stage of) the model.

    Every stage reads the same micro-batch dict: the first uses tokens and positions, the last
    labels and loss mask, all of them the attention mask. The loss mask goes to the model too:
    its output layer runs on the masked-in tokens only (``models/opt/model.py``).
    """
    batch = next(data_iterator)
    output = model(
        batch["tokens"],
        batch["position_ids"],
        batch.get("attention_mask"),
        labels=batch["labels"],
        loss_mask=batch["loss_mask"],
        packed_seq_params=batch.get("packed_seq_params"),
    )
    return output, partial(masked_token_loss, batch["loss_mask"])


def reduce_loss_reports(
    reports: list[dict[str, torch.Tensor]], key: str = "lm loss"
) -> torch.Tensor:
    """Sum ``[loss_sum, num_tokens]`` over micro-batches (one rank); empty off the last stage."""
    if not reports:
        return torch.zeros(2)
    return torch.stack([r[key] for r in reports]).sum(0)


def global_loss_sum(reports: list[dict[str, torch.Tensor]]) -> tuple[float, int]:
    """Sum of target-token losses and their count over the global batch (all micro-batches,
    all DP ranks); every rank gets the same answer. Only the last stage's TP rank 0 counts."""
    from megatron.core import parallel_state as ps

    from megatron_optiml.parallel.device import compute_device

    v = reduce_loss_reports(reports).double().to(compute_device())
    if not (
        ps.is_pipeline_last_stage(ignore_virtual=True) and ps.get_tensor_model_parallel_rank() == 0
    ):
        v = torch.zeros(2, dtype=torch.float64, device=compute_device())
    torch.distributed.all_reduce(v)
    return float(v[0]), int(v[1])
