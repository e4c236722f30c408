"""Split a canonical (unsharded, Megatron-named) OPT state dict into TP/PP shards and merge back.

Every layout goes through one canonical state dict -- the TP=1, PP=1 ``GPTModel`` state dict
with local-spec names -- so N layouts cost 2N code paths, not N^2. How each tensor is split
is data (``SHARDING_RULES``), in Megatron-Bridge's column / row / replicated vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

# (pattern on the parameter name, kind, split dim). First match wins.
# column-parallel: output features split across TP ranks (dim 0);
# row-parallel: input features split (dim 1); replicated: identical on every TP rank.
# Megatron's fused QKV is laid out per head ([q_h, k_h, v_h] for each head h), so a contiguous
# dim-0 chunk holds whole heads and a plain split is correct.
SHARDING_RULES: tuple[tuple[str, str, int | None], ...] = (
    (r"embedding\.word_embeddings\.weight$", "column", 0),
    (r"output_layer\.weight$", "column", 0),
    (r"self_attention\.linear_qkv\.(weight|bias)$", "column", 0),
    (r"mlp\.linear_fc1\.(weight|bias)$", "column", 0),
    (r"self_attention\.linear_proj\.weight$", "row", 1),
    (r"mlp\.linear_fc2\.weight$", "row", 1),
    (r"self_attention\.linear_proj\.bias$", "replicated", None),
    (r"mlp\.linear_fc2\.bias$", "replicated", None),
    (r"layer_?norm(_weight|_bias|\.weight|\.bias)$", "replicated", None),
    (r"embedding\.position_embeddings\.weight$", "replicated", None),
)

# Local-spec name <-> Transformer Engine spec name (TE fuses the pre-LayerNorms into the next
# linear). Canonical dicts always use the local names.
TE_RENAMES: dict[str, str] = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "input_layernorm.bias": "self_attention.linear_qkv.layer_norm_bias",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
    "pre_mlp_layernorm.bias": "mlp.linear_fc1.layer_norm_bias",
}

_LAYER_RE = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")


def sharding_rule(name: str) -> tuple[str, int | None]:
    """(kind, dim) for a parameter name; raises for names no rule covers."""
    for pattern, kind, dim in SHARDING_RULES:
        if re.search(pattern, name):
            return kind, dim
    raise KeyError(f"no sharding rule for tensor {name!r}")


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


def stage_layers(num_layers: int, pp_size: int, pp_rank: int) -> range:
    """Global layer indices on one pipeline stage (uniform split, as Megatron-Core does)."""
    if num_layers % pp_size:
        raise ValueError(f"num_layers={num_layers} is not divisible by pp_size={pp_size}")
    per = num_layers // pp_size
    return range(pp_rank * per, (pp_rank + 1) * per)


def _split(t: torch.Tensor, name: str, tp_size: int, tp_rank: int) -> torch.Tensor:
    kind, dim = sharding_rule(name)
    if kind == "replicated" or tp_size == 1:
        return t
    if t.shape[dim] % tp_size:
        raise ValueError(
            f"tensor {name!r} of shape {tuple(t.shape)} cannot be split {tp_size} ways on dim {dim}"
        )
    return t.chunk(tp_size, dim=dim)[tp_rank].clone()


def _to_te(name: str) -> str:
    for local, te in TE_RENAMES.items():
        if name.endswith(local):
            return name[: -len(local)] + te
    return name


def _from_te(name: str) -> str:
    for local, te in TE_RENAMES.items():
        if name.endswith(te):
            return name[: -len(te)] + local
    return name


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
    out: dict[str, torch.Tensor] = {}
    for name, t in full.items():
        local_name = name
        m = _LAYER_RE.match(name)
        if m:
            idx = int(m.group(1))
            if idx not in layers:
                continue
            local_name = f"decoder.layers.{idx - layers.start}.{m.group(2)}"
        elif name.startswith("embedding."):
            if not layout.first_stage:
                continue
        elif name.startswith("decoder.final_layernorm."):
            if not layout.last_stage:
                continue
        elif name == "output_layer.weight":
            continue  # tied: derived from the word embeddings below
        else:
            raise KeyError(f"unexpected tensor {name!r} in canonical state dict")
        if transformer_impl == "transformer_engine":
            local_name = _to_te(local_name)
        out[local_name] = _split(t, name, layout.tp_size, layout.tp_rank)
    if layout.last_stage and not layout.first_stage:
        out["output_layer.weight"] = _split(
            full["embedding.word_embeddings.weight"],
            "output_layer.weight",
            layout.tp_size,
            layout.tp_rank,
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
            n
            for n in shards[(0, pp_rank)]
            if not n.endswith("_extra_state") and n != "output_layer.weight"
        ]
        for name in names:
            canon = _from_te(name)
            m = _LAYER_RE.match(canon)
            if m:
                canon = f"decoder.layers.{int(m.group(1)) + offset}.{m.group(2)}"
            kind, dim = sharding_rule(canon)
            parts = [shards[(t, pp_rank)][name] for t in range(tp_size)]
            full[canon] = parts[0] if kind == "replicated" else torch.cat(parts, dim=dim)
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
