"""OPT's parameters in Megatron-Core's ``GPTModel`` as one table: names, shapes, TP split.

Every user reads :data:`PARAMS`: the seeded canonical weights (``init.py``), TP/PP resharding
(``conversion/sharding.py``), the Hugging Face and metaseq converters and the torch_dist
streaming writer (``conversion/{opt_hf,metaseq,megatron_dist}.py``). A row gives one
parameter's name under Megatron-Core's local spec (the canonical name) and under its Transformer
Engine spec, its Hugging Face OPT and metaseq names, its shape in named dimensions of the
:class:`OPTArch`, how tensor parallelism splits it, the irregular conversion transform it needs
and the pipeline stage that holds it. Names of decoder-layer parameters hold ``{i}`` for the
layer index; :func:`split_layer` is the one parser of that index (in any of the four
vocabularies) and :func:`stage_layers` the one rule for the global layers of a pipeline (and
virtual pipeline) stage.

No Megatron-Core import: ``tests/models/test_opt_params.py`` checks the table against a built
``GPTModel`` (shapes, Megatron's ``partition_dim``, sharded keys) and a Hugging Face model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from megatron_optiml.models.opt.flavors import OPTArch

# OPT's learned positions are indexed from padding_idx + 1 = 2 (metaseq); HF and metaseq keep
# the 2 unused rows in front of the table, Megatron's table starts at position 0.
POSITION_OFFSET = 2

# Tensor-parallel split rule (Megatron-Bridge's vocabulary) -> the dim split across TP ranks.
# column-parallel: output features, dim 0 (the vocabulary of the word embeddings); row-parallel:
# input features, dim 1; replicated: identical on every TP rank. The fused QKV is column-parallel
# with a plain dim-0 split: its per-head ``[q_h; k_h; v_h]`` layout puts whole heads in every
# contiguous chunk.
TP_DIMS: dict[str, int | None] = {"column": 0, "row": 1, "replicated": None}

WORD_EMBEDDINGS = "embedding.word_embeddings.weight"
POSITION_EMBEDDINGS = "embedding.position_embeddings.weight"
OUTPUT_LAYER = "output_layer.weight"


@dataclass(frozen=True, kw_only=True)
class Param:
    """One parameter of OPT as a ``GPTModel``; names of decoder-layer parameters hold ``{i}``."""

    local: str
    """Megatron-Core local-spec name: the name in the canonical state dict."""
    te: str
    """Transformer Engine spec name (TE fuses each pre-LayerNorm into the next linear). The
    local spec's sharded (checkpoint) keys use it too, so both specs load one checkpoint."""
    hf: tuple[str, ...]
    """Hugging Face ``OPTForCausalLM`` names: q, k, v for the fused QKV, else one."""
    metaseq: str
    """Name in a metaseq model-parallel part (``*-model_part-N.pt``)."""
    shape: tuple[str, ...]
    """Canonical (TP=1) shape in dimension names of :func:`dims`."""
    hf_shape: tuple[str, ...]
    """Shape of each Hugging Face tensor in dimension names of :func:`dims`."""
    tp: str
    """Tensor-parallel split: 'column', 'row' or 'replicated' (:data:`TP_DIMS`)."""
    stage: str
    """Where it lives: 'first' pipeline stage, every decoder 'layer', or 'last' stage."""
    transform: str | None = None
    """Irregular conversion: 'qkv' (Megatron's per-head ``[q_h; k_h; v_h]`` from HF's q, k, v
    or metaseq's per-part ``[K; V; Q]``), 'vocab' (TP-divisible padded rows) or 'positions'
    (HF/metaseq's :data:`POSITION_OFFSET` leading rows)."""
    init_mean: float = 0.0
    """Mean of the seeded canonical weights (LayerNorm weights start near 1)."""
    tied_to: str | None = None
    """The canonical tensor this one copies (OPT ties the output layer to the embeddings);
    never stored in the canonical state dict."""

    @property
    def tp_dim(self) -> int | None:
        """The dim split across TP ranks; None for a replicated tensor."""
        return TP_DIMS[self.tp]


