"""optiml-train --validate-only --json: the launch facts a launcher reads from the validated recipe
(examples/slurm/optiml.sbatch takes the world size, rendezvous port and preemption exit code
from it, not from sed over the human line)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_optiml.cli.train import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "examples" / "recipes" / "opt_debug_slurm_cpu.yaml"
SBATCH = ROOT / "examples" / "slurm" / "optiml.sbatch"


@pytest.fixture
def env(monkeypatch):
    for key in ("MASTER_PORT", "SLURM_JOB_ID", "SLURM_PROCID", "RANK"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def _facts(capsys, *overrides):
    rc = main(["--config", str(RECIPE), "--validate-only", "--json", *overrides])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_json_reports_the_validated_launch_facts(env, capsys):
    env.setenv("SLURM_JOB_ID", "4242")
    facts = _facts(
        capsys,
        "model.data.blend_path=b.json",
        "trainer.preemption_exit_code=7",
        "model.global_batch_size=16",
    )
    assert facts["world_size"] == 2 and facts["data_parallel_size"] == 2
    assert facts["num_microbatches"] == 16 // (2 * 2)
    assert facts["preemption_exit_code"] == 7
    assert facts["master_port"] == 29500 + 4242 % 1000
    assert facts["device"] == "cpu" and facts["accelerator"] == "cpu"
    assert facts["transformer_impl"] == "local"


def test_an_exported_master_port_wins(env, capsys):
    env.setenv("SLURM_JOB_ID", "4242")
    env.setenv("MASTER_PORT", "31000")
    assert _facts(capsys, "model.data.blend_path=b.json")["master_port"] == 31000


def test_json_needs_validate_only_and_a_bad_recipe_is_refused(env, capsys):
    with pytest.raises(SystemExit):
        main(["--config", str(RECIPE), "--json"])
    rc = main(["--config", str(RECIPE), "--validate-only", "--json", "model.micro_batch_size=3"])
    assert rc == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "model.global_batch_size=8" in captured.err


def test_the_sbatch_reads_the_json(env, capsys):
    """The launcher's parser, run on the command's output: world, DP, port, exit code."""
    text = SBATCH.read_text()
    assert "--validate-only --json" in text and "sed " not in text
    assert "OPTIML_PREEMPTION_EXIT_CODE" not in text
    code = re.search(r"fields=\$\(\"\$PYTHON\" -c '(.*?)' <<<\"\$facts\"\)", text, re.S)
    assert code, "optiml.sbatch no longer parses the facts as expected"
    env.setenv("SLURM_JOB_ID", "17")
    main(
        [
            "--config",
            str(RECIPE),
            "--validate-only",
            "--json",
            "model.data.blend_path=b.json",
            "trainer.preemption_exit_code=5",
        ]
    )
    out = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        input=capsys.readouterr().out,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["2", "2", str(29500 + 17), "5"]


def test_sbatch_preflight_takes_port_and_exit_code_from_the_recipe(tmp_path):
    """The batch script itself up to its pre-flight refusal (no Slurm needed: a stub scontrol,
    one task for a 2-rank recipe, so it stops before srun)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text("#!/bin/sh\necho node001\n")
    scontrol.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "OPTIML_PYTHON": sys.executable,
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "preflight",
        "SLURM_JOB_NODELIST": "node001",
        "SLURM_NTASKS": "1",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "PYTHONWARNINGS": "ignore",
    }
    proc = subprocess.run(
        [
            "bash",
            str(SBATCH),
            str(RECIPE),
            "model.data.blend_path=b.json",
            "trainer.preemption_exit_code=9",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    out = proc.stdout
    assert "OK (world size 2, DP 2); master node001:29742; preemption exit code 9" in out, out
    assert "recipe world size 2" in out and "this job has 1 tasks" in out
