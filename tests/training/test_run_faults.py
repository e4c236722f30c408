"""Real launches on real faults: a full disk during a checkpoint save (small tmpfs), a killed
torchrun launcher (its ranks must die with it), a relaunch into a live run's folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from megatron_optiml.testing.distributed import free_port
from megatron_optiml.testing.faults import small_disk

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "recipes" / "opt_debug_cpu.yaml"


def _train_args(bench, run_dir, *overrides) -> list[str]:
    return [
        "--config",
        str(RECIPE),
        f"model.data.blend_path={bench}",
        f"exp_manager.explicit_log_dir={run_dir}",
        "trainer.val_check_interval=0",
        "model.data.seq_length=256",
        "model.optim.sched.warmup_steps=1",
        *overrides,
    ]


def _torchrun(*extra) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_full_disk_at_a_checkpoint_keeps_the_previous_one(bench_blend, tmp_path):
    # One opt-debug checkpoint (model + Adam states) is ~54 MB: room for one, not two.
    with small_disk(tmp_path / "disk", "80m") as disk:
        run_dir = disk / "run"
        logs = tmp_path / "logs"
        cmd = _torchrun("--nproc_per_node", "2", "--log-dir", str(logs), "--redirects", "3")
        cmd += [str(ROOT / "train.py")]
        cmd += _train_args(
            bench_blend,
            run_dir,
            "trainer.max_steps=2",
            "exp_manager.checkpoint_callback_params.every_n_train_steps=1",
        )
        proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
        assert proc.returncode != 0, proc.stderr[-3000:]
        ckpts = run_dir / "checkpoints"
        assert (ckpts / "latest_checkpointed_iteration.txt").read_text().strip() == "1"
        assert (ckpts / "iter_0000001" / "optiml_meta.json").exists()
        assert not (ckpts / "iter_0000002").exists()  # the partial save is gone
        rank_logs = sorted(logs.rglob("stderr.log"))
        assert len(rank_logs) == 2
        for log in rank_logs:
            text = log.read_text()
            assert "Traceback" not in text, text[-3000:]
            full = [line for line in text.splitlines() if "no space left on device" in line]
            assert len(full) == 1, text[-3000:]
            assert f"{ckpts / 'iter_0000002'}" in full[0]


def _gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return alive


def test_ranks_die_with_torchrun_and_a_live_run_folder_is_refused(bench_blend, tmp_path):
    run_dir = tmp_path / "run"
    cmd = _torchrun("--nproc_per_node", "2", str(ROOT / "train.py"))
    cmd += _train_args(
        bench_blend,
        run_dir,
        "trainer.max_steps=400",
        "exp_manager.checkpoint_callback_params.every_n_train_steps=1000",
    )
    launcher = subprocess.Popen(
        cmd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    procs: list[psutil.Process] = []
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (
            metrics.exists() and metrics.read_text().strip()
        ):
            time.sleep(0.5)
        assert metrics.exists(), "training never started"
        procs = psutil.Process(launcher.pid).children(recursive=True)
        ranks = psutil.Process(launcher.pid).children()
        assert len(ranks) == 2

        # A relaunch into the same folder while the run is alive is refused, naming the owner.
        # (The ranks are paused meanwhile -- still alive, still holding the folder -- so the
        # relaunch does not compete with them for the test machine's cores.)
        for r in ranks:
            r.suspend()
        launcher_names = ("TORCHELASTIC", "RANK", "WORLD_SIZE", "LOCAL_", "GROUP_", "MASTER_")
        env = {k: v for k, v in _env().items() if not k.startswith(launcher_names)}
        env["MASTER_PORT"] = str(free_port())
        second = subprocess.run(
            [sys.executable, str(ROOT / "train.py")]
            + _train_args(bench_blend, run_dir, "trainer.devices=1", "trainer.max_steps=400"),
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert second.returncode == 1, second.stderr[-3000:]
        assert "Traceback" not in second.stderr
        assert f"{run_dir} is in use by a live run" in second.stderr
        assert any(f"pid {r.pid};" in second.stderr for r in ranks), second.stderr[-2000:]
        assert launcher.poll() is None  # the first run is untouched
        for r in ranks:
            r.resume()

        # kill -9 of the launcher's process group: torchrun's ranks live in their own
        # sessions, yet they (and their helper processes) must go with it.
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        alive = _gone(procs, timeout=30)
        assert not alive, [(p.pid, p.name()) for p in alive]
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        for p in procs:
            if p.is_running():
                p.kill()
