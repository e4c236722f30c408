"""The run config of one optimizer step at a constant learning rate: what code that builds the
model, DDP and optimizer through ``training/build.py`` outside the trainer (the planner's
measurement, the layout-parity workload, the benchmarks) builds from, so it builds them as the
trainer does."""

from __future__ import annotations

from typing import Any

from megatron_optiml.config.schema import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SchedConfig,
    TrainerConfig,
)


def one_step_run_config(
    *,
    lr: float,
    precision: str = "32",
    devices: int = 1,
    seq_length: int | None = None,
    transformer_impl: str = "local",
    use_distributed_optimizer: bool = False,
    gradient_clip_val: float = 1.0,
    adam: dict[str, Any] | None = None,
    **model: Any,
) -> RunConfig:
    """A one-step run (``trainer.max_steps=1``, constant LR, no warmup) of a model shape,
    layout and batch.

    ``model`` takes :class:`ModelConfig` fields (``flavor``, parallel sizes, micro/global
    batch, ``seed``, dropout, recompute, ``fp8_recipe``); ``adam`` takes further
    :class:`OptimConfig` fields (``weight_decay``, ``betas``, ``eps``); ``seq_length`` None
    keeps ``DataConfig``'s. Everything not given keeps the schema's default.
    """
    return RunConfig(
        trainer=TrainerConfig(
            devices=devices,
            precision=precision,
            max_steps=1,
            gradient_clip_val=gradient_clip_val,
        ),
        model=ModelConfig(
            transformer_impl=transformer_impl,
            data=DataConfig() if seq_length is None else DataConfig(seq_length=seq_length),
            optim=OptimConfig(
                name="distributed_fused_adam" if use_distributed_optimizer else "adam",
                lr=lr,
                sched=SchedConfig(name="constant", warmup_steps=0),
                **(adam or {}),
            ),
            **model,
        ),
    )
