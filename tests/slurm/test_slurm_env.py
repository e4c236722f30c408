"""optiml-train under srun: SLURM_* become torchrun's RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*."""

import os

import pytest

from megatron_optiml.cli.train import _slurm_env

NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def env(monkeypatch):
    keys = (*NAMES, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_JOB_ID")
    keys += ("SLURM_LAUNCH_NODE_IPADDR",)
    saved = {k: os.environ.get(k) for k in keys}
    for k in keys:
        monkeypatch.delenv(k, raising=False)
    yield monkeypatch
    # _slurm_env writes os.environ itself, and monkeypatch restores only what it changed: put
    # every name back, or e.g. WORLD_SIZE=64 leaks into later tests' launches (which then wait
    # for 63 ranks that never come).
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _got():
    return {k: os.environ.get(k) for k in NAMES}


def test_srun_task_maps_onto_torchrun_names(env):
    env.setenv("SLURM_PROCID", "13")
    env.setenv("SLURM_NTASKS", "64")
    env.setenv("SLURM_LOCALID", "5")
    env.setenv("SLURM_JOB_ID", "4242")
    env.setenv("SLURM_LAUNCH_NODE_IPADDR", "10.0.0.7")
    _slurm_env()
    assert _got() == {
        "RANK": "13",
        "WORLD_SIZE": "64",
        "LOCAL_RANK": "5",
        "MASTER_ADDR": "10.0.0.7",
        "MASTER_PORT": str(29500 + 4242 % 1000),
    }


def test_sbatch_exports_win_for_master(env):
    # optiml.sbatch exports the first node's hostname and the port it chose.
    env.setenv("SLURM_PROCID", "0")
    env.setenv("SLURM_NTASKS", "2")
    env.setenv("MASTER_ADDR", "node001")
    env.setenv("MASTER_PORT", "31000")
    _slurm_env()
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("node001", "31000")
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == (
        "0",
        "2",
        "0",
    )


def test_torchrun_names_win_and_no_slurm_is_a_no_op(env):
    env.setenv("RANK", "1")
    env.setenv("SLURM_PROCID", "0")  # torchrun under srun: one task, several workers
    _slurm_env()
    assert os.environ["RANK"] == "1" and "WORLD_SIZE" not in os.environ
    env.delenv("RANK")
    env.delenv("SLURM_PROCID")
    _slurm_env()
    assert _got() == dict.fromkeys(NAMES)
