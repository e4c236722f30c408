"""Core-attention parity workload: the local spec's fused SDPA attention against Megatron-Core's
unfused ``DotProductAttention`` on the same weights (``opt-debug``, fp32, any TP size)."""

from __future__ import annotations

from typing import Any

import torch

# Four documents in row 0 and two in row 1 (segment starts), so the block-diagonal mask is not
# the causal one.
PACKED_STARTS = ((0, 7, 20, 33), (0, 25))


def packed_segments(b: int, s: int) -> torch.Tensor:
    """``[b, s]`` segment ids from :data:`PACKED_STARTS` (row ``i % 2``)."""
    ids = torch.zeros(b, s, dtype=torch.long)
    for row in range(b):
        for start in PACKED_STARTS[row % 2][1:]:
            ids[row, start:] += 1
    return ids


def _models(arch, config, seed: int) -> dict[str, torch.nn.Module]:
    from megatron.core import parallel_state as ps

    from megatron_optiml.conversion.sharding import Layout, load_shard_into_model, shard_state_dict
    from megatron_optiml.models.opt import build_opt_model
    from megatron_optiml.models.opt.init import random_canonical_state_dict

    full = random_canonical_state_dict(arch, seed=seed, std=0.2)
    layout = Layout(
        tp_size=config.tensor_model_parallel_size, tp_rank=ps.get_tensor_model_parallel_rank()
    )
    shard = shard_state_dict(full, layout, arch.num_layers)
    models = {}
    for name in ("sdpa", "unfused"):
        model = build_opt_model(arch, config, core_attention=name)
        load_shard_into_model(model, shard)
        models[name] = model
    return models


def attention_parity_worker(
    rank: int, world_size: int, tp: int = 1, seq: int = 48, seed: int = 0
) -> dict[str, Any]:
    """Largest |SDPA - unfused| of logits (this rank's vocab shard), per-token losses and
    gradients (this rank's shards), with the causal mask (``attention_mask=None``) and the
    packed block-diagonal mask; plus how far the two masks' logits are apart (must be large)."""
    from megatron_optiml.data.collate import block_causal_mask
    from megatron_optiml.models.opt import build_transformer_config, get_flavor
    from megatron_optiml.parallel import init_distributed

    init_distributed(tensor_model_parallel_size=tp, seed=seed)
    arch = get_flavor("opt-debug")
    config = build_transformer_config(arch, tensor_model_parallel_size=tp)
    models = _models(arch, config, seed)
    b = 2
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, 1000, (b, seq), generator=g)
    labels = torch.randint(3, 1000, (b, seq), generator=g)
    positions = torch.arange(seq).expand(b, seq)
    masks = {"causal": None, "packed": block_causal_mask(packed_segments(b, seq))}
    out: dict[str, Any] = {}
    logits_of: dict[tuple[str, str], torch.Tensor] = {}
    for mask_name, mask in masks.items():
        results = {}
        for name, model in models.items():
            model.zero_grad(set_to_none=True)
            logits = model(tokens, positions, mask)
            per_token = model(tokens, positions, mask, labels=labels)
            # Logits and loss both feed the backward, so every gradient path is compared.
            (per_token.mean() + 1e-2 * logits.square().mean()).backward()
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
            results[name] = (logits.detach(), per_token.detach(), grads)
            logits_of[(mask_name, name)] = logits.detach()
        (sl, sp, sg), (ul, up, ug) = results["sdpa"], results["unfused"]
        out[mask_name] = {
            "logits": float((sl - ul).abs().max()),
            "loss": float((sp - up).abs().max()),
            "grads": max(float((sg[k] - ug[k]).abs().max()) for k in sg),
            "grad_scale": max(float(ug[k].abs().max()) for k in ug),
            "num_grads": len(sg),
        }
    out["core_attention"] = {
        name: sorted(
            {type(layer.self_attention.core_attention).__name__ for layer in m.decoder.layers}
        )
        for name, m in models.items()
    }
    out["mask_effect"] = float(
        (logits_of[("packed", "sdpa")] - logits_of[("causal", "sdpa")]).abs().max()
    )
    return out


def attention_dropout_worker(rank: int, world_size: int, seed: int = 0) -> dict[str, Any]:
    """SDPA attention dropout: reproducible from the RNG tracker's seed, active only in
    training, and drawn inside the tracker's fork (the default generator does not move)."""
    from megatron.core import tensor_parallel

    from megatron_optiml.models.opt import build_transformer_config, get_flavor
    from megatron_optiml.parallel import init_distributed

    init_distributed(seed=seed)
    arch = get_flavor("opt-debug")
    config = build_transformer_config(arch, attention_dropout=0.3)
    model = _models(arch, config, seed)["sdpa"]
    s = 32
    tokens = torch.randint(3, 1000, (1, s), generator=torch.Generator().manual_seed(seed))
    positions = torch.arange(s)[None]

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(tokens, positions, None)

    model.eval()
    eval_a, eval_b = forward(), forward()
    model.train()
    tracker = tensor_parallel.get_cuda_rng_tracker()
    states = tracker.get_states()
    default_before = torch.get_rng_state()
    train_a = forward()
    default_moved = not torch.equal(default_before, torch.get_rng_state())
    train_next = forward()
    tracker.set_states(states)
    train_again = forward()
    return {
        "eval_equal": bool(torch.equal(eval_a, eval_b)),
        "dropout_effect": float((train_a - eval_a).abs().max()),
        "replay_diff": float((train_a - train_again).abs().max()),
        "next_draw_diff": float((train_a - train_next).abs().max()),
        "default_generator_moved": default_moved,
    }