# In canonical order (the seeded weights draw from one generator in this order).
PARAMS: tuple[Param, ...] = (
    Param(
        local=WORD_EMBEDDINGS,
        te=WORD_EMBEDDINGS,
        hf=("model.decoder.embed_tokens.weight",),
        metaseq="decoder.embed_tokens.weight",
        shape=("vocab", "hidden"),
        hf_shape=("hf_vocab", "hidden"),
        tp="column",
        stage="first",
        transform="vocab",
    ),
    Param(
        local=POSITION_EMBEDDINGS,
        te=POSITION_EMBEDDINGS,
        hf=("model.decoder.embed_positions.weight",),
        metaseq="decoder.embed_positions.weight",
        shape=("positions", "hidden"),
        hf_shape=("hf_positions", "hidden"),
        tp="replicated",
        stage="first",
        transform="positions",
    ),
    Param(
        local="decoder.layers.{i}.input_layernorm.weight",
        te="decoder.layers.{i}.self_attention.linear_qkv.layer_norm_weight",
        hf=("model.decoder.layers.{i}.self_attn_layer_norm.weight",),
        metaseq="decoder.layers.{i}.self_attn_layer_norm.weight",
        shape=("hidden",),
        hf_shape=("hidden",),
        tp="replicated",
        stage="layer",
        init_mean=1.0,
    ),
    Param(
        local="decoder.layers.{i}.input_layernorm.bias",
        te="decoder.layers.{i}.self_attention.linear_qkv.layer_norm_bias",
        hf=("model.decoder.layers.{i}.self_attn_layer_norm.bias",),
        metaseq="decoder.layers.{i}.self_attn_layer_norm.bias",
        shape=("hidden",),
        hf_shape=("hidden",),
        tp="replicated",
        stage="layer",
    ),
    Param(
        local="decoder.layers.{i}.self_attention.linear_qkv.weight",
        te="decoder.layers.{i}.self_attention.linear_qkv.weight",
        hf=(
            "model.decoder.layers.{i}.self_attn.q_proj.weight",
            "model.decoder.layers.{i}.self_attn.k_proj.weight",
            "model.decoder.layers.{i}.self_attn.v_proj.weight",
        ),
        metaseq="decoder.layers.{i}.self_attn.qkv_proj.weight",
        shape=("qkv", "hidden"),
        hf_shape=("hidden", "hidden"),
        tp="column",
        stage="layer",
        transform="qkv",
    ),
    Param(
        local="decoder.layers.{i}.self_attention.linear_qkv.bias",
        te="decoder.layers.{i}.self_attention.linear_qkv.bias",
        hf=(
            "model.decoder.layers.{i}.self_attn.q_proj.bias",
            "model.decoder.layers.{i}.self_attn.k_proj.bias",
            "model.decoder.layers.{i}.self_attn.v_proj.bias",
        ),
        metaseq="decoder.layers.{i}.self_attn.qkv_proj.bias",
        shape=("qkv",),
        hf_shape=("hidden",),
        tp="column",
        stage="layer",
        transform="qkv",
    ),
    Param(
        local="decoder.layers.{i}.self_attention.linear_proj.weight",
        te="decoder.layers.{i}.self_attention.linear_proj.weight",
        hf=("model.decoder.layers.{i}.self_attn.out_proj.weight",),
        metaseq="decoder.layers.{i}.self_attn.out_proj.weight",
        shape=("hidden", "hidden"),
        hf_shape=("hidden", "hidden"),
        tp="row",
        stage="layer",
    ),
    Param(
        local="decoder.layers.{i}.self_attention.linear_proj.bias",
        te="decoder.layers.{i}.self_attention.linear_proj.bias",
        hf=("model.decoder.layers.{i}.self_attn.out_proj.bias",),
        metaseq="decoder.layers.{i}.self_attn.out_proj.bias",
        shape=("hidden",),
        hf_shape=("hidden",),
        tp="replicated",  # a row-parallel linear adds its bias after the all-reduce
        stage="layer",
    ),
    Param(
        local="decoder.layers.{i}.pre_mlp_layernorm.weight",
        te="decoder.layers.{i}.mlp.linear_fc1.layer_norm_weight",
        hf=("model.decoder.layers.{i}.final_layer_norm.weight",),
        metaseq="decoder.layers.{i}.final_layer_norm.weight",
        shape=("hidden",),
        hf_shape=("hidden",),
        tp="replicated",
        stage="layer",
        init_mean=1.0,
    ),
    Param(
        local="decoder.layers.{i}.pre_mlp_layernorm.bias",
        te="decoder.layers.{i}.mlp.linear_fc1.layer_norm_bias",
        hf=("model.decoder.layers.{i}.final_layer_norm.bias",),
        metaseq="decoder.layers.{i}.final_layer_norm.bias",
        shape=("hidden",),
        hf_shape=("hidden",),
        tp="replicated",
        stage="layer",
    ),
    Param(
        local="decoder.layers.{i}.mlp.linear_fc1.weight",
        te="decoder.layers.{i}.mlp.linear_fc1.weight",
        hf=("model.decoder.layers.{i}.fc1.weight",),
        metaseq="decoder.layers.{i}.fc1.weight",
        shape=("ffn", "hidden"),
        hf_shape=("ffn", "hidden"),
        tp="column",
        stage="layer",
    ),
    Param(
        local="decoder.layers.{i}.mlp.linear_fc1.bias",
        te="decoder.layers.{i}.mlp.linear_fc1.bias",
        hf=("model.decoder.layers.{i}.fc1.bias",),
        metaseq="decoder.layers.{i}.fc1.bias",
        shape=("ffn",),
        hf_shape=("ffn",),
        tp="column",
        stage="layer",
    ),
    Param(
        local="decoder.layers.{i}.mlp.linear_fc2.weight",
        te="decoder.layers.{i}.mlp.linear_fc2.weight",
        hf=("model.decoder.layers.{i}.fc2.weight",),
        metaseq="decoder.layers.{i}.fc2.weight",
        shape=("hidden", "ffn"),
        hf_shape=("hidden", "ffn"),
        tp="row",
        stage="layer",
    ),
    Param(
        local="decoder.layers.{i}.mlp.linear_fc2.bias",
        te="decoder.layers.{i}.mlp.linear_fc2.bias",
        hf=("model.decoder.layers.{i}.fc2.bias",),
        metaseq="decoder.layers.{i}.fc2.bias",
        shape=("hidden",),
        hf_shape=("hidden",),
        tp="replicated",
        stage="layer",
    ),
    Param(
        local="decoder.final_layernorm.weight",
        te="decoder.final_layernorm.weight",
        hf=("model.decoder.final_layer_norm.weight",),
        metaseq="decoder.layer_norm.weight",
        shape=("hidden",),
        hf_shape=("hidden",),
        tp="replicated",
        stage="last",
        init_mean=1.0,
    ),
    Param(
        local="decoder.final_layernorm.bias",
        te="decoder.final_layernorm.bias",
        hf=("model.decoder.final_layer_norm.bias",),
        metaseq="decoder.layer_norm.bias",
        shape=("hidden",),
        hf_shape=("hidden",),
        tp="replicated",
        stage="last",
    ),
    # Tied: with PP > 1 the last stage holds a copy of the word embeddings (Megatron-Core keeps
    # it in sync); HF checkpoints may carry it as lm_head; we never store it.
    Param(
        local=OUTPUT_LAYER,
        te=OUTPUT_LAYER,
        hf=("lm_head.weight",),
        metaseq="decoder.output_projection.weight",
        shape=("vocab", "hidden"),
        hf_shape=("hf_vocab", "hidden"),
        tp="column",
        stage="last",
        transform="vocab",
        tied_to=WORD_EMBEDDINGS,
    ),
)

