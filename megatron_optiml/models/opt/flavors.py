"""The OPT family's published shapes (Zhang et al. 2022, Table 1) as a data table."""

from __future__ import annotations

from dataclasses import dataclass

# OPT's checkpoints pad the 50,265-entry GPT-2/OPT vocabulary to 50,272 (a multiple of 8)
# so the embedding GEMM stays tensor-core friendly; the extra rows are never produced.
OPT_VOCAB_SIZE = 50272
OPT_MAX_POSITIONS = 2048


@dataclass(frozen=True, kw_only=True)
class OPTArch:
    """Shape and OPT-specific switches of one OPT model."""

    num_layers: int
    """Transformer decoder layers."""
    hidden_size: int
    """Model width (d_model)."""
    num_attention_heads: int
    """Attention heads; hidden_size must divide by it."""
    ffn_hidden_size: int
    """Width of the ReLU MLP (4 x hidden for every published OPT)."""
    vocab_size: int = OPT_VOCAB_SIZE
    """Embedding rows, already padded (50272 for the released checkpoints)."""
    max_position_embeddings: int = OPT_MAX_POSITIONS
    """Learned absolute positions (HF stores 2 more rows: OPT's position offset of 2)."""
    layernorm_epsilon: float = 1e-5
    """LayerNorm epsilon (PyTorch's default, as in metaseq and HF OPT)."""
    do_layer_norm_before: bool = True
    """Pre-LayerNorm. Only opt-350m is post-LN; see ``builder.check_supported``."""
    word_embed_proj_dim: int | None = None
    """opt-350m projects 512-wide embeddings to 1024 (project_in/out); None elsewhere."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def num_parameters(self) -> int:
        """Parameter count with tied input/output embeddings (biases and LayerNorms included)."""
        h, f, n = self.hidden_size, self.ffn_hidden_size, self.num_layers
        per_layer = (4 * h * h + 4 * h) + (2 * h * f + f + h) + 4 * h
        return n * per_layer + self.vocab_size * h + self.max_position_embeddings * h + 2 * h


OPT_FLAVORS: dict[str, OPTArch] = {
    # Tiny shape for tests and the CPU demo: 2 layers, hidden 64, 4 heads.
    "opt-debug": OPTArch(num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=256),
    "opt-125m": OPTArch(
        num_layers=12, hidden_size=768, num_attention_heads=12, ffn_hidden_size=3072
    ),
    "opt-350m": OPTArch(
        num_layers=24,
        hidden_size=1024,
        num_attention_heads=16,
        ffn_hidden_size=4096,
        do_layer_norm_before=False,
        word_embed_proj_dim=512,
    ),
    "opt-1.3b": OPTArch(
        num_layers=24, hidden_size=2048, num_attention_heads=32, ffn_hidden_size=8192
    ),
    "opt-2.7b": OPTArch(
        num_layers=32, hidden_size=2560, num_attention_heads=32, ffn_hidden_size=10240
    ),
    "opt-6.7b": OPTArch(
        num_layers=32, hidden_size=4096, num_attention_heads=32, ffn_hidden_size=16384
    ),
    "opt-13b": OPTArch(
        num_layers=40, hidden_size=5120, num_attention_heads=40, ffn_hidden_size=20480
    ),
    "opt-30b": OPTArch(
        num_layers=48, hidden_size=7168, num_attention_heads=56, ffn_hidden_size=28672
    ),
    "opt-66b": OPTArch(
        num_layers=64, hidden_size=9216, num_attention_heads=72, ffn_hidden_size=36864
    ),
    "opt-175b": OPTArch(
        num_layers=96, hidden_size=12288, num_attention_heads=96, ffn_hidden_size=49152
    ),
}


def get_flavor(name: str) -> OPTArch:
    try:
        return OPT_FLAVORS[name]
    except KeyError:
        raise ValueError(f"unknown OPT flavor {name!r}; known: {', '.join(OPT_FLAVORS)}") from None
