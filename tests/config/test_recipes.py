"""Every YAML recipe in the repo loads and validates; bad values name the field."""

import typing
from pathlib import Path

import pytest

from megatron_optiml.config import ConfigError, RunConfig, config_from_dict, load_run_config
from megatron_optiml.config.schema import ModelConfig

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "examples").rglob("recipes/*.yaml"))


def test_there_are_recipes():
    assert RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads_strictly(path):
    cfg = load_run_config(path, validate=False)
    assert isinstance(cfg, RunConfig)
    # GPU recipes validate as if on a GPU machine with Transformer Engine.
    cfg.validate(cuda_available=True, have_te=True)


def test_unknown_key_names_the_dotted_path(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model:\n  optim:\n    lrr: 1.0\n")
    with pytest.raises(ConfigError, match=r"r.yaml: unknown key model.optim.lrr"):
        load_run_config(p)


def test_overrides_and_types():
    cfg = load_run_config(
        None,
        [
            "model.data.blend_path=x.json",
            "trainer.max_steps=7",
            "model.optim.sched.warmup_steps=2",
            "model.optim.betas=[0.9,0.99]",
        ],
    )
    assert cfg.trainer.max_steps == 7 and cfg.model.optim.betas == (0.9, 0.99)
    with pytest.raises(ConfigError, match="trainer.max_steps='ten': expected an integer"):
        load_run_config(None, ["trainer.max_steps=ten"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_run_config(None, ["trainer.max_steps"])


BASE = {"model": {"data": {"blend_path": "b.json"}}}


def _with(**model):
    tree = {"trainer": {}, "model": {"data": {"blend_path": "b.json"}}}
    for k, v in model.items():
        section, _, key = k.partition("__")
        if key:
            tree[section][key] = v
        else:
            tree["model"][k] = v
    return config_from_dict(tree)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(flavor="opt-1.3b", tensor_model_parallel_size=3, trainer__devices=3),
            "tensor_model_parallel_size=3: opt-1.3b has 32 attention heads",
        ),
        (
            dict(flavor="opt-debug", pipeline_model_parallel_size=4, trainer__devices=4),
            "pipeline_model_parallel_size=4: opt-debug has 2 layers",
        ),
        (
            dict(global_batch_size=6, micro_batch_size=4),
            "global_batch_size=6: not divisible by micro_batch_size x DP = 4 x 1",
        ),
        (
            dict(tensor_model_parallel_size=2, trainer__devices=3),
            "world size 3 .* not divisible by TP x PP = 2",
        ),
        (
            dict(sequence_parallel=True),
            "sequence_parallel=True: needs TP > 1",
        ),
        (dict(flavor="opt-350m"), "model.flavor='opt-350m': opt-350m is not supported"),
        (dict(trainer__precision="fp8"), "trainer.precision='fp8': FP8 needs a GPU"),
        (dict(trainer__precision="16"), "fp16 with dynamic loss scaling is not wired"),
        (dict(hidden_dropout=1.5), "model.hidden_dropout=1.5"),
        (dict(fp8_amax_history_len=0), "model.fp8_amax_history_len=0: must be >= 1"),
    ],
)
def test_cross_field_checks_name_field_and_value(kwargs, message):
    cfg = _with(**kwargs)
    with pytest.raises(ValueError, match=message):
        cfg.validate(cuda_available=False, have_te=False)


def test_seq_length_above_positions():
    cfg = _with()
    cfg.model.data.seq_length = 4096
    with pytest.raises(ValueError, match="model.data.seq_length=4096: exceeds the model's 2048"):
        cfg.validate(cuda_available=False, have_te=False)


def test_fp8_without_te_on_a_gpu():
    cfg = _with(trainer__precision="fp8")
    with pytest.raises(ValueError, match="FP8 needs NVIDIA Transformer Engine"):
        cfg.validate(cuda_available=True, have_te=False)


def test_fp8_recipe_options():
    cfg = load_run_config(
        None,
        [
            "model.data.blend_path=x.json",
            "model.fp8_recipe=tensorwise",
            "model.fp8_amax_history_len=1024",
            "model.fp8_amax_compute_algo=max",
        ],
    )
    assert (cfg.model.fp8_recipe, cfg.model.fp8_amax_history_len) == ("tensorwise", 1024)
    assert cfg.model.fp8_amax_compute_algo == "max"
    # Megatron-Core accepts every recipe we offer (its Fp8Recipe enum), so none fails late.
    from megatron.core.enums import Fp8Recipe

    choices = typing.get_args(typing.get_type_hints(ModelConfig)["fp8_recipe"])
    assert set(choices) <= {r.value for r in Fp8Recipe}
    with pytest.raises(ConfigError, match=r"model.fp8_recipe='e4m3': expected one of \['delayed'"):
        load_run_config(None, ["model.fp8_recipe=e4m3"])
