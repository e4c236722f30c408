"""Deterministic canonical OPT weights from a seed, independent of any parallel layout."""

from __future__ import annotations

import torch

from megatron_optiml.models.opt.flavors import OPTArch


def canonical_shapes(arch: OPTArch) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the canonical (TP=1, PP=1, local spec) OPT state dict."""
    h, f = arch.hidden_size, arch.ffn_hidden_size
    shapes: dict[str, tuple[int, ...]] = {
        "embedding.word_embeddings.weight": (arch.vocab_size, h),
        "embedding.position_embeddings.weight": (arch.max_position_embeddings, h),
    }
    for i in range(arch.num_layers):
        p = f"decoder.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (h,),
                p + "input_layernorm.bias": (h,),
                p + "self_attention.linear_qkv.weight": (3 * h, h),
                p + "self_attention.linear_qkv.bias": (3 * h,),
                p + "self_attention.linear_proj.weight": (h, h),
                p + "self_attention.linear_proj.bias": (h,),
                p + "pre_mlp_layernorm.weight": (h,),
                p + "pre_mlp_layernorm.bias": (h,),
                p + "mlp.linear_fc1.weight": (f, h),
                p + "mlp.linear_fc1.bias": (f,),
                p + "mlp.linear_fc2.weight": (h, f),
                p + "mlp.linear_fc2.bias": (h,),
            }
        )
    shapes["decoder.final_layernorm.weight"] = (h,)
    shapes["decoder.final_layernorm.bias"] = (h,)
    return shapes


def random_canonical_state_dict(
    arch: OPTArch, seed: int = 0, std: float = 0.02
) -> dict[str, torch.Tensor]:
    """Random weights (normal(0, std); LayerNorm weights near 1) from one CPU generator, so every
    rank of every layout can build the same model without communication."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in canonical_shapes(arch).items():
        t = torch.randn(shape, generator=g) * std
        if "layernorm" in name and name.endswith("weight"):
            t = t + 1.0
        out[name] = t
    return out
