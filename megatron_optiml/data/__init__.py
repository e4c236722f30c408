"""Packed instruction dataset on Megatron-Core datasets: blended examples, packed sequences,
label-only loss masks, per-example attention and positions, deterministic DP sampling."""

from megatron_optiml.data.blend import blend_per_split, load_blend
from megatron_optiml.data.collate import block_causal_mask, collate_packed
from megatron_optiml.data.config import PackedInstructionDatasetConfig
from megatron_optiml.data.examples import InstructionExampleDataset
from megatron_optiml.data.indexed import check_example_format, example_lengths, write_examples
from megatron_optiml.data.packed import PackedInstructionDataset, build_packed_datasets
from megatron_optiml.data.packing import pack_examples, pack_fill
from megatron_optiml.data.sampler import PackedBatchSampler

__all__ = [
    "InstructionExampleDataset",
    "PackedBatchSampler",
    "PackedInstructionDataset",
    "PackedInstructionDatasetConfig",
    "blend_per_split",
    "block_causal_mask",
    "build_packed_datasets",
    "check_example_format",
    "collate_packed",
    "example_lengths",
    "load_blend",
    "pack_examples",
    "pack_fill",
    "write_examples",
]
