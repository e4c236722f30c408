"""Spawn N gloo ranks on one machine, run a function in each, and collect what each returns.

Each rank runs ``fn(rank, world_size, *args)`` in a fresh ``spawn`` process with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT set as torchrun would, one intra-op thread
(ranks share the machine's cores), and a hard timeout: a hung collective kills the whole group
and raises instead of eating the CI window.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(fn, rank, world_size, port, out_dir, args, env):
    os.environ.update(env)
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
) -> list[Any]:
    """Run ``fn`` on ``world_size`` ranks; return the per-rank results in rank order.

    ``fn`` must be importable (module level) because ranks are spawned, not forked.
    """
    ctx = mp.get_context("spawn")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="optiml_dist_") as tmp:
        procs = [
            ctx.Process(
                target=_rank_main,
                args=(fn, rank, world_size, port, tmp, args, dict(env or {})),
                daemon=False,
            )
            for rank in range(world_size)
        ]
        for p in procs:
            p.start()
        import time

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
