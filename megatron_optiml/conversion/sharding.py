"""Split a canonical (unsharded, Megatron-named) OPT state dict into TP/PP shards and merge back.

Every layout goes through one canonical state dict -- the TP=1, PP=1 ``GPTModel`` state dict
with local-spec names -- so N layouts cost 2N code paths, not N^2. How each tensor is split
(column / row / replicated), its Transformer Engine name and its pipeline stage are columns of
the parameter table, ``models/opt/params.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from megatron_optiml.models.opt import params
from megatron_optiml.models.opt.params import OUTPUT_LAYER, WORD_EMBEDDINGS, stage_layers


def _row(name: str) -> tuple[params.Param, int | None]:
    try:
        return params.param(name)
    except KeyError:
        raise KeyError(f"no sharding rule for tensor {name!r}") from None


def sharding_rule(name: str) -> tuple[str, int | None]:
    """(kind, dim) for a parameter name (local or TE spec); raises for names no row covers."""
    row, _ = _row(name)
    return row.tp, row.tp_dim


@dataclass(frozen=True)
class Layout:
    """A model-parallel layout and the position of one rank in it."""

    tp_size: int = 1
    pp_size: int = 1
    tp_rank: int = 0
    pp_rank: int = 0

    @property
    def first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1


def _split(t: torch.Tensor, name: str, tp_size: int, tp_rank: int) -> torch.Tensor:
    kind, dim = sharding_rule(name)
    if kind == "replicated" or tp_size == 1:
        return t
    if t.shape[dim] % tp_size:
        raise ValueError(
            f"tensor {name!r} of shape {tuple(t.shape)} cannot be split {tp_size} ways on dim {dim}"
        )
    return t.chunk(tp_size, dim=dim)[tp_rank].clone()


def shard_state_dict(
    full: Mapping[str, torch.Tensor],
    layout: Layout,
    num_layers: int,
    *,
    transformer_impl: str = "local",
) -> dict[str, torch.Tensor]:
    """The state dict of one (tp_rank, pp_rank) from the canonical dict.

    Layers are renumbered from 0 on every stage. With PP > 1 the last stage also holds
    ``output_layer.weight`` (a copy of the tied word embeddings, as Megatron-Core keeps it).
    """
    layers = stage_layers(num_layers, layout.pp_size, layout.pp_rank)
    holds = {"first": layout.first_stage, "last": layout.last_stage}
    out: dict[str, torch.Tensor] = {}
    for name, t in full.items():
        try:
            row, layer = params.param(name)
        except KeyError:
            raise KeyError(f"unexpected tensor {name!r} in canonical state dict") from None
        if row.tied_to is not None:
            continue  # tied: derived from the word embeddings below
        if row.stage == "layer":
            if layer not in layers:
                continue
            layer -= layers.start
        elif not holds[row.stage]:
            continue
        pattern = row.te if transformer_impl == "transformer_engine" else row.local
        out[params.at_layer(pattern, layer)] = _split(t, name, layout.tp_size, layout.tp_rank)
    if layout.last_stage and not layout.first_stage:
        out[OUTPUT_LAYER] = _split(
            full[WORD_EMBEDDINGS], OUTPUT_LAYER, layout.tp_size, layout.tp_rank
        )
    return out


def merge_state_dicts(
    shards: Mapping[tuple[int, int], Mapping[str, torch.Tensor]],
    tp_size: int,
    pp_size: int,
    num_layers: int,
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`shard_state_dict`: ``shards[(tp_rank, pp_rank)]`` -> canonical dict.

    Accepts local or TE names; ``_extra_state`` entries and the last stage's tied
    ``output_layer.weight`` copy are dropped.
    """
    missing = [(t, p) for t in range(tp_size) for p in range(pp_size) if (t, p) not in shards]
    if missing:
        raise ValueError(f"missing shards for (tp_rank, pp_rank) {missing}")
    full: dict[str, torch.Tensor] = {}
    for pp_rank in range(pp_size):
        offset = stage_layers(num_layers, pp_size, pp_rank).start
        names = [
            n for n in shards[(0, pp_rank)] if not n.endswith("_extra_state") and n != OUTPUT_LAYER
        ]
        for name in names:
            row, layer = _row(name)
            canon = params.at_layer(row.local, None if layer is None else layer + offset)
            parts = [shards[(t, pp_rank)][name] for t in range(tp_size)]
            full[canon] = parts[0] if row.tp_dim is None else torch.cat(parts, dim=row.tp_dim)
    return full


def load_shard_into_model(model: torch.nn.Module, shard: Mapping[str, torch.Tensor]) -> None:
    """Load a shard strictly, except Megatron's ``_extra_state`` placeholders."""
    result = model.load_state_dict(dict(shard), strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("_extra_state")]
    if missing or result.unexpected_keys:
        raise KeyError(
            f"state dict does not match the model: missing {missing}, "
            f"unexpected {list(result.unexpected_keys)}"
        )
