"""The weight table, the irregular transforms (each with its inverse) and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from megatron_optiml.conversion import opt_hf
from megatron_optiml.conversion.convert import metaseq_to_hf
from megatron_optiml.conversion.metaseq import (
    canonical_to_metaseq_parts,
    kvq_parts_to_qkv,
    qkv_to_kvq_parts,
)
from megatron_optiml.conversion.opt_hf import (
    HF_TO_CANONICAL,
    HFCheckpointReader,
    HFShardWriter,
    arch_from_hf_config,
    canonical_to_hf_names,
    fuse_qkv,
    hf_to_canonical_name,
    split_qkv,
)
from megatron_optiml.conversion.safetensors_stream import TensorSpec


def test_table_inverse_covers_every_name():
    for hf, canon in HF_TO_CANONICAL.items():
        hf_name, canon_name = hf.format(i=7), canon.format(i=7)
        assert hf_to_canonical_name(hf_name)[0] == canon_name
        assert hf_name in canonical_to_hf_names(canon_name)
    # hub .bin files of OPTModel have no "model." prefix
    assert (
        hf_to_canonical_name("decoder.layers.3.fc1.bias")[0]
        == "decoder.layers.3.mlp.linear_fc1.bias"
    )


def test_unknown_key_is_named():
    with pytest.raises(KeyError, match="model.decoder.layers.0.self_attn.rotary.weight"):
        hf_to_canonical_name("model.decoder.layers.0.self_attn.rotary.weight")


@pytest.mark.parametrize("shape", [(64, 32), (64,)])
def test_fuse_qkv_is_per_head_and_inverts(shape):
    q, k, v = (torch.randn(shape) for _ in range(3))
    fused = fuse_qkv(q, k, v, num_heads=4)
    hd = 16
    assert torch.equal(fused[:hd], q[:hd]) and torch.equal(fused[hd : 2 * hd], k[:hd])
    assert torch.equal(fused[2 * hd : 3 * hd], v[:hd]) and torch.equal(
        fused[3 * hd : 4 * hd], q[hd : 2 * hd]
    )
    assert all(torch.equal(a, b) for a, b in zip(split_qkv(fused, 4), (q, k, v)))


@pytest.mark.parametrize("parts", [1, 2, 4])
def test_metaseq_kvq_parts_invert(parts):
    qkv = torch.randn(3 * 64, 32)
    pieces = qkv_to_kvq_parts(qkv, num_heads=4, num_parts=parts)
    assert len(pieces) == parts and all(p.shape == (3 * 64 // parts, 32) for p in pieces)
    # each part is [K_p; V_p; Q_p] of its own heads
    q, k, v = split_qkv(qkv, 4)
    n = 64 // parts
    assert torch.equal(pieces[-1][:n], k[-n:]) and torch.equal(pieces[-1][2 * n :], q[-n:])
    assert torch.equal(kvq_parts_to_qkv(pieces, 4), qkv)


def test_position_offset_and_vocab_padding_invert():
    table = torch.randn(2050, 8)
    positions, rows = opt_hf.drop_position_offset(table)
    assert positions.shape == (2048, 8) and torch.equal(positions[0], table[2])
    assert torch.equal(opt_hf.add_position_offset(positions, rows), table)
    emb = torch.randn(1001, 8)
    padded = opt_hf.pad_vocab(emb, opt_hf.padded_vocab_size(1001, 8))
    assert padded.shape == (1008, 8) and not padded[1001:].any()
    assert torch.equal(opt_hf.unpad_vocab(padded, 1001), emb)


def test_untied_lm_head_is_refused():
    emb = torch.randn(10, 4)
    opt_hf.check_tied_lm_head(emb.clone(), emb)
    with pytest.raises(ValueError, match="lm_head.weight"):
        opt_hf.check_tied_lm_head(emb + 1, emb)


def _config(**kw):
    cfg = OPTConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=64,
        num_attention_heads=4,
        max_position_embeddings=32,
        word_embed_proj_dim=32,
    ).to_dict()
    cfg.update(kw)
    return cfg


def test_opt350m_is_refused_clearly():
    with pytest.raises(NotImplementedError, match="opt-350m"):
        arch_from_hf_config(_config(do_layer_norm_before=False))
    with pytest.raises(NotImplementedError, match="project_in"):
        arch_from_hf_config(_config(word_embed_proj_dim=16))


@pytest.mark.parametrize(
    "field,value",
    [
        ("enable_bias", False),
        ("layer_norm_elementwise_affine", False),
        ("activation_function", "gelu"),
        ("_remove_final_layer_norm", True),
        ("tie_word_embeddings", False),
    ],
)
def test_unrepresentable_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        arch_from_hf_config(_config(**{field: value}))


def _tiny_hf_dir(tmp_path, **save_kw):
    cfg = OPTConfig(**{k: v for k, v in _config().items() if k != "model_type"})
    torch.manual_seed(0)
    OPTForCausalLM(cfg).save_pretrained(tmp_path / "hf", **save_kw)
    return tmp_path / "hf"


def test_shape_mismatch_names_the_tensor(tmp_path):
    hf = _tiny_hf_dir(tmp_path)
    cfg = json.loads((hf / "config.json").read_text())
    cfg["ffn_dim"] = 128
    (hf / "config.json").write_text(json.dumps(cfg))
    # Refused from the file headers, before any tensor is read.
    with pytest.raises(ValueError, match=r"model\.decoder\.layers\.0\.fc1\.(weight|bias)"):
        HFCheckpointReader(hf)


def test_sharded_and_bin_sources_read_the_same(tmp_path):
    hf = _tiny_hf_dir(tmp_path)
    ref = {}
    for g in HFCheckpointReader(hf).canonical_groups():
        ref.update(g)
    # safetensors shards + index, written by our writer
    sharded = tmp_path / "sharded"
    hf_tensors = opt_hf.canonical_group_to_hf(ref, HFCheckpointReader(hf).arch, 100)
    plan = {n: TensorSpec.of(t) for n, t in hf_tensors.items()}
    writer = HFShardWriter(sharded, plan, max_shard_bytes=20_000)
    writer.add(hf_tensors)
    writer.close()
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 2
    (sharded / "config.json").write_text((hf / "config.json").read_text())
    # a pytorch_model.bin without the "model." prefix (hub OPTModel style), read weights_only
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((hf / "config.json").read_text())
    from safetensors.torch import load_file

    sd = {k.removeprefix("model."): v for k, v in load_file(hf / "model.safetensors").items()}
    torch.save(sd, bin_dir / "pytorch_model.bin")
    for d in (sharded, bin_dir):
        got = {}
        for g in HFCheckpointReader(d).canonical_groups():
            got.update(g)
        assert sorted(got) == sorted(ref) and all(torch.equal(got[k], ref[k]) for k in ref)


def test_metaseq_parts_to_hf_without_a_process_group(tmp_path):
    hf = _tiny_hf_dir(tmp_path)
    reader = HFCheckpointReader(hf)
    full = {}
    for g in reader.canonical_groups():
        full.update(g)
    paths = []
    for p, sd in enumerate(
        canonical_to_metaseq_parts(
            full, reader.arch, 2, position_offset_rows=reader.position_offset_rows
        )
    ):
        paths.append(tmp_path / f"reshard-model_part-{p}.pt")
        torch.save({"model": sd}, paths[-1])
    metaseq_to_hf(paths, tmp_path / "out", num_attention_heads=4)
    from safetensors.torch import load_file

    src, out = (
        load_file(hf / "model.safetensors"),
        load_file(tmp_path / "out" / "model.safetensors"),
    )
    assert sorted(src) == sorted(out) and all(torch.equal(src[k], out[k]) for k in src)
