"""What ``run_distributed``'s forkserver imports once, so that every rank forks warm.

A fresh rank spends ~6 s of CPU importing torch, Megatron-Core (torch._dynamo/_inductor come
with its ``jit_fuser`` decorators) and the trainer; a test suite starts a few hundred ranks.
Only imports and thread settings happen here: no tensor op runs, so no OpenMP thread pool
exists in the server when it forks (GNU OpenMP pools do not survive a fork).
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)

import megatron.core  # noqa: E402, F401

import megatron_optiml.testing.parity  # noqa: E402, F401
import megatron_optiml.training.trainer  # noqa: E402, F401
