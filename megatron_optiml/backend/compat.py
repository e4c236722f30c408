"""Everything that depends on the installed Megatron-Core version, keyed on that version.

Two release lines are supported (setup.py): **0.16** on Python 3.11 (0.16.1, the newest release
for 3.11; laptops and CI) and **0.19** on Python 3.12 (what GPU clusters run). The rest of the
project asks this module instead of reading ``megatron.core.__version__`` itself:

* ``CPU_PATCH_POINTS``: which entry points the CPU shim (:mod:`megatron_optiml.backend.cpu`)
  replaces on each line, with the call sites (file:line under ``megatron/core``) that need them;
* ``DISTOPT_WORKAROUNDS``: the three torch-Adam distributed-optimizer workarounds in
  ``training/checkpointing.py``, with the Megatron-Core lines behind them on each line;
* the torch_dist checkpoint format: where the common (non-sharded) state lives
  (``common.pt`` on 0.16; a ``ShardedObject("common_state")`` inside the ``.distcp`` files on
  0.19) and :func:`make_common_state_portable`, which makes a checkpoint written under either
  line readable by the other.

A checkpoint directory written by this project records the writer's version in
``optiml_mcore_version.json``; one the installed version cannot read is refused by
:func:`check_checkpoint_readable` with both versions named.
"""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from pathlib import Path

logger = logging.getLogger(__name__)

SUPPORTED_LINES: tuple[tuple[int, int], ...] = ((0, 16), (0, 19))


def parse_version(text: str) -> tuple[int, int, int]:
    """``"0.19.2"`` -> ``(0, 19, 2)``; pre/post/dev suffixes are dropped (``"0.16.0rc1"``)."""
    parts: list[int] = []
    for piece in text.split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def _installed_version() -> str:
    try:
        return _dist_version("megatron-core")
    except PackageNotFoundError:  # a source checkout on PYTHONPATH
        from megatron.core import package_info

        return package_info.__version__


MCORE_VERSION_STR: str = _installed_version()
MCORE_VERSION: tuple[int, int, int] = parse_version(MCORE_VERSION_STR)


def line_of(version: tuple[int, int, int] | str) -> tuple[int, int]:
    """The supported line a version belongs to (the nearest one at or below it)."""
    v = parse_version(version) if isinstance(version, str) else version
    below = [line for line in SUPPORTED_LINES if line <= v[:2]]
    return below[-1] if below else SUPPORTED_LINES[0]


# The supported line the installed version is treated as (its own line when it is tested).
MCORE_LINE: tuple[int, int] = line_of(MCORE_VERSION)


def check_supported() -> None:
    """Warn once when the installed Megatron-Core is outside the tested lines."""
    if MCORE_VERSION[:2] not in SUPPORTED_LINES:
        logger.warning(
            "megatron-core %s is not a tested version (tested: %s); treating it as %d.%d",
            MCORE_VERSION_STR,
            ", ".join(f"{a}.{b}.x" for a, b in SUPPORTED_LINES),
            *MCORE_LINE,
        )


