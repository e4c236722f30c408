"""Read data_prep's ``blend.json`` into Megatron-Core's ``blend_per_split`` form."""

from __future__ import annotations

import json
import os
from pathlib import Path

from megatron.core.datasets.utils import Split

BLEND_FORMAT = "megatron_optiml.blend/v1"

Blend = tuple[list[str], list[float]]

# blend.json split names -> Megatron-Core's Split; "valid" is accepted as an alias.
_SPLIT_NAMES = {
    "train": Split.train,
    "validation": Split.valid,
    "valid": Split.valid,
    "test": Split.test,
}


def load_blend(path: str | os.PathLike) -> dict[str, Blend]:
    """``{split: (absolute prefixes, weights)}`` from a ``blend.json``.

    Prefixes in the file are relative to its folder. Weights are example shares (data_prep's EPS
    cap and benchmark proportions); they are handed to Megatron-Core unchanged because blending
    happens over examples, before packing.
    """
    path = Path(path)
    with open(path) as f:
        raw = json.load(f)
    if raw.get("format") != BLEND_FORMAT:
        raise ValueError(f"{path}: format must be {BLEND_FORMAT!r}, got {raw.get('format')!r}")
    splits = raw.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise ValueError(f"{path}: 'splits' must be a non-empty object")
    out: dict[str, Blend] = {}
    for name, entry in splits.items():
        if name not in _SPLIT_NAMES:
            raise ValueError(f"{path}: unknown split {name!r}; known: {sorted(_SPLIT_NAMES)}")
        prefixes, weights = entry.get("prefixes"), entry.get("weights")
        if not prefixes or weights is None or len(prefixes) != len(weights):
            raise ValueError(
                f"{path}: split {name!r} needs as many weights as prefixes, got "
                f"{len(prefixes or [])} prefixes and {len(weights or [])} weights"
            )
        if any(float(w) <= 0 for w in weights):
            raise ValueError(f"{path}: split {name!r} has a non-positive weight")
        root = path.parent
        out[name] = ([str((root / p).resolve()) for p in prefixes], [float(w) for w in weights])
    return out


def blend_per_split(blends: dict[str, Blend]) -> list[Blend | None]:
    """Megatron-Core's ``blend_per_split`` list ``[train, valid, test]`` (None where absent)."""
    result: list[Blend | None] = [None] * len(Split)
    for name, blend in blends.items():
        try:
            split = _SPLIT_NAMES[name]
        except KeyError:
            raise ValueError(f"unknown split {name!r}; known: {sorted(_SPLIT_NAMES)}") from None
        if result[split.value] is not None:
            raise ValueError(f"split {split.name} given twice")
        result[split.value] = blend
    return result
