"""Process groups and model-parallel state (Megatron-Core parallel_state) on GPU or CPU/gloo."""

from megatron_optiml.parallel.init import destroy_distributed, init_distributed

__all__ = ["destroy_distributed", "init_distributed"]
