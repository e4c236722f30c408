"""The CLI: every subcommand has --help; a refused model exits 2 with the reason."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from transformers import OPTConfig, OPTForCausalLM

from checkpoints_conversion.cli import main

COMMANDS = ["hf-to-megatron", "megatron-to-hf", "metaseq-to-megatron", "metaseq-to-hf"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage" in capsys.readouterr().out


def test_refused_config_exits_with_reason(tmp_path, capsys):
    cfg = OPTConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=1,
        ffn_dim=64,
        num_attention_heads=4,
        max_position_embeddings=16,
        word_embed_proj_dim=32,
        activation_function="gelu",
    )
    OPTForCausalLM(cfg).save_pretrained(tmp_path / "hf")
    assert (
        json.loads((tmp_path / "hf" / "config.json").read_text())["activation_function"] == "gelu"
    )
    assert main(["hf-to-megatron", str(tmp_path / "hf"), str(tmp_path / "out")]) == 2
    assert "activation_function" in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "checkpoints_conversion", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "hf-to-megatron" in out.stdout