# --- CPU shim patch points -------------------------------------------------------------------
# name -> where Megatron-Core needs it (file:line under megatron/core). Re-check on upgrade: the
# test tests/backend/test_compat.py exercises every point listed for the installed line.
CPU_PATCH_POINTS: dict[tuple[int, int], dict[str, str]] = {
    (0, 16): {
        "device": "device='cuda' / int devices -> cpu (TorchFunctionMode): utils.py:628, "
        "transformer/utils.py:35, distributed/param_and_grad_buffer.py:797-806, "
        "optimizer/clip_grads.py:103,174, optimizer/optimizer.py:481,485,907, "
        "pipeline_parallel/p2p_communication.py:310-321, pipeline_parallel/schedules.py:596,2138, "
        "tensor_parallel/mappings.py:91, dist_checkpointing/strategies/state_dict_saver.py:251",
        "tensor_cuda": "Tensor.cuda() -> self: models/common/language_module/language_module.py:244",
        "tensor_type": "Tensor.type() reports torch.cuda.*: optimizer/clip_grads.py:167, "
        "optimizer/optimizer.py:671, optimizer/distrib_optimizer.py:361,420,582",
        "current_device": "torch.cuda.current_device() -> 0: utils.py:631, "
        "pipeline_parallel/p2p_communication.py:398",
        "synchronize": "torch.cuda.synchronize() -> no-op: "
        "dist_checkpointing/strategies/filesystem_async.py:230",
        "rng": "CUDA RNG calls -> CPU generator: tensor_parallel/random.py:41,72 "
        "(CudaRNGStatesTracker :235-278, model_parallel_cuda_manual_seed :422)",
        "backward": "mode re-entered in custom autograd Function.backward: "
        "tensor_parallel/layers.py:551 (sequence-parallel all-gather buffer)",
        "multi_tensor_scale": "utils.py:1212 local_multi_tensor_scale (copy_(src * scale)) bound "
        "without TE/apex at optimizer/clip_grads.py:43 (clipping, :176) and "
        "optimizer/optimizer.py:37 (main -> model params, :90)",
    },
    (0, 19): {
        "device": "device='cuda' / int devices -> cpu (TorchFunctionMode): utils.py:715, "
        "transformer/utils.py:39,44, distributed/param_and_grad_buffer.py:1145-1186, "
        "optimizer/optimizer.py:1492, pipeline_parallel/p2p_communication.py:211-223,334-342, "
        "pipeline_parallel/schedules.py:749,1121,2292, tensor_parallel/mappings.py:95,145,152",
        "tensor_cuda": "Tensor.cuda() -> self: models/common/language_module/language_module.py:307",
        "tensor_type": "Tensor.type() reports torch.cuda.*: optimizer/clip_grads.py:174, "
        "optimizer/optimizer.py:1009,1028, optimizer/distrib_optimizer.py:401,466,758",
        "current_device": "torch.cuda.current_device() -> 0: utils.py:1595,2189, "
        "pipeline_parallel/p2p_communication.py:211",
        "synchronize": "torch.cuda.synchronize() -> no-op: utils.py:1721, "
        "dist_checkpointing/strategies/filesystem_async.py",
        "rng": "CUDA RNG calls -> CPU generator: tensor_parallel/random.py:104,135 "
        "(CudaRNGStatesTracker :229, model_parallel_cuda_manual_seed :446)",
        "backward": "mode re-entered in custom autograd Function.backward: "
        "tensor_parallel/layers.py:583",
        "multi_tensor_scale": "utils.py:1337 local_multi_tensor_scale (copy_(src * scale)) bound "
        "without TE/apex at optimizer/clip_grads.py:46 (clipping, :191) and "
        "optimizer/optimizer.py:38 (main -> model params, :92)",
        # New in this line: every DP gradient sync waits on CUDA-graph events first.
        "current_stream": "torch.cuda.current_stream() -> torch.cpu.current_stream() (no-op "
        "waits): distributed/param_and_grad_buffer.py:632 (start_grad_sync, every DP step)",
    },
}


def cpu_patch_points(line: tuple[int, int] | None = None) -> dict[str, str]:
    """The CPU shim's patch points for a line (default: the installed one)."""
    return CPU_PATCH_POINTS[line or MCORE_LINE]


# --- Distributed-optimizer workarounds (training/checkpointing.py) ---------------------------
# Still needed on both lines with the torch Adam fallback (no TE/apex); inert with FusedAdam.
DISTOPT_WORKAROUNDS: dict[tuple[int, int], dict[str, str]] = {
    (0, 16): {
        "materialize_optimizer_state": "optimizer/distrib_optimizer.py:640 reads the inner "
        "optimizer's 'step', which a never-stepped torch Adam lacks",
        "distopt_torch_adam_step": "optimizer/distrib_optimizer.py:2100 skips 'step' when "
        "building sources, :940 copies every destination key -> KeyError",
        "unshare_adam_steps": "optimizer/distrib_optimizer.py:822-826 gives every parameter "
        "the same 'step' tensor",
        "checkpoint_writer_queue": "dist_checkpointing/strategies/filesystem_async.py:51 "
        "(_results_queue, a lazily spawned Manager)",
    },
    (0, 19): {
        "materialize_optimizer_state": "optimizer/distrib_optimizer.py:838 reads the inner "
        "optimizer's 'step', which a never-stepped torch Adam lacks",
        "distopt_torch_adam_step": "optimizer/distrib_optimizer.py:2390 skips 'step' when "
        "building sources, :1193 copies every destination key -> KeyError",
        "unshare_adam_steps": "optimizer/distrib_optimizer.py:1026-1032 gives every parameter "
        "the same 'step' tensor",
        "checkpoint_writer_queue": "dist_checkpointing/strategies/filesystem_async.py:49-66 "
        "(_results_queue, a lazily spawned Manager)",
    },
}


