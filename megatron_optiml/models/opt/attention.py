"""Core attention for the local spec through torch's fused ``scaled_dot_product_attention``."""

from __future__ import annotations

import contextlib

import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.transformer_config import TransformerConfig
from torch import Tensor


class SDPADotProductAttention(DotProductAttention):
    """Megatron-Core's ``DotProductAttention`` with the score matrix left to one fused call.

    The unfused parent materialises ``[b, heads, s, s]`` scores, their fp32 softmax and the
    probabilities (three s^2 tensors per layer, kept for the backward); torch's SDPA (flash
    kernel on CPU, flash/memory-efficient on GPU) keeps none, which is what HF's OPT uses.

    Same constructor, forward signature, attributes and (empty) sharded state dict as the
    parent, so a ``ModuleSpec`` swaps one for the other and checkpoints do not notice. The
    numbers are the parent's: scale ``1/sqrt(head_dim)`` (or ``softmax_scale``), Megatron's
    ``attention_mask`` (bool, True = masked out; e.g. the packed block-diagonal causal mask)
    in place of the causal one when given, attention dropout drawn inside the model-parallel
    RNG tracker's fork, heads per TP partition, grouped-query heads repeated.

    The mask must leave every query at least one key (causal and block-causal masks do): a
    fully masked row gives NaN here, where the parent's ``-10000`` fill gives a uniform row.
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
    ) -> None:
        super().__init__(
            config=config,
            layer_number=layer_number,
            attn_mask_type=attn_mask_type,
            attention_type=attention_type,
            attention_dropout=attention_dropout,
            softmax_scale=softmax_scale,
            cp_comm_type=cp_comm_type,
            pg_collection=pg_collection,
        )
        if getattr(config, "softmax_type", "vanilla") != "vanilla":
            raise ValueError(
                f"softmax_type={config.softmax_type!r}: SDPADotProductAttention computes the "
                "vanilla softmax; use the unfused DotProductAttention"
            )
        if getattr(config, "window_size", None) is not None:
            raise ValueError(
                f"window_size={config.window_size!r}: sliding-window attention is not "
                "supported by SDPADotProductAttention; use the unfused DotProductAttention"
            )
        # The parent divides its scale by the layer number under query-key layer scaling and
        # multiplies it back inside the softmax: the scale the logits see is the product.
        coeff = self.layer_number if config.apply_query_key_layer_scaling else 1
        self.sdpa_scale = self.softmax_scale * coeff

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: Tensor | None = None,
        packed_seq_params=None,
    ) -> Tensor:
        """``query``/``key``/``value`` ``[s, b, heads/p, head_dim]`` -> ``[sq, b, hidden/p]``."""
        if packed_seq_params is not None:
            raise ValueError(
                "packed_seq_params (THD) needs Transformer Engine's attention; the local spec "
                "takes packed sequences as a block-diagonal attention_mask"
            )
        if attention_bias is not None:
            raise ValueError("attention_bias is not supported by SDPADotProductAttention")
        sq, b = query.shape[0], query.shape[1]
        sk = key.shape[0]
        # [s, b, n, d] -> [b, n, s, d]: strided views, SDPA reads them as they are.
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        groups = self.num_attention_heads_per_partition // self.num_query_groups_per_partition
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)

        # As the parent (``attn_mask_type`` argument unused): a given mask replaces the causal
        # one; without a mask, causal if this layer was built causal.
        mask, is_causal = None, False
        if attention_mask is not None:
            mask = ~attention_mask  # Megatron: True = masked out; SDPA: True = may attend
        elif self.attn_mask_type == AttnMaskType.causal and sq > 1:
            if sq != sk:
                raise ValueError(f"causal mask is only for self attention (sq={sq}, sk={sk})")
            is_causal = True

        dropout_p = self.attention_dropout.p if self.training else 0.0
        # The parent draws its dropout mask inside the RNG tracker's fork unless sequence
        # parallel; SDPA draws from the same (forked) generator.
        fork = dropout_p > 0 and not self.config.sequence_parallel
        with tensor_parallel.get_cuda_rng_tracker().fork() if fork else contextlib.nullcontext():
            context = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=dropout_p,
                is_causal=is_causal,
                scale=self.sdpa_scale,
            )
        # [b, n, sq, d] -> [sq, b, n * d]
        return context.permute(2, 0, 1, 3).reshape(sq, b, self.hidden_size_per_partition)
