"""The one path from a run config to Megatron-Core objects: ``TransformerConfig``, the model
chunks wrapped in ``Float16Module`` + ``DistributedDataParallel``, the optimizer and its LR
scheduler. The trainer, the planner's measurement, the layout-parity workload and the
benchmarks all build here, so what they measure is what users train with.

Call after :func:`megatron_optiml.parallel.init_distributed` (the device and the parallel
groups come from there); nothing here validates the config: the trainer's
``RunConfig.validate()`` does, other callers fill in only what they exercise.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from megatron.core import parallel_state as ps
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
from megatron.core.distributed.finalize_model_grads import finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.module import Float16Module

from megatron_optiml.config import RunConfig
from megatron_optiml.models.opt import (
    OPTArch,
    build_opt_model,
    build_transformer_config,
    get_flavor,
)
from megatron_optiml.parallel.device import uses_cuda

# model.optim.sched.name -> Megatron-Core's lr_decay_style.
DECAY_STYLES = {
    "WarmupAnnealing": "linear",
    "linear": "linear",
    "cosine": "cosine",
    "constant": "constant",
}


@dataclass
class BuiltModel:
    """What :func:`build_model` returns."""

    config: TransformerConfig
    """The TransformerConfig every chunk shares (schedules read ``no_sync_func`` etc. from it)."""
    chunks: list[torch.nn.Module]
    """The unwrapped ``GPTModel`` chunks (one per virtual stage): checkpoint keys, loading."""
    model: list[DistributedDataParallel]
    """The DDP-wrapped chunks the schedules and the optimizer run."""


def model_arch(cfg: RunConfig, arch: OPTArch | None = None) -> OPTArch:
    """``arch`` when given (a shape outside the flavors table), else ``model.flavor``'s."""
    return arch if arch is not None else get_flavor(cfg.model.flavor)


def params_dtype(cfg: RunConfig) -> torch.dtype:
    """BF16 parameters under ``bf16``/``fp8`` precision (fp32 main params in the optimizer)."""
    return torch.bfloat16 if cfg.trainer.bf16 else torch.float32


def transformer_config(cfg: RunConfig, *, arch: OPTArch | None = None) -> TransformerConfig:
    """OPT's TransformerConfig for ``cfg``: parallel layout, dropouts, precision (BF16 params,
    FP8 GEMMs), activation recompute, per-token loss, and the fused kernels the device has."""
    m, t = cfg.model, cfg.trainer
    dtype = params_dtype(cfg)
    extra: dict[str, Any] = {}
    if m.activations_checkpoint_granularity:
        extra["recompute_granularity"] = m.activations_checkpoint_granularity
        if m.activations_checkpoint_granularity == "full":
            extra["recompute_method"] = m.activations_checkpoint_method
            extra["recompute_num_layers"] = m.activations_checkpoint_num_layers
    if t.fp8:
        extra.update(
            fp8="hybrid",  # E4M3 forward, E5M2 gradients
            fp8_recipe=m.fp8_recipe,
            fp8_amax_history_len=m.fp8_amax_history_len,
            fp8_amax_compute_algo=m.fp8_amax_compute_algo,
        )
    if uses_cuda():
        # Fused kernels where the device has them: bias-dropout-add is a TorchScript fusion;
        # the masked softmax kernel is a compiled extension (Megatron-LM/apex build).
        extra["bias_dropout_fusion"] = True
        extra["masked_softmax_fusion"] = (
            importlib.util.find_spec("scaled_upper_triang_masked_softmax_cuda") is not None
        )
    return build_transformer_config(
        model_arch(cfg, arch),
        tensor_model_parallel_size=m.tensor_model_parallel_size,
        pipeline_model_parallel_size=m.pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=m.virtual_pipeline_model_parallel_size,
        sequence_parallel=m.sequence_parallel,
        hidden_dropout=m.hidden_dropout,
        attention_dropout=m.attention_dropout,
        bf16=t.bf16,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        calculate_per_token_loss=True,
        **extra,
    )


