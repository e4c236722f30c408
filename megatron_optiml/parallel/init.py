"""Start torch.distributed and Megatron-Core's model-parallel groups: NCCL on GPUs, gloo on CPU."""

from __future__ import annotations

import datetime
import logging
import os

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

from megatron_optiml.parallel.device import select_accelerator
from megatron_optiml.parallel.layout import data_parallel_size

logger = logging.getLogger(__name__)


def init_distributed(
    *,
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    virtual_pipeline_model_parallel_size: int | None = None,
    seed: int = 1234,
    timeout_minutes: float = 10.0,
    accelerator: str = "auto",
) -> None:
    """Initialise the default process group from torchrun/Slurm env vars, then Megatron's groups.

    Reads RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT (torchrun's names; the Slurm
    launcher exports the same). ``accelerator`` is ``trainer.accelerator``: on 'cpu' (or 'auto'
    without CUDA) it installs the CPU backend and uses gloo, also on a node with GPUs.
    """
    use_cuda = select_accelerator(accelerator) == "cuda"
    if not torch.distributed.is_initialized():
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(rendezvous_port()))
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    world_size = torch.distributed.get_world_size()
    data_parallel_size(world_size, tensor_model_parallel_size, pipeline_model_parallel_size)
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_model_parallel_size,
        pipeline_model_parallel_size=pipeline_model_parallel_size,
        virtual_pipeline_model_parallel_size=virtual_pipeline_model_parallel_size,
    )
    model_parallel_cuda_manual_seed(seed)
    logger.info(
        "distributed: world=%d tp=%d pp=%d dp=%d backend=%s",
        world_size,
        tensor_model_parallel_size,
        pipeline_model_parallel_size,
        parallel_state.get_data_parallel_world_size(),
        "nccl" if use_cuda else "gloo",
    )


def rendezvous_port(environ: dict[str, str] | None = None) -> int:
    """The rendezvous port: ``MASTER_PORT`` when set, else 29500 + Slurm job id % 1000 (jobs
    sharing a first node do not collide), else 29500. The one rule the launcher and the
    ranks share (``optiml-train --validate-only --json`` reports it)."""
    env = os.environ if environ is None else environ
    if env.get("MASTER_PORT"):
        return int(env["MASTER_PORT"])
    return 29500 + int(env.get("SLURM_JOB_ID") or 0) % 1000


def destroy_distributed() -> None:
    """Tear down Megatron's groups and the default process group (safe to call twice)."""
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
