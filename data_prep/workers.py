"""One pool of forked worker processes for a whole bench build, and the values it shares.

The pool is forked once, after the sources are read, so every worker inherits the tasks
(copy-on-write) and no instance text is ever pickled to a worker. Values made later (the split
plan, the evaluation n-gram index) are `share`d: pickled once to a temp file that each worker
loads on first use, so work items stay small (indices, not text). With `workers == 1` there is
no pool: work runs in the calling process on the same values.

Workers must be forked, not spawned: they rely on inheriting the parent's state, including
Python's per-process string-hash salt (the n-gram overlap check compares `hash()` values made
in different workers). A worker that dies (killed, out of memory) fails the build with an error
instead of hanging it (`concurrent.futures` notices a dead process; `multiprocessing.Pool`
waits forever).
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SHARED: dict[str, Any] = {}
_COUNTER = itertools.count()


@dataclass(frozen=True)
class Shared:
    """A picklable handle on a value shared with the workers."""

    key: str
    path: str | None = None
    """Pickle file a worker loads the value from when it did not inherit it."""

    def get(self) -> Any:
        try:
            return _SHARED[self.key]
        except KeyError:
            pass
        if self.path is None:
            raise RuntimeError(f"shared value {self.key!r} is gone (pool closed?)")
        with open(self.path, "rb") as f:
            value = pickle.load(f)
        _SHARED[self.key] = value
        return value


def _init_worker() -> None:
    # One core per worker: HF tokenizers' batch encoding would otherwise start its own threads.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


class WorkerPool:
    """`workers` forked processes, or the calling process alone when `workers == 1`.

    Use as a context manager; `inherit` values before the first `imap` cost nothing to share.
    """

    def __init__(self, workers: int, **inherit: Any) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers!r} must be >= 1")
        self.workers = workers
        self._keys: list[str] = []
        self._tmp: Path | None = None
        self.inherited = {name: self._put(name, value) for name, value in inherit.items()}
        self._pool = (
            ProcessPoolExecutor(workers, mp.get_context("fork"), initializer=_init_worker)
            if workers > 1
            else None
        )

    def _put(self, name: str, value: Any) -> Shared:
        key = f"{name}#{next(_COUNTER)}"
        _SHARED[key] = value
        self._keys.append(key)
        return Shared(key)

    def share(self, name: str, value: Any) -> Shared:
        """Make `value` readable in the workers (`handle.get()`); the handle pickles small."""
        handle = self._put(name, value)
        if self._pool is None:
            return handle
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="optiml_prepare_"))
        path = self._tmp / f"{handle.key.replace('#', '_')}.pkl"
        with open(path, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        return Shared(handle.key, str(path))

    def imap(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """`fn` over `items`, results in submission order (items are handed out one at a time)."""
        if self._pool is None:
            return map(fn, items)
        return _reraise_broken(self._pool.map(fn, items, chunksize=1))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        for key in self._keys:
            _SHARED.pop(key, None)
        self._keys.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reraise_broken(results: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from results
    except BrokenProcessPool as e:
        raise RuntimeError(
            "a data_prep worker process died (killed, or out of memory?); nothing was renamed "
            "into place: rerun, or use fewer `tokenize.workers`"
        ) from e


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar (None when disabled); callers add ex/s and tok/s to its postfix."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="ex", desc=desc, mininterval=0.5, dynamic_ncols=True)
