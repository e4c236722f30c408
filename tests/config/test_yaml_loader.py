"""One strict loader for the run recipe and data_prep's bench config: the same messages (file,
dotted key, value, reason; "did you mean" for an unknown key) from both."""

import re

import pytest

from data_prep.config import load_config
from megatron_optiml.config import ConfigError, load_run_config
from megatron_optiml.config.yaml_loader import build_typed, load_typed

SOURCE = "sources:\n  - {type: niv2, path: ., benchmark: niv2}\n"


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_unknown_key_same_message_from_both_configs(tmp_path):
    run = _write(tmp_path, "run.yaml", "model:\n  optim:\n    lrr: 1.0\n")
    bench = _write(tmp_path, "bench.yaml", SOURCE + "render:\n  max_seq_lenght: 512\n")
    with pytest.raises(ConfigError) as run_err:
        load_run_config(run)
    with pytest.raises(ConfigError) as bench_err:
        load_config(bench)
    shape = r"^{}: unknown key {}\.{}; did you mean {}\.{}\? \(known under {}: .*\b{}\b.*\)$"
    assert re.match(
        shape.format(
            re.escape(str(run)), "model.optim", "lrr", "model.optim", "lr", "model.optim", "lr"
        ),
        str(run_err.value),
    )
    assert re.match(
        shape.format(
            re.escape(str(bench)),
            "render",
            "max_seq_lenght",
            "render",
            "max_seq_length",
            "render",
            "max_seq_length",
        ),
        str(bench_err.value),
    )


def test_unknown_key_without_a_near_one_lists_the_known_keys(tmp_path):
    run = _write(tmp_path, "run.yaml", "zzz: 1\n")
    with pytest.raises(
        ConfigError, match=r"run.yaml: unknown key zzz \(known under the top level: "
    ):
        load_run_config(run)


def test_wrong_type_names_file_key_value_and_expected_type(tmp_path):
    run = _write(tmp_path, "run.yaml", "trainer:\n  max_steps: ten\n")
    bench = _write(tmp_path, "bench.yaml", SOURCE + "tokenize:\n  workers: two\n")
    with pytest.raises(
        ConfigError, match=r"^.*run.yaml: trainer.max_steps='ten': expected an integer$"
    ):
        load_run_config(run)
    with pytest.raises(
        ConfigError, match=r"^.*bench.yaml: tokenize.workers='two': expected an integer$"
    ):
        load_config(bench)
    # Strict where OmegaConf would convert: 1 is not true, 3 is not '3'.
    with pytest.raises(ConfigError, match=r"model.sequence_parallel=1: expected true or false"):
        load_run_config(None, ["model.sequence_parallel=1"])
    bench = _write(tmp_path, "b2.yaml", SOURCE.replace("niv2}", "niv2, task_field: 3}"))
    with pytest.raises(ConfigError, match=r"sources\[0\].task_field=3: expected a string"):
        load_config(bench)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    run = _write(tmp_path, "run.yaml", "trainer:\n  max_steps: 10\n  devices: [1\n")
    bench = _write(tmp_path, "bench.yaml", SOURCE + "seed: : 3\n")
    with pytest.raises(ConfigError, match=r"run.yaml:\d+:\d+: not valid YAML: "):
        load_run_config(run)
    with pytest.raises(ConfigError, match=r"bench.yaml:3:\d+: not valid YAML: "):
        load_config(bench)
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read: "):
        load_config(tmp_path / "missing.yaml")
    top = _write(tmp_path, "list.yaml", "- 1\n")
    with pytest.raises(
        ConfigError, match=r"list.yaml: expected a mapping at the top level, got a list"
    ):
        load_run_config(top)


def test_overrides_in_both_configs(tmp_path):
    bench = _write(tmp_path, "bench.yaml", SOURCE)
    cfg = load_config(bench, ["tokenize.workers=3", "render.max_seq_length=512"])
    assert (cfg.tokenize.workers, cfg.render.max_seq_length) == (3, 512)
    # A string field takes an override's text as written (YAML would read 2024 as a number).
    run = load_run_config(None, ["exp_manager.name=2024", "model.data.blend_path=b.json"])
    assert run.exp_manager.name == "2024"
    with pytest.raises(ConfigError, match=r"override 'trainer.max_steps': expected key=value"):
        load_config(bench, ["trainer.max_steps"])
    with pytest.raises(ConfigError, match=r"override 'seed.x=1': seed is not a section"):
        load_config(_write(tmp_path, "b2.yaml", SOURCE + "seed: 7\n"), ["seed.x=1"])
    with pytest.raises(ConfigError, match=r"bench.yaml: seed=\{'x': 1\}: expected an integer"):
        load_config(bench, ["seed.x=1"])


def test_missing_required_key_and_validation_name_the_file(tmp_path):
    bench = _write(tmp_path, "bench.yaml", "seed: 1\n")
    with pytest.raises(ConfigError, match=r"bench.yaml: missing key sources \(required\)"):
        load_config(bench)
    bench = _write(tmp_path, "b2.yaml", SOURCE + "blend:\n  eps_cap: 0\n")
    with pytest.raises(ConfigError, match=r"b2.yaml: blend.eps_cap=0 must be >= 1"):
        load_config(bench)


def test_one_converter_serves_both():
    """data_prep's config module has no converter of its own."""
    import data_prep.config as bench_config
    import megatron_optiml.config.load as run_load

    for module in (bench_config, run_load):
        assert not hasattr(module, "_convert") and not hasattr(module, "_build")
    assert bench_config.load_typed is load_typed and run_load.build_typed is build_typed
