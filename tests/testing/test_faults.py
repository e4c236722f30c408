"""The simulated crash: ``exit_after_step`` ends the process at its step and no other, and the
``crashing_train`` launcher hands it to ``optiml-train`` with the rest of its arguments."""

from __future__ import annotations

import subprocess
import sys

import pytest

from megatron_optiml.testing import crashing_train
from megatron_optiml.testing.faults import CRASH_EXIT_CODE, exit_after_step


def test_exit_after_step_exits_hard_at_its_step_only():
    code = (
        "from megatron_optiml.testing.faults import exit_after_step\n"
        "crash = exit_after_step(2)\n"
        "crash(1); print('after 1', flush=True)\n"
        "crash(2); print('after 2', flush=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == CRASH_EXIT_CODE == 17, proc.stderr
    assert proc.stdout.splitlines() == ["after 1"]
    assert "simulating a crash after step 2" in proc.stderr


def test_exit_after_step_refuses_step_zero():
    with pytest.raises(ValueError, match="step=0"):
        exit_after_step(0)


def test_crashing_train_passes_the_rest_to_optiml_train(monkeypatch):
    seen = {}

    def fake_main(argv, *, on_step_end=()):
        seen.update(argv=argv, callbacks=list(on_step_end))
        return 0

    monkeypatch.setattr("megatron_optiml.cli.train.main", fake_main)
    argv = ["--config", "r.yaml", "--crash-after-step", "4", "trainer.max_steps=6"]
    assert crashing_train.main(argv) == 0
    assert seen["argv"] == ["--config", "r.yaml", "trainer.max_steps=6"]
    assert len(seen["callbacks"]) == 1
    seen["callbacks"][0](3)  # not its step: returns


def test_crashing_train_needs_the_step():
    with pytest.raises(SystemExit):
        crashing_train.main(["--config", "r.yaml"])
