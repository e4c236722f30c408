"""The parameter table (``models/opt/params.py``) against the real thing: every parameter of a
built ``GPTModel`` (local spec, TP 1 and 2, PP 2 with and without virtual stages) has a row
with its shape, Megatron's ``partition_dim`` and sharded key; every tensor of a Hugging Face
``OPTForCausalLM`` maps to exactly one row; the TE names are Megatron-Core's own."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from megatron_optiml.models.opt import params
from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.testing.distributed import run_distributed

# Small enough to build in a second; vocabulary and widths divisible by TP=2.
ARCH = OPTArch(
    num_layers=2,
    hidden_size=32,
    num_attention_heads=4,
    ffn_hidden_size=64,
    vocab_size=96,
    max_position_embeddings=24,
)
# Four layers: two pipeline stages of two virtual stages each.
ARCH_PP = dataclasses.replace(ARCH, num_layers=4)


def _describe(model) -> dict:
    """What Megatron-Core built: per parameter its shape and TP attributes, per tensor its
    sharded key and global shape."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    out = {
        "params": {
            n: (
                tuple(p.shape),
                bool(getattr(p, "tensor_model_parallel", False)),
                getattr(p, "partition_dim", None),
            )
            for n, p in model.named_parameters()
        },
        "state_dict": [k for k in model.state_dict() if not k.endswith("_extra_state")],
        "sharded": {
            k: (v.key, tuple(v.global_shape))
            for k, v in model.sharded_state_dict().items()
            if isinstance(v, ShardedTensor)
        },
        "layer_numbers": [layer.layer_number for layer in model.decoder.layers],
    }
    return out


def _sharded_entries(sharded: dict) -> dict:
    return {
        k: (type(v).__name__, v.key, tuple(v.global_shape), tuple(v.global_offset))
        for k, v in sharded.items()
    }


def _templates_vs_model(model) -> tuple[dict, dict]:
    """(the converter's TP=1 templates, the TP=1 model's sharded state dict), comparable."""
    from megatron_optiml.conversion.megatron_dist import sharded_templates

    return _sharded_entries(sharded_templates(ARCH)), _sharded_entries(model.sharded_state_dict())


def params_worker(rank: int, world_size: int) -> dict:
    from megatron.core import parallel_state as ps

    from megatron_optiml.models.opt import build_opt_model, build_transformer_config
    from megatron_optiml.parallel import init_distributed

    result: dict = {}
    for tp in (2, 1):
        init_distributed(tensor_model_parallel_size=tp)
        model = build_opt_model(ARCH, build_transformer_config(ARCH, tensor_model_parallel_size=tp))
        result[f"tp{tp}"] = _describe(model)
        if tp == 1:
            result["templates"] = _templates_vs_model(model)
        ps.destroy_model_parallel()
    for vp in (None, 2):
        init_distributed(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=vp)
        config = build_transformer_config(
            ARCH_PP,
            pipeline_model_parallel_size=2,
            virtual_pipeline_model_parallel_size=vp,
            pipeline_dtype=torch.float32,
        )
        chunks = []
        for stage in range(vp or 1):
            vp_stage = stage if vp else None
            model = build_opt_model(
                ARCH_PP,
                config,
                pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
                post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
                vp_stage=vp_stage,
            )
            chunks.append(_describe(model))
        result[f"pp2_vp{vp}"] = {"pp_rank": ps.get_pipeline_model_parallel_rank(), "chunks": chunks}
        ps.destroy_model_parallel()
    return result


@pytest.fixture(scope="module")
def built():
    return run_distributed(params_worker, 2, timeout=240)


