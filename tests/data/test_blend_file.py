"""blend.json -> Megatron-Core's blend_per_split."""

from __future__ import annotations

import json

import pytest

from megatron_optiml.data import blend_per_split, load_blend


def test_prefixes_resolve_against_the_blend_folder(blend_path):
    blends = load_blend(blend_path)
    assert set(blends) == {"train", "validation", "test"}
    prefixes, weights = blends["train"]
    assert prefixes[0] == str((blend_path.parent / "indexed/train/task000").resolve())
    assert weights == pytest.approx([0.5, 0.3, 0.2])
    per_split = blend_per_split(blends)
    assert per_split[0] == blends["train"] and per_split[1] == blends["validation"]
    assert per_split[2] == blends["test"]


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"format": "other", "splits": {}}, "format"),
        ({"format": "megatron_optiml.blend/v1", "splits": {"dev": {}}}, "unknown split"),
        (
            {
                "format": "megatron_optiml.blend/v1",
                "splits": {"train": {"prefixes": ["a"], "weights": []}},
            },
            "as many weights",
        ),
        (
            {
                "format": "megatron_optiml.blend/v1",
                "splits": {"train": {"prefixes": ["a"], "weights": [0]}},
            },
            "non-positive",
        ),
    ],
)
def test_bad_blend_files_raise(tmp_path, raw, match):
    path = tmp_path / "blend.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=match):
        load_blend(path)


def test_missing_splits_are_none(blend_path):
    blends = load_blend(blend_path)
    assert blend_per_split({"train": blends["train"]})[1:] == [None, None]
