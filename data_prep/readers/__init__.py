"""One reader per collection format; `read_source` dispatches on a source config's `type`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.config import TEMPLATE_SOURCES, SourceConfig
from data_prep.errors import DataError
from data_prep.mapping import TaskMap
from data_prep.readers.bigbench import read_bigbench
from data_prep.readers.jsonl import read_jsonl, read_text
from data_prep.readers.niv2 import read_niv2
from data_prep.readers.promptsource import read_promptsource
from data_prep.readers.templates import read_flan, read_jinja
from data_prep.schema import Task

__all__ = ["SourceTasks", "read_all", "read_source", "read_sources"]
log = logging.getLogger(__name__)


def read_source(src: SourceConfig, task_map: TaskMap) -> list[Task]:
    """Read one collection into tasks (categories not yet applied)."""
    path = Path(src.path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (source type {src.type!r})")
    if src.type == "niv2":
        return read_niv2(path, benchmark=src.benchmark, skip_empty=src.skip_empty_outputs)
    if src.type == "bigbench":
        return read_bigbench(path, benchmark=src.benchmark, skip_empty=src.skip_empty_outputs)
    if src.type == "promptsource":
        datasets = src.datasets if src.datasets is not None else task_map.task_names(src.benchmark)
        return read_promptsource(
            path, datasets=datasets, benchmark=src.benchmark, skip_empty=src.skip_empty_outputs
        )
    if src.type == "jinja":
        return [read_jinja(path, Path(src.templates), task=src.task, benchmark=src.benchmark)]
    if src.type == "flan":
        return [read_flan(path, Path(src.templates), task=src.task, benchmark=src.benchmark)]
    if src.type == "jsonl":
        return read_jsonl(
            path,
            benchmark=src.benchmark,
            task=src.task,
            task_field=src.task_field,
            instruction=src.instruction,
        )
    if src.type == "text":
        return read_text(path, benchmark=src.benchmark, task=src.task)
    raise DataError(f"unknown source type {src.type!r}")


@dataclass
class SourceTasks:
    """Every task of every source, with what the sources say about them."""

    tasks: list[Task]
    train_only: set[str] = field(default_factory=set)
    """Tasks never held out (`train_only` sources)."""
    template_sampled: set[str] = field(default_factory=set)
    """Tasks of template sources with `template_sampling: paper` (down-sampled in training)."""


def read_sources(sources: list[SourceConfig], task_map: TaskMap) -> tuple[list[Task], set[str]]:
    """All tasks of all sources with categories applied; names must be unique.

    Returns the tasks and the names of train-only tasks (`read_all` says more).
    """
    read = read_all(sources, task_map)
    return read.tasks, read.train_only


def read_all(sources: list[SourceConfig], task_map: TaskMap) -> SourceTasks:
    """`read_sources`, plus which tasks get template down-sampling."""
    tasks: list[Task] = []
    train_only: set[str] = set()
    sampled: set[str] = set()
    seen: dict[str, str] = {}
    for src in sources:
        for task in read_source(src, task_map):
            if task.name in seen:
                raise DataError(
                    f"task {task.name!r} is defined twice: {seen[task.name]} and {task.source}"
                )
            seen[task.name] = task.source
            if not task.instances and src.skip_empty_outputs:
                log.warning(
                    "task %r (%s): every output is empty; task dropped", task.name, task.source
                )
                continue
            if not task.instances:
                raise DataError(f"task {task.name!r} ({task.source}): no instances")
            tasks.append(task_map.apply(task, default_category=src.category))
            if src.train_only:
                train_only.add(task.name)
            if src.type in TEMPLATE_SOURCES and src.template_sampling == "paper":
                sampled.add(task.name)
    return SourceTasks(tasks, train_only, sampled)
