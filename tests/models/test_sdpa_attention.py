"""The local spec's fused SDPA core attention computes what Megatron-Core's unfused
``DotProductAttention`` computes: logits, losses and gradients, causal and packed masks, TP 1
and 2; dropout stays inside the model-parallel RNG tracker."""

from __future__ import annotations

import pytest
import torch
from megatron.core.transformer.dot_product_attention import DotProductAttention

from megatron_optiml.models.opt import build_transformer_config, get_flavor
from megatron_optiml.models.opt.attention import SDPADotProductAttention
from megatron_optiml.models.opt.spec import opt_layer_local_spec
from megatron_optiml.testing.attention import attention_dropout_worker, attention_parity_worker
from megatron_optiml.testing.distributed import run_distributed

# fp32, opt-debug with weights of std 0.2 (logits std ~1.6): observed max |diff| 5e-6 for
# logits and 1e-7 for gradients (summation order inside the fused kernel). A wrong scale, mask
# or head layout moves logits by > 1e-1 (see mask_effect).
LOGITS_TOL = 2e-5
GRAD_TOL = 1e-6


@pytest.fixture(scope="module")
def tp1():
    (out,) = run_distributed(attention_parity_worker, 1, 1, timeout=180)
    return out


@pytest.mark.parametrize("mask", ["causal", "packed"])
def test_sdpa_matches_unfused_attention(tp1, mask):
    r = tp1[mask]
    assert r["logits"] < LOGITS_TOL, r
    assert r["loss"] < LOGITS_TOL, r
    assert r["grads"] < GRAD_TOL, r
    assert r["num_grads"] > 10 and r["grad_scale"] > 1e-2, r  # gradients are not trivially 0


def test_build_opt_model_selects_the_core_attention(tp1):
    assert tp1["core_attention"] == {
        "sdpa": ["SDPADotProductAttention"],
        "unfused": ["DotProductAttention"],
    }


def test_the_packed_mask_reaches_sdpa(tp1):
    # Same tokens and positions, block-diagonal vs causal mask: must differ a lot, else the
    # packed comparison above would not test the mask at all.
    assert tp1["mask_effect"] > 1e-1, tp1


@pytest.mark.distributed
def test_sdpa_matches_unfused_attention_at_tp2():
    results = run_distributed(attention_parity_worker, 2, 2, timeout=180)
    for r in results:
        for mask in ("causal", "packed"):
            assert r[mask]["logits"] < LOGITS_TOL, r
            assert r[mask]["grads"] < GRAD_TOL, r


def test_attention_dropout_is_drawn_from_the_rng_tracker():
    (r,) = run_distributed(attention_dropout_worker, 1, timeout=180)
    assert r["eval_equal"], r
    assert r["dropout_effect"] > 1e-3, r  # dropout on in training...
    assert r["replay_diff"] == 0.0, r  # ...reproducible from the tracker's state...
    assert r["next_draw_diff"] > 1e-3, r  # ...a fresh mask on every call...
    assert not r["default_generator_moved"], r  # ...and drawn inside the tracker's fork


def _core_attention(layer_spec):
    return layer_spec.submodules.self_attention.submodules.core_attention


def test_local_spec_defaults_to_sdpa_and_keeps_unfused_selectable():
    assert _core_attention(opt_layer_local_spec()) is SDPADotProductAttention
    assert _core_attention(opt_layer_local_spec("unfused")) is DotProductAttention
    with pytest.raises(ValueError, match="core_attention='flash'"):
        opt_layer_local_spec("flash")


def test_unsupported_inputs_are_refused():
    # No process group: a pg_collection with a TP group of size 1 stands in for Megatron's.
    class _Group:
        def size(self) -> int:
            return 1

    class _PG:
        tp = _Group()

    from megatron.core.packed_seq_params import PackedSeqParams
    from megatron.core.transformer.enums import AttnMaskType

    config = build_transformer_config(get_flavor("opt-debug"))
    attn = SDPADotProductAttention(config, 1, AttnMaskType.causal, "self", pg_collection=_PG())
    q = torch.zeros(8, 1, 4, 16)
    thd = PackedSeqParams(qkv_format="thd")
    with pytest.raises(ValueError, match="Transformer Engine"):
        attn(q, q, q, None, packed_seq_params=thd)
    with pytest.raises(ValueError, match="causal mask is only for self attention"):
        attn(q, q[:4], q[:4], None)
    assert attn(q, q, q, None).shape == (8, 1, 64)
