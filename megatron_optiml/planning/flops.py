"""FLOPs of one training step of OPT (Narayanan et al. 2021, Megatron-LM's formula).

Per token and layer the forward does 2 x (4h^2 + 2hf) GEMM FLOPs plus 4sh for QK^T and AV
(counted over the full s x s square, as Megatron does); the logits add 2hV per token. The
backward is twice the forward. With f = 4h this is Megatron-LM's
72 * B * s * L * h^2 * (1 + s/(6h) + V/(12 L h)) per step. Recompute re-runs forwards:
'full' every layer's, 'selective' only core attention's.
"""

from __future__ import annotations

from dataclasses import dataclass

from megatron_optiml.models.opt.flavors import OPTArch


@dataclass(frozen=True, kw_only=True)
class StepFlops:
    """FLOPs of one optimizer step, all GPUs together."""

    model: float
    """Model FLOPs (3 x forward, no recompute): the numerator of MFU."""
    gemm: float
    """Executed FLOPs in the decoder's linear layers (FP8-eligible), recompute included."""
    other: float
    """Executed FLOPs in core attention and the logits (kept 16-bit), recompute included."""

    @property
    def executed(self) -> float:
        return self.gemm + self.other


def forward_flops_per_token(arch: OPTArch, seq_length: int) -> tuple[float, float, float]:
    """(layer GEMMs, core attention, logits) forward FLOPs per token, whole model."""
    h, f, n = arch.hidden_size, arch.ffn_hidden_size, arch.num_layers
    gemm = n * 2 * (4 * h * h + 2 * h * f)
    attention = n * 4 * seq_length * h
    logits = 2 * h * arch.vocab_size
    return gemm, attention, logits


def step_flops(
    arch: OPTArch, *, global_batch_size: int, seq_length: int, recompute: str
) -> StepFlops:
    tokens = global_batch_size * seq_length
    gemm, attention, logits = forward_flops_per_token(arch, seq_length)
    model = 3 * tokens * (gemm + attention + logits)
    gemm_passes, attention_passes = 3, 3
    if recompute == "full":
        gemm_passes, attention_passes = 4, 4
    elif recompute == "selective":
        attention_passes = 4
    return StepFlops(
        model=model,
        gemm=tokens * gemm_passes * gemm,
        other=tokens * (attention_passes * attention + 3 * logits),
    )


def megatron_step_flops(arch: OPTArch, *, global_batch_size: int, seq_length: int) -> float:
    """Megatron-LM's closed form (no recompute, f = 4h), for cross-checking :func:`step_flops`."""
    b, s, n, h, v = (
        global_batch_size,
        seq_length,
        arch.num_layers,
        arch.hidden_size,
        arch.vocab_size,
    )
    return 72 * b * s * n * h * h * (1 + s / (6 * h) + v / (12 * n * h))
