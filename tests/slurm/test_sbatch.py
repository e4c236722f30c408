"""The GPU launcher examples/slurm/optiml.sbatch, unchanged, on a real single-node Slurm with
the CPU opt-debug recipe (opt_debug_slurm_cpu.yaml) and 2 gloo ranks: a run to completion, a preemption that requeues and
resumes, and a pre-flight refusal.

Only sbatch options are overridden on the command line (2 tasks, no GPUs); the script, its
srun launch, signal trap and requeue are what a GPU cluster runs.
"""

from __future__ import annotations

import json
import math
import re
import socket
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "examples" / "slurm" / "optiml.sbatch"
RECIPE = ROOT / "examples" / "recipes" / "opt_debug_slurm_cpu.yaml"
# What a CPU node can give instead of the script's 8 tasks x 8 GPUs; --time leaves room for
# the script's --signal=B:USR1@300 warning to come after the test is over.
CPU_ALLOCATION = ("--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", "--time=20")
# Each test's own deadline stays below its pytest timeout, so a slow run fails through the
# cluster teardown instead of pytest-timeout killing the session.
JOB_TIMEOUT = 230


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _submit(slurm, tmp_path: Path, name: str, blend: Path, *overrides: str, env=None) -> int:
    (tmp_path / "logs").mkdir(exist_ok=True)  # Slurm does not create the log folder
    return slurm.sbatch(
        f"--job-name={name}",
        *CPU_ALLOCATION,
        str(SBATCH),
        str(RECIPE),
        f"model.data.blend_path={blend}",
        *overrides,
        cwd=tmp_path,
        env={
            "OPTIML_PYTHON": sys.executable,
            "OPTIML_RUNS_ROOT": str(tmp_path / "runs"),
            "MASTER_PORT": str(_free_port()),
            "OMP_NUM_THREADS": "1",
            "PYTHONWARNINGS": "ignore",
            **(env or {}),
        },
    )


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line being written right now
    return records


def _job_log(tmp_path: Path, name: str, job_id: int) -> str:
    path = tmp_path / "logs" / f"{name}_{job_id}.out"
    return path.read_text() if path.exists() else "<no job log>"


def _check_done(slurm, tmp_path, name, job_id, deadline: float) -> dict:
    try:
        info = slurm.wait_for(
            job_id,
            {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"},
            max(1.0, deadline - time.monotonic()),
        )
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{_job_log(tmp_path, name, job_id)[-4000:]}") from None
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", (
        f"{info}\n{_job_log(tmp_path, name, job_id)[-4000:]}\n{slurm.logs()}"
    )
    return info


@pytest.mark.timeout(290)
def test_sbatch_trains_and_checkpoints(slurm, bench_blend, tmp_path):
    name = "cpu_run"
    deadline = time.monotonic() + JOB_TIMEOUT
    job = _submit(
        slurm,
        tmp_path,
        name,
        bench_blend,
        "trainer.max_steps=6",
        "exp_manager.checkpoint_callback_params.every_n_train_steps=3",
        # Exercise the memory pre-flight too (opt-debug fits any GPU).
        env={"OPTIML_GPU": "h100-80gb"},
    )
    info = _check_done(slurm, tmp_path, name, job, deadline)
    assert info["Restarts"] == "0"

    run_dir = tmp_path / "runs" / name  # per job name, from OPTIML_RUNS_ROOT
    steps = [r for r in _metrics(run_dir) if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in steps)
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "latest_checkpointed_iteration.txt").read_text().strip() == "6"
    assert (ckpts / "iter_0000006").is_dir() and (ckpts / "iter_0000003").is_dir()

    log = _job_log(tmp_path, name, job)
    assert "OK (world size 2, DP 2)" in log and "srun exited with 0" in log
    job_dir = tmp_path / "logs" / f"{name}_{job}"  # the per-job folder
    assert "fits:" in (job_dir / "plan.txt").read_text()
    assert "start #0" in (job_dir / "launches.txt").read_text()