def _check_parameters(desc: dict, arch: OPTArch, tp: int, layers: range) -> set[str]:
    """Every parameter has a row, with the row's TP split, its shape / TP and Megatron's
    sharded key; returns the rows seen."""
    seen = set()
    for name, (shape, is_tp, dim) in desc["params"].items():
        row, layer = params.param(name)
        assert params.local_name(name) == name  # the local spec uses the local names
        seen.add(row.local)
        want = list(params.shape_of(row, arch))
        if row.tp_dim is not None:
            want[row.tp_dim] //= tp
        assert shape == tuple(want), name
        # Megatron marks split tensors (even at TP=1) with the dim it splits.
        assert is_tp == (row.tp_dim is not None), name
        if is_tp:
            assert dim == row.tp_dim, name
        key, global_shape = desc["sharded"][name]
        assert key == params.sharded_key(name), name
        full = params.shape_of(row, arch)
        if row.stage == "layer":
            assert layers[layer] < arch.num_layers
            full = (arch.num_layers, *full)  # all layers in one tensor, a prepended axis
        assert global_shape == full, name
    assert desc["state_dict"] == [n for n in desc["params"]]
    return seen


@pytest.mark.distributed
@pytest.mark.parametrize("tp", [1, 2])
def test_every_parameter_of_the_model_is_a_row(built, tp):
    for rank, result in enumerate(built):
        desc = result[f"tp{tp}"]
        seen = _check_parameters(desc, ARCH, tp, range(ARCH.num_layers))
        # PP=1 holds every canonical row, and the tied output layer is no parameter of its own.
        assert seen == {p.local for p in params.CANONICAL}, rank
        assert len(desc["params"]) == len(params.canonical_shapes(ARCH))


@pytest.mark.distributed
@pytest.mark.parametrize("vp", [None, 2])
def test_pipeline_stages_hold_the_table_layers(built, vp):
    seen = set()
    for result in built:
        r = result[f"pp2_vp{vp}"]
        for vp_stage, desc in enumerate(r["chunks"]):
            layers = params.stage_layers(
                ARCH_PP.num_layers, 2, r["pp_rank"], vp, vp_stage if vp else None
            )
            # Megatron's layer_number is the 1-based global index.
            assert [n - 1 for n in desc["layer_numbers"]] == list(layers)
            seen |= _check_parameters(desc, ARCH_PP, 1, layers)
            stages = {params.param(n)[0].stage for n in desc["params"]}
            first = r["pp_rank"] == 0 and vp_stage == 0
            last = r["pp_rank"] == 1 and vp_stage == len(r["chunks"]) - 1
            assert ("first" in stages) == first and ("last" in stages) == last
    # The last stage holds the tied output layer as a parameter of its own.
    assert seen == {p.local for p in params.PARAMS}


@pytest.mark.distributed
def test_dist_checkpoint_templates_are_the_models(built):
    """The streaming converter writes the keys, global shapes and offsets (extra-state objects
    included) that a TP=1, PP=1 model's own ``sharded_state_dict()`` declares."""
    for result in built:
        templates, model = result["templates"]
        assert templates == model


