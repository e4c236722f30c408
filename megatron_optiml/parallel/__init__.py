"""Process groups and model-parallel state (Megatron-Core parallel_state) on GPU or CPU/gloo."""

from megatron_optiml.parallel.device import (
    compute_device,
    resolve_accelerator,
    select_accelerator,
    uses_cuda,
)
from megatron_optiml.parallel.init import destroy_distributed, init_distributed, rendezvous_port

__all__ = [
    "compute_device",
    "destroy_distributed",
    "init_distributed",
    "rendezvous_port",
    "resolve_accelerator",
    "select_accelerator",
    "uses_cuda",
]
