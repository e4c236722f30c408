"""Every OPT-IML GPU recipe fits its GPU by the planner, as loaded through the typed config."""

from pathlib import Path

import pytest
import yaml

from megatron_optiml.cli.plan import main as plan_main
from megatron_optiml.config import load_run_config
from megatron_optiml.planning import GIB, ClusterSpec, PlanInput, make_plan
from megatron_optiml.planning.recipe import plan_input_from_recipe, plan_input_from_run_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "examples" / "recipes"

# recipe -> (GPU it is laid out for, (TP, PP, DP, micro batch), paper's global batch, steps)
GPU_RECIPES = {
    "optiml_30b_h100_bf16": ("h100-80gb", (4, 1, 16, 4), 256, 4000),
    "optiml_30b_h100_fp8": ("h100-80gb", (4, 1, 16, 2), 256, 4000),
    "optiml_30b_a100_bf16": ("a100-80gb", (4, 1, 16, 4), 256, 4000),
    "optiml_30b_a100_40gb_bf16": ("a100-40gb", (8, 1, 8, 2), 256, 4000),
    "optiml_175b_h100_bf16": ("h100-80gb", (8, 4, 4, 1), 128, 8000),
    "optiml_175b_h100_fp8": ("h100-80gb", (8, 4, 4, 1), 128, 8000),
    "optiml_175b_a100_bf16": ("a100-80gb", (8, 4, 4, 1), 128, 8000),
    "optiml_175b_a100_40gb_bf16": ("a100-40gb", (8, 16, 1, 1), 128, 8000),
}


def test_every_gpu_recipe_is_listed():
    assert {p.stem for p in RECIPES.glob("optiml_*.yaml")} == set(GPU_RECIPES)


@pytest.mark.parametrize("name", sorted(GPU_RECIPES))
def test_recipe_fits_and_keeps_the_paper_schedule(name):
    gpu, (tp, pp, dp, mbs), gbs, steps = GPU_RECIPES[name]
    cfg = load_run_config(RECIPES / f"{name}.yaml", validate=False)
    cfg.validate(cuda_available=True, have_te=True)
    m, t, o = cfg.model, cfg.trainer, cfg.model.optim
    # Slurm plumbing assumes one rank per GPU on 8-GPU nodes; TP stays inside a node.
    assert t.devices == 8 and t.accelerator == "gpu" and tp <= t.devices
    assert (m.tensor_model_parallel_size, m.pipeline_model_parallel_size) == (tp, pp)
    assert (cfg.data_parallel_size, m.micro_batch_size) == (dp, mbs)
    assert m.sequence_parallel and o.use_distributed_optimizer
    # The paper's schedule (§3.3): batch x 2048, steps, LR 5e-5, warmup 60, linear decay to 0.
    assert (m.global_batch_size, m.data.seq_length, t.max_steps) == (gbs, 2048, steps)
    assert (o.lr, o.sched.warmup_steps, o.sched.min_lr, o.sched.name) == (
        5e-5,
        60,
        0.0,
        "WarmupAnnealing",
    )
    assert o.betas == (0.9, 0.95) and t.gradient_clip_val == 1.0 and m.seed == 1234
    assert m.hidden_dropout == 0.1 and m.restore_from_path

    fields, cluster_fields = plan_input_from_run_config(cfg)
    plan = make_plan(PlanInput(**fields), ClusterSpec.from_gpu(gpu, **cluster_fields))
    assert plan.fits, plan.verdict()
    # Headroom for what the planner does not model (TE's FP8 activation copies, transient
    # optimizer-step buffers): at least 5% of the card.
    assert plan.peak.total / GIB < 0.95 * plan.cluster.memory_gib


@pytest.mark.parametrize("name", ["optiml_30b_h100_fp8", "optiml_175b_a100_40gb_bf16"])
def test_plan_cli_on_recipe_exits_zero(name, capsys):
    # What the sbatch's pre-flight runs.
    gpu = GPU_RECIPES[name][0]
    assert plan_main(["--recipe", str(RECIPES / f"{name}.yaml"), "--gpu", gpu]) == 0
    assert "fits:" in capsys.readouterr().out


def test_raw_dict_of_a_typed_recipe_reads_like_the_typed_config():
    path = RECIPES / "optiml_175b_h100_bf16.yaml"
    raw = plan_input_from_recipe(yaml.safe_load(path.read_text()))
    typed = plan_input_from_run_config(load_run_config(path, validate=False))
    assert raw == typed
    fields, cluster = typed
    assert fields["attention_dropout"] == 0.1 and fields["transformer_impl"] == "transformer_engine"
    assert cluster == {"num_nodes": 16, "gpus_per_node": 8}


def test_typed_defaults_reach_the_planner():
    # No optim.name in the recipe: the trainer's default (distributed optimizer) is planned.
    fields, _ = plan_input_from_recipe({"model": {"flavor": "opt-30b", "global_batch_size": 8}})
    assert fields["use_distributed_optimizer"] is True and fields["seq_length"] == 2048
    # The too-big layout the 40GB recipes avoid: 30B at TP=4 on A100 40GB does not fit.
    cfg = load_run_config(
        RECIPES / "optiml_30b_a100_40gb_bf16.yaml",
        ["model.tensor_model_parallel_size=4"],
        validate=False,
    )
    fields, cluster = plan_input_from_run_config(cfg)
    assert not make_plan(PlanInput(**fields), ClusterSpec.from_gpu("a100-40gb", **cluster)).fits