@pytest.mark.timeout(290)
def test_preemption_signal_requeues_and_resumes(slurm, bench_blend, tmp_path):
    name = "cpu_preempt"
    max_steps = 12
    deadline = time.monotonic() + JOB_TIMEOUT
    job = _submit(
        slurm,
        tmp_path,
        name,
        bench_blend,
        f"trainer.max_steps={max_steps}",
        # No periodic checkpoint before the end: the resume must come from the preemption save.
        "exp_manager.checkpoint_callback_params.every_n_train_steps=1000",
    )
    run_dir = tmp_path / "runs" / name
    while len(_metrics(run_dir)) < 2:
        assert time.monotonic() < deadline, _job_log(tmp_path, name, job)[-4000:]
        assert slurm.job(job).get("JobState") in ("PENDING", "RUNNING"), slurm.job(job)
        time.sleep(0.2)
    # What --signal=B:USR1@300 delivers before a time limit: USR1 to the batch shell only. Its
    # trap forwards it to the ranks, which checkpoint and exit 3; the script requeues the job.
    slurm.run("scancel", "--signal=USR1", "--batch", str(job))

    info = _check_done(slurm, tmp_path, name, job, deadline)
    log = _job_log(tmp_path, name, job)
    assert info["Restarts"] == "1", log[-4000:]
    # --open-mode=append: the first run's lines survive the restart.
    assert "start #0" in log and "start #1" in log and "caught SIGUSR1" in log
    assert "srun exited with 3" in log and f"requeued job {job}" in log
    resumed = re.search(r"resumed from \S+ at iteration (\d+)", log)
    assert resumed, log[-4000:]
    saved_at = int(resumed.group(1))
    assert 2 <= saved_at < max_steps

    # One appended loss log: steps 1..saved_at from the first run, then saved_at+1..max_steps
    # after the resume (no restart from step 1, no repeated step).
    steps = [r["step"] for r in _metrics(run_dir) if "loss" in r]
    assert steps == list(range(1, max_steps + 1)), steps
    ckpts = run_dir / "checkpoints"
    assert (ckpts / "latest_checkpointed_iteration.txt").read_text().strip() == str(max_steps)
    assert (ckpts / f"iter_{saved_at:07d}").is_dir()
    launches = (tmp_path / "logs" / f"{name}_{job}" / "launches.txt").read_text()
    assert "requeued after exit 3 (signal USR1)" in launches


@pytest.mark.timeout(120)
def test_preflight_refuses_a_mismatched_allocation(slurm, bench_blend, tmp_path):
    # The recipe wants 2 ranks; a 1-task allocation fails in the pre-flight, before srun.
    name = "cpu_mismatch"
    (tmp_path / "logs").mkdir()
    job = slurm.sbatch(
        f"--job-name={name}",
        "--ntasks-per-node=1",
        *CPU_ALLOCATION[1:],
        str(SBATCH),
        str(RECIPE),
        f"model.data.blend_path={bench_blend}",
        cwd=tmp_path,
        env={"OPTIML_PYTHON": sys.executable, "OPTIML_RUNS_ROOT": str(tmp_path / "runs")},
    )
    info = slurm.wait_for(job, {"COMPLETED", "FAILED", "CANCELLED"}, 100)
    log = _job_log(tmp_path, name, job)
    assert info["JobState"] == "FAILED" and info["Restarts"] == "0", log
    assert "recipe world size 2" in log and "this job has 1 tasks" in log
    assert "srun exited" not in log and not (tmp_path / "runs" / name).exists()


@pytest.mark.timeout(260)
def test_scancel_checkpoints_and_stays_cancelled(slurm, bench_blend, tmp_path):
    # scancel sends TERM to the batch shell and the ranks: the ranks still checkpoint and exit
    # 3, but the script must not requeue what the user cancelled.
    name = "cpu_cancel"
    job = _submit(
        slurm,
        tmp_path,
        name,
        bench_blend,
        "trainer.max_steps=200",
        "exp_manager.checkpoint_callback_params.every_n_train_steps=1000",
    )
    run_dir = tmp_path / "runs" / name
    deadline = time.monotonic() + 150
    while len(_metrics(run_dir)) < 1:
        assert time.monotonic() < deadline, _job_log(tmp_path, name, job)[-4000:]
        time.sleep(0.2)
    slurm.run("scancel", str(job))
    # Its own deadline: a slow start on a loaded machine must not eat the time to stop.
    deadline = time.monotonic() + 60
    while "] exit " not in _job_log(tmp_path, name, job):
        assert time.monotonic() < deadline, _job_log(tmp_path, name, job)[-4000:]
        time.sleep(0.3)
    time.sleep(3)  # a requeue, had the script asked for one, shows by now
    info = slurm.job(job)
    log = _job_log(tmp_path, name, job)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", (info, log[-4000:])
    assert "caught SIGTERM" in log and "not requeuing" in log and "requeued job" not in log
    tracker = run_dir / "checkpoints" / "latest_checkpointed_iteration.txt"
    assert int(tracker.read_text()) >= 1  # the TERM checkpoint
