"""Process lifetime: ranks that die with their launcher, and one live writer per run folder.

torchrun starts every rank in its own session, so killing the launcher's process group leaves
the ranks training; :func:`die_with_parent` asks the kernel to kill a rank when its parent (the
torchrun agent) exits. :class:`RunLock` keeps a second launch out of a folder a live run is
writing: an exclusive ``flock`` on ``<run>/.optiml.lock`` (released by the kernel however the
owner dies, so a lock left by a killed run is stale by construction) whose text names the
owner's host and pid for the refusal message.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Linux: have the kernel send ``sig`` to this process when its parent exits.

    Returns False where that is not available (not Linux, prctl refused). If the parent is
    already gone (this process was reparented to init), ``sig`` is delivered right away.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), sig)
    return True


def ignore_termination_signals() -> None:
    """Initializer of a helper process that must survive the job's SIGTERM/SIGINT/SIGUSR1 (Slurm
    signals every process of a job step) without outliving its parent rank.

    Lives in this light module on purpose: a ``spawn`` child unpickles its initializer by
    module, so one defined beside torch/Megatron imports would make the child import them too
    (~4 s per rank, measured, for the checkpoint writer's Manager)."""
    die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class RunFolderLocked(RuntimeError):
    """Another live process holds the run folder."""


LOCK_FILE = ".optiml.lock"


def _owner_text() -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})


def _describe(text: str) -> str:
    try:
        owner = json.loads(text)
        return f"host {owner['host']} pid {owner['pid']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """Exclusive ownership of a run folder for this process's lifetime (or until released)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunFolderLocked` naming the live owner."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _describe(os.pread(fd, 4096, 0).decode(errors="replace"))
                os.close(fd)
                raise RunFolderLocked(
                    f"run folder {self.run_dir} is in use by a live run ({owner}; lock file "
                    f"{self.path}): stop that run first or use another exp_manager folder"
                ) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                # No flock on this file system: judge the recorded owner by its pid instead.
                self._check_recorded_owner(os.pread(fd, 4096, 0).decode(errors="replace"))
            # A releasing owner unlinks the file: make sure we locked the one at the path.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if previous:
            logger.warning(
                "run folder %s: taking over a stale lock of %s (that run is gone)",
                self.run_dir,
                _describe(previous),
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner_text().encode() + b"\n", 0)
        os.fsync(fd)
        self._fd = fd

    def _check_recorded_owner(self, text: str) -> None:
        try:
            owner = json.loads(text)
        except ValueError:
            return  # empty or unreadable: nobody to wait for
        here = owner.get("host") == socket.gethostname()
        if owner.get("pid") == os.getpid() and here:
            return
        if not here or _pid_alive(int(owner.get("pid", 0))):
            raise RunFolderLocked(
                f"run folder {self.run_dir} is locked by {_describe(text)} ({self.path}; this "
                "file system has no flock, so a lock from another host cannot be checked): "
                "remove the lock file if that run is gone"
            )

    def release(self) -> None:
        """Drop the lock and its file (a crash leaves the file; the next run takes it over)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
