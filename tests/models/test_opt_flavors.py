"""OPT flavors table, OPT's semantics in TransformerConfig, and clear refusals."""

import pytest
import torch.nn.functional as F

from megatron_optiml.models.opt import OPT_FLAVORS, build_transformer_config, get_flavor
from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.utils.optional import have_transformer_engine

# Published sizes (Zhang et al. 2022): parameter counts to 2 significant digits.
PUBLISHED = {
    "opt-125m": 125e6,
    "opt-1.3b": 1.3e9,
    "opt-2.7b": 2.7e9,
    "opt-6.7b": 6.7e9,
    "opt-13b": 13e9,
    "opt-30b": 30e9,
    "opt-66b": 66e9,
    "opt-175b": 175e9,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_published(name):
    arch = get_flavor(name)
    assert arch.vocab_size == 50272 and arch.max_position_embeddings == 2048
    assert arch.ffn_hidden_size == 4 * arch.hidden_size
    assert abs(arch.num_parameters() - PUBLISHED[name]) / PUBLISHED[name] < 0.035


def test_debug_flavor_is_tiny():
    arch = get_flavor("opt-debug")
    assert (arch.num_layers, arch.hidden_size, arch.num_attention_heads) == (2, 64, 4)


def test_opt_semantics_in_transformer_config():
    cfg = build_transformer_config(get_flavor("opt-125m"))
    assert cfg.activation_func is F.relu
    assert cfg.add_bias_linear and cfg.add_qkv_bias
    assert cfg.normalization == "LayerNorm" and cfg.layernorm_epsilon == 1e-5
    assert not cfg.gated_linear_unit and not cfg.apply_query_key_layer_scaling
    assert cfg.num_query_groups == cfg.num_attention_heads  # plain multi-head attention


def test_overrides_reach_transformer_config():
    cfg = build_transformer_config(
        get_flavor("opt-debug"), hidden_dropout=0.1, tensor_model_parallel_size=2
    )
    assert cfg.hidden_dropout == 0.1 and cfg.tensor_model_parallel_size == 2


def test_opt_350m_is_refused_with_reason():
    assert "opt-350m" in OPT_FLAVORS
    with pytest.raises(NotImplementedError, match="post-LayerNorm.*project_in"):
        build_transformer_config(get_flavor("opt-350m"))


def test_unknown_flavor_and_bad_shape():
    with pytest.raises(ValueError, match="unknown OPT flavor 'opt-7b'"):
        get_flavor("opt-7b")
    with pytest.raises(ValueError, match="not divisible by num_attention_heads=3"):
        OPTArch(num_layers=1, hidden_size=64, num_attention_heads=3, ffn_hidden_size=256)


@pytest.mark.skipif(have_transformer_engine(), reason="TE present")
def test_te_spec_without_te_says_what_to_do():
    from megatron_optiml.models.opt.spec import opt_layer_te_spec

    with pytest.raises(RuntimeError, match="Transformer Engine.*pip install -e .\\[gpu\\]"):
        opt_layer_te_spec()


def test_unknown_transformer_impl():
    from megatron_optiml.models.opt.spec import opt_block_spec

    with pytest.raises(ValueError, match="transformer_impl='apex'"):
        opt_block_spec(build_transformer_config(get_flavor("opt-debug")), "apex")
