"""One precision vocabulary: every accepted spelling means the same canonical precision to the run
config and the planner, and an unknown one is refused with the same reason by both."""

import pytest
import yaml

from megatron_optiml.config import ConfigError, TrainerConfig, load_run_config
from megatron_optiml.config.precision import PRECISIONS, REASON, SPELLINGS, canonical_precision
from megatron_optiml.models.opt import get_flavor
from megatron_optiml.planning import ClusterSpec, PlanError, PlanInput, make_plan
from megatron_optiml.planning.recipe import plan_input_from_run_config, precision_from_recipe

BLEND = "model.data.blend_path=b.json"
# YAML reads `precision: 32` as an integer; case does not matter.
SPELLED = [*SPELLINGS, 32, 16, "BF16-Mixed"]


def _canonical(spelling) -> str:
    return SPELLINGS[str(spelling).lower()]


def test_table_maps_onto_the_canonical_names():
    assert set(SPELLINGS.values()) == set(PRECISIONS)
    assert all(SPELLINGS[name] == name for name in PRECISIONS)


@pytest.mark.parametrize("spelling", SPELLED, ids=str)
def test_each_spelling_means_the_same_to_run_config_and_planner(spelling, tmp_path):
    want = _canonical(spelling)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"trainer:\n  precision: {spelling}\nmodel:\n  data:\n    blend_path: b.json\n"
    )
    for cfg in (
        load_run_config(recipe, validate=False),
        load_run_config(None, [BLEND, f"trainer.precision={spelling}"], validate=False),
    ):
        assert cfg.trainer.canonical_precision == want
        assert plan_input_from_run_config(cfg)[0]["precision"] == want
        assert cfg.trainer.bf16 == (want in ("bf16", "fp8")) and cfg.trainer.fp8 == (want == "fp8")
    assert TrainerConfig(precision=spelling).canonical_precision == want
    assert precision_from_recipe({"trainer": {"precision": spelling}}) == want
    assert (
        PlanInput(arch=get_flavor("opt-125m"), global_batch_size=8, precision=spelling).precision
        == want
    )


@pytest.mark.parametrize("spelling", ["int8", "bf16-true", "16-true", "64", True, None, 32.0])
def test_unknown_spelling_refused_with_the_same_reason_everywhere(spelling):
    value = repr(spelling)
    text = "null" if spelling is None else str(spelling)
    with pytest.raises(ConfigError) as loaded:
        load_run_config(None, [BLEND, f"trainer.precision={text}"])
    # The loader names the value as YAML read it (the override 64 is an integer).
    assert str(loaded.value) == f"<overrides>: trainer.precision={yaml.safe_load(text)!r}: {REASON}"
    with pytest.raises(ValueError) as validated:
        TrainerConfig(precision=spelling).validate()
    with pytest.raises(ValueError) as planned:
        precision_from_recipe({"trainer": {"precision": spelling}})
    assert str(validated.value) == str(planned.value) == f"trainer.precision={value}: {REASON}"
    with pytest.raises(PlanError) as refused:
        make_plan(
            PlanInput(arch=get_flavor("opt-125m"), global_batch_size=8, precision=spelling),
            ClusterSpec.from_gpu("h100-80gb", num_nodes=1, gpus_per_node=8),
        )
    assert (refused.value.field, refused.value.reason) == ("precision", REASON)
    with pytest.raises(ValueError, match="expected one of 32, 32-true, fp32, bf16, bf16-mixed"):
        canonical_precision(spelling)
