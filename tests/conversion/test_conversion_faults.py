"""optiml-convert on real faults: a full disk (small tmpfs), a truncated .safetensors file,
tensors whose shapes contradict the metadata, opt-350m-style and unevenly split models.
Each fails in one line naming the file / tensor / field, leaving no partial output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from checkpoints_conversion.cli import main
from megatron_optiml.testing.distributed import run_distributed
from megatron_optiml.testing.faults import small_disk, truncate_file


def _hf_model(path: Path, vocab_size: int = 64, ffn_dim: int = 64, **kw) -> Path:
    torch.manual_seed(0)
    cfg = OPTConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        ffn_dim=ffn_dim,
        num_attention_heads=4,
        max_position_embeddings=16,
        word_embed_proj_dim=32,
        **kw,
    )
    OPTForCausalLM(cfg).save_pretrained(path)
    return path


def _one_error_line(capsys) -> str:
    """The command's own message: one line (stderr also holds import-time warnings)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("optiml-convert:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def big_hf(tmp_path_factory):
    """~2 MB of weights (16k x 32 embeddings): larger than the small disks below."""
    return _hf_model(tmp_path_factory.mktemp("hf") / "hf", vocab_size=16384)


def test_full_disk_hf_to_megatron_leaves_nothing(big_hf, tmp_path, capsys):
    with small_disk(tmp_path / "disk", "1m") as disk:
        assert main(["hf-to-megatron", str(big_hf), str(disk / "meg")]) == 1
        err = _one_error_line(capsys)
        assert "no space left on device" in err and str(disk / "meg") in err
        assert list(disk.iterdir()) == []


def test_full_disk_megatron_to_hf_keeps_the_previous_export(big_hf, tmp_path, capsys):
    assert main(["hf-to-megatron", str(big_hf), str(tmp_path / "meg")]) == 0
    # Room for one export (~2.1 MB of weights + 1.4 MB of tokenizer files), not for the
    # second export's shard beside it.
    with small_disk(tmp_path / "disk", "4500k") as disk:
        out = disk / "hf"
        assert main(["megatron-to-hf", str(tmp_path / "meg"), str(out)]) == 0
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        capsys.readouterr()
        assert main(["megatron-to-hf", str(tmp_path / "meg"), str(out)]) == 1
        err = _one_error_line(capsys)
        assert "no space left on device" in err and str(out) in err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_truncated_safetensors_is_named(tmp_path, capsys):
    hf = _hf_model(tmp_path / "hf")
    truncate_file(hf / "model.safetensors")
    assert main(["hf-to-megatron", str(hf), str(tmp_path / "meg")]) == 2
    err = _one_error_line(capsys)
    assert f"{hf / 'model.safetensors'}: truncated safetensors file" in err
    assert not (tmp_path / "meg").exists()


def test_truncated_safetensors_in_a_megatron_checkpoint_is_named(tmp_path, capsys):
    assert main(["hf-to-megatron", str(_hf_model(tmp_path / "hf")), str(tmp_path / "meg")]) == 0
    extra = tmp_path / "meg" / "release" / "hf_extra.safetensors"
    truncate_file(extra)
    capsys.readouterr()
    assert main(["megatron-to-hf", str(tmp_path / "meg"), str(tmp_path / "out")]) == 2
    assert f"{extra}: truncated safetensors file" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_hf_tensor_contradicting_config_json(tmp_path, capsys):
    hf = _hf_model(tmp_path / "hf", ffn_dim=48)
    config = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**config, "ffn_dim": 64}))
    assert main(["hf-to-megatron", str(hf), str(tmp_path / "meg")]) == 2
    err = _one_error_line(capsys)
    assert "tensor 'model.decoder.layers.0.fc1.bias' has shape (48,)" in err
    assert "config.json implies (64,)" in err
    assert not (tmp_path / "meg").exists()


@pytest.fixture
def lying_checkpoint(tmp_path):
    """A Megatron checkpoint of a 48-wide MLP whose optiml_meta.json claims 64."""
    assert (
        main(["hf-to-megatron", str(_hf_model(tmp_path / "hf", ffn_dim=48)), str(tmp_path / "meg")])
        == 0
    )
    meta_path = tmp_path / "meg" / "release" / "optiml_meta.json"
    meta = json.loads(meta_path.read_text())
    meta["arch"]["ffn_hidden_size"] = 64
    meta_path.write_text(json.dumps(meta))
    return tmp_path / "meg"


def test_megatron_tensors_contradicting_meta_to_hf(lying_checkpoint, tmp_path, capsys):
    capsys.readouterr()
    assert main(["megatron-to-hf", str(lying_checkpoint), str(tmp_path / "out")]) == 2
    err = _one_error_line(capsys)
    assert "'decoder.layers.mlp.linear_fc1.weight'" in err
    assert "(2, 48, 32)" in err and "(2, 64, 32)" in err
    assert not (tmp_path / "out").exists()  # no half-written HF folder


def load_worker(rank, world_size, root):
    from megatron_optiml.checkpointing import load_model_checkpoint, read_meta
    from megatron_optiml.models.opt import build_opt_model, build_transformer_config
    from megatron_optiml.parallel import init_distributed

    init_distributed()
    arch = read_meta(Path(root) / "release")["arch"]
    model = build_opt_model(arch, build_transformer_config(arch))
    try:
        load_model_checkpoint(root, model, arch=arch)
    except ValueError as e:
        return str(e)
    return None


def test_megatron_tensors_contradicting_meta_on_load(lying_checkpoint):
    (message,) = run_distributed(load_worker, 1, str(lying_checkpoint), timeout=120)
    assert message is not None and "\n" not in message
    assert "'decoder.layers.mlp.linear_fc1.weight'" in message
    assert "(2, 48, 32)" in message and "(2, 64, 32)" in message


def test_opt350m_style_refusal_names_the_fields(tmp_path, capsys):
    hf = _hf_model(tmp_path / "hf")
    config = json.loads((hf / "config.json").read_text())
    config.update(word_embed_proj_dim=16, do_layer_norm_before=False)
    (hf / "config.json").write_text(json.dumps(config))
    assert main(["hf-to-megatron", str(hf), str(tmp_path / "meg")]) == 2
    err = _one_error_line(capsys)
    assert "word_embed_proj_dim=16 != hidden_size=32" in err
    assert "do_layer_norm_before=False" in err
    assert not (tmp_path / "meg").exists()


def test_uneven_pipeline_split_is_refused_by_name():
    from megatron_optiml.models.opt import build_transformer_config
    from megatron_optiml.models.opt.flavors import OPTArch

    arch = OPTArch(num_layers=3, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64)
    with pytest.raises(ValueError, match=r"num_layers=3 .*pipeline_model_parallel_size=2"):
        build_transformer_config(arch, pipeline_model_parallel_size=2, pipeline_dtype=torch.float32)
    with pytest.raises(ValueError, match=r"num_layers=3 .*virtual_pipeline_model_parallel_size=2"):
        build_transformer_config(
            arch, virtual_pipeline_model_parallel_size=2, pipeline_dtype=torch.float32
        )
