"""examples/slurm/submit.sh asks sbatch for the allocation the recipe's layout needs."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUBMIT = ROOT / "examples" / "slurm" / "submit.sh"


def _submit(tmp_path, *args, **env):
    # A stand-in sbatch that records its arguments, one per line.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "sbatch"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$FAKE_SBATCH_ARGS"\n')
    fake.chmod(0o755)
    record = tmp_path / "args.txt"
    subprocess.run(
        ["bash", str(SUBMIT), *args],
        cwd=tmp_path,
        check=True,
        timeout=120,
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_SBATCH_ARGS": str(record),
            "OPTIML_PYTHON": sys.executable,
            **env,
        },
    )
    return record.read_text().splitlines()


def test_allocation_and_job_name_come_from_the_recipe(tmp_path):
    recipe = str(ROOT / "examples/recipes/optiml_175b_h100_bf16.yaml")
    args = _submit(
        tmp_path, recipe, "trainer.max_steps=10", SBATCH_ARGS="--partition=gpu --time=2:00:00"
    )
    assert args == [
        "--nodes=16",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--job-name=optiml_175b_h100_bf16",
        "--partition=gpu",
        "--time=2:00:00",
        str(ROOT / "examples/slurm/optiml.sbatch"),
        recipe,
        "trainer.max_steps=10",
    ]
    assert (tmp_path / "logs").is_dir()  # Slurm would not create it


def test_overrides_change_the_allocation(tmp_path):
    recipe = str(ROOT / "examples/recipes/optiml_30b_h100_bf16.yaml")
    args = _submit(tmp_path, recipe, "trainer.num_nodes=4", JOB_NAME="try4")
    assert args[:4] == ["--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--job-name=try4"]