#: The rows of the canonical state dict (all but tied copies).
CANONICAL: tuple[Param, ...] = tuple(p for p in PARAMS if p.tied_to is None)

_BY_LOCAL = {p.local: p for p in PARAMS}
_BY_TE = {p.te: p for p in PARAMS}
_BY_HF = {name: (p, j) for p in PARAMS for j, name in enumerate(p.hf)}
_BY_METASEQ = {p.metaseq: p for p in PARAMS}


def dims(arch: OPTArch, hf_vocab_size: int | None = None) -> dict[str, int]:
    """The named dimensions of :attr:`Param.shape` / :attr:`Param.hf_shape` for one model;
    ``hf_vocab_size`` is the unpadded vocabulary (default: the model's)."""
    h = arch.hidden_size
    return {
        "vocab": arch.vocab_size,
        "hf_vocab": arch.vocab_size if hf_vocab_size is None else hf_vocab_size,
        "positions": arch.max_position_embeddings,
        "hf_positions": arch.max_position_embeddings + POSITION_OFFSET,
        "hidden": h,
        "qkv": 3 * h,
        "ffn": arch.ffn_hidden_size,
    }


# ---- names: the layer index, the four vocabularies ------------------------------------------

# The first "layers.<n>." of a name: Megatron's "decoder.layers.3.", HF's
# "model.decoder.layers.3.", metaseq's "decoder.layers.3.".
_LAYER_INDEX = re.compile(r"^(.*?\blayers\.)(\d+)\.")


