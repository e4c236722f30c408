"""The user-editable task -> category -> benchmark mapping (YAML).

::

    categories:            # every category a task may have (lower case); others are errors
      - summarization
      - sentiment analysis
    tasks:                 # per-task overrides of what the readers found
      ag_news: {category: text categorization}
      task1290_xsum_summarization: {category: summarization, benchmark: niv2}

A task's category is, in order: the mapping's entry, what the reader found (NI `Categories`,
BIG-bench keywords), the source's `category`. A task without one, or with one not in
`categories`, is an error that names the task and the mapping file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from data_prep.errors import DataError
from data_prep.schema import Task, normalize_category


@dataclass
class TaskMap:
    """Known categories and per-task category/benchmark overrides."""

    categories: list[str] = field(default_factory=list)
    tasks: dict[str, dict[str, str]] = field(default_factory=dict)
    path: str = "<no mapping file>"

    def task_names(self, benchmark: str | None = None) -> list[str]:
        return [
            name
            for name, entry in self.tasks.items()
            if benchmark is None or entry.get("benchmark", benchmark) == benchmark
        ]

    def apply(self, task: Task, *, default_category: str | None = None) -> Task:
        """Set `task.category` / `task.benchmark` from the mapping; check the category is known."""
        entry = self.tasks.get(task.name, {})
        if "benchmark" in entry:
            task.benchmark = entry["benchmark"]
        category = entry.get("category") or task.category or default_category
        if not category:
            raise DataError(
                f"task {task.name!r} ({task.source}): field 'category' is missing; "
                f"add the task under 'tasks' in {self.path}"
            )
        category = normalize_category(category)
        if self.categories and category not in self.categories:
            raise DataError(
                f"task {task.name!r} ({task.source}): unknown category {category!r}; "
                f"add it to 'categories' in {self.path} or map the task to a known one"
            )
        task.category = category
        return task


def load_task_map(path: str | os.PathLike | None) -> TaskMap:
    """Read a mapping YAML (None: no overrides, any category allowed)."""
    if path is None:
        return TaskMap()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise DataError(f"{path}: cannot read mapping file ({e})") from e
    unknown = set(data) - {"categories", "tasks"}
    if unknown:
        raise DataError(f"{path}: unknown key {sorted(unknown)[0]!r} (known: categories, tasks)")
    categories = [normalize_category(c) for c in data.get("categories") or []]
    tasks: dict[str, dict[str, str]] = {}
    for name, entry in (data.get("tasks") or {}).items():
        if entry is None:
            entry = {}
        if not isinstance(entry, dict) or set(entry) - {"category", "benchmark"}:
            raise DataError(f"{path}: tasks.{name} must be a mapping with 'category'/'benchmark'")
        tasks[str(name)] = {k: str(v) for k, v in entry.items()}
    return TaskMap(categories=categories, tasks=tasks, path=str(path))
