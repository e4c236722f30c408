"""Real faults for tests: a small tmpfs that fills up (a full disk) and truncated files."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


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