def split_layer(name: str) -> tuple[str, int | None]:
    """(pattern, layer index): ``('decoder.layers.{i}.mlp.linear_fc1.bias', 3)`` for
    ``'decoder.layers.3.mlp.linear_fc1.bias'``; ``(name, None)`` outside the decoder layers."""
    m = _LAYER_INDEX.match(name)
    if m is None:
        return name, None
    return f"{m.group(1)}{{i}}.{name[m.end() :]}", int(m.group(2))


def at_layer(pattern: str, layer: int | None) -> str:
    """Inverse of :func:`split_layer`: the pattern's ``{i}`` set to ``layer``."""
    return pattern if layer is None else pattern.replace("{i}", str(layer), 1)


def param(name: str) -> tuple[Param, int | None]:
    """(row, layer index) of a Megatron name (local or TE spec); KeyError naming it."""
    pattern, layer = split_layer(name)
    row = _BY_LOCAL.get(pattern) or _BY_TE.get(pattern)
    if row is None:
        raise KeyError(f"unknown OPT parameter {name!r}: no row in models/opt/params.py")
    return row, layer


def hf_param(name: str) -> tuple[Param, int, int | None]:
    """(row, index in ``row.hf`` (0, 1, 2 = q, k, v of the fused QKV), layer index) of a
    Hugging Face name (with the ``model.`` prefix); KeyError naming it."""
    pattern, layer = split_layer(name)
    if pattern not in _BY_HF:
        raise KeyError(f"unknown Hugging Face OPT tensor {name!r}: no row in models/opt/params.py")
    row, j = _BY_HF[pattern]
    return row, j, layer


def metaseq_param(name: str) -> tuple[Param, int | None]:
    """(row, layer index) of a metaseq name; KeyError naming it."""
    pattern, layer = split_layer(name)
    if pattern not in _BY_METASEQ:
        raise KeyError(f"unknown metaseq tensor {name!r}: no row in models/opt/params.py")
    return _BY_METASEQ[pattern], layer


def local_name(name: str) -> str:
    """The local-spec (canonical) name of a local or TE name."""
    row, layer = param(name)
    return at_layer(row.local, layer)


def te_name(name: str) -> str:
    """The Transformer Engine spec name of a local or TE name."""
    row, layer = param(name)
    return at_layer(row.te, layer)


