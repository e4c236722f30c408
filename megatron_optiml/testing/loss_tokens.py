"""Loss-token output layer workload: ``OPTModel`` with the output layer on loss tokens only
against ``GPTModel``'s own path (every position) on the same weights (``opt-debug``, fp32, any
TP size)."""

from __future__ import annotations

from typing import Any

import torch


def loss_tokens_worker(rank: int, world_size: int, tp: int = 1, seed: int = 0) -> dict[str, Any]:
    """Largest |selected - full| of the masked per-token losses and of every gradient (this
    rank's shards), for a partial mask, a mask with an empty row and an all-zero mask."""
    from megatron.core import parallel_state as ps

    from megatron_optiml.conversion.sharding import Layout, load_shard_into_model, shard_state_dict
    from megatron_optiml.models.opt import build_opt_model, build_transformer_config, get_flavor
    from megatron_optiml.models.opt.init import random_canonical_state_dict
    from megatron_optiml.parallel import init_distributed

    init_distributed(tensor_model_parallel_size=tp, seed=seed)
    arch = get_flavor("opt-debug")
    config = build_transformer_config(arch, tensor_model_parallel_size=tp)
    model = build_opt_model(arch, config)
    full = random_canonical_state_dict(arch, seed=seed, std=0.2)
    layout = Layout(tp_size=tp, tp_rank=ps.get_tensor_model_parallel_rank())
    load_shard_into_model(model, shard_state_dict(full, layout, arch.num_layers))

    b, s = 2, 40
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(3, 1000, (b, s), generator=g)
    labels = torch.randint(3, 1000, (b, s), generator=g)
    positions = torch.arange(s).expand(b, s)
    partial = torch.zeros(b, s)
    partial[0, 10:17] = 1.0  # one target span in row 0, two in row 1
    partial[1, 5:9] = 1.0
    partial[1, 30:40] = 1.0
    empty_row = partial.clone()
    empty_row[1] = 0.0
    masks = {"partial": partial, "empty_row": empty_row, "all_zero": torch.zeros(b, s)}

    out: dict[str, Any] = {}
    for name, mask in masks.items():
        runs = {}
        for selected in (True, False):
            model.loss_tokens_only = selected
            model.zero_grad(set_to_none=True)
            per_token = model(tokens, positions, None, labels=labels, loss_mask=mask)
            masked = per_token * mask
            masked.sum().backward()  # the label-only loss (an all-zero mask still backprops)
            grads = {
                n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                for n, p in model.named_parameters()
            }
            runs[selected] = (tuple(per_token.shape), masked.detach(), grads)
        (shape_s, loss_s, grads_s), (shape_f, loss_f, grads_f) = runs[True], runs[False]
        out[name] = {
            "shape": [list(shape_s), list(shape_f)],
            "loss": float((loss_s - loss_f).abs().max()),
            "loss_sum": float(loss_f.sum()),
            "outside_mask": float((runs[True][1] * (1 - mask)).abs().max()),
            "grads": max(float((grads_s[n] - grads_f[n]).abs().max()) for n in grads_f),
            "grad_scale": max(float(v.abs().max()) for v in grads_f.values()),
        }
    return out
