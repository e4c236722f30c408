"""The trainer end to end on CPU/gloo: layouts, kill-and-resume, preemption, NaN policy.

Kills are simulated by ``megatron_optiml.testing.faults.exit_after_step``, an ``on_step_end``
callback (in a spawned rank, or through the ``testing.crashing_train`` launcher under torchrun)."""

import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_optiml.config import load_run_config
from megatron_optiml.testing.distributed import DistributedRunError, run_distributed

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "recipes" / "opt_debug_cpu.yaml"


@pytest.fixture(scope="module")
def bench(bench_blend):
    """The bundled OPT-IML Bench sample (session fixture in tests/conftest.py)."""
    return bench_blend


def _overrides(bench, run_dir, *overrides) -> list[str]:
    return [
        f"model.data.blend_path={bench}",
        f"exp_manager.explicit_log_dir={run_dir}",
        "trainer.max_steps=6",
        "trainer.val_check_interval=0",
        "exp_manager.checkpoint_callback_params.every_n_train_steps=3",
        "model.data.seq_length=256",
        "model.optim.sched.warmup_steps=1",
        *overrides,
    ]


def _cfg(bench, run_dir, *overrides):
    return load_run_config(RECIPE, _overrides(bench, run_dir, *overrides))


def train_worker(rank, world_size, cfg, crash_after_step):
    from megatron_optiml.testing.faults import exit_after_step
    from megatron_optiml.training.trainer import run_training

    callbacks = [exit_after_step(crash_after_step)] if crash_after_step else []
    r = run_training(cfg, on_step_end=callbacks)
    return dataclasses.asdict(r)


def _run(cfg, world=2, crash_after_step=None):
    return run_distributed(train_worker, world, cfg, crash_after_step, timeout=280)[0]


def test_kill_and_resume_gives_the_identical_loss_curve(bench, tmp_path):
    full = _run(_cfg(bench, tmp_path / "full"))
    assert sorted(full["losses"]) == list(range(1, 7))

    crashed = _cfg(bench, tmp_path / "crashed")
    with pytest.raises(DistributedRunError):
        _run(crashed, crash_after_step=5)  # dies after step 5, last ckpt at 3
    assert (
        tmp_path / "crashed/checkpoints/latest_checkpointed_iteration.txt"
    ).read_text().strip() == "3"
    resumed = _run(crashed)
    assert sorted(resumed["losses"]) == [4, 5, 6]
    for step in (4, 5, 6):
        # dropout 0.1 is on: equality needs the RNG, data position and optimizer all restored
        assert resumed["losses"][step] == pytest.approx(full["losses"][step], abs=1e-6), step
    assert resumed["consumed_samples"] == full["consumed_samples"] == 6 * 8


def convert_worker(rank, world_size, argv):
    from checkpoints_conversion.cli import main

    return main(argv)


