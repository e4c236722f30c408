"""Workload for tests/training/test_fused_adam.py: Megatron's optimizer on torch's fused Adam.

Two ``opt-debug`` models with the same canonical weights and the distributed optimizer, built
through ``training/build.py``: one as built (fused torch Adam), one switched back to torch's
per-tensor loop. Both take the same steps with clipping active; the fused one is then saved
with its groups marked unfused (a checkpoint written before the switch), loaded into a fresh
build, and stepped once more beside the loop reference.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def fused_adam_worker(rank: int, world_size: int, ckpt_root: str) -> dict[str, Any]:
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_optiml.conversion.sharding import Layout, load_shard_into_model, shard_state_dict
    from megatron_optiml.models.opt import get_flavor
    from megatron_optiml.models.opt.init import random_canonical_state_dict
    from megatron_optiml.parallel import init_distributed
    from megatron_optiml.testing.parity import ParityCase, fixed_global_batch, parity_config
    from megatron_optiml.training import checkpointing as ckpt
    from megatron_optiml.training.build import build_model, build_optimizer, torch_adams
    from megatron_optiml.training.step import forward_step

    case = ParityCase(use_distributed_optimizer=True, optimizer_step=True)
    init_distributed(seed=case.seed)
    arch = get_flavor(case.flavor)
    cfg = parity_config(case, world_size)
    # A small clip so clipping scales every gradient (the one-pass multi_tensor_scale).
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, gradient_clip_val=0.05))
    full = random_canonical_state_dict(arch, seed=case.seed)

    def build():
        built = build_model(
            cfg,
            load_weights=lambda chunks: load_shard_into_model(
                chunks[0], shard_state_dict(full, Layout(), arch.num_layers)
            ),
        )
        optimizer, scheduler = build_optimizer(cfg, built.model)
        return built, optimizer, scheduler

    def fused_flags(optimizer) -> list[bool]:
        return [bool(g.get("fused")) for a in torch_adams(optimizer) for g in a.param_groups]

    def set_fused(optimizer, value: bool) -> None:
        for a in torch_adams(optimizer):
            a.defaults["fused"] = value
            for g in a.param_groups:
                g["fused"] = value

    batch = fixed_global_batch(case)
    per_dp = case.global_batch_size // ps.get_data_parallel_world_size()
    rows = slice(ps.get_data_parallel_rank() * per_dp, (ps.get_data_parallel_rank() + 1) * per_dp)
    mbs = case.micro_batch_size
    micro_batches = [
        {k: v[rows][i : i + mbs] for k, v in batch.items()} for i in range(0, per_dp, mbs)
    ]

    def step(built, optimizer, scheduler) -> float:
        built.model[0].zero_grad_buffer()
        optimizer.zero_grad()
        get_forward_backward_func()(
            forward_step_func=forward_step,
            data_iterator=iter(micro_batches),
            model=built.model,
            num_microbatches=len(micro_batches),
            seq_length=case.seq_length,
            micro_batch_size=mbs,
            forward_only=False,
        )
        ok, grad_norm, _ = optimizer.step()
        assert ok
        scheduler.step(increment=1)
        return float(grad_norm)

    def max_diff(x, y) -> float:
        px = dict(x.chunks[0].named_parameters())
        return max(float((p - px[n]).abs().max()) for n, p in y.chunks[0].named_parameters())

    fused, ref = build(), build()
    out: dict[str, Any] = {"fused_built": fused_flags(fused[1])}
    set_fused(ref[1], False)
    out["grad_norms"] = [(step(*fused), step(*ref)) for _ in range(2)]
    out["diff_after_2"] = max_diff(fused[0], ref[0])
    out["moved"] = max_diff(fused[0], build()[0])  # the steps changed the weights

    set_fused(fused[1], False)  # saved as a checkpoint from before the switch
    ckpt.save_checkpoint(
        Path(ckpt_root),
        2,
        model_chunks=fused[0].chunks,
        optimizer=fused[1],
        scheduler=fused[2],
        arch=arch,
        consumed_samples=2 * case.global_batch_size,
        use_distributed_optimizer=True,
    )
    loaded = build()
    ckpt.load_checkpoint(
        Path(ckpt_root),
        2,
        model_chunks=loaded[0].chunks,
        optimizer=loaded[1],
        scheduler=loaded[2],
        use_distributed_optimizer=True,
    )
    out["fused_after_load"] = fused_flags(loaded[1])
    out["diff_loaded"] = max_diff(loaded[0], ref[0])
    out["grad_norms"].append((step(*loaded), step(*ref)))
    out["diff_after_3"] = max_diff(loaded[0], ref[0])
    return out
