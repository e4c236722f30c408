"""Start N gloo ranks on one machine, run a function in each, and collect what each returns.

Each rank runs ``fn(rank, world_size, *args)`` in its own process with RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT set as torchrun would, one intra-op thread (ranks share
the machine's cores), and a hard timeout: a hung collective kills the whole group and raises
instead of eating the CI window.

Ranks fork from a ``forkserver`` that has imported torch, Megatron-Core and the trainer once
(``rank_preload``): a freshly spawned rank spends ~6 s of CPU on those imports, and a test
session starts a few hundred ranks. A fork server is a clean process of its own (it never runs
a test), so a rank still starts from unused modules; it only lacks what the caller changed
since the server started, which the rank gets explicitly: the caller's current environment
and its stdout/stderr (pytest's capture). ``start_method="spawn"`` gives a rank that imports
everything itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing import reduction
from pathlib import Path
from typing import Any

import torch

PRELOAD = ["megatron_optiml.testing.rank_preload"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ParentFd:
    """One of the caller's file descriptors, handed to the rank by multiprocessing."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        return (_detach, (reduction.DupFd(self.fd),))


def _detach(dup_fd) -> int:
    return dup_fd.detach()


def _rank_main(fn, rank, world_size, port, out_dir, args, environ, stdio):
    # A forked rank has the fork server's environment and output streams: take the caller's.
    for target, (stream, fd) in enumerate(zip((sys.stdout, sys.stderr), stdio), start=1):
        if fd != target:  # a spawned rank inherits the caller's descriptors as they are
            stream.flush()
            os.dup2(fd, target)
            os.close(fd)
    os.environ.clear()
    os.environ.update(environ)
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    out = Path(out_dir) / f"rank{rank}.pt"
    try:
        result = fn(rank, world_size, *args)
        torch.save({"ok": True, "result": result}, out)
    except BaseException:  # noqa: BLE001 - reported to the parent with the traceback
        torch.save({"ok": False, "error": traceback.format_exc()}, out)
        raise
    finally:
        try:
            from megatron_optiml.parallel import destroy_distributed

            destroy_distributed()
        except Exception:  # noqa: BLE001
            pass


class DistributedRunError(RuntimeError):
    pass


def run_distributed(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = 240.0,
    env: dict[str, str] | None = None,
    start_method: str = "forkserver",
) -> list[Any]:
    """Run ``fn`` on ``world_size`` ranks; return the per-rank results in rank order.

    ``fn`` and ``args`` travel pickled, so ``fn`` must be importable (module level). ``env``
    is added to the caller's environment in the ranks. ``start_method="spawn"``: ranks that
    import everything themselves (slower by ~6 s of CPU each).
    """
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method={start_method!r}: 'forkserver' or 'spawn'")
    ctx = mp.get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)  # read when the (one, lazily started) server starts
    environ = {**os.environ, **(env or {})}
    stdio = (_ParentFd(1), _ParentFd(2))
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="optiml_dist_") as tmp:
        procs = [
            ctx.Process(
                target=_rank_main,
                args=(fn, rank, world_size, port, tmp, args, environ, stdio),
                daemon=False,
            )
            for rank in range(world_size)
        ]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [i for i, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        results, errors = [], []
        for rank in range(world_size):
            f = Path(tmp) / f"rank{rank}.pt"
            if not f.exists():
                errors.append(f"rank {rank}: no result (exit code {procs[rank].exitcode})")
                results.append(None)
                continue
            rec = torch.load(f, weights_only=False)
            if rec["ok"]:
                results.append(rec["result"])
            else:
                errors.append(f"rank {rank} raised:\n{rec['error']}")
                results.append(None)
        if hung:
            errors.insert(0, f"ranks {hung} still running after {timeout:.0f}s: killed")
        if errors:
            raise DistributedRunError("\n".join(errors))
        return results
