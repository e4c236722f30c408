"""Thin CLIs over ``megatron_optiml.conversion`` (HF / metaseq <-> Megatron-Core checkpoints)."""