def build_model(
    cfg: RunConfig,
    *,
    arch: OPTArch | None = None,
    core_attention: str = "sdpa",
    load_weights: Callable[[list[torch.nn.Module]], None] | None = None,
) -> BuiltModel:
    """This rank's model chunks (one per virtual pipeline stage) on the compute device, wrapped
    for training: ``Float16Module`` under BF16, then Megatron-Core DDP (fp32 grad reduction,
    distributed-optimizer buffers with ``distributed_fused_adam``).

    ``core_attention`` is the local spec's core attention ('sdpa' | 'unfused': the planner's
    memory model assumes the unfused one). ``load_weights(chunks)`` runs on the unwrapped
    chunks before wrapping (initial weights: a checkpoint, canonical test weights).
    """
    arch = model_arch(cfg, arch)
    m = cfg.model
    config = transformer_config(cfg, arch=arch)
    vpp = m.virtual_pipeline_model_parallel_size
    chunks: list[torch.nn.Module] = []
    for vp in range(vpp or 1):
        stage = vp if vpp else None
        chunk = build_opt_model(
            arch,
            config,
            transformer_impl=cfg.resolved_transformer_impl(),
            core_attention=core_attention,
            pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            vp_stage=stage,
        )
        if uses_cuda():
            chunk.cuda(torch.cuda.current_device())
        chunks.append(chunk)
    if load_weights is not None:
        load_weights(chunks)
    wrapped = [Float16Module(config, c) for c in chunks] if cfg.trainer.bf16 else list(chunks)
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=False,
        use_distributed_optimizer=m.optim.use_distributed_optimizer,
    )
    model = [
        DistributedDataParallel(config, ddp_config, c, disable_bucketing=(i > 0))
        for i, c in enumerate(wrapped)
    ]
    config.finalize_model_grads_func = finalize_model_grads
    no_sync = [c.no_sync for c in model]
    config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    return BuiltModel(config=config, chunks=chunks, model=model)


def build_optimizer(
    cfg: RunConfig, model: list[DistributedDataParallel]
) -> tuple[Any, OptimizerParamScheduler]:
    """Megatron's Adam (fp32 main params and states; distributed with
    ``distributed_fused_adam``; global-norm clipping) and its LR/weight-decay scheduler, which
    counts optimizer steps (Megatron-LM counts samples). Where Megatron-Core falls back to torch's
    Adam (no TE/apex: CPU), the fused torch kernel runs it (:func:`use_fused_torch_adam`)."""
    t, o = cfg.trainer, cfg.model.optim
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=o.lr,
            min_lr=o.sched.min_lr,
            weight_decay=o.weight_decay,
            adam_beta1=o.betas[0],
            adam_beta2=o.betas[1],
            adam_eps=o.eps,
            bf16=t.bf16,
            params_dtype=params_dtype(cfg),
            use_distributed_optimizer=o.use_distributed_optimizer,
            clip_grad=t.gradient_clip_val,
        ),
        model,
    )
    use_fused_torch_adam(optimizer)
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=o.lr,
        min_lr=o.sched.min_lr,
        lr_warmup_steps=o.sched.warmup_steps,
        lr_decay_steps=t.max_steps,
        lr_decay_style=DECAY_STYLES[o.sched.name],
        start_wd=o.weight_decay,
        end_wd=o.weight_decay,
        wd_incr_steps=t.max_steps,
        wd_incr_style="constant",
    )
    return optimizer, scheduler


def torch_adams(optimizer) -> list[torch.optim.Optimizer]:
    """The torch ``Adam``/``AdamW`` instances inside a Megatron optimizer (chained or not)."""
    out = []
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if isinstance(inner, torch.optim.Adam):  # AdamW is a subclass
            out.append(inner)
    return out


def use_fused_torch_adam(optimizer) -> bool:
    """Run Megatron-Core's torch-Adam fallback with torch's fused kernel; True if it now does.

    Without TE/apex (CPU runs) ``get_megatron_optimizer`` builds ``torch.optim.AdamW`` with
    neither ``fused`` nor ``foreach``, and on CPU tensors torch then takes its per-tensor loop:
    six elementwise passes per parameter (measured ~0.9 s per step at opt-125m, one thread). The
    fused kernel does the same update in one pass (~0.18 s) -- the CPU counterpart of the
    FusedAdam Megatron-Core picks on GPUs, and what HF Trainer's default optimizer
    (``adamw_torch_fused``) uses. Megatron-Core's own CPU-offload optimizer sets the same flag.
    ``fused`` is a param-group option, so it is set on every group; loading a checkpoint
    restores the saved groups, so :func:`load_checkpoint` calls this again. Parameters on a
    device or dtype the kernel lacks leave the optimizer as built.
    """
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    adams = torch_adams(optimizer)
    supported = set(_get_fused_kernels_supported_devices())
    for inner in adams:
        params = [p for g in inner.param_groups for p in g["params"]]
        if any(g.get("differentiable") or g.get("foreach") for g in inner.param_groups) or not all(
            p.device.type in supported and p.dtype in (torch.float32, torch.bfloat16, torch.float16)
            for p in params
        ):
            return False
    for inner in adams:
        inner.defaults["fused"] = True
        for g in inner.param_groups:
            g["fused"] = True
        inner._step_supports_amp_scaling = True  # as AdamW(fused=True).__init__ sets
    return bool(adams)
