"""optiml-plan: exit codes, recipe reading, and the layout search."""

import pytest
import yaml

from megatron_optiml.cli.plan import EXIT_DOES_NOT_FIT, EXIT_REFUSED, main
from megatron_optiml.models.opt.flavors import get_flavor
from megatron_optiml.planning import ClusterSpec, suggest_layouts
from megatron_optiml.planning.recipe import plan_input_from_recipe

ISSUE_ARGS = (
    "--flavor opt-30b --nodes 8 --gpus-per-node 8 --gpu h100-80gb --pp 1 --gbs 256 --seq 2048 "
    "--precision bf16 --distributed-optimizer --recompute selective --mfu 0.4"
).split()


def test_cli_fits_prints_table(capsys):
    assert main([*ISSUE_ARGS, "--tp", "4", "--mbs", "1"]) == 0
    out = capsys.readouterr().out
    assert "optimizer states" in out and "fits:" in out and "tokens/s" in out
    assert "sp=on" in out  # sequence parallel defaults on with tp > 1


def test_cli_does_not_fit_exits_nonzero_with_reason(capsys):
    # The issue's example (tp=2, 8 sequences per GPU): 30B weights + fp32 grads alone are
    # 84 GiB per GPU on 2-way TP without weight sharding.
    assert main([*ISSUE_ARGS, "--tp", "2", "--mbs", "8"]) == EXIT_DOES_NOT_FIT
    assert "does not fit" in capsys.readouterr().err


def test_cli_refusal_exits_nonzero_naming_field(capsys):
    assert main([*ISSUE_ARGS, "--tp", "3", "--mbs", "1"]) == EXIT_REFUSED
    assert "refused: tp=3" in capsys.readouterr().err


RECIPE = {
    "trainer": {"num_nodes": 16, "devices": 8, "precision": "bf16-mixed"},
    "model": {
        "flavor": "opt-175b",
        "tensor_model_parallel_size": 8,
        "pipeline_model_parallel_size": 4,
        "sequence_parallel": True,
        "micro_batch_size": 1,
        "global_batch_size": 128,
        "encoder_seq_length": 2048,
        "activations_checkpoint_granularity": "full",
        "optim": {"name": "distributed_fused_adam", "lr": 5e-5},
    },
}


def test_recipe_adapter_reads_nemo_keys():
    fields, cluster = plan_input_from_recipe(RECIPE)
    assert fields["arch"] == get_flavor("opt-175b")
    assert (fields["tp"], fields["pp"], fields["micro_batch_size"]) == (8, 4, 1)
    assert fields["precision"] == "bf16" and fields["recompute"] == "full"
    assert fields["use_distributed_optimizer"] is True and fields["sequence_parallel"] is True
    assert cluster == {"num_nodes": 16, "gpus_per_node": 8}
    no_ckpt = {**RECIPE, "model": {**RECIPE["model"], "activations_checkpoint_granularity": None}}
    assert plan_input_from_recipe(no_ckpt)[0]["recompute"] == "none"
    with pytest.raises(ValueError, match="trainer.precision"):
        plan_input_from_recipe({**RECIPE, "trainer": {"precision": "int8"}})


def test_cli_recipe_and_override(tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    assert main(["--recipe", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tp=8 pp=4" in out and "dp=4" in out and "recompute=full" in out
    assert main(["--recipe", str(path), "--pp", "5"]) == EXIT_REFUSED


def test_suggest_layouts_fit_and_are_sorted():
    c = ClusterSpec.from_gpu("a100-40gb", num_nodes=8)
    plans = suggest_layouts(get_flavor("opt-30b"), c, global_batch_size=256)
    assert plans and all(p.fits for p in plans)
    rates = [p.tokens_per_s for p in plans]
    assert rates == sorted(rates, reverse=True)
    assert all(p.inp.sequence_parallel == (p.inp.tp > 1) for p in plans)
    # 30B on 40 GB needs model parallelism: nothing with tp*pp < 4 fits.
    assert min(p.inp.tp * p.inp.pp for p in plans) >= 4
