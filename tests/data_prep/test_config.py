from pathlib import Path

import pytest
import yaml

from data_prep.config import config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "examples" / "data_prep").glob("*config*.yaml")))
def test_every_example_config_loads(path):
    cfg = load_config(path)
    assert cfg.sources and all(Path(s.path).exists() for s in cfg.sources)
    assert cfg.task_map is None or Path(cfg.task_map).exists()


def test_task_map_yaml_parses():
    data = yaml.safe_load((REPO / "examples/data_prep/task_map.yaml").read_text())
    assert set(data) == {"categories", "tasks"}


def test_unknown_keys_and_bad_values_name_the_field():
    base = {"sources": [{"type": "niv2", "path": ".", "benchmark": "niv2"}]}
    with pytest.raises(ValueError, match=r"unknown key splits\.held_out"):
        config_from_dict({**base, "splits": {"held_out": []}})
    with pytest.raises(ValueError, match=r"blend.eps_cap=0"):
        config_from_dict({**base, "blend": {"eps_cap": 0}})
    with pytest.raises(ValueError, match=r"tokenize\.workers='two': expected an integer"):
        config_from_dict({**base, "tokenize": {"workers": "two"}})
    with pytest.raises(ValueError, match=r"sources\[\].type='csv'"):
        config_from_dict({"sources": [{"type": "csv", "path": ".", "benchmark": "x"}]})


def test_template_sampling_default_and_bad_value():
    base = {"type": "promptsource", "path": ".", "benchmark": "promptsource"}
    cfg = config_from_dict({"sources": [base]})
    assert cfg.sources[0].template_sampling == "paper"  # paper §4.1: N per task
    cfg = config_from_dict({"sources": [{**base, "template_sampling": "all"}]})
    assert cfg.sources[0].template_sampling == "all"
    with pytest.raises(ValueError, match=r"sources\[\]\.template_sampling='some' is not one of"):
        config_from_dict({"sources": [{**base, "template_sampling": "some"}]})
    with pytest.raises(ValueError, match=r"sources\[0\]\.template_sampling=3: expected a string"):
        config_from_dict({"sources": [{**base, "template_sampling": 3}]})
