"""Read data_prep's ``blend.json`` into Megatron-Core's ``blend_per_split`` form."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
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


def seq_length_warning(
    path: str | os.PathLike, seq_length: int, splits: Sequence[str] = ("train",)
) -> str | None:
    """Why ``model.data.seq_length`` would cut examples of ``splits`` of the blend at ``path``,
    or None when it would not.

    The packed dataset cuts an example longer than ``seq_length`` from the left (the start of its
    prompt is lost; see data/examples.py), so ``seq_length`` should be at least the longest
    example data_prep wrote: each split's ``longest_example`` in blend.json, else its
    ``max_seq_length`` (render.max_seq_length). A blend written before data_prep recorded them
    is not checked. A warning, not an error: training shorter than the data is a choice (the
    CPU demo trains 256-token sequences on the bundled sample, rendered at 2048).
    """
    path = Path(path)
    with open(path) as f:
        raw = json.load(f)
    cap = raw.get("max_seq_length")
    over = {}
    for split in splits:
        entry = raw.get("splits", {}).get(split)
        if not isinstance(entry, dict):
            continue  # no such split: loading it fails with its own message
        longest = entry.get("longest_example", cap)
        if longest is not None and longest > seq_length:
            over[split] = longest
    if not over:
        return None
    facts = ", ".join(f"{split}: {n} tokens" for split, n in over.items())
    if cap is not None:
        facts += f"; data_prep's render.max_seq_length={cap}"
    return (
        f"model.data.seq_length={seq_length} is below the longest example in {path} "
        f"({facts}): the packed dataset cuts longer examples from the left, losing "
        f"the start of their prompt. Set model.data.seq_length >= {max(over.values())}, or "
        f"rebuild the data with render.max_seq_length <= {seq_length} (data_prep then truncates "
        "them itself and counts them in summary.md)"
    )


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