def hf_names(name: str) -> tuple[str, ...]:
    """The Hugging Face names of a Megatron tensor (q, k, v for the fused QKV)."""
    row, layer = param(name)
    return tuple(at_layer(n, layer) for n in row.hf)


def metaseq_name(name: str) -> str:
    """The metaseq name of a Megatron tensor."""
    row, layer = param(name)
    return at_layer(row.metaseq, layer)


def sharded_key(name: str) -> str:
    """Megatron-Core's torch_dist key of a tensor: its TE name with the layer index folded into
    a prepended axis (``decoder.layers.mlp.linear_fc1.weight`` holds every layer's fc1); a tied
    copy is saved under the key of the tensor it copies."""
    row, _ = param(name)
    if row.tied_to is not None:
        return sharded_key(row.tied_to)
    return row.te.replace("{i}.", "")


def tp_linear_modules() -> tuple[str, ...]:
    """Per-layer modules (``self_attention.linear_qkv``, ...) that are tensor-parallel linears:
    those with a column- or row-split weight. Megatron-Core saves an ``_extra_state`` for each."""
    out: dict[str, None] = {}
    for p in PARAMS:
        if p.stage == "layer" and p.tp != "replicated":
            out[p.local.removeprefix("decoder.layers.{i}.").rsplit(".", 1)[0]] = None
    return tuple(out)


# ---- shapes and groups of one model ---------------------------------------------------------


def shape_of(row: Param, arch: OPTArch) -> tuple[int, ...]:
    """The canonical (TP=1) shape of ``row`` in a model of this shape."""
    d = dims(arch)
    return tuple(d[n] for n in row.shape)


def hf_shape_of(row: Param, arch: OPTArch, hf_vocab_size: int | None = None) -> tuple[int, ...]:
    """The shape of each Hugging Face tensor of ``row``."""
    d = dims(arch, hf_vocab_size)
    return tuple(d[n] for n in row.hf_shape)


def canonical_groups(arch: OPTArch) -> list[list[str]]:
    """Canonical names in streaming order: embeddings, one group per layer, final LayerNorm."""
    first = [p.local for p in CANONICAL if p.stage == "first"]
    layer = [p.local for p in CANONICAL if p.stage == "layer"]
    last = [p.local for p in CANONICAL if p.stage == "last"]
    return [first, *([at_layer(n, i) for n in layer] for i in range(arch.num_layers)), last]


def canonical_shapes(arch: OPTArch) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the canonical (TP=1, PP=1, local spec) OPT state dict, in order."""
    return {name: shape_of(param(name)[0], arch) for g in canonical_groups(arch) for name in g}


# ---- pipeline stages ------------------------------------------------------------------------


def stage_layers(
    num_layers: int,
    pp_size: int,
    pp_rank: int,
    vp_size: int | None = None,
    vp_stage: int | None = None,
) -> range:
    """Global layer indices of one pipeline stage (of one virtual stage with ``vp_size``): the
    uniform split Megatron-Core makes. Local index ``j`` of the stage is global
    ``stage_layers(...)[j]``. With virtual stages, chunk ``vp_stage`` of every rank comes before
    chunk ``vp_stage + 1`` of any rank (interleaved schedule)."""
    chunks = vp_size or 1
    if num_layers % (pp_size * chunks):
        if vp_size is None:
            raise ValueError(f"num_layers={num_layers} is not divisible by pp_size={pp_size}")
        raise ValueError(
            f"num_layers={num_layers} is not divisible by pp_size={pp_size} x vp_size={vp_size}"
        )
    if (vp_size is None) != (vp_stage is None):
        raise ValueError(f"vp_size={vp_size} and vp_stage={vp_stage}: give both or neither")
    per = num_layers // (pp_size * chunks)
    start = (vp_stage or 0) * (num_layers // chunks) + pp_rank * per
    return range(start, start + per)
