"""A full disk at a command's boundary: recognise it however deep it is wrapped, remove the
partial output, say so in one line.

Every writer of this project (data_prep, conversion, checkpoint saves) ends in the same place:
an ``OSError`` with ``errno.ENOSPC``, sometimes wrapped by torch.distributed.checkpoint's
``CheckpointException`` (per-rank failures) or re-raised as text by a worker process. The CLIs
call :func:`no_space_error` on what they caught and :func:`removed_on_failure` around what they
write, so each of them handles it the same way.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

# ENOSPC: the file system is full; EDQUOT: the user's quota is (same remedy).
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))


def no_space_error(exc: BaseException, path: str | os.PathLike | None = None) -> OSError | None:
    """The "no space left" ``OSError`` behind ``exc``, or None if the disk was not full.

    Looks through ``__cause__`` / ``__context__``, torch.distributed.checkpoint's per-rank
    ``failures`` and exception groups; an error that only carries the text (a worker's
    failure re-raised as a string) gives an ``OSError`` rebuilt from it. torch's C++ writer
    (``torch.save``, the torch_dist checkpoint files) loses the errno ("unexpected pos N vs
    M"): given the ``path`` being written, a file system left with (almost) no free space
    then counts as full -- so call this before removing the partial output.
    """
    stack: list[BaseException | None] = [exc]
    seen: set[int] = set()
    text_match = False
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS:
            return e
        text_match = text_match or any(t in str(e) for t in _NO_SPACE_TEXT)
        stack += [e.__cause__, e.__context__]
        failures = getattr(e, "failures", None)  # CheckpointException: rank -> (exc, traceback)
        if isinstance(failures, dict):
            stack += [f[0] if isinstance(f, tuple) else f for f in failures.values()]
        stack += list(getattr(e, "exceptions", None) or ())  # ExceptionGroup
    io_failure = not isinstance(exc, (ValueError, LookupError, TypeError, NotImplementedError))
    if text_match or (path is not None and io_failure and _nearly_full(path)):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def _nearly_full(path: str | os.PathLike) -> bool:
    """A failed write fills the file system to its last blocks: under 1 MiB (or 1/64 of a
    small file system) left counts as full."""
    try:
        st = os.statvfs(_mount_point(path))
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use reserved blocks
    return free * st.f_frsize < min(1 << 20, st.f_blocks * st.f_frsize // 64)


def no_space_message(err: OSError, path: str | os.PathLike) -> str:
    """One line: where the disk filled up, on which file system, and that nothing partial
    was left behind."""
    where = err.filename or path
    return (
        f"no space left on device writing {where} (file system {_mount_point(path)}); "
        "partial output removed"
    )


def _mount_point(path: str | os.PathLike) -> str:
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return str(p)


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file or folder if it exists (best effort: a full disk does not block unlink)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def removed_on_failure(path: str | os.PathLike) -> Iterator[None]:
    """Undo what the block wrote to ``path`` if it raises.

    A ``path`` that did not exist before is removed entirely; in one that did, only the
    top-level entries the block created go (an earlier complete output there -- files the
    block would have replaced only at its very end -- stays as it was). A failure on a full
    disk is re-raised as ``OSError(ENOSPC)`` naming ``path``, however it was reported.
    """
    path = Path(path)
    existed = path.exists()
    before = set(os.listdir(path)) if existed and path.is_dir() else set()
    try:
        yield
    except BaseException as exc:
        full = None if isinstance(exc, KeyboardInterrupt) else no_space_error(exc, path)
        if not existed:
            remove_path(path)
        elif path.is_dir():
            for name in set(os.listdir(path)) - before:
                remove_path(path / name)
        logger.debug("removed the partial output under %s", path)
        if full is not None and full is not exc:
            # One error type for callers, naming the output (not "unexpected pos" from C++).
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
