"""Trainer checkpoints: model, optimizer, LR scheduler, RNG and data position, resumable on any layout.

One ``dist_checkpointing`` save per iteration folder (Megatron-LM's ``iter_NNNNNNN`` under the run's
checkpoint root) holding ``model`` and ``optimizer`` as sharded tensors (per parameter in model space,
so TP/PP/DP may change on resume) and the scheduler and counters as common state. Per-rank
RNG states go beside it and are restored only when the layout is unchanged. The tracker file is
written last (atomically), so a checkpoint is visible only once it is complete; a killed save
leaves an unreferenced folder that the next save of that iteration replaces.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from megatron.core import parallel_state as ps
from megatron.core.dist_checkpointing.serialization import load_sharded_metadata
from megatron.core.tensor_parallel.random import get_cuda_rng_tracker
from torch.distributed.checkpoint import CheckpointException

from megatron_optiml.backend.compat import load_dist_checkpoint, save_dist_checkpoint
from megatron_optiml.checkpointing import iteration_dir, read_tracker, write_meta, write_tracker
from megatron_optiml.checkpointing.model import check_tensor_shapes
from megatron_optiml.models.opt import OPTArch
from megatron_optiml.parallel.device import compute_device, uses_cuda
from megatron_optiml.training.build import torch_adams, use_fused_torch_adam
from megatron_optiml.utils.disk import no_space_error
from megatron_optiml.utils.process import ignore_termination_signals

logger = logging.getLogger(__name__)

RNG_DIR = "rng"


def _layout() -> dict[str, int]:
    return {
        "tp": ps.get_tensor_model_parallel_world_size(),
        "pp": ps.get_pipeline_model_parallel_world_size(),
        "dp": ps.get_data_parallel_world_size(),
    }


def _model_state(model_chunks: list[torch.nn.Module]) -> dict[str, Any]:
    # The unwrapped GPTModels (not DDP/Float16Module): keys without wrapper prefixes, the same
    # "model" entry that checkpoint conversion reads and writes.
    if len(model_chunks) == 1:
        return {"model": model_chunks[0].sharded_state_dict()}
    return {f"model{i}": m.sharded_state_dict() for i, m in enumerate(model_chunks)}


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "tracker": get_cuda_rng_tracker().get_states()}
    if uses_cuda():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _optim_kwargs(use_distributed_optimizer: bool) -> dict[str, Any]:
    # 'fully_reshardable' stores Adam states per parameter in model space, so TP, PP and DP may
    # all change on resume (megatron-core 0.16: the older 'fully_sharded_model_space' needs
    # flattened ShardedTensors, which its dist_checkpointing no longer accepts).
    if not use_distributed_optimizer:
        return {}
    return {"metadata": {"distrib_optim_sharding_type": "fully_reshardable"}}


def prepare_checkpoint_writer() -> None:
    """Start dist_checkpointing's result-queue Manager now, immune to SIGTERM/SIGUSR1.

    The torch_dist writer lazily starts a ``spawn`` Manager process for its result queue
    (``strategies/filesystem_async.py`` ``_results_queue``, a module global on 0.16 and 0.19;
    lines per version: ``compat.DISTOPT_WORKAROUNDS["checkpoint_writer_queue"]``). Slurm preemption signals every process of the job step, which would kill
    that Manager and with it the very checkpoint the preemption handler is writing. Started here
    with termination signals ignored, it lives until this process exits (its finalizer stops it).
    Version-specific: re-check the private global on a megatron-core upgrade.
    """
    import multiprocessing as mp

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if getattr(filesystem_async, "_results_queue", None) is not None:
        return
    from multiprocessing.managers import SyncManager

    sync = SyncManager(ctx=mp.get_context("spawn"))
    # Immune to the job's signals, not outliving its rank; the initializer's module is light,
    # so the spawned Manager does not import torch/Megatron.
    sync.start(initializer=ignore_termination_signals)
    filesystem_async._results_queue = sync.Queue()
    filesystem_async._optiml_manager = sync  # keep it referenced for the process lifetime


def _materialize_optimizer_state(optimizer) -> None:
    """Give a fresh torch Adam its state tensors (and ``step``) before a checkpoint is loaded.

    Without TE/apex, Megatron-Core's DistributedOptimizer reads ``step`` from the inner torch
    optimizer's state (``compat.DISTOPT_WORKAROUNDS["materialize_optimizer_state"]``: 0.16 and
    0.19), which a never-stepped
    optimizer lacks. Megatron's own dummy step fills it; lr and weight decay are zeroed around it
    so no weight moves. The loaded state then replaces the dummy values.
    """
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is None or not hasattr(opt, "_init_optimizer_states_with_dummy_values"):
            continue
        if any(len(st) for st in inner.state.values()):
            continue
        saved = [(g["lr"], g["weight_decay"]) for g in inner.param_groups]
        for g in inner.param_groups:
            g["lr"], g["weight_decay"] = 0.0, 0.0
        opt._init_optimizer_states_with_dummy_values()
        for g, (lr, wd) in zip(inner.param_groups, saved):
            g["lr"], g["weight_decay"] = lr, wd


_STEP_PATCHED = False


def _patch_distopt_torch_adam_step() -> None:
    """Work around a megatron-core bug on the torch-Adam path (no TE/apex; 0.16.1 and 0.19.2).

    ``load_parameter_state_from_fully_reshardable`` skips the per-parameter ``step`` of torch's
    Adam when it builds the source tensors, but ``_set_main_param_and_optimizer_states`` copies
    every key of the destination state, ``step`` included -> KeyError (lines per version:
    ``compat.DISTOPT_WORKAROUNDS["distopt_torch_adam_step"]``). ``load_state_dict`` has already
    set that ``step`` from the checkpoint's param groups, so the patched call simply keeps it.
    TE/apex FusedAdam keep no per-parameter step and never reach this. Re-check on upgrade.
    """
    global _STEP_PATCHED
    if _STEP_PATCHED:
        return
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer._set_main_param_and_optimizer_states

    def patched(self, model_param, tensors):
        if "step" not in tensors and not self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            group_index, group_order = self.model_param_group_index_map[model_param]
            main_param = self.optimizer.param_groups[group_index]["params"][group_order]
            step = self.optimizer.state[main_param].get("step")
            if step is not None:
                tensors = {**tensors, "step": step}
        return original(self, model_param, tensors)

    DistributedOptimizer._set_main_param_and_optimizer_states = patched
    _STEP_PATCHED = True


def _unshare_adam_steps(optimizer) -> None:
    """Megatron-Core's DistributedOptimizer.load_state_dict (0.16.1 and 0.19.2) gives every
    parameter of the torch Adam the *same* ``step`` tensor
    (``compat.DISTOPT_WORKAROUNDS["unshare_adam_steps"]``); torch increments it in
    place once per parameter, so the bias correction runs away after resume. One copy each."""
    for inner in torch_adams(optimizer):
        for state in inner.state.values():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].clone()


def _on_every_rank_outcome(ckpt_dir: Path, fn: Callable[[], Any], *, here: bool = True) -> None:
    """Run ``fn`` on this rank (if ``here``), then agree on the outcome across ranks: if any
    rank failed, every rank raises (a full disk as the same ``OSError(ENOSPC)`` naming
    ``ckpt_dir`` everywhere), so no rank waits at a barrier for one that gave up."""
    error: BaseException | None = None
    if here:
        try:
            fn()
        except (Exception, CheckpointException) as e:  # CheckpointException: a BaseException
            error = e
    code = 0 if error is None else 2 if no_space_error(error, ckpt_dir) else 1
    flag = torch.tensor([code], dtype=torch.int32, device=compute_device())
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    code = int(flag.item())
    if code == 2:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ckpt_dir)) from error
    if error is not None:
        raise error
    if code:
        raise RuntimeError(f"saving checkpoint {ckpt_dir} failed on another rank")


def _write_rng_state(ckpt_dir: Path, rank: int) -> None:
    # Serialised in memory, written with Python's file API: a full disk then raises
    # OSError(ENOSPC) (torch.save's own writer reports only "file write failed").
    buf = io.BytesIO()
    torch.save(_rng_state(), buf)
    rng_dir = ckpt_dir / RNG_DIR
    rng_dir.mkdir(exist_ok=True)
    (rng_dir / f"rank_{rank:05d}.pt").write_bytes(buf.getbuffer())


def save_checkpoint(
    root: str | Path,
    iteration: int,
    *,
    model_chunks: list[torch.nn.Module],
    optimizer,
    scheduler,
    arch: OPTArch,
    consumed_samples: int,
    use_distributed_optimizer: bool,
    extra_meta: dict[str, Any] | None = None,
) -> Path:
    """Collective: every rank calls it. Returns the iteration folder.

    A failed save (e.g. a full disk) raises on every rank and removes its iteration folder;
    the tracker still names the previous complete checkpoint.
    """
    rank = torch.distributed.get_rank()
    ckpt_dir = iteration_dir(root, iteration)
    state = _model_state(model_chunks)
    model_sd = state["model"] if "model" in state else state
    state["optimizer"] = optimizer.sharded_state_dict(
        model_sd, **_optim_kwargs(use_distributed_optimizer)
    )
    state["opt_param_scheduler"] = scheduler.state_dict()
    state["iteration"] = iteration
    state["consumed_samples"] = consumed_samples

    def fresh_dir() -> None:
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)  # a half-written save of this iteration (never referenced)
        ckpt_dir.mkdir(parents=True)

    def finish() -> None:
        meta = dict(consumed_samples=consumed_samples, layout=_layout(), **(extra_meta or {}))
        write_meta(ckpt_dir, arch, iteration, **meta)
        write_tracker(root, iteration)

    try:
        _on_every_rank_outcome(ckpt_dir, fresh_dir, here=rank == 0)
        _on_every_rank_outcome(ckpt_dir, lambda: save_dist_checkpoint(state, ckpt_dir))
        _on_every_rank_outcome(ckpt_dir, lambda: _write_rng_state(ckpt_dir, rank))
        _on_every_rank_outcome(ckpt_dir, finish, here=rank == 0)
    except BaseException:
        if rank == 0 and latest_iteration(root) != iteration:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        raise
    logger.info("saved checkpoint %s (consumed_samples=%d)", ckpt_dir, consumed_samples)
    return ckpt_dir


def latest_iteration(root: str | Path) -> int | None:
    """The iteration the tracker points at, or None when there is no complete checkpoint."""
    if not Path(root).exists():
        return None
    it = read_tracker(root)
    return it if isinstance(it, int) else None


def load_checkpoint(
    root: str | Path,
    iteration: int,
    *,
    model_chunks: list[torch.nn.Module],
    optimizer,
    scheduler,
    use_distributed_optimizer: bool,
) -> dict[str, Any]:
    """Load everything into the live objects; returns ``{iteration, consumed_samples}``."""
    ckpt_dir = iteration_dir(root, iteration)
    state = _model_state(model_chunks)
    available = load_sharded_metadata(str(ckpt_dir))
    for chunk_state in state.values():
        check_tensor_shapes(chunk_state, available, ckpt_dir)
    model_sd = state["model"] if "model" in state else state
    _materialize_optimizer_state(optimizer)
    if use_distributed_optimizer:
        _patch_distopt_torch_adam_step()
    state["optimizer"] = optimizer.sharded_state_dict(
        model_sd, is_loading=True, **_optim_kwargs(use_distributed_optimizer)
    )
    # Common (non-sharded) entries -- scheduler, counters -- come back from common.pt.
    loaded = load_dist_checkpoint(state, ckpt_dir)
    if len(model_chunks) == 1:
        model_chunks[0].load_state_dict(loaded["model"])
    else:
        for i, m in enumerate(model_chunks):
            m.load_state_dict(loaded[f"model{i}"])
    optimizer.load_state_dict(loaded["optimizer"])
    if use_distributed_optimizer:
        _unshare_adam_steps(optimizer)
    # The loaded param groups carry the saver's ``fused`` flag; run the fused kernel here.
    use_fused_torch_adam(optimizer)
    scheduler.load_state_dict(loaded["opt_param_scheduler"])
    rng_file = ckpt_dir / RNG_DIR / f"rank_{torch.distributed.get_rank():05d}.pt"
    import json

    meta = json.loads((ckpt_dir / "optiml_meta.json").read_text())
    if meta.get("layout") == _layout() and rng_file.exists():
        rng = torch.load(rng_file, weights_only=False)
        torch.set_rng_state(rng["torch"])
        get_cuda_rng_tracker().set_states(rng["tracker"])
        if "cuda" in rng and uses_cuda():
            torch.cuda.set_rng_state(rng["cuda"])
    else:
        logger.warning(
            "resuming %s on a different layout (%s -> %s): RNG streams are reseeded",
            ckpt_dir,
            meta.get("layout"),
            _layout(),
        )
    logger.info("resumed from %s at iteration %d", ckpt_dir, int(loaded["iteration"]))
    return {
        "iteration": int(loaded["iteration"]),
        "consumed_samples": int(loaded["consumed_samples"]),
    }
