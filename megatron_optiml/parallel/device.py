"""Which device this process computes on: the one answer training code asks for, honouring
``trainer.accelerator`` (a CPU recipe stays on the CPU backend on a node that has GPUs).

The decision is made once, by :func:`select_accelerator` before any process group or model
exists: 'cpu' installs the CPU backend shim (also where CUDA is present), and from then on
:func:`uses_cuda` answers False even though ``torch.cuda.is_available()`` says True.
"""

from __future__ import annotations

import torch

from megatron_optiml.backend import cpu as cpu_backend

ACCELERATORS = ("auto", "gpu", "cpu")


def resolve_accelerator(accelerator: str, *, cuda_available: bool | None = None) -> str:
    """'cuda' or 'cpu' for a ``trainer.accelerator`` value ('auto' | 'gpu' | 'cpu').

    'auto' takes CUDA when present (and the CPU backend is not already installed in this
    process); 'gpu' without CUDA is a ``ValueError`` naming the key.
    """
    if accelerator not in ACCELERATORS:
        raise ValueError(
            f"trainer.accelerator={accelerator!r}: expected one of {', '.join(ACCELERATORS)}"
        )
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if accelerator == "gpu" and not cuda:
        raise ValueError("trainer.accelerator='gpu': no CUDA device is available on this machine")
    if accelerator == "cpu" or not cuda:
        return "cpu"
    if accelerator == "auto" and cuda_available is None and cpu_backend.is_installed():
        return "cpu"  # this process already runs Megatron-Core on the CPU backend
    return "cuda"


def select_accelerator(accelerator: str = "auto") -> str:
    """Decide this process's device ('cuda' | 'cpu') before anything is built: on 'cpu' the
    CPU backend is installed, forced where CUDA exists, so no Megatron-Core call reaches it."""
    kind = resolve_accelerator(accelerator)
    if kind == "cpu":
        cpu_backend.install(force=True)
    elif cpu_backend.is_installed():
        raise ValueError(
            f"trainer.accelerator={accelerator!r}: this process already runs on the CPU backend"
        )
    return kind


def uses_cuda() -> bool:
    """True when this process computes on a GPU: CUDA present and the CPU backend not installed."""
    return torch.cuda.is_available() and not cpu_backend.is_installed()


def compute_device() -> torch.device:
    """The device for tensors this process computes with (and NCCL's collectives need)."""
    if uses_cuda():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
