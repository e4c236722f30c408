"""Save and load a live Megatron-Core model as ``{"model": model.sharded_state_dict()}``.

Every rank of the job calls these (dist_checkpointing is collective). The torch_dist format
is layout-free: a checkpoint saved at one TP/PP layout loads at any other.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor
from megatron.core.dist_checkpointing.serialization import load_sharded_metadata

from megatron_optiml.backend.compat import load_dist_checkpoint, save_dist_checkpoint
from megatron_optiml.checkpointing.layout import (
    Iteration,
    iteration_dir,
    read_meta,
    resolve_iteration_dir,
    write_meta,
    write_tracker,
)
from megatron_optiml.models.opt.flavors import OPTArch

logger = logging.getLogger(__name__)

MODEL_KEY = "model"


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def save_model_checkpoint(
    root: str | os.PathLike,
    model: torch.nn.Module,
    arch: OPTArch,
    iteration: Iteration,
    *,
    extra_sharded_state: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` (+ e.g. ``{"optimizer": ...}``) as iteration ``iteration`` of ``root``.

    Collective: call on every rank. Writes the dist checkpoint, then ``optiml_meta.json``,
    then (last, atomically) the tracker. Returns the iteration folder.
    """
    ckpt_dir = iteration_dir(root, iteration)
    if _rank() == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    _barrier()
    state: dict[str, Any] = {MODEL_KEY: model.sharded_state_dict()}
    for key, value in (extra_sharded_state or {}).items():
        if key == MODEL_KEY:
            raise ValueError("extra_sharded_state must not contain the key 'model'")
        state[key] = value
    save_dist_checkpoint(state, ckpt_dir)
    if _rank() == 0:
        write_meta(ckpt_dir, arch, iteration, **(meta or {}))
        write_tracker(root, iteration)
    _barrier()
    logger.info("saved checkpoint %s", ckpt_dir)
    return ckpt_dir


def check_arch_matches(expected: OPTArch, found: OPTArch, where: str) -> None:
    """Raise naming every OPTArch field on which a checkpoint and a model disagree."""
    diffs = [
        f"{f.name}: checkpoint {getattr(found, f.name)!r} vs model {getattr(expected, f.name)!r}"
        for f in dataclasses.fields(OPTArch)
        if getattr(found, f.name) != getattr(expected, f.name)
    ]
    if diffs:
        raise ValueError(f"{where}: checkpoint shape does not match the model: " + "; ".join(diffs))


def check_tensor_shapes(
    sharded: dict[str, Any], available: dict[str, Any], where: str | os.PathLike
) -> None:
    """Raise one line naming the first tensor whose global shape in the checkpoint (its
    torch_dist metadata, not ``optiml_meta.json``) differs from the model's.

    ``available`` is ``load_sharded_metadata(where)``. Without this, a checkpoint whose meta
    claims the right shape but whose tensors differ fails deep inside dist_checkpointing.
    """
    for v in sharded.values():
        if not isinstance(v, ShardedTensor) or v.allow_shape_mismatch:
            continue
        found = available.get(v.key)
        if isinstance(found, ShardedTensor) and tuple(found.global_shape) != tuple(v.global_shape):
            raise ValueError(
                f"{where}: tensor {v.key!r} has shape {tuple(found.global_shape)} in the "
                f"checkpoint but the model needs {tuple(v.global_shape)}"
            )


def load_model_checkpoint(
    root: str | os.PathLike,
    model: torch.nn.Module,
    *,
    iteration: Iteration | None = None,
    arch: OPTArch | None = None,
) -> dict[str, Any]:
    """Load only the ``"model"`` part of a checkpoint into ``model`` (any TP/PP layout).

    ``root`` may be a root (the tracker picks the iteration unless ``iteration`` is given) or an
    iteration folder. With ``arch``, the checkpoint's recorded shape must equal it (the error
    names each differing field). ``_extra_state`` objects the checkpoint lacks (e.g. Transformer
    Engine's FP8 state when loading converted weights) are left at their defaults. Returns the
    checkpoint's meta.
    """
    ckpt_dir = resolve_iteration_dir(root, iteration)
    meta = read_meta(ckpt_dir)
    if arch is not None:
        check_arch_matches(arch, meta["arch"], str(ckpt_dir))
    sharded = model.sharded_state_dict()
    available = load_sharded_metadata(str(ckpt_dir))
    check_tensor_shapes(sharded, available, ckpt_dir)
    available_objects = {o.unique_key for o in available.values() if isinstance(o, ShardedObject)}
    dropped = [
        k
        for k, v in sharded.items()
        if isinstance(v, ShardedObject)
        and k.endswith("_extra_state")
        and v.unique_key not in available_objects
    ]
    for k in dropped:
        del sharded[k]
    if dropped:
        logger.info("checkpoint has no %d _extra_state objects; kept defaults", len(dropped))
    loaded = load_dist_checkpoint({MODEL_KEY: sharded}, ckpt_dir)[MODEL_KEY]
    result = model.load_state_dict(loaded, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise KeyError(
            f"{ckpt_dir}: state dict does not match the model: missing {missing}, "
            f"unexpected {list(result.unexpected_keys)}"
        )
    return meta
