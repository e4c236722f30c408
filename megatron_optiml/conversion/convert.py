"""The conversions: HF / metaseq / Megatron sources -> canonical groups -> Megatron / HF sinks.

Every path streams one group (embeddings, one decoder layer, final LayerNorm) at a time.
Writing or reading a Megatron checkpoint is collective: call these on every rank of the job
(rank 0 reads the sources and writes HF files; the others take part in the
``dist_checkpointing`` calls). Outside a job, :func:`process_group` starts a 1-rank gloo group.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from megatron_optiml.checkpointing.layout import (
    Iteration,
    iteration_dir,
    read_meta,
    resolve_iteration_dir,
    write_meta,
    write_tracker,
)
from megatron_optiml.conversion.megatron_dist import (
    StreamingCheckpointWriter,
    checkpoint_dtypes,
    read_groups,
)
from megatron_optiml.conversion.metaseq import MetaseqCheckpointReader
from megatron_optiml.conversion.opt_hf import (
    HFCheckpointReader,
    HFShardWriter,
    canonical_group_to_hf,
    canonical_groups,
    hf_config_from_arch,
    hf_tensor_plan,
    write_hf_metadata,
)
from megatron_optiml.conversion.safetensors_stream import read_safetensors_header
from megatron_optiml.models.opt.builder import check_supported
from megatron_optiml.models.opt.flavors import OPTArch

logger = logging.getLogger(__name__)

# Beside the dist checkpoint: HF's two position rows that Megatron's table has no room for.
HF_EXTRA_FILE = "hf_extra.safetensors"
POSITION_ROWS_KEY = "embedding.position_embeddings.offset_rows"


@contextlib.contextmanager
def process_group() -> Iterator[None]:
    """Use the running process group, or start (and stop) a 1-rank gloo one."""
    if torch.distributed.is_initialized():
        yield
        return
    from megatron_optiml.parallel.device import select_accelerator

    # Without CUDA this installs the CPU backend (dist_checkpointing calls
    # torch.cuda.synchronize()); the collectives here are gloo either way.
    select_accelerator("auto")
    # One rank needs no rendezvous: an in-memory store, so no port (and no stale MASTER_PORT
    # inherited from a parent process) can get in the way.
    torch.distributed.init_process_group(
        "gloo", store=torch.distributed.HashStore(), rank=0, world_size=1
    )
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _cast(group: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    return group if dtype is None else {k: v.to(dtype) for k, v in group.items()}


def _write_megatron(
    source, out_root: str | os.PathLike, iteration: Iteration, dtype, meta: dict[str, Any]
) -> Path:
    """Stream ``source.canonical_groups()`` (read on rank 0) into ``out_root``."""
    arch: OPTArch = source.arch if _rank() == 0 else None
    arch = _broadcast(arch)
    ckpt_dir = iteration_dir(out_root, iteration)
    writer = StreamingCheckpointWriter(ckpt_dir, arch)
    groups = source.canonical_groups() if _rank() == 0 else None
    for _ in canonical_groups(arch):
        writer.write(_cast(next(groups), dtype) if groups is not None else {})
    writer.close()
    if _rank() == 0:
        if source.position_offset_rows is not None:
            from safetensors.torch import save_file

            rows = source.position_offset_rows.to(dtype or source.position_offset_rows.dtype)
            save_file({POSITION_ROWS_KEY: rows.contiguous()}, str(ckpt_dir / HF_EXTRA_FILE))
        write_meta(ckpt_dir, arch, iteration, **meta)
        write_tracker(out_root, iteration)
    torch.distributed.barrier()
    logger.info("wrote Megatron checkpoint %s", ckpt_dir)
    return ckpt_dir


def _broadcast(obj: Any) -> Any:
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def hf_to_megatron(
    hf_dir: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    pad_vocab_to_multiple_of: int = 1,
    dtype: torch.dtype | None = None,
    iteration: Iteration = "release",
) -> Path:
    """HF OPT folder -> Megatron checkpoint root (``release`` by default). Collective."""
    source = HFCheckpointReader(hf_dir, pad_vocab_to_multiple_of=pad_vocab_to_multiple_of)
    meta = {
        "source": {"format": "hf", "path": str(hf_dir)},
        "hf_vocab_size": source.vocab_size,
        "hf_config": source.config,
    }
    return _write_megatron(source, out_root, iteration, dtype, meta)


def metaseq_to_megatron(
    parts: Sequence[str | os.PathLike],
    out_root: str | os.PathLike,
    *,
    num_attention_heads: int | None = None,
    pad_vocab_to_multiple_of: int = 1,
    dtype: torch.dtype | None = None,
    iteration: Iteration = "release",
) -> Path:
    """metaseq ``*-model_part-N.pt`` files (in part order) -> Megatron checkpoint. Collective."""
    source = MetaseqCheckpointReader(
        parts,
        num_attention_heads=num_attention_heads,
        pad_vocab_to_multiple_of=pad_vocab_to_multiple_of,
    )
    meta = {
        "source": {"format": "metaseq", "parts": [str(p) for p in parts]},
        "hf_vocab_size": source.vocab_size,
    }
    return _write_megatron(source, out_root, iteration, dtype, meta)


def _write_hf(
    groups: Iterator[dict[str, torch.Tensor]],
    arch: OPTArch,
    vocab_size: int,
    source_dtypes: Mapping[str, torch.dtype],
    position_offset_rows,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype | None,
    base_config: dict[str, Any] | None,
    max_shard_bytes: int,
    tokenizer_dir: str | os.PathLike | None,
) -> Path:
    """Stream canonical groups into HF shards planned from ``source_dtypes`` (canonical name ->
    dtype, known before any data is read), cast to ``dtype`` if given."""
    out_dir = Path(out_dir)
    dtypes = {name: dtype or d for name, d in source_dtypes.items()}
    out_dtype = dtypes["embedding.word_embeddings.weight"]
    writer = None
    if _rank() == 0:
        writer = HFShardWriter(out_dir, hf_tensor_plan(arch, vocab_size, dtypes), max_shard_bytes)
    for group in groups:
        group = _cast(group, dtype)
        rows = position_offset_rows() if "embedding.position_embeddings.weight" in group else None
        hf = canonical_group_to_hf(group, arch, vocab_size, rows)
        if writer is not None:
            writer.add(hf)
    if writer is not None:
        writer.close()
        config = hf_config_from_arch(arch, vocab_size, out_dtype, base_config)
        write_hf_metadata(out_dir, config, tokenizer_dir)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    logger.info("wrote HF model %s", out_dir)
    return out_dir


def megatron_to_hf(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    iteration: Iteration | None = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 5 * 2**30,
    tokenizer_dir: str | os.PathLike | None = None,
) -> Path:
    """Megatron checkpoint (any saved layout; trainer or converted) -> HF folder. Collective."""
    ckpt_dir = resolve_iteration_dir(root, iteration)
    meta = read_meta(ckpt_dir)
    arch: OPTArch = meta["arch"]
    check_supported(arch)
    vocab_size = meta.get("hf_vocab_size", arch.vocab_size)

    def offset_rows():
        path = ckpt_dir / HF_EXTRA_FILE
        if not path.exists():
            logger.warning("%s: no %s; HF position rows 0-1 written as zeros", ckpt_dir, path.name)
            return None
        from safetensors.torch import load_file

        read_safetensors_header(path)  # names a truncated file
        return load_file(str(path))[POSITION_ROWS_KEY]

    return _write_hf(
        read_groups(ckpt_dir, arch, canonical_groups(arch)),
        arch,
        vocab_size,
        checkpoint_dtypes(ckpt_dir, arch),
        offset_rows,
        out_dir,
        dtype=dtype,
        base_config=meta.get("hf_config"),
        max_shard_bytes=max_shard_bytes,
        tokenizer_dir=tokenizer_dir,
    )


def metaseq_to_hf(
    parts: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    num_attention_heads: int | None = None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = 5 * 2**30,
    tokenizer_dir: str | os.PathLike | None = None,
) -> Path:
    """metaseq parts -> HF folder directly (no process group needed)."""
    source = MetaseqCheckpointReader(parts, num_attention_heads=num_attention_heads)
    return _write_hf(
        source.canonical_groups(),
        source.arch,
        source.vocab_size,
        source.dtypes,
        lambda: source.position_offset_rows,
        out_dir,
        dtype=dtype,
        base_config=None,
        max_shard_bytes=max_shard_bytes,
        tokenizer_dir=tokenizer_dir,
    )
