"""model.data.seq_length against the data: a blend whose examples are longer than the packed
sequence is flagged naming both fields and the files (the packed dataset would cut them from
the left); a blend written before data_prep recorded the lengths is not checked."""

from __future__ import annotations

import json

import pytest

from megatron_optiml.cli.train import main
from megatron_optiml.data.blend import seq_length_warning


def _blend(tmp_path, *, lengths: bool = True):
    train = {"prefixes": ["indexed/train/a"], "weights": [1.0], "num_examples": [3]}
    valid = {"prefixes": ["indexed/validation/a"], "weights": [1.0], "num_examples": [1]}
    raw = {"format": "megatron_optiml.blend/v1", "splits": {"train": train, "validation": valid}}
    if lengths:
        train["longest_example"], valid["longest_example"] = 900, 300
        raw["max_seq_length"] = 2048
    path = tmp_path / "blend.json"
    path.write_text(json.dumps(raw))
    return path


def test_seq_length_below_the_longest_example_is_flagged(tmp_path):
    path = _blend(tmp_path)
    msg = seq_length_warning(path, 512, ["train", "validation"])
    assert msg is not None
    assert msg.startswith(f"model.data.seq_length=512 is below the longest example in {path} ")
    assert "(train: 900 tokens; data_prep's render.max_seq_length=2048)" in msg
    assert "cuts longer examples from the left" in msg and "model.data.seq_length >= 900" in msg
    assert "validation" not in msg.split("(")[1]  # 300 tokens fit in 512
    assert "validation: 300 tokens" in seq_length_warning(path, 256, ["train", "validation"])


def test_seq_length_covering_the_data_or_an_old_blend_is_not_flagged(tmp_path):
    # The longest example fits: seq_length below render.max_seq_length cuts nothing.
    assert seq_length_warning(_blend(tmp_path), 900, ["train", "validation"]) is None
    assert seq_length_warning(_blend(tmp_path), 512, ["validation", "test"]) is None
    assert seq_length_warning(_blend(tmp_path, lengths=False), 8, ["train"]) is None


def test_only_max_seq_length_recorded_compares_with_it(tmp_path):
    path = _blend(tmp_path)
    raw = json.loads(path.read_text())
    del raw["splits"]["train"]["longest_example"]
    path.write_text(json.dumps(raw))
    assert "train: 2048 tokens" in seq_length_warning(path, 1024, ["train"])


@pytest.mark.parametrize("seq_length, warned", [(256, True), (2048, False)])
def test_validate_only_warns_naming_recipe_and_blend(
    tmp_path, capsys, monkeypatch, seq_length, warned
):
    for key in ("MASTER_PORT", "SLURM_JOB_ID", "SLURM_PROCID", "RANK"):
        monkeypatch.delenv(key, raising=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("trainer:\n  accelerator: cpu\n  precision: '32'\n")
    blend = _blend(tmp_path)
    rc = main(
        [
            "--config",
            str(recipe),
            "--validate-only",
            f"model.data.blend_path={blend}",
            f"model.data.seq_length={seq_length}",
        ]
    )
    assert rc == 0
    err = capsys.readouterr().err
    if warned:
        assert f"optiml-train: warning: {recipe}: model.data.seq_length=256 is below" in err
        assert str(blend) in err and "render.max_seq_length=2048" in err
    else:
        assert "warning" not in err