# --- torch_dist checkpoint format -----------------------------------------------------------
COMMON_PT = "common.pt"
COMMON_STATE_KEY = "common_state"
VERSION_FILE = "optiml_mcore_version.json"


def common_state_in_distcp(line: tuple[int, int] | None = None) -> bool:
    """True where Megatron-Core writes the common state as a ShardedObject (0.19), False where
    it writes ``common.pt`` beside the shards (0.16)."""
    return (line or MCORE_LINE) >= (0, 19)


def make_common_state_portable(ckpt_dir: str | os.PathLike) -> None:
    """Make a torch_dist checkpoint just written by this process readable by both lines.

    Rank 0 only, after ``dist_checkpointing.save`` returned. Under 0.19 the common state (LR
    scheduler, counters) is only inside the shards, where 0.16.1 does not look (it opens
    ``common.pt``); a copy is written as ``common.pt`` (0.19 itself prefers that file when it
    exists, and it holds the same dict). 0.16 reads 0.19's shards otherwise unchanged. Under
    0.16 nothing is needed: 0.19 reads ``common.pt``. Both lines record the writer's version.
    """
    ckpt_dir = Path(ckpt_dir)
    if common_state_in_distcp() and not (ckpt_dir / COMMON_PT).exists():
        import torch
        from megatron.core.dist_checkpointing.serialization import load_common_state_dict

        common = load_common_state_dict(str(ckpt_dir))
        tmp = ckpt_dir / (COMMON_PT + ".tmp")
        torch.save(common, tmp)
        os.replace(tmp, ckpt_dir / COMMON_PT)
    record_writer_version(ckpt_dir)


def record_writer_version(ckpt_dir: str | os.PathLike) -> None:
    """Record this Megatron-Core version beside the shards (rank 0).

    A file of its own: 0.16.1 builds its ``CheckpointingConfig`` from every key of
    ``metadata.json`` and would fail on an extra one.
    """
    path = Path(ckpt_dir) / VERSION_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"megatron_core": MCORE_VERSION_STR}) + "\n")
    os.replace(tmp, path)


def writer_version(ckpt_dir: str | os.PathLike) -> str | None:
    """The Megatron-Core version that wrote a checkpoint, when this project recorded it."""
    try:
        return json.loads((Path(ckpt_dir) / VERSION_FILE).read_text()).get("megatron_core")
    except (OSError, ValueError):
        return None


class CheckpointVersionError(ValueError):
    """A checkpoint that the installed Megatron-Core cannot read."""


def check_checkpoint_readable(ckpt_dir: str | os.PathLike) -> None:
    """Refuse, with both versions named, a checkpoint this Megatron-Core cannot read.

    The one known case: common state only inside the shards (written by 0.19 without
    :func:`make_common_state_portable`, e.g. by Megatron-LM itself) and a 0.16 reader.
    """
    ckpt_dir = Path(ckpt_dir)
    if common_state_in_distcp() or (ckpt_dir / COMMON_PT).exists():
        return
    if not (ckpt_dir / "metadata.json").exists():
        return  # not a torch_dist checkpoint; dist_checkpointing says so itself
    wrote = writer_version(ckpt_dir) or "0.17 or newer"
    raise CheckpointVersionError(
        f"{ckpt_dir}: checkpoint written by megatron-core {wrote} keeps its common state inside "
        f"the shards (no {COMMON_PT}), which megatron-core {MCORE_VERSION_STR} cannot read; load "
        f"it with megatron-core >= 0.19 (Python 3.12), or re-save it there with this project, "
        f"which also writes {COMMON_PT}"
    )


def save_dist_checkpoint(state: dict, ckpt_dir: str | os.PathLike, **kwargs) -> None:
    """``dist_checkpointing.save`` whose result both supported lines can load (collective)."""
    import torch
    from megatron.core import dist_checkpointing

    dist_checkpointing.save(state, str(ckpt_dir), **kwargs)
    if torch.distributed.get_rank() == 0:
        make_common_state_portable(ckpt_dir)


def load_dist_checkpoint(state: dict, ckpt_dir: str | os.PathLike, **kwargs) -> dict:
    """``dist_checkpointing.load`` after :func:`check_checkpoint_readable` (collective)."""
    from megatron.core import dist_checkpointing

    check_checkpoint_readable(ckpt_dir)
    return dist_checkpointing.load(state, str(ckpt_dir), **kwargs)
