"""OPT's decoder as Megatron-Core ModuleSpecs: local (any device) or Transformer Engine (GPU)."""

from __future__ import annotations

import dataclasses

import torch
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import (
    TransformerBlock,
    TransformerBlockSubmodules,
    get_num_layers_to_build,
)

from megatron_optiml.models.opt.attention import SDPADotProductAttention
from megatron_optiml.utils.optional import require_transformer_engine

#: Core attention of the local spec: torch's fused SDPA (default) or Megatron-Core's own
#: unfused ``DotProductAttention`` (score matrix + softmax; the reference the SDPA one is
#: tested against).
LOCAL_CORE_ATTENTION = {"sdpa": SDPADotProductAttention, "unfused": DotProductAttention}


class OPTLayerNorm(torch.nn.LayerNorm):
    """torch LayerNorm that takes part in sequence parallelism.

    Megatron-Core's own torch fallback (``WrappedTorchNorm``) refuses sequence parallel and its
    ``FusedLayerNorm`` needs apex. Under sequence parallelism each TP rank normalises its own
    slice of the sequence, so the weight/bias gradients are partial sums;
    ``finalize_model_grads`` all-reduces every parameter tagged ``sequence_parallel`` across TP.
    """

    def __init__(
        self,
        config: TransformerConfig,
        hidden_size: int,
        eps: float = 1e-5,
        persist_layer_norm: bool = False,
        zero_centered_gamma: bool = False,
        normalization: str = "LayerNorm",
    ) -> None:
        if (
            normalization != "LayerNorm"
            or zero_centered_gamma
            or config.layernorm_zero_centered_gamma
        ):
            raise ValueError("OPTLayerNorm is a plain LayerNorm (normalization='LayerNorm')")
        super().__init__(hidden_size, eps=eps)
        for p in self.parameters():
            p.sequence_parallel = config.sequence_parallel


def _core_attention_class(core_attention: str) -> type:
    if core_attention not in LOCAL_CORE_ATTENTION:
        raise ValueError(
            f"core_attention={core_attention!r}: expected one of {sorted(LOCAL_CORE_ATTENTION)}"
        )
    return LOCAL_CORE_ATTENTION[core_attention]


def opt_layer_local_spec(core_attention: str = "sdpa") -> ModuleSpec:
    """Pre-LN attention + ReLU MLP with biases, from Megatron-Core's own local modules.

    OPT's choices (ReLU, biases, LayerNorm) are ``TransformerConfig`` fields, so the stock GPT
    layer spec is OPT's layer; the LayerNorms are swapped for :class:`OPTLayerNorm` and the
    core attention for ``LOCAL_CORE_ATTENTION[core_attention]`` ('sdpa' or 'unfused').
    """
    attention_cls = _core_attention_class(core_attention)
    spec = get_gpt_layer_local_spec(normalization="LayerNorm")
    self_attention = spec.submodules.self_attention
    attention_submodules = dataclasses.replace(
        self_attention.submodules, core_attention=attention_cls
    )
    submodules = dataclasses.replace(
        spec.submodules,
        input_layernorm=OPTLayerNorm,
        pre_mlp_layernorm=OPTLayerNorm,
        self_attention=dataclasses.replace(self_attention, submodules=attention_submodules),
    )
    return dataclasses.replace(spec, submodules=submodules)


def opt_layer_te_spec() -> ModuleSpec:
    """The same layer on Transformer Engine modules (LayerNorm fused into the next linear;
    FP8-capable)."""
    require_transformer_engine(
        "the Transformer Engine layer spec (transformer_impl='transformer_engine')"
    )
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_with_transformer_engine_spec,
    )

    return get_gpt_layer_with_transformer_engine_spec()


def opt_block_spec(
    config: TransformerConfig,
    transformer_impl: str,
    vp_stage: int | None = None,
    *,
    core_attention: str = "sdpa",
) -> ModuleSpec:
    """The decoder block of this pipeline stage: OPT layers plus OPT's final LayerNorm.

    ``transformer_impl`` follows Megatron-LM's flag: 'local' or 'transformer_engine';
    ``core_attention`` picks the local spec's attention ('sdpa' or 'unfused'; TE has its own).
    """
    if transformer_impl == "local":
        layer, final_norm = opt_layer_local_spec(core_attention), OPTLayerNorm
    elif transformer_impl == "transformer_engine":
        layer = opt_layer_te_spec()
        from megatron.core.extensions.transformer_engine import TENorm

        final_norm = TENorm
    else:
        raise ValueError(
            f"transformer_impl={transformer_impl!r}: expected 'local' or 'transformer_engine'"
        )
    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    return ModuleSpec(
        module=TransformerBlock,
        submodules=TransformerBlockSubmodules(
            layer_specs=[layer] * num_layers, layer_norm=final_norm
        ),
    )
