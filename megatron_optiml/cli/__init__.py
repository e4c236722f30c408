"""Thin command-line entry points over the megatron_optiml library."""
