"""optiml-evaluate on broken model folders: one line naming the file or tensor, exit 1, and no
(empty) output folder. The second --model is the broken one, so it must be caught up front,
before the first is evaluated."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from megatron_optiml.cli.evaluate import main
from megatron_optiml.testing.faults import truncate_file


def _evaluate(good, broken, bench_dir, out, caplog) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO):
        argv = ["--model", str(good), "--model", str(broken), "--bench", str(bench_dir)]
        argv += ["--out", str(out), "--shots", "0", "--limit", "1", "--no-progress"]
        assert main(argv) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert not out.exists()
    return errors[0]


@pytest.fixture
def broken(model_dirs, tmp_path):
    d = tmp_path / "broken"
    shutil.copytree(model_dirs[1], d)
    return d


def test_missing_config_json_is_named(model_dirs, broken, bench_dir, tmp_path, caplog):
    (broken / "config.json").unlink()
    err = _evaluate(model_dirs[0], broken, bench_dir, tmp_path / "eval", caplog)
    assert f"{broken / 'config.json'}: missing" in err


def test_truncated_safetensors_is_named(model_dirs, broken, bench_dir, tmp_path, caplog):
    truncate_file(broken / "model.safetensors")
    err = _evaluate(model_dirs[0], broken, bench_dir, tmp_path / "eval", caplog)
    assert f"{broken / 'model.safetensors'}: truncated safetensors file" in err


def test_tensor_contradicting_config_is_named(model_dirs, broken, bench_dir, tmp_path, caplog):
    tensors = load_file(broken / "model.safetensors")
    name = "model.decoder.layers.0.fc1.weight"
    rows, cols = tensors[name].shape
    tensors[name] = torch.zeros(rows // 2, cols)
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((broken / "config.json").read_text())
    assert config["ffn_dim"] == rows  # the metadata still claims the right shape
    err = _evaluate(model_dirs[0], broken, bench_dir, tmp_path / "eval", caplog)
    assert f"tensor '{name}' has shape {(rows // 2, cols)}" in err
    assert f"config.json implies {(rows, cols)}" in err
