"""Preemption signals: SIGTERM (Slurm preemption, scancel) and SIGUSR1 (``--signal=B:USR1@N``)
ask for a checkpoint after the current step, agreed on by every rank."""

from __future__ import annotations

import logging
import signal

import torch

from megatron_optiml.parallel import compute_device

logger = logging.getLogger(__name__)


class Preemption:
    """SIGTERM (Slurm preemption / scancel) and SIGUSR1 (``--signal=B:USR1@N``) set a flag; the
    loop checks it after each step on every rank, saves and exits."""

    def __init__(self) -> None:
        self.flag = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        logger.warning("received signal %d: will checkpoint and exit after this step", signum)
        self.flag = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def any_rank(self) -> bool:
        t = torch.tensor([1 if self.flag else 0], dtype=torch.int32, device=compute_device())
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())
