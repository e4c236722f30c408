"""metaseq tensor-parallel parts (``*-model_part-N.pt``) <-> canonical OPT state dict.

OPT-175B and OPT-IML-30B/175B are published only as metaseq model-parallel parts. Each part
holds its slice of every column/row-parallel weight; the fused ``qkv_proj`` of a part is its
heads' K, V, Q stacked in that order (metaseq's ``SequeuceParallelTransformerBlock``, and
HF's ``convert_opt_original_pytorch_checkpoint_to_pytorch.py``). Parts are read with
``torch.load(mmap=True, weights_only=True)`` one layer at a time, so any part count converts
to any layout with memory near one layer. The names and how parts combine are the ``metaseq``
and ``tp`` columns of ``models/opt/params.py``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from megatron_optiml.conversion.opt_hf import (
    add_position_offset,
    drop_position_offset,
    fuse_qkv,
    pad_vocab,
    padded_vocab_size,
    split_qkv,
    unpad_vocab,
)
from megatron_optiml.models.opt import params
from megatron_optiml.models.opt.flavors import OPT_FLAVORS, OPTArch
from megatron_optiml.models.opt.params import (
    OUTPUT_LAYER,
    POSITION_EMBEDDINGS,
    POSITION_OFFSET,
    WORD_EMBEDDINGS,
    canonical_groups,
    canonical_shapes,
    metaseq_name,
)

logger = logging.getLogger(__name__)

# Carried by metaseq but not weights we keep: a format version and the tied output projection.
IGNORED = ("decoder.version", metaseq_name(OUTPUT_LAYER))


def _combine_kind(canon: str) -> str:
    """How the parts of a tensor combine: the table's TP split ("column" = concat dim 0, "row"
    = concat dim 1, "replicated" = identical on every part), or "kvq" (per-part [K; V; Q])."""
    row, _ = params.param(canon)
    return "kvq" if row.transform == "qkv" else row.tp


def kvq_parts_to_qkv(parts: Sequence[torch.Tensor], num_heads: int) -> torch.Tensor:
    """metaseq's per-part ``[K_p; V_p; Q_p]`` (weight or bias) -> Megatron's fused per-head QKV."""
    ks, vs, qs = zip(*(p.chunk(3, dim=0) for p in parts))
    return fuse_qkv(torch.cat(qs), torch.cat(ks), torch.cat(vs), num_heads)


def qkv_to_kvq_parts(qkv: torch.Tensor, num_heads: int, num_parts: int) -> list[torch.Tensor]:
    """Inverse of :func:`kvq_parts_to_qkv`."""
    q, k, v = split_qkv(qkv, num_heads)
    return [
        torch.cat([k_p, v_p, q_p])
        for q_p, k_p, v_p in zip(q.chunk(num_parts), k.chunk(num_parts), v.chunk(num_parts))
    ]


def load_part(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state of one part, memory-mapped, without running pickled code."""
    import argparse

    # Old metaseq checkpoints carry an argparse.Namespace of training args; it holds only data.
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise ValueError(
                f"{path}: cannot be read with torch.load(weights_only=True) ({e}). Re-save its "
                "'model' dict (tensors only) with metaseq before converting."
            ) from e
    sd = obj["model"] if isinstance(obj, Mapping) and "model" in obj else obj
    flat = [k for k in sd if "flat_param" in k]
    if flat:
        raise ValueError(
            f"{path}: FSDP flat parameters ({flat[0]!r}...) -- consolidate the shards with "
            "metaseq's reshard/convert_to_singleton scripts first"
        )
    return sd


def part_config(path: str | os.PathLike) -> dict[str, Any]:
    """metaseq's ``cfg['model']`` of a part, if the part carries one."""
    import argparse

    with torch.serialization.safe_globals([argparse.Namespace]):
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    cfg = obj.get("cfg") if isinstance(obj, Mapping) else None
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
        return dict(cfg["model"])
    args = obj.get("args") if isinstance(obj, Mapping) else None
    return vars(args) if args is not None else {}


