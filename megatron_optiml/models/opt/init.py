"""Deterministic canonical OPT weights from a seed, independent of any parallel layout."""

from __future__ import annotations

import torch

from megatron_optiml.models.opt.flavors import OPTArch
from megatron_optiml.models.opt.params import canonical_shapes, param


def random_canonical_state_dict(
    arch: OPTArch, seed: int = 0, std: float = 0.02
) -> dict[str, torch.Tensor]:
    """Random weights (normal(init_mean, std): LayerNorm weights near 1, see ``params.py``) from
    one CPU generator, so every rank of every layout can build the same model without
    communication."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in canonical_shapes(arch).items():
        t = torch.randn(shape, generator=g) * std
        mean = param(name)[0].init_mean
        if mean:
            t = t + mean
        out[name] = t
    return out
