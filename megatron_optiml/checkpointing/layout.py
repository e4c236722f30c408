"""Where a checkpoint lives: Megatron-LM's tracker file, iteration folders and our JSON meta.

A root holds ``latest_checkpointed_iteration.txt`` (an iteration number, or ``release`` for
converted weights) and one folder per saved iteration (``iter_0000100/`` or ``release/``), each
a ``megatron.core.dist_checkpointing`` directory plus ``optiml_meta.json``. The tracker is
written last and atomically, so a reader only ever sees complete checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from megatron_optiml.models.opt.flavors import OPTArch

TRACKER_FILE = "latest_checkpointed_iteration.txt"
META_FILE = "optiml_meta.json"
META_FORMAT = "megatron_optiml.checkpoint/v1"
RELEASE = "release"

Iteration = int | str  # an int, or "release"


def _check_iteration(iteration: Iteration) -> Iteration:
    if iteration == RELEASE:
        return iteration
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"iteration={iteration!r}: expected an int >= 0 or 'release'")
    return iteration


def iteration_dir(root: str | os.PathLike, iteration: Iteration) -> Path:
    """``<root>/iter_0000100`` for an int (Megatron-LM's 7-digit name) or ``<root>/release``."""
    iteration = _check_iteration(iteration)
    name = RELEASE if iteration == RELEASE else f"iter_{iteration:07d}"
    return Path(root) / name


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tracker(root: str | os.PathLike, iteration: Iteration) -> None:
    """Point the root at ``iteration`` (atomic rename: readers see the old or the new value)."""
    iteration = _check_iteration(iteration)
    _atomic_write_text(Path(root) / TRACKER_FILE, f"{iteration}\n")


def read_tracker(root: str | os.PathLike) -> Iteration | None:
    """The latest complete iteration (int or 'release'), or None if the root has none yet."""
    path = Path(root) / TRACKER_FILE
    if not path.exists():
        return None
    text = path.read_text().strip()
    if text == RELEASE:
        return RELEASE
    try:
        return _check_iteration(int(text))
    except ValueError:
        raise ValueError(
            f"{path}: expected an iteration number or 'release', got {text!r}"
        ) from None


def resolve_iteration_dir(root: str | os.PathLike, iteration: Iteration | None = None) -> Path:
    """The folder of ``iteration``, or of the tracker's iteration; accepts an iteration folder too."""
    root = Path(root)
    if iteration is None and (root / META_FILE).exists() and not (root / TRACKER_FILE).exists():
        return root  # already an iteration folder
    if iteration is None:
        iteration = read_tracker(root)
        if iteration is None:
            raise FileNotFoundError(f"{root}: no {TRACKER_FILE} (no complete checkpoint)")
    path = iteration_dir(root, iteration)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: checkpoint folder missing")
    return path


def write_meta(
    ckpt_dir: str | os.PathLike, arch: OPTArch, iteration: Iteration, **extra: Any
) -> None:
    """``optiml_meta.json``: the model shape (OPTArch fields), the iteration and free extras."""
    meta = {
        "format": META_FORMAT,
        "arch": dataclasses.asdict(arch),
        "iteration": _check_iteration(iteration),
        **extra,
    }
    _atomic_write_text(
        Path(ckpt_dir) / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n"
    )


def read_meta(ckpt_dir: str | os.PathLike) -> dict[str, Any]:
    """The meta dict with ``meta['arch']`` rebuilt as an :class:`OPTArch`."""
    path = Path(ckpt_dir) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (not a megatron_optiml checkpoint folder?)")
    meta = json.loads(path.read_text())
    fields = {f.name for f in dataclasses.fields(OPTArch)}
    unknown = set(meta.get("arch", {})) - fields
    if unknown:
        raise ValueError(f"{path}: unknown arch fields {sorted(unknown)}")
    meta["arch"] = OPTArch(**meta["arch"])
    return meta