@pytest.fixture(scope="module")
def hf_start(tmp_path_factory):
    """An opt-debug-shaped HF OPT checkpoint converted to Megatron: the same initial weights
    for every layout (Megatron's own init differs between PP layouts)."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from megatron_optiml.conversion.opt_hf import hf_config_from_arch
    from megatron_optiml.models.opt import get_flavor

    arch = get_flavor("opt-debug")
    root = tmp_path_factory.mktemp("hf_start")
    torch.manual_seed(0)
    OPTForCausalLM(
        OPTConfig(**hf_config_from_arch(arch, arch.vocab_size, torch.float32))
    ).save_pretrained(root / "hf")
    # The converter's CLI in a (warm) rank, not a fresh interpreter.
    argv = ["hf-to-megatron", str(root / "hf"), str(root / "megatron")]
    assert run_distributed(convert_worker, 1, argv, timeout=240) == [0]
    return root / "megatron"


NO_DROPOUT = ["model.hidden_dropout=0.0", "model.attention_dropout=0.0"]


@pytest.fixture(scope="module")
def dp_reference(bench, tmp_path_factory, hf_start):
    """6 steps at DP=2 without dropout from ``hf_start``: what the other layouts must match."""
    common = [*NO_DROPOUT, f"model.restore_from_path={hf_start}"]
    return _run(_cfg(bench, tmp_path_factory.mktemp("dp_reference") / "run", *common))


def test_resume_on_a_different_layout(bench, tmp_path, hf_start, dp_reference):
    """Killed at DP=2 (distributed optimizer), resumed at TP=2: the loss curve continues.

    The kill is a real torchrun launch of the ``crashing_train`` launcher (what
    benchmarks/gpu_train_check.sh runs), not a spawned rank."""
    common = [*NO_DROPOUT, f"model.restore_from_path={hf_start}"]
    run_dir = tmp_path / "run"
    crashed = subprocess.run(
        [
            *(sys.executable, "-m", "torch.distributed.run", "--standalone"),
            *("--nproc_per_node", "2", "-m", "megatron_optiml.testing.crashing_train"),
            *("--crash-after-step", "4", "--config", str(RECIPE)),
            *_overrides(bench, run_dir, *common),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=280,
    )
    assert crashed.returncode != 0, crashed.stdout[-3000:]
    assert "exitcode  : 17" in crashed.stdout, crashed.stdout[-3000:]  # the crash, not an error
    assert (run_dir / "checkpoints/latest_checkpointed_iteration.txt").read_text().strip() == "3"
    cont = _run(_cfg(bench, run_dir, *common, "model.tensor_model_parallel_size=2"))
    assert sorted(cont["losses"]) == [4, 5, 6]
    for step in (4, 5, 6):
        assert cont["losses"][step] == pytest.approx(dp_reference["losses"][step], abs=1e-4), step


def test_pipeline_and_tensor_parallel_match_data_parallel(bench, tmp_path, hf_start, dp_reference):
    common = [*NO_DROPOUT, f"model.restore_from_path={hf_start}"]
    dp = dp_reference
    pp = _run(_cfg(bench, tmp_path / "pp", *common, "model.pipeline_model_parallel_size=2"))
    tp = _run(
        _cfg(
            bench,
            tmp_path / "tp",
            *common,
            "model.tensor_model_parallel_size=2",
            "model.sequence_parallel=true",
        )
    )
    assert sorted(pp["losses"]) == sorted(tp["losses"]) == sorted(dp["losses"]) == list(range(1, 7))
    for step in range(1, 7):  # observed max |diff| 3e-6 (PP, step 4)
        assert pp["losses"][step] == pytest.approx(dp["losses"][step], abs=1e-5), step
        assert tp["losses"][step] == pytest.approx(dp["losses"][step], abs=1e-5), step


def test_validation_loss_falls_and_metrics_are_written(bench, tmp_path):
    out = _run(
        _cfg(
            bench,
            tmp_path / "run",
            "trainer.max_steps=12",
            "trainer.val_check_interval=6",
        )
    )
    val = out["val_losses"]
    assert sorted(val) == [0, 6, 12]
    assert val[12]["all"] < val[0]["all"] - 0.5  # nats; a frozen or diverging model fails
    assert {"niv2", "promptsource", "bigbench"} <= set(val[0])
    lines = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    assert len(lines) == 12 + 3
    assert list((tmp_path / "run/tensorboard").glob("events.out.tfevents.*"))


def test_nan_loss_stops_with_a_clear_log(bench, tmp_path):
    # lr=1e30 blows the weights up after the first update.
    out = _run(
        _cfg(bench, tmp_path / "run", "model.optim.lr=1e30", "model.optim.sched.warmup_steps=0")
    )
    assert out["stopped_on_nan"]
    assert not all(math.isfinite(v) for v in out["losses"].values())


def test_sigterm_saves_and_exits_with_the_requeue_code(bench, tmp_path):
    """A real torchrun launch; SIGTERM to the ranks mid-run (as Slurm preemption does)."""
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "train.py"),
        "--config",
        str(RECIPE),
        f"model.data.blend_path={bench}",
        f"exp_manager.explicit_log_dir={run_dir}",
        "trainer.max_steps=400",
        "trainer.val_check_interval=0",
        "model.data.seq_length=256",
        "exp_manager.checkpoint_callback_params.every_n_train_steps=1000",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        metrics = run_dir / "metrics.jsonl"
        import time

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and (
            not metrics.exists() or len(metrics.read_text().splitlines()) < 2
        ):
            time.sleep(0.5)
        assert metrics.exists(), "training never started"
        # Slurm signals the tasks themselves: SIGTERM to both ranks, not to the launcher.
        import psutil

        workers = psutil.Process(proc.pid).children()
        assert len(workers) == 2
        for w in workers:
            w.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    tracker = run_dir / "checkpoints/latest_checkpointed_iteration.txt"
    assert tracker.exists(), out[-3000:]
    saved = int(tracker.read_text())
    assert 2 <= saved < 400
    # Each rank saved, then exited with trainer.preemption_exit_code (torchrun reports it).
    assert "exitcode  : 3" in out, out[-3000:]
    shutil.rmtree(run_dir, ignore_errors=True)