class MetaseqCheckpointReader:
    """metaseq parts -> canonical tensors, one group (embeddings, one layer, final LN) at a time."""

    def __init__(
        self,
        parts: Sequence[str | os.PathLike],
        *,
        num_attention_heads: int | None = None,
        pad_vocab_to_multiple_of: int = 1,
    ) -> None:
        if not parts:
            raise ValueError("no metaseq parts given")
        self.parts = [Path(p) for p in parts]
        first = load_part(self.parts[0])
        for name in first:
            if name not in IGNORED:
                try:
                    params.metaseq_param(name)
                except KeyError:
                    raise KeyError(f"{self.parts[0]}: unknown metaseq tensor {name!r}") from None
        qkv = metaseq_name("decoder.layers.0.self_attention.linear_qkv.weight")
        if qkv not in first:
            raise KeyError(
                f"{self.parts[0]}: no {qkv!r} (only fused-QKV metaseq checkpoints are supported)"
            )
        num_layers = 1 + max(
            layer for n in first if (layer := params.split_layer(n)[1]) is not None
        )
        embed_tokens = first[metaseq_name(WORD_EMBEDDINGS)]
        positions = first[metaseq_name(POSITION_EMBEDDINGS)]
        fc1 = first[metaseq_name("decoder.layers.0.mlp.linear_fc1.weight")]
        hidden = embed_tokens.shape[1]
        if num_attention_heads is None:
            num_attention_heads = part_config(self.parts[0]).get("decoder_attention_heads")
        if num_attention_heads is None:
            known = [a for a in OPT_FLAVORS.values() if a.hidden_size == hidden]
            if len(known) != 1:
                raise ValueError(
                    f"hidden size {hidden}: pass num_attention_heads (no metaseq cfg in the part)"
                )
            num_attention_heads = known[0].num_attention_heads
        P = len(self.parts)
        self.vocab_size = embed_tokens.shape[0] * P
        self.arch = OPTArch(
            num_layers=num_layers,
            hidden_size=hidden,
            num_attention_heads=num_attention_heads,
            ffn_hidden_size=fc1.shape[0] * P,
            vocab_size=padded_vocab_size(self.vocab_size, pad_vocab_to_multiple_of),
            max_position_embeddings=positions.shape[0] - POSITION_OFFSET,
        )
        if num_attention_heads % P:
            raise ValueError(f"{num_attention_heads} heads cannot be split into {P} parts")
        self.dtype = first[metaseq_name("decoder.final_layernorm.weight")].dtype
        # canonical name -> dtype (combining parts keeps it): what the HF export plans with.
        self.dtypes: dict[str, torch.dtype] = {}
        for canon in canonical_shapes(self.arch):
            ms_name = metaseq_name(canon)
            if ms_name not in first:
                raise KeyError(f"{self.parts[0]}: missing tensor {ms_name!r}")
            self.dtypes[canon] = first[ms_name].dtype
        self.position_offset_rows: torch.Tensor | None = None
        del first, embed_tokens, positions, fc1

    def _combine(self, canon: str, tensors: list[torch.Tensor], kind: str) -> torch.Tensor:
        if kind == "replicated":
            for p, t in enumerate(tensors[1:], start=1):
                if not torch.equal(t, tensors[0]):
                    raise ValueError(f"replicated tensor {canon!r} differs between parts 0 and {p}")
            return tensors[0].clone()
        if kind == "kvq":
            return kvq_parts_to_qkv(tensors, self.arch.num_attention_heads)
        return torch.cat(tensors, dim=params.TP_DIMS[kind])

    def canonical_groups(self) -> Iterator[dict[str, torch.Tensor]]:
        for group in canonical_groups(self.arch):
            # Re-mapping the parts per group releases the previous group's pages.
            sds = [load_part(p) for p in self.parts]
            out: dict[str, torch.Tensor] = {}
            for canon in group:
                ms_name, kind = metaseq_name(canon), _combine_kind(canon)
                tensors = []
                for p, sd in enumerate(sds):
                    if ms_name not in sd:
                        raise KeyError(f"{self.parts[p]}: missing tensor {ms_name!r}")
                    tensors.append(sd[ms_name])
                t = self._combine(canon, tensors, kind)
                transform = params.param(canon)[0].transform
                if transform == "vocab":
                    t = pad_vocab(t, self.arch.vocab_size)
                elif transform == "positions":
                    t, self.position_offset_rows = drop_position_offset(t)
                out[canon] = t
            del sds
            yield out


def canonical_to_metaseq_parts(
    full: Mapping[str, torch.Tensor],
    arch: OPTArch,
    num_parts: int,
    *,
    vocab_size: int | None = None,
    position_offset_rows: torch.Tensor | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Inverse direction: the ``model`` dicts of ``num_parts`` metaseq parts (for tests and
    for handing weights back to metaseq)."""
    parts: list[dict[str, torch.Tensor]] = [{} for _ in range(num_parts)]
    for canon, t in full.items():
        ms_name, kind = metaseq_name(canon), _combine_kind(canon)
        transform = params.param(canon)[0].transform
        if transform == "vocab":
            t = unpad_vocab(t, vocab_size or arch.vocab_size)
        elif transform == "positions":
            t = add_position_offset(t, position_offset_rows)
        if kind == "replicated":
            pieces = [t.clone() for _ in range(num_parts)]
        elif kind == "kvq":
            pieces = qkv_to_kvq_parts(t, arch.num_attention_heads, num_parts)
        else:
            pieces = [c.clone() for c in t.chunk(num_parts, dim=params.TP_DIMS[kind])]
        for p in range(num_parts):
            parts[p][ms_name] = pieces[p]
    for p in range(num_parts):
        parts[p]["decoder.version"] = torch.tensor([3.0])
    return parts
