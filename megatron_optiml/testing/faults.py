"""Real faults for tests: a small tmpfs that fills up (a full disk), truncated files, and a
training process that dies hard after a given step (as a kill would)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

CRASH_EXIT_CODE = 17
"""The exit code of :func:`exit_after_step`'s simulated crash."""


@contextlib.contextmanager
def small_disk(path: str | os.PathLike, size: str) -> Iterator[Path]:
    """Mount a ``size`` tmpfs (e.g. "2m") at ``path`` for the block; unmounted after.

    Needs root (or CAP_SYS_ADMIN); elsewhere the calling test is skipped with the reason.
    """
    import pytest

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs for a full disk: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def truncate_file(path: str | os.PathLike, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its length, as an interrupted copy leaves it."""
    path = Path(path)
    with open(path, "r+b") as f:
        f.truncate(int(path.stat().st_size * keep))


def exit_after_step(step: int, code: int = CRASH_EXIT_CODE) -> Callable[[int], None]:
    """A trainer ``on_step_end`` callback that ends the process with ``os._exit(code)`` right
    after optimizer step ``step`` (and its periodic checkpoint): no cleanup of the trainer's
    state, no final checkpoint, as a killed job leaves its run folder."""
    if step < 1:
        raise ValueError(f"step={step}: the crash comes after an optimizer step (>= 1)")

    def crash(iteration: int) -> None:
        if iteration != step:
            return
        logger.error("simulating a crash after step %d (exit code %d)", step, code)
        # Stop multiprocessing helpers (dist_checkpointing's Manager) so the test leaves no
        # orphans; nothing of the trainer's own state is flushed.
        import multiprocessing.util

        multiprocessing.util._exit_function()
        os._exit(code)

    return crash
