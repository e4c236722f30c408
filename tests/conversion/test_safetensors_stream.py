"""The streaming safetensors writer: byte-identical to ``save_file``, refuses off-plan tensors."""

from __future__ import annotations

import gc
import json
import weakref

import pytest
import torch
from safetensors.torch import save_file

from megatron_optiml.conversion import opt_hf
from megatron_optiml.conversion.opt_hf import HFShardWriter, hf_tensor_plan
from megatron_optiml.conversion.safetensors_stream import (
    _DTYPE_NAMES,
    SafetensorsFileWriter,
    TensorSpec,
    plan_shards,
)
from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.models.opt.init import canonical_shapes


def _mixed_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    t = {
        # dtype order and name order disagree ("layers.10" < "layers.2"; bf16 before f32 names)
        "a.layers.2.weight": torch.randn(5, 3, generator=g).bfloat16(),
        "a.layers.10.weight": torch.randn(7, generator=g).bfloat16(),
        "b.bias": torch.randn(3, generator=g),
        "0d.scalar": torch.tensor(3.5, dtype=torch.float32),
        "empty.rows": torch.empty(0, 4, dtype=torch.bfloat16),
        "z.half": torch.randn(2, 2, 2, generator=g).half(),
        "odd.bytes": torch.arange(5, dtype=torch.uint8),  # data not a multiple of 8 bytes
        "unicodé.name": torch.ones(1, dtype=torch.float64),
    }
    # one tensor of every dtype the writer knows: checks its dtype order against the library's
    for i, dtype in enumerate(_DTYPE_NAMES):
        t[f"every.{i:02d}"] = torch.arange(3).to(dtype)
    return t


def _stream(path, tensors, order, metadata):
    writer = SafetensorsFileWriter(
        path, {n: TensorSpec.of(v) for n, v in tensors.items()}, metadata
    )
    for name in order:
        writer.write(name, tensors[name])
    writer.close()


@pytest.mark.parametrize("metadata", [{"format": "pt"}, None])
def test_streamed_file_matches_save_file(tmp_path, metadata):
    tensors = _mixed_tensors()
    save_file(tensors, tmp_path / "ref.safetensors", metadata=metadata)
    # arrival order differs from file order: each tensor goes to its planned offset
    order = list(reversed(tensors))
    _stream(tmp_path / "got.safetensors", tensors, order, metadata)
    assert (tmp_path / "got.safetensors").read_bytes() == (
        tmp_path / "ref.safetensors"
    ).read_bytes()


def test_empty_file_matches_save_file(tmp_path):
    save_file({}, tmp_path / "ref.safetensors", metadata={"format": "pt"})
    _stream(tmp_path / "got.safetensors", {}, [], {"format": "pt"})
    assert (tmp_path / "got.safetensors").read_bytes() == (
        tmp_path / "ref.safetensors"
    ).read_bytes()


def test_writer_refuses_tensors_off_the_plan(tmp_path):
    plan = {"w": TensorSpec((2, 3), torch.bfloat16), "b": TensorSpec((3,), torch.float32)}
    writer = SafetensorsFileWriter(tmp_path / "x.safetensors", plan)
    with pytest.raises(KeyError, match="'extra'"):
        writer.write("extra", torch.zeros(3))
    with pytest.raises(ValueError, match=r"'w'.*\(3, 2\)"):
        writer.write("w", torch.zeros(3, 2, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"'w'.*torch\.float32"):
        writer.write("w", torch.zeros(2, 3))
    writer.write("w", torch.zeros(2, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="'w' written twice"):
        writer.write("w", torch.zeros(2, 3, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match=r"never written: \['b'\]"):
        writer.close()

    shards = HFShardWriter(tmp_path / "hf", plan, max_shard_bytes=12)
    with pytest.raises(KeyError, match="'lm_head.weight'"):
        shards.add({"lm_head.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="'b'"):
        shards.add({"b": torch.zeros(3, dtype=torch.bfloat16)})
    shards.add({"w": torch.zeros(2, 3, dtype=torch.bfloat16)})
    with pytest.raises(ValueError, match=r"never written: \['b'\]"):
        shards.close()


def _tiny_arch() -> OPTArch:
    return OPTArch(
        num_layers=3,
        hidden_size=16,
        num_attention_heads=2,
        ffn_hidden_size=32,
        vocab_size=104,
        max_position_embeddings=24,
    )


def test_hf_shards_stream_and_match_save_file(tmp_path):
    arch, vocab = _tiny_arch(), 100
    shapes = canonical_shapes(arch)
    dtypes = {n: torch.float32 if "layernorm" in n else torch.bfloat16 for n in shapes}
    plan = hf_tensor_plan(arch, vocab, dtypes)
    writer = HFShardWriter(tmp_path, plan, max_shard_bytes=3000)
    g = torch.Generator().manual_seed(0)
    written: dict[str, torch.Tensor] = {}
    arrival: list[str] = []
    for group in opt_hf.canonical_groups(arch):
        canon = {n: torch.randn(shapes[n], generator=g).to(dtypes[n]) for n in group}
        hf = opt_hf.canonical_group_to_hf(canon, arch, vocab)
        written.update({n: t.clone() for n, t in hf.items()})
        arrival += list(hf)
        refs = [weakref.ref(t) for t in hf.values()]
        writer.add(hf)
        del canon, hf
        gc.collect()
        # the writer keeps no tensor: memory is the caller's current group
        assert all(r() is None for r in refs)
    writer.close()
    # the plan is the exports' arrival order, so shards split as a greedy in-order writer would
    assert list(plan) == arrival
    shards = plan_shards(plan, 3000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in written.values())
    assert len(shards) > 3 and len(set(index["weight_map"].values())) == len(shards)
    for k, shard in enumerate(shards):
        final = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        assert {n for n, f in index["weight_map"].items() if f == final} == set(shard)
        save_file({n: written[n] for n in shard}, tmp_path / "ref", metadata={"format": "pt"})
        assert (tmp_path / final).read_bytes() == (tmp_path / "ref").read_bytes()
    assert not list(tmp_path.glob(".shard-*"))
