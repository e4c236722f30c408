"""Layouts that cannot run are refused naming the field; ones that do not fit say why."""

import pytest

from megatron_optiml.models.opt.flavors import get_flavor
from megatron_optiml.planning import ClusterSpec, PlanError, PlanInput, make_plan, with_changes

OPT30 = get_flavor("opt-30b")  # 48 layers, 56 heads
BASE = PlanInput(arch=OPT30, tp=8, global_batch_size=256, micro_batch_size=1)
H100x8 = ClusterSpec.from_gpu("h100-80gb", num_nodes=8, gpus_per_node=8)


@pytest.mark.parametrize(
    ("changes", "cluster", "field", "words"),
    [
        (dict(tp=3), H100x8, "tp", "num_attention_heads=56"),
        (dict(tp=4, pp=5), H100x8, "pp", "num_layers=48"),
        (dict(tp=4, pp=2, vp=5), H100x8, "vp", "pp x vp=10"),
        (dict(tp=4, vp=2), H100x8, "vp", "pp > 1"),
        (
            dict(tp=8),
            ClusterSpec.from_gpu("h100-80gb", num_nodes=2, gpus_per_node=4),
            "tp",
            "gpus_per_node=4",
        ),
        (dict(tp=8, pp=3), H100x8, "tp x pp", "world size 64"),
        (dict(global_batch_size=100), H100x8, "global_batch_size", "micro_batch_size x dp"),
        (dict(seq_length=4096), H100x8, "seq_length", "2048 learned positions"),
        (dict(tp=1, sequence_parallel=True), H100x8, "sequence_parallel", "tp > 1"),
        (
            dict(precision="fp8"),
            ClusterSpec.from_gpu("a100-80gb", num_nodes=8),
            "precision",
            "no FP8",
        ),
        (dict(precision="int4"), H100x8, "precision", "expected one of"),
        (dict(recompute="some"), H100x8, "recompute", "expected one of"),
        (
            dict(tp=4, pp=8, vp=2, global_batch_size=4),
            ClusterSpec.from_gpu("h100-80gb", num_nodes=4),
            "vp",
            "at least pp=8 micro-batches",
        ),
        (dict(mfu=1.5), H100x8, "mfu", "(0, 1]"),
    ],
)
def test_refusals_name_field_and_value(changes, cluster, field, words):
    with pytest.raises(PlanError) as err:
        make_plan(with_changes(BASE, **changes), cluster)
    assert err.value.field == field
    assert words in str(err.value)
    assert str(err.value).startswith(f"{field}=")
    assert isinstance(err.value, ValueError)


def test_does_not_fit_names_biggest_term_and_suggests_distributed_optimizer():
    inp = PlanInput(
        arch=get_flavor("opt-175b"),
        tp=8,
        global_batch_size=128,
        micro_batch_size=1,
        use_distributed_optimizer=False,
        sequence_parallel=True,
        recompute="full",
    )
    plan = make_plan(inp, ClusterSpec.from_gpu("a100-40gb", num_nodes=16))
    assert not plan.fits
    assert plan.biggest_term[0] == "optimizer states"
    verdict = plan.verdict()
    assert verdict.startswith("does not fit") and "optimizer states" in verdict
    assert "distributed optimizer" in verdict and "/16" in verdict
    assert "pipeline stages" in verdict


def test_activation_bound_plan_suggests_recompute_and_smaller_micro_batch():
    inp = PlanInput(arch=OPT30, tp=8, global_batch_size=256, micro_batch_size=8, recompute="none")
    plan = make_plan(inp, ClusterSpec.from_gpu("a100-40gb", num_nodes=8))
    assert not plan.fits and plan.biggest_term[0] == "activations"
    advice = " ".join(plan.advice())
    assert "--recompute full" in advice and "sequence parallelism" in advice
    assert "micro batch" in advice


def test_a_fitting_plan_fits():
    plan = make_plan(with_changes(BASE, tp=4, sequence_parallel=True, micro_batch_size=1), H100x8)
    assert plan.fits and plan.verdict().startswith("fits")
