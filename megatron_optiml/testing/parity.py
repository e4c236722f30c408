"""Layout-parity workload: one training step of ``opt-debug`` under any TP/PP/DP layout.

Every rank builds the model, DDP and optimizer through ``training/build.py`` (as the trainer),
loads its shard of the same seeded canonical weights, runs Megatron-Core's pipeline schedule
(+ optionally one optimizer step) on a fixed global batch, and
returns its loss, gradients and parameters keyed by local names with its (tp, pp, dp) coords.
:func:`merge_rank_results` turns those into canonical tensors to compare across layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from megatron_optiml.conversion.sharding import (
    Layout,
    load_shard_into_model,
    merge_state_dicts,
    shard_state_dict,
)


@dataclass(frozen=True)
class ParityCase:
    tp: int = 1
    pp: int = 1
    micro_batch_size: int = 2
    global_batch_size: int = 8
    seq_length: int = 16
    sequence_parallel: bool = False
    use_distributed_optimizer: bool = False
    optimizer_step: bool = False
    flavor: str = "opt-debug"
    seed: int = 1234


def fixed_global_batch(case: ParityCase, vocab_limit: int = 1000) -> dict[str, torch.Tensor]:
    """A deterministic global batch with an uneven loss mask (tests per-token averaging)."""
    g = torch.Generator().manual_seed(case.seed)
    b, s = case.global_batch_size, case.seq_length
    tokens = torch.randint(3, vocab_limit, (b, s), generator=g)
    labels = torch.randint(3, vocab_limit, (b, s), generator=g)
    loss_mask = (torch.rand(b, s, generator=g) < 0.6).float()
    loss_mask[0, :] = 1.0  # rows with very different target counts
    loss_mask[1, : s - 2] = 0.0
    position_ids = torch.arange(s).expand(b, s).contiguous()
    return {
        "tokens": tokens,
        "labels": labels,
        "loss_mask": loss_mask,
        "position_ids": position_ids,
    }


def parity_config(case: ParityCase, world_size: int = 1):
    """The run config of ``case`` (FP32, no dropout, Adam lr 1e-2 at a constant schedule): the
    workload builds its model, DDP and optimizer through ``training/build.py`` as the trainer."""
    from megatron_optiml.config.one_step import one_step_run_config

    return one_step_run_config(
        lr=1e-2,
        devices=world_size,
        seq_length=case.seq_length,
        use_distributed_optimizer=case.use_distributed_optimizer,
        adam={"weight_decay": 0.01, "betas": (0.9, 0.95)},
        flavor=case.flavor,
        tensor_model_parallel_size=case.tp,
        pipeline_model_parallel_size=case.pp,
        sequence_parallel=case.sequence_parallel,
        micro_batch_size=case.micro_batch_size,
        global_batch_size=case.global_batch_size,
        seed=case.seed,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )


def parity_worker(rank: int, world_size: int, case: ParityCase) -> dict:
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_optiml.models.opt import get_flavor
    from megatron_optiml.models.opt.init import random_canonical_state_dict
    from megatron_optiml.parallel import init_distributed
    from megatron_optiml.training.build import build_model, build_optimizer
    from megatron_optiml.training.step import forward_step, reduce_loss_reports

    init_distributed(
        tensor_model_parallel_size=case.tp, pipeline_model_parallel_size=case.pp, seed=case.seed
    )
    tp_rank, pp_rank = ps.get_tensor_model_parallel_rank(), ps.get_pipeline_model_parallel_rank()
    dp_rank, dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
    arch = get_flavor(case.flavor)
    cfg = parity_config(case, world_size)
    layout = Layout(tp_size=case.tp, pp_size=case.pp, tp_rank=tp_rank, pp_rank=pp_rank)

    def load_canonical(chunks):
        full = random_canonical_state_dict(arch, seed=case.seed)
        load_shard_into_model(chunks[0], shard_state_dict(full, layout, arch.num_layers))

    built = build_model(cfg, load_weights=load_canonical)
    model, ddp_model = built.chunks[0], built.model[0]
    optimizer = build_optimizer(cfg, built.model)[0] if case.optimizer_step else None

    batch = fixed_global_batch(case)
    per_dp = case.global_batch_size // dp_size
    rows = slice(dp_rank * per_dp, (dp_rank + 1) * per_dp)
    mbs = case.micro_batch_size
    micro_batches = [
        {k: v[rows][i : i + mbs] for k, v in batch.items()} for i in range(0, per_dp, mbs)
    ]
    ddp_model.zero_grad_buffer()
    if optimizer is not None:
        optimizer.zero_grad()
    reports = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(micro_batches),
        model=[ddp_model],
        num_microbatches=len(micro_batches),
        seq_length=case.seq_length,
        micro_batch_size=mbs,
        forward_only=False,
    )
    loss_sum_tokens = reduce_loss_reports(reports)
    if ps.is_pipeline_last_stage():
        torch.distributed.all_reduce(loss_sum_tokens, group=ps.get_data_parallel_group())
    result = {
        "coords": (tp_rank, pp_rank, dp_rank),
        "last_stage": ps.is_pipeline_last_stage(),
        "loss": float(loss_sum_tokens[0] / loss_sum_tokens[1]) if loss_sum_tokens[1] else None,
    }
    if not case.use_distributed_optimizer:
        # With the distributed optimizer each rank holds only its slice of the reduced grads.
        result["grads"] = {n: p.main_grad.detach().clone() for n, p in model.named_parameters()}
    if optimizer is not None:
        _, grad_norm, _ = optimizer.step()
        result["grad_norm"] = float(grad_norm)
        result["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return result


def merge_rank_results(results: list[dict], case: ParityCase, key: str) -> dict[str, torch.Tensor]:
    """Canonical tensors of ``key`` ('grads' or 'params') from the DP-rank-0 replicas."""
    from megatron_optiml.models.opt import get_flavor

    shards = {(r["coords"][0], r["coords"][1]): r[key] for r in results if r["coords"][2] == 0}
    return merge_state_dicts(shards, case.tp, case.pp, get_flavor(case.flavor).num_layers)


def loss_of(results: list[dict]) -> float:
    losses = {r["loss"] for r in results if r["last_stage"]}
    if len(losses) != 1:
        raise AssertionError(f"last-stage ranks disagree on the loss: {losses}")
    return losses.pop()
