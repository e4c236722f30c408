"""Runtime backends: the CPU shim that lets stock Megatron-Core run with gloo when CUDA is absent."""

from megatron_optiml.backend.cpu import install as install_cpu_backend

__all__ = ["install_cpu_backend"]
