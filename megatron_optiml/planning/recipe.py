"""Read a planner layout from a run recipe: our typed ``RunConfig``, or a raw NeMo-layout dict.

A recipe that loads strictly as :class:`~megatron_optiml.config.RunConfig` is read through it,
so the planner sees the trainer's own defaults (distributed optimizer, dropout, sequence
length); a NeMo recipe with keys outside our schema (explicit shape keys, ``model.fp8``,
``model.encoder_seq_length``) falls back to reading those raw keys.
"""

from __future__ import annotations

from typing import Any

from megatron_optiml.config import ConfigError, RunConfig, config_from_dict
from megatron_optiml.config.precision import canonical_precision
from megatron_optiml.models.opt.flavors import OPTArch, get_flavor

_MISSING = object()


def _get(recipe: dict[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    node: Any = recipe
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            if default is _MISSING:
                raise ValueError(f"recipe has no {dotted!r}")
            return default
        node = node[key]
    return node


def precision_from_recipe(recipe: dict[str, Any]) -> str:
    """``trainer.precision`` (NeMo/Lightning spellings, config/precision.py) as 'fp32' | 'bf16' |
    'fp16' | 'fp8'; NeMo's ``model.fp8: true`` makes it 'fp8'."""
    if _get(recipe, "model.fp8", False):
        return "fp8"
    return canonical_precision(_get(recipe, "trainer.precision", "bf16"))


def arch_from_recipe(recipe: dict[str, Any]) -> tuple[str, OPTArch]:
    """``model.flavor`` (an OPT_FLAVORS key), or NeMo's explicit shape keys."""
    flavor = _get(recipe, "model.flavor", None)
    if flavor is not None:
        return str(flavor), get_flavor(str(flavor))
    h = int(_get(recipe, "model.hidden_size"))
    arch = OPTArch(
        num_layers=int(_get(recipe, "model.num_layers")),
        hidden_size=h,
        num_attention_heads=int(_get(recipe, "model.num_attention_heads")),
        ffn_hidden_size=int(_get(recipe, "model.ffn_hidden_size", 4 * h)),
    )
    return f"{arch.num_parameters() / 1e9:.1f}B (from recipe shape)", arch


def plan_input_from_run_config(cfg: RunConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(PlanInput fields, ClusterSpec fields) of a typed run config, as the trainer will run it."""
    m, t = cfg.model, cfg.trainer
    fields: dict[str, Any] = dict(
        arch=get_flavor(m.flavor),
        tp=m.tensor_model_parallel_size,
        pp=m.pipeline_model_parallel_size,
        vp=m.virtual_pipeline_model_parallel_size,
        sequence_parallel=m.sequence_parallel,
        micro_batch_size=m.micro_batch_size,
        global_batch_size=m.global_batch_size,
        seq_length=m.data.seq_length,
        precision=t.canonical_precision,
        use_distributed_optimizer=m.optim.use_distributed_optimizer,
        # The trainer's DDP always reduces gradients in an fp32 main-grad buffer.
        grad_reduce_in_fp32=True,
        recompute=m.activations_checkpoint_granularity or "none",
        # 'auto' resolves to Transformer Engine on a GPU node with TE installed; a run kept on
        # the CPU backend (trainer.accelerator=cpu) uses the local spec.
        transformer_impl="local"
        if m.transformer_impl == "local" or t.accelerator == "cpu"
        else "transformer_engine",
        hidden_dropout=m.hidden_dropout,
        attention_dropout=m.attention_dropout,
        extra={"flavor": m.flavor},
    )
    return fields, dict(num_nodes=t.num_nodes, gpus_per_node=t.devices)


def plan_input_from_recipe(recipe: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(PlanInput fields, ClusterSpec fields) read from a recipe dict.

    A recipe in our typed schema goes through :func:`plan_input_from_run_config`; otherwise the

    raw NeMo keys are read: model.{tensor,pipeline,virtual_pipeline}_model_parallel_size,
    model.sequence_parallel,
    model.micro_batch_size, model.global_batch_size, model.encoder_seq_length or
    model.data.seq_length, trainer.precision (+ model.fp8), trainer.num_nodes,
    trainer.devices, model.optim.name ('distributed_fused_adam' = distributed optimizer),
    model.activations_checkpoint_granularity (null | selective | full), model.hidden_dropout,
    model.attention_dropout.
    """
    try:
        cfg = config_from_dict(recipe, "recipe")
    except ConfigError:
        cfg = None  # keys outside our schema: a NeMo recipe, read key by key below
    if cfg is not None:
        return plan_input_from_run_config(cfg)
    flavor, arch = arch_from_recipe(recipe)
    seq = _get(recipe, "model.encoder_seq_length", None)
    if seq is None:
        seq = _get(recipe, "model.data.seq_length", 2048)
    granularity = _get(recipe, "model.activations_checkpoint_granularity", None)
    recompute = "none" if granularity in (None, "null", "none") else str(granularity)
    fields: dict[str, Any] = dict(
        arch=arch,
        tp=int(_get(recipe, "model.tensor_model_parallel_size", 1)),
        pp=int(_get(recipe, "model.pipeline_model_parallel_size", 1)),
        vp=_get(recipe, "model.virtual_pipeline_model_parallel_size", None),
        sequence_parallel=bool(_get(recipe, "model.sequence_parallel", False)),
        micro_batch_size=int(_get(recipe, "model.micro_batch_size")),
        global_batch_size=int(_get(recipe, "model.global_batch_size")),
        seq_length=int(seq),
        precision=precision_from_recipe(recipe),
        use_distributed_optimizer=_get(recipe, "model.optim.name", "") == "distributed_fused_adam",
        recompute=recompute,
        extra={"flavor": flavor},
    )
    for key in ("hidden_dropout", "attention_dropout"):
        value = _get(recipe, f"model.{key}", None)
        if value is not None:
            fields[key] = float(value)
    cluster = dict(
        num_nodes=int(_get(recipe, "trainer.num_nodes", 1)),
        gpus_per_node=int(_get(recipe, "trainer.devices", 8)),
    )
    return fields, cluster
