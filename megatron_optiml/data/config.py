"""The packed instruction dataset's config: Megatron-Core's dataset config plus packing fields."""

from __future__ import annotations

from dataclasses import dataclass

from megatron.core.datasets.blended_megatron_dataset_config import BlendedMegatronDatasetConfig

from megatron_optiml.data.indexed import EOS_TOKEN_ID, PAD_TOKEN_ID
from megatron_optiml.data.packing import PackingAlgorithm

_ALGORITHMS = ("best_fit_decreasing", "greedy")


@dataclass(kw_only=True)
class PackedInstructionDatasetConfig(BlendedMegatronDatasetConfig):
    """Megatron-Core's ``BlendedMegatronDatasetConfig`` (``random_seed``, ``sequence_length``,
    ``blend_per_split``, ``path_to_cache``...) for tokenized instruction examples packed into
    sequences of ``sequence_length`` tokens. No tokenizer: examples are already token ids."""

    pack_algorithm: PackingAlgorithm = "best_fit_decreasing"
    """How examples are packed: ``best_fit_decreasing`` over windows, or metaseq's ``greedy``."""

    pack_window: int = 8192
    """Examples per best-fit window (consecutive in the blended, shuffled example stream)."""

    pad_token_id: int = PAD_TOKEN_ID
    """Token id that fills the tail of a pack (OPT: 1); never carries loss."""

    eos_token_id: int = EOS_TOKEN_ID
    """Token id that closes every example's target (OPT ``</s>``: 2); checked on read."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sequence_length < 2:
            raise ValueError(f"sequence_length must be >= 2, got {self.sequence_length}")
        if self.pack_algorithm not in _ALGORITHMS:
            raise ValueError(
                f"pack_algorithm must be one of {_ALGORITHMS}, got {self.pack_algorithm!r}"
            )
        if self.pack_window < 1:
            raise ValueError(f"pack_window must be >= 1, got {self.pack_window}")
        if self.pad_token_id == self.eos_token_id:
            raise ValueError(
                f"pad_token_id and eos_token_id must differ, both are {self.pad_token_id}"
            )
        if self.multiple_validation_sets:
            raise ValueError("multiple_validation_sets is not supported by the packed dataset")
