"""Stream canonical OPT tensors into / out of a Megatron-Core torch_dist checkpoint, no model.

The writer makes one small ``dist_checkpointing.save`` per group of tensors (the embeddings,
one decoder layer, the final LayerNorm) into a scratch folder, moves its data files into the
checkpoint and merges the torch.distributed.checkpoint ``.metadata`` of all groups at the
end. Peak memory is one group, not the model, and every byte on disk is written by
Megatron-Core's own torch_dist writer, so the trainer loads it like its own checkpoints.

The sharded keys, global shapes and offsets are those of a TP=1, PP=1 ``GPTModel`` built with
the local spec (names and shapes from ``models/opt/params.py``; ``tests/models/test_opt_params.py``
checks ``sharded_templates`` against ``model.sharded_state_dict()``). torch_dist reshards at
load time, so one written layout serves every TP/PP layout, and the keys are the Transformer
Engine ones (Megatron-Core's local spec maps its LayerNorm names onto TE's), so local and TE
models load the same checkpoint.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor
from torch.distributed.checkpoint.metadata import (
    ChunkStorageMetadata,
    Metadata,
    MetadataIndex,
    TensorStorageMetadata,
)

from megatron_optiml.backend.compat import (
    COMMON_STATE_KEY,
    load_dist_checkpoint,
    make_common_state_portable,
)
from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.models.opt.params import (
    CANONICAL,
    WORD_EMBEDDINGS,
    canonical_shapes,
    sharded_key,
    split_layer,
    tp_linear_modules,
)

logger = logging.getLogger(__name__)

MODEL_KEY = "model"
_DCP_METADATA = ".metadata"
# Linear modules whose (empty, for the local spec) ``_extra_state`` Megatron saves per layer.
_EXTRA_STATE_MODULES = tp_linear_modules()
# A layer's objects go into the save of the group holding its first tensor.
_FIRST_LAYER_TENSOR = next(p.local for p in CANONICAL if p.stage == "layer")


def _rank() -> int:
    return torch.distributed.get_rank()


def sharded_tensor(name: str, data: torch.Tensor, num_layers: int) -> ShardedTensor:
    """A TP=1, PP=1 ShardedTensor for one canonical tensor, as ``GPTModel`` would build it."""
    _, layer = split_layer(name)
    key = sharded_key(name)
    if layer is None:
        return ShardedTensor.from_rank_offsets(
            key,
            data,
            replica_id=(0, 0, 0),
            # Megatron lets the vocab dimension differ at load time (padding).
            allow_shape_mismatch=name == WORD_EMBEDDINGS,
        )
    return ShardedTensor.from_rank_offsets(
        key, data, (0, layer, num_layers), replica_id=(0, 0, 0), prepend_axis_num=1
    )


def _one_layer_tensor(name: str, data: torch.Tensor) -> ShardedTensor:
    """A layer tensor saved alone as a whole ``[1, ...]`` tensor; :func:`_merge_metadata` then
    places it at its layer's offset of the ``[num_layers, ...]`` tensor. (DCP checks that a
    save covers each tensor it declares, so a one-layer save cannot declare all layers.)"""
    return ShardedTensor.from_rank_offsets(
        sharded_key(name), data.unsqueeze(0), replica_id=(0, 0, 0)
    )


def _one_layer_request(name: str, data: torch.Tensor, num_layers: int) -> ShardedTensor:
    """A ``[1, ...]`` chunk of the ``[num_layers, ...]`` tensor to load, as a plain (not
    prepended-axis) ShardedTensor: Megatron-Core then does not assume that the layers it
    lacks live on other ranks (with one rank that assumption fails)."""
    _, layer = split_layer(name)
    return ShardedTensor.from_rank_offsets(
        sharded_key(name), data.unsqueeze(0), (0, layer, num_layers), replica_id=(0, 0, 0)
    )


def extra_state_objects(layer: int, num_layers: int) -> dict[str, ShardedObject]:
    """The per-layer ``_extra_state`` objects of the local spec (their data is None)."""
    return {
        f"decoder.layers.{layer}.{m}._extra_state": ShardedObject(
            f"decoder.layers.{m}._extra_state", None, (num_layers,), (layer,), (0, 0, 0)
        )
        for m in _EXTRA_STATE_MODULES
    }


def sharded_templates(arch: OPTArch, dtype: torch.dtype = torch.float32) -> dict:
    """The whole TP=1, PP=1 sharded state dict with empty tensors (for tests and reading)."""
    out: dict = {}
    for name, shape in canonical_shapes(arch).items():
        out[name] = sharded_tensor(name, torch.empty(shape, dtype=dtype), arch.num_layers)
    for i in range(arch.num_layers):
        out.update(extra_state_objects(i, arch.num_layers))
    return out


def _merge_metadata(
    into: Metadata | None,
    part: Metadata,
    rename: Mapping[str, str],
    layer: int | None,
    num_layers: int,
) -> Metadata:
    """Fold one group save's DCP metadata into the running one: data files renamed, a layer's
    whole ``[1, ...]`` tensors moved to offset ``layer`` of ``[num_layers, ...]``."""
    storage = {}
    for index, info in part.storage_data.items():
        info.relative_path = rename[info.relative_path]
        if layer is not None and index.fqn.startswith("decoder.layers.") and index.offset:
            index = MetadataIndex(index.fqn, (layer, *index.offset[1:]))
        storage[index] = info
    part.storage_data = storage
    for fqn, md in part.state_dict_metadata.items():
        if (
            layer is not None
            and isinstance(md, TensorStorageMetadata)
            and fqn.startswith("decoder.layers.")
        ):
            md.size = torch.Size((num_layers, *md.size[1:]))
            md.chunks = [
                ChunkStorageMetadata(torch.Size((layer, *c.offsets[1:])), c.sizes)
                for c in md.chunks
            ]
    if into is None:
        return part
    for fqn, md in part.state_dict_metadata.items():
        have = into.state_dict_metadata.get(fqn)
        if have is not None and fqn.split("/")[0] == COMMON_STATE_KEY:
            # megatron-core >= 0.19 puts the (empty) common state into every save: keep the
            # first group's copy and the storage entry it points at.
            part.storage_data = {i: info for i, info in part.storage_data.items() if i.fqn != fqn}
            continue
        if have is None:
            into.state_dict_metadata[fqn] = md
        elif isinstance(have, TensorStorageMetadata) and isinstance(md, TensorStorageMetadata):
            if tuple(have.size) != tuple(md.size) or have.properties.dtype != md.properties.dtype:
                raise ValueError(
                    f"tensor {fqn!r}: group saves disagree on shape/dtype "
                    f"({tuple(have.size)}/{have.properties.dtype} vs "
                    f"{tuple(md.size)}/{md.properties.dtype})"
                )
            have.chunks.extend(md.chunks)
        else:
            raise ValueError(f"object {fqn!r} written twice")
    into.storage_data.update(part.storage_data)
    return into


class StreamingCheckpointWriter:
    """Write a model's ``"model"`` state group by group into one torch_dist checkpoint folder.

    Collective: every rank calls :meth:`write` the same number of times (ranks other than the
    one holding data pass ``{}``) and :meth:`close` once.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, arch: OPTArch) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.arch = arch
        self._metadata: Metadata | None = None
        self._count = 0
        self._written: set[str] = set()
        if _rank() == 0:
            if self.ckpt_dir.exists() and any(self.ckpt_dir.iterdir()):
                raise FileExistsError(f"{self.ckpt_dir}: not empty; refusing to overwrite")
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        torch.distributed.barrier()

    def write(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Save one group of canonical tensors (e.g. one layer's twelve tensors)."""
        expected = canonical_shapes(self.arch)
        state: dict = {}
        layers = {split_layer(n)[1] for n in tensors} - {None}
        if len(layers) > 1:
            raise ValueError(f"a group holds at most one layer, got layers {sorted(layers)}")
        layer = layers.pop() if layers else None
        for name, t in tensors.items():
            if name not in expected:
                raise KeyError(f"tensor {name!r} is not part of the canonical OPT state dict")
            if tuple(t.shape) != expected[name]:
                raise ValueError(
                    f"tensor {name!r}: shape {tuple(t.shape)} does not match the model's "
                    f"{expected[name]}"
                )
            if name in self._written:
                raise ValueError(f"tensor {name!r} written twice")
            self._written.add(name)
            t = t.contiguous()
            if layer is None:
                state[name] = sharded_tensor(name, t, self.arch.num_layers)
            else:
                state[name] = _one_layer_tensor(name, t)
            if split_layer(name)[0] == _FIRST_LAYER_TENSOR:  # once per layer
                state.update(extra_state_objects(layer, self.arch.num_layers))
        scratch = self.ckpt_dir / f".group_{self._count:05d}"
        if _rank() == 0:
            scratch.mkdir()
        torch.distributed.barrier()
        dist_checkpointing.save({MODEL_KEY: state}, str(scratch), validate_access_integrity=False)
        if _rank() == 0:
            rename = {}
            for f in sorted(scratch.glob("*.distcp")):
                new = f"g{self._count:05d}{f.name}"
                os.replace(f, self.ckpt_dir / new)
                rename[f.name] = new
            with open(scratch / _DCP_METADATA, "rb") as f:
                part = pickle.load(f)  # noqa: S301 - written by this process a moment ago
            self._metadata = _merge_metadata(
                self._metadata, part, rename, layer, self.arch.num_layers
            )
            if self._count == 0:
                for keep in ("common.pt", "metadata.json"):
                    if (scratch / keep).exists():
                        os.replace(scratch / keep, self.ckpt_dir / keep)
            shutil.rmtree(scratch)
        self._count += 1
        torch.distributed.barrier()

    def close(self) -> None:
        """Check completeness and write the merged ``.metadata`` (the checkpoint's index)."""
        missing = sorted(set(canonical_shapes(self.arch)) - self._written)
        if _rank() == 0:
            if missing:
                raise ValueError(f"checkpoint incomplete: tensors never written: {missing[:5]}...")
            tmp = self.ckpt_dir / (_DCP_METADATA + ".tmp")
            with open(tmp, "wb") as f:
                pickle.dump(self._metadata, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.ckpt_dir / _DCP_METADATA)
            make_common_state_portable(self.ckpt_dir)
        torch.distributed.barrier()


def checkpoint_dtype(ckpt_dir: str | os.PathLike) -> torch.dtype:
    """The dtype the checkpoint stores the word embeddings in."""
    md = dist_checkpointing.load_tensors_metadata(str(ckpt_dir))
    key = WORD_EMBEDDINGS
    if key not in md:
        raise KeyError(f"{ckpt_dir}: no tensor {key!r} (not an OPT model checkpoint?)")
    return md[key].dtype


def checkpoint_dtypes(ckpt_dir: str | os.PathLike, arch: OPTArch) -> dict[str, torch.dtype]:
    """Canonical name -> the dtype the checkpoint stores it in (from the metadata alone)."""
    md = dist_checkpointing.load_tensors_metadata(str(ckpt_dir))
    out = {}
    for name in canonical_shapes(arch):
        key = sharded_key(name)
        if key not in md:
            raise KeyError(f"{ckpt_dir}: checkpoint has no tensor {key!r} (for {name!r})")
        out[name] = md[key].dtype
    return out


def read_groups(
    ckpt_dir: str | os.PathLike, arch: OPTArch, groups: list[list[str]]
) -> Iterator[dict[str, torch.Tensor]]:
    """Load canonical tensors group by group (only the ``"model"`` part, any saved layout).

    Collective: every rank reads the same groups. Shapes are checked against ``arch`` by the
    loader, which names the tensor on mismatch.
    """
    md = dist_checkpointing.load_tensors_metadata(str(ckpt_dir))
    shapes = canonical_shapes(arch)
    for group in groups:
        request = {}
        for name in group:
            key = sharded_key(name)
            if key not in md:
                raise KeyError(f"{ckpt_dir}: checkpoint has no tensor {key!r} (for {name!r})")
            _, layer = split_layer(name)
            want = ((arch.num_layers,) if layer is not None else ()) + shapes[name]
            if tuple(md[key].global_shape) != want:
                raise ValueError(
                    f"tensor {key!r}: checkpoint shape {tuple(md[key].global_shape)} does not "
                    f"match the model's {want}"
                )
            empty = torch.empty(shapes[name], dtype=md[key].dtype)
            if layer is None:
                request[name] = sharded_tensor(name, empty, arch.num_layers)
            else:
                request[name] = _one_layer_request(name, empty, arch.num_layers)
        loaded = load_dist_checkpoint(
            {MODEL_KEY: request}, ckpt_dir, validate_access_integrity=False
        )[MODEL_KEY]
        yield {name: loaded[name].reshape(shapes[name]) for name in group}
