"""utils.process (run-folder lock, parent-death signal) and utils.disk (ENOSPC however wrapped,
partial output removal) on real processes and a real full tmpfs."""

from __future__ import annotations

import errno
import logging
import socket
import subprocess
import sys
import textwrap

import psutil
import pytest

from megatron_optiml.testing.faults import small_disk
from megatron_optiml.utils.disk import no_space_error, removed_on_failure
from megatron_optiml.utils.process import LOCK_FILE, RunFolderLocked, RunLock

HOLD = textwrap.dedent(
    """
    import sys, time
    from megatron_optiml.utils.process import RunLock
    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
    """
)


def _holder(run_dir) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "locked"
    return p


def test_live_owner_refuses_then_its_stale_lock_is_taken_over(tmp_path, caplog):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunFolderLocked) as e:
            RunLock(tmp_path).acquire()
        assert f"host {socket.gethostname()} pid {holder.pid};" in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK_FILE).exists()  # a killed owner leaves its file behind
    with caplog.at_level(logging.WARNING), RunLock(tmp_path):
        assert f"stale lock of host {socket.gethostname()} pid {holder.pid}" in caplog.text
        with pytest.raises(RunFolderLocked):
            RunLock(tmp_path).acquire()  # a second writer in this very process too
    assert not (tmp_path / LOCK_FILE).exists()  # released cleanly
    RunLock(tmp_path).acquire()


CHILD = textwrap.dedent(
    """
    import subprocess, sys, time
    code = (
        "import time; from megatron_optiml.utils.process import die_with_parent; "
        "die_with_parent(); print('armed', flush=True); time.sleep(600)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def test_a_child_in_its_own_session_dies_with_its_parent():
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    lines = {parent.stdout.readline().strip() for _ in range(2)}  # child pid, child "armed"
    assert "armed" in lines
    child = psutil.Process(int((lines - {"armed"}).pop()))
    try:
        parent.kill()
        parent.wait()
        _, alive = psutil.wait_procs([child], timeout=10)
        assert not alive
    finally:
        if child.is_running():
            child.kill()


def test_no_space_found_through_checkpoint_wrappers():
    from torch.distributed.checkpoint import CheckpointException

    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as e:
            raise RuntimeError("Worker failure") from e
    except RuntimeError as wrapped:
        exc = CheckpointException("write", {0: (wrapped, None)})
    assert no_space_error(exc) is inner
    assert no_space_error(RuntimeError("Worker failure: [Errno 28] No space left on device"))
    assert no_space_error(RuntimeError("unexpected pos 704 vs 598")) is None
    assert no_space_error(OSError(errno.EACCES, "Permission denied")) is None


def test_removed_on_failure_on_a_full_disk(tmp_path):
    with small_disk(tmp_path / "disk", "256k") as disk:
        (disk / "out").mkdir()
        (disk / "out" / "model.safetensors").write_bytes(b"previous")
        # torch's C++ writer reports a full disk without errno: the guard still names it.
        with pytest.raises(OSError) as e, removed_on_failure(disk / "out"):
            (disk / "out" / ".shard.tmp").write_bytes(b"x" * (1 << 17))
            try:
                (disk / "out" / ".shard2.tmp").write_bytes(b"x" * (1 << 19))
            except OSError:
                raise RuntimeError("unexpected pos 704 vs 598") from None
        assert e.value.errno == errno.ENOSPC and e.value.filename == str(disk / "out")
        assert [p.name for p in (disk / "out").iterdir()] == ["model.safetensors"]
        with pytest.raises(ValueError), removed_on_failure(disk / "new"):
            (disk / "new").mkdir()
            raise ValueError("bad input")
        assert not (disk / "new").exists()
