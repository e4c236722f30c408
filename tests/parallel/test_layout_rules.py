"""The one layout rule set (megatron_optiml/parallel/layout.py) and the two callers that name its
fields: the run config (dotted keys) and the planner (short names) refuse the same layouts."""

import pytest

from megatron_optiml.config import load_run_config
from megatron_optiml.models.opt import get_flavor
from megatron_optiml.parallel.layout import (
    LayoutError,
    ParallelLayout,
    check_layout,
    data_parallel_size,
)
from megatron_optiml.planning import ClusterSpec, PlanError, PlanInput, make_plan

DEBUG = get_flavor("opt-debug")  # 2 layers, 4 heads, ffn 256, vocab 50272
BASE = dict(global_batch_size=8, seq_length=64, devices_per_node=4)


def _layout(**changes):
    return ParallelLayout(**{**BASE, **changes})


def test_sizes_of_a_layout():
    lay = _layout(tp=2, micro_batch_size=2, num_nodes=2)
    assert (lay.world_size, lay.model_parallel_size, lay.data_parallel_size) == (8, 2, 4)
    assert lay.num_microbatches == 1
    assert _layout(pp=2, micro_batch_size=1).num_microbatches == 4
    assert data_parallel_size(8, 2, 2) == 2
    with pytest.raises(ValueError, match="world size 6 is not divisible"):
        data_parallel_size(6, 2, 2)


# (layout changes, role at fault, words of the reason)
REFUSALS = [
    (dict(tp=0), "tp", "must be >= 1"),
    (dict(seq_length=1), "seq_length", "must be >= 2"),
    (dict(seq_length=4096), "seq_length", "2048 learned positions"),
    (dict(tp=3, devices_per_node=3), "tp", "4 attention heads"),
    (dict(tp=4, devices_per_node=2, num_nodes=2), "tp", "exceeds trainer.devices=2"),
    (dict(sequence_parallel=True), "sequence_parallel", "needs TP > 1"),
    (dict(tp=2, sequence_parallel=True, seq_length=63), "seq_length", "divisible by TP=2"),
    (dict(pp=2, vp=1), "vp", ">= 2 model chunks"),
    (dict(vp=2), "vp", "needs PP > 1"),
    (dict(pp=4), "pp", "2 layers (num_layers=2), not divisible by PP=4"),
    (dict(pp=2, vp=2), "vp", "not divisible by PP x VP=4"),
    (dict(tp=2, pp=2, devices_per_node=3), "world", "world size 3"),
    (dict(micro_batch_size=3), "global_batch_size", "micro_batch_size x DP = 3 x 4"),
]


@pytest.mark.parametrize(("changes", "role", "words"), REFUSALS)
def test_each_rule_refuses_with_its_role(changes, role, words):
    with pytest.raises(LayoutError) as err:
        check_layout(_layout(**changes), DEBUG, model="opt-debug")
    assert err.value.role == role and words in err.value.reason, err.value


def test_vocab_must_divide_by_tp():
    from megatron_optiml.models.opt.flavors import OPTArch

    odd = OPTArch(
        num_layers=2, hidden_size=64, num_attention_heads=4, ffn_hidden_size=256, vocab_size=1001
    )
    with pytest.raises(LayoutError, match="vocab_size=1001"):
        check_layout(_layout(tp=2), odd)


def test_interleaving_needs_a_multiple_of_pp_micro_batches():
    four_layers = get_flavor("opt-125m")  # 12 layers
    # 2 ranks: pp=2, dp=1, 3 micro-batches (not a multiple of pp=2): Megatron-Core refuses it.
    lay = ParallelLayout(pp=2, vp=2, global_batch_size=3, seq_length=64, devices_per_node=2)
    with pytest.raises(LayoutError, match="multiple of PP=2 micro-batches") as err:
        check_layout(lay, four_layers)
    assert err.value.role == "vp"
    check_layout(
        ParallelLayout(pp=2, vp=2, global_batch_size=4, seq_length=64, devices_per_node=2),
        four_layers,
    )


def test_a_valid_layout_passes():
    check_layout(_layout(tp=2, sequence_parallel=True, micro_batch_size=2), DEBUG)


def _config(**model):
    """A run config on 4 devices with ``model.<key>=value`` (``data__x`` = ``model.data.x``)."""
    overrides = ["trainer.devices=4", "model.data.blend_path=b.json"]
    for key, value in model.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        overrides.append(f"model.{key.replace('__', '.')}={text}")
    return load_run_config(None, overrides, validate=False)


# The same layouts through the run config and the planner: both refuse, each in its names.
SAME = [
    (dict(tensor_model_parallel_size=3), dict(tp=3), "model.tensor_model_parallel_size=3", "tp=3"),
    (
        dict(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=1),
        dict(pp=2, vp=1),
        "model.virtual_pipeline_model_parallel_size=1",
        "vp=1",
    ),
    (
        dict(sequence_parallel=True),
        dict(sequence_parallel=True),
        "model.sequence_parallel=True",
        "sequence_parallel=True",
    ),
    (
        dict(tensor_model_parallel_size=2, sequence_parallel=True, data__seq_length=63),
        dict(tp=2, sequence_parallel=True, seq_length=63),
        "model.data.seq_length=63",
        "seq_length=63",
    ),
    (
        dict(micro_batch_size=3),
        dict(micro_batch_size=3),
        "model.global_batch_size=8",
        "global_batch_size=8",
    ),
    (
        dict(data__seq_length=4096),
        dict(seq_length=4096),
        "model.data.seq_length=4096",
        "seq_length=4096",
    ),
]


@pytest.mark.parametrize(("config", "plan", "config_prefix", "plan_prefix"), SAME)
def test_run_config_and_planner_refuse_the_same_layouts(config, plan, config_prefix, plan_prefix):
    cfg = _config(**config)
    with pytest.raises(ValueError) as cfg_err:
        cfg.validate(cuda_available=False, have_te=False)
    assert str(cfg_err.value).startswith(config_prefix + ":"), cfg_err.value
    fields = dict(global_batch_size=8, seq_length=64, transformer_impl="local")
    inp = PlanInput(arch=DEBUG, extra={"flavor": "opt-debug"}, **{**fields, **plan})
    with pytest.raises(PlanError) as plan_err:
        make_plan(inp, ClusterSpec.from_gpu("h100-80gb", num_nodes=1, gpus_per_node=4))
    assert str(plan_err.value).startswith(plan_prefix + ":"), plan_err.value
    # One rule set: the reasons differ only in how the sizes are labelled.
    assert cfg_err.value.args[0].split(": ", 1)[1].lower() == plan_err.value.reason.lower()


def test_run_config_and_planner_derive_the_same_dp_and_micro_batches():
    cfg = _config(tensor_model_parallel_size=2, micro_batch_size=2, global_batch_size=16)
    cfg.validate(cuda_available=False, have_te=False)
    inp = PlanInput(
        arch=DEBUG,
        tp=2,
        micro_batch_size=2,
        global_batch_size=16,
        seq_length=64,
        transformer_impl="local",
    )
    plan = make_plan(inp, ClusterSpec.from_gpu("h100-80gb", num_nodes=1, gpus_per_node=4))
    assert (cfg.data_parallel_size, cfg.num_microbatches) == (plan.dp, plan.num_microbatches)
    assert (plan.dp, plan.num_microbatches) == (2, 4)
