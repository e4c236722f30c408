"""Rank bodies for the conversion tests (spawned by ``run_distributed``, so module level)."""

from __future__ import annotations

from pathlib import Path

import torch

LAYOUTS = ((1, 1), (2, 1), (1, 2))  # (tp, pp)


def _set_layout(tp: int, pp: int) -> None:
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp)
    model_parallel_cuda_manual_seed(1234)


def _build(arch, tp: int, pp: int):
    from megatron.core import parallel_state as ps

    from megatron_optiml.models.opt import build_opt_model, build_transformer_config

    config = build_transformer_config(
        arch,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        pipeline_dtype=torch.float32,
    )
    return build_opt_model(
        arch,
        config,
        pre_process=ps.is_pipeline_first_stage(),
        post_process=ps.is_pipeline_last_stage(),
    )


def _logits(model, tokens: torch.Tensor, pp: int) -> torch.Tensor | None:
    """Full-vocabulary logits [b, s, V] on the last stage (None elsewhere)."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    b, s = tokens.shape
    positions = torch.arange(s).expand(b, s)
    with torch.no_grad():
        if pp > 1 and not ps.is_pipeline_first_stage():
            hidden = torch.empty(s, b, model.config.hidden_size)
            torch.distributed.recv(hidden, src=ps.get_pipeline_model_parallel_prev_rank())
            model.set_input_tensor(hidden)
        out = model(tokens, positions, None)
        if not ps.is_pipeline_last_stage():
            torch.distributed.send(out, dst=ps.get_pipeline_model_parallel_next_rank())
            return None
    return gather_from_tensor_model_parallel_region(out)


def _swap_q_and_k(model, num_heads: int) -> None:
    """Corrupt the fused QKV as a converter would with [k; q; v] per head (sensitivity check)."""
    for layer in model.decoder.layers:
        qkv = layer.self_attention.linear_qkv
        for p in (qkv.weight, qkv.bias):
            per_head = p.data.view(num_heads // qkv_tp(), 3, -1, *p.shape[1:])
            per_head.copy_(per_head[:, [1, 0, 2]].clone())


def qkv_tp() -> int:
    from megatron.core import parallel_state as ps

    return ps.get_tensor_model_parallel_world_size()


def _gather_canonical(model, arch, tp: int) -> dict[str, torch.Tensor]:
    from megatron.core import parallel_state as ps

    from megatron_optiml.conversion.sharding import merge_state_dicts

    mine = {
        k: v.detach().clone()
        for k, v in model.state_dict().items()
        if not k.endswith("_extra_state")
    }
    shards: list = [None] * tp
    torch.distributed.all_gather_object(shards, mine, group=ps.get_tensor_model_parallel_group())
    return merge_state_dicts({(t, 0): shards[t] for t in range(tp)}, tp, 1, arch.num_layers)


def conversion_worker(rank: int, world_size: int, hf_dir: str, ms_parts: list, work: str, tokens):
    from megatron_optiml.checkpointing import (
        load_model_checkpoint,
        read_meta,
        save_model_checkpoint,
    )
    from megatron_optiml.conversion.convert import (
        hf_to_megatron,
        megatron_to_hf,
        metaseq_to_megatron,
    )
    from megatron_optiml.conversion.sharding import load_shard_into_model
    from megatron_optiml.parallel import init_distributed

    init_distributed()
    work = Path(work)
    roots = {
        "hf": hf_to_megatron(hf_dir, work / "from_hf", pad_vocab_to_multiple_of=8).parent,
        "metaseq": metaseq_to_megatron(ms_parts, work / "from_metaseq").parent,
    }
    megatron_to_hf(roots["hf"], work / "hf_roundtrip")
    megatron_to_hf(roots["metaseq"], work / "metaseq_to_hf")
    result: dict = {"logits": {}}
    for source, root in roots.items():
        arch = read_meta(root / "release")["arch"]
        for tp, pp in LAYOUTS:
            _set_layout(tp, pp)
            model = _build(arch, tp, pp)
            load_model_checkpoint(root, model, arch=arch)
            logits = _logits(model, tokens, pp)
            if logits is not None and rank == 0 or (pp > 1 and rank == world_size - 1):
                result["logits"][(source, tp, pp)] = logits
            if source == "hf" and (tp, pp) == (2, 1):
                _swap_q_and_k(model, arch.num_attention_heads)
                result["logits"][("hf_swapped_qk", tp, pp)] = _logits(model, tokens, pp)
    # A checkpoint trained at TP=2 exports like the same weights saved at TP=1.
    arch = read_meta(roots["hf"] / "release")["arch"]
    _set_layout(2, 1)
    model = _build(arch, 2, 1)
    load_model_checkpoint(roots["hf"], model)
    b, s = tokens.shape
    loss = model(tokens, torch.arange(s).expand(b, s), None, labels=tokens.roll(-1, 1)).mean()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p.grad, alpha=-0.5)
    save_model_checkpoint(work / "trained_tp2", model, arch, 1)
    full = _gather_canonical(model, arch, 2)
    _set_layout(1, 1)
    model = _build(arch, 1, 1)
    load_shard_into_model(model, full)
    save_model_checkpoint(work / "trained_tp1", model, arch, 1)
    megatron_to_hf(work / "trained_tp2", work / "trained_tp2_hf")
    megatron_to_hf(work / "trained_tp1", work / "trained_tp1_hf")
    # A model of another shape refuses the checkpoint, naming the field.
    try:
        load_model_checkpoint(work / "trained_tp1", model, arch=_other(arch))
    except ValueError as e:
        result["mismatch_error"] = str(e)
    return result


def _other(arch):
    import dataclasses

    return dataclasses.replace(arch, ffn_hidden_size=arch.ffn_hidden_size * 2)