def test_te_names_are_megatron_cores():
    """Megatron-Core's local spec maps its LayerNorm names onto the TE spec's fused ones for
    checkpoints; that map is Megatron's statement of the TE names (Transformer Engine itself
    is not needed to read it)."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    keys_map = get_gpt_layer_local_spec(normalization="LayerNorm").submodules
    keys_map = keys_map.sharded_state_dict_keys_map
    prefix = "decoder.layers.{i}."
    for row in params.PARAMS:
        rest = row.local.removeprefix(prefix)
        mapped = next(
            (te + rest[len(local) :] for local, te in keys_map.items() if rest.startswith(local)),
            rest,
        )
        assert row.te == (prefix + mapped if row.stage == "layer" else row.local), row.local
        assert params.te_name(params.at_layer(row.local, 3)) == params.at_layer(row.te, 3)
        assert params.local_name(params.at_layer(row.te, 3)) == params.at_layer(row.local, 3)


def test_every_hf_tensor_maps_to_exactly_one_row():
    from transformers import OPTConfig, OPTForCausalLM

    from megatron_optiml.conversion.opt_hf import hf_config_from_arch

    hf_vocab = 90  # unpadded: the table's hf_vocab dimension
    model = OPTForCausalLM(OPTConfig(**hf_config_from_arch(ARCH, hf_vocab, torch.float32)))
    state = model.state_dict()
    expected = {}
    for row in params.PARAMS:
        for layer in range(ARCH.num_layers) if row.stage == "layer" else [None]:
            for name in row.hf:
                expected[params.at_layer(name, layer)] = params.hf_shape_of(row, ARCH, hf_vocab)
    assert set(state) == set(expected)
    for name, t in state.items():
        pattern, _ = params.split_layer(name)
        assert sum(pattern in row.hf for row in params.PARAMS) == 1, name
        row, j, layer = params.hf_param(name)
        assert (
            row.hf[j] == pattern and params.hf_names(params.at_layer(row.local, layer))[j] == name
        )
        assert tuple(t.shape) == expected[name], name


def test_names_are_unique_and_columns_valid():
    for column in ("local", "te", "metaseq"):
        names = [getattr(p, column) for p in params.PARAMS]
        assert len(set(names)) == len(names), column
    hf = [n for p in params.PARAMS for n in p.hf]
    assert len(set(hf)) == len(hf)
    dim_names = set(params.dims(ARCH))
    for p in params.PARAMS:
        assert p.tp in params.TP_DIMS and p.stage in ("first", "layer", "last")
        assert p.transform in (None, "qkv", "vocab", "positions")
        assert set(p.shape) <= dim_names and set(p.hf_shape) <= dim_names
        assert len(p.hf) == (3 if p.transform == "qkv" else 1)
        # layer rows, and only they, carry the layer index in every vocabulary
        for name in (p.local, p.te, p.metaseq, *p.hf):
            assert ("{i}" in name) == (p.stage == "layer"), name
        ms_row, _ = params.metaseq_param(params.at_layer(p.metaseq, 5))
        assert ms_row is p
    # a TP split of the fused QKV keeps whole heads only because of the per-head layout
    assert {p.local for p in params.PARAMS if p.transform == "qkv"} == {
        "decoder.layers.{i}.self_attention.linear_qkv.weight",
        "decoder.layers.{i}.self_attention.linear_qkv.bias",
    }


def test_shapes_add_up_to_the_parameter_count():
    for arch in (ARCH, ARCH_PP):
        total = sum(math.prod(s) for s in params.canonical_shapes(arch).values())
        assert total == arch.num_parameters()


@pytest.mark.parametrize(
    ("name", "pattern", "layer"),
    [
        ("decoder.layers.11.mlp.linear_fc1.bias", "decoder.layers.{i}.mlp.linear_fc1.bias", 11),
        ("model.decoder.layers.3.fc1.bias", "model.decoder.layers.{i}.fc1.bias", 3),
        (
            "decoder.layers.0.self_attn.qkv_proj.weight",
            "decoder.layers.{i}.self_attn.qkv_proj.weight",
            0,
        ),
        ("embedding.word_embeddings.weight", "embedding.word_embeddings.weight", None),
        ("decoder.final_layernorm.bias", "decoder.final_layernorm.bias", None),
    ],
)
def test_split_layer_inverts(name, pattern, layer):
    assert params.split_layer(name) == (pattern, layer)
    assert params.at_layer(pattern, layer) == name


def test_unknown_names_are_named():
    with pytest.raises(KeyError, match="'decoder.layers.0.mystery'"):
        params.param("decoder.layers.0.mystery")
    with pytest.raises(KeyError, match="'model.decoder.layers.0.self_attn.rotary.weight'"):
        params.hf_param("model.decoder.layers.0.self_attn.rotary.weight")
    with pytest.raises(KeyError, match="'decoder.layers.0.adapter.weight'"):
        params.metaseq_param("decoder.layers.0.adapter.weight")


def test_stage_layers_refuses_uneven_splits():
    assert params.stage_layers(8, 2, 1) == range(4, 8)
    # interleaved: chunk 0 of every rank, then chunk 1 of every rank
    assert [params.stage_layers(8, 2, r, 2, v) for v in (0, 1) for r in (0, 1)] == [
        range(0, 2),
        range(2, 4),
        range(4, 6),
        range(6, 8),
    ]
    with pytest.raises(ValueError, match="num_layers=6 is not divisible by pp_size=4"):
        params.stage_layers(6, 4, 0)
    with pytest.raises(ValueError, match="pp_size=2 x vp_size=4"):
        params.stage_layers(6, 2, 0, 4, 0)
    with pytest.raises(ValueError, match="give both or neither"):
        params.stage_layers(8, 2, 0, 2)
