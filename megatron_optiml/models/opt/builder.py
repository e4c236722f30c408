"""Build OPT as a Megatron-Core ``GPTModel``: OPT's semantics expressed as TransformerConfig fields."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from megatron.core.transformer import TransformerConfig

from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.models.opt.model import OPTModel
from megatron_optiml.models.opt.spec import opt_block_spec
from megatron_optiml.parallel.device import uses_cuda


def check_supported(arch: OPTArch) -> None:
    """Refuse OPT variants whose layout Megatron's GPT block does not express, naming the
    offending config fields and their values."""
    reasons = []
    if not arch.do_layer_norm_before:
        reasons.append("do_layer_norm_before=False (post-LayerNorm)")
    if arch.word_embed_proj_dim not in (None, arch.hidden_size):
        reasons.append(
            f"word_embed_proj_dim={arch.word_embed_proj_dim} != hidden_size={arch.hidden_size} "
            "(project_in/project_out)"
        )
    if reasons:
        raise NotImplementedError(
            f"opt-350m is not supported, nor any OPT like it: {'; '.join(reasons)}. "
            "Megatron-Core's GPTModel has no module for this. Use opt-125m or opt-1.3b and larger."
        )


def check_pipeline_split(fields: dict[str, Any]) -> None:
    """Refuse a layer count that the pipeline stages (x virtual stages) do not divide, in the
    project's words rather than Megatron-Core's bare assert at model build time."""
    if any(
        fields.get(k) is not None
        for k in (
            "num_layers_in_first_pipeline_stage",
            "num_layers_in_last_pipeline_stage",
            "pipeline_model_parallel_layout",
        )
    ):
        return  # an explicit uneven split: Megatron-Core checks it
    pp = fields.get("pipeline_model_parallel_size") or 1
    vp = fields.get("virtual_pipeline_model_parallel_size") or 1
    if fields["num_layers"] % (pp * vp):
        raise ValueError(
            f"num_layers={fields['num_layers']} cannot be split evenly over "
            f"pipeline_model_parallel_size={pp} x virtual_pipeline_model_parallel_size={vp} "
            f"= {pp * vp} stages: choose a pipeline size that divides the layer count"
        )


def build_transformer_config(arch: OPTArch, **overrides: Any) -> TransformerConfig:
    """OPT's TransformerConfig. ``overrides`` are TransformerConfig fields (parallel sizes,
    dropouts, precision, recompute...), with Megatron-Core's own names."""
    check_supported(arch)
    fields: dict[str, Any] = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        ffn_hidden_size=arch.ffn_hidden_size,
        # OPT: ReLU MLP, biases on every linear incl. QKV, LayerNorm with eps 1e-5.
        activation_func=F.relu,
        gated_linear_unit=False,
        add_bias_linear=True,
        add_qkv_bias=True,
        normalization="LayerNorm",
        layernorm_epsilon=arch.layernorm_epsilon,
        # OPT scales q by 1/sqrt(head_dim) only (Megatron's default softmax scale).
        apply_query_key_layer_scaling=False,
        attention_softmax_in_fp32=True,
        init_method_std=0.02,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        # Fused CUDA kernels off by default; training/build.py turns on what the device has.
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        use_cpu_initialization=not uses_cuda(),
    )
    fields.update(overrides)
    check_pipeline_split(fields)
    return TransformerConfig(**fields)


def build_opt_model(
    arch: OPTArch,
    config: TransformerConfig,
    *,
    transformer_impl: str = "local",
    core_attention: str = "sdpa",
    pre_process: bool = True,
    post_process: bool = True,
    vp_stage: int | None = None,
    loss_tokens_only: bool = True,
) -> OPTModel:
    """OPT = GPTModel with learned absolute positions, tied embeddings and a final LayerNorm.

    ``pre_process``/``post_process`` select the first/last pipeline stage as in Megatron-LM.
    ``core_attention`` ('sdpa' or 'unfused') picks the local spec's core attention: torch's
    fused SDPA by default, Megatron-Core's unfused ``DotProductAttention`` on request (same
    numbers, same checkpoints). ``loss_tokens_only`` runs the output layer on the tokens of
    ``loss_mask`` alone when the forward passes one with ``labels`` (``models/opt/model.py``).
    """
    check_supported(arch)
    kwargs: dict[str, Any] = {}
    if vp_stage is not None:
        kwargs["vp_stage"] = vp_stage
    return OPTModel(
        config=config,
        transformer_layer_spec=opt_block_spec(
            config, transformer_impl, vp_stage, core_attention=core_attention
        ),
        vocab_size=arch.vocab_size,
        max_sequence_length=arch.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        parallel_output=True,
        share_embeddings_and_output_weights=True,
        position_embedding_type="learned_absolute",
        loss_tokens_only=loss_tokens_only,
        **kwargs,
    )
